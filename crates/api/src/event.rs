//! The event log as the API shows it: what `events`, `subscribe` and the
//! HTTP event stream hand out.

use safemeet_engine::{LogEntry, Removal};
use safemeet_proto::{EventId, RoomId, UserId};
use serde::{Deserialize, Serialize};

use crate::message::Message;

/// An entry of the event log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Its place in the log; cursors only grow.
    pub cursor: u64,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What an [`Event`] says happened (its `type`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// A message arrived or was sent.
    Message {
        /// The room (a DM's room id too).
        room_id: RoomId,
        /// The message.
        message: Message,
    },
    /// A group room was joined or its state changed.
    Room {
        /// The room.
        room_id: RoomId,
        /// Its name.
        name: String,
        /// Its members.
        members: Vec<UserId>,
    },
    /// A message this device sent was acknowledged by a recipient device.
    Delivered {
        /// The room.
        room_id: RoomId,
        /// The message.
        event_id: EventId,
    },
    /// A message this device sent is kept by a relay.
    StoredAtRelay {
        /// The room.
        room_id: RoomId,
        /// The message.
        event_id: EventId,
        /// Kept until then, ms since the Unix epoch.
        stored_until: u64,
    },
    /// A call with a contact ended: answered, missed, declined, or not
    /// answered.
    Call {
        /// The contact.
        with: UserId,
        /// The call's id (32 hex digits).
        call_id: String,
        /// This user called.
        outgoing: bool,
        /// How it ended.
        outcome: safemeet_engine::CallOutcome,
        /// When it started ringing, ms since the Unix epoch.
        at: u64,
        /// How long it was answered for, ms.
        duration_ms: u64,
    },
    /// This device left a room's meeting.
    Meeting {
        /// The room.
        room_id: RoomId,
        /// The meeting's id (32 hex digits).
        call_id: String,
        /// When this device joined, ms since the Unix epoch.
        at: u64,
        /// How long this device was in it, ms.
        duration_ms: u64,
        /// Who else it met there, in the order they came.
        with: Vec<UserId>,
    },
    /// A message's text was replaced.
    Edited {
        /// The room.
        room_id: RoomId,
        /// The message, as it is now.
        message: Message,
    },
    /// A message was deleted for everyone by its sender or a room admin.
    Redacted {
        /// The room.
        room_id: RoomId,
        /// The message.
        event_id: EventId,
    },
    /// A message expired (the room's expiry or this device's retention).
    Expired {
        /// The room.
        room_id: RoomId,
        /// The message.
        event_id: EventId,
    },
    /// A conversation's expiry changed.
    RoomSettings {
        /// The room.
        room_id: RoomId,
        /// Messages are deleted this long after they were sent, in ms;
        /// absent: kept.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expire_after_ms: Option<u64>,
        /// Who set it.
        by: UserId,
    },
    /// An entry of a kind this version does not describe.
    #[serde(other)]
    Other,
}

impl Event {
    /// The event of log entry `cursor`.
    pub fn from_log(cursor: u64, entry: &LogEntry) -> Self {
        let kind = match entry {
            LogEntry::Message { room_id, entry } => EventKind::Message {
                room_id: *room_id,
                message: entry.into(),
            },
            LogEntry::Room {
                room_id,
                name,
                members,
            } => EventKind::Room {
                room_id: *room_id,
                name: name.clone(),
                members: members.clone(),
            },
            LogEntry::Delivered { room_id, event_id } => EventKind::Delivered {
                room_id: *room_id,
                event_id: *event_id,
            },
            LogEntry::StoredAtRelay {
                room_id,
                event_id,
                until,
            } => EventKind::StoredAtRelay {
                room_id: *room_id,
                event_id: *event_id,
                stored_until: until.as_millis(),
            },
            LogEntry::Edited { room_id, entry } => EventKind::Edited {
                room_id: *room_id,
                message: entry.into(),
            },
            LogEntry::Removed {
                room_id,
                event_id,
                reason: Removal::Redacted,
            } => EventKind::Redacted {
                room_id: *room_id,
                event_id: *event_id,
            },
            LogEntry::Removed {
                room_id,
                event_id,
                reason: Removal::Expired,
            } => EventKind::Expired {
                room_id: *room_id,
                event_id: *event_id,
            },
            LogEntry::Settings {
                room_id,
                expire_after_ms,
                by,
            } => EventKind::RoomSettings {
                room_id: *room_id,
                expire_after_ms: *expire_after_ms,
                by: *by,
            },
            LogEntry::Call(call) => EventKind::Call {
                with: call.with,
                call_id: call.call_id.to_hex(),
                outgoing: call.outgoing,
                outcome: call.outcome,
                at: call.at.as_millis(),
                duration_ms: call.duration_ms,
            },
            LogEntry::Meeting(meeting) => EventKind::Meeting {
                room_id: meeting.room_id,
                call_id: meeting.call_id.to_hex(),
                at: meeting.at.as_millis(),
                duration_ms: meeting.duration_ms,
                with: meeting.with.clone(),
            },
            _ => EventKind::Other,
        };
        Event { cursor, kind }
    }
}

/// `subscribe`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscribed {
    /// Always `true`.
    pub subscribed: bool,
    /// The cursor the stream starts after.
    pub since: u64,
}
