//! A message as the API shows it (`messages`, and inside events).

use safemeet_engine::{MessageState, Revision, TimelineEntry};
use safemeet_proto::{EventId, UserId};
use serde::{Deserialize, Serialize};

use crate::request::MessageCursor;

/// Where a message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum State {
    /// From someone else.
    Received,
    /// In the outbox, not acknowledged yet.
    Sent,
    /// A recipient device acknowledged it.
    Delivered,
    /// Kept by a relay for an unreachable recipient device (see
    /// [`Message::stored_until`]).
    StoredAtRelay,
}

/// A message, as `messages` and `message` events show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The event.
    pub event_id: EventId,
    /// Who sent it.
    pub sender: UserId,
    /// From which of their devices.
    pub sender_device: safemeet_proto::DeviceId,
    /// Whether that device is verified (one of your own, or a contact's
    /// verified by SAS); set by `messages`, false in events.
    #[serde(default)]
    pub verified: bool,
    /// The text.
    pub text: String,
    /// The sender's time, ms since the Unix epoch.
    pub ts: u64,
    /// When this device took it in, ms since the Unix epoch (its own
    /// messages: when it was sent). Against `ts`, it shows how far apart
    /// the two clocks are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received_at: Option<u64>,
    /// Where it stands.
    pub state: State,
    /// For [`State::StoredAtRelay`]: the latest "kept until" of the relays'
    /// receipts, ms since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_until: Option<u64>,
    /// Its place in the conversation: `messages` continues after it.
    pub cursor: MessageCursor,
    /// Its sender replaced the text (earlier texts are not kept).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub edited: bool,
    /// Deleted for everyone: the text is empty.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub redacted: bool,
    /// The file it carries (then `text` is its caption).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<crate::files::FileView>,
    /// Who read it (members whose read marker is at or past it; set by
    /// `messages` while read receipts are on).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub read_by: Vec<UserId>,
}

impl From<&TimelineEntry> for Message {
    fn from(m: &TimelineEntry) -> Self {
        let (state, stored_until) = match m.state {
            MessageState::Received => (State::Received, None),
            MessageState::Sent => (State::Sent, None),
            MessageState::Delivered => (State::Delivered, None),
            MessageState::StoredAtRelay { until } => {
                (State::StoredAtRelay, Some(until.as_millis()))
            }
        };
        Message {
            event_id: m.event_id,
            sender: m.sender,
            sender_device: m.sender_device,
            verified: false,
            text: m.text.clone(),
            ts: m.ts.as_millis(),
            received_at: Some(m.received_at.as_millis()),
            state,
            stored_until,
            cursor: cursor_of(m),
            edited: matches!(m.revision, Revision::Edited { .. }),
            redacted: m.revision == Revision::Redacted,
            file: m.file.as_ref().map(crate::files::FileView::from),
            read_by: Vec::new(),
        }
    }
}

/// The position of a timeline entry in its conversation's order.
pub(crate) fn cursor_of(m: &TimelineEntry) -> MessageCursor {
    MessageCursor {
        lamport: m.lamport,
        sender: m.sender,
        event_id: m.event_id,
    }
}
