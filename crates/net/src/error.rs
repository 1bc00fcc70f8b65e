//! The network layer's errors.

use libp2p::Multiaddr;
use safemeet_proto::limits::MAX_ENVELOPE_BYTES;

use crate::swarm::BoxError;

/// Errors of the network layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A part of the node could not be built.
    #[error("could not set up the network {part}")]
    Setup {
        /// Which part.
        part: &'static str,
        /// Why.
        #[source]
        source: BoxError,
    },
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
