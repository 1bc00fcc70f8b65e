//! A caller-supplied transport under SafeMeet's Noise + yamux upgrade.
//!
//! The network simulator (`netsim/`) runs the production node over links
//! it models itself (latency, bandwidth, loss, partitions). It hands the
//! node a [`CustomTransport`] through
//! [`Config::transport`](crate::Config::transport), and the node uses that
//! transport *instead of* TCP, QUIC and the memory transport; it still
//! authenticates every connection with Noise and multiplexes it with yamux,
//! exactly as in production. The daemon never sets it.

use std::fmt;
use std::sync::Arc;

use futures::{AsyncRead, AsyncWrite};
use libp2p::core::transport::Boxed;

/// A raw, unauthenticated byte stream: what a [`CustomTransport`] dials
/// and accepts before Noise and yamux run over it.
pub trait RawStream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> RawStream for T {}

/// A boxed transport of raw byte streams.
pub type RawTransport = Boxed<Box<dyn RawStream>>;

/// Makes the raw transport of a node; called once each time a node is
/// built (a node restarted with the same config gets a fresh transport).
#[derive(Clone)]
pub struct CustomTransport(Arc<dyn Fn() -> RawTransport + Send + Sync>);

impl CustomTransport {
    /// Wraps a factory of raw transports. Each transport's dials and
    /// listeners are upgraded with Noise (authenticated by the node's
    /// keypair) and yamux.
    pub fn new(make: impl Fn() -> RawTransport + Send + Sync + 'static) -> Self {
        Self(Arc::new(make))
    }

    pub(crate) fn make(&self) -> RawTransport {
        (self.0)()
    }
}

impl fmt::Debug for CustomTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CustomTransport(..)")
    }
}
