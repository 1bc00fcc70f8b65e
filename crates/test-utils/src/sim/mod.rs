//! Engine cores stepped through virtual time, with no sockets.
//!
//! A [`Sim`] holds several [`Core`]s and a modelled world around them: a
//! network with a fixed one-way latency in which each device can be
//! online or offline, gossip that reaches every subscribed online node
//! (or, per node, is dropped), and one relay that keeps deposits until
//! they are drained. Time is virtual: [`Sim::run_for`] and
//! [`Sim::run_until`] jump from one event or timer to the next, so an hour
//! of retries takes milliseconds. Every output of every core is written to
//! a [`trace`](Sim::trace) with peers named by node index and frames by
//! their size, so a seeded run can be compared with another.
//!
//! A node can play a hostile member ([`Sim::send_unchecked`] sends any
//! room event to any members) or a node that keeps listening on every
//! topic it ever joined ([`SimNode::keep_topics`]; [`SimNode::gossip_heard`]
//! records the gossip that reached it).
//!
//! What is modelled, not real: the network (no libp2p), the relay (no
//! receipts to check), and connections (a node learns that a peer
//! connected on its first delivery either way). The cores, the crypto
//! machines and the stores are the production ones.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use libp2p::{Multiaddr, PeerId};
use safemeet_crypto::mailbox::EpochKey;
use safemeet_engine::{
    Config, Core, DeliveryResult, DeliveryToken, Error, Input, Now, RequestId, Response,
};
use safemeet_proto::mailbox::StoredEnvelope;
use safemeet_proto::room::RoomTopic;
use safemeet_proto::{MailboxId, Timestamp, UserId};

use crate::{Device, FaultyStore};

mod requests;
mod world;

/// The wall-clock time a simulation starts at (2026-12-01).
pub const START_WALL_MS: u64 = 1_796_083_200_000;

/// How long the modelled relay keeps a deposit.
const RELAY_KEEPS: Duration = Duration::from_secs(14 * 24 * 3600);

/// Most steps at one instant before the harness calls it a livelock.
const MAX_STEPS_AT_ONCE: usize = 1_000_000;

/// The modelled relay's peer id (a fixed key).
fn relay_peer() -> PeerId {
    libp2p::identity::Keypair::ed25519_from_bytes([7; 32])
        .expect("a valid key")
        .public()
        .to_peer_id()
}

/// One simulated device.
pub struct SimNode {
    /// Its account and store.
    pub device: Device,
    /// Its engine core.
    pub core: Core<FaultyStore>,
    /// Its peer id.
    pub peer: PeerId,
    /// Its user id.
    pub user: UserId,
    /// Whether its network is up.
    pub online: bool,
    /// Whether gossip to it is lost.
    pub drop_gossip: bool,
    /// Whether it stays on every topic it ever joined (a hostile node that
    /// keeps listening after it left a room).
    pub keep_topics: bool,
    /// When gossip frames reached it (whether or not its core took them).
    pub gossip_heard: Vec<Duration>,
    /// Its verdicts on gossip frames, in order: (accepted, penalised).
    pub verdicts: Vec<(bool, bool)>,
    subscribed: BTreeSet<[u8; 32]>,
    replies: HashMap<RequestId, Result<Response, Error>>,
    next_request: RequestId,
    /// The event-log cursor last announced.
    pub log_cursor: u64,
    /// Deliveries it has not answered yet: reply token → (sender, token).
    open: HashMap<u64, (usize, DeliveryToken)>,
}

/// A delivery a core started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// When (virtual).
    pub at: Duration,
    /// From which node.
    pub from: usize,
    /// To which node (`None`: a peer not in the simulation).
    pub to: Option<usize>,
    /// What for.
    pub token: DeliveryToken,
}

/// How a frame left a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// Direct delivery to one peer (a message, a key share or acks).
    Direct,
    /// Published on a room's gossip topic.
    Gossip,
    /// Deposited with a relay, sealed to the recipient's mailbox.
    Deposit,
}

/// A frame as it left a node (recorded after [`Sim::record_wire`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireFrame {
    /// From which node.
    pub from: usize,
    /// Which way.
    pub path: Path,
    /// The bytes as they go on the wire.
    pub frame: Vec<u8>,
}

