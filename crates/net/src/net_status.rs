//! What [`NetStatus`] reports, gathered from the swarm, the relay circuits
//! and the latest AutoNAT results.

use std::collections::VecDeque;

use libp2p::{Multiaddr, Swarm};

use crate::behaviour::Behaviour;
use crate::handle::NetStatus;
use crate::relay_listeners::RelayListeners;

/// AutoNAT results kept.
const KEPT: usize = 8;

/// The latest AutoNAT results, newest last.
#[derive(Debug, Default)]
pub(crate) struct AutonatResults(VecDeque<(Multiaddr, bool)>);

impl AutonatResults {
    /// A test of `addr` ended: a server reached it (`ok`) or not.
    pub(crate) fn note(&mut self, addr: Multiaddr, ok: bool) {
        if self.0.len() == KEPT {
            self.0.pop_front();
        }
        self.0.push_back((addr, ok));
    }
}

/// How the node stands now.
pub(crate) fn status(
    swarm: &Swarm<Behaviour>,
    relays: &RelayListeners,
    autonat: &AutonatResults,
) -> NetStatus {
    NetStatus {
        listen: swarm.listeners().cloned().collect(),
        external: swarm.external_addresses().cloned().collect(),
        connected_peers: swarm.connected_peers().count(),
        relays: relays.status(),
        autonat: autonat.0.iter().cloned().collect(),
    }
}
