//! The one place a SafeMeet [`Swarm`] is built.
//!
//! The daemon's node ([`spawn`](crate::spawn)), the relay (`safemeet-relay`),
//! the benchmarks and the network simulator's baseline all build their swarm
//! here, so they share one transport stack and differ only in their
//! behaviour. The stack is either the production transports (TCP, QUIC and
//! the in-process memory transport) or a caller's [`CustomTransport`], and in
//! both cases circuits through relays; every connection but QUIC's (which
//! brings its own TLS and multiplexing) is authenticated with Noise and
//! multiplexed with yamux.

use std::time::Duration;

use libp2p::core::Transport;
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::{Boxed, MemoryTransport};
use libp2p::core::upgrade::Version;
use libp2p::identity::Keypair;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{PeerId, Swarm, SwarmBuilder, noise, quic, tcp, yamux};

use crate::{CustomTransport, Error};

/// What a behaviour constructor may fail with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An authenticated, multiplexed transport, boxed.
type Connections = Boxed<(PeerId, StreamMuxerBox)>;

/// Builds a swarm with `behaviour` on SafeMeet's transports.
///
/// With `transport` `None` the node speaks TCP (Noise + yamux), QUIC and the
/// in-process memory transport (`/memory/N`, Noise + yamux, for tests and
/// simulations); with a [`CustomTransport`] it speaks that transport instead
/// (Noise + yamux over it). Either way it can also use circuits through
/// relays: `behaviour` gets the relay client that drives them (a swarm that
/// never uses circuits may drop it). A connection with no traffic closes
/// after `idle_timeout`.
pub fn build_swarm<B: NetworkBehaviour>(
    keypair: Keypair,
    transport: Option<&CustomTransport>,
    idle_timeout: Duration,
    behaviour: impl FnOnce(&Keypair, libp2p::relay::client::Behaviour) -> Result<B, BoxError>,
) -> Result<Swarm<B>, Error> {
    Ok(SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_other_transport(|key| connections(key, transport))
        .map_err(|e| Error::Setup {
            part: "transport",
            source: e.into(),
        })?
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .map_err(|e| Error::Setup {
            part: "relay client",
            source: e.into(),
        })?
        .with_behaviour(behaviour)
        .map_err(|e| Error::Setup {
            part: "behaviour",
            source: e.into(),
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(idle_timeout))
        .build())
}

/// The transports other than relay circuits, authenticated and multiplexed.
fn connections(key: &Keypair, custom: Option<&CustomTransport>) -> Result<Connections, BoxError> {
    let noise = noise::Config::new(key)?;
    let Some(custom) = custom else {
        // TCP negotiates lazily (as libp2p's builder does): the first
        // message rides with the protocol proposal, saving a round trip.
        let tcp = secure(
            tcp::tokio::Transport::new(tcp::Config::default().nodelay(true)),
            Version::V1Lazy,
            noise.clone(),
        );
        let quic = quic::tokio::Transport::new(quic::Config::new(key))
            .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)));
        let memory = secure(MemoryTransport::default(), Version::V1, noise);
        return Ok(tcp
            .or_transport(quic)
            .map(|either, _| either.into_inner())
            .or_transport(memory)
            .map(|either, _| either.into_inner())
            .boxed());
    };
    Ok(secure(custom.make(), Version::V1, noise))
}

/// `transport` under Noise (authenticated by the node's key) and yamux.
fn secure<T>(transport: T, version: Version, noise: noise::Config) -> Connections
where
    T: Transport + Send + Unpin + 'static,
    T::Output: futures::AsyncRead + futures::AsyncWrite + Unpin + Send + 'static,
    T::Error: Send + Sync + 'static,
    T::Dial: Send + 'static,
    T::ListenerUpgrade: Send + 'static,
{
    transport
        .upgrade(version)
        .authenticate(noise)
        .multiplex(yamux::Config::default())
        .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
        .boxed()
}
