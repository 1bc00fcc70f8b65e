//! A group room's state: its members, admins and secret, and its place in
//! the chain of states rooted at the room's creator.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::UserId;
use crate::codec::{self, EncodeError};
use crate::limits::MAX_EVENT_BYTES;
use crate::room::{RoomSecret, StateHash};

/// The state of a group room, sent by one of its admins.
///
/// States form a chain rooted at the room's creator: the room id commits
/// to the creator and a random nonce ([`room_id_for`](crate::room::room_id_for)), the first state
/// (epoch 0) comes from the creator, and every later state names the
/// [`StateHash`] of the state it replaces (`prev`) and is accepted only
/// from an admin of that state (see the engine's `rooms` module for the
/// whole rule). A new state with a new secret, hence a new gossip topic,
/// follows every membership change.
#[derive(Clone, Serialize, Deserialize)]
#[serde(try_from = "RoomStateWire")]
pub struct RoomState {
    /// Format version; currently [`ROOM_STATE_VERSION`].
    pub version: u8,
    /// The room's name (1-64 bytes, printable).
    pub name: String,
    /// The room secret: the gossip topic derives from it. Never printed,
    /// zeroized on drop.
    pub secret: RoomSecret,
    /// The members.
    pub members: Vec<UserId>,
    /// The admins (members too).
    pub admins: Vec<UserId>,
    /// Users barred from the room (never members).
    pub banned: Vec<UserId>,
    /// The user who created the room: with `nonce`, the room id derives
    /// from it.
    pub creator: UserId,
    /// The creator's random nonce.
    pub nonce: [u8; 16],
    /// Position in the chain: 0 for the creator's first state.
    pub epoch: u64,
    /// The hash of the state this one replaces (none for epoch 0).
    pub prev: Option<StateHash>,
    /// The members this state brings in (invited by it). A member who
    /// left or was removed comes back only from a state that names them
    /// here: a state issued before their leave was seen still lists them
    /// as a member, and must not take them back in.
    pub added: Vec<UserId>,
}

/// The format version of [`RoomState`]: 2 since states form a chain
/// (version 1 states, with no creator or previous hash, are refused).
pub const ROOM_STATE_VERSION: u8 = 2;

#[derive(Deserialize)]
struct RoomStateWire {
    version: u8,
    name: String,
    secret: RoomSecret,
    members: Vec<UserId>,
    admins: Vec<UserId>,
    banned: Vec<UserId>,
    creator: UserId,
    nonce: [u8; 16],
    epoch: u64,
    prev: Option<StateHash>,
    added: Vec<UserId>,
}

/// A room state that breaks a limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid room state: {0}")]
pub struct BadRoomState(pub &'static str);

fn distinct(users: &[UserId]) -> bool {
    let set: std::collections::BTreeSet<&UserId> = users.iter().collect();
    set.len() == users.len()
}

impl TryFrom<RoomStateWire> for RoomState {
    type Error = BadRoomState;
    fn try_from(w: RoomStateWire) -> Result<Self, BadRoomState> {
        let name_ok = !w.name.is_empty()
            && w.name.len() <= crate::limits::MAX_DISPLAY_NAME_BYTES
            && !w.name.chars().any(char::is_control);
        if !name_ok {
            return Err(BadRoomState(
                "the name must be 1-64 bytes of printable text",
            ));
        }
        if w.version != ROOM_STATE_VERSION {
            return Err(BadRoomState("unsupported version"));
        }
        if w.members.len() > crate::limits::MAX_ROOM_MEMBERS {
            return Err(BadRoomState("too many members"));
        }
        if w.banned.len() > crate::limits::MAX_ROOM_BANNED {
            return Err(BadRoomState("too many banned users"));
        }
        if !distinct(&w.members) || !distinct(&w.admins) || !distinct(&w.banned) {
            return Err(BadRoomState("a user is listed twice"));
        }
        if w.admins.is_empty() || !w.admins.iter().all(|a| w.members.contains(a)) {
            return Err(BadRoomState(
                "every admin must be a member, and there must be one",
            ));
        }
        if !distinct(&w.added) || !w.added.iter().all(|a| w.members.contains(a)) {
            return Err(BadRoomState(
                "the users a state adds must be distinct members",
            ));
        }
        if w.banned.iter().any(|b| w.members.contains(b)) {
            return Err(BadRoomState("a banned user is listed as a member"));
        }
        if (w.epoch == 0) != w.prev.is_none() {
            return Err(BadRoomState(
                "only the first state (epoch 0) has no previous state",
            ));
        }
        if w.epoch == 0 && w.admins != [w.creator] {
            return Err(BadRoomState(
                "the first state has the creator as sole admin",
            ));
        }
        Ok(Self {
            version: w.version,
            name: w.name,
            secret: w.secret,
            members: w.members,
            admins: w.admins,
            banned: w.banned,
            creator: w.creator,
            nonce: w.nonce,
            epoch: w.epoch,
            prev: w.prev,
            added: w.added,
        })
    }
}

impl RoomState {
    /// The hash that the next state names as `prev`: BLAKE3 (keyed by a
    /// context) of this state's encoding, which is canonical.
    pub fn hash(&self) -> Result<StateHash, EncodeError> {
        let bytes = codec::encode_limited(self, MAX_EVENT_BYTES)?;
        Ok(StateHash::derive(&bytes))
    }
}

impl fmt::Debug for RoomState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoomState")
            .field("epoch", &self.epoch)
            .field("members", &self.members.len())
            .field("banned", &self.banned.len())
            .finish_non_exhaustive()
    }
}

