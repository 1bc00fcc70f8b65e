//! The stalling sybil: connections that hold mailbox streams open, each
//! announcing a request and sending nothing, as many as the relay reads.

use std::io;
use std::net::IpAddr;
use std::time::Duration;

use futures::{AsyncRead, AsyncWrite, AsyncWriteExt, StreamExt};
use libp2p::identity::Keypair;
use libp2p::request_response::{self, Codec, Event, ProtocolSupport};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, StreamProtocol};
use safemeet_net::MAILBOX_PROTOCOL;
use safemeet_proto::mailbox::MAX_REQUEST_BYTES;

use super::sybil::{Attack, Flood, IN_FLIGHT, REQUEST_TIMEOUT, RETRY};
use crate::mailbox_peer::bound_tcp;

/// Connections a staller keeps: the relay's cap per peer id (4).
const STALL_CONNECTIONS: usize = 4;
/// How long a staller holds a stream: past the relay's 5 s read timeout,
/// so each one is given up on by the relay first.
const STALL_HOLD: Duration = Duration::from_secs(7);

/// A staller: [`STALL_CONNECTIONS`] connections, each with as many streams
/// open as the relay reads at once on one ([`IN_FLIGHT`]), that announce a
/// request and send nothing; each is held [`STALL_HOLD`], and replaced
/// when it ends.
pub(super) async fn run(
    flood: &Flood,
    from: IpAddr,
    addr: Multiaddr,
    relay: PeerId,
) -> anyhow::Result<()> {
    let attack = Attack::Stall;
    let transport = bound_tcp(from);
    let mut swarm = safemeet_net::build_swarm(
        Keypair::generate_ed25519(),
        Some(&transport),
        REQUEST_TIMEOUT,
        |_, _| {
            Ok(request_response::Behaviour::with_codec(
                StallCodec,
                [(MAILBOX_PROTOCOL, ProtocolSupport::Outbound)],
                request_response::Config::default()
                    .with_request_timeout(STALL_HOLD)
                    .with_max_concurrent_streams(IN_FLIGHT),
            ))
        },
    )?;
    let (mut connections, mut dialing, mut open, mut n) = (0usize, 0usize, 0usize, 0u64);
    let mut tick = tokio::time::interval(RETRY);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                while connections + dialing < STALL_CONNECTIONS {
                    swarm.dial(addr.clone())?;
                    dialing += 1;
                }
                // Requests are spread over the connections in turn.
                while open < IN_FLIGHT * connections {
                    n += 1;
                    let len = MAX_REQUEST_BYTES as u32 + u32::from(n % 8 == 0);
                    swarm.behaviour_mut().send_request(&relay, len);
                    open += 1;
                    flood.record(attack, |t, s| {
                        t.sent += 1;
                        s.stalls += 1;
                    });
                }
            }
            event = swarm.select_next_some() => match event {
                SwarmEvent::ConnectionEstablished { .. } => {
                    connections += 1;
                    dialing = dialing.saturating_sub(1);
                    flood.record(attack, |t, _| t.connections += 1);
                }
                SwarmEvent::ConnectionClosed { .. } => connections = connections.saturating_sub(1),
                SwarmEvent::OutgoingConnectionError { .. } => {
                    dialing = dialing.saturating_sub(1);
                    flood.record(attack, |t, _| t.dial_failures += 1);
                }
                SwarmEvent::Behaviour(Event::OutboundFailure { .. }) => {
                    open = open.saturating_sub(1);
                    flood.record(attack, |t, _| t.failed += 1);
                }
                _ => {}
            },
        }
    }
}

/// Announces `len` bytes, sends none, and holds the stream open.
#[derive(Debug, Clone, Copy, Default)]
struct StallCodec;

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
