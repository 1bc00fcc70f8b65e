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
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use safemeet_net::{CustomTransport, RawStream};
use tokio_util::compat::TokioAsyncReadCompatExt;
use libp2p::request_response::{self, Codec, ProtocolSupport};
use libp2p::swarm::{SwarmEvent, dummy};
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm};

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

    async fn write_response<T>(&mut self, _: &StreamProtocol, _: &mut T, _: Vec<u8>) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        Ok(())
    }
}

/// A peer that opens stalled request streams on `protocol`, as many at
/// once as asked (its own side never gives up on them).
pub(crate) fn staller(protocol: StreamProtocol) -> Swarm<request_response::Behaviour<StallCodec>> {
    safemeet_net::build_swarm(Keypair::generate_ed25519(), None, HOLD, |_, _| {
        Ok(request_response::Behaviour::with_codec(
            StallCodec,
            [(protocol, ProtocolSupport::Outbound)],
            request_response::Config::default()
                .with_request_timeout(HOLD)
                .with_max_concurrent_streams(100_000),
        ))
    })
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
