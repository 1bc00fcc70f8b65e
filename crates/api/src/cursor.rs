//! [`MessageCursor`]: a place in a conversation's order.

use std::fmt;
use std::str::FromStr;

use safemeet_proto::{EventId, UserId};
use serde::{Deserialize, Deserializer, Serialize};

/// Where a message stands in its conversation's order: a `messages` page
/// continues after it. The order is the timeline's (Lamport clock, then
/// sender, then event id), the same on every member's device.
///
/// Its text form is `LAMPORT.SENDER.EVENT` (`12.u_….e_…`); clients should
/// treat it as opaque.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageCursor {
    /// The message's Lamport clock.
    pub lamport: u64,
    /// Its sender.
    pub sender: UserId,
    /// The message.
    pub event_id: EventId,
}

/// Why a message cursor was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a message cursor (LAMPORT.SENDER.EVENT)")]
pub struct BadCursor;

impl fmt::Display for MessageCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.lamport, self.sender, self.event_id)
    }
}

impl FromStr for MessageCursor {
    type Err = BadCursor;

    fn from_str(s: &str) -> Result<Self, BadCursor> {
        let mut parts = s.split('.');
        let (Some(lamport), Some(sender), Some(event_id), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(BadCursor);
        };
        // Only the canonical decimal form, so text forms round-trip.
        if lamport.is_empty()
            || !lamport.bytes().all(|b| b.is_ascii_digit())
            || (lamport.len() > 1 && lamport.starts_with('0'))
        {
            return Err(BadCursor);
        }
        Ok(MessageCursor {
            lamport: lamport.parse().map_err(|_| BadCursor)?,
            sender: sender.parse().map_err(|_| BadCursor)?,
            event_id: event_id.parse().map_err(|_| BadCursor)?,
        })
    }
}

impl Serialize for MessageCursor {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MessageCursor {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}
