//! The relay's libp2p node: TCP (Noise + yamux) and QUIC, identify, ping,
//! Kademlia in server mode (a relay is a bootstrap peer), circuit relay v2
//! and an AutoNAT v2 server (for devices behind NAT), and the mailbox
//! protocol. Requests that arrive together are answered together after one
//! flush, so a receipt is only ever sent for an envelope that is durable.
//!
//! Nothing here logs or counts a peer id or an address next to a mailbox.

use std::num::NonZeroU32;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use libp2p::identity::Keypair;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, identify, kad, ping};
use safemeet_net::{IDENTIFY_PROTOCOL, KAD_PROTOCOL, MAILBOX_PROTOCOL, MailboxCodec};
use safemeet_proto::clock::{Clock, SystemClock};
use safemeet_proto::mailbox::{MailboxError, MailboxResponse};
use safemeet_proto::{Timestamp, codec};
use safemeet_store::Store;
use tokio::sync::{mpsc, watch};

use crate::metrics::RelayMetrics;
use crate::service::{Decoded, MailboxService, decode_request, request_cost};

/// Most connections a relay holds at once (file descriptors are finite).
const MAX_CONNECTIONS: u32 = 10_000;
/// Most connections from one peer.
const MAX_CONNECTIONS_PER_PEER: u32 = 4;
/// Most incoming connections being set up at once.
const MAX_PENDING: u32 = 256;
/// Most requests answered after one flush.
const MAX_GROUP: usize = 256;
/// How often expired envelopes are purged.
const PURGE_EVERY: Duration = Duration::from_secs(30);
/// Most envelopes one purge removes (the next one goes on).
const PURGE_MAX: usize = 10_000;

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
            metrics: None,
            transport: None,
        }
    }
}

/// Why the relay could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Building the node failed.
    #[error("could not set up the relay node: {0}")]
    Setup(String),
    /// The metrics address cannot be listened on.
    #[error("cannot serve metrics on {addr}: {reason}")]
    Metrics {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        reason: String,
    },
    /// An address could not be listened on.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// Why.
        reason: String,
    },
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    /// At most [`MAX_CONNECTIONS`], and a few per peer.
    limits: libp2p::connection_limits::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    kad: kad::Behaviour<kad::store::MemoryStore>,
    mailbox: request_response::Behaviour<MailboxCodec>,
    /// Circuit relay v2 with libp2p's limits (2 min / 128 KiB a circuit,
    /// rate limits per peer and per IP): enough to connect two devices
    /// behind NAT and to punch a hole between them, not to carry mail.
    circuits: libp2p::relay::Behaviour,
    /// Tells daemons whether they are reachable from outside (AutoNAT v2).
    autonat: libp2p::autonat::v2::server::Behaviour,
}

/// What a running relay reports.
#[derive(Debug, Clone)]
pub enum RelayEvent {
    /// It listens here; the address ends in `/p2p/<peer id>`.
    Listening(Multiaddr),
}

