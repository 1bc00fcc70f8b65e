//! The answers: one [`Response`] variant per method, each a typed struct
//! whose JSON form is the `result` documented in `docs/api.md`.
//!
//! A `Response` serialises as its bare result (no tag). Reading one back
//! needs the method it answers ([`Response::from_result`]), which a client
//! always knows.

use safemeet_proto::{EventId, RoomId, UserId};
use serde::{Deserialize, Serialize};

use crate::account::{
    ContactVerified, Device, DeviceLink, DeviceRenamed, DeviceRevoked, Identity, ProfileView,
    VerificationState,
};
use crate::event::{Event, Subscribed};
use crate::message::Message;
pub use crate::people::Contact;
use crate::request::Method;

/// The answer to a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
#[non_exhaustive]
pub enum Response {
    /// `whoami`
    Whoami(Whoami),
    /// `status`
    Status(crate::status::Status),
    /// `invite`
    Invite(InviteText),
    /// `contact.add`
    ContactAdded(ContactAdded),
    /// `contact.list`
    Contacts(Vec<Contact>),
    /// `contact.remove`
    ContactRemoved(ContactRemoved),
    /// `contact.block`
    ContactBlocked(ContactBlocked),
    /// `contact.unblock`
    ContactUnblocked(ContactUnblocked),
    /// `contact.blocked`
    Blocked(Vec<BlockedUser>),
    /// `contact.set`
    ContactSettings(ContactSettings),
    /// `request.list`
    Requests(Vec<MessageRequest>),
    /// `request.accept`
    RequestAccepted(RequestAccepted),
    /// `request.decline`
    RequestDeclined(RequestDeclined),
    /// `device.list`
    Devices(Vec<Device>),
    /// `device.link`
    DeviceLink(DeviceLink),
    /// `device.revoke`
    DeviceRevoked(DeviceRevoked),
    /// `device.rename`
    DeviceRenamed(DeviceRenamed),
    /// `profile.show`, `profile.set`, `email.add`, `email.remove`
    Profile(ProfileView),
    /// `export.readable`
    Exported(crate::export::Exported),
    /// `verify.start`, `verify.status`, `verify.answer`
    Verification(VerificationState),
    /// `contact.verify`
    ContactVerified(ContactVerified),
    /// `send`
    Sent(Sent),
    /// `messages`: one page, oldest first.
    Messages(Vec<Message>),
    /// `download`
    Downloaded(crate::files::Downloaded),
    /// `files`
    Files(Vec<crate::files::FileTransfer>),
    /// `signals.set`
    Signals(crate::signals::SignalsView),
    /// `signals.counts`
    SignalCounts(crate::signals::Counts),
    /// `presence`
    Presence(Vec<crate::signals::Presence>),
    /// `typing`, `read`
    Signaled(crate::signals::Signaled),
    /// `typing.list`
    Typers(Vec<UserId>),
    /// `call`, `call.accept`, `call.decline`, `call.hangup`
    Call(safemeet_engine::CallView),
    /// `call.status`
    Calls(Vec<safemeet_engine::CallView>),
    /// `mute`, `mute.list`: the muted conversations' room ids.
    Muted(Vec<safemeet_proto::RoomId>),
    /// `message.redact`, `message.edit`
    Changed(Changed),
    /// `export.archive`
    ArchiveExported(crate::export::ArchiveExported),
    /// `room.set`, `room.settings`
    RoomSettings(RoomSettingsView),
    /// `settings.set`, `settings.show`
    Settings(SettingsView),
    /// `room.create`
    RoomCreated(RoomCreated),
    /// `room.invite`
    RoomInvited(RoomInvited),
    /// `room.leave`
    RoomLeft(RoomLeft),
    /// `room.remove`
    RoomRemoved(RoomRemoved),
    /// `room.ban`
    RoomBanned(RoomBanned),
    /// `room.list`
    Rooms(Vec<Room>),
    /// `room.invitations`
    Invitations(Vec<RoomInvitation>),
    /// `room.join`
    RoomJoined(RoomJoined),
    /// `room.decline`
    RoomDeclined(RoomDeclined),
    /// `events`: one page, in cursor order.
    Events(Vec<Event>),
    /// `subscribe` (then `event` notifications follow).
    Subscribed(Subscribed),
}

