//! Short-lived signals between devices: presence, typing, read markers
//! and call signalling ([`Signal`], carried as `ToDeviceEvent::Signal`
//! over Olm).
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
    /// A step of a call (see [`CallSignal`]).
    Call(CallSignal),
}

/// A call's id: 16 random bytes chosen by the caller.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CallId(pub [u8; 16]);

impl CallId {
    /// The id as 32 hex digits.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Parses 32 hex digits.
    pub fn from_hex(s: &str) -> Option<Self> {
        if s.len() != 32 || !s.is_ascii() {
            return None;
        }
        let mut out = [0u8; 16];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Self(out))
    }
}

impl std::fmt::Debug for CallId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CallId({})", &self.to_hex()[..8])
    }
}

/// A call's media key, as handed to one participant device over Olm:
/// never printed by `Debug`, wiped when dropped.
#[derive(
    Clone, PartialEq, Eq, Serialize, Deserialize, zeroize::Zeroize, zeroize::ZeroizeOnDrop,
)]
pub struct CallKey(pub [u8; 32]);

impl std::fmt::Debug for CallKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CallKey([scrubbed])")
    }
}

/// Why a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HangupReason {
    /// Someone hung up.
    Hangup,
    /// Nobody answered in time.
    NoAnswer,
    /// Another device of the callee answered.
    AnsweredElsewhere,
    /// The media stopped (the peer was unreachable for too long).
    Lost,
    /// The device is busy with another call.
    Busy,
    /// The meeting has its 8 participants already.
    Full,
}

/// Most devices in a meeting (a full mesh: each sends to every other).
pub const MAX_MEETING: usize = 8;

/// Call signalling between two devices, end-to-end encrypted (Olm) and
/// sent directly only, never left on a relay: a call is now or never.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CallSignal {
    /// The sender calls this user: to every device of the user.
    Invite {
        /// The call.
        call_id: CallId,
    },
    /// The device got the invite and rings.
    Ringing {
        /// The call.
        call_id: CallId,
    },
    /// The device answered.
    Accept {
        /// The call.
        call_id: CallId,
    },
    /// The device's user declined.
    Decline {
        /// The call.
        call_id: CallId,
    },
    /// The call ends for the sender.
    Hangup {
        /// The call.
        call_id: CallId,
        /// Why.
        reason: HangupReason,
    },
    /// The sender's media key: frames it seals under KID
    /// `epoch << 8 | index` open with it (SFrame, RFC 9605).
    Key {
        /// The call.
        call_id: CallId,
        /// The sender's index in the call.
        index: u8,
        /// The key's epoch.
        epoch: u32,
        /// The base key.
        key: CallKey,
    },
    /// How the sender hears this device: frames lost in the last
    /// report period, per thousand (the sender's encoder adds forward
    /// error correction for it).
    Report {
        /// The call.
        call_id: CallId,
        /// Frames lost, per thousand.
        loss_permille: u16,
    },
    /// The sender joins (or starts) the meeting `call_id` of a room: to
    /// every device of the room's members it can reach. Who is in the
    /// meeting adds it and answers [`Here`](Self::Here); the others learn
    /// that a meeting runs there.
    Join {
        /// The meeting.
        call_id: CallId,
        /// Its room.
        room_id: RoomId,
        /// The sender's index in the meeting (its frames' KIDs).
        index: u8,
    },
    /// The sender is in the meeting (the answer to a `Join`).
    Here {
        /// The meeting.
        call_id: CallId,
        /// Its room.
        room_id: RoomId,
        /// The sender's index in the meeting.
        index: u8,
    },
    /// The sender left the meeting (to those in it).
    Leave {
        /// The meeting.
        call_id: CallId,
    },
}

impl CallSignal {
    /// The call the signal is about.
    pub fn call_id(&self) -> CallId {
        match self {
            Self::Invite { call_id }
            | Self::Ringing { call_id }
            | Self::Accept { call_id }
            | Self::Decline { call_id }
            | Self::Hangup { call_id, .. }
            | Self::Key { call_id, .. }
            | Self::Report { call_id, .. }
            | Self::Join { call_id, .. }
            | Self::Here { call_id, .. }
            | Self::Leave { call_id } => *call_id,
        }
    }
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
