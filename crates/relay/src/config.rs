//! What an operator sets: addresses and limits.

use std::time::Duration;

use libp2p::Multiaddr;
use safemeet_net::ConnectionLimits;

/// Limits on what a relay stores. Defaults suit a relay for friends on a
/// small machine; a public relay sets its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest envelope accepted, in bytes. Default: the protocol's largest
    /// (64 KiB).
    pub max_envelope_bytes: usize,
    /// How long an envelope is kept unless fetched and acknowledged sooner
    /// (the operator's maximum retention). Default 14 days.
    pub retention: Duration,
    /// Most envelopes one mailbox holds. Default 10 000.
    pub mailbox_max_envelopes: u64,
    /// Most bytes one mailbox holds, counted as on disk (see
    /// [`crate::store::disk_cost`]). Default 64 MiB.
    pub mailbox_max_bytes: u64,
    /// Most envelopes the relay holds. Default 2 000 000.
    pub max_envelopes: u64,
    /// Most bytes the relay holds, counted as on disk (see
    /// [`crate::store::disk_cost`]). Default 8 GiB.
    pub max_bytes: u64,
    /// Whether owners may open mailboxes the relay does not hold yet.
    /// Default yes; an operator winding a relay down turns it off.
    pub accept_new_mailboxes: bool,
    /// Most bytes (as on disk) one mailbox takes per UTC day. Default
    /// 32 MiB: half of what it may hold, so one day of junk from a holder
    /// of the credential cannot fill it, while a day of honest mail fits
    /// (about 6 000 deposits of a 2 KiB frame, at 5.2 KiB each as on
    /// disk).
    pub mailbox_daily_bytes: u64,
    /// A mailbox opened but never fetched is forgotten, with what it
    /// holds, this long after it was last opened. Default 8 days: owners
    /// open the next 7 days' mailboxes ahead and re-open them whenever they
    /// drain, so an owner offline for up to a week still finds its mail,
    /// while junk left in mailboxes nobody fetches lives about half the
    /// retention.
    pub unfetched_retention: Duration,
    /// Most mailboxes the relay holds. Default 1 000 000 (a record is a
    /// few hundred bytes on disk: about 300 MB at most).
    pub max_mailboxes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            // A padded frame, sealed to the mailbox's key.
            max_envelope_bytes: safemeet_proto::mailbox::MAX_SEALED_BYTES,
            retention: Duration::from_secs(14 * 24 * 3600),
            mailbox_max_envelopes: 10_000,
            mailbox_max_bytes: 64 * 1024 * 1024,
            max_envelopes: 2_000_000,
            max_bytes: 8 * 1024 * 1024 * 1024,
            accept_new_mailboxes: true,
            mailbox_daily_bytes: 32 * 1024 * 1024,
            unfetched_retention: Duration::from_secs(8 * 24 * 3600),
            max_mailboxes: 1_000_000,
        }
    }
}

/// How the relay node runs.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Addresses to listen on.
    pub listen: Vec<Multiaddr>,
    /// Idle connections close after this long.
    pub idle_timeout: Duration,
    /// A request is answered within this long or fails.
    pub request_timeout: Duration,
    /// Requests one peer may make per second, sustained. Default 200.
    pub peer_rate: u32,
    /// Requests one peer may make at once before the rate applies.
    /// Default 400.
    pub peer_burst: u32,
    /// KiB one peer may add to the disk per hour, counted as on disk
    /// (`service::disk_cost_kib`: deposits and opens, stored or not).
    /// Default 16 MiB: a device leaving a message for 32 offline devices
    /// (about 170 KiB as on disk) 95 times an hour; one peer id fills an
    /// 8 GiB relay in three weeks rather than ten minutes.
    pub peer_disk_kib_per_hour: u32,
    /// KiB one peer may add at once before that rate applies. Default
    /// 3 MiB: eighteen such messages at once, or a minute of a device
    /// depositing 20 short messages a second; a peer id that spends it at
    /// full speed (about 340 KiB/s) is throttled within 10 s.
    pub peer_disk_burst_kib: u32,
    /// How long one circuit through this relay (between two devices that
    /// reach each other no other way: a call, a delivery) lasts at most,
    /// seconds. Default 120, libp2p's. Each end is told, and a call shows it.
    pub circuit_secs: u32,
    /// KiB one circuit carries at most, each way. Default 128, libp2p's:
    /// half a minute of a call's audio; an operator who wants to carry
    /// calls raises it (a call takes about 5 KiB/s each way).
    pub circuit_kib: u32,
    /// KiB all peers of one network prefix (/24, /48) may add to the disk
    /// per hour, counted as for a peer. Default 64 MiB: peer ids are free,
    /// so without it one host would get a fresh quota with each new one;
    /// four busy peers' worth, for users who share an address (a
    /// carrier-grade NAT may need more). Loopback connections (local
    /// tools, a reverse proxy) do not count unless
    /// `prefix_quota_on_loopback` is set.
    pub prefix_disk_kib_per_hour: u32,
    /// KiB one prefix may add at once before that rate applies. Default
    /// 8 MiB.
    pub prefix_disk_burst_kib: u32,
    /// Counts loopback connections against the prefix quota too (for
    /// tests on 127.0.0.1). Default false.
    pub prefix_quota_on_loopback: bool,
    /// Connections in all, the share kept for the relay's own dials, and
    /// per remote address and prefix. Default [`ConnectionLimits::RELAY`].
    pub connections: ConnectionLimits,
    /// Most mailbox request streams one connection may have open at
    /// once; more are dropped unread. Default 16.
    pub max_streams_per_connection: usize,
    /// How long a request may take to arrive whole. Default 5 s
    /// ([`safemeet_net::INBOUND_READ_TIMEOUT`]).
    pub inbound_read_timeout: Duration,
    /// Serve `/metrics` and `/status` here, to these addresses only.
    /// Default: off.
    pub metrics: Option<MetricsConfig>,
    /// A transport to use instead of TCP, QUIC and the memory transport,
    /// still under Noise + yamux, as `safemeet_net::Config::transport`
    /// (the network simulator's modelled links). Default `None`: the
    /// production transports.
    pub transport: Option<safemeet_net::CustomTransport>,
}

/// Where operator metrics are served, and to whom.
#[derive(Debug, Clone)]
pub struct MetricsConfig {
    /// Address to listen on (port 0: any free port).
    pub listen: std::net::SocketAddr,
    /// Client addresses allowed; others are closed without an answer.
    pub allow: Vec<std::net::IpAddr>,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            listen: vec![
                "/ip4/0.0.0.0/tcp/4011"
                    .parse()
                    .unwrap_or_else(|_| Multiaddr::empty()),
            ],
            idle_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
            peer_rate: 200,
            peer_burst: 400,
            peer_disk_kib_per_hour: 16 * 1024,
            peer_disk_burst_kib: 3 * 1024,
            circuit_secs: 120,
            circuit_kib: 128,
            prefix_disk_kib_per_hour: 64 * 1024,
            prefix_disk_burst_kib: 8 * 1024,
            prefix_quota_on_loopback: false,
            connections: ConnectionLimits::RELAY,
            max_streams_per_connection: 16,
            inbound_read_timeout: safemeet_net::INBOUND_READ_TIMEOUT,
            metrics: None,
            transport: None,
        }
    }
}
