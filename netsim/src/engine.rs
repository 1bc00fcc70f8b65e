//! The production nodes: one `safemeet-engine` per simulated node, each
//! over its own encrypted in-memory store, its network on the modelled
//! transport (real Noise + yamux, real gossipsub, Kademlia, identify,
//! request-response).
//!
//! A node's event log tells when a message arrived: a watcher per node
//! reads new log entries as the log's cursor moves and records the first
//! receipt of each message.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use safemeet_crypto::EncryptedStore;
use safemeet_crypto::account::Account;
use safemeet_crypto::at_rest::{DataKey, StoreCipher};
use safemeet_crypto::machine::CryptoMachine;
use safemeet_engine::LogEntry;
use safemeet_net::Config as NetConfig;
use safemeet_proto::clock::{Clock, SystemClock};
use safemeet_proto::{DisplayName, UserId, Username};
use safemeet_relay::config::Limits;
use safemeet_relay::node::{RelayConfig, RelayHandle};
use safemeet_relay::service::MailboxService;
use safemeet_relay::store::MailboxStore;
use safemeet_store::MemoryStore;
use tokio::task::JoinHandle;

use crate::attack::wire::data_encoding_hex as hex_topic;
use crate::attack::{Attackers, Knowledge, Target};
use crate::plan::room_name;
use crate::record::{Recorder, number_of};
use crate::run::{Ctx, MeshProbe, Nodes};
use crate::transport::{NodeIdx, addr_of};

/// Set-up calls (invites, contacts) in flight at once.
const SETUP_CONCURRENCY: usize = 32;
/// Longest wait, at a join, for the room's admin to learn of the leave.
const LEAVE_SEEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for a node to stop.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

struct Node {
    store: EncryptedStore<MemoryStore>,
    user: UserId,
    /// This device (a second device's, once linked in set-up).
    device: Option<safemeet_proto::DeviceId>,
    peer: PeerId,
    engine: Option<safemeet_engine::Handle>,
    watcher: Option<JoinHandle<()>>,
    /// The event-log cursor the watcher has read up to: a restarted node's
    /// watcher goes on from there (the log survives in the store), so old
    /// entries are not counted twice.
    cursor: Arc<AtomicU64>,
}

/// The production nodes of a run.
pub struct EngineNodes {
    ctx: Arc<Ctx>,
    nodes: Vec<Node>,
    /// The relays, once started: each one's address (ending in its peer id)
    /// and its running node.
    relays: Vec<(Multiaddr, RelayHandle)>,
    /// Samples how many envelopes the relays hold, while they run.
    relay_sampler: Option<JoinHandle<()>>,
    /// Each node's index by its user id (to read room members in logs).
    index_of: Arc<HashMap<UserId, NodeIdx>>,
    /// Each planned room's id, once created.
    room_ids: Arc<std::sync::Mutex<HashMap<usize, safemeet_proto::RoomId>>>,
    /// The scenario's attackers, once started.
    attackers: Option<Attackers>,
}

/// How often the relays' holdings are sampled.
const RELAY_SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// Longest wait at the end for the relays to empty, on top of one mailbox
/// poll period.
const RELAY_SETTLE: Duration = Duration::from_secs(5);

/// Envelopes and bytes (as on disk) the relays hold now (their stores'
/// totals).
fn relay_totals(stores: &[MailboxStore<MemoryStore>]) -> (u64, u64) {
    stores
        .iter()
        .filter_map(|s| s.totals().ok())
        .fold((0, 0), |(e, b), t| (e + t.envelopes, b + t.bytes))
}

fn name(i: NodeIdx) -> String {
    format!("n{i}")
}

impl EngineNodes {
    /// Creates an account and store for every node of the plan.
    pub fn new(ctx: Arc<Ctx>) -> anyhow::Result<Self> {
        let mut nodes = Vec::with_capacity(ctx.plan.nodes);
        for i in 0..ctx.plan.nodes as NodeIdx {
            let store =
                EncryptedStore::new(MemoryStore::new(), StoreCipher::new(&DataKey::generate()));
            if i as usize >= ctx.plan.users {
                // A second device: its account comes from the link in
                // set-up; until then it stands for its user.
                let primary = (i as usize - ctx.plan.users) as NodeIdx;
                let Some(first) = nodes.get(primary as usize) else {
                    anyhow::bail!("a second device without its first");
                };
                let first: &Node = first;
                let user = first.user;
                nodes.push(Node {
                    store,
                    user,
                    device: None,
                    peer: PeerId::random(),
                    engine: None,
                    watcher: None,
                    cursor: Arc::new(AtomicU64::new(0)),
                });
                continue;
            }
            let account = Account::create(
                Username::new(name(i))?,
                DisplayName::new(name(i))?,
                vec![],
                SystemClock.now(),
            )?;
            CryptoMachine::store_account(&store, &account)?;
            nodes.push(Node {
                store,
                user: account.user_id(),
                device: Some(account.device_id()),
                peer: account.libp2p_keypair().public().to_peer_id(),
                engine: None,
                watcher: None,
                cursor: Arc::new(AtomicU64::new(0)),
            });
        }
        let index_of = Arc::new(
            nodes
                .iter()
                .take(ctx.plan.users)
                .enumerate()
                .map(|(i, n)| (n.user, i as NodeIdx))
                .collect(),
        );
        Ok(Self {
            ctx,
            nodes,
            relays: Vec::new(),
            relay_sampler: None,
            index_of,
            room_ids: Arc::default(),
            attackers: None,
        })
    }

