//! The gate's bookkeeping, stepped by hand: which closings and dials a
//! change of the allow-set queues for the swarm, with connections that
//! exist only in the gate's maps (no sockets).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::time::Duration;

use libp2p::swarm::ToSwarm;

use super::*;
use crate::behaviour::gossip_config;

fn gate() -> GossipGate {
    let subscriptions = Subscriptions::new(8);
    let filter = crate::subscriptions::RoomTopicFilter(subscriptions.clone());
    let inner = Gossipsub::new_with_subscription_filter(
        gossipsub::MessageAuthenticity::Anonymous,
        gossip_config(Duration::from_secs(1), true).unwrap(),
        filter,
    )
    .unwrap();
    GossipGate::new(inner, subscriptions)
}

/// Opens an inbound connection from `peer`; returns its id and whether it
/// got the gossipsub handler.
fn connect(gate: &mut GossipGate, peer: PeerId, n: usize) -> (ConnectionId, bool) {
    let id = ConnectionId::new_unchecked(n);
    let addr: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
    let handler = gate
        .handle_established_inbound_connection(id, peer, &addr, &addr)
        .unwrap();
    (id, matches!(handler, Either::Left(_)))
}

/// What the gate has queued for the swarm: (closings, dials), by peer.
fn queued(gate: &GossipGate) -> (Vec<(PeerId, ConnectionId)>, Vec<PeerId>) {
    let mut closes = Vec::new();
    let mut dials = Vec::new();
    for event in &gate.events {
        match event {
            ToSwarm::CloseConnection {
                peer_id,
                connection: CloseConnection::One(id),
            } => closes.push((*peer_id, *id)),
            ToSwarm::Dial { opts } => dials.push(opts.get_peer_id().unwrap()),
            _ => {}
        }
    }
    (closes, dials)
}

#[test]
fn allowing_a_peer_on_a_gated_connection_closes_it_once_and_redials_once() {
    let mut gate = gate();
    let peer = PeerId::random();
    let (id, gossip) = connect(&mut gate, peer, 1);
    assert!(!gossip, "a stranger gets the dummy handler");
    gate.set_allowed([peer]);
    assert_eq!(queued(&gate), (vec![(peer, id)], vec![peer]));
    // The same set again, and a larger one: nothing more.
    gate.set_allowed([peer]);
    gate.set_allowed([peer, PeerId::random()]);
    assert_eq!(queued(&gate), (vec![(peer, id)], vec![peer]));
}

#[test]
fn a_change_undone_before_the_swarm_runs_leaves_the_connection_alone() {
    let mut gate = gate();
    let peer = PeerId::random();
    gate.set_allowed([peer]);
    let (_, gossip) = connect(&mut gate, peer, 1);
    assert!(gossip, "an allowed peer gets gossipsub");
    // Disallowed, then allowed again before the swarm took the closing.
    gate.set_allowed([]);
    assert_eq!(queued(&gate).0.len(), 1);
    gate.set_allowed([peer]);
    assert_eq!(queued(&gate), (vec![], vec![]), "nothing left to do");
    assert!(gate.closing.is_empty());

    // And the other way: a stranger allowed, then not, at once.
    let stranger = PeerId::random();
    let (_, gossip) = connect(&mut gate, stranger, 2);
    assert!(!gossip);
    gate.set_allowed([peer, stranger]);
    assert_eq!(queued(&gate).1, vec![stranger]);
    gate.set_allowed([peer]);
    assert_eq!(queued(&gate), (vec![], vec![]), "no close, no dial");
}

#[test]
fn a_peer_allowed_again_while_its_gossip_connection_closes_is_redialled() {
    let mut gate = gate();
    let peer = PeerId::random();
    gate.set_allowed([peer]);
    let (id, _) = connect(&mut gate, peer, 1);
    gate.set_allowed([]);
    // The swarm takes the closing; the connection is on its way out.
    assert!(matches!(
        gate.events.pop_front(),
        Some(ToSwarm::CloseConnection { connection: CloseConnection::One(c), .. }) if c == id
    ));
    gate.set_allowed([peer]);
    assert_eq!(
        queued(&gate),
        (vec![], vec![peer]),
        "one dial, so the peer does not end with no connection"
    );
}

#[test]
fn a_peer_left_out_is_leaving_until_its_gossip_connection_has_closed() {
    use libp2p::core::ConnectedPoint;
    let mut gate = gate();
    let (peer, other) = (PeerId::random(), PeerId::random());
    gate.set_allowed([peer, other]);
    let addr: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
    let endpoint = ConnectedPoint::Listener {
        local_addr: addr.clone(),
        send_back_addr: addr,
    };
    let (id, _) = connect(&mut gate, peer, 1);
    gate.on_swarm_event(FromSwarm::ConnectionEstablished(ConnectionEstablished {
        peer_id: peer,
        connection_id: id,
        endpoint: &endpoint,
        failed_addresses: &[],
        other_established: 0,
    }));
    assert!(!gate.leaving());
    // Left out: gossipsub counts it until the swarm reports the close.
    gate.set_allowed([other]);
    assert!(gate.leaving());
    gate.on_swarm_event(FromSwarm::ConnectionClosed(ConnectionClosed {
        peer_id: peer,
        connection_id: id,
        endpoint: &endpoint,
        cause: None,
        remaining_established: 0,
    }));
    assert!(!gate.leaving());
    // Left out and let back in before the swarm ran: never leaving.
    let (_, _) = connect(&mut gate, other, 2);
    gate.set_allowed([]);
    gate.set_allowed([other]);
    assert!(!gate.leaving());
}
