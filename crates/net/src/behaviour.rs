//! The composed libp2p behaviour and how each part is configured.

use libp2p::gossipsub::{self, IdentityTransform, MessageAuthenticity, MessageId, ValidationMode};
use libp2p::identity::Keypair;
use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{StreamProtocol, connection_limits, identify, kad, mdns, ping, request_response};
use safemeet_proto::limits::MAX_ENVELOPE_BYTES;

use crate::codec::{DELIVER_PROTOCOL, FrameCodec, MAILBOX_PROTOCOL, MailboxCodec, StreamRefusals};
use crate::gate::GossipGate;
use crate::ip_limits::PerIpLimits;
use crate::subscriptions::{RoomTopicFilter, Subscriptions};
use crate::{Config, Error};

/// Kademlia protocol name: our own, so we never join another network's DHT.
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/safemeet/kad/1");
/// Identify protocol version string.
pub const IDENTIFY_PROTOCOL: &str = "/safemeet/id/1";

pub(crate) type Gossipsub = gossipsub::Behaviour<IdentityTransform, RoomTopicFilter>;

/// Everything a SafeMeet node speaks.
#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    /// Global and per-peer limits, and the cap on inbound connections
    /// that keeps a share for this node's own dials.
    pub(crate) limits: connection_limits::Behaviour,
    /// Limits per remote address and prefix.
    pub(crate) per_ip: PerIpLimits,
    /// Peers blocked for sending junk (see `junk`).
    pub(crate) blocked: libp2p::allow_block_list::Behaviour<libp2p::allow_block_list::BlockedPeers>,
    pub(crate) identify: identify::Behaviour,
    pub(crate) ping: ping::Behaviour,
    pub(crate) kad: kad::Behaviour<kad::store::MemoryStore>,
    /// Gossipsub, only on connections to allowed peers (see `gate`).
    pub(crate) gossipsub: GossipGate,
    /// This node's own deliveries (outbound only, so their streams do not
    /// count against the inbound cap).
    pub(crate) deliver: request_response::Behaviour<FrameCodec>,
    /// Deliveries to this node (inbound only): at most
    /// [`Config::max_streams_per_connection`] read at once per connection.
    pub(crate) deliver_in: request_response::Behaviour<FrameCodec>,
    /// Relay mailboxes, as a client only: deposits for offline devices,
    /// fetching and acknowledging this device's own.
    pub(crate) mailbox: request_response::Behaviour<MailboxCodec>,
    pub(crate) mdns: Toggle<mdns::tokio::Behaviour>,
    /// Circuits through relays (`Config::relays`).
    pub(crate) relay: libp2p::relay::client::Behaviour,
    /// Direct connections upgraded from relayed ones (hole punching); on
    /// when the node uses relays.
    pub(crate) dcutr: Toggle<libp2p::dcutr::Behaviour>,
    /// Asks peers whether this node's addresses are reachable (AutoNAT
    /// v2); on when the node uses relays (behind NAT, relays are its way in).
    pub(crate) autonat: Toggle<libp2p::autonat::v2::client::Behaviour>,
    /// Generic streams: the device-link protocol (see `link`).
    pub(crate) stream: libp2p_stream::Behaviour,
}

/// Gossip message ids are a hash of topic and content. Anonymous gossip has
/// no source or sequence number, and the ciphertext is unique per message
/// anyway (a Megolm message carries its own index and signature).
fn message_id(message: &gossipsub::Message) -> MessageId {
    let mut hasher = blake3::Hasher::new_derive_key("safemeet/v1/gossip-message-id");
    hasher.update(message.topic.as_str().as_bytes());
    hasher.update(&message.data);
    MessageId::from(hasher.finalize().as_bytes()[..20].to_vec())
}

/// Most of this node's own deliveries (and, apart, mailbox requests) in
/// flight at once on one connection. 256: the engine keeps at most 64
/// deliveries in flight in all, and an application driving the network
/// directly may keep more; past this a delivery fails and is retried.
const MAX_OUTBOUND_STREAMS: usize = 256;

/// The smallest gossip mesh a node's heartbeat keeps per room topic
/// (gossipsub's `mesh_n_low`).
pub const MESH_N_LOW: usize = 2;

/// A SafeMeet node's gossipsub configuration. Anonymous gossip: Megolm
/// already authenticates every message, and a signed gossip message would
/// tie each ciphertext to its origin peer. With `validate`, messages are
/// forwarded only after the application accepts them (the node; the
/// simulator's raw-gossipsub baseline has no application and forwards at
/// once). No flood publishing: an author sends its first copy to its mesh
/// (topped up from the room's other gossip peers to `mesh_n`), not to
/// every peer of the topic at once, so the first copy does not single the
/// author out to all of them. Small meshes suit gossip rooms, whose
/// members' misses the engine's direct fallback covers.
pub fn gossip_config(
    heartbeat: std::time::Duration,
    validate: bool,
) -> Result<gossipsub::Config, Error> {
    let mut builder = gossipsub::ConfigBuilder::default();
    builder
        .validation_mode(ValidationMode::Anonymous)
        .message_id_fn(message_id)
        .heartbeat_interval(heartbeat)
        .heartbeat_initial_delay(heartbeat)
        .max_transmit_size(MAX_ENVELOPE_BYTES + 1024)
        .mesh_n(4)
        .mesh_n_low(MESH_N_LOW)
        .mesh_n_high(8)
        .mesh_outbound_min(1)
        .flood_publish(false);
    if validate {
        builder.validate_messages();
    }
    builder.build().map_err(|e| Error::Setup {
        part: "gossipsub configuration",
        source: e.into(),
    })
}

