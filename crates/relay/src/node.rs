//! The relay's libp2p node: TCP (Noise + yamux) and QUIC, identify, ping,
//! Kademlia in server mode (a relay is a bootstrap peer), circuit relay v2
//! and an AutoNAT v2 server (for devices behind NAT), and the mailbox
//! protocol. Requests that arrive together are answered together after one
//! flush, so a receipt is only ever sent for an envelope that is durable.
//!
//! One task owns the swarm and the [`MailboxService`]: a
//! `tokio::select! { biased; }` loop that looks at shutdown first, then at
//! the flush in progress, the purge timer and the swarm. The flush (an
//! `fsync`-like wait of milliseconds) runs on tokio's blocking pool, never
//! on a worker thread; while it runs the swarm is still served, and
//! requests that arrive meanwhile wait (at most [`MAX_GROUP`] of them) to
//! form the next group.
//!
//! Nothing here logs or counts a peer id or an address next to a mailbox.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use libp2p::identity::Keypair;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, identify, kad, ping};
use safemeet_net::{
    IDENTIFY_PROTOCOL, KAD_PROTOCOL, MAILBOX_PROTOCOL, MailboxCodec, PerIpLimits, Refusal,
    RefusalLog,
};
use safemeet_proto::clock::{Clock, SystemClock};
use safemeet_proto::mailbox::{MailboxError, MailboxResponse};
use safemeet_proto::{Timestamp, codec};
use safemeet_store::Store;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::Error;
pub use crate::config::{MetricsConfig, RelayConfig};
use crate::metrics::RelayMetrics;
use crate::quota::{PeerLimiter, PrefixLimiter, disk_limiter, peer_limiter, prefix_disk_limiter};
use crate::service::{Decoded, MailboxService, decode_request, disk_cost_kib, request_cost};

/// Most connections from one peer.
const MAX_CONNECTIONS_PER_PEER: u32 = 4;
/// Most incoming connections being set up at once.
const MAX_PENDING: u32 = 256;
/// Most requests answered after one flush, and most held while a flush
/// runs (past that the swarm is not polled until it ends: backpressure on
/// the peers). 256: the streams of sixteen busy connections (16 each).
const MAX_GROUP: usize = 256;
/// How often the streams the codec refused are counted into the metrics
/// (libp2p reports no event for them); refusals are logged at most once
/// a minute all the same.
const TAKE_REFUSALS_EVERY: Duration = Duration::from_secs(1);
/// How often expired envelopes are purged.
const PURGE_EVERY: Duration = Duration::from_secs(30);
/// Most envelopes one purge removes (the next one goes on).
const PURGE_MAX: usize = 10_000;