/// A running relay node.
#[derive(Debug)]
pub struct RelayHandle {
    /// The relay's peer id.
    pub peer_id: PeerId,
    /// What it reports.
    pub events: mpsc::Receiver<RelayEvent>,
    /// Where `/metrics` and `/status` are served, when they are.
    pub metrics_addr: Option<std::net::SocketAddr>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl RelayHandle {
    /// Stops the node after the requests in hand are answered.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

fn now() -> Timestamp {
    SystemClock.now()
}

/// Starts a relay node on the current tokio runtime.
pub fn spawn<S: Store + Send + 'static>(
    key: Keypair,
    config: RelayConfig,
    service: MailboxService<S>,
) -> Result<RelayHandle, Error> {
    let peer_id = key.public().to_peer_id();
    let request_timeout = config.request_timeout;
    // A relay serves circuits; it never uses one, so it drops the client.
    let behaviour = |key: &Keypair, _| {
        let local = key.public().to_peer_id();
        let mut kad = kad::Behaviour::with_config(
            local,
            kad::store::MemoryStore::new(local),
            kad::Config::new(KAD_PROTOCOL),
        );
        // A relay is reachable by design: it answers DHT queries.
        kad.set_mode(Some(kad::Mode::Server));
        Ok(Behaviour {
            limits: libp2p::connection_limits::Behaviour::new(
                libp2p::connection_limits::ConnectionLimits::default()
                    .with_max_established(Some(MAX_CONNECTIONS))
                    .with_max_established_per_peer(Some(MAX_CONNECTIONS_PER_PEER))
                    .with_max_pending_incoming(Some(MAX_PENDING)),
            ),
            identify: identify::Behaviour::new(identify::Config::new(
                IDENTIFY_PROTOCOL.to_owned(),
                key.public(),
            )),
            ping: ping::Behaviour::default(),
            kad,
            mailbox: request_response::Behaviour::with_codec(
                MailboxCodec::default(),
                [(MAILBOX_PROTOCOL, ProtocolSupport::Inbound)],
                request_response::Config::default()
                    .with_request_timeout(request_timeout)
                    .with_max_concurrent_streams(MAX_GROUP),
            ),
            circuits: libp2p::relay::Behaviour::new(local, libp2p::relay::Config::default()),
            autonat: libp2p::autonat::v2::server::Behaviour::default(),
        })
    };
    let mut swarm = safemeet_net::build_swarm(
        key,
        config.transport.as_ref(),
        config.idle_timeout,
        behaviour,
    )
    .map_err(|e| Error::Setup(e.to_string()))?;
    for addr in &config.listen {
        swarm.listen_on(addr.clone()).map_err(|e| Error::Listen {
            addr: addr.clone(),
            reason: e.to_string(),
        })?;
    }
    let (metrics, metrics_addr) = match &config.metrics {
        Some(m) => {
            let (metrics, addr) = serve_metrics(m, service.store().limits().accept_new_mailboxes)?;
            (Some(metrics), Some(addr))
        }
        None => (None, None),
    };
    let (events_tx, events) = mpsc::channel(16);
    let (stop, mut stopped) = watch::channel(false);
    let task = tokio::spawn(async move {
        let mut service = service;
        let mut purge = tokio::time::interval(PURGE_EVERY);
        let mut ctx = Ctx {
            events: events_tx,
            peer_id,
            limiter: peer_limiter(&config),
            metrics,
        };
        ctx.holding(&service);
        loop {
            tokio::select! {
                _ = stopped.changed() => break,
                _ = purge.tick() => {
                    ctx.limiter.retain_recent();
                    match service.store().purge_expired(now(), PURGE_MAX) {
                        Ok(0) => {}
                        Ok(n) => {
                            tracing::debug!(removed = n, "expired envelopes purged");
                            if let Err(e) = service.store().flush() {
                                tracing::error!(error = %e, "flush after purge failed");
                            }
                            if let Some((m, _)) = &ctx.metrics {
                                m.purged(n);
                            }
                            ctx.holding(&service);
                        }
                        Err(e) => tracing::error!(error = %e, "purge failed"),
                    }
                }
                event = swarm.select_next_some() => {
                    let mut group = Vec::new();
                    let mut next = Some(event);
                    while let Some(event) = next.take() {
                        handle_event(&mut swarm, event, &mut ctx, &mut group);
                        if group.len() < MAX_GROUP {
                            next = swarm.select_next_some().now_or_never();
                        }
                    }
                    answer(&mut swarm, &mut service, &ctx, group);
                }
            }
        }
        tracing::debug!("relay node stopped");
    });
    Ok(RelayHandle {
        peer_id,
        events,
        metrics_addr,
        stop,
        task,
    })
}

/// What the event loop carries besides the swarm and the service.
struct Ctx {
    events: mpsc::Sender<RelayEvent>,
    peer_id: PeerId,
    limiter: PeerLimiter,
    metrics: Option<(RelayMetrics, libp2p::metrics::Metrics)>,
}

impl Ctx {
    /// Updates the gauges from the store's totals.
    fn holding<S: Store>(&self, service: &MailboxService<S>) {
        if let Some((m, _)) = &self.metrics {
            match service.store().totals() {
                Ok(totals) => m.holding(&totals),
                Err(e) => tracing::warn!(error = %e, "totals unreadable"),
            }
        }
    }
}

/// Binds the metrics address and serves it from a task; returns the
/// relay's metrics (with libp2p's in the same registry) and the address.
fn serve_metrics(
    config: &MetricsConfig,
    accepting: bool,
) -> Result<
    (
        (RelayMetrics, libp2p::metrics::Metrics),
        std::net::SocketAddr,
    ),
    Error,
> {
    let failed = |e: std::io::Error| Error::Metrics {
        addr: config.listen,
        reason: e.to_string(),
    };
    let listener = std::net::TcpListener::bind(config.listen).map_err(failed)?;
    listener.set_nonblocking(true).map_err(failed)?;
    let addr = listener.local_addr().map_err(failed)?;
    let listener = tokio::net::TcpListener::from_std(listener).map_err(failed)?;
    let mut registry = prometheus_client::registry::Registry::default();
    let libp2p_metrics = libp2p::metrics::Metrics::new(&mut registry);
    let metrics = RelayMetrics::new(&mut registry, accepting);
    tokio::spawn(crate::metrics::serve(
        listener,
        config.allow.clone(),
        std::sync::Arc::new(registry),
        metrics.clone(),
    ));
    Ok(((metrics, libp2p_metrics), addr))
}

type Pending = (Decoded, request_response::ResponseChannel<Vec<u8>>);

/// Requests per peer, in memory only: the peer ids it holds are never
/// written or logged, and idle ones are dropped (`retain_recent`).
type PeerLimiter = governor::DefaultKeyedRateLimiter<PeerId>;

fn peer_limiter(config: &RelayConfig) -> PeerLimiter {
    let rate = NonZeroU32::new(config.peer_rate).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(config.peer_burst).unwrap_or(rate).max(rate);
    governor::RateLimiter::keyed(governor::Quota::per_second(rate).allow_burst(burst))
}

fn handle_event(
    swarm: &mut libp2p::Swarm<Behaviour>,
    event: SwarmEvent<BehaviourEvent>,
    ctx: &mut Ctx,
    group: &mut Vec<Pending>,
) {
    if let Some((_, libp2p_metrics)) = &ctx.metrics {
        use libp2p::metrics::Recorder;
        libp2p_metrics.record(&event);
    }
    match event {
        SwarmEvent::NewListenAddr { address, .. } => {
            // A relay is run to be reached where it listens: its addresses
            // are the ones circuit reservations hand out.
            swarm.add_external_address(address.clone());
            let full = address.with_p2p(ctx.peer_id).unwrap_or_else(|a| a);
            let _ = ctx.events.try_send(RelayEvent::Listening(full));
        }
        SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
            peer_id,
            info,
            ..
        })) => {
            // Feed the routing table, so the relay is a useful bootstrap peer.
            for addr in info.listen_addrs {
                swarm.behaviour_mut().kad.add_address(&peer_id, addr);
            }
        }
        SwarmEvent::Behaviour(BehaviourEvent::Mailbox(request_response::Event::Message {
            peer,
            message:
                request_response::Message::Request {
                    request, channel, ..
                },
            ..
        })) => {
            // Each envelope of a DepositMany counts, not just the request.
            let request = decode_request(&request);
            let cost = NonZeroU32::new(request_cost(&request)).unwrap_or(NonZeroU32::MIN);
            if matches!(ctx.limiter.check_key_n(&peer, cost), Ok(Ok(()))) {
                group.push((request, channel));
                return;
            }
            if let Some((m, _)) = &ctx.metrics {
                m.refused(MailboxError::RateLimited);
            }
            // Over its rate: answered at once, without touching the store.
            let refusal = MailboxResponse::Error {
                code: MailboxError::RateLimited,
                message: "too many requests; slow down".into(),
            };
            if let Ok(bytes) = codec::encode(&refusal) {
                let _ = swarm.behaviour_mut().mailbox.send_response(channel, bytes);
            }
        }
        _ => {}
    }
}

