//! The SafeMeet libp2p node.
//!
//! One event-loop task owns the [`libp2p::Swarm`]; the rest of the program
//! drives it through a cloneable [`Network`] handle (commands over a bounded
//! channel, each answered on a one-shot channel) and reads [`NetEvent`]s from
//! a bounded receiver. The node speaks:
//!
//! - TCP (Noise + yamux) and QUIC;
//! - identify and ping; Kademlia (`/safemeet/kad/1`), fed with the listen
//!   addresses identify reports; mDNS on the local network (on by default);
//! - gossipsub for rooms, **anonymous** (no origin peer, no signature:
//!   Megolm authenticates), content-hash message ids, messages forwarded
//!   only after the application [accepts](Network::report) them, a
//!   subscription filter that allows [`NetConfig::max_topics`] rooms;
//! - `/safemeet/deliver/1` request-response for direct delivery, frames of
//!   at most [`MAX_ENVELOPE_BYTES`] checked before they are read;
//! - connection limits and an idle timeout suited to chat.
//!
//! This crate moves padded frames. It checks their shape (size, padding,
//! envelope encoding) and never sees plaintext.
//!
//! Gossip is best effort: a publish that returns `Ok` may still not reach a
//! peer whose send queue is full. Delivery guarantees come from the layer
//! above (acknowledged direct delivery, catch-up).

mod behaviour;
mod codec;
mod config;
mod custom_transport;

use std::collections::HashMap;

use futures::StreamExt;
use libp2p::gossipsub::{IdentTopic, MessageAcceptance, MessageId, PublishError, TopicHash};
use libp2p::identity::Keypair;
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Swarm, SwarmBuilder, identify, mdns, noise, tcp, yamux};
use safemeet_proto::Envelope;
use safemeet_proto::limits::MAX_ENVELOPE_BYTES;
use tokio::sync::{mpsc, oneshot};

use crate::behaviour::{Behaviour, BehaviourEvent};
pub use crate::behaviour::{IDENTIFY_PROTOCOL, KAD_PROTOCOL, MESH_N_LOW, gossip_config};
pub use crate::codec::{
    DELIVER_PROTOCOL, FrameCodec, MAILBOX_PROTOCOL, MAX_REPLY_BYTES, MailboxCodec,
};
pub use crate::config::NetConfig;
pub use crate::custom_transport::{CustomTransport, RawStream, RawTransport};

/// A room's gossip topic: an opaque hash derived from the room secret, so
/// peers outside the room cannot tell which room it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RoomTopic(pub [u8; 32]);

impl RoomTopic {
    fn ident(&self) -> IdentTopic {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(HEX[(b >> 4) as usize] as char);
            s.push(HEX[(b & 15) as usize] as char);
        }
        IdentTopic::new(s)
    }

    fn from_hash(hash: &TopicHash) -> Option<Self> {
        let s = hash.as_str().as_bytes();
        if s.len() != 64 {
            return None;
        }
        let nibble = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        let mut out = [0u8; 32];
        for (i, pair) in s.chunks_exact(2).enumerate() {
            out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
        }
        Some(Self(out))
    }
}

/// An inbound delivery waiting for the application's reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReplyId(u64);

/// The application's verdict on a gossip message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Valid: forward it to the mesh.
    Accept,
    /// Invalid: drop it and penalise the peer that sent it.
    Reject,
    /// Not for us or not now: drop it without penalty.
    Ignore,
}

/// What the network tells the application.
#[derive(Debug)]
#[non_exhaustive]
pub enum NetEvent {
    /// A gossip frame on a subscribed room topic, well formed; answer with
    /// [`Network::report`] before it is forwarded.
    Gossip {
        /// The room topic.
        topic: RoomTopic,
        /// The padded frame.
        frame: Vec<u8>,
        /// Its gossip id.
        id: MessageId,
        /// The peer that passed it on (not necessarily its origin).
        via: PeerId,
    },
    /// A direct delivery, well formed; answer with [`Network::reply`].
    Delivery {
        /// The sending peer.
        peer: PeerId,
        /// The padded frame.
        frame: Vec<u8>,
        /// Where the answer goes.
        reply: ReplyId,
    },
    /// A new listen address.
    Listening(Multiaddr),
    /// The first connection to a peer opened.
    Connected(PeerId),
    /// The last connection to a peer closed.
    Disconnected(PeerId),
}

