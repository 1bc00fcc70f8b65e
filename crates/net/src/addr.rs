//! Addresses as others dial them.

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};

/// `addr` (one of this node's listen addresses) as another node dials it:
/// ending in `/p2p/<peer>`. A listen address that names its peer already,
/// as a relay circuit's does (`…/p2p-circuit/p2p/<peer>`), is kept as it
/// is: a second `/p2p` makes an address other libp2p implementations
/// refuse.
pub fn dialable(addr: &Multiaddr, peer: PeerId) -> Multiaddr {
    match addr.iter().last() {
        Some(Protocol::P2p(_)) => addr.clone(),
        _ => addr.clone().with(Protocol::P2p(peer)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_id_is_added_once() {
        let (me, relay) = (PeerId::random(), PeerId::random());
        let tcp: Multiaddr = "/ip4/127.0.0.1/tcp/4001".parse().unwrap();
        assert_eq!(
            dialable(&tcp, me).to_string(),
            format!("/ip4/127.0.0.1/tcp/4001/p2p/{me}")
        );
        let circuit: Multiaddr = format!("/ip4/1.2.3.4/tcp/4001/p2p/{relay}/p2p-circuit/p2p/{me}")
            .parse()
            .unwrap();
        assert_eq!(dialable(&circuit, me), circuit);
        // And what it gives is given back as it is.
        assert_eq!(dialable(&dialable(&tcp, me), me), dialable(&tcp, me));
    }
}