#[derive(NetworkBehaviour)]
struct Behaviour {
    /// At most [`RelayConfig::connections`] in all (fewer inbound), and a
    /// few per peer.
    limits: libp2p::connection_limits::Behaviour,
    /// Limits per remote address and prefix.
    per_ip: PerIpLimits,
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

/// A running relay node. Dropping it stops the node too, without waiting.
#[derive(Debug)]
pub struct RelayHandle {
    /// The relay's peer id.
    pub peer_id: PeerId,
    /// What it reports.
    pub events: mpsc::Receiver<RelayEvent>,
    /// Where `/metrics` and `/status` are served, when they are.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Cancels the node (and its metrics server) when dropped.
    stop: DropGuard,
    task: JoinHandle<()>,
}

impl RelayHandle {
    /// Stops the node and waits for it: a flush in progress is finished
    /// and its answers handed to the swarm; requests not yet handled are
    /// dropped (their peers see a failure and try again; nothing of theirs
    /// was stored).
    pub async fn stop(self) {
        let Self { stop, task, .. } = self;
        drop(stop);
        let _ = task.await;
    }
}

fn now() -> Timestamp {
    SystemClock.now()
}

/// Starts a relay node on the current tokio runtime.
pub fn spawn<S: Store + Clone + 'static>(
    key: Keypair,
    config: RelayConfig,
    service: MailboxService<S>,
) -> Result<RelayHandle, Error> {
    let peer_id = key.public().to_peer_id();
    let request_timeout = config.request_timeout;
    let connections = config.connections;
    connections.validate().map_err(Error::InvalidConfig)?;
    let streams = config.max_streams_per_connection.max(1);
    let read_timeout = config.inbound_read_timeout;
    let stream_refusals = std::sync::Arc::new(safemeet_net::StreamRefusals::default());
    let codec_refusals = stream_refusals.clone();
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
                    .with_max_established(Some(connections.max_connections))
                    .with_max_established_incoming(Some(connections.max_inbound()))
                    .with_max_established_per_peer(Some(MAX_CONNECTIONS_PER_PEER))
                    .with_max_pending_incoming(Some(MAX_PENDING)),
            ),
            per_ip: PerIpLimits::new(connections),
            identify: identify::Behaviour::new(identify::Config::new(
                IDENTIFY_PROTOCOL.to_owned(),
                key.public(),
            )),
            ping: ping::Behaviour::default(),
            kad,
            mailbox: request_response::Behaviour::with_codec(
                MailboxCodec::new(read_timeout, codec_refusals.clone()),
                [(MAILBOX_PROTOCOL, ProtocolSupport::Inbound)],
                request_response::Config::default()
                    .with_request_timeout(request_timeout)
                    .with_max_concurrent_streams(streams),
            ),
            circuits: libp2p::relay::Behaviour::new(
                local,
                libp2p::relay::Config {
                    max_circuit_duration: Duration::from_secs(u64::from(config.circuit_secs)),
                    max_circuit_bytes: u64::from(config.circuit_kib) * 1024,
                    ..libp2p::relay::Config::default()
                },
            ),
            autonat: libp2p::autonat::v2::server::Behaviour::default(),
        })
    };
    let mut swarm = safemeet_net::build_swarm(
        key,
        config.transport.as_ref(),
        config.idle_timeout,
        behaviour,
    )
    .map_err(Error::Setup)?;
    for addr in &config.listen {
        swarm
            .listen_on(addr.clone())
            .map_err(|source| Error::Listen {
                addr: addr.clone(),
                source,
            })?;
    }
    let cancel = CancellationToken::new();
    let (metrics, metrics_addr) = match &config.metrics {
        Some(m) => {
            let accepting = service.store().limits().accept_new_mailboxes;
            let (metrics, addr) = serve_metrics(m, accepting, cancel.child_token())?;
            (Some(metrics), Some(addr))
        }
        None => (None, None),
    };
    let (events_tx, events) = mpsc::channel(16);
    let actor = Actor {
        swarm,
        service,
        ctx: Ctx {
            events: events_tx,
            peer_id,
            limiter: peer_limiter(&config),
            disk_limiter: disk_limiter(&config),
            prefix_disk_limiter: prefix_disk_limiter(&config),
            prefixes: HashMap::new(),
            prefix_on_loopback: config.prefix_quota_on_loopback,
            metrics,
            refusals: RefusalLog::default(),
            streams: stream_refusals,
        },
        cancel: cancel.clone(),
        waiting: Vec::new(),
        flushing: None,
    };
    let task = tokio::spawn(actor.run());
    Ok(RelayHandle {
        peer_id,
        events,
        metrics_addr,
        stop: cancel.drop_guard(),
        task,
    })
}

/// The relay's event loop: owns the swarm and the service.
struct Actor<S: Store> {
    swarm: libp2p::Swarm<Behaviour>,
    service: MailboxService<S>,
    ctx: Ctx,
    cancel: CancellationToken,
    /// Requests received while a flush ran: the next group (at most
    /// [`MAX_GROUP`]).
    waiting: Vec<Pending>,
    /// The flush in progress and the answers that wait for it.
    flushing: Option<Flushing>,
}

/// A flush on the blocking pool, and the answers it holds back.
struct Flushing {
    task: JoinHandle<Result<(), Error>>,
    answers: Vec<Answer>,
}

