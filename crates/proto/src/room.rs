//! Room secrets and the gossip topics derived from them.
//!
//! A group room has a random 32-byte [`RoomSecret`], shared with its members
//! inside end-to-end encryption. Its gossip [`RoomTopic`] is a BLAKE3 hash of
//! the secret: members compute the same topic, while a peer that sees the
//! topic on the wire learns neither the room id nor the secret. A direct
//! conversation has no secret; [`dm_room`] derives its room id and topic
//! from the two user ids, so both sides find the same room.
//!
//! A group room's id commits to its creator: [`room_id_for`] derives it
//! from the creator's user id and a random nonce, so anyone holding the
//! room's first state can check who made the room. Each room state is
//! named by its [`StateHash`], which the next state refers to.
//!
//! These derivations are a format: every device must compute the same
//! bytes, so they live here, next to the types, and are pinned by tests.
//!
//! Both types zeroize their bytes on drop and print no bytes in `Debug`;
//! neither has `Display`. A topic is not a key, but it ties a peer to a
//! room, so it is kept out of logs like other private data.

use std::fmt;

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::{RoomId, UserId};

/// BLAKE3 context of a group room's topic (from its secret).
const ROOM_TOPIC_CONTEXT: &str = "safemeet/v1/room-topic";
/// BLAKE3 context of a group room's id (from its creator and a nonce).
const ROOM_ID_CONTEXT: &str = "safemeet/v1/room-id";
/// BLAKE3 context of a room state's hash (from its encoding).
const ROOM_STATE_CONTEXT: &str = "safemeet/v1/room-state";
/// BLAKE3 context of the hash that both a DM room's id and topic come from.
const DM_ROOM_CONTEXT: &str = "safemeet/v1/dm-room";
/// BLAKE3 context of a DM room's topic (from the DM room hash).
const DM_TOPIC_CONTEXT: &str = "safemeet/v1/dm-topic";

/// A group room's secret: the gossip topic derives from it.
///
/// In binary encodings it is its 32 raw bytes, exactly like a `[u8; 32]`
/// field. It has no `PartialEq` (a secret is not compared with a
/// short-circuiting loop) and no `Display`.
#[derive(Clone, Zeroize, ZeroizeOnDrop, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RoomSecret([u8; 32]);

impl RoomSecret {
    /// Wraps a secret (for a new room, 32 bytes from the OS random number
    /// generator; the caller provides them, as this crate does no I/O).
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The secret's bytes, for sealing it to members.
    pub const fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    /// The room's gossip topic.
    pub fn topic(&self) -> RoomTopic {
        RoomTopic::derive(self)
    }
}

impl fmt::Debug for RoomSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RoomSecret([scrubbed])")
    }
}

/// A room's gossip topic: 32 opaque bytes.
///
/// In binary encodings it is its 32 raw bytes, exactly like a `[u8; 32]`
/// field, so a stored or wire `[u8; 32]` topic can become a `RoomTopic`
/// without changing a byte.
#[derive(Clone, PartialEq, Eq, Hash, Zeroize, ZeroizeOnDrop, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RoomTopic([u8; 32]);

impl RoomTopic {
    /// Wraps topic bytes (as read from an envelope or a record).
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The topic's bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The topic of the group room with this secret.
    pub fn derive(secret: &RoomSecret) -> Self {
        Self(blake3::derive_key(ROOM_TOPIC_CONTEXT, secret.expose()))
    }
}

impl fmt::Debug for RoomTopic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RoomTopic([scrubbed])")
    }
}

/// The id of the group room that `creator` made with `nonce`: the first
/// 16 bytes of a keyed BLAKE3 hash of both. Finding another creator and
/// nonce with the same id is a second preimage on 128 bits.
pub fn room_id_for(creator: &UserId, nonce: &[u8; 16]) -> RoomId {
    let mut hasher = blake3::Hasher::new_derive_key(ROOM_ID_CONTEXT);
    hasher.update(creator.as_bytes());
    hasher.update(nonce);
    let mut id = [0u8; 16];
    id.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
    RoomId::from_bytes(id)
}

/// The hash of a room state (see `RoomState::hash`): what the next state
/// names as the one it replaces. Not secret, but it names a room's
/// history, so `Debug` prints only its first bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StateHash([u8; 32]);