impl Response {
    /// The answer to `method` from its JSON `result`.
    pub fn from_result(method: Method, result: serde_json::Value) -> serde_json::Result<Self> {
        use serde_json::from_value as from;
        Ok(match method {
            Method::Whoami => Response::Whoami(from(result)?),
            Method::Status => Response::Status(from(result)?),
            Method::Invite => Response::Invite(from(result)?),
            Method::ContactAdd => Response::ContactAdded(from(result)?),
            Method::ContactList => Response::Contacts(from(result)?),
            Method::ContactRemove => Response::ContactRemoved(from(result)?),
            Method::ContactBlock => Response::ContactBlocked(from(result)?),
            Method::ContactUnblock => Response::ContactUnblocked(from(result)?),
            Method::ContactBlocked => Response::Blocked(from(result)?),
            Method::ContactSet => Response::ContactSettings(from(result)?),
            Method::RequestList => Response::Requests(from(result)?),
            Method::RequestAccept => Response::RequestAccepted(from(result)?),
            Method::RequestDecline => Response::RequestDeclined(from(result)?),
            Method::DeviceList => Response::Devices(from(result)?),
            Method::DeviceLink => Response::DeviceLink(from(result)?),
            Method::DeviceRevoke => Response::DeviceRevoked(from(result)?),
            Method::DeviceRename => Response::DeviceRenamed(from(result)?),
            Method::ExportReadable => Response::Exported(from(result)?),
            Method::ProfileShow | Method::ProfileSet | Method::EmailAdd | Method::EmailRemove => {
                Response::Profile(from(result)?)
            }
            Method::ContactVerify => Response::ContactVerified(from(result)?),
            Method::VerifyStart | Method::VerifyStatus | Method::VerifyAnswer => {
                Response::Verification(from(result)?)
            }
            Method::Send => Response::Sent(from(result)?),
            Method::Messages => Response::Messages(from(result)?),
            Method::Download => Response::Downloaded(from(result)?),
            Method::Files => Response::Files(from(result)?),
            Method::SignalsSet => Response::Signals(from(result)?),
            Method::SignalsCounts => Response::SignalCounts(from(result)?),
            Method::Presence => Response::Presence(from(result)?),
            Method::Typing | Method::Read => Response::Signaled(from(result)?),
            Method::TypingList => Response::Typers(from(result)?),
            Method::Call
            | Method::CallAccept
            | Method::CallDecline
            | Method::CallHangup
            | Method::Meet => Response::Call(from(result)?),
            Method::CallStatus => Response::Calls(from(result)?),
            Method::Mute | Method::MuteList => Response::Muted(from(result)?),
            Method::MessageRedact | Method::MessageEdit => Response::Changed(from(result)?),
            Method::ExportArchive => Response::ArchiveExported(from(result)?),
            Method::RoomSet | Method::RoomSettings => Response::RoomSettings(from(result)?),
            Method::SettingsSet | Method::SettingsShow => Response::Settings(from(result)?),
            Method::RoomCreate => Response::RoomCreated(from(result)?),
            Method::RoomInvite => Response::RoomInvited(from(result)?),
            Method::RoomLeave => Response::RoomLeft(from(result)?),
            Method::RoomRemove => Response::RoomRemoved(from(result)?),
            Method::RoomBan => Response::RoomBanned(from(result)?),
            Method::RoomList => Response::Rooms(from(result)?),
            Method::RoomInvitations => Response::Invitations(from(result)?),
            Method::RoomJoin => Response::RoomJoined(from(result)?),
            Method::RoomDecline => Response::RoomDeclined(from(result)?),
            Method::Events => Response::Events(from(result)?),
            Method::Subscribe => Response::Subscribed(from(result)?),
        })
    }

