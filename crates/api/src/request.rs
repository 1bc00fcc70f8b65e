//! The requests: one [`Request`] variant per JSON-RPC method, with typed
//! parameters.
//!
//! On the wire a request is `{"method": NAME, "params": {…}}` inside the
//! JSON-RPC envelope; [`Request::from_parts`] turns the two into a value,
//! telling an unknown method (`-32601`) from bad parameters (`-32602`), and
//! serialising a `Request` gives the two back. Names (TARGET, ROOM) are
//! what a user typed; [`resolve`](crate::resolve) turns them into ids.

use safemeet_proto::EventId;
use serde::{Deserialize, Deserializer, Serialize};

use crate::Error;
pub use crate::cursor::{BadCursor, MessageCursor};
pub use crate::method::Method;

/// Messages answered by `messages` when the request gives no `limit`.
pub const DEFAULT_MESSAGES_LIMIT: u64 = 50;
/// Events answered by `events` when the request gives no `limit`.
pub const DEFAULT_EVENTS_LIMIT: u64 = 100;
/// Largest `limit` honoured by `messages` and `events`; more is served as
/// this many. It bounds what one request makes the engine read (each page
/// reads the window again; see `docs/api.md`).
pub const MAX_LIMIT: u64 = 10_000;

/// A call of one API method, with its parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "method", content = "params")]
#[non_exhaustive]
pub enum Request {
    /// `whoami`: this account and device, and where the node listens.
    #[serde(rename = "whoami")]
    Whoami {},
    /// `status`: how the node stands with the network.
    #[serde(rename = "status")]
    Status {},
    /// `invite`: an invite for others to add this user.
    #[serde(rename = "invite")]
    Invite {},
    /// `contact.add`: accept another user's invite.
    #[serde(rename = "contact.add")]
    ContactAdd {
        /// The invite text (`safemeet:…`).
        invite: String,
        /// A name to call them by (a pet name).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// `contact.list`: the contacts, in the order they were added.
    #[serde(rename = "contact.list")]
    ContactList {},
    /// `contact.remove`: forget a contact (their messages stay).
    #[serde(rename = "contact.remove")]
    ContactRemove {
        /// The contact: name, username or user id.
        target: String,
    },
    /// `contact.block`: block a user (a contact or not): their deliveries
    /// are refused without an acknowledgement, nothing of theirs is stored.
    #[serde(rename = "contact.block")]
    ContactBlock {
        /// The user: contact name, username or user id.
        target: String,
    },
    /// `contact.unblock`: undo a block.
    #[serde(rename = "contact.unblock")]
    ContactUnblock {
        /// The user: contact name, username or user id.
        target: String,
    },
    /// `contact.blocked`: the blocked users, in the order they were blocked.
    #[serde(rename = "contact.blocked")]
    ContactBlocked {},
    /// `contact.set`: change a contact's settings.
    #[serde(rename = "contact.set")]
    ContactSet {
        /// The contact: name, username or user id.
        target: String,
        /// Join the rooms this contact invites this user to without
        /// asking (left as it is when absent).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        auto_accept_invites: Option<bool>,
    },
    /// `request.list`: the message requests (first messages from people
    /// who are not contacts), oldest first.
    #[serde(rename = "request.list")]
    RequestList {},
    /// `request.accept`: make a requester a contact; their first messages
    /// show.
    #[serde(rename = "request.accept")]
    RequestAccept {
        /// The requester: username or user id.
        target: String,
    },
    /// `request.decline`: delete a message request.
    #[serde(rename = "request.decline")]
    RequestDecline {
        /// The requester: username or user id.
        target: String,
    },
    /// `device.list`: this user's devices.
    #[serde(rename = "device.list")]
    DeviceList {},
    /// `device.link`: show a link for a new device (one use, 10 minutes);
    /// only on the device that holds the master key.
    #[serde(rename = "device.link")]
    DeviceLink {
        /// Give the new device a copy of the master key.
        #[serde(default)]
        with_master: bool,
    },
    /// `device.revoke`: revoke another device of this user.
    #[serde(rename = "device.revoke")]
    DeviceRevoke {
        /// The device id.
        device_id: String,
    },
    /// `profile.show`: this user's current profile.
    #[serde(rename = "profile.show")]
    ProfileShow {},
    /// `profile.set`: change the display name and/or the avatar (on the
    /// device with the master key); contacts get the new signed versions.
    #[serde(rename = "profile.set")]
    ProfileSet {
        /// The new display name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        display_name: Option<String>,
        /// A new avatar: a PNG or JPEG, base64; its metadata is removed and
        /// it must then fit in 48 KiB.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        avatar: Option<String>,
        /// Remove the avatar.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        remove_avatar: bool,
    },
    /// `email.add`: add an e-mail address to the profile.
    #[serde(rename = "email.add")]
    EmailAdd {
        /// The address.
        email: String,
    },
    /// `email.remove`: remove an e-mail address from the profile.
    #[serde(rename = "email.remove")]
    EmailRemove {
        /// The address.
        email: String,
    },
    /// `export.readable`: write everything this node holds about its user,
    /// with no keys, as JSON and Markdown files into a new directory (an
    /// absolute path on the node's machine).
    #[serde(rename = "export.readable")]
    ExportReadable {
        /// The directory: new, or empty.
        dir: String,
    },
    /// `device.rename`: name one of this user's devices (its other devices
    /// learn the name; contacts never do).
    #[serde(rename = "device.rename")]
    DeviceRename {
        /// The device id.
        device_id: String,
        /// 1 to 64 characters.
        name: String,
    },
    /// `verify.start`: verify a contact's device by SAS (answer their
    /// request, or ask them).
    #[serde(rename = "verify.start")]
    VerifyStart {
        /// The contact: name, username or user id.
        target: String,
    },
    /// `contact.verify`: verify a contact from their invite, scanned from
    /// their screen or pasted in person.
    #[serde(rename = "contact.verify")]
    ContactVerify {
        /// Their invite (`safemeet:…`).
        invite: String,
    },
    /// `verify.status`: where the verification with a contact stands.
    #[serde(rename = "verify.status")]
    VerifyStatus {
        /// The contact.
        target: String,
    },
    /// `verify.answer`: whether the strings match (false cancels).
    #[serde(rename = "verify.answer")]
    VerifyAnswer {
        /// The contact.
        target: String,
        /// The strings match.
        matches: bool,
    },
    /// `send`: send a text, or a file with a caption, to a contact or a
    /// room.
    #[serde(rename = "send")]
    Send {
        /// A contact (name, username, user id) or a room (name, room id).
        target: String,
        /// The text (a file's caption; may then be empty).
        #[serde(default)]
        text: String,
        /// An absolute path of a file on the daemon's machine to send.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        file: Option<String>,
    },
    /// `download`: save the file of a message, checked, to a new file.
    #[serde(rename = "download")]
    Download {
        /// The file message.
        event_id: EventId,
        /// An absolute path: a new file, or a directory to save it in under
        /// its own name.
        path: String,
    },
    /// `files`: the files on their way (and recently done).
    #[serde(rename = "files")]
    Files {},
    /// `signals.set`: which signals this user shares (absent: unchanged).
    #[serde(rename = "signals.set")]
    SignalsSet {
        /// Presence.
        #[serde(default)]
        presence: Option<bool>,
        /// Typing.
        #[serde(default)]
        typing: Option<bool>,
        /// Read receipts.
        #[serde(default)]
        read_receipts: Option<bool>,
    },
    /// `signals.counts`: signals sent and received since start.
    #[serde(rename = "signals.counts")]
    SignalsCounts {},
    /// `presence`: contacts' presence (empty while presence is off).
    #[serde(rename = "presence")]
    Presence {},
    /// `typing`: this user types in a conversation, or stopped.
    #[serde(rename = "typing")]
    Typing {
        /// The conversation.
        target: String,
        /// Typing (true) or stopped.
        typing: bool,
    },
    /// `call`: call a contact (every device of theirs that can be
    /// reached rings).
    #[serde(rename = "call")]
    Call {
        /// The contact.
        target: String,
        /// An absolute path to a 48 kHz mono 16-bit WAV file to send
        /// (absent: silence).
        #[serde(default)]
        wav_in: Option<String>,
        /// An absolute path to write what is heard into, as WAV.
        #[serde(default)]
        wav_out: Option<String>,
    },
    /// `call.accept`: answer the call ringing here.
    #[serde(rename = "call.accept")]
    CallAccept {
        /// As for `call`.
        #[serde(default)]
        wav_in: Option<String>,
        /// As for `call`.
        #[serde(default)]
        wav_out: Option<String>,
    },
    /// `meet`: join the meeting of a room (start one if none runs).
    #[serde(rename = "meet")]
    Meet {
        /// The room.
        room: String,
        /// As for `call`.
        #[serde(default)]
        wav_in: Option<String>,
        /// As for `call`.
        #[serde(default)]
        wav_out: Option<String>,
    },
    /// `call.decline`: decline the call ringing here.
    #[serde(rename = "call.decline")]
    CallDecline {},
    /// `call.hangup`: end the call on now, or stop calling.
    #[serde(rename = "call.hangup")]
    CallHangup {},
    /// `call.status`: the call on now, then the last ended ones, with
    /// live counts.
    #[serde(rename = "call.status")]
    CallStatus {},
    /// `typing.list`: who types in a conversation now.
    #[serde(rename = "typing.list")]
    TypingList {
        /// The conversation.
        target: String,
    },
    /// `read`: this user read a conversation up to its latest message.
    #[serde(rename = "read")]
    Read {
        /// The conversation.
        target: String,
    },
    /// `mute`: mute or unmute a conversation's notifications on this
    /// device (messages still arrive).
    #[serde(rename = "mute")]
    Mute {
        /// The conversation.
        target: String,
        /// Muted (true) or not.
        muted: bool,
    },
    /// `mute.list`: the muted conversations' room ids.
    #[serde(rename = "mute.list")]
    MuteList {},
    /// `export.archive`: the account, sealed under a passphrase, in one
    /// new file (see `docs/archive.md`); issues the device an import of
    /// it becomes.
    #[serde(rename = "export.archive")]
    ExportArchive {
        /// An absolute path for a new file.
        file: String,
        /// What seals it (at least 8 characters).
        passphrase: crate::export::Secret,
    },
    /// `message.redact`: delete a message for everyone (this user's own,
    /// or any in a room this user is an admin of).
    #[serde(rename = "message.redact")]
    MessageRedact {
        /// The message (`e_…`).
        event_id: EventId,
    },
    /// `message.edit`: replace the text of one of this user's messages.
    #[serde(rename = "message.edit")]
    MessageEdit {
        /// The message (`e_…`).
        event_id: EventId,
        /// Its new text.
        text: String,
    },
    /// `room.set`: how long a conversation's messages are kept, for every
    /// member (a group room's admins, or either user of a DM).
    #[serde(rename = "room.set")]
    RoomSet {
        /// A contact (name, username, user id) or a room (name, room id).
        target: String,
        /// Milliseconds (1 s to 10 years); absent or `null`: kept.
        #[serde(default)]
        expire_after_ms: Option<u64>,
    },
    /// `room.settings`: a conversation's settings.
    #[serde(rename = "room.settings")]
    RoomSettings {
        /// A contact (name, username, user id) or a room (name, room id).
        target: String,
    },
    /// `settings.set`: this device's own limits.
    #[serde(rename = "settings.set")]
    SettingsSet {
        /// Every conversation's messages are deleted on this device this
        /// long after they were sent, in ms (1 s to 10 years); absent or
        /// `null`: kept.
        #[serde(default)]
        retention_ms: Option<u64>,
    },
    /// `settings.show`: this device's own limits.
    #[serde(rename = "settings.show")]
    SettingsShow {},
    /// `messages`: a conversation's latest messages, a page at a time.
    #[serde(rename = "messages")]
    Messages {
        /// A contact (name, username, user id) or a room (name, room id).
        target: String,
        /// How many of the latest messages (default
        /// [`DEFAULT_MESSAGES_LIMIT`], at most [`MAX_LIMIT`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u64>,
        /// Continue after this message (the `cursor` of the last message
        /// of the previous page).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<MessageCursor>,
    },
    /// `room.create`: create a group room with these contacts.
    #[serde(rename = "room.create")]
    RoomCreate {
        /// Its name.
        name: String,
        /// Contacts to add (names, usernames or user ids).
        #[serde(default, deserialize_with = "null_as_default")]
        members: Vec<String>,
    },
    /// `room.invite`: add a contact to a room (admins only).
    #[serde(rename = "room.invite")]
    RoomInvite {
        /// The room: name or room id.
        room: String,
        /// The contact: name, username or user id.
        target: String,
    },
    /// `room.leave`: leave a room.
    #[serde(rename = "room.leave")]
    RoomLeave {
        /// The room: name or room id.
        room: String,
    },
    /// `room.remove`: remove a member from a room (admins only); the
    /// remaining members get a new room secret.
    #[serde(rename = "room.remove")]
    RoomRemove {
        /// The room: name or room id.
        room: String,
        /// The member: contact name, username or user id.
        target: String,
    },
    /// `room.ban`: remove a member from a room and bar them from it
    /// (admins only).
    #[serde(rename = "room.ban")]
    RoomBan {
        /// The room: name or room id.
        room: String,
        /// The member: contact name, username or user id.
        target: String,
    },
    /// `room.list`: the group rooms this user is in.
    #[serde(rename = "room.list")]
    RoomList {},
    /// `room.invitations`: the room invitations waiting for consent.
    #[serde(rename = "room.invitations")]
    RoomInvitations {},
    /// `room.join`: join a room from its pending invitation.
    #[serde(rename = "room.join")]
    RoomJoin {
        /// The room: its name in the invitation, or its room id.
        room: String,
    },
    /// `room.decline`: drop a pending room invitation.
    #[serde(rename = "room.decline")]
    RoomDecline {
        /// The room: its name in the invitation, or its room id.
        room: String,
    },
    /// `events`: event-log entries after a cursor, a page at a time.
    #[serde(rename = "events")]
    Events {
        /// Entries after this cursor (default 0: from the start).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<u64>,
        /// At most this many (default [`DEFAULT_EVENTS_LIMIT`], at most
        /// [`MAX_LIMIT`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u64>,
    },
    /// `subscribe`: every event after a cursor, then new ones as they
    /// happen. Only a streaming transport serves it.
    #[serde(rename = "subscribe")]
    Subscribe {
        /// Events after this cursor (default 0: from the start).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<u64>,
        /// Also `progress` notifications: file transfers as they change
        /// (default false).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        progress: Option<bool>,
    },
}

impl Request {
    /// A request from the `method` and `params` members of a JSON-RPC
    /// request. Missing or `null` params are `{}`.
    pub fn from_parts(method: &str, params: Option<serde_json::Value>) -> Result<Request, Error> {
        let found = Method::from_name(method)
            .ok_or_else(|| Error::MethodNotFound(truncated(method, 64)))?;
        let params = match params {
            None | Some(serde_json::Value::Null) => serde_json::Value::Object(Default::default()),
            Some(p) => p,
        };
        serde_json::from_value(serde_json::json!({ "method": method, "params": params })).map_err(
            |source| Error::InvalidParams {
                method: found.name(),
                source,
            },
        )
    }

