//! The account as the API shows it: this device and user (`whoami`), the
//! user's devices, verifications and profile.

use safemeet_proto::UserId;
use serde::{Deserialize, Serialize};

/// What `whoami` reports besides the addresses: this account and device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The user id.
    pub user_id: String,
    /// This device.
    pub device_id: String,
    /// This device's libp2p peer id.
    pub peer_id: String,
    /// The username.
    pub username: String,
    /// The display name.
    pub display_name: String,
    /// The e-mail addresses in the profile.
    #[serde(default)]
    pub emails: Vec<String>,
}

/// One of this user's devices (`device.list`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// The device id.
    pub device_id: String,
    /// The name it was given, if any (seen only by this user's devices).
    pub name: Option<String>,
    /// When it was added (ms since the Unix epoch).
    pub created_at: u64,
    /// When this device last had a connection to it or a message from it
    /// (ms since the Unix epoch; `None` for this device and for one not
    /// seen yet).
    pub last_seen_at: Option<u64>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<u64>,
    /// Verified (this device counts as verified).
    pub verified: bool,
    /// This is the device answering.
    pub this_device: bool,
    /// Whether it holds the master key (known for this device only).
    pub master_key: Option<bool>,
}

impl From<safemeet_engine::DeviceView> for Device {
    fn from(d: safemeet_engine::DeviceView) -> Self {
        Self {
            device_id: d.device_id.to_string(),
            name: d.name,
            created_at: d.created_at.as_millis(),
            last_seen_at: d.last_seen_at.map(|t| t.as_millis()),
            revoked_at: d.revoked_at.map(|t| t.as_millis()),
            verified: d.verified,
            this_device: d.this_device,
            master_key: d.master_key,
        }
    }
}

/// A link for a new device (`device.link`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceLink {
    /// The link (`safemeet-link:…`): secret until used.
    pub link: String,
    /// When it stops working (ms since the Unix epoch).
    pub expires_at: u64,
}

impl std::fmt::Debug for DeviceLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceLink")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// One emoji of a short authentication string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SasEmoji {
    /// The emoji.
    pub symbol: String,
    /// Its name.
    pub name: String,
}

/// Where a SAS verification with a contact stands (`verify.*`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerificationState {
    /// The contact.
    pub user_id: String,
    /// Their device being verified.
    pub device_id: String,
    /// `waiting`, `asked`, `compare`, `confirmed`, `verified` or `cancelled`.
    pub state: String,
    /// Why it was cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_reason: Option<String>,
    /// The seven emoji to compare (in `compare` and after).
    pub emoji: Vec<SasEmoji>,
    /// The same as three numbers.
    pub decimals: Vec<u16>,
}

impl From<safemeet_engine::VerificationView> for VerificationState {
    fn from(v: safemeet_engine::VerificationView) -> Self {
        Self {
            user_id: v.user_id.to_string(),
            device_id: v.device_id.to_string(),
            state: v.state.to_owned(),
            cancel_reason: v.cancel_reason.map(str::to_owned),
            emoji: v
                .emoji
                .into_iter()
                .map(|(symbol, name)| SasEmoji { symbol, name })
                .collect(),
            decimals: v.decimals,
        }
    }
}

/// A contact verified from their invite (`contact.verify`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactVerified {
    /// The contact.
    pub user_id: String,
    /// Their devices now verified.
    pub verified: Vec<String>,
}

/// A device revoked (`device.revoke`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRevoked {
    /// The device.
    pub revoked: String,
}

/// This user's profile (`profile.show`, `profile.set`, `email.add`,
/// `email.remove`): what contacts see, signed by the master key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileView {
    /// The user id.
    pub user_id: UserId,
    /// The username (fixed at `init`).
    pub username: String,
    /// The display name.
    pub display_name: String,
    /// The e-mail addresses.
    pub emails: Vec<String>,
    /// The version: one up with each change.
    pub version: u64,
    /// When this version was signed (ms since the Unix epoch).
    pub updated_at: u64,
    /// The avatar, if one is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar: Option<AvatarView>,
}

/// What an avatar is (`profile.show`, `contact.list`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AvatarView {
    /// `image/png` or `image/jpeg`.
    pub media_type: String,
    /// Its size.
    pub bytes: usize,
    /// Its BLAKE3 hash, hex.
    pub blake3: String,
}

impl From<safemeet_engine::AvatarInfo> for AvatarView {
    fn from(a: safemeet_engine::AvatarInfo) -> Self {
        Self {
            media_type: a.kind.media_type().to_owned(),
            bytes: a.bytes,
            blake3: a.blake3,
        }
    }
}

impl From<safemeet_proto::identity::Profile> for ProfileView {
    fn from(p: safemeet_proto::identity::Profile) -> Self {
        Self {
            user_id: p.user_id,
            username: p.username.as_str().to_owned(),
            display_name: p.display_name.as_str().to_owned(),
            emails: p.emails.iter().map(|e| e.as_str().to_owned()).collect(),
            version: p.counter,
            updated_at: p.updated_at.as_millis(),
            avatar: None,
        }
    }
}

/// A device named (`device.rename`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRenamed {
    /// The device.
    pub device_id: String,
    /// Its new name.
    pub name: String,
}