impl PartialEq for RoomState {
    fn eq(&self, other: &Self) -> bool {
        self.version == other.version
            && self.name == other.name
            && self.secret.expose() == other.secret.expose()
            && self.members == other.members
            && self.admins == other.admins
            && self.banned == other.banned
            && self.creator == other.creator
            && self.nonce == other.nonce
            && self.epoch == other.epoch
            && self.prev == other.prev
            && self.added == other.added
    }
}

impl Eq for RoomState {}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is a failure

    use super::*;

    fn user(b: u8) -> UserId {
        UserId::from_bytes([b; 32])
    }

    fn wire() -> RoomStateWire {
        RoomStateWire {
            version: ROOM_STATE_VERSION,
            name: "r".into(),
            secret: RoomSecret::from_bytes([7; 32]),
            members: vec![user(1), user(2)],
            admins: vec![user(1)],
            banned: vec![user(3)],
            creator: user(1),
            nonce: [4; 16],
            epoch: 0,
            prev: None,
            added: vec![user(2)],
        }
    }

    #[test]
    fn a_valid_state_round_trips_and_its_hash_covers_every_field() {
        let state = RoomState::try_from(wire()).unwrap();
        let bytes = codec::encode(&state).unwrap();
        let back: RoomState = codec::decode(&bytes, MAX_EVENT_BYTES).unwrap();
        assert_eq!(back, state);
        let mut next = wire();
        next.epoch = 1;
        next.prev = Some(state.hash().unwrap());
        let next = RoomState::try_from(next).unwrap();
        assert_ne!(next.hash().unwrap(), state.hash().unwrap());
    }

    #[test]
    fn states_that_break_the_chain_rules_are_refused() {
        type Change = Box<dyn Fn(&mut RoomStateWire)>;
        let cases: Vec<(&str, Change)> = vec![
            ("old version", Box::new(|w| w.version = 1)),
            ("banned member", Box::new(|w| w.banned.push(user(2)))),
            ("twice banned", Box::new(|w| w.banned.push(user(3)))),
            ("twice admin", Box::new(|w| w.admins.push(user(1)))),
            (
                "genesis with prev",
                Box::new(|w| w.prev = Some(StateHash::from_bytes([1; 32]))),
            ),
            ("later without prev", Box::new(|w| w.epoch = 3)),
            ("genesis not by creator", Box::new(|w| w.creator = user(2))),
            (
                "too many banned",
                Box::new(|w| {
                    w.banned = (0..=crate::limits::MAX_ROOM_BANNED)
                        .map(|i| {
                            UserId::from_bytes(
                                [(i % 250) as u8 + 3, (i / 250) as u8]
                                    .repeat(16)
                                    .try_into()
                                    .unwrap(),
                            )
                        })
                        .collect();
                }),
            ),
        ];
        for (what, change) in cases {
            let mut w = wire();
            change(&mut w);
            assert!(RoomState::try_from(w).is_err(), "{what} was accepted");
        }
    }
}
