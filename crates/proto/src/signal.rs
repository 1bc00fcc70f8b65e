//! Short-lived signals between devices: presence, typing and read
//! markers ([`Signal`], carried as `ToDeviceEvent::Signal` over Olm).
//! What a node does with them, and why none of them is ever left on a
//! relay, is in `safemeet_engine`'s signals.

use serde::{Deserialize, Serialize};

use crate::{EventId, RoomId, Timestamp};

/// A short-lived signal between devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Signal {
    /// The sender's user is online or away; last seen (now, or when a
    /// client was last used), rounded down to [`PRESENCE_ROUNDING_MS`].
    Presence {
        /// Online, away or offline.
        state: PresenceState,
        /// When the user was last seen active, rounded.
        last_seen: Timestamp,
    },
    /// The sender's user is typing in a room, or stopped.
    Typing {
        /// The room (a DM's room id for a DM).
        room_id: RoomId,
        /// Typing now, or stopped.
        typing: bool,
    },
    /// The sender's user read a room up to this event.
    Read {
        /// The room.
        room_id: RoomId,
        /// The last event read.
        event_id: EventId,
    },
}

/// How far presence times are rounded: 5 minutes.
pub const PRESENCE_ROUNDING_MS: u64 = 5 * 60 * 1000;

/// What presence says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PresenceState {
    /// Active now.
    Online,
    /// Running, but not used for a while.
    Away,
    /// Gone: what a receiver shows once it has heard nothing for a while
    /// (a device that stops sends nothing more).
    Offline,
}