    /// Starts the scenario's relays, each on its own index of the modelled
    /// network (after the nodes'), its mailboxes in memory.
    fn start_relays(&mut self) -> anyhow::Result<()> {
        let mut views = Vec::new();
        for r in 0..self.ctx.scenario.nodes.relays {
            let idx = (self.ctx.plan.nodes + r) as NodeIdx;
            let key = libp2p::identity::Keypair::generate_ed25519();
            // A clone of a memory store shares its data: the second view
            // reads the relay's totals as it runs.
            let memory = MemoryStore::new();
            views.push(MailboxStore::new(memory.clone(), Limits::default()));
            let store = MailboxStore::new(memory, Limits::default());
            let service = MailboxService::new(store, key.clone());
            let config = RelayConfig {
                listen: vec![addr_of(idx)],
                metrics: None,
                transport: Some(self.ctx.hub.transport_for(idx)),
                ..RelayConfig::default()
            };
            let handle = safemeet_relay::node::spawn(key, config, service)
                .map_err(|e| anyhow::anyhow!("relay {r} did not start: {e}"))?;
            let addr = addr_of(idx).with(Protocol::P2p(handle.peer_id));
            self.relays.push((addr, handle));
        }
        if !views.is_empty() {
            let rec = self.ctx.rec.clone();
            let hub = self.ctx.hub.clone();
            let first = self.ctx.plan.nodes as NodeIdx;
            let relays = first..first + views.len() as NodeIdx;
            self.relay_sampler = Some(tokio::spawn(async move {
                let mut tick = tokio::time::interval(RELAY_SAMPLE_EVERY);
                loop {
                    tick.tick().await;
                    let (envelopes, bytes) = relay_totals(&views);
                    let connections = relays.clone().map(|r| hub.connections_of(r)).sum();
                    rec.relay_holds(envelopes, bytes, connections);
                }
            }));
        }
        Ok(())
    }

    fn config(&self, i: NodeIdx) -> safemeet_engine::Config {
        let k = &self.ctx.scenario.node;
        let bootstrap = self.ctx.plan.dials[i as usize]
            .iter()
            .map(|j| addr_of(*j).with(Protocol::P2p(self.nodes[*j as usize].peer)))
            .collect::<Vec<_>>();
        // Every node is a Kademlia client here (no public address), so its
        // routing table holds its bootstrap peers and nothing else: buckets
        // that large keep that table and save the memory of 256 buckets of
        // 20 allocated up front (see netsim/README.md, Memory).
        let kad_bucket_size =
            NonZeroUsize::new(bootstrap.len().max(1)).unwrap_or(libp2p::kad::K_VALUE);
        safemeet_engine::Config {
            net: NetConfig {
                listen: vec![addr_of(i)],
                bootstrap,
                kad_bucket_size,
                mdns: false,
                heartbeat: Duration::from_millis(k.heartbeat_ms),
                transport: Some(self.ctx.hub.transport_for(i)),
                relays: if (i as usize) < self.ctx.scenario.nodes.relay_users.unwrap_or(usize::MAX)
                {
                    self.relays.iter().map(|(a, _)| a.clone()).collect()
                } else {
                    Vec::new()
                },
                ..safemeet_net::Config::default()
            },
            mailbox_poll: Duration::from_millis(k.mailbox_poll_ms),
            gossip_grace: Duration::from_millis(k.gossip_grace_ms),
            retry_initial: Duration::from_millis(k.retry_initial_ms),
            retry_max: Duration::from_millis(k.retry_max_ms),
            direct_room_max_devices: k.direct_room_max_devices,
            auto_join_rooms: true,
            ..safemeet_engine::Config::default()
        }
    }

