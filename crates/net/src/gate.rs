//! The gossip gate: gossipsub only on connections to peers the application
//! allows.
//!
//! Stock gossipsub greets every connected peer with the list of topics the
//! node is subscribed to, and grafts any peer that subscribes to one of
//! them. A room's topic is opaque, but two nodes showing the same topic
//! share a room, and a peer that subscribes gets the room's (encrypted)
//! traffic and its timing. So gossip runs only among the member devices of
//! the node's gossip rooms: the application hands the gate the set of
//! their peer ids ([`Handle::allow_gossip`](crate::Handle::allow_gossip)),
//! which Noise has authenticated on every connection.
//!
//! The handler of a connection is chosen when it is established: the
//! gossipsub handler for an allowed peer, the dummy handler (which speaks
//! nothing) for anyone else, so a stranger, a relay, a DHT peer or a peer
//! found on the LAN cannot even open a gossipsub stream, and identify does
//! not list gossipsub for it. Gossipsub never hears of a gated connection
//! (its establishment, address changes and closing are filtered out, and
//! the connection counts it sees leave gated ones out).
//!
//! A handler cannot change on a live connection. When a peer becomes
//! allowed while it has only gated connections, those are closed, so the
//! next connection (the next delivery, acknowledgement or dial) gets
//! gossip; when a peer stops being allowed, its gossip connections are
//! closed. A newly allowed peer is dialled again at once (also when its
//! gossip connections are closing because it was disallowed a moment
//! ago), at the addresses of the gated connections this node had dialled
//! and any the swarm knows; a peer that only ever dialled in and whose
//! listen addresses are not known yet is not reachable that way, and
//! gossips from its next connection. Each connection is closed at most
//! once, a connection opened after a change already has the right
//! handler, and a change undone before the swarm has acted on it takes
//! back its queued closings and dial, so a change of the set costs at
//! most one reconnection per peer and cannot loop. Deliveries in
//! flight on a closed connection fail and are retried by the application.
//! The application hears back from a change once the gossip connections
//! of the peers it left out have closed ([`GossipGate::leaving`]): until
//! then gossipsub counts them, and a subscription made meanwhile (a room's
//! new topic, after a member was removed) would be announced to them.

use std::collections::{HashMap, HashSet, VecDeque};
use std::task::{Context, Poll};

use either::Either;
use libp2p::core::transport::PortUse;
use libp2p::core::{Endpoint, Multiaddr};
use libp2p::swarm::behaviour::{
    AddressChange, ConnectionClosed, ConnectionEstablished, DialFailure, ListenFailure,
};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{
    CloseConnection, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler,
    THandlerInEvent, THandlerOutEvent, ToSwarm, dummy,
};
use libp2p::{PeerId, gossipsub};

use crate::behaviour::Gossipsub;
use crate::subscriptions::Subscriptions;

/// Most peers dropped for their subscriptions that wait for the event
/// loop to count them (it takes them after every swarm event; past this,
/// the oldest are forgotten: only the operator's count is short).
const MAX_DROPPED: usize = 1024;

/// Most peers the gate lets gossip at once: the member devices of every
/// gossip room together. A larger set from the application is cut to this
/// size (the peers left out are served by direct delivery).
pub const MAX_GOSSIP_PEERS: usize = 4096;

/// Gossipsub behind the gate (see the module docs).
pub(crate) struct GossipGate {
    inner: Gossipsub,
    /// Peers whose connections get gossipsub.
    allowed: HashSet<PeerId>,
    /// Connections with the gossipsub handler, by peer (bounded by the
    /// swarm's connection limits).
    open: HashMap<PeerId, HashSet<ConnectionId>>,
    /// Connections with the dummy handler, by peer.
    gated: HashMap<PeerId, HashSet<ConnectionId>>,
    /// The address of each gated connection this node dialled: dialable,
    /// so a redial does not depend on the peer's addresses being known
    /// otherwise (identify, Kademlia, a delivery's).
    dialled: HashMap<ConnectionId, Multiaddr>,
    /// Connections this gate asked the swarm to close (each at most once).
    closing: HashSet<ConnectionId>,
    /// Closings and dials waiting to be handed to the swarm.
    events: VecDeque<ToSwarm<gossipsub::Event, THandlerInEvent<Self>>>,
    /// What gossipsub's subscription filter shares with the gate.
    subscriptions: Subscriptions,
    /// Peers dropped for malformed or excess subscriptions, and how many
    /// were refused (at most [`MAX_DROPPED`] waiting).
    dropped: VecDeque<(PeerId, u64)>,
}

