//! Which gossip subscriptions a peer may hold.
//!
//! Only room topics in their exact form (see [`topic`](crate::topic)) are
//! accepted, from a peer and for this node alike, and a peer may hold at
//! most [`Config::max_topics`](crate::Config::max_topics) of them. A peer
//! that announces a malformed topic or one over its cap has that
//! subscription refused, and the gate ([`GossipGate`](crate::gate)) closes
//! its gossip connections: an honest SafeMeet node never does either.
//!
//! Gossipsub's filter sees topics, not peers; the gate tells it whose
//! message it is handling ([`Subscriptions::handling`]) and counts what
//! each peer holds from gossipsub's own events.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use libp2p::PeerId;
use libp2p::gossipsub::{TopicHash, TopicSubscriptionFilter};

use crate::topic::room_topic;

#[derive(Debug, Default)]
struct State {
    max_per_peer: usize,
    /// Subscriptions each peer holds (from gossipsub's events).
    held: HashMap<PeerId, usize>,
    /// The peer whose message gossipsub is handling, and how many of its
    /// subscriptions that message added so far.
    handling: Option<(PeerId, usize)>,
    /// Subscriptions of that message refused so far.
    refused: u64,
}

/// What the filter and the gate share.
#[derive(Debug, Clone)]
pub(crate) struct Subscriptions(Arc<Mutex<State>>);

impl Subscriptions {
    pub(crate) fn new(max_per_peer: usize) -> Self {
        Self(Arc::new(Mutex::new(State {
            max_per_peer,
            ..State::default()
        })))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing here can panic while holding the lock, but a poisoned
        // lock still holds consistent counts.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `handle` (gossipsub handling a message from `peer`) and returns
    /// how many of the subscriptions it carried were refused.
    pub(crate) fn handling(&self, peer: PeerId, handle: impl FnOnce()) -> u64 {
        {
            let mut state = self.state();
            state.handling = Some((peer, 0));
            state.refused = 0;
        }
        handle();
        let mut state = self.state();
        state.handling = None;
        std::mem::take(&mut state.refused)
    }

    /// Gossipsub recorded `peer` as subscribed to one more topic.
    pub(crate) fn subscribed(&self, peer: PeerId) {
        *self.state().held.entry(peer).or_default() += 1;
    }

    /// Gossipsub recorded `peer` as unsubscribed from a topic.
    pub(crate) fn unsubscribed(&self, peer: &PeerId) {
        if let Some(n) = self.state().held.get_mut(peer) {
            *n = n.saturating_sub(1);
        }
    }

    /// `peer` has no gossip connection left: gossipsub forgot its topics.
    pub(crate) fn forget(&self, peer: &PeerId) {
        self.state().held.remove(peer);
    }

    /// How many subscriptions `peer` holds.
    #[cfg(test)]
    pub(crate) fn held(&self, peer: &PeerId) -> usize {
        self.state().held.get(peer).copied().unwrap_or(0)
    }
}

/// Gossipsub's subscription filter (see the module docs).
pub(crate) struct RoomTopicFilter(pub(crate) Subscriptions);

impl TopicSubscriptionFilter for RoomTopicFilter {
    /// For this node's own subscriptions, and for each subscription (or
    /// unsubscription: gossipsub asks alike) a peer announces.
    fn can_subscribe(&mut self, topic: &TopicHash) -> bool {
        let mut state = self.0.state();
        let well_formed = room_topic(topic).is_some();
        let max = state.max_per_peer;
        let State {
            held,
            handling,
            refused,
            ..
        } = &mut *state;
        let Some((peer, added)) = handling else {
            return well_formed;
        };
        // Unsubscriptions count as additions here: only a peer already at
        // its cap can tell the difference, and it is dropped either way.
        if !well_formed || held.get(peer).copied().unwrap_or(0) + *added >= max {
            *refused += 1;
            return false;
        }
        *added += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topic::{RoomTopic, gossip_topic};

    #[test]
    fn only_room_topics_and_at_most_the_cap_per_peer() {
        let shared = Subscriptions::new(3);
        let mut filter = RoomTopicFilter(shared.clone());
        let room = |i: u8| gossip_topic(&RoomTopic::from_bytes([i; 32])).hash();
        let junk = TopicHash::from_raw("x".repeat(16 * 1024));
        // This node's own subscriptions: form only.
        assert!(filter.can_subscribe(&room(1)));
        assert!(!filter.can_subscribe(&junk));
        let peer = PeerId::random();
        let refused = shared.handling(peer, || {
            assert!(filter.can_subscribe(&room(1)));
            assert!(!filter.can_subscribe(&junk));
            assert!(filter.can_subscribe(&room(2)));
        });
        assert_eq!(refused, 1);
        shared.subscribed(peer);
        shared.subscribed(peer);
        let refused = shared.handling(peer, || {
            assert!(filter.can_subscribe(&room(3)));
            assert!(!filter.can_subscribe(&room(4)));
        });
        assert_eq!(refused, 1);
        // Another peer has its own cap.
        let other = PeerId::random();
        assert_eq!(
            shared.handling(other, || assert!(filter.can_subscribe(&room(4)))),
            0
        );
        shared.forget(&peer);
        assert_eq!(shared.held(&peer), 0);
    }
}