/// Errors of the network layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// The node could not be built.
    #[error("network setup failed: {0}")]
    Setup(String),
    /// An address could not be listened on or dialed.
    #[error("bad address {addr}: {reason}")]
    Address {
        /// The address.
        addr: Multiaddr,
        /// Why.
        reason: String,
    },
    /// A frame is larger than the protocol allows.
    #[error("a frame of {0} bytes is larger than the {MAX_ENVELOPE_BYTES}-byte limit")]
    TooLarge(usize),
    /// No peer is subscribed to the topic yet.
    #[error("no peer is subscribed to this room topic yet")]
    NoPeers,
    /// The frame was published before (same content, same topic).
    #[error("this frame was already published")]
    Duplicate,
    /// Publishing failed.
    #[error("publish failed: {0}")]
    Publish(String),
    /// A direct delivery failed (unreachable peer, timeout, refused stream).
    #[error("delivery failed: {0}")]
    Delivery(String),
    /// The reply handle is unknown or already used.
    #[error("no such pending delivery")]
    UnknownReply,
    /// The event loop has stopped.
    #[error("the network has stopped")]
    Stopped,
}

enum Command {
    ListenAddrs(oneshot::Sender<Vec<Multiaddr>>),
    Dial(Multiaddr, oneshot::Sender<Result<(), NetError>>),
    Subscribe(RoomTopic, oneshot::Sender<Result<(), NetError>>),
    Unsubscribe(RoomTopic, oneshot::Sender<()>),
    Publish(RoomTopic, Vec<u8>, oneshot::Sender<Result<(), NetError>>),
    PublishMany(
        Vec<(RoomTopic, Vec<u8>)>,
        oneshot::Sender<Vec<Result<(), NetError>>>,
    ),
    Report(MessageId, PeerId, Verdict),
    ReportMany(Vec<(MessageId, PeerId, Verdict)>),
    ReplyMany(Vec<(ReplyId, Vec<u8>)>),
    Deliver(
        PeerId,
        Vec<Multiaddr>,
        Vec<u8>,
        oneshot::Sender<Result<Vec<u8>, NetError>>,
    ),
    Mailbox(
        PeerId,
        Vec<Multiaddr>,
        Vec<u8>,
        oneshot::Sender<Result<Vec<u8>, NetError>>,
    ),
    Reply(ReplyId, Vec<u8>, oneshot::Sender<Result<(), NetError>>),
    ConnectedPeers(oneshot::Sender<Vec<PeerId>>),
    MeshPeers(RoomTopic, oneshot::Sender<usize>),
    Shutdown(oneshot::Sender<()>),
}

/// A cloneable handle to the network event loop.
#[derive(Clone)]
pub struct Network {
    commands: mpsc::Sender<Command>,
    local: PeerId,
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network")
            .field("peer_id", &self.local)
            .finish_non_exhaustive()
    }
}