impl GossipGate {
    pub(crate) fn new(inner: Gossipsub, subscriptions: Subscriptions) -> Self {
        Self {
            inner,
            subscriptions,
            dropped: VecDeque::new(),
            allowed: HashSet::new(),
            open: HashMap::new(),
            gated: HashMap::new(),
            dialled: HashMap::new(),
            closing: HashSet::new(),
            events: VecDeque::new(),
        }
    }

    /// Gossipsub itself (to subscribe, publish, report).
    pub(crate) fn inner(&self) -> &Gossipsub {
        &self.inner
    }

    /// Gossipsub itself, mutably.
    pub(crate) fn inner_mut(&mut self) -> &mut Gossipsub {
        &mut self.inner
    }

    /// How many peers are allowed.
    pub(crate) fn allowed_len(&self) -> usize {
        self.allowed.len()
    }

    /// Whether a peer no longer allowed still has a gossip connection (its
    /// closing is under way): gossipsub still counts it a peer, and would
    /// tell it of a topic subscribed to now.
    pub(crate) fn leaving(&self) -> bool {
        self.open
            .iter()
            .any(|(peer, conns)| !conns.is_empty() && !self.allowed.contains(peer))
    }

    /// The peers allowed to gossip.
    pub(crate) fn allowed(&self) -> impl Iterator<Item = &PeerId> {
        self.allowed.iter()
    }

    /// Replaces the set of peers allowed to gossip (at most
    /// [`MAX_GOSSIP_PEERS`]; the rest are left out), and closes the
    /// connections whose handler no longer fits.
    pub(crate) fn set_allowed(&mut self, peers: impl IntoIterator<Item = PeerId>) {
        let new: HashSet<PeerId> = peers.into_iter().take(MAX_GOSSIP_PEERS).collect();
        self.retract(&new);
        // Newly allowed peers with only gated connections: close those, so
        // the next connection speaks gossip.
        for peer in new.difference(&self.allowed) {
            let conns = self.open.get(peer);
            if conns.is_some_and(|c| c.iter().any(|id| !self.closing.contains(id))) {
                continue;
            }
            // Gossip connections already on their way out (the peer was
            // disallowed a moment ago, and the swarm took the closing):
            // this peer needs a new connection as much as a gated one.
            let mut closed = conns.is_some_and(|c| !c.is_empty());
            let Some(conns) = self.gated.get(peer) else {
                if closed {
                    self.events.push_back(Self::redial(*peer, Vec::new()));
                }
                continue;
            };
            let mut addrs = Vec::new();
            for id in conns {
                addrs.extend(self.dialled.get(id).cloned());
                if self.closing.insert(*id) {
                    closed = true;
                    self.events.push_back(ToSwarm::CloseConnection {
                        peer_id: *peer,
                        connection: CloseConnection::One(*id),
                    });
                }
            }
            if closed {
                // It was reachable a moment ago: connect again at once
                // (with the addresses the swarm knows for it), so gossip
                // does not wait for the next delivery. A dial that fails
                // costs nothing; the next delivery connects anyway.
                self.events.push_back(Self::redial(*peer, addrs));
            }
        }
        // Peers no longer allowed: close their gossip connections.
        for peer in self.allowed.difference(&new) {
            if let Some(conns) = self.open.get(peer) {
                for id in conns {
                    if self.closing.insert(*id) {
                        self.events.push_back(ToSwarm::CloseConnection {
                            peer_id: *peer,
                            connection: CloseConnection::One(*id),
                        });
                    }
                }
            }
        }
        self.allowed = new;
    }