    fn start(&mut self, i: NodeIdx) -> anyhow::Result<()> {
        let config = self.config(i);
        let node = &mut self.nodes[i as usize];
        let machine = CryptoMachine::open(node.store.clone())?;
        let engine = safemeet_engine::start(machine, config)?;
        node.watcher = Some(tokio::spawn(watch(
            engine.clone(),
            i,
            node.device,
            node.cursor.clone(),
            self.index_of.clone(),
            self.ctx.clone(),
        )));
        node.engine = Some(engine);
        Ok(())
    }

    /// Links each user's second device to its first through the product's
    /// link protocol (`device link`, then `init --link`), over the modelled
    /// network, and starts it. Its contacts learn it from the new device
    /// list its first device sends them.
    async fn link_second_devices(&mut self) -> anyhow::Result<()> {
        let seconds = self.ctx.plan.second_of.clone();
        for (u, second) in seconds.into_iter().enumerate() {
            let Some(d) = second else {
                continue;
            };
            let first = self.engine(u as NodeIdx)?;
            let shown = first.link_offer(false).await?;
            let offer = safemeet_proto::link::LinkOffer::from_text(&shown.link)?;
            let transport = self.ctx.hub.transport_for(d);
            let bundle = safemeet_engine::link_io::receive_bundle_over(
                &offer,
                0,
                SystemClock.now(),
                Some(&transport),
            )
            .await?;
            let account = Account::from_record(&safemeet_engine::link::bundle_account(&bundle)?)?;
            let node = &mut self.nodes[d as usize];
            CryptoMachine::store_account(&node.store, &account)?;
            node.device = Some(account.device_id());
            node.peer = account.libp2p_keypair().public().to_peer_id();
            let now = safemeet_engine::Now {
                wall: SystemClock.now(),
                mono: Duration::ZERO,
            };
            safemeet_engine::link::import_bundle(
                CryptoMachine::open(node.store.clone())?,
                &bundle,
                &offer.addrs,
                now,
                None,
            )?;
            self.start(d)?;
        }
        Ok(())
    }

    /// A node's user id.
    fn user(&self, i: NodeIdx) -> UserId {
        self.nodes[i as usize].user
    }

    /// A planned room's id, once it was created.
    fn room_id(&self, room: usize) -> Option<safemeet_proto::RoomId> {
        self.room_ids.lock().ok()?.get(&room).copied()
    }

    fn engine(&self, i: NodeIdx) -> anyhow::Result<safemeet_engine::Handle> {
        self.nodes[i as usize]
            .engine
            .clone()
            .ok_or_else(|| anyhow::anyhow!("node {i} is not running"))
    }
}

/// Records every message and room change in a node's event log.
async fn watch(
    engine: safemeet_engine::Handle,
    idx: NodeIdx,
    me: Option<safemeet_proto::DeviceId>,
    read: Arc<AtomicU64>,
    index_of: Arc<HashMap<UserId, NodeIdx>>,
    ctx: Arc<Ctx>,
) {
    let mut log = engine.log_watch();
    let mut cursor = read.load(Ordering::Relaxed);
    loop {
        let at = ctx.rec.now();
        loop {
            let Ok(page) = engine.events(cursor, 512).await else {
                return;
            };
            let Some((last, _)) = page.last() else {
                break;
            };
            cursor = *last;
            read.store(cursor, Ordering::Relaxed);
            for (_, entry) in page {
                match entry {
                    LogEntry::Message { entry, .. } if Some(entry.sender_device) != me => {
                        if let Some(n) = number_of(&entry.text) {
                            ctx.rec.received(n, idx, at);
                        }
                    }
                    LogEntry::Room { name, members, .. } => {
                        let view = members
                            .iter()
                            .filter_map(|u| index_of.get(u).copied())
                            .collect();
                        ctx.rec.view(idx, name.clone(), view);
                        ctx.rec.joined(idx, name);
                    }
                    LogEntry::StoredAtRelay { .. } => ctx.rec.stored_at_relay(),
                    _ => {}
                }
            }
        }
        if log.changed().await.is_err() {
            return;
        }
    }
}

impl Nodes for EngineNodes {
    async fn start_all(&mut self) -> anyhow::Result<()> {
        // Relays first: the nodes list them from the start, so the invites
        // made in set-up carry them to contacts.
        self.start_relays()?;
        // Second devices start once linked (in set-up).
        for i in 0..self.ctx.plan.users as NodeIdx {
            self.start(i)?;
        }
        Ok(())
    }

