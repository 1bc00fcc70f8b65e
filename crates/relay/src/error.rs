//! The relay's one error type, for the mailboxes on disk and the node alike.
//!
//! Each variant keeps what caused it as its [`source`](std::error::Error::source),
//! so a log line or the `safemeet relay` process can print the whole chain.
//! [`Error::Refused`] is the only variant a client is told about in detail
//! (as its [`MailboxError`] code and message); anything else reaches a
//! client as `Internal`.

use std::net::SocketAddr;

use libp2p::{Multiaddr, TransportError};
use safemeet_proto::mailbox::MailboxError;
use safemeet_proto::{DecodeError, EncodeError};

/// What went wrong in a relay.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A limit or rule refused a request; the client is told.
    #[error("{message}")]
    Refused {
        /// For the client.
        code: MailboxError,
        /// For people.
        message: String,
    },
    /// The store under the mailboxes failed.
    #[error("the mailbox store failed")]
    Store(#[from] safemeet_store::Error),
    /// A stored record does not decode.
    #[error("a stored {what} is damaged")]
    Damaged {
        /// Which record.
        what: &'static str,
        /// Why it does not decode.
        #[source]
        source: DecodeError,
    },
    /// A stored key does not have the shape this relay writes.
    #[error("a stored {what} key has the wrong length")]
    DamagedKey {
        /// Which key.
        what: &'static str,
    },
    /// A record could not be encoded for the store.
    #[error("a {what} could not be encoded")]
    Encode {
        /// Which record.
        what: &'static str,
        /// Why.
        #[source]
        source: EncodeError,
    },
    /// A thread panicked while it held the purge's cursor.
    #[error("the purge cursor was poisoned by a panic")]
    PurgePoisoned,
    /// A flush on the blocking pool did not finish: it panicked, or the
    /// runtime is shutting down.
    #[error("the store flush did not finish")]
    FlushTask(#[source] tokio::task::JoinError),
    /// The relay's configuration cannot work.
    #[error("invalid relay configuration: {0}")]
    InvalidConfig(&'static str),
    /// Building the relay's libp2p node failed.
    #[error("could not set up the relay node")]
    Setup(#[source] safemeet_net::Error),
    /// An address could not be listened on.
    #[error("cannot listen on {addr}")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// Why.
        #[source]
        source: TransportError<std::io::Error>,
    },
    /// The metrics address cannot be listened on.
    #[error("cannot serve metrics on {addr}")]
    Metrics {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// A refusal with `code`, told to the client with `message`.
    pub(crate) fn refused(code: MailboxError, message: impl Into<String>) -> Self {
        Self::Refused {
            code,
            message: message.into(),
        }
    }
}
