//! Hostile bare rust-libp2p peers for the abuse tests (shared with the
//! relay's tests through `#[path]`): stock libp2p, SafeMeet's transports,
//! no SafeMeet logic.

#![allow(dead_code)] // each test file uses part of it

use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{AsyncRead, AsyncWrite, AsyncWriteExt, FutureExt, StreamExt};
use libp2p::core::Transport;
use libp2p::core::transport::{DialOpts, ListenerId, TransportError, TransportEvent};
use libp2p::gossipsub;
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, Codec, ProtocolSupport};
use libp2p::swarm::{SwarmEvent, dummy};
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm};
use safemeet_net::{CustomTransport, RawStream};
use tokio_util::compat::TokioAsyncReadCompatExt;

/// A connection this long idle stays open: the attacks hold theirs.
pub(crate) const HOLD: Duration = Duration::from_secs(600);

/// A request codec that announces `len` bytes, sends none, and then holds
/// the stream open for ever: a stalled request.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct StallCodec;

impl Codec for StallCodec {
    type Protocol = StreamProtocol;
    type Request = u32;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, _: &mut T) -> io::Result<u32>
    where
        T: AsyncRead + Unpin + Send,
    {
        Err(io::Error::other("a staller serves nothing"))
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, _: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        futures::future::pending().await
    }

    async fn write_request<T>(&mut self, _: &StreamProtocol, io: &mut T, len: u32) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&len.to_be_bytes()).await?;
        io.flush().await?;
        futures::future::pending().await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        _: &mut T,
        _: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        Ok(())
    }
}

/// A peer that opens stalled request streams on `protocol`, as many at
/// once as asked (its own side never gives up on them), its connections
/// from `source`.
pub(crate) fn staller(
    protocol: StreamProtocol,
    source: IpAddr,
) -> Swarm<request_response::Behaviour<StallCodec>> {
    let transport = CustomTransport::new(move || BoundTcp(source).boxed());
    safemeet_net::build_swarm(
        Keypair::generate_ed25519(),
        Some(&transport),
        HOLD,
        |_, _| {
            Ok(request_response::Behaviour::with_codec(
                StallCodec,
                [(protocol, ProtocolSupport::Outbound)],
                request_response::Config::default()
                    .with_request_timeout(HOLD)
                    .with_max_concurrent_streams(100_000),
            ))
        },
    )
    .unwrap()
}

/// A peer that only holds connections (no protocol at all).
pub(crate) fn holder() -> Swarm<dummy::Behaviour> {
    safemeet_net::build_swarm(Keypair::generate_ed25519(), None, HOLD, |_, _| {
        Ok(dummy::Behaviour)
    })
    .unwrap()
}

/// A holder whose TCP connections come from `source` (any loopback
/// address on Linux: all of 127.0.0.0/8 is local).
pub(crate) fn holder_from(source: IpAddr) -> Swarm<dummy::Behaviour> {
    let transport = CustomTransport::new(move || BoundTcp(source).boxed());
    safemeet_net::build_swarm(
        Keypair::generate_ed25519(),
        Some(&transport),
        HOLD,
        |_, _| Ok(dummy::Behaviour),
    )
    .unwrap()
}

/// TCP dials from a chosen source address; no listening.
struct BoundTcp(IpAddr);

impl Transport for BoundTcp {
    type Output = Box<dyn RawStream>;
    type Error = io::Error;
    type ListenerUpgrade = futures::future::Pending<io::Result<Self::Output>>;
    type Dial = BoxFuture<'static, io::Result<Self::Output>>;

    fn listen_on(
        &mut self,
        _: ListenerId,
        addr: Multiaddr,
    ) -> Result<(), TransportError<io::Error>> {
        Err(TransportError::MultiaddrNotSupported(addr))
    }

    fn remove_listener(&mut self, _: ListenerId) -> bool {
        false
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        _: DialOpts,
    ) -> Result<Self::Dial, TransportError<io::Error>> {
        let mut parts = addr.iter();
        let (Some(Protocol::Ip4(ip)), Some(Protocol::Tcp(port))) = (parts.next(), parts.next())
        else {
            return Err(TransportError::MultiaddrNotSupported(addr));
        };
        let source = self.0;
        Ok(async move {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(std::net::SocketAddr::new(source, 0))?;
            let stream = socket.connect((ip, port).into()).await?;
            stream.set_nodelay(true)?;
            Ok(Box::new(stream.compat()) as Box<dyn RawStream>)
        }
        .boxed())
    }

    fn poll(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, io::Error>> {
        Poll::Pending
    }
}

/// Drives `swarm` on a task until the test ends.
pub(crate) fn run<B>(mut swarm: Swarm<B>)
where
    B: libp2p::swarm::NetworkBehaviour + Send,
    B::ToSwarm: Send,
{
    tokio::spawn(async move {
        loop {
            let _ = swarm.select_next_some().await;
        }
    });
}

/// Dials `addr` from `swarm` and waits (at most `wait`) until the
/// connection is established or fails; whether it was established.
pub(crate) async fn connect<B>(swarm: &mut Swarm<B>, addr: Multiaddr, wait: Duration) -> bool
where
    B: libp2p::swarm::NetworkBehaviour,
{
    swarm.dial(addr).unwrap();
    tokio::time::timeout(wait, async {
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::ConnectionEstablished { .. } => return true,
                SwarmEvent::OutgoingConnectionError { error, .. } => {
                    eprintln!("dial failed: {error}");
                    return false;
                }
                SwarmEvent::ConnectionClosed { .. } => return false,
                _ => {}
            }
        }
    })
    .await
    .unwrap_or(false)
}

