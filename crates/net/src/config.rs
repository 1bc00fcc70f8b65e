//! Settings of a node's network layer, each with a default suited to chat.

use std::num::NonZeroUsize;
use std::time::Duration;

use libp2p::Multiaddr;

use crate::{ConnectionLimits, CustomTransport};

/// Network settings. [`Config::default`] is what the daemon runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Addresses to listen on. Default: every IPv4 interface, a free port,
    /// TCP and QUIC. `/memory/N` listens on the in-process memory transport
    /// (tests and simulations: no sockets, same Noise and yamux).
    pub listen: Vec<Multiaddr>,
    /// Peers to dial at start (with a `/p2p/<peer id>` suffix); they also
    /// seed the Kademlia routing table.
    pub bootstrap: Vec<Multiaddr>,
    /// Relays (with `/p2p/<peer id>`) to be reachable through: the node
    /// holds a circuit reservation on each and lists the circuit address
    /// among its listen addresses. Default: none.
    pub relays: Vec<Multiaddr>,
    /// Discover peers on the local network with mDNS (works with no
    /// internet). Default on.
    pub mdns: bool,
    /// Gossipsub heartbeat (and its first delay). Default 1 s; tests use less.
    pub heartbeat: Duration,
    /// A connection with no traffic closes after this. Default 5 minutes:
    /// chat is bursty, and reconnecting for each message costs a handshake.
    pub idle_timeout: Duration,
    /// Most established connections in all, the share of them kept for
    /// this node's own dials, and the most inbound connections from one
    /// IP address and from one /24 or /48 prefix. Default
    /// [`ConnectionLimits::DAEMON`]: 512 in all, 128 kept for dials, 16
    /// per address, 64 per prefix.
    pub connections: ConnectionLimits,
    /// Most established connections to one peer. Default 2 (one per transport).
    pub max_connections_per_peer: u32,
    /// Most connections still in their handshake, each way. Default 64.
    pub max_pending: u32,
    /// How long a direct delivery or mailbox request may take before it
    /// fails, and how long an inbound delivery waits for the application's
    /// answer before it is refused (the sender, with the same default, has
    /// given up by then). Default 10 s.
    pub request_timeout: Duration,
    /// Most inbound request streams (deliveries) one connection may have
    /// open at once; more are dropped unread. Default 16: a peer's burst
    /// of deliveries rarely has more in flight, and 16 stalled streams
    /// cost little. This node's own deliveries are not counted.
    pub max_streams_per_connection: usize,
    /// How long an inbound request may take to arrive whole; a stalled
    /// stream is dropped then. Default 5 s (see
    /// [`INBOUND_READ_TIMEOUT`](crate::INBOUND_READ_TIMEOUT)).
    pub inbound_read_timeout: Duration,
    /// Most gossip topics (rooms) one peer may be subscribed to. A peer
    /// that announces more, or any topic that is not a room topic's exact
    /// form, has it refused and is disconnected. Default 1024: every room
    /// a device is in is announced to each of its gossip peers, and a
    /// device in more than a thousand rooms is not a chat user (libp2p's
    /// default of 100 would cut off a busy one). Each held topic costs a
    /// few hundred bytes.
    pub max_topics: usize,
    /// Commands the handle may queue before callers wait. Default 256.
    pub command_queue: usize,
    /// Events queued for the application before new ones are dropped (and
    /// counted). Default 1024.
    pub event_queue: usize,
    /// Inbound deliveries waiting for the application's answer at once;
    /// beyond this they are refused. Each waits at most
    /// [`request_timeout`](Self::request_timeout), so an application that
    /// stops answering holds at most this many for that long. Default 1024:
    /// a full event queue's worth.
    pub max_pending_replies: usize,
    /// Most peers in each Kademlia bucket (the DHT's `k`). Default 20, the
    /// standard value. libp2p-kad allocates all 256 buckets at this size
    /// when the node starts, filled or not: about 6 KiB each, 1.6 MiB of
    /// heap per node at 20. A node that only ever knows a handful of DHT
    /// peers (the network simulator's, where no node serves the DHT) has
    /// the same routing table with a bucket as large as that handful.
    pub kad_bucket_size: NonZeroUsize,
    /// A transport to use instead of TCP, QUIC and the memory transport,
    /// still under Noise + yamux (the network simulator's modelled links).
    /// Default `None`: the production transports.
    pub transport: Option<CustomTransport>,
}

impl Default for Config {
    fn default() -> Self {
        let listen = ["/ip4/0.0.0.0/tcp/0", "/ip4/0.0.0.0/udp/0/quic-v1"]
            .iter()
            .filter_map(|a| a.parse().ok())
            .collect();
        Self {
            listen,
            bootstrap: Vec::new(),
            relays: Vec::new(),
            mdns: true,
            heartbeat: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(300),
            connections: ConnectionLimits::DAEMON,
            max_connections_per_peer: 2,
            max_pending: 64,
            request_timeout: Duration::from_secs(10),
            max_streams_per_connection: 16,
            inbound_read_timeout: crate::INBOUND_READ_TIMEOUT,
            max_topics: 1024,
            command_queue: 256,
            event_queue: 1024,
            max_pending_replies: 1024,
            kad_bucket_size: libp2p::kad::K_VALUE,
            transport: None,
        }
    }
}

impl Config {
    /// Checks that a node can run with these settings: every queue and
    /// limit above zero (a zero-sized channel panics, a zero limit stalls),
    /// every period above zero.
    pub fn validate(&self) -> Result<(), crate::Error> {
        let checks = [
            (self.command_queue == 0, "command_queue must be at least 1"),
            (self.event_queue == 0, "event_queue must be at least 1"),
            (self.max_topics == 0, "max_topics must be at least 1"),
            (
                self.max_pending_replies == 0,
                "max_pending_replies must be at least 1",
            ),
            (
                self.max_streams_per_connection == 0,
                "max_streams_per_connection must be at least 1",
            ),
            (
                self.inbound_read_timeout.is_zero(),
                "inbound_read_timeout must be above zero",
            ),
            (
                self.max_connections_per_peer == 0,
                "max_connections_per_peer must be at least 1",
            ),
            (self.max_pending == 0, "max_pending must be at least 1"),
            (self.heartbeat.is_zero(), "heartbeat must be above zero"),
            (
                self.request_timeout.is_zero(),
                "request_timeout must be above zero",
            ),
        ];
        self.connections
            .validate()
            .map_err(crate::Error::InvalidConfig)?;
        match checks.into_iter().find(|(bad, _)| *bad) {
            Some((_, why)) => Err(crate::Error::InvalidConfig(why)),
            None => Ok(()),
        }
    }

    /// Settings for tests on one machine: loopback TCP only, no mDNS, a fast
    /// gossip heartbeat.
    pub fn loopback() -> Self {
        Self {
            listen: "/ip4/127.0.0.1/tcp/0".parse().into_iter().collect(),
            mdns: false,
            heartbeat: Duration::from_millis(100),
            ..Self::default()
        }
    }
}