    async fn set_up(&mut self) -> anyhow::Result<()> {
        let ctx = self.ctx.clone();
        let plan = &ctx.plan;
        let timeout = Duration::from_secs_f64(self.ctx.scenario.node.setup_timeout_s);
        // Invites carry listen addresses: wait for them.
        let engines: Vec<safemeet_engine::Handle> = (0..self.ctx.plan.users as NodeIdx)
            .map(|i| self.engine(i))
            .collect::<anyhow::Result<_>>()?;
        let invites: Vec<String> = tokio::time::timeout(
            timeout,
            futures::stream::iter(engines.iter().cloned())
                .map(|e| async move {
                    let mut watch = e.log_watch();
                    while e.listen_addrs().await?.is_empty() {
                        // The listen address appears as soon as the swarm
                        // runs; the log does not move meanwhile, so wait
                        // for either with a short bound.
                        let _ =
                            tokio::time::timeout(Duration::from_millis(20), watch.changed()).await;
                    }
                    e.invite().await
                })
                .buffered(SETUP_CONCURRENCY)
                .collect::<Vec<_>>(),
        )
        .await
        .map_err(|_| anyhow::anyhow!("nodes did not start listening in time"))?
        .into_iter()
        .collect::<Result<_, _>>()?;

        let adds = plan
            .contacts
            .iter()
            .flat_map(|(a, b)| [(*a, *b), (*b, *a)])
            .map(|(me, them)| {
                let e = engines[me as usize].clone();
                let invite = invites[them as usize].clone();
                async move { e.add_contact(&invite, Some(name(them))).await }
            });
        let added: Vec<_> = tokio::time::timeout(
            timeout,
            futures::stream::iter(adds)
                .buffer_unordered(SETUP_CONCURRENCY)
                .collect::<Vec<_>>(),
        )
        .await
        .map_err(|_| anyhow::anyhow!("contacts were not added in time"))?;
        for r in added {
            r?;
        }
        tokio::time::timeout(timeout, self.link_second_devices())
            .await
            .map_err(|_| anyhow::anyhow!("second devices were not linked in time"))??;

        for (r, members) in plan.rooms.iter().enumerate() {
            let Some((creator, rest)) = members.split_first() else {
                continue;
            };
            let members = rest.iter().map(|m| self.user(*m)).collect();
            let id = engines[*creator as usize]
                .create_room(&room_name(r), members)
                .await?;
            self.room_ids
                .lock()
                .map_err(|_| anyhow::anyhow!("room ids poisoned"))?
                .insert(r, id);
        }
        let rooms = plan.rooms.clone();
        let joined = self
            .ctx
            .rec
            .wait_for(timeout, |o| {
                rooms.iter().enumerate().all(|(r, members)| {
                    members
                        .iter()
                        .skip(1)
                        .all(|m| o.joined.contains(&(*m, room_name(r))))
                })
            })
            .await;
        if !joined {
            // Measure anyway: the messages of a room not joined count as
            // undelivered, and the delivery assertion says so.
            tracing::warn!("room members did not all join within the set-up timeout");
            eprintln!("netsim: room members did not all join within the set-up timeout");
        }
        Ok(())
    }

    fn send(&mut self, n: u64, from: NodeIdx, target: crate::plan::Target, text: String) {
        let Ok(engine) = self.engine(from) else {
            self.ctx.rec.failed(n);
            return;
        };
        let target = match target {
            crate::plan::Target::Room(r) => match self.room_id(r) {
                Some(id) => Ok(id),
                None => {
                    self.ctx.rec.failed(n);
                    return;
                }
            },
            crate::plan::Target::Dm(to) => Err(self.user(to)),
        };
        let ctx = self.ctx.clone();
        tokio::spawn(async move {
            let sent = match target {
                Ok(room) => engine.send_room(room, &text).await,
                Err(user) => engine.send_dm(user, &text).await,
            };
            if let Err(e) = sent {
                tracing::debug!(error = %e, "a send failed");
                ctx.rec.failed(n);
            }
        });
    }

    async fn stop(&mut self, idx: NodeIdx) {
        let node = &mut self.nodes[idx as usize];
        if let Some(w) = node.watcher.take() {
            w.abort();
        }
        if let Some(e) = node.engine.take() {
            let _ = tokio::time::timeout(STOP_TIMEOUT, e.shutdown()).await;
        }
    }

    async fn restart(&mut self, idx: NodeIdx) -> anyhow::Result<()> {
        self.start(idx)
    }

