//! The cloneable handle the application drives the network with, and what
//! the network tells the application back.
//!
//! Each [`Handle`] method sends a [`Command`] over a bounded channel to the
//! event loop (callers wait when it is full) and, when it has an answer,
//! waits for it on a one-shot channel. Events flow the other way on the
//! bounded receiver that [`spawn`](crate::spawn) returns; a direct delivery
//! comes with the [`ReplySlot`] that answers it. Stopping goes through a
//! cancellation token, not the command queue, so a full queue never delays
//! it.

use libp2p::gossipsub::MessageId;
use libp2p::{Multiaddr, PeerId};
use safemeet_proto::limits::MAX_ENVELOPE_BYTES;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::{Error, ReplySlot, RoomTopic};

/// How long [`Handle::allow_gossip`] waits at most for the gossip
/// connections of the peers it leaves out to close.
pub(crate) const LEAVING_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// How long a media stream's QUIC addresses are dialled alone before the
/// others join them (see [`Handle::open_media_stream`]).
pub const QUIC_HEAD_START: std::time::Duration = std::time::Duration::from_secs(1);

/// The application's verdict on a gossip message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Valid: forward it to the mesh.
    Accept,
    /// Invalid: drop it and penalise the peer that sent it.
    Reject,
    /// Not for us or not now: drop it without penalty.
    Ignore,
}

/// What the network tells the application.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// A gossip frame on a subscribed room topic, well formed; answer with
    /// [`Handle::report`] before it is forwarded.
    Gossip {
        /// The room topic.
        topic: RoomTopic,
        /// The padded frame.
        frame: Vec<u8>,
        /// Its gossip id.
        id: MessageId,
        /// The peer that passed it on (not necessarily its origin).
        via: PeerId,
    },
    /// A direct delivery, well formed; answer through `reply` (see
    /// [`ReplySlot`]: dropped or left unanswered, the delivery is refused).
    Delivery {
        /// The sending peer.
        peer: PeerId,
        /// The padded frame.
        frame: Vec<u8>,
        /// Where the answer goes.
        reply: ReplySlot,
    },
    /// A new listen address.
    Listening(Multiaddr),
    /// The first connection to a peer opened.
    Connected(PeerId),
    /// The last connection to a peer closed.
    Disconnected(PeerId),
}

/// How the node stands with the network, for a person checking it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetStatus {
    /// Where it listens.
    pub listen: Vec<Multiaddr>,
    /// Addresses others were seen to reach it at (confirmed by AutoNAT, or
    /// bound on a public address).
    pub external: Vec<Multiaddr>,
    /// Peers it has a connection with.
    pub connected_peers: usize,
    /// Its relay circuits.
    pub relays: Vec<crate::relay_listeners::RelayStatus>,
    /// The latest AutoNAT tests: the address tested, and whether a server
    /// reached it (newest last; AutoNAT runs when the node uses relays).
    pub autonat: Vec<(Multiaddr, bool)>,
}

/// A request to the event loop.
pub(crate) enum Command {
    ListenAddrs(oneshot::Sender<Vec<Multiaddr>>),
    Status(oneshot::Sender<NetStatus>),
    Dial(Multiaddr, oneshot::Sender<Result<(), Error>>),
    Connect(PeerId, Vec<Multiaddr>, oneshot::Sender<Result<(), Error>>),
    Paths(PeerId, oneshot::Sender<Vec<crate::LinkPath>>),
    Subscribe(RoomTopic, oneshot::Sender<Result<(), Error>>),
    Unsubscribe(RoomTopic, oneshot::Sender<()>),
    Publish(RoomTopic, Vec<u8>, oneshot::Sender<Result<(), Error>>),
    PublishMany(
        Vec<(RoomTopic, Vec<u8>)>,
        oneshot::Sender<Vec<Result<(), Error>>>,
    ),
    Report(MessageId, PeerId, Verdict),
    ReportMany(Vec<(MessageId, PeerId, Verdict)>),
    Deliver(
        PeerId,
        Vec<Multiaddr>,
        Vec<u8>,
        oneshot::Sender<Result<Vec<u8>, Error>>,
    ),
    Mailbox(
        PeerId,
        Vec<Multiaddr>,
        Vec<u8>,
        oneshot::Sender<Result<Vec<u8>, Error>>,
    ),
    ConnectedPeers(oneshot::Sender<Vec<PeerId>>),
    AllowGossip(Vec<PeerId>, oneshot::Sender<()>),
    GossipPeers(oneshot::Sender<Vec<PeerId>>),
    TopicCount(oneshot::Sender<usize>),
    MeshPeers(RoomTopic, oneshot::Sender<usize>),
    Refusals(oneshot::Sender<crate::RefusalCounts>),
    PeerScore(PeerId, oneshot::Sender<Option<f64>>),
    Junk(PeerId),
}

