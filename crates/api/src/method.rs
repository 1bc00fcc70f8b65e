//! [`Method`]: the API's methods by name, each answered by one
//! [`Response`](crate::Response) variant.

use std::fmt;

/// Which method a [`Request`](crate::Request) calls (and which [`Response`](crate::Response)
/// variant answers it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Method {
    /// `whoami`
    Whoami,
    /// `status`
    Status,
    /// `invite`
    Invite,
    /// `contact.add`
    ContactAdd,
    /// `contact.list`
    ContactList,
    /// `contact.remove`
    ContactRemove,
    /// `contact.block`
    ContactBlock,
    /// `contact.unblock`
    ContactUnblock,
    /// `contact.blocked`
    ContactBlocked,
    /// `contact.set`
    ContactSet,
    /// `request.list`
    RequestList,
    /// `request.accept`
    RequestAccept,
    /// `request.decline`
    RequestDecline,
    /// `device.list`
    DeviceList,
    /// `device.link`
    DeviceLink,
    /// `device.revoke`
    DeviceRevoke,
    /// `device.rename`
    DeviceRename,
    /// `profile.show`
    ProfileShow,
    /// `export.readable`
    ExportReadable,
    /// `profile.set`
    ProfileSet,
    /// `email.add`
    EmailAdd,
    /// `email.remove`
    EmailRemove,
    /// `verify.start`
    VerifyStart,
    /// `verify.status`
    VerifyStatus,
    /// `contact.verify`
    ContactVerify,
    /// `verify.answer`
    VerifyAnswer,
    /// `send`
    Send,
    /// `messages`
    Messages,
    /// `download`
    Download,
    /// `files`
    Files,
    /// `signals.set`
    SignalsSet,
    /// `signals.counts`
    SignalsCounts,
    /// `presence`
    Presence,
    /// `typing`
    Typing,
    /// `call`
    Call,
    /// `call.accept`
    CallAccept,
    /// `meet`
    Meet,
    /// `call.decline`
    CallDecline,
    /// `call.hangup`
    CallHangup,
    /// `call.status`
    CallStatus,
    /// `typing.list`
    TypingList,
    /// `read`
    Read,
    /// `mute`
    Mute,
    /// `mute.list`
    MuteList,
    /// `export.archive`
    ExportArchive,
    /// `message.redact`
    MessageRedact,
    /// `message.edit`
    MessageEdit,
    /// `room.set`
    RoomSet,
    /// `room.settings`
    RoomSettings,
    /// `settings.set`
    SettingsSet,
    /// `settings.show`
    SettingsShow,
    /// `room.create`
    RoomCreate,
    /// `room.invite`
    RoomInvite,
    /// `room.leave`
    RoomLeave,
    /// `room.remove`
    RoomRemove,
    /// `room.ban`
    RoomBan,
    /// `room.list`
    RoomList,
    /// `room.invitations`
    RoomInvitations,
    /// `room.join`
    RoomJoin,
    /// `room.decline`
    RoomDecline,
    /// `events`
    Events,
    /// `subscribe`
    Subscribe,
}

impl Method {
    /// Every method.
    pub const ALL: [Method; 62] = [
        Method::Whoami,
        Method::Status,
        Method::Invite,
        Method::ContactAdd,
        Method::ContactList,
        Method::ContactRemove,
        Method::ContactBlock,
        Method::ContactUnblock,
        Method::ContactBlocked,
        Method::ContactSet,
        Method::RequestList,
        Method::RequestAccept,
        Method::RequestDecline,
        Method::DeviceList,
        Method::DeviceLink,
        Method::DeviceRevoke,
        Method::DeviceRename,
        Method::ProfileShow,
        Method::ExportReadable,
        Method::ProfileSet,
        Method::EmailAdd,
        Method::EmailRemove,
        Method::VerifyStart,
        Method::VerifyStatus,
        Method::ContactVerify,
        Method::VerifyAnswer,
        Method::Send,
        Method::Messages,
        Method::Download,
        Method::Files,
        Method::SignalsSet,
        Method::SignalsCounts,
        Method::Presence,
        Method::Typing,
        Method::TypingList,
        Method::Call,
        Method::CallAccept,
        Method::Meet,
        Method::CallDecline,
        Method::CallHangup,
        Method::CallStatus,
        Method::Read,
        Method::Mute,
        Method::MuteList,
        Method::ExportArchive,
        Method::MessageRedact,
        Method::MessageEdit,
        Method::RoomSet,
        Method::RoomSettings,
        Method::SettingsSet,
        Method::SettingsShow,
        Method::RoomCreate,
        Method::RoomInvite,
        Method::RoomLeave,
        Method::RoomRemove,
        Method::RoomBan,
        Method::RoomList,
        Method::RoomInvitations,
        Method::RoomJoin,
        Method::RoomDecline,
        Method::Events,
        Method::Subscribe,
    ];

    /// Its name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Method::Whoami => "whoami",
            Method::Status => "status",
            Method::Invite => "invite",
            Method::ContactAdd => "contact.add",
            Method::ContactList => "contact.list",
            Method::ContactRemove => "contact.remove",
            Method::ContactBlock => "contact.block",
            Method::ContactUnblock => "contact.unblock",
            Method::ContactBlocked => "contact.blocked",
            Method::ContactSet => "contact.set",
            Method::RequestList => "request.list",
            Method::RequestAccept => "request.accept",
            Method::RequestDecline => "request.decline",
            Method::DeviceList => "device.list",
            Method::DeviceLink => "device.link",
            Method::DeviceRevoke => "device.revoke",
            Method::DeviceRename => "device.rename",
            Method::ProfileShow => "profile.show",
            Method::ExportReadable => "export.readable",
            Method::ProfileSet => "profile.set",
            Method::EmailAdd => "email.add",
            Method::EmailRemove => "email.remove",
            Method::VerifyStart => "verify.start",
            Method::VerifyStatus => "verify.status",
            Method::ContactVerify => "contact.verify",
            Method::VerifyAnswer => "verify.answer",
            Method::Send => "send",
            Method::Messages => "messages",
            Method::Download => "download",
            Method::Files => "files",
            Method::SignalsSet => "signals.set",
            Method::SignalsCounts => "signals.counts",
            Method::Presence => "presence",
            Method::Typing => "typing",
            Method::TypingList => "typing.list",
            Method::Call => "call",
            Method::CallAccept => "call.accept",
            Method::Meet => "meet",
            Method::CallDecline => "call.decline",
            Method::CallHangup => "call.hangup",
            Method::CallStatus => "call.status",
            Method::Read => "read",
            Method::Mute => "mute",
            Method::MuteList => "mute.list",
            Method::ExportArchive => "export.archive",
            Method::MessageRedact => "message.redact",
            Method::MessageEdit => "message.edit",
            Method::RoomSet => "room.set",
            Method::RoomSettings => "room.settings",
            Method::SettingsSet => "settings.set",
            Method::SettingsShow => "settings.show",
            Method::RoomCreate => "room.create",
            Method::RoomInvite => "room.invite",
            Method::RoomLeave => "room.leave",
            Method::RoomRemove => "room.remove",
            Method::RoomBan => "room.ban",
            Method::RoomList => "room.list",
            Method::RoomInvitations => "room.invitations",
            Method::RoomJoin => "room.join",
            Method::RoomDecline => "room.decline",
            Method::Events => "events",
            Method::Subscribe => "subscribe",
        }
    }

    /// The method of this name.
    pub fn from_name(name: &str) -> Option<Method> {
        Method::ALL.into_iter().find(|m| m.name() == name)
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