enum Event {
    Arrive {
        to: usize,
        from: usize,
        token: DeliveryToken,
        frame: Vec<u8>,
    },
    Result {
        node: usize,
        token: DeliveryToken,
        peer: PeerId,
        result: DeliveryResult,
    },
    Gossip {
        to: usize,
        topic: RoomTopic,
        frame: Vec<u8>,
    },
    Deposited {
        node: usize,
        seq: u64,
        peer: PeerId,
        until: Option<Timestamp>,
    },
    Drain {
        node: usize,
        keys: Vec<Arc<EpochKey>>,
    },
}

/// Several cores in virtual time. See the module docs.
pub struct Sim {
    /// The devices, by index.
    pub nodes: Vec<SimNode>,
    mono: Duration,
    wall_shift_ms: i64,
    /// One-way latency of every hop.
    pub latency: Duration,
    /// Latency of acknowledgement frames (default: `latency`), to make
    /// them arrive late.
    pub ack_latency: Option<Duration>,
    queue: BTreeMap<(Duration, u64), Event>,
    next_event: u64,
    by_peer: HashMap<PeerId, usize>,
    connected: BTreeSet<(usize, usize)>,
    relay_peer: PeerId,
    mailboxes: BTreeMap<MailboxId, Vec<StoredEnvelope>>,
    next_envelope: u64,
    pages: HashMap<(usize, u64), MailboxId>,
    next_page: u64,
    next_token: u64,
    trace: Vec<String>,
    sent: Vec<Sent>,
    wire: Option<Vec<WireFrame>>,
    /// Files the cores asked to have left on relays, by node.
    piece_jobs: Vec<(usize, safemeet_engine::PieceJob)>,
}

impl Sim {
    /// Devices called `names`, each running a core with `config` as
    /// `adjust` changes it for that node, seeded `seed + index`.
    pub fn new(names: &[&str], seed: u64, adjust: impl Fn(usize, &mut Config)) -> Self {
        let relay_peer = relay_peer();
        let mut sim = Self {
            nodes: Vec::new(),
            mono: Duration::ZERO,
            wall_shift_ms: 0,
            latency: Duration::from_millis(20),
            ack_latency: None,
            queue: BTreeMap::new(),
            next_event: 0,
            by_peer: HashMap::new(),
            connected: BTreeSet::new(),
            relay_peer,
            mailboxes: BTreeMap::new(),
            next_envelope: 1,
            pages: HashMap::new(),
            next_page: 0,
            next_token: 0,
            trace: Vec::new(),
            sent: Vec::new(),
            wire: None,
            piece_jobs: Vec::new(),
        };
        for (i, name) in names.iter().enumerate() {
            let device = Device::new(name, sim.now().wall);
            let mut config = Config {
                gossip_grace: Duration::from_secs(1),
                auto_join_rooms: true,
                ..Config::default()
            };
            adjust(i, &mut config);
            let machine = device.machine();
            let peer = machine.account().peer_id();
            let user = machine.account().user_id();
            let core = Core::new(machine, config, seed.wrapping_add(i as u64), sim.now())
                .expect("the core starts");
            sim.by_peer.insert(peer, i);
            sim.nodes.push(SimNode {
                device,
                core,
                peer,
                user,
                online: true,
                drop_gossip: false,
                keep_topics: false,
                gossip_heard: Vec::new(),
                subscribed: BTreeSet::new(),
                verdicts: Vec::new(),
                replies: HashMap::new(),
                next_request: 0,
                log_cursor: 0,
                open: HashMap::new(),
            });
        }
        for i in 0..sim.nodes.len() {
            sim.feed(i, Input::Timer);
        }
        sim
    }

    /// The address of the modelled relay, for a node's `Config::net`
    /// relays.
    pub fn relay_address() -> Multiaddr {
        format!("/memory/4242/p2p/{}", relay_peer())
            .parse()
            .expect("a valid address")
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.mono
    }

    /// The time as the cores see it.
    pub fn now(&self) -> Now {
        let wall = (START_WALL_MS as i64 + self.mono.as_millis() as i64 + self.wall_shift_ms).max(0)
            as u64;
        Now {
            wall: Timestamp::from_millis(wall).expect("a valid time"),
            mono: self.mono,
        }
    }

    /// Moves the wall clock (only) by `ms`, as a user changing the system
    /// time would.
    pub fn shift_wall_clock(&mut self, ms: i64) {
        self.wall_shift_ms += ms;
    }

