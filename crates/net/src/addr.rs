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

/// Whether `addr` runs over QUIC.
pub(crate) fn is_quic(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, Protocol::QuicV1))
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

/// Whether `addr` is on a globally routable IP address (not loopback,
/// private, link-local, shared, documentation or otherwise special).
pub(crate) fn is_public(addr: &Multiaddr) -> bool {
    use libp2p::multiaddr::Protocol;
    match addr.iter().next() {
        Some(Protocol::Ip4(ip)) => {
            let [a, b, ..] = ip.octets();
            !(ip.is_unspecified()
                || ip.is_loopback()
                || ip.is_private()
                || ip.is_link_local()
                || ip.is_broadcast()
                || ip.is_documentation()
                || ip.is_multicast()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (b == 18 || b == 19))
                || a >= 240)
        }
        Some(Protocol::Ip6(ip)) => {
            let first = ip.segments()[0];
            !(ip.is_unspecified()
                || ip.is_loopback()
                || ip.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || first == 0x2001 && ip.segments()[1] == 0x0db8
                || ip.to_ipv4_mapped().is_some())
        }
        _ => false,
    }
}

#[cfg(test)]
mod public_tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

    use super::is_public;

    #[test]
    fn only_globally_routable_listen_addresses_count_as_public() {
        for a in [
            "/ip4/203.0.114.7/tcp/4001",
            "/ip4/8.8.8.8/udp/4001/quic-v1",
            "/ip6/2a00:1450:4001::1/tcp/4001",
        ] {
            assert!(is_public(&a.parse().unwrap()), "{a}");
        }
        for a in [
            "/ip4/127.0.0.1/tcp/1",
            "/ip4/0.0.0.0/tcp/1",
            "/ip4/10.1.2.3/tcp/1",
            "/ip4/172.16.0.1/tcp/1",
            "/ip4/192.168.1.1/tcp/1",
            "/ip4/169.254.1.1/tcp/1",
            "/ip4/100.64.0.1/tcp/1",
            "/ip4/198.18.0.1/tcp/1",
            "/ip4/192.0.2.1/tcp/1",
            "/ip4/224.0.0.1/tcp/1",
            "/ip4/255.255.255.255/tcp/1",
            "/ip6/::1/tcp/1",
            "/ip6/::/tcp/1",
            "/ip6/fd00::1/tcp/1",
            "/ip6/fe80::1/tcp/1",
            "/ip6/2001:db8::1/tcp/1",
            "/ip6/::ffff:10.0.0.1/tcp/1",
            "/memory/5",
            "/dns4/example.com/tcp/1",
        ] {
            assert!(!is_public(&a.parse().unwrap()), "{a}");
        }
    }
}
