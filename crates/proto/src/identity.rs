//! Signed identity records as they travel and are stored: device
//! certificates, device lists and profiles, plus the validated profile
//! fields (username, display name, e-mail).
//!
//! This module defines the *shape* of the records. Signing and verification
//! live in `safemeet-crypto`; a [`Signed`] value from here is only a claim
//! until it has been verified there.

use std::fmt;
use std::marker::PhantomData;

use serde::{Deserialize, Serialize};

use crate::codec::{self, DecodeError, EncodeError};
use crate::limits::{
    MAX_DEVICES_PER_USER, MAX_DISPLAY_NAME_BYTES, MAX_EMAIL_BYTES, MAX_EMAILS, MAX_RECORD_BYTES,
    MAX_USERNAME_BYTES,
};
use crate::{DeviceId, Timestamp, UserId};

/// Why a profile field was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FieldError {
    /// A username must be 1–32 bytes of `a-z`, `0-9`, `.`, `_`, `-`, starting with a letter or digit.
    #[error(
        "a username is 1-32 characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit"
    )]
    Username,
    /// A display name must be 1–64 bytes of printable text.
    #[error(
        "a display name is 1-64 bytes of printable text without control or invisible formatting characters"
    )]
    DisplayName,
    /// Not a plausible e-mail address.
    #[error("not a valid e-mail address")]
    Email,
    /// Too many entries in a list.
    #[error("too many {what}: at most {max}")]
    TooMany {
        /// What the list holds.
        what: &'static str,
        /// The limit.
        max: usize,
    },
    /// A field that is not what it must be.
    #[error("{0}")]
    Invalid(&'static str),
}

/// Invisible formatting characters that let one name pose as another:
/// bidirectional overrides and isolates, zero-width characters, the byte
/// order mark, and other Unicode format controls in common use.
fn is_invisible_format(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{061C}' | '\u{180E}'
        | '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}'
        | '\u{FEFF}'
        | '\u{FFF9}'..='\u{FFFB}')
}

macro_rules! text_field {
    ($(#[$meta:meta])* $name:ident, $check:expr) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps a value.
            pub fn new(value: impl Into<String>) -> Result<Self, FieldError> {
                let value = value.into();
                let check: fn(&str) -> Result<(), FieldError> = $check;
                check(&value)?;
                Ok(Self(value))
            }

            /// The text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = FieldError;
            fn try_from(value: String) -> Result<Self, FieldError> {
                Self::new(value)
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = FieldError;
            fn from_str(s: &str) -> Result<Self, FieldError> {
                Self::new(s)
            }
        }

        /// Profile data is private: `Debug` does not print it. Use `as_str`.
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}([scrubbed])", stringify!($name))
            }
        }
    };
}

text_field!(
    /// A username: a short handle, unique among a user's contacts only.
    Username,
    |s| {
        let ok = !s.is_empty()
            && s.len() <= MAX_USERNAME_BYTES
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
            && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric());
        if ok { Ok(()) } else { Err(FieldError::Username) }
    }
);

text_field!(
    /// A display name: free text shown to contacts.
    DisplayName,
    |s| {
        let ok = !s.trim().is_empty()
            && s.len() <= MAX_DISPLAY_NAME_BYTES
            && !s.chars().any(|c| c.is_control() || is_invisible_format(c));
        if ok { Ok(()) } else { Err(FieldError::DisplayName) }
    }
);

text_field!(
    /// An e-mail address linked to a profile. Checked for shape only; it is
    /// shown to contacts, never used to route anything.
    Email,
    |s| {
        let ok = s.len() <= MAX_EMAIL_BYTES
            && s.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty() && domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.') && !domain.contains('@')
            })
            && !s.chars().any(|c| c.is_whitespace() || c.is_control());
        if ok { Ok(()) } else { Err(FieldError::Email) }
    }
);

/// A record together with a signature over its canonical bytes: by the
/// user's master key for identity records, by the device's Olm Ed25519 key
/// for a [`OneTimeKey`].
///
/// `body` holds the codec encoding of `T`; the signature covers a
/// domain-separation context followed by `body` (see `safemeet-crypto`).
/// Keeping the signed bytes, not the decoded value, means a verifier checks
/// exactly what the signer signed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Signed<T> {
    /// Canonical encoding of the record.
    #[serde(with = "codec::bytes")]
    pub body: Vec<u8>,
    /// Ed25519 signature by the key the record kind names.
    #[serde(with = "codec::sig64")]
    pub signature: [u8; 64],
    #[serde(skip)]
    _kind: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for Signed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signed")
            .field("kind", &std::any::type_name::<T>())
            .field("body_len", &self.body.len())
            .finish_non_exhaustive()
    }
}

