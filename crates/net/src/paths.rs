//! How this node reaches a peer right now: each connection's remote
//! address, whether it runs through a relay's circuit, and that relay's
//! limits on a circuit, as the relay told this node (when it accepted a
//! reservation, or opened a circuit through it). A call reports these: a
//! circuit ends when its time or bytes run out.

use std::collections::HashMap;
use std::time::Duration;

use libp2p::multiaddr::Protocol;
use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, PeerId};

/// Relays whose limits are remembered, at most (a node uses a few).
const MAX_RELAYS: usize = 64;

/// A relay's limits on one circuit through it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CircuitLimit {
    /// A circuit is closed after this long.
    pub duration: Option<Duration>,
    /// A circuit is closed after this many bytes (each way).
    pub bytes: Option<u64>,
}

/// One connection to a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkPath {
    /// The address at the other end, as this node sees it.
    pub remote: Multiaddr,
    /// The relay whose circuit it runs through, if it is relayed.
    pub relay: Option<PeerId>,
    /// It runs over QUIC.
    pub quic: bool,
    /// The relay's limits on it, when the relay said.
    pub limit: Option<CircuitLimit>,
}

/// A connection up now.
struct Up {
    peer: PeerId,
    remote: Multiaddr,
    relay: Option<PeerId>,
    quic: bool,
}

/// The connections up now, and what relays said of their limits.
#[derive(Default)]
pub(crate) struct Paths {
    up: HashMap<ConnectionId, Up>,
    limits: HashMap<PeerId, CircuitLimit>,
}

impl Paths {
    /// A connection to `peer` is up; `local` is the address it came in
    /// on, for one this node accepted (a circuit through a relay shows
    /// there: its remote end is only the peer's id).
    pub(crate) fn established(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        remote: &Multiaddr,
        local: Option<&Multiaddr>,
    ) {
        let relay = relay_of(remote).or_else(|| local.and_then(relay_of));
        let quic = [Some(remote), local]
            .into_iter()
            .flatten()
            .any(crate::addr::is_quic);
        self.up.insert(
            id,
            Up {
                peer,
                remote: remote.clone(),
                relay,
                quic,
            },
        );
    }

    pub(crate) fn closed(&mut self, id: ConnectionId) {
        self.up.remove(&id);
    }

    /// A relay said what it allows a circuit (`None`: it did not say).
    pub(crate) fn relay_limit(
        &mut self,
        relay: PeerId,
        duration: Option<Duration>,
        bytes: Option<u64>,
    ) {
        if self.limits.len() >= MAX_RELAYS && !self.limits.contains_key(&relay) {
            return;
        }
        self.limits.insert(relay, CircuitLimit { duration, bytes });
    }

    /// The connections to `peer`, direct ones first.
    pub(crate) fn to(&self, peer: &PeerId) -> Vec<LinkPath> {
        let mut paths: Vec<LinkPath> = self
            .up
            .values()
            .filter(|up| up.peer == *peer)
            .map(|up| LinkPath {
                remote: up.remote.clone(),
                relay: up.relay,
                quic: up.quic,
                limit: up.relay.and_then(|r| self.limits.get(&r).copied()),
            })
            .collect();
        paths.sort_by_key(|p| (p.relay.is_some(), !p.quic));
        paths
    }
}

/// The relay an address runs through: the peer named just before its
/// `/p2p-circuit`.
fn relay_of(addr: &Multiaddr) -> Option<PeerId> {
    let mut last = None;
    for p in addr.iter() {
        match p {
            Protocol::P2p(peer) => last = Some(peer),
            Protocol::P2pCircuit => return last,
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

    use super::*;

    #[test]
    fn a_relayed_connection_names_its_relay_and_the_limits_it_gave() {
        let (relay, peer) = (PeerId::random(), PeerId::random());
        let mut paths = Paths::default();
        let circuit: Multiaddr =
            format!("/ip4/10.0.0.1/tcp/4001/p2p/{relay}/p2p-circuit/p2p/{peer}")
                .parse()
                .unwrap();
        let quic: Multiaddr = "/ip4/10.0.0.2/udp/4001/quic-v1".parse().unwrap();
        paths.established(ConnectionId::new_unchecked(1), peer, &circuit, None);
        paths.relay_limit(relay, Some(Duration::from_secs(120)), Some(131_072));
        let found = paths.to(&peer);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].relay, Some(relay));
        assert!(!found[0].quic);
        assert_eq!(
            found[0].limit,
            Some(CircuitLimit {
                duration: Some(Duration::from_secs(120)),
                bytes: Some(131_072)
            })
        );
        // A direct connection comes first; a closed one is gone.
        paths.established(ConnectionId::new_unchecked(2), peer, &quic, None);
        let found = paths.to(&peer);
        assert_eq!(
            (found[0].relay, found[0].quic, found[0].limit),
            (None, true, None)
        );
        paths.closed(ConnectionId::new_unchecked(2));
        paths.closed(ConnectionId::new_unchecked(1));
        assert!(paths.to(&peer).is_empty());
        // A circuit this node accepted: its remote end is the peer's id
        // alone, the relay shows in the address it came in on.
        let reserved: Multiaddr = format!("/ip4/10.0.0.1/tcp/4001/p2p/{relay}/p2p-circuit")
            .parse()
            .unwrap();
        let bare: Multiaddr = format!("/p2p/{peer}").parse().unwrap();
        paths.established(ConnectionId::new_unchecked(3), peer, &bare, Some(&reserved));
        assert_eq!(paths.to(&peer)[0].relay, Some(relay));
        assert!(paths.to(&relay).is_empty());
    }

    #[test]
    fn limits_are_kept_for_a_bounded_number_of_relays() {
        let mut paths = Paths::default();
        for _ in 0..MAX_RELAYS + 10 {
            paths.relay_limit(PeerId::random(), None, Some(1));
        }
        assert_eq!(paths.limits.len(), MAX_RELAYS);
    }
}
