//! Sybil attackers: the `[attack]` section of a scenario.
//!
//! Each attacker is a real libp2p swarm on the modelled network (its own
//! index after the relays', Noise and yamux like everyone) with a fresh
//! identity, no account and no certificate: a stranger to every honest
//! node. It dials a few honest nodes (drawn from the seed) and every
//! relay, and for the length of the workload and the drain it:
//!
//! - **floods subscriptions**: its gossipsub (the most permissive form:
//!   any topic, anonymous) subscribes to many topics, malformed and well
//!   formed, and the room topics it knows (as an ex-member would), and
//!   drops and takes back the room topics every so often (GRAFT/PRUNE);
//! - **spams GRAFTs and junk gossip**: hand-encoded gossipsub RPC frames
//!   ([`wire::GossipFrame`]) on `/meshsub/1.1.0`, each with hundreds of
//!   subscriptions, dozens of GRAFTs for room topics and junk messages
//!   published on them;
//! - **sends junk frames by direct delivery** (`/safemeet/deliver/1`):
//!   garbage, room envelopes sealed under no key, to-device envelopes of
//!   no session, one in ten of the largest size;
//! - **floods the relays' mailboxes**: deposits into random mailboxes with
//!   random tags, batches of them, nonce requests, opens and fetches
//!   signed by the wrong key, junk bytes.
//!
//! The daemon's gossip gate gives the gossipsub handler to member devices
//! only, so a stranger's gossip is refused when its stream is negotiated:
//! that is counted ([`AttackFigures::gossip_refused`]) rather than assumed.
//! With `idle`, the attackers connect the same way and send nothing: the
//! run to compare with.

mod counts;
pub mod report;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use libp2p::gossipsub::{self, IdentTopic};
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, Message, OutboundFailure, ProtocolSupport};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use safemeet_net::{DELIVER_PROTOCOL, FrameCodec, MAILBOX_PROTOCOL, MailboxCodec};
use safemeet_proto::DeliverAnswer;
use safemeet_proto::mailbox::{DepositOutcome, MAX_RESPONSE_BYTES, MailboxError, MailboxResponse};
use tokio::task::JoinHandle;

pub use self::counts::AttackFigures;
use self::counts::{Counters, add};
use crate::run::Ctx;
use crate::transport::{NodeIdx, addr_of};
use wire::{GOSSIP_PROTOCOL, GossipFrame, RawCodec};

/// How often an attacker acts (its rates are spread over these ticks).
/// 100 ms: a rate of a few a second comes evenly, and a hundred attackers'
/// ticks cost little.
const TICK: Duration = Duration::from_millis(100);
/// An attacker's connections stay open this long idle: longer than any
/// run, so it never lets go first.
const HOLD: Duration = Duration::from_secs(600);
/// How long an attacker waits for an answer (a daemon's own request
/// timeout): a victim that neither answers nor refuses within this ties up
/// the request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests of one kind an attacker keeps open on one connection: four
/// times what a victim reads at once per connection (16), so the victim's
/// cap, not this, is what holds the attack back.
const MAX_STREAMS: usize = 64;
/// Junk gossip messages in each raw frame: two of 2 KiB, beside its
/// subscriptions and GRAFTs, keep it well under gossipsub's 64 KiB.
const JUNK_PER_FRAME: usize = 2;

/// An honest node or relay an attacker can reach.
#[derive(Debug, Clone)]
pub struct Target {
    /// Its peer id.
    pub peer: PeerId,
    /// Its address (ending in its peer id).
    pub addr: Multiaddr,
}

impl Target {
    /// The node at `idx` with peer id `peer`.
    pub fn at(idx: NodeIdx, peer: PeerId) -> Self {
        Self {
            peer,
            addr: addr_of(idx).with(Protocol::P2p(peer)),
        }
    }
}

/// What the attackers know when they start.
#[derive(Debug, Clone, Default)]
pub struct Knowledge {
    /// Every honest node, by index.
    pub honest: Vec<Target>,
    /// Every relay.
    pub relays: Vec<Target>,
    /// The gossip names of the room topics they know.
    pub room_topics: Vec<String>,
}

/// Rates and sizes of the attack (from the scenario's `[attack]`).
pub use crate::scenario::Attack;

/// The running attackers.
pub struct Attackers {
    tasks: Vec<JoinHandle<()>>,
    counters: Arc<Counters>,
    count: usize,
    idle: bool,
}