    /// The method this answers.
    pub fn method(&self) -> Method {
        match self {
            Response::Whoami(_) => Method::Whoami,
            Response::Status(_) => Method::Status,
            Response::Invite(_) => Method::Invite,
            Response::ContactAdded(_) => Method::ContactAdd,
            Response::Contacts(_) => Method::ContactList,
            Response::ContactRemoved(_) => Method::ContactRemove,
            Response::ContactBlocked(_) => Method::ContactBlock,
            Response::ContactUnblocked(_) => Method::ContactUnblock,
            Response::Blocked(_) => Method::ContactBlocked,
            Response::ContactSettings(_) => Method::ContactSet,
            Response::Requests(_) => Method::RequestList,
            Response::RequestAccepted(_) => Method::RequestAccept,
            Response::RequestDeclined(_) => Method::RequestDecline,
            Response::Devices(_) => Method::DeviceList,
            Response::DeviceLink(_) => Method::DeviceLink,
            Response::DeviceRevoked(_) => Method::DeviceRevoke,
            Response::DeviceRenamed(_) => Method::DeviceRename,
            Response::Profile(_) => Method::ProfileShow,
            Response::Exported(_) => Method::ExportReadable,
            Response::Verification(_) => Method::VerifyStatus,
            Response::ContactVerified(_) => Method::ContactVerify,
            Response::Sent(_) => Method::Send,
            Response::Messages(_) => Method::Messages,
            Response::Downloaded(_) => Method::Download,
            Response::Files(_) => Method::Files,
            Response::Signals(_) => Method::SignalsSet,
            Response::SignalCounts(_) => Method::SignalsCounts,
            Response::Presence(_) => Method::Presence,
            Response::Signaled(_) => Method::Typing,
            Response::Typers(_) => Method::TypingList,
            Response::Call(_) => Method::Call,
            Response::Calls(_) => Method::CallStatus,
            Response::Muted(_) => Method::MuteList,
            Response::Changed(_) => Method::MessageEdit,
            Response::ArchiveExported(_) => Method::ExportArchive,
            Response::RoomSettings(_) => Method::RoomSettings,
            Response::Settings(_) => Method::SettingsShow,
            Response::RoomCreated(_) => Method::RoomCreate,
            Response::RoomInvited(_) => Method::RoomInvite,
            Response::RoomLeft(_) => Method::RoomLeave,
            Response::RoomRemoved(_) => Method::RoomRemove,
            Response::RoomBanned(_) => Method::RoomBan,
            Response::Rooms(_) => Method::RoomList,
            Response::Invitations(_) => Method::RoomInvitations,
            Response::RoomJoined(_) => Method::RoomJoin,
            Response::RoomDeclined(_) => Method::RoomDecline,
            Response::Events(_) => Method::Events,
            Response::Subscribed(_) => Method::Subscribe,
        }
    }
}

/// A [`Response`] of another method than the one expected.
#[derive(Debug, Clone, thiserror::Error)]
#[error("expected an answer to {expected}, got one to {got}")]
pub struct UnexpectedResponse {
    /// The method whose answer was expected.
    pub expected: Method,
    /// The method the answer is for.
    pub got: Method,
}

macro_rules! unwrap_response {
    ($($variant:ident($ty:ty) = $method:ident),* $(,)?) => {$(
        impl TryFrom<Response> for $ty {
            type Error = UnexpectedResponse;

            fn try_from(response: Response) -> Result<Self, UnexpectedResponse> {
                match response {
                    Response::$variant(v) => Ok(v),
                    other => Err(UnexpectedResponse {
                        expected: Method::$method,
                        got: other.method(),
                    }),
                }
            }
        }
    )*};
}