impl<S: Store + Clone + 'static> Actor<S> {
    async fn run(mut self) {
        let mut purge = tokio::time::interval(PURGE_EVERY);
        let mut report = tokio::time::interval(TAKE_REFUSALS_EVERY);
        report.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.ctx.holding(&self.service);
        loop {
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => break,
                flushed = flush_done(&mut self.flushing), if self.flushing.is_some() => {
                    self.flushed(flushed);
                    if !self.waiting.is_empty() {
                        let group = std::mem::take(&mut self.waiting);
                        self.handle_group(group);
                    }
                }
                _ = purge.tick() => self.purge(),
                _ = report.tick() => self.ctx.report_refusals(),
                event = self.swarm.select_next_some(), if self.waiting.len() < MAX_GROUP => {
                    let mut next = Some(event);
                    while let Some(event) = next.take() {
                        handle_event(&mut self.swarm, event, &mut self.ctx, &mut self.waiting);
                        if self.waiting.len() < MAX_GROUP {
                            next = self.swarm.select_next_some().now_or_never();
                        }
                    }
                    if self.flushing.is_none() {
                        let group = std::mem::take(&mut self.waiting);
                        self.handle_group(group);
                    }
                }
            }
        }
        // What was promised to be flushed is flushed before the node goes.
        if self.flushing.is_some() {
            let flushed = flush_done(&mut self.flushing).await;
            self.flushed(flushed);
        }
        tracing::debug!("relay node stopped");
    }

    /// Handles a group of requests. If they wrote, their answers wait for a
    /// flush on the blocking pool; otherwise they go out at once.
    fn handle_group(&mut self, group: Vec<Pending>) {
        if group.is_empty() {
            return;
        }
        let (requests, channels): (Vec<Decoded>, Vec<_>) = group.into_iter().unzip();
        let (responses, wrote) = self.service.handle_decoded(requests, now());
        let answers: Vec<Answer> = responses.into_iter().zip(channels).collect();
        if wrote {
            self.start_flush(answers);
        } else {
            self.send(answers);
        }
    }

    /// Starts a flush of everything applied so far; `answers` go out once
    /// it has succeeded. Only one runs at a time.
    fn start_flush(&mut self, answers: Vec<Answer>) {
        let store = self.service.store().clone();
        self.flushing = Some(Flushing {
            task: tokio::task::spawn_blocking(move || store.flush()),
            answers,
        });
    }

    /// A flush ended: its answers go out, or become errors if it failed
    /// (nothing is promised that is not durable; depositors try again).
    fn flushed(&mut self, (result, mut answers): (Result<(), Error>, Vec<Answer>)) {
        if let Err(e) = result {
            tracing::error!(
                error = &e as &dyn std::error::Error,
                answers = answers.len(),
                "flush failed; the group is answered with errors"
            );
            for (response, _) in &mut answers {
                *response = MailboxResponse::Error {
                    code: MailboxError::Internal,
                    message: "the relay's store failed".into(),
                };
            }
        }
        self.ctx.holding(&self.service);
        self.send(answers);
    }

    /// Hands answers to the swarm, counting them.
    fn send(&mut self, answers: Vec<Answer>) {
        if let Some((m, _)) = &self.ctx.metrics {
            for (response, _) in &answers {
                m.answered(response);
            }
        }
        for (response, channel) in answers {
            match codec::encode(&response) {
                Ok(bytes) => {
                    // A peer that left does not get its answer; nothing else to do.
                    let _ = self
                        .swarm
                        .behaviour_mut()
                        .mailbox
                        .send_response(channel, bytes);
                }
                Err(e) => tracing::error!(error = %e, "could not encode an answer"),
            }
        }
    }

    /// Removes expired envelopes. Their deletion needs no acknowledgement:
    /// it is flushed with the next group, or by sled's own periodic flush
    /// if a flush is already running.
    fn purge(&mut self) {
        self.ctx.limiter.retain_recent();
        self.ctx.disk_limiter.retain_recent();
        self.ctx.prefix_disk_limiter.retain_recent();
        self.service.forget_spent(now());
        match self.service.store().purge_expired(now(), PURGE_MAX) {
            Ok(0) => {}
            Ok(n) => {
                tracing::debug!(removed = n, "expired envelopes purged");
                if let Some((m, _)) = &self.ctx.metrics {
                    m.purged(n);
                }
                self.ctx.holding(&self.service);
                if self.flushing.is_none() {
                    self.start_flush(Vec::new());
                }
            }
            Err(e) => tracing::error!(error = &e as &dyn std::error::Error, "purge failed"),
        }
    }
}

/// Waits for the flush in `flushing` and takes it out; pending forever when
/// there is none (the select guards that branch).
async fn flush_done(flushing: &mut Option<Flushing>) -> (Result<(), Error>, Vec<Answer>) {
    let Some(f) = flushing else {
        return std::future::pending().await;
    };
    let result = match (&mut f.task).await {
        Ok(result) => result,
        Err(e) => Err(Error::FlushTask(e)),
    };
    let answers = flushing.take().map(|f| f.answers).unwrap_or_default();
    (result, answers)
}

/// What the event loop carries besides the swarm and the service.
struct Ctx {
    events: mpsc::Sender<RelayEvent>,
    peer_id: PeerId,
    limiter: PeerLimiter,
    /// KiB of disk per peer (deposits and opens).
    disk_limiter: PeerLimiter,
    /// KiB of disk per network prefix.
    prefix_disk_limiter: PrefixLimiter,
    /// The network prefix of each open connection that has one (not
    /// loopback, not a circuit); at most one entry per connection, so
    /// bounded by the connection limits.
    prefixes: HashMap<libp2p::swarm::ConnectionId, std::net::IpAddr>,
    /// Loopback connections count against the prefix quota too.
    prefix_on_loopback: bool,
    metrics: Option<(RelayMetrics, libp2p::metrics::Metrics)>,
    /// What the relay refused at the network level, for the operator.
    refusals: RefusalLog,
    /// What its codec refused, not yet in `refusals` nor the metrics.
    streams: std::sync::Arc<safemeet_net::StreamRefusals>,
}

