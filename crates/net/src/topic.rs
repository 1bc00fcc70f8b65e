//! Room topics on the gossip wire.
//!
//! Gossipsub names a topic by a string; a SafeMeet room topic is 32 opaque
//! bytes. On the wire the string is the bytes in lowercase hex, and only
//! that exact form is read back: a message on any other topic string is not
//! a SafeMeet room message.

use libp2p::gossipsub::{IdentTopic, TopicHash};

/// A room's gossip topic: an opaque hash derived from the room secret, so
/// peers outside the room cannot tell which room it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RoomTopic(pub [u8; 32]);

impl RoomTopic {
    /// The gossipsub topic: the bytes in lowercase hex.
    pub(crate) fn ident(&self) -> IdentTopic {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(HEX[(b >> 4) as usize] as char);
            s.push(HEX[(b & 15) as usize] as char);
        }
        IdentTopic::new(s)
    }

    /// The room topic a gossipsub topic names, if it is one.
    pub(crate) fn from_hash(hash: &TopicHash) -> Option<Self> {
        let s = hash.as_str().as_bytes();
        if s.len() != 64 {
            return None;
        }
        let nibble = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        let mut out = [0u8; 32];
        for (i, pair) in s.chunks_exact(2).enumerate() {
            out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
        }
        Some(Self(out))
    }
}
