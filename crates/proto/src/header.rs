//! Room header keys: what seals a room message's envelope, so that whoever
//! carries the frame sees fresh random bytes in each message.
//!
//! A room message's envelope names its Megolm session, and the Megolm
//! message inside names its index: both link the messages of one sending
//! device. On the wire the whole envelope is therefore sealed (XChaCha20-
//! Poly1305, `safemeet_crypto::header`) under the room's header key, with a
//! random nonce per message. Next to the nonce travels a short *hint*, a
//! keyed hash of the nonce, so a member finds which of its rooms' keys
//! opens a frame with one small hash per room instead of a trial
//! decryption; the hint is as fresh as the nonce, so it links nothing.
//!
//! A key is 32 bytes of root material, from which the AEAD key and the
//! hint key derive:
//! - a group room's root derives from its [`RoomSecret`], so it changes when
//!   the secret rotates with membership;
//! - a DM's root derives from its topic, which derives from the two user
//!   ids. Only the two users (and whoever holds both their ids) can compute
//!   it; DM frames travel only to the other user's devices, over Noise, or
//!   sealed again to a mailbox key on relays, so no third party sees them
//!   in clear anyway.
//!
//! The root travels with each room key share (inside Olm), so a device
//! opens the frames of a room it is just joining, or whose secret just
//! rotated, before it has the room's state.
//!
//! These derivations are a format, pinned by tests.

use std::fmt;

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::room::{RoomSecret, RoomTopic};

/// BLAKE3 context of a group room's header root (from its secret).
const ROOM_ROOT_CONTEXT: &str = "safemeet/v1/room-header";
/// BLAKE3 context of a DM's header root (from its topic).
const DM_ROOT_CONTEXT: &str = "safemeet/v1/dm-header";
/// BLAKE3 context of the AEAD key (from a root).
const SEAL_CONTEXT: &str = "safemeet/v1/header-seal";
/// BLAKE3 context of the hint key (from a root).
const HINT_CONTEXT: &str = "safemeet/v1/header-hint";

/// Bytes of a sealed envelope's nonce (XChaCha20-Poly1305).
pub const NONCE_BYTES: usize = 24;
/// Bytes of a sealed envelope's hint.
pub const HINT_BYTES: usize = 8;
/// Bytes of the AEAD tag.
pub const TAG_BYTES: usize = 16;

/// A room's header key. Zeroized on drop; `Debug` prints no bytes.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct HeaderKey {
    root: [u8; 32],
    seal: [u8; 32],
    hint: [u8; 32],
}

/// A header key's root material, as a room key share carries it.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop, Serialize, Deserialize)]
#[serde(transparent)]
pub struct HeaderRoot([u8; 32]);

impl fmt::Debug for HeaderRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HeaderRoot([scrubbed])")
    }
}

impl HeaderRoot {
    /// Wraps root bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The root bytes.
    pub const fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl HeaderKey {
    /// The key of root material `root`.
    pub fn from_root(root: &HeaderRoot) -> Self {
        Self {
            root: root.0,
            seal: blake3::derive_key(SEAL_CONTEXT, &root.0),
            hint: blake3::derive_key(HINT_CONTEXT, &root.0),
        }
    }

    /// A group room's key, from its secret.
    pub fn for_room(secret: &RoomSecret) -> Self {
        let mut root = HeaderRoot(blake3::derive_key(ROOM_ROOT_CONTEXT, secret.expose()));
        let key = Self::from_root(&root);
        root.zeroize();
        key
    }

    /// A DM's key, from its topic.
    pub fn for_dm(topic: &RoomTopic) -> Self {
        let mut root = HeaderRoot(blake3::derive_key(DM_ROOT_CONTEXT, topic.as_bytes()));
        let key = Self::from_root(&root);
        root.zeroize();
        key
    }

    /// The root material, to share with a room key.
    pub fn root(&self) -> HeaderRoot {
        HeaderRoot(self.root)
    }

    /// The AEAD key.
    pub const fn seal_key(&self) -> &[u8; 32] {
        &self.seal
    }

    /// The hint of `nonce` under this key.
    pub fn hint(&self, nonce: &[u8; NONCE_BYTES]) -> [u8; HINT_BYTES] {
        let hash = blake3::keyed_hash(&self.hint, nonce);
        let mut out = [0u8; HINT_BYTES];
        out.copy_from_slice(&hash.as_bytes()[..HINT_BYTES]);
        out
    }
}

impl fmt::Debug for HeaderKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HeaderKey([scrubbed])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_their_secret_and_print_nothing() {
        let a = HeaderKey::for_room(&RoomSecret::from_bytes([1; 32]));
        let b = HeaderKey::for_room(&RoomSecret::from_bytes([2; 32]));
        assert_ne!(a, b);
        assert_eq!(HeaderKey::from_root(&a.root()), a);
        let dm = HeaderKey::for_dm(&RoomTopic::from_bytes([1; 32]));
        assert_ne!(dm, a, "a DM and a room never share a key by accident");
        assert_eq!(format!("{a:?}"), "HeaderKey([scrubbed])");
        assert_eq!(format!("{:?}", a.root()), "HeaderRoot([scrubbed])");
        let nonce = [9; NONCE_BYTES];
        assert_ne!(a.hint(&nonce), b.hint(&nonce));
        assert_ne!(a.hint(&nonce), a.hint(&[8; NONCE_BYTES]));
    }
}