    /// A dial of `peer` at `addrs` and the addresses the swarm knows for
    /// it, even if it is still connected (its old connections are closing).
    fn redial(
        peer: PeerId,
        addrs: Vec<Multiaddr>,
    ) -> ToSwarm<gossipsub::Event, THandlerInEvent<Self>> {
        ToSwarm::Dial {
            opts: DialOpts::peer_id(peer)
                .condition(PeerCondition::Always)
                .addresses(addrs)
                .extend_addresses_through_behaviour()
                .build(),
        }
    }

    /// Takes back the closings and dials still queued for peers whose
    /// standing changes again with `new`: the swarm has not seen them yet,
    /// and they only carried out the change this one undoes (each change
    /// retracts what the previous one left queued). Allowed, disallowed
    /// and allowed again before the swarm runs, a peer keeps its
    /// connection instead of losing it.
    fn retract(&mut self, new: &HashSet<PeerId>) {
        let flipped: HashSet<&PeerId> = new.symmetric_difference(&self.allowed).collect();
        if flipped.is_empty() {
            return;
        }
        let closing = &mut self.closing;
        self.events.retain(|event| match event {
            ToSwarm::CloseConnection {
                peer_id,
                connection: CloseConnection::One(id),
            } if flipped.contains(peer_id) => {
                closing.remove(id);
                false
            }
            ToSwarm::Dial { opts } => !opts.get_peer_id().is_some_and(|p| flipped.contains(&p)),
            _ => true,
        });
    }

    /// Peers dropped for their subscriptions since the last call, and how
    /// many subscriptions of theirs were refused.
    pub(crate) fn take_dropped(&mut self) -> impl Iterator<Item = (PeerId, u64)> + '_ {
        self.dropped.drain(..)
    }

    /// Closes every gossip connection of `peer` (it announced subscriptions
    /// no SafeMeet node would).
    fn drop_peer(&mut self, peer: PeerId, refused: u64) {
        if self.dropped.len() >= MAX_DROPPED {
            self.dropped.pop_front();
        }
        self.dropped.push_back((peer, refused));
        if let Some(conns) = self.open.get(&peer) {
            for id in conns {
                if self.closing.insert(*id) {
                    self.events.push_back(ToSwarm::CloseConnection {
                        peer_id: peer,
                        connection: CloseConnection::One(*id),
                    });
                }
            }
        }
    }

    fn is_open(&self, peer: &PeerId, id: ConnectionId) -> bool {
        self.open.get(peer).is_some_and(|c| c.contains(&id))
    }

    fn open_count(&self, peer: &PeerId) -> usize {
        self.open.get(peer).map_or(0, HashSet::len)
    }

    fn remember(map: &mut HashMap<PeerId, HashSet<ConnectionId>>, peer: PeerId, id: ConnectionId) {
        map.entry(peer).or_default().insert(id);
    }

    fn forget(map: &mut HashMap<PeerId, HashSet<ConnectionId>>, peer: &PeerId, id: ConnectionId) {
        if let Some(conns) = map.get_mut(peer) {
            conns.remove(&id);
            if conns.is_empty() {
                map.remove(peer);
            }
        }
    }
}

