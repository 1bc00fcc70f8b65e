//! The durable event log's entries: [`LogEntry`] as API clients replay
//! them, and [`LogRecord`] as stored (messages named by their place in the
//! timeline, see `revisions`).

use safemeet_proto::{EventId, RoomId, Timestamp, UserId};
use serde::{Deserialize, Serialize};

use crate::records::TimelineEntry;
use crate::timeline_versions::TimelineEntryV1;

/// An entry of the durable event log that API clients replay from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum LogEntry {
    /// A message arrived.
    Message {
        /// The room.
        room_id: RoomId,
        /// The message, as it is now (edited or redacted since, perhaps).
        entry: TimelineEntry,
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
    /// A message this device sent is kept by a relay for a recipient
    /// device that was unreachable.
    StoredAtRelay {
        /// The room.
        room_id: RoomId,
        /// The message.
        event_id: EventId,
        /// Kept until then (the latest of the relays' receipts).
        until: Timestamp,
    },
    /// A message's text was replaced.
    Edited {
        /// The room.
        room_id: RoomId,
        /// The message, as it is now.
        entry: TimelineEntry,
    },
    /// A message was deleted: redacted for everyone, or expired.
    Removed {
        /// The room.
        room_id: RoomId,
        /// The message.
        event_id: EventId,
        /// Why.
        reason: Removal,
    },
    /// A room's expiry changed.
    Settings {
        /// The room.
        room_id: RoomId,
        /// Messages are deleted this long after they were sent (ms).
        expire_after_ms: Option<u64>,
        /// Who set it.
        by: UserId,
    },
    /// A call with a contact ended (missed, declined, answered).
    Call(crate::call_signals::CallRecord),
    /// This device left a room's meeting.
    Meeting(crate::call_signals::MeetingRecord),
}

/// Why a message left the timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Removal {
    /// Its sender or a room admin redacted it for everyone.
    Redacted,
    /// The room's expiry or this device's retention limit passed.
    Expired,
}

/// An event-log entry as stored. Messages are named by their place in
/// the timeline, so their text lives in one place only and an edit, a
/// redaction or an expiry changes or removes it everywhere at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum LogRecord {
    /// A message, as logged before messages were named by position (a
    /// copy of its text; see `revisions::migrate`).
    LegacyMessage {
        room_id: RoomId,
        entry: TimelineEntryV1,
    },
    Room {
        room_id: RoomId,
        name: String,
        members: Vec<UserId>,
    },
    Delivered {
        room_id: RoomId,
        event_id: EventId,
    },
    StoredAtRelay {
        room_id: RoomId,
        event_id: EventId,
        until: Timestamp,
    },
    /// A message arrived: timeline entry `seq` of the room.
    Message {
        room_id: RoomId,
        seq: u64,
    },
    /// Timeline entry `seq` of the room was edited.
    Edited {
        room_id: RoomId,
        seq: u64,
    },
    Removed {
        room_id: RoomId,
        event_id: EventId,
        reason: Removal,
    },
    Settings {
        room_id: RoomId,
        expire_after_ms: Option<u64>,
        by: UserId,
    },
    Call(crate::call_signals::CallRecord),
    Meeting(crate::call_signals::MeetingRecord),
}
