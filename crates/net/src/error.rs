//! The network layer's errors, and how to tell them apart.
//!
//! Every [`Error`] keeps what caused it as its `source`. Callers that must
//! decide what to do next (retry, deposit on a relay, give up) ask for its
//! [`ErrorKind`] rather than matching variants; the kinds are few and
//! stable, the variants may grow. A failed direct delivery or mailbox
//! request also says how it failed ([`DeliveryFailure`]).
//!
//! Messages name no peer and no peer address: errors are logged, and who
//! talks to whom is private. The peer is a field for code to read.

use std::fmt;
use std::io;

use libp2p::core::transport::TransportError;
use libp2p::gossipsub::{PublishError, SubscriptionError};
use libp2p::request_response::OutboundFailure;
use libp2p::swarm::DialError;
use libp2p::{Multiaddr, PeerId};

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
    /// A setting cannot be run with (a zero queue would panic or stall).
    #[error("invalid network setting: {0}")]
    InvalidConfig(&'static str),
    /// A configured address could not be listened on.
    #[error("could not listen on {addr}")]
    Listen {
        /// The address (this node's own, from its configuration).
        addr: Multiaddr,
        /// Why.
        #[source]
        source: TransportError<io::Error>,
    },
    /// A configured relay address does not say which peer the relay is.
    #[error("the relay address {addr} has no /p2p/<peer id> suffix")]
    RelayWithoutPeerId {
        /// The address, from this node's configuration.
        addr: Multiaddr,
    },
    /// An explicit dial could not start.
    #[error("could not dial a peer")]
    Dial(#[source] DialError),
    /// A frame or answer is larger than the protocol allows; nothing was
    /// sent.
    #[error("{len} bytes is larger than the {max}-byte limit")]
    TooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// No peer is subscribed to the room topic yet; nothing was published.
    #[error("no peer is subscribed to this room topic yet")]
    NoPeers,
    /// The frame was published before (same content, same topic).
    #[error("this frame was already published")]
    Duplicate,
    /// Joining a room topic failed (for instance, more rooms than
    /// [`Config::max_topics`](crate::Config::max_topics)).
    #[error("could not subscribe to a room topic")]
    Subscribe(#[source] SubscriptionError),
    /// Publishing on a room topic failed for another reason than
    /// [`NoPeers`](Self::NoPeers) or [`Duplicate`](Self::Duplicate).
    #[error("could not publish on a room topic")]
    Publish(#[source] PublishError),
    /// A direct delivery (`/safemeet/deliver/1`) got no answer.
    #[error("direct delivery failed: {failure}")]
    Delivery {
        /// The peer it was for.
        peer: PeerId,
        /// How it failed.
        failure: DeliveryFailure,
        /// libp2p's report.
        #[source]
        source: OutboundFailure,
    },
    /// A mailbox request (`/safemeet/mailbox/1`) to a relay got no answer.
    #[error("mailbox request failed: {failure}")]
    Mailbox {
        /// The relay it was for.
        relay: PeerId,
        /// How it failed.
        failure: DeliveryFailure,
        /// libp2p's report.
        #[source]
        source: OutboundFailure,
    },
    /// The answer came too late: the inbound delivery's reply slot has
    /// expired (the sender has given up waiting) or its peer is gone.
    #[error("the delivery can no longer be answered")]
    ReplyExpired,
    /// Too many deliveries to one peer are already waiting their turn.
    #[error("too many deliveries to one peer are waiting")]
    DeliveryQueueFull,
    /// The event loop did not answer a request in time (it is stuck, or
    /// far behind).
    #[error("the network did not answer in time")]
    NoAnswer,
    /// The event loop has stopped.
    #[error("the network has stopped")]
    Stopped,
    /// A device-link stream could not be opened or accepted.
    #[error("device link: {0}")]
    Link(String),
}

/// How a direct delivery or mailbox request failed, from libp2p's
/// [`OutboundFailure`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeliveryFailure {
    /// The peer could not be reached at all: no address was known, or
    /// every dial failed. The request was never sent.
    Unreachable,
    /// No answer came within
    /// [`Config::request_timeout`](crate::Config::request_timeout). The peer
    /// may have received and processed the request.
    Timeout,
    /// The connection closed before an answer came. The peer may have
    /// received and processed the request.
    ConnectionClosed,
    /// The peer closed the request without answering: it refused it (a
    /// malformed frame, too many deliveries waiting for an answer) or its
    /// application never answered.
    Refused,
    /// The peer does not speak the protocol.
    UnsupportedProtocol,
    /// The stream failed in another way (for instance, an answer longer
    /// than the protocol allows).
    Stream,
}

impl DeliveryFailure {
    /// How libp2p's failure is classified.
    pub fn of(failure: &OutboundFailure) -> Self {
        match failure {
            OutboundFailure::DialFailure => Self::Unreachable,
            OutboundFailure::Timeout => Self::Timeout,
            OutboundFailure::ConnectionClosed => Self::ConnectionClosed,
            OutboundFailure::UnsupportedProtocols => Self::UnsupportedProtocol,
            // The responder closes the stream without writing when it drops
            // the request: reading the answer's length hits the end.
            OutboundFailure::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof => Self::Refused,
            OutboundFailure::Io(_) => Self::Stream,
        }
    }

    /// The error kind this failure is.
    pub fn kind(self) -> ErrorKind {
        match self {
            Self::Unreachable => ErrorKind::Unreachable,
            Self::Timeout => ErrorKind::Timeout,
            Self::Refused => ErrorKind::Refused,
            Self::UnsupportedProtocol => ErrorKind::UnsupportedProtocol,
            Self::ConnectionClosed | Self::Stream => ErrorKind::Interrupted,
        }
    }
}

impl fmt::Display for DeliveryFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Unreachable => "the peer could not be reached",
            Self::Timeout => "no answer in time",
            Self::ConnectionClosed => "the connection closed before an answer",
            Self::Refused => "the peer closed the request unanswered",
            Self::UnsupportedProtocol => "the peer does not speak the protocol",
            Self::Stream => "the stream failed",
        })
    }
}

