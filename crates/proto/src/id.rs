//! Identifier newtypes.
//!
//! Every identifier is a fixed number of bytes with a short type prefix in its
//! text form (`u_`, `d_`, `r_`, `e_`, `m_`) followed by lowercase, unpadded
//! RFC 4648 base32. The prefix makes a pasted id self-describing and stops a
//! room id from being accepted where a user id is expected. Text forms are
//! canonical: `Display` then `FromStr` gives back the same value, and only the
//! canonical text is accepted.
//!
//! In binary encodings (postcard) identifiers are their raw bytes; in
//! human-readable encodings (JSON) they are their text form.

use std::fmt;
use std::str::FromStr;

use data_encoding::BASE32_NOPAD;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// Why a text identifier was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The text does not start with the prefix of this kind of identifier.
    #[error("expected a {kind} starting with `{prefix}`")]
    WrongPrefix {
        /// Which identifier was being parsed.
        kind: &'static str,
        /// The prefix it must start with.
        prefix: &'static str,
    },
    /// The part after the prefix is not canonical lowercase base32.
    #[error("{kind} is not valid lowercase base32")]
    BadEncoding {
        /// Which identifier was being parsed.
        kind: &'static str,
    },
    /// The decoded identifier has the wrong number of bytes.
    #[error("{kind} must be {expected} bytes, got {actual}")]
    WrongLength {
        /// Which identifier was being parsed.
        kind: &'static str,
        /// The length this identifier has.
        expected: usize,
        /// The length that was found.
        actual: usize,
    },
}

fn encode_text(prefix: &str, bytes: &[u8]) -> String {
    let mut out = String::with_capacity(prefix.len() + bytes.len() * 8 / 5 + 1);
    out.push_str(prefix);
    out.push_str(&BASE32_NOPAD.encode(bytes).to_ascii_lowercase());
    out
}

fn decode_text<const N: usize>(
    kind: &'static str,
    prefix: &'static str,
    text: &str,
) -> Result<[u8; N], IdError> {
    let body = text
        .strip_prefix(prefix)
        .ok_or(IdError::WrongPrefix { kind, prefix })?;
    // Only the canonical (lowercase) form is accepted so that text ids can be
    // compared as strings.
    if body
        .bytes()
        .any(|b| !(b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b)))
    {
        return Err(IdError::BadEncoding { kind });
    }
    let decoded = BASE32_NOPAD
        .decode(body.to_ascii_uppercase().as_bytes())
        .map_err(|_| IdError::BadEncoding { kind })?;
    <[u8; N]>::try_from(decoded.as_slice()).map_err(|_| IdError::WrongLength {
        kind,
        expected: N,
        actual: decoded.len(),
    })
}

macro_rules! byte_id {
    ($(#[$meta:meta])* $name:ident, $len:expr, $prefix:literal, $kind:literal) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name([u8; $len]);

        impl $name {
            /// Number of bytes in this identifier.
            pub const LEN: usize = $len;
            /// Prefix of the text form.
            pub const PREFIX: &'static str = $prefix;

            /// Wraps raw bytes.
            pub const fn from_bytes(bytes: [u8; $len]) -> Self {
                Self(bytes)
            }

            /// The raw bytes.
            pub const fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }

            /// Parses raw bytes of unknown length.
            pub fn from_slice(bytes: &[u8]) -> Result<Self, IdError> {
                <[u8; $len]>::try_from(bytes)
                    .map(Self)
                    .map_err(|_| IdError::WrongLength {
                        kind: $kind,
                        expected: $len,
                        actual: bytes.len(),
                    })
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&encode_text($prefix, &self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self)
            }
        }

        impl FromStr for $name {
            type Err = IdError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                decode_text::<$len>($kind, $prefix, s).map(Self)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                if serializer.is_human_readable() {
                    serializer.collect_str(self)
                } else {
                    serializer.serialize_bytes(&self.0)
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct IdVisitor;

                impl<'de> Visitor<'de> for IdVisitor {
                    type Value = $name;

                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        write!(f, "a {}", $kind)
                    }

                    fn visit_str<E: de::Error>(self, v: &str) -> Result<$name, E> {
                        v.parse().map_err(E::custom)
                    }

                    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<$name, E> {
                        $name::from_slice(v).map_err(E::custom)
                    }
                }

                if deserializer.is_human_readable() {
                    deserializer.deserialize_str(IdVisitor)
                } else {
                    deserializer.deserialize_bytes(IdVisitor)
                }
            }
        }
    };
}

byte_id!(
    /// A user: the 32-byte Ed25519 public key of the user's master key.
    ///
    /// The id *is* the key, so anyone holding a user id can check a device
    /// certificate or device list against it without asking anyone else.
    /// Whether the bytes are a valid curve point is checked where the key is
    /// used (`safemeet-crypto`), not here.
    UserId, 32, "u_", "user id"
);

byte_id!(
    /// A device of a user, derived from the device's Ed25519 identity key so
    /// that one id can never name two different keys.
    DeviceId, 16, "d_", "device id"
);

byte_id!(
    /// A room (a DM is a room of two users): 16 random bytes chosen by its creator.
    RoomId, 16, "r_", "room id"
);

byte_id!(
    /// An event: the hash of its content, so equal ids mean equal events.
    EventId, 32, "e_", "event id"
);

byte_id!(
    /// A mailbox on a relay. Rotates per epoch; reveals nothing about its owner.
    MailboxId, 32, "m_", "mailbox id"
);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn text_round_trips(bytes in any::<[u8; 32]>()) {
            let id = UserId::from_bytes(bytes);
            prop_assert_eq!(id.to_string().parse::<UserId>().unwrap(), id);
            let ev = EventId::from_bytes(bytes);
            prop_assert_eq!(ev.to_string().parse::<EventId>().unwrap(), ev);
        }

        #[test]
        fn short_ids_round_trip(bytes in any::<[u8; 16]>()) {
            let d = DeviceId::from_bytes(bytes);
            prop_assert_eq!(d.to_string().parse::<DeviceId>().unwrap(), d);
            let r = RoomId::from_bytes(bytes);
            prop_assert_eq!(r.to_string().parse::<RoomId>().unwrap(), r);
        }

        #[test]
        fn random_text_never_panics(s in "\\PC{0,80}") {
            let _ = s.parse::<UserId>();
            let _ = s.parse::<DeviceId>();
        }
    }

    #[test]
    fn rejects_wrong_prefix_case_and_length() {
        let id = RoomId::from_bytes([1; 16]);
        let text = id.to_string();
        assert!(matches!(
            text.replacen("r_", "u_", 1).parse::<RoomId>(),
            Err(IdError::WrongPrefix { .. })
        ));
        assert!(matches!(
            text.to_ascii_uppercase().parse::<RoomId>(),
            Err(IdError::WrongPrefix { .. })
        ));
        assert!(matches!(
            format!("r_{}", &text[2..].to_ascii_uppercase()).parse::<RoomId>(),
            Err(IdError::BadEncoding { .. })
        ));
        assert!(matches!(
            format!("{text}aaaaaaaa").parse::<RoomId>(),
            Err(IdError::WrongLength { .. })
        ));
        // A room id is not a device id even though both are 16 bytes.
        assert!(text.parse::<DeviceId>().is_err());
    }

    #[test]
    fn text_form_is_stable() {
        assert_eq!(
            DeviceId::from_bytes([0xab; 16]).to_string(),
            "d_vov2xk5lvov2xk5lvov2xk5lvm"
        );
    }
}
