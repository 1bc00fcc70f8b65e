//! The device-link stream protocol (`/safemeet/link/1`).
//!
//! A device that shows a link accepts streams of this protocol (see
//! [`Handle::link_streams`](crate::Handle::link_streams)); the new device
//! dials it from a swarm of its own, with a throwaway key, made only for
//! the link ([`dial_link`]). What runs over the stream (a Noise handshake
//! with the link's secret, then the transfer) is the engine's business:
//! this module only moves bytes.

use std::time::Duration;

use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{Multiaddr, PeerId, Stream, StreamProtocol};
use tokio::task::JoinHandle;

use crate::Error;
use crate::swarm::build_swarm;

/// The device-link protocol.
pub const LINK_PROTOCOL: StreamProtocol = StreamProtocol::new("/safemeet/link/1");
/// The file stream protocol: a device fetches a file's sealed chunks from
/// the device that sent it (see `safemeet_engine::files`).
pub const BLOB_PROTOCOL: StreamProtocol = StreamProtocol::new("/safemeet/blob/1");
/// The media stream protocol: one stream per sender and receiver of a
/// call, carrying length-prefixed sealed frames (see `safemeet_media`).
pub const MEDIA_PROTOCOL: StreamProtocol = StreamProtocol::new("/safemeet/media/1");

/// A link stream from [`dial_link`], with the swarm that carries it: the
/// swarm stops when this is dropped.
pub struct LinkStream {
    /// The stream to the linking device.
    pub stream: Stream,
    driver: JoinHandle<()>,
}

impl Drop for LinkStream {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl std::fmt::Debug for LinkStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkStream").finish_non_exhaustive()
    }
}

#[derive(NetworkBehaviour)]
struct LinkBehaviour {
    stream: libp2p_stream::Behaviour,
}

/// Dials `peer` at `addrs` from a swarm with a fresh key and opens a link
/// stream to it, within `timeout`, over the production transports or
/// `transport` (a simulator's).
pub async fn dial_link(
    peer: PeerId,
    addrs: &[Multiaddr],
    timeout: Duration,
    transport: Option<&crate::CustomTransport>,
) -> Result<LinkStream, Error> {
    let mut swarm = build_swarm(
        Keypair::generate_ed25519(),
        transport,
        timeout,
        |_, _relay| {
            Ok(LinkBehaviour {
                stream: libp2p_stream::Behaviour::new(),
            })
        },
    )?;
    let mut control = swarm.behaviour().stream.new_control();
    // Dialled here with the link's addresses: the stream behaviour's own
    // dial knows no addresses.
    swarm
        .dial(
            libp2p::swarm::dial_opts::DialOpts::peer_id(peer)
                .addresses(addrs.to_vec())
                .build(),
        )
        .map_err(|e| Error::Link(format!("could not dial the linking device: {e}")))?;
    let driver = tokio::spawn(async move {
        loop {
            let _ = swarm.select_next_some().await;
        }
    });
    let open = async {
        control
            .open_stream(peer, LINK_PROTOCOL)
            .await
            .map_err(|e| Error::Link(e.to_string()))
    };
    let stream = match tokio::time::timeout(timeout, open).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            driver.abort();
            return Err(e);
        }
        Err(_) => {
            driver.abort();
            return Err(Error::Link(
                "the linking device did not answer in time".into(),
            ));
        }
    };
    Ok(LinkStream { stream, driver })
}