/// Whether a connection of `swarm` stays open for `wait` (it is closed,
/// or refused right after its handshake, otherwise).
pub(crate) async fn stays_open<B>(swarm: &mut Swarm<B>, wait: Duration) -> bool
where
    B: libp2p::swarm::NetworkBehaviour,
{
    tokio::time::timeout(wait, async {
        loop {
            if let SwarmEvent::ConnectionClosed { .. } = swarm.select_next_some().await {
                return;
            }
        }
    })
    .await
    .is_err()
}

/// The peer id at the end of `addr`.
pub(crate) fn peer_of(addr: &Multiaddr) -> PeerId {
    match addr.iter().last() {
        Some(libp2p::multiaddr::Protocol::P2p(peer)) => peer,
        _ => panic!("{addr} names no peer"),
    }
}

/// This process's resident memory, in bytes (Linux).
pub(crate) fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// What a [`GossipPeer`] sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Note {
    /// A connection opened.
    Opened,
    /// A connection closed.
    Closed,
    /// A gossip message arrived.
    Message(Vec<u8>),
}

enum GossipCommand {
    Dial(Multiaddr),
    Subscribe(String),
    Publish(String, Vec<u8>),
}

/// A bare gossipsub peer on a task, in gossipsub's most permissive form
/// (anonymous, any topic, no validation): it subscribes to and publishes
/// whatever it is told, and reports what it sees.
pub(crate) struct GossipPeer {
    pub(crate) id: PeerId,
    commands: tokio::sync::mpsc::Sender<GossipCommand>,
    pub(crate) notes: tokio::sync::mpsc::Receiver<Note>,
}

/// Anonymous messages have no sequence number: name them by content.
fn content_id(message: &gossipsub::Message) -> gossipsub::MessageId {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    std::hash::Hash::hash(&message.topic, &mut hasher);
    std::hash::Hash::hash(&message.data, &mut hasher);
    gossipsub::MessageId::from(std::hash::Hasher::finish(&hasher).to_be_bytes().to_vec())
}

impl GossipPeer {
    pub(crate) fn spawn() -> Self {
        let mut swarm =
            safemeet_net::build_swarm(Keypair::generate_ed25519(), None, HOLD, |_, _| {
                let config = gossipsub::ConfigBuilder::default()
                    .validation_mode(gossipsub::ValidationMode::Anonymous)
                    .message_id_fn(content_id)
                    .heartbeat_interval(Duration::from_millis(100))
                    .max_transmit_size(256 * 1024)
                    .build()
                    .unwrap();
                Ok(gossipsub::Behaviour::<
                    gossipsub::IdentityTransform,
                    gossipsub::AllowAllSubscriptionFilter,
                >::new_with_subscription_filter(
                    gossipsub::MessageAuthenticity::Anonymous,
                    config,
                    gossipsub::AllowAllSubscriptionFilter {},
                )
                .unwrap())
            })
            .unwrap();
        let id = *swarm.local_peer_id();
        let (commands, mut rx) = tokio::sync::mpsc::channel(1024);
        let (tx, notes) = tokio::sync::mpsc::channel(100_000);
        tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    command = rx.recv() => {
                        match command {
                            Some(GossipCommand::Dial(addr)) => swarm.dial(addr).unwrap(),
                            Some(GossipCommand::Subscribe(topic)) => {
                                let _ = swarm.behaviour_mut().subscribe(&gossipsub::IdentTopic::new(topic));
                            }
                            Some(GossipCommand::Publish(topic, data)) => {
                                let _ = swarm
                                    .behaviour_mut()
                                    .publish(gossipsub::IdentTopic::new(topic), data);
                            }
                            None => return,
                        }
                        continue;
                    }
                    event = swarm.select_next_some() => event,
                };
                let note = match event {
                    SwarmEvent::ConnectionEstablished { .. } => Note::Opened,
                    SwarmEvent::ConnectionClosed { .. } => Note::Closed,
                    SwarmEvent::Behaviour(gossipsub::Event::Message { message, .. }) => {
                        Note::Message(message.data)
                    }
                    _ => continue,
                };
                let _ = tx.try_send(note);
            }
        });
        Self {
            id,
            commands,
            notes,
        }
    }

    pub(crate) async fn dial(&self, addr: Multiaddr) {
        self.commands.send(GossipCommand::Dial(addr)).await.unwrap();
    }

    pub(crate) async fn subscribe(&self, topic: String) {
        self.commands
            .send(GossipCommand::Subscribe(topic))
            .await
            .unwrap();
    }

    pub(crate) async fn publish(&self, topic: String, data: Vec<u8>) {
        self.commands
            .send(GossipCommand::Publish(topic, data))
            .await
            .unwrap();
    }

    /// Waits (at most `wait`) for a note that `want` accepts; whether one came.
    pub(crate) async fn wait_for(&mut self, wait: Duration, want: impl Fn(&Note) -> bool) -> bool {
        tokio::time::timeout(wait, async {
            while let Some(note) = self.notes.recv().await {
                if want(&note) {
                    return true;
                }
            }
            false
        })
        .await
        .unwrap_or(false)
    }
}

/// Polls `check` every 50 ms until it holds; panics naming `what` after
/// 20 s.
pub(crate) async fn until<F: std::future::Future<Output = bool>>(
    what: &str,
    mut check: impl FnMut() -> F,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            tick.tick().await;
            if check().await {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting: {what}"));
}