unwrap_response!(
    Whoami(Whoami) = Whoami,
    Status(crate::status::Status) = Status,
    Invite(InviteText) = Invite,
    ContactAdded(ContactAdded) = ContactAdd,
    Contacts(Vec<Contact>) = ContactList,
    ContactRemoved(ContactRemoved) = ContactRemove,
    ContactBlocked(ContactBlocked) = ContactBlock,
    ContactUnblocked(ContactUnblocked) = ContactUnblock,
    Blocked(Vec<BlockedUser>) = ContactBlocked,
    ContactSettings(ContactSettings) = ContactSet,
    Requests(Vec<MessageRequest>) = RequestList,
    RequestAccepted(RequestAccepted) = RequestAccept,
    RequestDeclined(RequestDeclined) = RequestDecline,
    Devices(Vec<Device>) = DeviceList,
    DeviceLink(DeviceLink) = DeviceLink,
    DeviceRevoked(DeviceRevoked) = DeviceRevoke,
    DeviceRenamed(DeviceRenamed) = DeviceRename,
    Profile(ProfileView) = ProfileShow,
    Exported(crate::export::Exported) = ExportReadable,
    Verification(VerificationState) = VerifyStatus,
    ContactVerified(ContactVerified) = ContactVerify,
    Sent(Sent) = Send,
    Messages(Vec<Message>) = Messages,
    Downloaded(crate::files::Downloaded) = Download,
    Files(Vec<crate::files::FileTransfer>) = Files,
    Signals(crate::signals::SignalsView) = SignalsSet,
    SignalCounts(crate::signals::Counts) = SignalsCounts,
    Presence(Vec<crate::signals::Presence>) = Presence,
    Signaled(crate::signals::Signaled) = Typing,
    Typers(Vec<UserId>) = TypingList,
    Call(safemeet_engine::CallView) = Call,
    Calls(Vec<safemeet_engine::CallView>) = CallStatus,
    Muted(Vec<safemeet_proto::RoomId>) = MuteList,
    Changed(Changed) = MessageEdit,
    ArchiveExported(crate::export::ArchiveExported) = ExportArchive,
    RoomSettings(RoomSettingsView) = RoomSettings,
    Settings(SettingsView) = SettingsShow,
    RoomCreated(RoomCreated) = RoomCreate,
    RoomInvited(RoomInvited) = RoomInvite,
    RoomLeft(RoomLeft) = RoomLeave,
    RoomRemoved(RoomRemoved) = RoomRemove,
    RoomBanned(RoomBanned) = RoomBan,
    Rooms(Vec<Room>) = RoomList,
    Invitations(Vec<RoomInvitation>) = RoomInvitations,
    RoomJoined(RoomJoined) = RoomJoin,
    RoomDeclined(RoomDeclined) = RoomDecline,
    Events(Vec<Event>) = Events,
    Subscribed(Subscribed) = Subscribe,
);

pub use crate::people::{
    BlockedUser, ContactBlocked, ContactSettings, ContactUnblocked, MessageRequest,
    RequestAccepted, RequestDeclined, RoomDeclined, RoomInvitation, RoomJoined,
};

/// `whoami`: the identity and the node's full addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Whoami {
    /// This account and device.
    #[serde(flatten)]
    pub identity: Identity,
    /// Where the node listens, each with `/p2p/<peer id>`.
    pub listen_addrs: Vec<String>,
}

/// `invite`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteText {
    /// The invite (`safemeet:…`).
    pub invite: String,
}

/// `contact.add`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactAdded {
    /// The new contact.
    pub user_id: UserId,
}

/// `contact.remove`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactRemoved {
    /// Who was removed.
    pub removed: UserId,
}

/// `send`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sent {
    /// The message, committed to the outbox.
    pub event_id: EventId,
}

/// `message.redact`, `message.edit`: the change went out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changed {
    /// The message changed.
    pub event_id: EventId,
    /// The redaction or edit, committed to the outbox.
    pub change_id: EventId,
}

/// `room.set`, `room.settings`: a conversation's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomSettingsView {
    /// The room (a DM's room id too).
    pub room_id: RoomId,
    /// Messages are deleted this long after they were sent, in ms;
    /// `null`: kept.
    pub expire_after_ms: Option<u64>,
}

/// `settings.set`, `settings.show`: this device's own limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettingsView {
    /// Messages of every conversation are deleted on this device this
    /// long after they were sent, in ms; `null`: kept.
    pub retention_ms: Option<u64>,
    /// Which signals this user shares (and so sees).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signals: Option<crate::signals::SignalsView>,
}