/// Answers a group of requests: each is handled, one flush makes what they
/// wrote durable, then the answers go out.
fn answer<S: Store>(
    swarm: &mut libp2p::Swarm<Behaviour>,
    service: &mut MailboxService<S>,
    ctx: &Ctx,
    group: Vec<Pending>,
) {
    if group.is_empty() {
        return;
    }
    let (requests, channels): (Vec<Decoded>, Vec<_>) = group.into_iter().unzip();
    let (responses, wrote) = service.handle_decoded(requests, now());
    let mut answers: Vec<_> = responses.into_iter().zip(channels).collect();
    if wrote && let Err(e) = service.store().flush() {
        // Nothing is promised that is not durable: every answer of the group
        // becomes an error, and depositors try again.
        tracing::error!(error = %e, "flush failed; the group is answered with errors");
        for (response, _) in &mut answers {
            *response = MailboxResponse::Error {
                code: MailboxError::Internal,
                message: "the relay's store failed".into(),
            };
        }
    }
    if let Some((m, _)) = &ctx.metrics {
        for (response, _) in &answers {
            m.answered(response);
        }
    }
    if wrote {
        ctx.holding(service);
    }
    for (response, channel) in answers {
        match codec::encode(&response) {
            Ok(bytes) => {
                // A peer that left does not get its answer; nothing else to do.
                let _ = swarm.behaviour_mut().mailbox.send_response(channel, bytes);
            }
            Err(e) => tracing::error!(error = %e, "could not encode an answer"),
        }
    }
}
