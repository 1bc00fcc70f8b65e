//! This node's own deliveries (and, apart, its mailbox requests), at most
//! a receiver's stream cap in flight to each peer.
//!
//! A receiving node (or relay) reads at most
//! [`Config::max_streams_per_connection`](crate::Config::max_streams_per_connection)
//! (16 by default) request streams at once per connection and drops the
//! rest unread. So that an honest burst to one peer is never dropped, a
//! node keeps at most [`PER_PEER`] of its own requests in flight to each
//! peer; the others wait their turn here, in order, at most
//! [`MAX_QUEUED`] per peer.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

use libp2p::request_response::OutboundRequestId;
use libp2p::{Multiaddr, PeerId};
use tokio::sync::oneshot;

use crate::Error;
use crate::event_loop::EventLoop;

/// Most deliveries in flight to one peer: the default inbound stream cap
/// of a receiving node (one connection's worth).
pub(crate) const PER_PEER: usize = 16;
/// Most deliveries waiting their turn for one peer; past this a delivery
/// fails at once ([`Error::DeliveryQueueFull`]). 1 024: the engine keeps at
/// most 64 in flight, so only an application driving the network itself
/// can queue this many.
pub(crate) const MAX_QUEUED: usize = 1024;

/// Where a delivery's answer goes.
pub(crate) type Answer = oneshot::Sender<Result<Vec<u8>, Error>>;

/// A delivery to send.
pub(crate) struct Delivery {
    pub(crate) addrs: Vec<Multiaddr>,
    pub(crate) frame: Vec<u8>,
    pub(crate) answer: Answer,
}

/// Deliveries in flight (by request id) and waiting (see the module docs).
pub(crate) struct Deliveries<Id = OutboundRequestId> {
    /// In flight: the peer and where the answer goes.
    pending: HashMap<Id, (PeerId, Answer)>,
    /// How many are in flight to each peer.
    in_flight: HashMap<PeerId, usize>,
    /// Waiting their turn, by peer.
    queued: HashMap<PeerId, VecDeque<Delivery>>,
}

impl<Id> Default for Deliveries<Id> {
    fn default() -> Self {
        Self {
            pending: HashMap::new(),
            in_flight: HashMap::new(),
            queued: HashMap::new(),
        }
    }
}

impl<Id: Hash + Eq> Deliveries<Id> {
    /// A new delivery to `peer`: returned if it may go now; queued (or
    /// failed, the queue being full) otherwise.
    pub(crate) fn admit(&mut self, peer: PeerId, delivery: Delivery) -> Option<Delivery> {
        if self.in_flight.get(&peer).copied().unwrap_or(0) < PER_PEER {
            return Some(delivery);
        }
        let queue = self.queued.entry(peer).or_default();
        if queue.len() >= MAX_QUEUED {
            let _ = delivery.answer.send(Err(Error::DeliveryQueueFull));
            return None;
        }
        queue.push_back(delivery);
        None
    }

    /// A delivery went out as request `id`.
    pub(crate) fn sent(&mut self, id: Id, peer: PeerId, answer: Answer) {
        *self.in_flight.entry(peer).or_default() += 1;
        self.pending.insert(id, (peer, answer));
    }

    /// Request `id` ended: where its answer goes, and the next delivery to
    /// the same peer that may go now (skipping those whose callers have
    /// given up).
    pub(crate) fn finish(&mut self, id: &Id) -> Option<(Answer, Option<(PeerId, Delivery)>)> {
        let (peer, answer) = self.pending.remove(id)?;
        if let Some(n) = self.in_flight.get_mut(&peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.in_flight.remove(&peer);
            }
        }
        let mut next = None;
        if let Some(queue) = self.queued.get_mut(&peer) {
            while let Some(d) = queue.pop_front() {
                if !d.answer.is_closed() {
                    next = Some((peer, d));
                    break;
                }
            }
            if queue.is_empty() {
                self.queued.remove(&peer);
            }
        }
        Some((answer, next))
    }

    /// Deliveries in flight and waiting.
    pub(crate) fn len(&self) -> usize {
        self.pending.len() + self.queued.values().map(VecDeque::len).sum::<usize>()
    }

    /// Every caller still waiting, in flight or queued (the network stops).
    pub(crate) fn into_answers(self) -> impl Iterator<Item = Answer> {
        self.pending
            .into_values()
            .map(|(_, a)| a)
            .chain(self.queued.into_values().flatten().map(|d| d.answer))
    }
}

/// Which of this node's own requests.
#[derive(Clone, Copy)]
pub(crate) enum Outbound {
    /// A direct delivery.
    Deliver,
    /// A mailbox request to a relay.
    Mailbox,
}

impl EventLoop {
    /// Sends a delivery or mailbox request whose turn has come.
    pub(crate) fn send_request(&mut self, kind: Outbound, peer: PeerId, request: Delivery) {
        let Delivery {
            addrs,
            frame,
            answer,
        } = request;
        let behaviour = self.swarm.behaviour_mut();
        let (id, queue) = match kind {
            Outbound::Deliver => (
                behaviour
                    .deliver
                    .send_request_with_addresses(&peer, frame, addrs),
                &mut self.deliveries,
            ),
            Outbound::Mailbox => (
                behaviour
                    .mailbox
                    .send_request_with_addresses(&peer, frame, addrs),
                &mut self.mailbox_requests,
            ),
        };
        queue.sent(id, peer, answer);
    }

    /// A delivery or mailbox request ended: its caller learns how, and the
    /// next one to the same peer goes.
    pub(crate) fn request_ended(
        &mut self,
        kind: Outbound,
        id: &OutboundRequestId,
        result: Result<Vec<u8>, Error>,
    ) {
        let queue = match kind {
            Outbound::Deliver => &mut self.deliveries,
            Outbound::Mailbox => &mut self.mailbox_requests,
        };
        if let Some((answer, next)) = queue.finish(id) {
            let _ = answer.send(result);
            if let Some((peer, request)) = next {
                self.send_request(kind, peer, request);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is a failure

    use super::*;

    fn delivery() -> (Delivery, oneshot::Receiver<Result<Vec<u8>, Error>>) {
        let (answer, rx) = oneshot::channel();
        let d = Delivery {
            addrs: Vec::new(),
            frame: Vec::new(),
            answer,
        };
        (d, rx)
    }

    #[test]
    fn at_most_per_peer_in_flight_and_the_rest_in_order() {
        let mut deliveries = Deliveries::<u64>::default();
        let (peer, other) = (PeerId::random(), PeerId::random());
        let mut ids = Vec::new();
        for i in 0..PER_PEER as u64 {
            let (d, _rx) = delivery();
            let d = deliveries.admit(peer, d).unwrap();
            deliveries.sent(i, peer, d.answer);
            ids.push(i);
        }
        let (mut waiting, mut rx) = delivery();
        waiting.frame = vec![7];
        assert!(deliveries.admit(peer, waiting).is_none());
        // Another peer is not held up.
        assert!(deliveries.admit(other, delivery().0).is_some());
        let (_, next) = deliveries.finish(&ids[0]).unwrap();
        let (_, next) = next.unwrap();
        assert_eq!(next.frame, vec![7]);
        assert!(rx.try_recv().is_err());
        assert_eq!(deliveries.len(), PER_PEER - 1);
    }
}
