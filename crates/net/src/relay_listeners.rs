//! The circuits this node listens on through its relays, and what happens
//! when one fails: a relay that cannot be reached, or refuses the
//! reservation, is named in a warning (contacts cannot reach this device
//! through it meanwhile) and tried again later, waiting twice as long
//! after each failure, from [`FIRST_RETRY`] up to [`MAX_RETRY`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::Multiaddr;
use libp2p::core::transport::ListenerId;

/// The wait before the first retry.
pub(crate) const FIRST_RETRY: Duration = Duration::from_secs(30);
/// The longest wait between retries.
pub(crate) const MAX_RETRY: Duration = Duration::from_secs(600);

#[derive(Debug)]
struct Circuit {
    addr: Multiaddr,
    failures: u32,
    reserved: bool,
}

/// One relay circuit as the node stands with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayStatus {
    /// The circuit's address (the relay's, then `/p2p-circuit`).
    pub addr: Multiaddr,
    /// The relay holds a reservation for this node now.
    pub reserved: bool,
    /// Failures since the last reservation.
    pub failures: u32,
}

/// Circuit listeners by id, and the failed ones waiting for a retry.
#[derive(Debug, Default)]
pub(crate) struct RelayListeners {
    open: HashMap<ListenerId, Circuit>,
    waiting: Vec<(Instant, Circuit)>,
}

impl RelayListeners {
    /// A circuit listener was opened on `addr`.
    pub(crate) fn opened(&mut self, id: ListenerId, addr: Multiaddr) {
        self.open.insert(
            id,
            Circuit {
                addr,
                failures: 0,
                reserved: false,
            },
        );
    }

    /// A circuit listener got an address: the reservation holds.
    pub(crate) fn reserved(&mut self, id: ListenerId) {
        if let Some(c) = self.open.get_mut(&id) {
            c.failures = 0;
            c.reserved = true;
        }
    }

    /// A listener closed; if it was a circuit, it is warned of and waits
    /// for its retry.
    pub(crate) fn closed(&mut self, id: ListenerId, why: &str, now: Instant) {
        let Some(mut circuit) = self.open.remove(&id) else {
            return;
        };
        circuit.reserved = false;
        circuit.failures = circuit.failures.saturating_add(1);
        let wait = FIRST_RETRY
            .saturating_mul(1 << circuit.failures.saturating_sub(1).min(8))
            .min(MAX_RETRY);
        tracing::warn!(
            relay = %circuit.addr,
            error = why,
            retry_in_s = wait.as_secs(),
            "the relay cannot be reached or refused the reservation: contacts cannot reach \
             this device through it until it can"
        );
        self.waiting.push((now + wait, circuit));
    }

    /// The circuits due for another try (to be opened again).
    pub(crate) fn due(&mut self, now: Instant) -> Vec<(Multiaddr, u32)> {
        let (due, later): (Vec<_>, Vec<_>) = self.waiting.drain(..).partition(|(at, _)| *at <= now);
        self.waiting = later;
        due.into_iter().map(|(_, c)| (c.addr, c.failures)).collect()
    }

    /// Could not even be opened again: waits for the next try.
    pub(crate) fn retry_failed(&mut self, addr: Multiaddr, failures: u32, why: &str, now: Instant) {
        let id = ListenerId::next();
        self.reopened(id, addr, failures);
        self.closed(id, why, now);
    }

    /// Opens again the circuits whose wait is over.
    pub(crate) fn retry_due(&mut self, swarm: &mut libp2p::Swarm<crate::behaviour::Behaviour>) {
        use safemeet_proto::clock::{Clock, SystemClock};
        for (addr, failures) in self.due(SystemClock.instant()) {
            match swarm.listen_on(addr.clone()) {
                Ok(id) => self.reopened(id, addr, failures),
                Err(e) => self.retry_failed(addr, failures, &e.to_string(), SystemClock.instant()),
            }
        }
    }

    /// Opened again after `failures` failures.
    pub(crate) fn reopened(&mut self, id: ListenerId, addr: Multiaddr, failures: u32) {
        self.open.insert(
            id,
            Circuit {
                addr,
                failures,
                reserved: false,
            },
        );
    }

    /// Every circuit: open ones (reserved or waiting for the relay's
    /// answer) and failed ones waiting for their retry.
    pub(crate) fn status(&self) -> Vec<RelayStatus> {
        let open = self.open.values().map(|c| RelayStatus {
            addr: c.addr.clone(),
            reserved: c.reserved,
            failures: c.failures,
        });
        let waiting = self.waiting.iter().map(|(_, c)| RelayStatus {
            addr: c.addr.clone(),
            reserved: false,
            failures: c.failures,
        });
        open.chain(waiting).collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_failed_circuit_waits_longer_after_each_failure() {
        let mut l = RelayListeners::default();
        let addr: Multiaddr = "/ip4/10.0.0.1/tcp/1/p2p-circuit".parse().unwrap();
        let id = ListenerId::next();
        l.opened(id, addr.clone());
        let t0 = safemeet_proto::clock::Clock::instant(&safemeet_proto::clock::SystemClock);
        l.closed(id, "unreachable", t0);
        assert!(l.due(t0).is_empty());
        let due = l.due(t0 + FIRST_RETRY);
        assert_eq!(due, vec![(addr.clone(), 1)]);
        let id = ListenerId::next();
        l.reopened(id, addr.clone(), 1);
        l.closed(id, "unreachable", t0);
        assert!(
            l.due(t0 + FIRST_RETRY).is_empty(),
            "the second wait is longer"
        );
        assert_eq!(l.due(t0 + FIRST_RETRY * 2).len(), 1);
        l.closed(ListenerId::next(), "not a circuit", t0);
        assert!(l.due(t0 + MAX_RETRY).is_empty());
    }
}