impl Behaviour {
    /// The node's behaviour; its codecs count the inbound streams they
    /// refuse in `streams`.
    pub(crate) fn new(
        key: &Keypair,
        relay: libp2p::relay::client::Behaviour,
        config: &Config,
        streams: std::sync::Arc<StreamRefusals>,
    ) -> Result<Self, Error> {
        let local = key.public().to_peer_id();
        let gossip_config = gossip_config(config.heartbeat, true)?;
        let subscriptions = Subscriptions::new(config.max_topics);
        let mut gossipsub = Gossipsub::new_with_subscription_filter(
            MessageAuthenticity::Anonymous,
            gossip_config,
            RoomTopicFilter(subscriptions.clone()),
        )
        .map_err(|e| Error::Setup {
            part: "gossipsub",
            source: e.into(),
        })?;
        gossipsub
            .with_peer_score(crate::scoring::params(), crate::scoring::thresholds())
            .map_err(|e| Error::Setup {
                part: "gossipsub peer scoring",
                source: e.into(),
            })?;

        let mut kad_config = kad::Config::new(KAD_PROTOCOL);
        kad_config.set_kbucket_size(config.kad_bucket_size);
        let kad =
            kad::Behaviour::with_config(local, kad::store::MemoryStore::new(local), kad_config);
        let identify = identify::Behaviour::new(
            identify::Config::new(IDENTIFY_PROTOCOL.to_owned(), key.public())
                .with_push_listen_addr_updates(true),
        );
        // libp2p caps a connection's inbound and outbound streams of one
        // behaviour together: two behaviours on the one protocol keep this
        // node's own deliveries out of the inbound cap.
        let deliver = request_response::Behaviour::with_codec(
            FrameCodec::new(config.inbound_read_timeout, streams.clone()),
            [(
                DELIVER_PROTOCOL,
                request_response::ProtocolSupport::Outbound,
            )],
            request_response::Config::default()
                .with_request_timeout(config.request_timeout)
                .with_max_concurrent_streams(MAX_OUTBOUND_STREAMS),
        );
        let deliver_in = request_response::Behaviour::with_codec(
            FrameCodec::new(config.inbound_read_timeout, streams.clone()),
            [(DELIVER_PROTOCOL, request_response::ProtocolSupport::Inbound)],
            request_response::Config::default()
                .with_request_timeout(config.request_timeout)
                .with_max_concurrent_streams(config.max_streams_per_connection),
        );
        let mailbox = request_response::Behaviour::with_codec(
            MailboxCodec::new(config.inbound_read_timeout, streams),
            [(
                MAILBOX_PROTOCOL,
                request_response::ProtocolSupport::Outbound,
            )],
            request_response::Config::default()
                .with_request_timeout(config.request_timeout)
                .with_max_concurrent_streams(MAX_OUTBOUND_STREAMS),
        );
        let mdns = if config.mdns {
            Some(
                mdns::tokio::Behaviour::new(mdns::Config::default(), local).map_err(|e| {
                    Error::Setup {
                        part: "mDNS",
                        source: e.into(),
                    }
                })?,
            )
        } else {
            None
        };
        let limits = connection_limits::Behaviour::new(
            connection_limits::ConnectionLimits::default()
                .with_max_established(Some(config.connections.max_connections))
                .with_max_established_incoming(Some(config.connections.max_inbound()))
                .with_max_established_per_peer(Some(config.max_connections_per_peer))
                .with_max_pending_incoming(Some(config.max_pending))
                .with_max_pending_outgoing(Some(config.max_pending)),
        );
        Ok(Self {
            limits,
            per_ip: PerIpLimits::new(config.connections),
            blocked: Default::default(),
            identify,
            ping: ping::Behaviour::default(),
            kad,
            gossipsub: GossipGate::new(gossipsub, subscriptions),
            deliver,
            deliver_in,
            mailbox,
            mdns: mdns.into(),
            relay,
            dcutr: (!config.relays.is_empty())
                .then(|| libp2p::dcutr::Behaviour::new(local))
                .into(),
            autonat: (!config.relays.is_empty())
                .then(libp2p::autonat::v2::client::Behaviour::default)
                .into(),
            stream: libp2p_stream::Behaviour::new(),
        })
    }
}
