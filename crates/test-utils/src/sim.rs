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
    Command, Config, Core, DeliveryResult, DeliveryToken, Error, Input, LogEntry, MessageState,
    NetInput, Now, Output, RequestId, Response, RoomInfo, TimelineEntry,
};
use safemeet_proto::mailbox::StoredEnvelope;
use safemeet_proto::room::RoomTopic;
use safemeet_proto::{MailboxId, RoomId, Timestamp, UserId};

use crate::{Device, FaultyStore};

/// The wall-clock time a simulation starts at (2026-12-01).
pub const START_WALL_MS: u64 = 1_796_083_200_000;

/// How long the modelled relay keeps a deposit.
const RELAY_KEEPS: Duration = Duration::from_secs(14 * 24 * 3600);

/// Most steps at one instant before the harness calls it a livelock.
const MAX_STEPS_AT_ONCE: usize = 1_000_000;

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
}

impl Sim {
    /// Devices called `names`, each running a core with `config` as
    /// `adjust` changes it for that node, seeded `seed + index`.
    pub fn new(names: &[&str], seed: u64, adjust: impl Fn(usize, &mut Config)) -> Self {
        let relay_peer = libp2p::identity::Keypair::ed25519_from_bytes([7; 32])
            .expect("a valid key")
            .public()
            .to_peer_id();
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
        };
        for (i, name) in names.iter().enumerate() {
            let device = Device::new(name, sim.now().wall);
            let mut config = Config {
                gossip_grace: Duration::from_secs(1),
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
                subscribed: BTreeSet::new(),
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

    /// The address of the modelled relay, for [`Config::net`]'s relays.
    pub fn relay_addr(&self) -> Multiaddr {
        format!("/memory/4242/p2p/{}", self.relay_peer)
            .parse()
            .expect("a valid address")
    }

    /// The address of the modelled relay, before a `Sim` exists.
    pub fn relay_address() -> Multiaddr {
        let peer = libp2p::identity::Keypair::ed25519_from_bytes([7; 32])
            .expect("a valid key")
            .public()
            .to_peer_id();
        format!("/memory/4242/p2p/{peer}")
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

    /// Every delivery started so far.
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

    /// Takes node `i` off the network or puts it back.
    pub fn set_online(&mut self, i: usize, online: bool) {
        self.nodes[i].online = online;
        if !online {
            self.connected.retain(|(a, b)| *a != i && *b != i);
        }
    }

    /// Issues a request to node `i` now; its answer is [`reply`](Self::reply).
    pub fn command(&mut self, i: usize, command: Command) -> RequestId {
        let id = self.nodes[i].next_request;
        self.nodes[i].next_request += 1;
        self.feed(i, Input::Commands(vec![(id, command)]));
        id
    }

    /// The answer to request `id` of node `i`, if it came.
    pub fn reply(&self, i: usize, id: RequestId) -> Option<&Result<Response, Error>> {
        self.nodes[i].replies.get(&id)
    }

    /// Issues a request and returns its answer (which comes at once for
    /// every request the core answers itself).
    pub fn ask(&mut self, i: usize, command: Command) -> Result<Response, String> {
        let id = self.command(i, command);
        match self.nodes[i].replies.remove(&id) {
            Some(Ok(r)) => Ok(r),
            Some(Err(e)) => Err(e.to_string()),
            None => Err("no answer".into()),
        }
    }

    /// Node `of`'s invite, naming a memory address for it.
    pub fn invite(&mut self, of: usize) -> String {
        let addrs = vec![format!("/memory/{of}").parse().expect("a valid address")];
        match self.ask(of, Command::Invite { addrs }) {
            Ok(Response::Invite(text)) => text,
            other => panic!("no invite: {other:?}"),
        }
    }

    /// Node `adder` accepts node `of`'s invite (one way).
    pub fn add_contact(&mut self, adder: usize, of: usize) {
        let invite = self.invite(of);
        let command = Command::AddContact {
            invite,
            pet_name: None,
        };
        if let Err(e) = self.ask(adder, command) {
            panic!("the invite was refused: {e}");
        }
    }

    /// Makes nodes `a` and `b` contacts of each other.
    pub fn befriend(&mut self, a: usize, b: usize) {
        self.add_contact(a, b);
        self.add_contact(b, a);
    }

    /// Node `from` sends a DM to node `to`; returns the request.
    pub fn send_dm(&mut self, from: usize, to: usize, text: &str) -> RequestId {
        let to = self.nodes[to].user;
        self.command(
            from,
            Command::SendDm {
                to,
                text: text.to_owned(),
            },
        )
    }

    /// Node `i`'s DM timeline with node `with`.
    pub fn dm_timeline(&mut self, i: usize, with: usize) -> Vec<TimelineEntry> {
        let with = self.nodes[with].user;
        match self.ask(i, Command::DmMessages { with, limit: 1000 }) {
            Ok(Response::Messages(m)) => m,
            other => panic!("no timeline: {other:?}"),
        }
    }

    /// Delivers `frame` to node `to` from a peer outside the simulation
    /// (a stranger, or a hostile node), now; its answer is in the trace
    /// (`answer …` on `to`'s line).
    pub fn inject(&mut self, to: usize, from: PeerId, frame: Vec<u8>) {
        let reply = self.token();
        self.feed(
            to,
            Input::Network(vec![NetInput::Delivery {
                peer: from,
                frame,
                reply,
            }]),
        );
    }

    /// The delivery state of node `i`'s message `text` in its DM with node
    /// `with`, if it holds one.
    pub fn dm_state(&mut self, i: usize, with: usize, text: &str) -> Option<MessageState> {
        self.dm_timeline(i, with)
            .into_iter()
            .find(|m| m.text == text)
            .map(|m| m.state)
    }

    /// Node `admin` creates a group room with these nodes.
    pub fn create_room(&mut self, admin: usize, name: &str, members: &[usize]) -> RoomId {
        let members = members.iter().map(|m| self.nodes[*m].user).collect();
        let command = Command::CreateRoom {
            name: name.into(),
            members,
        };
        match self.ask(admin, command) {
            Ok(Response::Room(id)) => id,
            other => panic!("no room: {other:?}"),
        }
    }

    /// The group rooms node `i` is in.
    pub fn rooms(&mut self, i: usize) -> Vec<RoomInfo> {
        match self.ask(i, Command::Rooms) {
            Ok(Response::Rooms(r)) => r,
            other => panic!("no rooms: {other:?}"),
        }
    }

    /// How many members node `i` sees in `room` (`None`: not in it).
    pub fn room_members(&mut self, i: usize, room: RoomId) -> Option<usize> {
        self.rooms(i)
            .into_iter()
            .find(|r| r.room_id == room)
            .map(|r| r.members.len())
    }

    /// The texts and states of node `i`'s messages in `room`.
    pub fn room_texts(&mut self, i: usize, room: RoomId) -> Vec<(String, MessageState)> {
        match self.ask(i, Command::RoomMessages { room, limit: 1000 }) {
            Ok(Response::Messages(m)) => m.into_iter().map(|m| (m.text, m.state)).collect(),
            other => panic!("no messages: {other:?}"),
        }
    }

    /// Node `i` sends `text` to `room`; the send must be committed.
    pub fn send_room(&mut self, i: usize, room: RoomId, text: &str) {
        let id = self.command(
            i,
            Command::SendRoom {
                room,
                text: text.into(),
            },
        );
        assert!(
            matches!(self.reply(i, id), Some(Ok(Response::Sent(_)))),
            "the send was refused"
        );
    }

    /// Node `i`'s event log.
    pub fn log(&mut self, i: usize) -> Vec<LogEntry> {
        let command = Command::Events {
            cursor: 0,
            limit: 10_000,
        };
        match self.ask(i, command) {
            Ok(Response::Events(e)) => e.into_iter().map(|(_, e)| e).collect(),
            other => panic!("no events: {other:?}"),
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

    fn schedule(&mut self, delay: Duration, event: Event) {
        let key = (self.mono + delay, self.next_event);
        self.next_event += 1;
        self.queue.insert(key, event);
    }

    fn event(&mut self, event: Event) {
        match event {
            Event::Arrive {
                to,
                from,
                token,
                frame,
            } => {
                if !self.nodes[to].online {
                    let peer = self.nodes[to].peer;
                    self.schedule(
                        self.latency,
                        Event::Result {
                            node: from,
                            token,
                            peer,
                            result: DeliveryResult::Unreachable,
                        },
                    );
                    return;
                }
                let mut inputs = Vec::new();
                let pair = (from.min(to), from.max(to));
                if self.connected.insert(pair) {
                    inputs.push(NetInput::Connected(self.nodes[from].peer));
                    let to_peer = self.nodes[to].peer;
                    self.feed(from, Input::Network(vec![NetInput::Connected(to_peer)]));
                }
                let reply = self.token();
                self.nodes[to].open.insert(reply, (from, token));
                inputs.push(NetInput::Delivery {
                    peer: self.nodes[from].peer,
                    frame,
                    reply,
                });
                self.feed(to, Input::Network(inputs));
            }
            Event::Result {
                node,
                token,
                peer,
                result,
            } => self.feed(
                node,
                Input::Delivered {
                    token,
                    peer,
                    result,
                },
            ),
            Event::Gossip { to, topic, frame } => {
                if self.nodes[to].online && self.nodes[to].subscribed.contains(topic.as_bytes()) {
                    let token = self.token();
                    self.feed(
                        to,
                        Input::Network(vec![NetInput::Gossip {
                            topic,
                            frame,
                            token,
                        }]),
                    );
                }
            }
            Event::Deposited {
                node,
                seq,
                peer,
                until,
            } => self.feed(node, Input::Deposited { seq, peer, until }),
            Event::Drain { node, keys } => {
                if !self.nodes[node].online {
                    self.feed(
                        node,
                        Input::Drained {
                            fetched: 0,
                            failed: true,
                        },
                    );
                    return;
                }
                let mut fetched = 0;
                for key in keys {
                    let mailbox = key.mailbox();
                    let envelopes = self.mailboxes.get(&mailbox).cloned().unwrap_or_default();
                    if envelopes.is_empty() {
                        continue;
                    }
                    fetched += envelopes.len();
                    let page = self.next_page;
                    self.next_page += 1;
                    self.pages.insert((node, page), mailbox);
                    self.feed(
                        node,
                        Input::Page {
                            page,
                            epoch: key.epoch(),
                            envelopes,
                        },
                    );
                }
                self.feed(
                    node,
                    Input::Drained {
                        fetched,
                        failed: false,
                    },
                );
            }
        }
    }

    fn token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token
    }

    fn name(&self, peer: &PeerId) -> String {
        match self.by_peer.get(peer) {
            Some(i) => format!("n{i}"),
            None if *peer == self.relay_peer => "relay".into(),
            None => "stranger".into(),
        }
    }

    /// Hands node `i` an input now and carries out its outputs.
    fn feed(&mut self, i: usize, input: Input) {
        let now = self.now();
        let outputs = self.nodes[i].core.handle(input, now);
        for output in outputs {
            let line = self.describe(&output);
            self.trace
                .push(format!("{:>10} n{i} {line}", self.mono.as_millis()));
            self.carry(i, output);
        }
    }

    fn describe(&self, output: &Output) -> String {
        match output {
            Output::Reply(id, Ok(r)) => {
                let kind = format!("{r:?}");
                let kind = kind.split(['(', ' ']).next().unwrap_or("").to_owned();
                format!("reply {id} ok {kind}")
            }
            Output::Reply(id, Err(e)) => format!("reply {id} error {:?}", e.kind()),
            Output::Deliver {
                token, peer, frame, ..
            } => format!("deliver {token:?} to {} {}B", self.name(peer), frame.len()),
            Output::Publish(frames) => format!("publish {}", frames.len()),
            Output::Deposit { seq, peer, .. } => {
                format!("deposit {seq} for {}", self.name(peer))
            }
            Output::Drain { keys, .. } => format!("drain {} epochs", keys.len()),
            Output::PageDone { page, taken } => format!("page {page} taken {}", taken.len()),
            Output::Subscribe(_) => "subscribe".into(),
            Output::Unsubscribe(_) => "unsubscribe".into(),
            Output::Answer { answer, .. } => format!("answer {answer:?}"),
            Output::Verdict { accept, .. } => format!("verdict {accept}"),
            Output::LogCursor(n) => format!("log {n}"),
            other => format!("{other:?}"),
        }
    }

    fn carry(&mut self, i: usize, output: Output) {
        let latency = self.latency;
        match output {
            Output::Reply(id, result) => {
                self.nodes[i].replies.insert(id, result);
            }
            Output::Deliver {
                token, peer, frame, ..
            } => {
                let to = self.by_peer.get(&peer).copied();
                self.sent.push(Sent {
                    at: self.mono,
                    from: i,
                    to,
                    token,
                });
                let delay = match token {
                    DeliveryToken::Ack(_) => self.ack_latency.unwrap_or(latency),
                    DeliveryToken::Outbox(_) => latency,
                };
                match to {
                    Some(to) if self.nodes[i].online => {
                        self.schedule(
                            delay,
                            Event::Arrive {
                                to,
                                from: i,
                                token,
                                frame,
                            },
                        );
                    }
                    _ => self.schedule(
                        latency,
                        Event::Result {
                            node: i,
                            token,
                            peer,
                            result: DeliveryResult::Unreachable,
                        },
                    ),
                }
            }
            Output::Publish(frames) => {
                if !self.nodes[i].online {
                    return;
                }
                for (topic, frame) in frames {
                    for j in 0..self.nodes.len() {
                        let n = &self.nodes[j];
                        let wants = n.subscribed.contains(topic.as_bytes());
                        if j != i && n.online && !n.drop_gossip && wants {
                            let (topic, frame) = (topic.clone(), frame.clone());
                            self.schedule(
                                latency,
                                Event::Gossip {
                                    to: j,
                                    topic,
                                    frame,
                                },
                            );
                        }
                    }
                }
            }
            Output::Deposit {
                seq,
                peer,
                mailbox,
                frame,
                ..
            } => {
                let until = if self.nodes[i].online {
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
                            envelope: frame,
                        });
                    Some(stored_until)
                } else {
                    None
                };
                self.schedule(
                    latency,
                    Event::Deposited {
                        node: i,
                        seq,
                        peer,
                        until,
                    },
                );
            }
            Output::Drain { keys, .. } => self.schedule(latency, Event::Drain { node: i, keys }),
            Output::PageDone { page, taken } => {
                if let Some(mailbox) = self.pages.remove(&(i, page))
                    && let Some(held) = self.mailboxes.get_mut(&mailbox)
                {
                    held.retain(|e| !taken.contains(&e.id));
                }
            }
            Output::Subscribe(topic) => {
                self.nodes[i].subscribed.insert(*topic.as_bytes());
            }
            Output::Unsubscribe(topic) => {
                self.nodes[i].subscribed.remove(topic.as_bytes());
            }
            Output::Answer { reply, answer } => {
                if let Some((from, token)) = self.nodes[i].open.remove(&reply) {
                    let peer = self.nodes[i].peer;
                    self.schedule(
                        latency,
                        Event::Result {
                            node: from,
                            token,
                            peer,
                            result: DeliveryResult::Answered(answer),
                        },
                    );
                }
            }
            Output::Verdict { .. } => {}
            Output::LogCursor(n) => self.nodes[i].log_cursor = n,
            _ => {}
        }
    }
}