impl NetworkBehaviour for GossipGate {
    type ConnectionHandler = Either<THandler<Gossipsub>, dummy::ConnectionHandler>;
    type ToSwarm = gossipsub::Event;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.inner
            .handle_pending_inbound_connection(connection_id, local_addr, remote_addr)
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        if !self.allowed.contains(&peer) {
            Self::remember(&mut self.gated, peer, connection_id);
            return Ok(Either::Right(dummy::ConnectionHandler));
        }
        let handler = self.inner.handle_established_inbound_connection(
            connection_id,
            peer,
            local_addr,
            remote_addr,
        )?;
        Self::remember(&mut self.open, peer, connection_id);
        Ok(Either::Left(handler))
    }

    fn handle_pending_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        maybe_peer: Option<PeerId>,
        addresses: &[Multiaddr],
        effective_role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        self.inner.handle_pending_outbound_connection(
            connection_id,
            maybe_peer,
            addresses,
            effective_role,
        )
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role_override: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        if !self.allowed.contains(&peer) {
            Self::remember(&mut self.gated, peer, connection_id);
            self.dialled.insert(connection_id, addr.clone());
            return Ok(Either::Right(dummy::ConnectionHandler));
        }
        let handler = self.inner.handle_established_outbound_connection(
            connection_id,
            peer,
            addr,
            role_override,
            port_use,
        )?;
        Self::remember(&mut self.open, peer, connection_id);
        Ok(Either::Left(handler))
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionEstablished(e) => {
                if !self.is_open(&e.peer_id, e.connection_id) {
                    return;
                }
                // Gossipsub greets a peer on its first connection: count
                // only the connections it knows.
                let other_established = self.open_count(&e.peer_id).saturating_sub(1);
                self.inner.on_swarm_event(FromSwarm::ConnectionEstablished(
                    ConnectionEstablished {
                        other_established,
                        ..e
                    },
                ));
            }
            FromSwarm::ConnectionClosed(e) => {
                self.closing.remove(&e.connection_id);
                self.dialled.remove(&e.connection_id);
                if !self.is_open(&e.peer_id, e.connection_id) {
                    Self::forget(&mut self.gated, &e.peer_id, e.connection_id);
                    return;
                }
                Self::forget(&mut self.open, &e.peer_id, e.connection_id);
                let remaining_established = self.open_count(&e.peer_id);
                if remaining_established == 0 {
                    self.subscriptions.forget(&e.peer_id);
                }
                self.inner
                    .on_swarm_event(FromSwarm::ConnectionClosed(ConnectionClosed {
                        remaining_established,
                        ..e
                    }));
            }
            // A connection another behaviour refused after this one
            // chose its handler never opens.
            FromSwarm::DialFailure(DialFailure {
                peer_id: Some(peer),
                connection_id,
                ..
            })
            | FromSwarm::ListenFailure(ListenFailure {
                peer_id: Some(peer),
                connection_id,
                ..
            }) => {
                Self::forget(&mut self.gated, &peer, connection_id);
                Self::forget(&mut self.open, &peer, connection_id);
                self.dialled.remove(&connection_id);
                self.inner.on_swarm_event(event);
            }
            FromSwarm::AddressChange(AddressChange {
                peer_id,
                connection_id,
                ..
            }) if !self.is_open(&peer_id, connection_id) => {}
            other => self.inner.on_swarm_event(other),
        }
    }

    fn on_connection_handler_event(
        &mut self,
        peer_id: PeerId,
        connection_id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {
            Either::Left(event) => {
                let inner = &mut self.inner;
                let refused = self.subscriptions.handling(peer_id, || {
                    inner.on_connection_handler_event(peer_id, connection_id, event);
                });
                if refused > 0 {
                    self.drop_peer(peer_id, refused);
                }
            }
            Either::Right(never) => match never {},
        }
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        if let Some(event) = self.events.pop_front() {
            return Poll::Ready(event);
        }
        let event = self.inner.poll(cx);
        if let Poll::Ready(ToSwarm::GenerateEvent(e)) = &event {
            match e {
                gossipsub::Event::Subscribed { peer_id, .. } => {
                    self.subscriptions.subscribed(*peer_id);
                }
                gossipsub::Event::Unsubscribed { peer_id, .. } => {
                    self.subscriptions.unsubscribed(peer_id);
                }
                _ => {}
            }
        }
        event.map(|event| event.map_in(Either::Left))
    }
}

#[cfg(test)]
#[path = "gate_tests.rs"]
mod tests;