    /// The method this request calls.
    pub fn method(&self) -> Method {
        match self {
            Request::Whoami {} => Method::Whoami,
            Request::Status {} => Method::Status,
            Request::Invite {} => Method::Invite,
            Request::ContactAdd { .. } => Method::ContactAdd,
            Request::ContactList {} => Method::ContactList,
            Request::ContactRemove { .. } => Method::ContactRemove,
            Request::ContactBlock { .. } => Method::ContactBlock,
            Request::ContactUnblock { .. } => Method::ContactUnblock,
            Request::ContactBlocked {} => Method::ContactBlocked,
            Request::ContactSet { .. } => Method::ContactSet,
            Request::RequestList {} => Method::RequestList,
            Request::RequestAccept { .. } => Method::RequestAccept,
            Request::RequestDecline { .. } => Method::RequestDecline,
            Request::DeviceList {} => Method::DeviceList,
            Request::DeviceLink { .. } => Method::DeviceLink,
            Request::DeviceRevoke { .. } => Method::DeviceRevoke,
            Request::DeviceRename { .. } => Method::DeviceRename,
            Request::ProfileShow {} => Method::ProfileShow,
            Request::ExportReadable { .. } => Method::ExportReadable,
            Request::ProfileSet { .. } => Method::ProfileSet,
            Request::EmailAdd { .. } => Method::EmailAdd,
            Request::EmailRemove { .. } => Method::EmailRemove,
            Request::VerifyStart { .. } => Method::VerifyStart,
            Request::VerifyStatus { .. } => Method::VerifyStatus,
            Request::ContactVerify { .. } => Method::ContactVerify,
            Request::VerifyAnswer { .. } => Method::VerifyAnswer,
            Request::Send { .. } => Method::Send,
            Request::Download { .. } => Method::Download,
            Request::Files {} => Method::Files,
            Request::SignalsSet { .. } => Method::SignalsSet,
            Request::SignalsCounts {} => Method::SignalsCounts,
            Request::Presence {} => Method::Presence,
            Request::Typing { .. } => Method::Typing,
            Request::TypingList { .. } => Method::TypingList,
            Request::Call { .. } => Method::Call,
            Request::CallAccept { .. } => Method::CallAccept,
            Request::Meet { .. } => Method::Meet,
            Request::CallDecline {} => Method::CallDecline,
            Request::CallHangup {} => Method::CallHangup,
            Request::CallStatus {} => Method::CallStatus,
            Request::Read { .. } => Method::Read,
            Request::Mute { .. } => Method::Mute,
            Request::MuteList {} => Method::MuteList,
            Request::Messages { .. } => Method::Messages,
            Request::ExportArchive { .. } => Method::ExportArchive,
            Request::MessageRedact { .. } => Method::MessageRedact,
            Request::MessageEdit { .. } => Method::MessageEdit,
            Request::RoomSet { .. } => Method::RoomSet,
            Request::RoomSettings { .. } => Method::RoomSettings,
            Request::SettingsSet { .. } => Method::SettingsSet,
            Request::SettingsShow {} => Method::SettingsShow,
            Request::RoomCreate { .. } => Method::RoomCreate,
            Request::RoomInvite { .. } => Method::RoomInvite,
            Request::RoomLeave { .. } => Method::RoomLeave,
            Request::RoomRemove { .. } => Method::RoomRemove,
            Request::RoomBan { .. } => Method::RoomBan,
            Request::RoomList {} => Method::RoomList,
            Request::RoomInvitations {} => Method::RoomInvitations,
            Request::RoomJoin { .. } => Method::RoomJoin,
            Request::RoomDecline { .. } => Method::RoomDecline,
            Request::Events { .. } => Method::Events,
            Request::Subscribe { .. } => Method::Subscribe,
        }
    }
}

/// At most `max` characters of `s` (an unknown method name is echoed in
/// the error; a hostile one need not be echoed whole).
fn truncated(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &s[..end]),
        None => s.to_owned(),
    }
}

fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