/// `room.create`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomCreated {
    /// The new room.
    pub room_id: RoomId,
}

/// `room.invite`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomInvited {
    /// Always `true`.
    pub invited: bool,
}

/// `room.leave`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomLeft {
    /// Always `true`.
    pub left: bool,
}

/// `room.remove`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomRemoved {
    /// Always `true`.
    pub removed: bool,
}

/// `room.ban`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomBanned {
    /// Always `true`.
    pub banned: bool,
}

/// A group room, as `room.list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Room {
    /// The room.
    pub room_id: RoomId,
    /// Its name.
    pub name: String,
    /// Its members.
    pub members: Vec<UserId>,
    /// Its admins.
    pub admins: Vec<UserId>,
}

impl From<safemeet_engine::RoomInfo> for Room {
    fn from(r: safemeet_engine::RoomInfo) -> Self {
        Room {
            room_id: r.room_id,
            name: r.name,
            members: r.members,
            admins: r.admins,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

    use safemeet_engine::{LogEntry, MessageState, Revision, TimelineEntry};
    use safemeet_proto::{DeviceId, Timestamp};
    use serde_json::json;

    use super::*;
    use crate::EventKind;

    fn entry(state: MessageState) -> TimelineEntry {
        TimelineEntry {
            event_id: EventId::from_bytes([2; 32]),
            sender: UserId::from_bytes([1; 32]),
            sender_device: DeviceId::from_bytes([3; 16]),
            lamport: 7,
            ts: Timestamp::from_millis(1_764_280_000_000).unwrap(),
            text: "hello".into(),
            state,
            revision: Revision::Original,
            received_at: Timestamp::from_millis(1_764_280_000_000).unwrap(),
            file: None,
        }
    }

    #[test]
    fn messages_keep_the_documented_shape() {
        let m = Message::from(&entry(MessageState::Delivered));
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(v["event_id"], m.event_id.to_string());
        assert_eq!(v["sender"], m.sender.to_string());
        assert_eq!(v["text"], "hello");
        assert_eq!(v["ts"], 1_764_280_000_000u64);
        assert_eq!(v["state"], "delivered");
        assert!(v.get("stored_until").is_none());
        assert_eq!(v["cursor"], format!("7.{}.{}", m.sender, m.event_id));
        assert_eq!(serde_json::from_value::<Message>(v).unwrap(), m);

        let until = Timestamp::from_millis(1_800_000_000_000).unwrap();
        let relayed = Message::from(&entry(MessageState::StoredAtRelay { until }));
        let v = serde_json::to_value(&relayed).unwrap();
        assert_eq!(v["state"], "stored_at_relay");
        assert_eq!(v["stored_until"], 1_800_000_000_000u64);
    }

    #[test]
    fn events_keep_the_documented_shape() {
        let room_id = RoomId::from_bytes([4; 16]);
        let entry = LogEntry::Delivered {
            room_id,
            event_id: EventId::from_bytes([2; 32]),
        };
        let e = Event::from_log(3, &entry);
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(
            v,
            json!({"cursor": 3, "type": "delivered", "room_id": room_id.to_string(),
                   "event_id": EventId::from_bytes([2; 32]).to_string()})
        );
        assert_eq!(serde_json::from_value::<Event>(v).unwrap(), e);
        // A kind this version does not know still reads, with its cursor.
        let future = json!({"cursor": 9, "type": "reaction", "emoji": "+1"});
        let e: Event = serde_json::from_value(future).unwrap();
        assert_eq!((e.cursor, e.kind), (9, EventKind::Other));
    }

    #[test]
    fn a_response_reads_back_for_its_method() {
        let r = Response::RoomInvited(RoomInvited { invited: true });
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v, json!({"invited": true}));
        assert_eq!(Response::from_result(Method::RoomInvite, v).unwrap(), r);
        assert!(Response::from_result(Method::Send, json!({"invited": true})).is_err());
        let e = Sent::try_from(r).unwrap_err();
        assert_eq!((e.expected, e.got), (Method::Send, Method::RoomInvite));
    }
}
