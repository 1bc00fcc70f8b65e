//! Timeline entries as earlier versions stored them, read and turned into
//! today's [`TimelineEntry`] (see `TimelineEntry::decode`).

use safemeet_proto::{DeviceId, EventId, Timestamp, UserId};
use serde::{Deserialize, Serialize};

use crate::records::{MessageState, Revision, TimelineEntry};

/// A [`TimelineEntry`] as stored before files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TimelineEntryV2 {
    event_id: EventId,
    sender: UserId,
    sender_device: DeviceId,
    lamport: u64,
    ts: Timestamp,
    text: String,
    state: MessageState,
    revision: Revision,
    received_at: Timestamp,
}

impl From<TimelineEntryV2> for TimelineEntry {
    fn from(old: TimelineEntryV2) -> Self {
        Self {
            event_id: old.event_id,
            sender: old.sender,
            sender_device: old.sender_device,
            lamport: old.lamport,
            ts: old.ts,
            text: old.text,
            state: old.state,
            revision: old.revision,
            received_at: old.received_at,
            file: None,
        }
    }
}

/// A [`TimelineEntry`] as stored before revisions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TimelineEntryV1 {
    event_id: EventId,
    sender: UserId,
    sender_device: DeviceId,
    lamport: u64,
    ts: Timestamp,
    text: String,
    state: MessageState,
}

impl From<TimelineEntryV1> for TimelineEntry {
    fn from(old: TimelineEntryV1) -> Self {
        Self {
            event_id: old.event_id,
            sender: old.sender,
            sender_device: old.sender_device,
            lamport: old.lamport,
            ts: old.ts,
            text: old.text,
            state: old.state,
            revision: Revision::Original,
            received_at: old.ts,
            file: None,
        }
    }
}
