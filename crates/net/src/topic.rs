//! Room topics on the gossip wire.
//!
//! A room's topic is a [`RoomTopic`] (`safemeet_proto::RoomTopic`, shared
//! with the engine and the crypto layer): 32 opaque bytes derived from the
//! room secret, so peers outside the room cannot tell which room it is.
//! Gossipsub names a topic by a string; ours is the bytes in lowercase hex,
//! and only that exact form is read back: a message on any other topic
//! string is not a SafeMeet room message.

use data_encoding::HEXLOWER;
use libp2p::gossipsub::{IdentTopic, TopicHash};
pub use safemeet_proto::RoomTopic;

/// The gossipsub topic of a room topic.
pub(crate) fn gossip_topic(topic: &RoomTopic) -> IdentTopic {
    IdentTopic::new(HEXLOWER.encode(topic.as_bytes()))
}

/// The room topic a gossipsub topic names, if it names one.
pub(crate) fn room_topic(hash: &TopicHash) -> Option<RoomTopic> {
    let bytes = HEXLOWER.decode(hash.as_str().as_bytes()).ok()?;
    let bytes = <[u8; 32]>::try_from(bytes.as_slice()).ok()?;
    Some(RoomTopic::from_bytes(bytes))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is a failure

    use super::*;

    #[test]
    fn a_topic_round_trips_through_its_gossip_name() {
        let topic = RoomTopic::from_bytes([0xa5; 32]);
        let name = gossip_topic(&topic);
        assert_eq!(name.to_string(), "a5".repeat(32));
        assert_eq!(room_topic(&name.hash()), Some(topic));
    }

    #[test]
    fn only_the_exact_form_names_a_room() {
        for name in [
            "A5".repeat(32), // uppercase
            "a5".repeat(31), // short
            "a5".repeat(33), // long
            format!("{}g0", "a5".repeat(31)),
            String::new(),
        ] {
            assert_eq!(
                room_topic(&IdentTopic::new(name.clone()).hash()),
                None,
                "{name}"
            );
        }
    }
}