impl StateHash {
    /// Wraps hash bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The hash's bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The hash of an encoded room state.
    pub fn derive(encoded_state: &[u8]) -> Self {
        Self(blake3::derive_key(ROOM_STATE_CONTEXT, encoded_state))
    }
}

impl fmt::Debug for StateHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "StateHash({:02x}{:02x}{:02x}{:02x}…)",
            self.0[0], self.0[1], self.0[2], self.0[3]
        )
    }
}

/// The room id and gossip topic of the direct conversation between two
/// users: the same whichever of them asks.
pub fn dm_room(a: &UserId, b: &UserId) -> (RoomId, RoomTopic) {
    let (lo, hi) = if a.as_bytes() <= b.as_bytes() {
        (a, b)
    } else {
        (b, a)
    };
    let mut hasher = blake3::Hasher::new_derive_key(DM_ROOM_CONTEXT);
    hasher.update(lo.as_bytes());
    hasher.update(hi.as_bytes());
    let hash = hasher.finalize();
    let mut id = [0u8; 16];
    id.copy_from_slice(&hash.as_bytes()[..16]);
    let topic = RoomTopic(blake3::derive_key(DM_TOPIC_CONTEXT, hash.as_bytes()));
    (RoomId::from_bytes(id), topic)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is a failure

    use super::*;

    #[test]
    fn debug_prints_no_bytes() {
        let secret = RoomSecret::from_bytes([0xab; 32]);
        let topic = secret.topic();
        assert_eq!(format!("{secret:?}"), "RoomSecret([scrubbed])");
        assert_eq!(format!("{topic:?}"), "RoomTopic([scrubbed])");
    }

    #[test]
    fn the_topic_depends_on_the_secret() {
        let a = RoomSecret::from_bytes([1; 32]);
        let b = RoomSecret::from_bytes([2; 32]);
        assert_eq!(a.topic(), RoomTopic::derive(&a));
        assert_ne!(a.topic(), b.topic());
        assert_ne!(a.topic().as_bytes(), a.expose());
    }

    #[test]
    fn both_users_derive_the_same_dm_room() {
        let alice = UserId::from_bytes([1; 32]);
        let bob = UserId::from_bytes([2; 32]);
        let carol = UserId::from_bytes([3; 32]);
        assert_eq!(dm_room(&alice, &bob), dm_room(&bob, &alice));
        assert_ne!(dm_room(&alice, &bob).0, dm_room(&alice, &carol).0);
        assert_ne!(dm_room(&alice, &bob).1, dm_room(&alice, &carol).1);
    }

    #[test]
    fn the_room_id_commits_to_the_creator_and_nonce() {
        let alice = UserId::from_bytes([1; 32]);
        let mallory = UserId::from_bytes([2; 32]);
        let id = room_id_for(&alice, &[5; 16]);
        assert_eq!(id, room_id_for(&alice, &[5; 16]));
        assert_ne!(id, room_id_for(&mallory, &[5; 16]));
        assert_ne!(id, room_id_for(&alice, &[6; 16]));
        // Pinned: every device must derive the same id.
        assert_eq!(
            room_id_for(&UserId::from_bytes([0; 32]), &[0; 16]).as_bytes()[..4],
            PINNED_ROOM_ID_PREFIX
        );
    }

    /// The first bytes of the room id of the all-zero creator and nonce.
    const PINNED_ROOM_ID_PREFIX: [u8; 4] = [225, 71, 210, 54];

    #[test]
    fn encoded_like_a_byte_array() {
        let bytes = [9u8; 32];
        let plain = crate::codec::encode(&bytes).unwrap();
        assert_eq!(
            crate::codec::encode(&RoomTopic::from_bytes(bytes)).unwrap(),
            plain
        );
        assert_eq!(
            crate::codec::encode(&RoomSecret::from_bytes(bytes)).unwrap(),
            plain
        );
        let topic: RoomTopic = crate::codec::decode(&plain, 64).unwrap();
        assert_eq!(topic.as_bytes(), &bytes);
        let secret: RoomSecret = crate::codec::decode(&plain, 64).unwrap();
        assert_eq!(secret.expose(), &bytes);
    }
}