impl<T: Serialize + serde::de::DeserializeOwned> Signed<T> {
    /// Wraps already-encoded bytes and their signature.
    pub fn from_parts(body: Vec<u8>, signature: [u8; 64]) -> Self {
        Self {
            body,
            signature,
            _kind: PhantomData,
        }
    }

    /// Decodes the (not yet verified) record.
    pub fn decode_body(&self) -> Result<T, DecodeError> {
        codec::decode(&self.body, MAX_RECORD_BYTES)
    }

    /// Encodes the whole signed record for storage or the wire.
    pub fn to_bytes(&self) -> Result<Vec<u8>, EncodeError> {
        codec::encode_limited(self, MAX_RECORD_BYTES + 80)
    }

    /// Decodes a signed record from untrusted bytes (signature not checked).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        codec::decode(bytes, MAX_RECORD_BYTES + 80)
    }
}

/// Binds one device to its user: signed by the user's master key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceCertificate {
    /// Format version of this record; currently 1.
    pub version: u8,
    /// The user the device belongs to (the master public key).
    pub user_id: UserId,
    /// The device, derived from `ed25519_key`.
    pub device_id: DeviceId,
    /// The device's Olm Ed25519 identity key.
    pub ed25519_key: [u8; 32],
    /// The device's Olm Curve25519 identity key.
    pub curve25519_key: [u8; 32],
    /// The device's libp2p peer id (multihash bytes).
    #[serde(with = "codec::bytes")]
    pub peer_id: Vec<u8>,
    /// Ed25519 key that authorises fetching and deleting this device's relay mailbox.
    pub mailbox_key: [u8; 32],
    /// When the certificate was issued.
    pub created_at: Timestamp,
}

/// A Curve25519 key another device may use to start an Olm session with
/// this one, signed by this device's Olm Ed25519 key (whose certificate the
/// starter already holds). A one-time key is handed out once; the fallback
/// key is used when none is left and is replaced weekly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OneTimeKey {
    /// Format version of this record; currently 1.
    pub version: u8,
    /// The device that owns the key.
    pub device_id: DeviceId,
    /// The Curve25519 public key.
    pub key: [u8; 32],
    /// True for the device's fallback key.
    pub fallback: bool,
    /// When the key was made.
    pub created_at: Timestamp,
}

/// The relays that keep a device's mailbox (see `safemeet_proto::mailbox`),
/// signed by the device's Olm Ed25519 key, whose certificate the reader
/// already holds. Not in the certificate: the relays change with the
/// daemon's settings, and the master key that signs certificates is on one
/// device only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayList {
    /// Format version of this record; currently 1.
    pub version: u8,
    /// The device.
    pub device_id: DeviceId,
    /// Each relay's multiaddr, ending in `/p2p/<relay peer id>`; at most
    /// [`MAX_DEVICE_RELAYS`](crate::limits::MAX_DEVICE_RELAYS).
    pub relays: Vec<String>,
    /// When it was signed: a newer list replaces an older one.
    pub issued_at: Timestamp,
}

/// The status of one device in a [`DeviceList`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeviceStatus {
    /// The device may receive keys and messages.
    Active,
    /// The device was revoked at the given time; it gets nothing new.
    Revoked(Timestamp),
}

/// One device in a [`DeviceList`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceListEntry {
    /// The device.
    pub device_id: DeviceId,
    /// BLAKE3 hash of the signed certificate bytes, pinning which certificate.
    pub certificate_hash: [u8; 32],
    /// Active or revoked.
    pub status: DeviceStatus,
}

/// All devices of a user, signed by the master key. Each change publishes a
/// new record with a higher `counter`; peers refuse to go back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "DeviceListWire")]
pub struct DeviceList {
    /// Format version of this record; currently 1.
    pub version: u8,
    /// Whose devices these are.
    pub user_id: UserId,
    /// Monotonic counter: a list with a lower counter than one already seen is stale.
    pub counter: u64,
    /// When this version was issued.
    pub issued_at: Timestamp,
    /// The devices, at most [`MAX_DEVICES_PER_USER`].
    pub devices: Vec<DeviceListEntry>,
}