impl Attackers {
    /// Starts the scenario's attackers on `ctx`'s network, knowing `k`;
    /// with `idle` they connect and send nothing.
    pub fn start(ctx: &Arc<Ctx>, k: Knowledge, idle: bool) -> anyhow::Result<Self> {
        let a = &ctx.scenario.attack;
        let counters = Arc::new(Counters::default());
        let k = Arc::new(k);
        let first = ctx.plan.nodes + ctx.scenario.nodes.relays;
        let mut tasks = Vec::with_capacity(a.count);
        for i in 0..a.count {
            let idx = (first + i) as NodeIdx;
            let mut rng =
                StdRng::seed_from_u64(ctx.scenario.seed ^ 0x7379_6269_6c00_0000 ^ i as u64);
            let mut targets: Vec<usize> = (0..k.honest.len()).collect();
            targets.shuffle(&mut rng);
            targets.truncate(a.targets.min(k.honest.len()));
            let swarm = swarm(ctx, idx, a.heartbeat_ms)?;
            let attacker = Attacker {
                rng,
                targets,
                k: k.clone(),
                counters: counters.clone(),
                attack: a.clone(),
                idle,
                swarm,
            };
            tasks.push(tokio::spawn(attacker.run()));
        }
        Ok(Self {
            tasks,
            counters,
            count: a.count,
            idle,
        })
    }

    /// What they did so far.
    pub fn figures(&self) -> AttackFigures {
        self.counters.figures(self.count, self.idle)
    }

