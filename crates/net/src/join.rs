//! What a node does as it starts: listen where it was told, meet its
//! bootstrap peers, and listen through its relays.

use libp2p::{Multiaddr, PeerId, Swarm};

use crate::behaviour::Behaviour;
use crate::relay_listeners::RelayListeners;
use crate::{Config, Error};

/// Listens on `config.listen`, dials the bootstrap peers (adding them to
/// Kademlia) and opens a circuit listener through each relay; answers the
/// relay circuits opened.
pub(crate) fn join(swarm: &mut Swarm<Behaviour>, config: &Config) -> Result<RelayListeners, Error> {
    for addr in &config.listen {
        swarm
            .listen_on(addr.clone())
            .map_err(|source| Error::Listen {
                addr: addr.clone(),
                source,
            })?;
    }
    // A relay's own listener dials it; a second dial of the same peer as a
    // bootstrap peer races it, and the relay (one connection per peer)
    // may refuse the one the reservation was to go over.
    let relay_peers: Vec<_> = config.relays.iter().filter_map(peer_of).collect();
    let mut relay_listeners = RelayListeners::default();
    for addr in &config.bootstrap {
        let peer = peer_of(addr);
        if let Some(peer) = peer {
            swarm.behaviour_mut().kad.add_address(&peer, addr.clone());
        }
        if peer.is_some_and(|p| relay_peers.contains(&p)) {
            continue;
        }
        if let Err(e) = swarm.dial(addr.clone()) {
            tracing::warn!(error = %e, "could not dial a bootstrap peer");
        }
    }
    for relay in &config.relays {
        let Some(peer) = peer_of(relay) else {
            return Err(Error::RelayWithoutPeerId {
                addr: relay.clone(),
            });
        };
        // A relay is also a bootstrap peer.
        swarm.behaviour_mut().kad.add_address(&peer, relay.clone());
        let circuit = relay.clone().with(libp2p::multiaddr::Protocol::P2pCircuit);
        let id = swarm
            .listen_on(circuit.clone())
            .map_err(|source| Error::Listen {
                addr: circuit.clone(),
                source,
            })?;
        relay_listeners.opened(id, circuit);
    }
    Ok(relay_listeners)
}

fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().find_map(|p| match p {
        libp2p::multiaddr::Protocol::P2p(peer) => Some(peer),
        _ => None,
    })
}