#[derive(Deserialize)]
struct DeviceListWire {
    version: u8,
    user_id: UserId,
    counter: u64,
    issued_at: Timestamp,
    devices: Vec<DeviceListEntry>,
}

impl TryFrom<DeviceListWire> for DeviceList {
    type Error = FieldError;
    fn try_from(w: DeviceListWire) -> Result<Self, FieldError> {
        if w.devices.len() > MAX_DEVICES_PER_USER {
            return Err(FieldError::TooMany {
                what: "devices",
                max: MAX_DEVICES_PER_USER,
            });
        }
        Ok(Self {
            version: w.version,
            user_id: w.user_id,
            counter: w.counter,
            issued_at: w.issued_at,
            devices: w.devices,
        })
    }
}

/// A user's trust in another user's devices, signed by the trusting user's
/// master key once one of its devices verified them (cross-signing): its
/// other devices take it over Olm and trust the same devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserTrust {
    /// Format version of this record; currently 1.
    pub version: u8,
    /// The trusting user (whose master key signs).
    pub truster: UserId,
    /// The user whose devices are trusted.
    pub user_id: UserId,
    /// The devices, each pinned by the BLAKE3 hash of its signed
    /// certificate; at most [`MAX_DEVICES_PER_USER`].
    pub devices: Vec<(DeviceId, [u8; 32])>,
    /// When they were verified.
    pub verified_at: Timestamp,
}

/// A user's word, signed with the master key, that the account is
/// deleted: contacts drop its profile, sessions and devices, and take
/// nothing more from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountTombstone {
    /// Format version of this record; currently 1.
    pub version: u8,
    /// The deleted account.
    pub user_id: UserId,
    /// When its user deleted it.
    pub deleted_at: Timestamp,
}

/// The largest avatar, after its metadata is removed: 48 KiB, so that it
/// travels in one to-device message.
pub const MAX_AVATAR_BYTES: usize = 48 * 1024;

/// A user's avatar, signed by the master key and counted like the profile
/// (a later counter replaces it), shared with contacts only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "AvatarWire")]
pub struct Avatar {
    /// Format version of this record; currently 1.
    pub version: u8,
    /// Whose avatar this is.
    pub user_id: UserId,
    /// Monotonic counter.
    pub counter: u64,
    /// The image; `None`: the avatar was removed.
    pub image: Option<AvatarImage>,
    /// When this version was issued.
    pub updated_at: Timestamp,
}

/// An avatar's image: PNG or JPEG with no metadata, at most
/// [`MAX_AVATAR_BYTES`].
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AvatarImage {
    /// PNG or JPEG.
    pub kind: crate::image::ImageKind,
    /// The image.
    #[serde(with = "crate::codec::bytes")]
    pub bytes: Vec<u8>,
}

impl fmt::Debug for AvatarImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "AvatarImage({:?}, {} bytes)",
            self.kind,
            self.bytes.len()
        )
    }
}

#[derive(Deserialize)]
struct AvatarWire {
    version: u8,
    user_id: UserId,
    counter: u64,
    image: Option<AvatarImage>,
    updated_at: Timestamp,
}

impl TryFrom<AvatarWire> for Avatar {
    type Error = FieldError;
    fn try_from(w: AvatarWire) -> Result<Self, FieldError> {
        if let Some(image) = &w.image {
            if image.bytes.len() > MAX_AVATAR_BYTES {
                return Err(FieldError::TooMany {
                    what: "avatar bytes",
                    max: MAX_AVATAR_BYTES,
                });
            }
            if !crate::image::is_clean(image.kind, &image.bytes) {
                return Err(FieldError::Invalid(
                    "an avatar must be a whole PNG or JPEG image with no metadata",
                ));
            }
        }
        Ok(Self {
            version: w.version,
            user_id: w.user_id,
            counter: w.counter,
            image: w.image,
            updated_at: w.updated_at,
        })
    }
}

/// A user's profile, signed by the master key and shared with contacts only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ProfileWire")]
pub struct Profile {
    /// Format version of this record; currently 1.
    pub version: u8,
    /// Whose profile this is.
    pub user_id: UserId,
    /// Monotonic counter, as for device lists.
    pub counter: u64,
    /// The username.
    pub username: Username,
    /// The display name.
    pub display_name: DisplayName,
    /// Linked e-mail addresses, at most [`MAX_EMAILS`].
    pub emails: Vec<Email>,
    /// When this version was issued.
    pub updated_at: Timestamp,
}