    fn mesh_probe(&self) -> MeshProbe {
        // The engines running now; a node restarted later is not probed.
        let engines: Arc<Vec<Option<safemeet_engine::Handle>>> =
            Arc::new(self.nodes.iter().map(|n| n.engine.clone()).collect());
        let room_ids = self.room_ids.clone();
        Arc::new(move |idx, room| {
            let engine = engines.get(idx as usize).cloned().flatten();
            let id = room_ids.lock().ok().and_then(|ids| ids.get(&room).copied());
            Box::pin(async move { engine?.room_mesh_peers(id?).await.ok() })
        })
    }

    async fn leave(&mut self, idx: NodeIdx, room: usize) -> anyhow::Result<()> {
        let id = self
            .room_id(room)
            .ok_or_else(|| anyhow::anyhow!("room {room} was not created"))?;
        self.engine(idx)?.room_leave(id).await?;
        // A leaver's own log has no room entry for its leave: it is out of
        // the room in its own view from here.
        self.ctx.rec.view_change(idx, room_name(room), idx, false);
        Ok(())
    }

    async fn join(&mut self, idx: NodeIdx, room: usize) -> anyhow::Result<()> {
        let admin = self.ctx.plan.rooms[room]
            .first()
            .copied()
            .ok_or_else(|| anyhow::anyhow!("room {room} has no members"))?;
        // An admin that has not yet had the member's leave still lists it,
        // and inviting a member changes nothing: wait for the leave first.
        let name_r = room_name(room);
        let seen = self
            .ctx
            .rec
            .wait_for(LEAVE_SEEN_TIMEOUT, |o| {
                !Recorder::knows_member(o, admin, &name_r, idx)
            })
            .await;
        if !seen {
            anyhow::bail!("the admin of room {room} never learnt that node {idx} left");
        }
        let id = self
            .room_id(room)
            .ok_or_else(|| anyhow::anyhow!("room {room} was not created"))?;
        self.engine(admin)?.room_invite(id, self.user(idx)).await?;
        // The admin's own state changes are not in its log.
        self.ctx.rec.view_change(admin, room_name(room), idx, true);
        Ok(())
    }

    async fn start_attack(&mut self) -> anyhow::Result<()> {
        let honest = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| Target::at(i as NodeIdx, n.peer))
            .collect();
        let relays = self
            .relays
            .iter()
            .map(|(addr, h)| Target {
                peer: h.peer_id,
                addr: addr.clone(),
            })
            .collect();
        // The topics an ex-member of the first rooms would know.
        let mut room_topics = Vec::new();
        for (r, members) in self
            .ctx
            .plan
            .rooms
            .iter()
            .enumerate()
            .take(self.ctx.scenario.attack.known_rooms)
        {
            let (Some(id), Some(creator)) = (self.room_id(r), members.first()) else {
                continue;
            };
            let topic = self.engine(*creator)?.room_topic(id).await?;
            room_topics.push(hex_topic(topic.as_bytes()));
        }
        let knowledge = Knowledge {
            honest,
            relays,
            room_topics,
        };
        self.attackers = Some(Attackers::start(
            &self.ctx,
            knowledge,
            self.ctx.attackers_idle,
        )?);
        Ok(())
    }

    async fn stop_all(&mut self) {
        // The attack ends with the measured run.
        if let Some(mut a) = self.attackers.take() {
            self.ctx.rec.lock().attack = Some(a.figures());
            a.stop();
        }
        // Nothing after the measured run counts as a receipt.
        for n in &mut self.nodes {
            if let Some(w) = n.watcher.take() {
                w.abort();
            }
        }
        if let Some(s) = self.relay_sampler.take() {
            // The measured run is over; give the nodes, still running, one
            // mailbox poll and a few seconds more to drain what the relays
            // still hold (a deposit made after its recipient's last drain,
            // or the deletions of a drain just finished), so that what is
            // left is mail nobody fetched.
            let rec = self.ctx.rec.clone();
            let settle =
                RELAY_SETTLE + Duration::from_millis(self.ctx.scenario.node.mailbox_poll_ms);
            let settled = tokio::time::timeout(settle, async {
                while rec.lock().relay_envelopes > 0 {
                    tokio::time::sleep(RELAY_SAMPLE_EVERY).await;
                }
            });
            let _ = settled.await;
            s.abort();
        }
        let engines: Vec<safemeet_engine::Handle> = self
            .nodes
            .iter_mut()
            .filter_map(|n| n.engine.take())
            .collect();
        futures::stream::iter(engines)
            .map(|e| async move {
                let _ = tokio::time::timeout(STOP_TIMEOUT, e.shutdown()).await;
            })
            .buffer_unordered(SETUP_CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        for (_, relay) in self.relays.drain(..) {
            let _ = tokio::time::timeout(STOP_TIMEOUT, relay.stop()).await;
        }
    }
}