    /// Every output so far, one line each.
    pub fn trace(&self) -> &[String] {
        &self.trace
    }

    /// Records every frame that leaves a node from now on (see
    /// [`Sim::wire`]).
    pub fn record_wire(&mut self) {
        self.wire.get_or_insert_with(Vec::new);
    }

    /// The frames that left the nodes since [`Sim::record_wire`], in order.
    pub fn wire(&self) -> &[WireFrame] {
        self.wire.as_deref().unwrap_or_default()
    }

    /// Every delivery the cores started, in order.
    pub fn sent(&self) -> &[Sent] {
        &self.sent
    }

    /// Deliveries from `from` to `to` started so far (outbox items only).
    pub fn deliveries(&self, from: usize, to: usize) -> Vec<Duration> {
        self.sent
            .iter()
            .filter(|s| {
                s.from == from && s.to == Some(to) && matches!(s.token, DeliveryToken::Outbox(_))
            })
            .map(|s| s.at)
            .collect()
    }

    /// Envelopes the relay holds.
    pub fn relay_envelopes(&self) -> usize {
        self.mailboxes.values().map(Vec::len).sum()
    }

    /// Leaves `sealed` in `mailbox` on the relay, as any peer with the
    /// mailbox's deposit key may (a hostile one, say); until when it is
    /// kept.
    pub fn deposit(&mut self, mailbox: MailboxId, sealed: Vec<u8>) -> Timestamp {
        let id = self.next_envelope;
        self.next_envelope += 1;
        let ms = self.now().wall.as_millis() + RELAY_KEEPS.as_millis() as u64;
        let stored_until = Timestamp::from_millis(ms).expect("a valid time");
        self.mailboxes
            .entry(mailbox)
            .or_default()
            .push(StoredEnvelope {
                id,
                stored_until,
                envelope: sealed,
            });
        stored_until
    }

    /// The files node cores asked to have left on relays (the file
    /// service's work, which the simulation does not run), in order.
    pub fn piece_jobs(&self) -> &[(usize, safemeet_engine::PieceJob)] {
        &self.piece_jobs
    }

    /// Hands node `to` a gossip frame on `topic` now, as if a peer had
    /// passed it on (a hostile one, say); it is heard only on a topic the
    /// node is subscribed to.
    pub fn inject_gossip(&mut self, to: usize, topic: RoomTopic, frame: Vec<u8>) {
        self.schedule(Duration::ZERO, Event::Gossip { to, topic, frame });
    }

    /// Takes node `i` off the network or puts it back.
    pub fn set_online(&mut self, i: usize, online: bool) {
        self.nodes[i].online = online;
        if !online {
            self.connected.retain(|(a, b)| *a != i && *b != i);
        }
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        self.run_until(d, |_| false);
    }

    /// Runs until `done` holds or `limit` of virtual time passed; returns
    /// whether `done` held.
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&mut Sim) -> bool) -> bool {
        let end = self.mono + limit;
        let mut steps_at_once = 0;
        loop {
            if done(self) {
                return true;
            }
            let Some(next) = self.next_time() else {
                self.mono = end;
                return done(self);
            };
            if next > end {
                self.mono = end;
                return done(self);
            }
            if next > self.mono {
                self.mono = next;
                steps_at_once = 0;
            }
            steps_at_once += 1;
            assert!(
                steps_at_once < MAX_STEPS_AT_ONCE,
                "livelock at {:?}",
                self.mono
            );
            self.step();
        }
    }

    fn next_time(&self) -> Option<Duration> {
        let event = self.queue.keys().next().map(|(t, _)| *t);
        let timer = self
            .nodes
            .iter()
            .filter_map(|n| n.core.poll_timeout())
            .min();
        match (event, timer) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Carries out one event or timer that is due now.
    fn step(&mut self) {
        if let Some((&key, _)) = self.queue.iter().next()
            && key.0 <= self.mono
        {
            let event = self.queue.remove(&key).expect("the event is there");
            self.event(event);
            return;
        }
        for i in 0..self.nodes.len() {
            if self.nodes[i]
                .core
                .poll_timeout()
                .is_some_and(|t| t <= self.mono)
            {
                self.feed(i, Input::Timer);
                return;
            }
        }
    }
}