#[derive(Deserialize)]
struct ProfileWire {
    version: u8,
    user_id: UserId,
    counter: u64,
    username: Username,
    display_name: DisplayName,
    emails: Vec<Email>,
    updated_at: Timestamp,
}

impl TryFrom<ProfileWire> for Profile {
    type Error = FieldError;
    fn try_from(w: ProfileWire) -> Result<Self, FieldError> {
        if w.emails.len() > MAX_EMAILS {
            return Err(FieldError::TooMany {
                what: "e-mail addresses",
                max: MAX_EMAILS,
            });
        }
        Ok(Self {
            version: w.version,
            user_id: w.user_id,
            counter: w.counter,
            username: w.username,
            display_name: w.display_name,
            emails: w.emails,
            updated_at: w.updated_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        for ok in ["alice", "a", "bob.smith", "x_1-2", "0day"] {
            assert!(Username::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Alice", ".a", "-a", "a b", "ä", &"a".repeat(33)] {
            assert!(Username::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn display_names_and_emails() {
        assert!(DisplayName::new("Alice Liddell").is_ok());
        assert!(DisplayName::new("  ").is_err());
        assert!(DisplayName::new("a\nb").is_err());
        assert!(DisplayName::new("Ali\u{202E}ecila").is_err());
        assert!(DisplayName::new("Al\u{200B}ice").is_err());
        assert!(DisplayName::new("Zoë Åström 李").is_ok());
        assert!(DisplayName::new("x".repeat(65)).is_err());
        assert!(Email::new("alice@example.org").is_ok());
        for bad in ["alice", "@x.org", "a@b", "a@.b", "a b@c.d", "a@b@c.d"] {
            assert!(Email::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn debug_hides_profile_data() {
        let name = DisplayName::new("Alice Liddell").unwrap();
        assert!(!format!("{name:?}").contains("Alice"));
    }

    #[test]
    fn an_avatar_with_metadata_or_too_large_does_not_decode() {
        let png = |extra: &[u8]| {
            let chunk = |kind: &[u8; 4], data: &[u8]| {
                let mut c = (data.len() as u32).to_be_bytes().to_vec();
                c.extend_from_slice(kind);
                c.extend_from_slice(data);
                c.extend_from_slice(&[0; 4]);
                c
            };
            let mut p = b"\x89PNG\r\n\x1a\n".to_vec();
            p.extend(chunk(b"IHDR", &[0; 13]));
            if !extra.is_empty() {
                p.extend(chunk(b"tEXt", extra));
            }
            p.extend(chunk(b"IDAT", &[1; 8]));
            p.extend(chunk(b"IEND", &[]));
            p
        };
        let avatar = |bytes: Vec<u8>| Avatar {
            version: 1,
            user_id: UserId::from_bytes([1; 32]),
            counter: 2,
            image: Some(AvatarImage {
                kind: crate::image::ImageKind::Png,
                bytes,
            }),
            updated_at: Timestamp::from_millis(1_800_000_000_000).unwrap(),
        };
        let clean = codec::encode(&avatar(png(b""))).unwrap();
        assert!(codec::decode::<Avatar>(&clean, 64 * 1024).is_ok());
        let dirty = codec::encode(&avatar(png(b"GPS\0secret"))).unwrap();
        assert!(codec::decode::<Avatar>(&dirty, 64 * 1024).is_err());
        let big = codec::encode(&avatar({
            let mut p = png(b"");
            p.extend(vec![0; MAX_AVATAR_BYTES]);
            p
        }))
        .unwrap();
        assert!(codec::decode::<Avatar>(&big, 128 * 1024).is_err());
        let mut jpeg_kind = avatar(png(b""));
        if let Some(i) = &mut jpeg_kind.image {
            i.kind = crate::image::ImageKind::Jpeg;
        }
        let mislabelled = codec::encode(&jpeg_kind).unwrap();
        assert!(codec::decode::<Avatar>(&mislabelled, 64 * 1024).is_err());
    }

    #[test]
    fn decoding_enforces_field_rules() {
        let bytes = codec::encode(&"Not A Username".to_string()).unwrap();
        assert!(codec::decode::<Username>(&bytes, 64).is_err());
    }
}
