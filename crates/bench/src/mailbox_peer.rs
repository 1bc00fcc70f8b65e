//! What the relay benchmarks' clients share: a swarm that speaks
//! `/safemeet/mailbox/1` as a client only (over SafeMeet's own transport
//! stack), TCP dials from a chosen loopback address, fresh mailbox keys and
//! pseudo-random bytes.

use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use libp2p::Multiaddr;
use libp2p::core::Transport;
use libp2p::core::transport::{DialOpts, ListenerId, TransportError, TransportEvent};
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, ProtocolSupport};
use safemeet_crypto::mailbox::EpochKey;
use safemeet_net::{CustomTransport, MAILBOX_PROTOCOL, MailboxCodec, RawStream};
use safemeet_proto::codec;
use safemeet_proto::mailbox::{MAX_RESPONSE_BYTES, MailboxResponse};
use tokio_util::compat::TokioAsyncReadCompatExt;
use vodozemac::Ed25519SecretKey;

/// A mailbox client's swarm.
pub(crate) type MailboxSwarm = libp2p::Swarm<request_response::Behaviour<MailboxCodec>>;

/// A swarm with a fresh peer id that sends mailbox requests, at most
/// `in_flight` at once (more wait in libp2p's queue), each answered within
/// `timeout`. With `source`, its TCP connections come from that address
/// (any of 127.0.0.0/8 on Linux); otherwise it uses the production
/// transports.
pub(crate) fn mailbox_swarm(
    source: Option<IpAddr>,
    in_flight: usize,
    timeout: Duration,
) -> anyhow::Result<MailboxSwarm> {
    let transport = source.map(bound_tcp);
    Ok(safemeet_net::build_swarm(
        Keypair::generate_ed25519(),
        transport.as_ref(),
        timeout,
        |_, _| {
            Ok(request_response::Behaviour::with_codec(
                MailboxCodec::default(),
                [(MAILBOX_PROTOCOL, ProtocolSupport::Outbound)],
                request_response::Config::default()
                    .with_request_timeout(timeout)
                    .with_max_concurrent_streams(in_flight),
            ))
        },
    )?)
}

/// Decodes a relay's answer (size-checked).
pub(crate) fn decode_response(bytes: &[u8]) -> anyhow::Result<MailboxResponse> {
    Ok(codec::decode(bytes, MAX_RESPONSE_BYTES)?)
}

/// A fresh mailbox key (of epoch 0).
pub(crate) fn new_key() -> EpochKey {
    EpochKey::derive(&Ed25519SecretKey::new(), 0)
}

/// `out.len()` pseudo-random bytes drawn from `seed` (BLAKE3 in XOF
/// mode): junk that differs from request to request, reproducibly.
pub(crate) fn noise(seed: u64, out: &mut [u8]) {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"safemeet-bench noise");
    hasher.update(&seed.to_le_bytes());
    hasher.finalize_xof().fill(out);
}

/// 32 pseudo-random bytes (see [`noise`]).
pub(crate) fn noise32(seed: u64) -> [u8; 32] {
    let mut out = [0u8; 32];
    noise(seed, &mut out);
    out
}

/// A transport of TCP dials from `source`, for [`safemeet_net::build_swarm`].
pub(crate) fn bound_tcp(source: IpAddr) -> CustomTransport {
    CustomTransport::new(move || BoundTcp(source).boxed())
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
