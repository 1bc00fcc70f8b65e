//! Invites: what one user hands another to become a contact.
//!
//! An invite carries the inviter's signed device list and device
//! certificates (so the receiver can check every key against the user id),
//! the inviting device's signed fallback key (so a first message needs no
//! round trip), its signed profile, the addresses it listens on and its
//! signed relay list (where to leave messages while it is offline). Its
//! text form is `safemeet:` followed by lowercase base32 of the codec
//! encoding. Everything in it that matters is signed; the addresses are
//! hints, checked by the Noise handshake against the certified peer id.

use data_encoding::BASE32_NOPAD;
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::identity::{DeviceCertificate, DeviceList, OneTimeKey, Profile, RelayList, Signed};

/// Why an invite cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InviteError {
    /// It is not an invite's text.
    #[error("it does not start with `safemeet:`")]
    NoPrefix,
    /// It is longer than any invite.
    #[error("it is too long")]
    TooLong,
    /// It is not base32.
    #[error("it is not valid base32")]
    NotBase32,
    /// An older format.
    #[error("it is from an older version; ask for a new invite")]
    OlderVersion,
    /// It does not decode.
    #[error("it is damaged or from another version")]
    Damaged,
    /// A version this build does not know.
    #[error("unsupported invite version")]
    UnsupportedVersion,
    /// More addresses than allowed.
    #[error("too many addresses")]
    TooManyAddresses,
    /// It could not be encoded (too large).
    #[error("it is too large to encode")]
    Encode,
    /// It is this user's own invite.
    #[error("this is your own invite")]
    OwnInvite,
    /// Its relay list was signed by another device than the inviting one.
    #[error("its relay list is another device's")]
    ForeignRelayList,
}

/// The text prefix of an invite.
pub const INVITE_PREFIX: &str = "safemeet:";

/// Largest invite accepted, encoded.
const MAX_INVITE_BYTES: usize = 48 * 1024;

/// Most listen addresses an invite may carry.
pub const MAX_INVITE_ADDRS: usize = 16;

/// The invite format version this build writes and reads.
pub const INVITE_VERSION: u8 = 2;

/// A contact invite.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invite {
    /// Format version; currently 2.
    pub version: u8,
    /// The inviter's signed device list.
    pub device_list: Signed<DeviceList>,
    /// The certificates of the listed active devices.
    pub certificates: Vec<Signed<DeviceCertificate>>,
    /// The inviting device's signed fallback key.
    pub fallback_key: Signed<OneTimeKey>,
    /// The inviter's signed profile.
    pub profile: Signed<Profile>,
    /// Where the inviting device listens (multiaddr text), best first.
    pub addrs: Vec<String>,
    /// The inviting device's relays, signed by it (none: it uses none).
    pub relays: Option<Signed<RelayList>>,
}

impl Invite {
    /// The text form.
    pub fn to_text(&self) -> Result<String, InviteError> {
        let bytes =
            codec::encode_limited(self, MAX_INVITE_BYTES).map_err(|_| InviteError::Encode)?;
        Ok(format!(
            "{INVITE_PREFIX}{}",
            BASE32_NOPAD.encode(&bytes).to_ascii_lowercase()
        ))
    }

    /// Parses the text form (surrounding whitespace is ignored). The
    /// signatures are checked when the invite is accepted.
    pub fn from_text(text: &str) -> Result<Self, InviteError> {
        let body = text
            .trim()
            .strip_prefix(INVITE_PREFIX)
            .ok_or(InviteError::NoPrefix)?;
        if body.len() > MAX_INVITE_BYTES * 2 {
            return Err(InviteError::TooLong);
        }
        let bytes = BASE32_NOPAD
            .decode(body.to_ascii_uppercase().as_bytes())
            .map_err(|_| InviteError::NotBase32)?;
        if bytes.first().is_some_and(|v| *v < INVITE_VERSION) {
            return Err(InviteError::OlderVersion);
        }
        let invite: Invite =
            codec::decode(&bytes, MAX_INVITE_BYTES).map_err(|_| InviteError::Damaged)?;
        if invite.version != INVITE_VERSION {
            return Err(InviteError::UnsupportedVersion);
        }
        if invite.addrs.len() > MAX_INVITE_ADDRS {
            return Err(InviteError::TooManyAddresses);
        }
        Ok(invite)
    }
}