/// What kind of failure an [`Error`] is: what a caller decides on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The peer could not be reached at all (no address, every dial
    /// failed); nothing was sent. The one case where leaving a frame on the
    /// peer's relays instead makes sense.
    Unreachable,
    /// No answer in time; the peer may have processed the request. Also an
    /// answer given after its reply slot expired.
    Timeout,
    /// The peer closed the request without answering.
    Refused,
    /// The connection or stream broke before an answer; the peer may have
    /// processed the request.
    Interrupted,
    /// The peer does not speak the protocol.
    UnsupportedProtocol,
    /// No peer to publish to yet.
    NoPeers,
    /// Gossip could not take the message now (every peer's send queue is
    /// full); later may work.
    Busy,
    /// The caller's input was refused (too large, already published, a bad
    /// address in the configuration, a topic beyond the limit).
    InvalidInput,
    /// The network has stopped.
    Stopped,
    /// This node failed (setting up a transport, listening, gossip
    /// internals).
    Local,
}

impl Error {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Setup { .. } | Self::Listen { .. } => ErrorKind::Local,
            Self::InvalidConfig(_) => ErrorKind::InvalidInput,
            Self::RelayWithoutPeerId { .. }
            | Self::TooLarge { .. }
            | Self::Duplicate
            | Self::Subscribe(_) => ErrorKind::InvalidInput,
            Self::Dial(_) => ErrorKind::Unreachable,
            Self::NoPeers => ErrorKind::NoPeers,
            Self::Publish(PublishError::AllQueuesFull(_)) | Self::DeliveryQueueFull => {
                ErrorKind::Busy
            }
            Self::Publish(PublishError::MessageTooLarge) => ErrorKind::InvalidInput,
            Self::Publish(_) => ErrorKind::Local,
            Self::Delivery { failure, .. } | Self::Mailbox { failure, .. } => failure.kind(),
            Self::ReplyExpired | Self::NoAnswer => ErrorKind::Timeout,
            Self::Stopped => ErrorKind::Stopped,
            Self::Link(_) => ErrorKind::Unreachable,
        }
    }

    /// Whether the peer could not be reached at all (a dial failed, or no
    /// address was known): the request was never sent. Timeouts, refusals
    /// and broken connections are not: the peer was there.
    pub fn is_unreachable(&self) -> bool {
        self.kind() == ErrorKind::Unreachable
    }

    /// A failed direct delivery to `peer`.
    pub(crate) fn delivery(peer: PeerId, source: OutboundFailure) -> Self {
        Self::Delivery {
            peer,
            failure: DeliveryFailure::of(&source),
            source,
        }
    }

    /// A failed mailbox request to `relay`.
    pub(crate) fn mailbox(relay: PeerId, source: OutboundFailure) -> Self {
        Self::Mailbox {
            relay,
            failure: DeliveryFailure::of(&source),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_dial_failure_is_unreachable() {
        let peer = PeerId::random();
        let eof = || io::Error::from(io::ErrorKind::UnexpectedEof);
        let cases = [
            (OutboundFailure::DialFailure, ErrorKind::Unreachable),
            (OutboundFailure::Timeout, ErrorKind::Timeout),
            (OutboundFailure::ConnectionClosed, ErrorKind::Interrupted),
            (
                OutboundFailure::UnsupportedProtocols,
                ErrorKind::UnsupportedProtocol,
            ),
            (OutboundFailure::Io(eof()), ErrorKind::Refused),
            (
                OutboundFailure::Io(io::Error::from(io::ErrorKind::InvalidData)),
                ErrorKind::Interrupted,
            ),
        ];
        for (failure, kind) in cases {
            let text = failure.to_string();
            let delivery = Error::delivery(peer, failure);
            assert_eq!(delivery.kind(), kind, "{text}");
            assert_eq!(delivery.is_unreachable(), kind == ErrorKind::Unreachable);
        }
        let mailbox = Error::mailbox(peer, OutboundFailure::DialFailure);
        assert!(mailbox.is_unreachable());
        assert!(!Error::Stopped.is_unreachable());
    }

    #[test]
    fn the_cause_is_kept_and_no_peer_is_named() {
        let peer = PeerId::random();
        let error = Error::delivery(peer, OutboundFailure::Timeout);
        let source = std::error::Error::source(&error).map(ToString::to_string);
        assert_eq!(source, Some(OutboundFailure::Timeout.to_string()));
        assert!(!error.to_string().contains(&peer.to_string()));
    }
}
