//! Room secrets and the gossip topics derived from them.
//!
//! A group room has a random 32-byte [`RoomSecret`], shared with its members
//! inside end-to-end encryption. Its gossip [`RoomTopic`] is a BLAKE3 hash of
//! the secret: members compute the same topic, while a peer that sees the
//! topic on the wire learns neither the room id nor the secret. A direct
//! conversation has no secret; [`dm_room`] derives its room id and topic
//! from the two user ids, so both sides find the same room.
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