impl Ctx {
    /// Counts a refusal for the operator's log and metrics. `source` is
    /// hashed in memory for the current minute only.
    fn refused(&mut self, kind: Refusal, source: impl std::hash::Hash) {
        self.refusals.record(kind, source);
        if let Some((m, _)) = &self.metrics {
            m.refused_network(kind);
        }
    }

    /// Takes in what the codec refused and logs what is due.
    fn report_refusals(&mut self) {
        let (stalled, bad) = self.streams.take();
        self.refusals
            .record_unattributed(Refusal::StalledStream, stalled);
        self.refusals.record_unattributed(Refusal::BadStream, bad);
        if let Some((m, _)) = &self.metrics {
            m.refused_network_n(Refusal::StalledStream, stalled);
            m.refused_network_n(Refusal::BadStream, bad);
        }
        self.refusals.report_due(SystemClock.instant());
    }

    /// Updates the gauges from the store's totals.
    fn holding<S: Store>(&self, service: &MailboxService<S>) {
        if let Some((m, _)) = &self.metrics {
            match service.store().totals() {
                Ok(totals) => m.holding(&totals),
                Err(e) => tracing::warn!(error = &e as &dyn std::error::Error, "totals unreadable"),
            }
        }
    }
}

/// Binds the metrics address and serves it from a task; returns the
/// relay's metrics (with libp2p's in the same registry) and the address.
fn serve_metrics(
    config: &MetricsConfig,
    accepting: bool,
    cancel: CancellationToken,
) -> Result<
    (
        (RelayMetrics, libp2p::metrics::Metrics),
        std::net::SocketAddr,
    ),
    Error,
> {
    let failed = |source| Error::Metrics {
        addr: config.listen,
        source,
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
        cancel,
    ));
    Ok(((metrics, libp2p_metrics), addr))
}

/// A request waiting to be handled, and where its answer goes.
type Pending = (Decoded, request_response::ResponseChannel<Vec<u8>>);
/// An answer, and where it goes.
type Answer = (MailboxResponse, request_response::ResponseChannel<Vec<u8>>);

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
        // Feed the routing table, so the relay is a useful bootstrap peer,
        // with peers that serve the DHT only: a client that merely connected
        // (a daemon behind NAT, a device using a circuit) must not have its
        // addresses handed to anyone who asks for its peer id, which every
        // invite carries.
        SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
            peer_id,
            info,
            ..
        })) if info.protocols.contains(&KAD_PROTOCOL) => {
            for addr in info.listen_addrs {
                swarm.behaviour_mut().kad.add_address(&peer_id, addr);
            }
        }
        SwarmEvent::ConnectionEstablished {
            connection_id,
            endpoint,
            ..
        } => {
            if let Some(ip) = safemeet_net::remote_ip(endpoint.get_remote_address())
                && (ctx.prefix_on_loopback || !ip.is_loopback())
            {
                ctx.prefixes.insert(connection_id, safemeet_net::prefix(ip));
            }
        }
        SwarmEvent::ConnectionClosed { connection_id, .. } => {
            ctx.prefixes.remove(&connection_id);
        }
        SwarmEvent::Behaviour(BehaviourEvent::Mailbox(request_response::Event::Message {
            peer,
            connection_id,
            message:
                request_response::Message::Request {
                    request, channel, ..
                },
        })) => {
            // Each envelope of a DepositMany counts, not just the request.
            let request = decode_request(&request);
            let cost = NonZeroU32::new(request_cost(&request)).unwrap_or(NonZeroU32::MIN);
            // And what it may add to the disk, per source peer and per
            // network prefix over time.
            let prefix = ctx.prefixes.get(&connection_id).copied();
            let disk_ok = NonZeroU32::new(disk_cost_kib(&request)).is_none_or(|kib| {
                matches!(ctx.disk_limiter.check_key_n(&peer, kib), Ok(Ok(())))
                    && prefix.is_none_or(|p| {
                        matches!(ctx.prefix_disk_limiter.check_key_n(&p, kib), Ok(Ok(())))
                    })
            });
            if disk_ok && matches!(ctx.limiter.check_key_n(&peer, cost), Ok(Ok(()))) {
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
        SwarmEvent::IncomingConnectionError {
            send_back_addr,
            error: libp2p::swarm::ListenError::Denied { cause },
            ..
        } if cause.downcast_ref::<safemeet_net::PerIpDenied>().is_some() => {
            ctx.refused(
                Refusal::ConnectionPerAddress,
                safemeet_net::remote_ip(&send_back_addr),
            );
        }
        _ => {}
    }
}