/// Builds a swarm on SafeMeet's transports: TCP (Noise + yamux), QUIC, the
/// in-process memory transport (`/memory/N`, Noise + yamux, for tests and
/// simulations) and circuits through relays (Noise + yamux over relay v2),
/// with `behaviour` and the given idle timeout. `behaviour` gets the relay
/// client, which drives the circuits; a node that never uses circuits may
/// drop it. The daemon's node and the relay's are both built here.
pub fn build_swarm<B: libp2p::swarm::NetworkBehaviour>(
    keypair: Keypair,
    idle_timeout: std::time::Duration,
    behaviour: impl FnOnce(&Keypair, libp2p::relay::client::Behaviour) -> Result<B, String>,
) -> Result<libp2p::Swarm<B>, NetError> {
    let setup = |e: &dyn std::fmt::Display| NetError::Setup(e.to_string());
    Ok(SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| setup(&e))?
        .with_quic()
        .with_other_transport(|key| {
            use libp2p::core::Transport as _;
            let noise = noise::Config::new(key)
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)?;
            Ok(libp2p::core::transport::MemoryTransport::default()
                .upgrade(libp2p::core::upgrade::Version::V1)
                .authenticate(noise)
                .multiplex(yamux::Config::default()))
        })
        .map_err(|e| setup(&e))?
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .map_err(|e| setup(&e))?
        .with_behaviour(|key, relay| {
            behaviour(key, relay).map_err(Box::<dyn std::error::Error + Send + Sync>::from)
        })
        .map_err(|e| setup(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(idle_timeout))
        .build())
}

/// [`build_swarm`] over a caller-supplied transport (see
/// [`CustomTransport`]) instead of TCP, QUIC and the memory transport: the
/// same Noise + yamux upgrade, relay client, behaviour and idle timeout.
pub fn build_swarm_over<B: libp2p::swarm::NetworkBehaviour>(
    keypair: Keypair,
    transport: &CustomTransport,
    idle_timeout: std::time::Duration,
    behaviour: impl FnOnce(&Keypair, libp2p::relay::client::Behaviour) -> Result<B, String>,
) -> Result<libp2p::Swarm<B>, NetError> {
    let setup = |e: &dyn std::fmt::Display| NetError::Setup(e.to_string());
    Ok(SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_other_transport(|key| {
            use libp2p::core::Transport as _;
            let noise = noise::Config::new(key)
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)?;
            Ok(transport
                .make()
                .upgrade(libp2p::core::upgrade::Version::V1)
                .authenticate(noise)
                .multiplex(yamux::Config::default()))
        })
        .map_err(|e| setup(&e))?
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .map_err(|e| setup(&e))?
        .with_behaviour(|key, relay| {
            behaviour(key, relay).map_err(Box::<dyn std::error::Error + Send + Sync>::from)
        })
        .map_err(|e| setup(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(idle_timeout))
        .build())
}

/// Builds the node, starts listening, dials the bootstrap peers and spawns
/// the event loop on the current tokio runtime.
pub fn spawn(
    keypair: Keypair,
    config: NetConfig,
) -> Result<(Network, mpsc::Receiver<NetEvent>), NetError> {
    let local = keypair.public().to_peer_id();
    let behaviour = |key: &Keypair, relay| Behaviour::new(key, relay, &config);
    let mut swarm = match &config.transport {
        None => build_swarm(keypair, config.idle_timeout, behaviour)?,
        Some(custom) => build_swarm_over(keypair, custom, config.idle_timeout, behaviour)?,
    };
    for addr in &config.listen {
        swarm
            .listen_on(addr.clone())
            .map_err(|e| NetError::Address {
                addr: addr.clone(),
                reason: e.to_string(),
            })?;
    }
    for addr in &config.bootstrap {
        if let Some(peer) = peer_of(addr) {
            swarm.behaviour_mut().kad.add_address(&peer, addr.clone());
        }
        if let Err(e) = swarm.dial(addr.clone()) {
            tracing::warn!(error = %e, "could not dial a bootstrap peer");
        }
    }
    for relay in &config.relays {
        let Some(peer) = peer_of(relay) else {
            return Err(NetError::Address {
                addr: relay.clone(),
                reason: "a relay address needs /p2p/<peer id>".into(),
            });
        };
        // A relay is also a bootstrap peer.
        swarm.behaviour_mut().kad.add_address(&peer, relay.clone());
        let circuit = relay.clone().with(libp2p::multiaddr::Protocol::P2pCircuit);
        swarm.listen_on(circuit).map_err(|e| NetError::Address {
            addr: relay.clone(),
            reason: e.to_string(),
        })?;
    }
    let (commands, command_rx) = mpsc::channel(config.command_queue);
    let (event_tx, events) = mpsc::channel(config.event_queue);
    let event_loop = EventLoop {
        swarm,
        commands: command_rx,
        events: event_tx,
        pending_deliveries: HashMap::new(),
        pending_mailbox: HashMap::new(),
        pending_replies: HashMap::new(),
        next_reply: 0,
        max_pending_replies: config.max_pending_replies,
        dropped_events: 0,
    };
    tokio::spawn(event_loop.run());
    Ok((Network { commands, local }, events))
}

