//! The answers of the methods that decide whom to hear from: blocking,
//! contact settings, message requests and room invitations (see
//! `docs/api.md`).

use safemeet_proto::{RoomId, Timestamp, UserId};

use crate::account::AvatarView;
use serde::{Deserialize, Serialize};

/// `contact.block`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactBlocked {
    /// Who is blocked now.
    pub blocked: UserId,
}

/// `contact.unblock`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactUnblocked {
    /// Who is no longer blocked.
    pub unblocked: UserId,
}

/// A blocked user, as `contact.blocked` lists them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockedUser {
    /// Their user id.
    pub user_id: UserId,
}

/// `contact.set`: the contact and the settings the request changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactSettings {
    /// The contact.
    pub user_id: UserId,
    /// Whether their room invitations are joined without asking, if the
    /// request set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_accept_invites: Option<bool>,
}

/// A room invitation waiting for consent, as `room.invitations` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomInvitation {
    /// The room.
    pub room_id: RoomId,
    /// Its name.
    pub name: String,
    /// Who invited.
    pub from: UserId,
    /// Its members, as the invitation lists them.
    pub members: Vec<UserId>,
    /// When the inviter sent it (their clock, ms since the Unix epoch).
    pub sent_at: Timestamp,
}

impl From<safemeet_engine::Invitation> for RoomInvitation {
    fn from(i: safemeet_engine::Invitation) -> Self {
        RoomInvitation {
            room_id: i.room_id,
            name: i.name,
            from: i.from,
            members: i.members,
            sent_at: i.sent_at,
        }
    }
}

/// `room.join`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomJoined {
    /// The room joined.
    pub room_id: RoomId,
}

/// `room.decline`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomDeclined {
    /// The room whose invitation was dropped.
    pub room_id: RoomId,
}

/// A message request, as `request.list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRequest {
    /// Who asks.
    pub user_id: UserId,
    /// Their username (signed by them; not checked by anyone else).
    pub username: String,
    /// Their display name (signed by them).
    pub display_name: String,
    /// When their request arrived (this device's clock, ms since the Unix
    /// epoch).
    pub received_at: Timestamp,
    /// Frames kept with it: the introduction, room keys and messages,
    /// unread until accepted.
    pub frames: usize,
}

impl From<safemeet_engine::MessageRequest> for MessageRequest {
    fn from(r: safemeet_engine::MessageRequest) -> Self {
        MessageRequest {
            user_id: r.user_id,
            username: r.username,
            display_name: r.display_name,
            received_at: r.received_at,
            frames: r.frames,
        }
    }
}

/// `request.accept`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestAccepted {
    /// The new contact.
    pub user_id: UserId,
}

/// `request.decline`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestDeclined {
    /// Whose request was deleted.
    pub user_id: UserId,
}

/// A contact, as `contact.list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    /// Their user id.
    pub user_id: UserId,
    /// The name this user gave them (a pet name), if any.
    pub name: Option<String>,
    /// Their username.
    pub username: String,
    /// Their display name.
    pub display_name: String,
    /// Their e-mail addresses (from their newest profile).
    #[serde(default)]
    pub emails: Vec<String>,
    /// The relays their devices listed.
    pub relays: Vec<String>,
    /// Their active devices, each verified or not.
    #[serde(default)]
    pub devices: Vec<ContactDevice>,
    /// Every active device of theirs is verified.
    #[serde(default)]
    pub verified: bool,
    /// A device of theirs is verified and another is not: they added a
    /// device since you verified them ("new device, not verified").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    /// Their user deleted the account: nothing is sent to it or taken
    /// from it any more.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    /// Their avatar, if they set one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar: Option<AvatarView>,
    /// The room id of the direct conversation with them (events name it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room_id: Option<RoomId>,
}

/// A contact's device (`contact.list`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactDevice {
    /// The device id.
    pub device_id: String,
    /// Verified by SAS (here, or on another of your devices).
    pub verified: bool,
}

impl From<safemeet_engine::Contact> for Contact {
    fn from(c: safemeet_engine::Contact) -> Self {
        let verified = !c.devices.is_empty() && c.devices.iter().all(|d| d.verified);
        Contact {
            user_id: c.user_id,
            name: c.pet_name,
            username: c.username,
            display_name: c.display_name,
            emails: c.emails,
            relays: c.relays,
            devices: c
                .devices
                .iter()
                .map(|d| ContactDevice {
                    device_id: d.device_id.to_string(),
                    verified: d.verified,
                })
                .collect(),
            verified,
            warning: c.new_device_warning.then(|| {
                "new device, not verified: verify them again (`safemeet verify`)".to_owned()
            }),
            deleted: c.deleted,
            avatar: c.avatar.map(Into::into),
            room_id: None,
        }
    }
}