    /// Stops every attacker (their connections drop).
    pub fn stop(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

impl Drop for Attackers {
    fn drop(&mut self) {
        self.stop();
    }
}

#[derive(libp2p::swarm::NetworkBehaviour)]
struct Behaviour {
    gossipsub:
        gossipsub::Behaviour<gossipsub::IdentityTransform, gossipsub::AllowAllSubscriptionFilter>,
    raw: request_response::Behaviour<RawCodec>,
    deliver: request_response::Behaviour<FrameCodec>,
    mailbox: request_response::Behaviour<MailboxCodec>,
}

/// Anonymous messages have no sequence number: an attacker names them by
/// content.
fn content_id(message: &gossipsub::Message) -> gossipsub::MessageId {
    let hash = blake3::hash(&[message.topic.as_str().as_bytes(), &message.data].concat());
    gossipsub::MessageId::from(hash.as_bytes()[..20].to_vec())
}

fn swarm(ctx: &Ctx, idx: NodeIdx, heartbeat_ms: u64) -> anyhow::Result<libp2p::Swarm<Behaviour>> {
    let transport = ctx.hub.transport_for(idx);
    let outbound = |c: request_response::Config| {
        c.with_request_timeout(REQUEST_TIMEOUT)
            .with_max_concurrent_streams(MAX_STREAMS)
    };
    let swarm = safemeet_net::build_swarm(
        Keypair::generate_ed25519(),
        Some(&transport),
        HOLD,
        |_, _| {
            let config = gossipsub::ConfigBuilder::default()
                .validation_mode(gossipsub::ValidationMode::Anonymous)
                .message_id_fn(content_id)
                .heartbeat_interval(Duration::from_millis(heartbeat_ms.max(100)))
                .max_transmit_size(256 * 1024)
                .build()?;
            Ok(Behaviour {
                gossipsub: gossipsub::Behaviour::new_with_subscription_filter(
                    gossipsub::MessageAuthenticity::Anonymous,
                    config,
                    gossipsub::AllowAllSubscriptionFilter {},
                )?,
                raw: request_response::Behaviour::with_codec(
                    RawCodec,
                    [(GOSSIP_PROTOCOL, ProtocolSupport::Outbound)],
                    outbound(request_response::Config::default()),
                ),
                deliver: request_response::Behaviour::with_codec(
                    FrameCodec::default(),
                    [(DELIVER_PROTOCOL, ProtocolSupport::Outbound)],
                    outbound(request_response::Config::default()),
                ),
                mailbox: request_response::Behaviour::with_codec(
                    MailboxCodec::default(),
                    [(MAILBOX_PROTOCOL, ProtocolSupport::Outbound)],
                    outbound(request_response::Config::default()),
                ),
            })
        },
    )?;
    Ok(swarm)
}

/// One attacker on its task.
struct Attacker {
    rng: StdRng,
    /// Indices of the honest nodes it goes after.
    targets: Vec<usize>,
    k: Arc<Knowledge>,
    counters: Arc<Counters>,
    attack: Attack,
    idle: bool,
    swarm: libp2p::Swarm<Behaviour>,
}

/// Spreads a rate over ticks: how many actions are due this tick (the
/// fraction carried over starts at a random phase).
struct Due(f64);

impl Due {
    fn take(&mut self, per_s: f64) -> usize {
        self.0 += per_s * TICK.as_secs_f64();
        let n = self.0.floor();
        self.0 -= n;
        n as usize
    }
}

impl Attacker {
    async fn run(mut self) {
        for t in self.targets.clone() {
            let _ = self.swarm.dial(self.k.honest[t].addr.clone());
        }
        for r in self.k.relays.clone() {
            let _ = self.swarm.dial(r.addr);
        }
        if !self.idle {
            self.flood_subscriptions();
        }
        // Each attacker at its own phase: a hundred that all act on the
        // same tick would measure the simulator's CPU bursts, not the
        // victims.
        let phase = TICK.mul_f64(self.rng.r#gen::<f64>());
        let start = tokio::time::Instant::from_std(crate::record::clock() + phase);
        let mut tick = tokio::time::interval_at(start, TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut due = || Due(self.rng.r#gen::<f64>());
        let (mut frames, mut deliveries, mut deposits, mut resubscribe) =
            (due(), due(), due(), due());
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_event(event),
                _ = tick.tick() => {
                    if self.idle {
                        continue;
                    }
                    let a = &self.attack;
                    let (f, d, m, r) = (
                        frames.take(a.gossip_frames_per_s),
                        deliveries.take(a.deliveries_per_s),
                        deposits.take(a.deposits_per_s),
                        resubscribe.take(if a.resubscribe_s > 0.0 { 1.0 / a.resubscribe_s } else { 0.0 }),
                    );
                    for _ in 0..f {
                        self.gossip_frame();
                    }
                    for _ in 0..d {
                        self.deliver_junk();
                    }
                    for _ in 0..m {
                        self.mailbox_junk();
                    }
                    if r > 0 {
                        self.resubscribe();
                    }
                }
            }
        }
    }

    fn target(&mut self) -> Option<Target> {
        let t = *self.targets.choose(&mut self.rng)?;
        self.k.honest.get(t).cloned()
    }

    /// Subscribes to `attack.topics` flood topics and every known room
    /// topic: gossipsub announces them to every peer that speaks it.
    fn flood_subscriptions(&mut self) {
        let mut n = 0;
        let topics: Vec<String> = (0..self.attack.topics)
            .map(|_| wire::flood_topic(&mut self.rng))
            .chain(self.k.room_topics.iter().cloned())
            .collect();
        for t in topics {
            if self
                .swarm
                .behaviour_mut()
                .gossipsub
                .subscribe(&IdentTopic::new(t))
                .is_ok()
            {
                n += 1;
            }
        }
        add(&self.counters.topics_announced, n);
    }

    /// Drops the known room topics and takes them again: a PRUNE and a
    /// GRAFT to every mesh peer of each, and a junk message on each.
    fn resubscribe(&mut self) {
        let topics = self.k.room_topics.clone();
        for t in topics {
            let topic = IdentTopic::new(t);
            let g = &mut self.swarm.behaviour_mut().gossipsub;
            g.unsubscribe(&topic);
            let _ = g.subscribe(&topic);
            let junk = wire::junk_gossip(&mut self.rng);
            let _ = self.swarm.behaviour_mut().gossipsub.publish(topic, junk);
        }
        add(&self.counters.resubscriptions, 1);
    }

    fn gossip_frame(&mut self) {
        let Some(target) = self.target() else {
            return;
        };
        let a = &self.attack;
        let subscribe = (0..a.subscriptions_per_frame)
            .map(|_| wire::flood_topic(&mut self.rng))
            .chain(self.k.room_topics.iter().cloned())
            .collect::<Vec<_>>();
        let fallback = subscribe.first().cloned().unwrap_or_default();
        let rooms: Vec<&str> = if self.k.room_topics.is_empty() {
            vec![fallback.as_str()]
        } else {
            self.k.room_topics.iter().map(String::as_str).collect()
        };
        let graft: Vec<&str> = rooms
            .iter()
            .copied()
            .cycle()
            .take(a.grafts_per_frame)
            .collect();
        let mut publish = Vec::with_capacity(JUNK_PER_FRAME);
        for _ in 0..JUNK_PER_FRAME {
            let topic = rooms.choose(&mut self.rng).copied().unwrap_or_default();
            publish.push((topic, wire::junk_gossip(&mut self.rng)));
        }
        let grafts = graft.len() as u64;
        let frame = GossipFrame {
            subscribe,
            graft,
            publish,
        }
        .encode();
        self.swarm.behaviour_mut().raw.send_request_with_addresses(
            &target.peer,
            frame,
            vec![target.addr],
        );
        add(&self.counters.gossip_frames_sent, 1);
        add(&self.counters.grafts_sent, grafts);
    }

    fn deliver_junk(&mut self) {
        let Some(target) = self.target() else {
            return;
        };
        let frame = wire::junk_frame(&mut self.rng);
        self.swarm
            .behaviour_mut()
            .deliver
            .send_request_with_addresses(&target.peer, frame, vec![target.addr]);
        add(&self.counters.deliveries_sent, 1);
    }

    fn mailbox_junk(&mut self) {
        let Some(relay) = self.k.relays.choose(&mut self.rng).cloned() else {
            return;
        };
        let request = wire::mailbox_junk(&mut self.rng);
        self.swarm
            .behaviour_mut()
            .mailbox
            .send_request_with_addresses(&relay.peer, request, vec![relay.addr]);
        add(&self.counters.mailbox_sent, 1);
    }

    fn on_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        let c = &*self.counters;
        match event {
            SwarmEvent::ConnectionEstablished { .. } => add(&c.connections_opened, 1),
            SwarmEvent::ConnectionClosed { .. } => add(&c.connections_closed, 1),
            SwarmEvent::OutgoingConnectionError { .. } => add(&c.dials_failed, 1),
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(
                gossipsub::Event::GossipsubNotSupported { .. },
            )) => add(&c.gossip_refused, 1),
            SwarmEvent::Behaviour(BehaviourEvent::Raw(e)) => match e {
                request_response::Event::Message {
                    message: Message::Response { .. },
                    ..
                } => add(&c.gossip_frames_accepted, 1),
                request_response::Event::OutboundFailure {
                    error: OutboundFailure::UnsupportedProtocols,
                    ..
                } => add(&c.gossip_frames_refused, 1),
                request_response::Event::OutboundFailure { .. } => add(&c.gossip_frames_failed, 1),
                _ => {}
            },
            SwarmEvent::Behaviour(BehaviourEvent::Deliver(e)) => match e {
                request_response::Event::Message {
                    message: Message::Response { response, .. },
                    ..
                } => match DeliverAnswer::from_bytes(&response) {
                    Ok(DeliverAnswer::Ack) => add(&c.deliveries_acked, 1),
                    Ok(DeliverAnswer::Refused) => add(&c.deliveries_refused, 1),
                    Ok(DeliverAnswer::Later) => add(&c.deliveries_later, 1),
                    Err(_) => add(&c.deliveries_failed, 1),
                },
                // The stream closed with no answer: the victim's network
                // layer drops a malformed frame unanswered.
                request_response::Event::OutboundFailure {
                    error: OutboundFailure::Io(e),
                    ..
                } if e.kind() == std::io::ErrorKind::UnexpectedEof => add(&c.deliveries_dropped, 1),
                request_response::Event::OutboundFailure { .. } => add(&c.deliveries_failed, 1),
                _ => {}
            },
            SwarmEvent::Behaviour(BehaviourEvent::Mailbox(e)) => match e {
                request_response::Event::Message {
                    message: Message::Response { response, .. },
                    ..
                } => self.mailbox_answer(&response),
                request_response::Event::OutboundFailure { .. } => add(&c.mailbox_failed, 1),
                _ => {}
            },
            _ => {}
        }
    }

    fn mailbox_answer(&self, response: &[u8]) {
        let c = &*self.counters;
        let refused = |code: MailboxError| match code {
            MailboxError::RateLimited => &c.mailbox_rate_limited,
            MailboxError::Refused => &c.deposits_refused,
            _ => &c.mailbox_refused,
        };
        match safemeet_proto::codec::decode::<MailboxResponse>(response, MAX_RESPONSE_BYTES) {
            Ok(MailboxResponse::Receipt(_)) => add(&c.deposits_stored, 1),
            Ok(MailboxResponse::Receipts(outcomes)) => {
                for o in outcomes {
                    match o {
                        DepositOutcome::Stored(_) => add(&c.deposits_stored, 1),
                        DepositOutcome::Refused { code, .. } => add(refused(code), 1),
                    }
                }
            }
            Ok(MailboxResponse::Nonce(_)) => add(&c.nonces, 1),
            Ok(MailboxResponse::Error { code, .. }) => add(refused(code), 1),
            Ok(_) | Err(_) => add(&c.mailbox_refused, 1),
        }
    }
}
