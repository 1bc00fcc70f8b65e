//! Callers waiting for a connection before they open a stream.
//!
//! libp2p-stream dials a peer it is not connected to on its own, knowing no
//! addresses but those other behaviours offer, and on a dial refused because
//! another is under way (`DialPeerConditionFalse`) it neither fails the
//! open nor retries: the open waits for a connection that may never come.
//! So [`Handle`](crate::Handle) connects first, with the caller's
//! addresses, and opens its stream once the connection is up: the loop
//! answers a waiter when a connection to its peer is established (the
//! stream behaviour has heard of it by then) or when its own dial fails.

use libp2p::swarm::ConnectionId;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::{Multiaddr, PeerId};
use tokio::sync::oneshot;

use crate::Error;
use crate::event_loop::EventLoop;

/// At most this many callers wait for a connection at once; more are
/// refused at once rather than queued.
pub(crate) const MAX_CONNECT_WAITERS: usize = 256;

type Answer = oneshot::Sender<Result<(), Error>>;

impl EventLoop {
    /// Answers `answer` once `peer` is connected: at once when it is,
    /// else after dialling it at `addrs` (each as it is, or with the peer
    /// id added).
    pub(crate) fn connect(&mut self, peer: PeerId, addrs: Vec<Multiaddr>, answer: Answer) {
        if self.swarm.is_connected(&peer) {
            let _ = answer.send(Ok(()));
            return;
        }
        let addrs = addrs
            .iter()
            .map(|addr| crate::addr::dialable(addr, peer))
            .collect();
        // Dialled even while another dial to it is under way: these
        // addresses may be the ones that work.
        let dial = DialOpts::peer_id(peer)
            .addresses(addrs)
            .condition(PeerCondition::Disconnected)
            .build();
        let id = dial.connection_id();
        if let Err(e) = self.swarm.dial(dial) {
            let _ = answer.send(Err(Error::Dial(e)));
            return;
        }
        if let Err(answer) = self.connecting.add(peer, id, answer) {
            let _ = answer.send(Err(Error::Link(
                "too many streams are waiting for a connection".into(),
            )));
        }
    }
}

/// Callers waiting for a connection, each with the dial made for it.
#[derive(Default)]
pub(crate) struct ConnectWaiters {
    waiting: Vec<(PeerId, ConnectionId, Answer)>,
}

impl ConnectWaiters {
    /// Adds a caller waiting for `peer`, whose dial is `dial`; gives the
    /// answer back when too many already wait.
    pub(crate) fn add(
        &mut self,
        peer: PeerId,
        dial: ConnectionId,
        answer: Answer,
    ) -> Result<(), Answer> {
        // Callers that gave up (their timeout) no longer count.
        self.waiting.retain(|(_, _, answer)| !answer.is_closed());
        if self.waiting.len() >= MAX_CONNECT_WAITERS {
            return Err(answer);
        }
        self.waiting.push((peer, dial, answer));
        Ok(())
    }

    /// A connection to `peer` is up: whoever waited for it has it, whichever
    /// dial made it.
    pub(crate) fn connected(&mut self, peer: PeerId) {
        self.answer(|(waited, _)| *waited == peer, || Ok(()));
    }

    /// The dial `dial` failed: its caller hears why.
    pub(crate) fn failed(&mut self, dial: ConnectionId, reason: &str) {
        self.answer(
            |(_, made)| *made == dial,
            || Err(Error::Link(reason.to_owned())),
        );
    }

    /// The network stopped: every caller hears it.
    pub(crate) fn stopped(self) {
        for (_, _, answer) in self.waiting {
            let _ = answer.send(Err(Error::Stopped));
        }
    }

    fn answer(
        &mut self,
        matches: impl Fn((&PeerId, &ConnectionId)) -> bool,
        result: impl Fn() -> Result<(), Error>,
    ) {
        let mut kept = Vec::with_capacity(self.waiting.len());
        for (peer, dial, answer) in std::mem::take(&mut self.waiting) {
            if matches((&peer, &dial)) {
                let _ = answer.send(result());
            } else {
                kept.push((peer, dial, answer));
            }
        }
        self.waiting = kept;
    }

    /// How many callers wait.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.waiting.len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

    use super::*;

    #[test]
    fn a_connection_answers_its_peer_s_waiters_and_a_failed_dial_only_its_own() {
        let (alice, bob) = (PeerId::random(), PeerId::random());
        let (first, second, third) = (
            ConnectionId::new_unchecked(1),
            ConnectionId::new_unchecked(2),
            ConnectionId::new_unchecked(3),
        );
        let mut waiters = ConnectWaiters::default();
        let (tx1, mut rx1) = oneshot::channel();
        let (tx2, mut rx2) = oneshot::channel();
        let (tx3, mut rx3) = oneshot::channel();
        waiters.add(alice, first, tx1).unwrap();
        waiters.add(alice, second, tx2).unwrap();
        waiters.add(bob, third, tx3).unwrap();

        // One of Alice's two dials fails: only its caller hears of it.
        waiters.failed(second, "refused");
        assert!(matches!(rx2.try_recv(), Ok(Err(Error::Link(why))) if why == "refused"));
        assert!(rx1.try_recv().is_err());
        assert_eq!(waiters.len(), 2);

        // A connection to Alice, whichever dial made it, answers hers.
        waiters.connected(alice);
        assert!(matches!(rx1.try_recv(), Ok(Ok(()))));
        assert!(rx3.try_recv().is_err());
        waiters.connected(bob);
        assert!(matches!(rx3.try_recv(), Ok(Ok(()))));
        assert_eq!(waiters.len(), 0);
    }

    #[test]
    fn waiters_are_bounded_and_those_that_gave_up_do_not_count() {
        let peer = PeerId::random();
        let mut waiters = ConnectWaiters::default();
        let mut kept = Vec::new();
        for i in 0..MAX_CONNECT_WAITERS {
            let (tx, rx) = oneshot::channel();
            waiters
                .add(peer, ConnectionId::new_unchecked(i), tx)
                .unwrap();
            kept.push(rx);
        }
        let (tx, _rx) = oneshot::channel();
        assert!(
            waiters
                .add(peer, ConnectionId::new_unchecked(9999), tx)
                .is_err()
        );
        // Half the callers give up: there is room again.
        kept.truncate(MAX_CONNECT_WAITERS / 2);
        let (tx, _rx) = oneshot::channel();
        waiters
            .add(peer, ConnectionId::new_unchecked(9999), tx)
            .unwrap();
        assert_eq!(waiters.len(), MAX_CONNECT_WAITERS / 2 + 1);
    }
}