/// A cloneable handle to the network event loop.
///
/// The loop runs until [`shutdown`](Self::shutdown) or until every clone
/// of the handle is dropped, whichever comes first; either way it stops the
/// same way.
#[derive(Clone)]
pub struct Handle {
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) local: PeerId,
    /// Opens and accepts generic streams (the device link).
    pub(crate) streams_control: libp2p_stream::Control,
    /// Cancelled to stop the loop.
    pub(crate) shutdown: CancellationToken,
    /// Cancelled by the loop when it has stopped.
    pub(crate) stopped: CancellationToken,
    /// The longest wait for the loop's answer to a request.
    pub(crate) ask_timeout: std::time::Duration,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("peer_id", &self.local)
            .finish_non_exhaustive()
    }
}

impl Handle {
    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.local
    }

    /// Accepts incoming device-link streams
    /// ([`LINK_PROTOCOL`](crate::LINK_PROTOCOL)) until the returned
    /// stream is dropped; while nobody accepts, such streams are refused.
    /// Only one caller accepts at a time.
    pub fn link_streams(&self) -> Result<libp2p_stream::IncomingStreams, Error> {
        self.accept_streams(crate::LINK_PROTOCOL)
    }

    /// Accepts incoming file streams ([`BLOB_PROTOCOL`](crate::BLOB_PROTOCOL))
    /// until the returned stream is dropped; while nobody accepts, such
    /// streams are refused. Only one caller accepts at a time.
    pub fn blob_streams(&self) -> Result<libp2p_stream::IncomingStreams, Error> {
        self.accept_streams(crate::BLOB_PROTOCOL)
    }

    /// Opens a file stream to `peer`, dialling `addrs` first when it is
    /// not connected (a stream is opened only over a connection); gives
    /// up after `ask_timeout`, so a stalled connection never holds the
    /// caller.
    pub async fn open_blob_stream(
        &self,
        peer: PeerId,
        addrs: &[Multiaddr],
    ) -> Result<libp2p::Stream, Error> {
        self.open_stream(crate::BLOB_PROTOCOL, peer, addrs).await
    }

    /// Accepts incoming media streams
    /// ([`MEDIA_PROTOCOL`](crate::MEDIA_PROTOCOL)) until the returned
    /// stream is dropped; while nobody accepts, such streams are refused.
    /// Only one caller accepts at a time.
    pub fn media_streams(&self) -> Result<libp2p_stream::IncomingStreams, Error> {
        self.accept_streams(crate::MEDIA_PROTOCOL)
    }

    /// Opens a media stream to `peer`, as [`open_blob_stream`](Self::open_blob_stream)
    /// opens a file stream, preferring QUIC: when not connected yet, its
    /// QUIC addresses are dialled alone for [`QUIC_HEAD_START`] before the
    /// others join them (over QUIC a lost packet holds up only its own
    /// stream, not the call behind a file). A connection already up is
    /// used as it is: libp2p-stream picks among a peer's connections, so
    /// a second one would not reliably carry the call.
    pub async fn open_media_stream(
        &self,
        peer: PeerId,
        addrs: &[Multiaddr],
    ) -> Result<libp2p::Stream, Error> {
        let quic: Vec<Multiaddr> = addrs
            .iter()
            .filter(|a| crate::addr::is_quic(a))
            .cloned()
            .collect();
        if !quic.is_empty() && quic.len() < addrs.len() {
            // Whatever comes of it, the stream is opened below with every
            // address (a QUIC dial still under way goes on, and may win).
            let _ = tokio::time::timeout(
                QUIC_HEAD_START,
                self.ask(|tx| Command::Connect(peer, quic, tx)),
            )
            .await;
        }
        self.open_stream(crate::MEDIA_PROTOCOL, peer, addrs).await
    }

    fn accept_streams(
        &self,
        protocol: libp2p::StreamProtocol,
    ) -> Result<libp2p_stream::IncomingStreams, Error> {
        self.streams_control
            .clone()
            .accept(protocol)
            .map_err(|e| Error::Link(e.to_string()))
    }

    async fn open_stream(
        &self,
        protocol: libp2p::StreamProtocol,
        peer: PeerId,
        addrs: &[Multiaddr],
    ) -> Result<libp2p::Stream, Error> {
        tokio::time::timeout(
            self.ask_timeout,
            self.open_stream_now(protocol, peer, addrs),
        )
        .await
        .map_err(|_| Error::NoAnswer)?
    }

    async fn open_stream_now(
        &self,
        protocol: libp2p::StreamProtocol,
        peer: PeerId,
        addrs: &[Multiaddr],
    ) -> Result<libp2p::Stream, Error> {
        // Connected first, with the caller's addresses: the stream
        // behaviour's own dial knows none of them, and can wait for ever
        // (see `connect`).
        if !addrs.is_empty() {
            self.ask(|tx| Command::Connect(peer, addrs.to_vec(), tx))
                .await??;
        }
        self.streams_control
            .clone()
            .open_stream(peer, protocol)
            .await
            .map_err(|e| Error::Link(e.to_string()))
    }

    /// Sends a command and waits for its answer, at most `ask_timeout`
    /// (the queue's back-pressure included).
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, Error> {
        let (tx, rx) = oneshot::channel();
        let asked = async {
            self.commands
                .send(make(tx))
                .await
                .map_err(|_| Error::Stopped)?;
            rx.await.map_err(|_| Error::Stopped)
        };
        tokio::time::timeout(self.ask_timeout, asked)
            .await
            .map_err(|_| Error::NoAnswer)?
    }

    /// How this node reaches `peer` now: its connections, direct ones
    /// first, each with the relay it runs through and that relay's limits.
    pub async fn paths(&self, peer: PeerId) -> Result<Vec<crate::LinkPath>, Error> {
        self.ask(|tx| Command::Paths(peer, tx)).await
    }

    /// The addresses the node listens on.
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, Error> {
        self.ask(Command::ListenAddrs).await
    }

    /// How the node stands with the network: see [`NetStatus`].
    pub async fn status(&self) -> Result<NetStatus, Error> {
        self.ask(Command::Status).await
    }

    /// Dials an address (with or without `/p2p/<peer id>`).
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), Error> {
        self.ask(|tx| Command::Dial(addr, tx)).await?
    }

    /// Joins a room's gossip topic.
    pub async fn subscribe(&self, topic: RoomTopic) -> Result<(), Error> {
        self.ask(|tx| Command::Subscribe(topic, tx)).await?
    }

    /// Leaves a room's gossip topic.
    pub async fn unsubscribe(&self, topic: RoomTopic) -> Result<(), Error> {
        self.ask(|tx| Command::Unsubscribe(topic, tx)).await
    }

    /// Publishes a padded frame on a room topic. `Ok` means it was handed to
    /// gossipsub, not that anyone received it.
    pub async fn publish(&self, topic: RoomTopic, frame: Vec<u8>) -> Result<(), Error> {
        if frame.len() > MAX_ENVELOPE_BYTES {
            return Err(Error::TooLarge {
                len: frame.len(),
                max: MAX_ENVELOPE_BYTES,
            });
        }
        self.ask(|tx| Command::Publish(topic, frame, tx)).await?
    }

    /// Publishes several frames in one go; one result per frame, in order.
    pub async fn publish_many(
        &self,
        frames: Vec<(RoomTopic, Vec<u8>)>,
    ) -> Result<Vec<Result<(), Error>>, Error> {
        self.ask(|tx| Command::PublishMany(frames, tx)).await
    }

    /// [`report`](Self::report) for several messages in one go.
    pub async fn report_many(
        &self,
        verdicts: Vec<(MessageId, PeerId, Verdict)>,
    ) -> Result<(), Error> {
        self.commands
            .send(Command::ReportMany(verdicts))
            .await
            .map_err(|_| Error::Stopped)
    }

    /// Tells gossipsub whether to forward a received message.
    pub async fn report(&self, id: MessageId, via: PeerId, verdict: Verdict) -> Result<(), Error> {
        self.commands
            .send(Command::Report(id, via, verdict))
            .await
            .map_err(|_| Error::Stopped)
    }

    /// Reports that `peer` delivered junk directly: what no honest device
    /// sends. Past a few in a minute the peer is disconnected and its
    /// connections refused for a while (see the `junk` module).
    pub async fn report_junk(&self, peer: PeerId) -> Result<(), Error> {
        self.commands
            .send(Command::Junk(peer))
            .await
            .map_err(|_| Error::Stopped)
    }

    /// Delivers a padded frame directly to `peer` (dialing `addrs` if needed)
    /// and returns its reply.
    pub async fn deliver(
        &self,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        frame: Vec<u8>,
    ) -> Result<Vec<u8>, Error> {
        if frame.len() > MAX_ENVELOPE_BYTES {
            return Err(Error::TooLarge {
                len: frame.len(),
                max: MAX_ENVELOPE_BYTES,
            });
        }
        self.ask(|tx| Command::Deliver(peer, addrs, frame, tx))
            .await?
    }

    /// Sends an encoded `safemeet_proto::mailbox::MailboxRequest` to the
    /// relay `relay` (dialing `addrs` if needed) and returns its encoded
    /// answer (at most `safemeet_proto::mailbox::MAX_RESPONSE_BYTES`).
    pub async fn mailbox(
        &self,
        relay: PeerId,
        addrs: Vec<Multiaddr>,
        request: Vec<u8>,
    ) -> Result<Vec<u8>, Error> {
        if request.len() > safemeet_proto::mailbox::MAX_REQUEST_BYTES {
            return Err(Error::TooLarge {
                len: request.len(),
                max: safemeet_proto::mailbox::MAX_REQUEST_BYTES,
            });
        }
        self.ask(|tx| Command::Mailbox(relay, addrs, request, tx))
            .await?
    }

    /// Peers with an open connection.
    pub async fn connected_peers(&self) -> Result<Vec<PeerId>, Error> {
        self.ask(Command::ConnectedPeers).await
    }

    /// Replaces the set of peers this node gossips with (at most
    /// [`MAX_GOSSIP_PEERS`](crate::MAX_GOSSIP_PEERS)): the member devices
    /// of its gossip rooms. A connection to any other peer gets no
    /// gossipsub at all: the peer learns no topic and gets no message.
    /// Connections whose handler no longer fits the set are closed (see
    /// the gate in the crate's docs); deliveries in flight on them fail
    /// and are for the caller to retry. It returns once the gossip
    /// connections of the peers left out have closed (or after 2 s): a
    /// topic subscribed to after it is not announced to them.
    pub async fn allow_gossip(&self, peers: Vec<PeerId>) -> Result<(), Error> {
        let asked = self.ask(|tx| Command::AllowGossip(peers, tx));
        // A connection slow to close does not hold the caller for long;
        // the gate has closed it to gossip already.
        tokio::time::timeout(LEAVING_WAIT, asked)
            .await
            .unwrap_or(Ok(()))
    }

    /// The peers this node gossips with now (the set last given to
    /// [`allow_gossip`](Self::allow_gossip), as the gate holds it), in no
    /// particular order.
    pub async fn gossip_peers(&self) -> Result<Vec<PeerId>, Error> {
        self.ask(Command::GossipPeers).await
    }

    /// How many room topics this node is subscribed to.
    pub async fn topic_count(&self) -> Result<usize, Error> {
        self.ask(Command::TopicCount).await
    }

    /// How many peers this node's gossip mesh for a room topic holds (the
    /// peers it forwards the room's messages to and hears them from; 0 when
    /// not subscribed).
    pub async fn mesh_peers(&self, topic: RoomTopic) -> Result<usize, Error> {
        self.ask(|tx| Command::MeshPeers(topic, tx)).await
    }

    /// What the node refused since it started, by kind (also reported to
    /// the operator in aggregate once a minute; see [`RefusalLog`](crate::RefusalLog)).
    pub async fn refusals(&self) -> Result<crate::RefusalCounts, Error> {
        self.ask(Command::Refusals).await
    }

    /// A gossip peer's score (gossipsub v1.1 scoring), if it has one:
    /// below [`GRAYLIST_THRESHOLD`](crate::GRAYLIST_THRESHOLD) it is
    /// graylisted.
    pub async fn peer_score(&self, peer: PeerId) -> Result<Option<f64>, Error> {
        self.ask(|tx| Command::PeerScore(peer, tx)).await
    }

    /// Stops the event loop and waits until it has stopped: requests in
    /// flight fail with [`Error::Stopped`], open reply slots close, and
    /// every connection and listener closes. Calling it again, or on a
    /// stopped network, returns at once. Fails only when the loop does not stop in time.
    pub async fn shutdown(&self) -> Result<(), Error> {
        self.shutdown.cancel();
        tokio::time::timeout(self.ask_timeout, self.stopped.cancelled())
            .await
            .map_err(|_| Error::NoAnswer)
    }

    /// Waits until the event loop has stopped (after [`shutdown`](Self::shutdown),
    /// or when it ended on its own).
    pub async fn stopped(&self) {
        self.stopped.cancelled().await;
    }

    /// Whether the event loop has stopped.
    pub fn is_stopped(&self) -> bool {
        self.stopped.is_cancelled()
    }
}