/// Whether `addr` is on a globally routable IP address (not loopback,
/// private, link-local, shared, documentation or otherwise special).
fn is_public(addr: &Multiaddr) -> bool {
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

fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().find_map(|p| match p {
        libp2p::multiaddr::Protocol::P2p(peer) => Some(peer),
        _ => None,
    })
}

impl Network {
    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.local
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, NetError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| NetError::Stopped)?;
        rx.await.map_err(|_| NetError::Stopped)
    }

    /// The addresses the node listens on.
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, NetError> {
        self.ask(Command::ListenAddrs).await
    }

    /// Dials an address (with or without `/p2p/<peer id>`).
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), NetError> {
        self.ask(|tx| Command::Dial(addr, tx)).await?
    }

    /// Joins a room's gossip topic.
    pub async fn subscribe(&self, topic: RoomTopic) -> Result<(), NetError> {
        self.ask(|tx| Command::Subscribe(topic, tx)).await?
    }

    /// Leaves a room's gossip topic.
    pub async fn unsubscribe(&self, topic: RoomTopic) -> Result<(), NetError> {
        self.ask(|tx| Command::Unsubscribe(topic, tx)).await
    }

    /// Publishes a padded frame on a room topic. `Ok` means it was handed to
    /// gossipsub, not that anyone received it.
    pub async fn publish(&self, topic: RoomTopic, frame: Vec<u8>) -> Result<(), NetError> {
        if frame.len() > MAX_ENVELOPE_BYTES {
            return Err(NetError::TooLarge(frame.len()));
        }
        self.ask(|tx| Command::Publish(topic, frame, tx)).await?
    }

    /// Publishes several frames in one go; one result per frame, in order.
    pub async fn publish_many(
        &self,
        frames: Vec<(RoomTopic, Vec<u8>)>,
    ) -> Result<Vec<Result<(), NetError>>, NetError> {
        self.ask(|tx| Command::PublishMany(frames, tx)).await
    }

    /// [`report`](Self::report) for several messages in one go.
    pub async fn report_many(
        &self,
        verdicts: Vec<(MessageId, PeerId, Verdict)>,
    ) -> Result<(), NetError> {
        self.commands
            .send(Command::ReportMany(verdicts))
            .await
            .map_err(|_| NetError::Stopped)
    }

    /// Answers several inbound deliveries in one go. An answer that cannot
    /// be sent (the peer left, the answer is too long) is dropped, and the
    /// peer sees its request fail.
    pub async fn reply_many(&self, replies: Vec<(ReplyId, Vec<u8>)>) -> Result<(), NetError> {
        self.commands
            .send(Command::ReplyMany(replies))
            .await
            .map_err(|_| NetError::Stopped)
    }

    /// Tells gossipsub whether to forward a received message.
    pub async fn report(
        &self,
        id: MessageId,
        via: PeerId,
        verdict: Verdict,
    ) -> Result<(), NetError> {
        self.commands
            .send(Command::Report(id, via, verdict))
            .await
            .map_err(|_| NetError::Stopped)
    }

    /// Delivers a padded frame directly to `peer` (dialing `addrs` if needed)
    /// and returns its reply.
    pub async fn deliver(
        &self,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        frame: Vec<u8>,
    ) -> Result<Vec<u8>, NetError> {
        if frame.len() > MAX_ENVELOPE_BYTES {
            return Err(NetError::TooLarge(frame.len()));
        }
        self.ask(|tx| Command::Deliver(peer, addrs, frame, tx))
            .await?
    }

    /// Sends an encoded `safemeet_proto::mailbox::MailboxRequest` to the
    /// relay `relay` (dialing `addrs` if needed) and returns its encoded
    /// answer (at most `safemeet_proto::mailbox::MAX_RESPONSE_BYTES`).
    pub async fn mailbox(
        &self,
        relay: PeerId,
        addrs: Vec<Multiaddr>,
        request: Vec<u8>,
    ) -> Result<Vec<u8>, NetError> {
        if request.len() > safemeet_proto::mailbox::MAX_REQUEST_BYTES {
            return Err(NetError::TooLarge(request.len()));
        }
        self.ask(|tx| Command::Mailbox(relay, addrs, request, tx))
            .await?
    }

    /// Answers an inbound delivery (at most [`MAX_REPLY_BYTES`]).
    pub async fn reply(&self, reply: ReplyId, bytes: Vec<u8>) -> Result<(), NetError> {
        self.ask(|tx| Command::Reply(reply, bytes, tx)).await?
    }

    /// Peers with an open connection.
    pub async fn connected_peers(&self) -> Result<Vec<PeerId>, NetError> {
        self.ask(Command::ConnectedPeers).await
    }

    /// How many peers this node's gossip mesh for a room topic holds (the
    /// peers it forwards the room's messages to and hears them from; 0 when
    /// not subscribed).
    pub async fn mesh_peers(&self, topic: RoomTopic) -> Result<usize, NetError> {
        self.ask(|tx| Command::MeshPeers(topic, tx)).await
    }

    /// Stops the event loop (connections close).
    pub async fn shutdown(&self) -> Result<(), NetError> {
        self.ask(Command::Shutdown).await
    }
}

struct EventLoop {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<NetEvent>,
    pending_deliveries: HashMap<OutboundRequestId, oneshot::Sender<Result<Vec<u8>, NetError>>>,
    /// Mailbox requests to relays (their ids count apart from deliveries').
    pending_mailbox: HashMap<OutboundRequestId, oneshot::Sender<Result<Vec<u8>, NetError>>>,
    pending_replies: HashMap<u64, ResponseChannel<Vec<u8>>>,
    next_reply: u64,
    max_pending_replies: usize,
    dropped_events: u64,
}

/// A frame is well formed when it is a correctly padded, decodable envelope.
fn well_formed(frame: &[u8]) -> bool {
    Envelope::from_frame(frame).is_ok()
}

impl EventLoop {
    async fn run(mut self) {
        loop {
            tokio::select! {
                command = self.commands.recv() => match command {
                    Some(Command::Shutdown(done)) => {
                        let _ = done.send(());
                        break;
                    }
                    Some(command) => self.command(command),
                    None => break,
                },
                event = self.swarm.select_next_some() => self.event(event),
            }
        }
        tracing::debug!("network event loop stopped");
    }

    /// Hands an event to the application without ever blocking the swarm:
    /// when the application is behind, the event is dropped and counted.
    fn emit(&mut self, event: NetEvent) {
        if self.events.try_send(event).is_err() {
            self.dropped_events += 1;
            tracing::warn!(
                dropped = self.dropped_events,
                "network event queue full; event dropped"
            );
        }
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::ListenAddrs(tx) => {
                let _ = tx.send(self.swarm.listeners().cloned().collect());
            }
            Command::Dial(addr, tx) => {
                let result = self
                    .swarm
                    .dial(addr.clone())
                    .map_err(|e| NetError::Address {
                        addr,
                        reason: e.to_string(),
                    });
                let _ = tx.send(result);
            }
            Command::Subscribe(topic, tx) => {
                let result = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .subscribe(&topic.ident())
                    .map(|_| ())
                    .map_err(|e| NetError::Publish(e.to_string()));
                let _ = tx.send(result);
            }
            Command::Unsubscribe(topic, tx) => {
                self.swarm
                    .behaviour_mut()
                    .gossipsub
                    .unsubscribe(&topic.ident());
                let _ = tx.send(());
            }
            Command::Publish(topic, frame, tx) => {
                let _ = tx.send(self.publish(topic, frame));
            }
            Command::PublishMany(frames, tx) => {
                let results = frames
                    .into_iter()
                    .map(|(topic, frame)| self.publish(topic, frame))
                    .collect();
                let _ = tx.send(results);
            }
            Command::Report(id, via, verdict) => self.report(&id, &via, verdict),
            Command::ReportMany(verdicts) => {
                for (id, via, verdict) in verdicts {
                    self.report(&id, &via, verdict);
                }
            }
            Command::ReplyMany(replies) => {
                for (reply, bytes) in replies {
                    if let Err(e) = self.reply(reply, bytes) {
                        tracing::debug!(error = %e, "an answer was not sent");
                    }
                }
            }
            Command::Deliver(peer, addrs, frame, tx) => {
                let id = self
                    .swarm
                    .behaviour_mut()
                    .deliver
                    .send_request_with_addresses(&peer, frame, addrs);
                self.pending_deliveries.insert(id, tx);
            }
            Command::Mailbox(relay, addrs, request, tx) => {
                let id = self
                    .swarm
                    .behaviour_mut()
                    .mailbox
                    .send_request_with_addresses(&relay, request, addrs);
                self.pending_mailbox.insert(id, tx);
            }
            Command::Reply(reply, bytes, tx) => {
                let _ = tx.send(self.reply(reply, bytes));
            }
            Command::ConnectedPeers(tx) => {
                let _ = tx.send(self.swarm.connected_peers().copied().collect());
            }
            Command::MeshPeers(topic, tx) => {
                let hash = topic.ident().hash();
                let _ = tx.send(self.swarm.behaviour().gossipsub.mesh_peers(&hash).count());
            }
            Command::Shutdown(_) => {}
        }
    }

    fn publish(&mut self, topic: RoomTopic, frame: Vec<u8>) -> Result<(), NetError> {
        if frame.len() > MAX_ENVELOPE_BYTES {
            return Err(NetError::TooLarge(frame.len()));
        }
        self.swarm
            .behaviour_mut()
            .gossipsub
            .publish(topic.ident(), frame)
            .map(|_| ())
            .map_err(|e| match e {
                PublishError::NoPeersSubscribedToTopic => NetError::NoPeers,
                PublishError::Duplicate => NetError::Duplicate,
                other => NetError::Publish(other.to_string()),
            })
    }

    fn report(&mut self, id: &MessageId, via: &PeerId, verdict: Verdict) {
        let acceptance = match verdict {
            Verdict::Accept => MessageAcceptance::Accept,
            Verdict::Reject => MessageAcceptance::Reject,
            Verdict::Ignore => MessageAcceptance::Ignore,
        };
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(id, via, acceptance);
    }

    fn reply(&mut self, reply: ReplyId, bytes: Vec<u8>) -> Result<(), NetError> {
        match self.pending_replies.remove(&reply.0) {
            None => Err(NetError::UnknownReply),
            Some(_) if bytes.len() > MAX_REPLY_BYTES => Err(NetError::TooLarge(bytes.len())),
            Some(channel) => self
                .swarm
                .behaviour_mut()
                .deliver
                .send_response(channel, bytes)
                .map_err(|_| NetError::Delivery("the peer is gone".to_owned())),
        }
    }

    fn event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                if is_public(&address) {
                    // Bound directly on a public address: others can reach
                    // it, so Kademlia (in its automatic mode) serves the DHT.
                    // Behind NAT an address is confirmed by autonat instead.
                    self.swarm.add_external_address(address.clone());
                }
                self.emit(NetEvent::Listening(address))
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                num_established,
                ..
            } if num_established.get() == 1 => self.emit(NetEvent::Connected(peer_id)),
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => self.emit(NetEvent::Disconnected(peer_id)),
            SwarmEvent::Behaviour(event) => self.behaviour_event(event),
            _ => {}
        }
    }

    fn behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Gossipsub(libp2p::gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            }) => {
                let topic = RoomTopic::from_hash(&message.topic);
                match topic {
                    Some(topic) if well_formed(&message.data) => self.emit(NetEvent::Gossip {
                        topic,
                        frame: message.data,
                        id: message_id,
                        via: propagation_source,
                    }),
                    _ => {
                        self.swarm
                            .behaviour_mut()
                            .gossipsub
                            .report_message_validation_result(
                                &message_id,
                                &propagation_source,
                                MessageAcceptance::Reject,
                            );
                    }
                }
            }
            BehaviourEvent::Deliver(request_response::Event::Message { peer, message, .. }) => {
                match message {
                    request_response::Message::Request {
                        request, channel, ..
                    } => self.inbound_delivery(peer, request, channel),
                    request_response::Message::Response {
                        request_id,
                        response,
                    } => {
                        if let Some(tx) = self.pending_deliveries.remove(&request_id) {
                            let _ = tx.send(Ok(response));
                        }
                    }
                }
            }
            BehaviourEvent::Deliver(request_response::Event::OutboundFailure {
                request_id,
                error,
                ..
            }) => {
                tracing::debug!(%error, "a delivery failed");
                if let Some(tx) = self.pending_deliveries.remove(&request_id) {
                    let _ = tx.send(Err(NetError::Delivery(error.to_string())));
                }
            }
            BehaviourEvent::Mailbox(request_response::Event::Message {
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            }) => {
                if let Some(tx) = self.pending_mailbox.remove(&request_id) {
                    let _ = tx.send(Ok(response));
                }
            }
            BehaviourEvent::Mailbox(request_response::Event::OutboundFailure {
                request_id,
                error,
                ..
            }) => {
                if let Some(tx) = self.pending_mailbox.remove(&request_id) {
                    let _ = tx.send(Err(NetError::Delivery(error.to_string())));
                }
            }
            BehaviourEvent::Deliver(request_response::Event::InboundFailure { error, .. }) => {
                tracing::debug!(error = %error, "inbound delivery failed");
            }
            // Kademlia learns no dialable address for peers that dialed us:
            // take the listen addresses identify reports.
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. })
                if info.protocols.contains(&KAD_PROTOCOL) =>
            {
                for addr in info.listen_addrs {
                    self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                }
            }
            BehaviourEvent::Mdns(mdns::Event::Discovered(found)) => {
                for (peer, addr) in found {
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .add_address(&peer, addr.clone());
                    if !self.swarm.is_connected(&peer)
                        && let Err(e) = self.swarm.dial(addr)
                    {
                        tracing::debug!(error = %e, "could not dial a local peer");
                    }
                }
            }
            _ => {}
        }
    }

    fn inbound_delivery(
        &mut self,
        peer: PeerId,
        frame: Vec<u8>,
        channel: ResponseChannel<Vec<u8>>,
    ) {
        if !well_formed(&frame) {
            tracing::debug!("a malformed direct frame was refused");
            return; // Dropping the channel fails the request on the sender's side.
        }
        if self.pending_replies.len() >= self.max_pending_replies {
            tracing::warn!("too many deliveries awaiting a reply; one refused");
            return;
        }
        let reply = ReplyId(self.next_reply);
        self.next_reply += 1;
        if self.events.capacity() == 0 {
            self.dropped_events += 1;
            tracing::warn!("network event queue full; delivery refused");
            return;
        }
        self.pending_replies.insert(reply.0, channel);
        self.emit(NetEvent::Delivery { peer, frame, reply });
    }
}

#[cfg(test)]
mod tests {
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
