//! The SafeMeet client engine.
//!
//! One task owns the [`CryptoMachine`] and a [`safemeet_net::Handle`] handle; callers use
//! a cloneable [`EngineHandle`]. It covers contacts from signed invites,
//! direct messages and group rooms:
//!
//! - **Send**: text → a room event, encrypted and committed to the outbox
//!   *together with* this device's own timeline entry and event-log entry →
//!   delivered directly to every device of the other member (and this
//!   user's other devices) → acknowledged → removed from the outbox and
//!   marked delivered. Undelivered items are retried with exponential
//!   backoff, also after a restart (the outbox is durable).
//! - **Receive**: frame → checks → decrypt → timeline entry and event-log
//!   entry committed with the replay record → flushed → acknowledged.
//!   Repeats are acknowledged again but stored once.
//!
//! - **Offline**: a delivery that cannot reach a device goes to that
//!   device's relays instead (see `mailbox.rs`); the message shows as
//!   "stored at relay until T". The engine drains its own mailboxes on
//!   start and every [`EngineConfig::mailbox_poll`].
//!
//! A DM is a room of two users whose id both derive from the pair of user
//! ids. A group room has a random id and a secret; its state (name,
//! members, admins) travels as an encrypted event from an admin (see
//! `rooms.rs`). Room messages go to every member device by direct
//! delivery, each acknowledged.

mod invite;
mod mailbox;
mod records;
mod rooms;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use libp2p::{Multiaddr, PeerId};
use safemeet_crypto::machine::{
    CryptoMachine, DecryptedRoomEvent, Destination, OutboxItem, RoomMessage, RoomSend,
    ToDeviceContent, Unflushed,
};
use safemeet_crypto::{EncryptedBatch, EncryptedStore};
use safemeet_net::{RoomTopic, Verdict};
use safemeet_proto::clock::{Clock, SystemClock};
use safemeet_proto::event::{EventContent, Message, MessageText, ToDeviceEvent};
use safemeet_proto::identity::{RelayList, Signed};
use safemeet_proto::{DeviceId, Envelope, EventId, RoomId, Timestamp, UserId, codec};
use safemeet_store::{Keyspace, Store};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

pub use crate::invite::{INVITE_PREFIX, INVITE_VERSION, Invite};
use crate::mailbox::{DeviceMailbox, Relay};
use crate::records::{
    ContactIndex, ContactRecord, MAX_RECORD_BYTES, OutboxMeta, RoomRecord, VERSION, name,
};
pub use crate::records::{LogEntry, MessageState, TimelineEntry};
use crate::rooms::{put_room, stage_room, update_room_from_event};

/// The acknowledgement a device answers a stored delivery with.
const ACK: &[u8] = b"ok";
/// The answer to a delivery that will never be accepted (do not retry).
const REFUSED: &[u8] = b"refused";
/// The answer to a delivery that cannot be placed yet (retry later): a room
/// message that arrived before the room's state.
const LATER: &[u8] = b"later";
/// Most deliveries in flight at once.
const MAX_IN_FLIGHT: usize = 64;
/// Most sends, or received deliveries, that share one flush.
const MAX_GROUP: usize = 64;
/// Most gossip publishing tasks at once.
const MAX_PUBLISHING: usize = 8;
/// `Pending::next_try_ms` of an item that waits for something else first.
const NOT_DUE: u64 = u64::MAX;
/// Sequence number of acknowledgement deliveries (not outbox items).
const ACK_SEQ: u64 = u64::MAX;

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The network layer's settings.
    pub net: safemeet_net::Config,
    /// First retry delay of an undelivered item. Default 1 s.
    pub retry_initial: Duration,
    /// Longest retry delay. Default 5 minutes.
    pub retry_max: Duration,
    /// How often the outbox is looked at. Default 250 ms.
    pub tick: Duration,
    /// How long a room message published over gossip waits for the
    /// members' acknowledgements before it is delivered directly. Default 1 s.
    pub gossip_grace: Duration,
    /// Most room messages published over gossip and not yet acknowledged
    /// by anyone; more wait to be published. A sender that outpaces its
    /// readers would only overflow their queues (gossip drops what does not
    /// fit) and leave the rest to the slower direct fallback. Default 256,
    /// well under a reader's network event queue
    /// ([`safemeet_net::Config::event_queue`], 1 024 by default).
    pub gossip_window: usize,
    /// How often this device drains its relay mailboxes (it also does on
    /// start). Default 60 s.
    pub mailbox_poll: Duration,
    /// Most relays a delivery for an unreachable device is left on (of
    /// the relays that device lists). Default 3.
    pub mailbox_copies: usize,
    /// How many past epochs (days) of mailboxes are drained at most,
    /// besides the current one: as long as relays keep mail (14 days by
    /// default). A drain starts at the oldest epoch the last complete
    /// drain left something in, and never after the previous epoch.
    pub mailbox_catch_up_epochs: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            net: safemeet_net::Config::default(),
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
            tick: Duration::from_millis(250),
            gossip_grace: Duration::from_secs(1),
            gossip_window: 256,
            mailbox_poll: Duration::from_secs(60),
            mailbox_copies: 3,
            mailbox_catch_up_epochs: 14,
        }
    }
}

/// What went wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The crypto layer refused.
    #[error(transparent)]
    Crypto(#[from] safemeet_crypto::Error),
    /// The network layer failed.
    #[error(transparent)]
    Net(#[from] safemeet_net::Error),
    /// Encoding failed.
    #[error(transparent)]
    Encode(#[from] safemeet_proto::EncodeError),
    /// Decoding stored or received bytes failed.
    #[error(transparent)]
    Decode(#[from] safemeet_proto::DecodeError),
    /// The invite cannot be used.
    #[error("invalid invite: {0}")]
    BadInvite(&'static str),
    /// No such contact.
    #[error("no contact {0}")]
    UnknownContact(UserId),
    /// The input is not acceptable.
    #[error("{0}")]
    InvalidInput(String),
    /// A group commit failed; the engine refuses further sends.
    #[error("the commit failed: {0}")]
    Commit(String),
    /// The engine has stopped.
    #[error("the engine has stopped")]
    Stopped,
}

type Reply<T> = oneshot::Sender<Result<T, EngineError>>;

enum Command {
    Invite(Reply<String>),
    Contacts(Reply<Vec<Contact>>),
    RemoveContact(UserId, Reply<()>),
    Resolve(String, Reply<UserId>),
    AddContact(String, Option<String>, Reply<UserId>),
    Messages(UserId, usize, Reply<Vec<TimelineEntry>>),
    Send(Target, String, Reply<EventId>),
    MessagesOf(String, usize, Reply<Vec<TimelineEntry>>),
    CreateRoom(String, Vec<String>, Reply<RoomId>),
    RoomInvite(String, String, Reply<()>),
    RoomLeave(String, Reply<()>),
    Rooms(Reply<Vec<RoomInfo>>),
    Events(u64, usize, Reply<Vec<(u64, LogEntry)>>),
    ListenAddrs(Reply<Vec<Multiaddr>>),
    RoomMeshPeers(String, Reply<usize>),
    Shutdown(oneshot::Sender<()>),
}

/// Where a message goes.
enum Target {
    /// A contact (name, username, user id) or a room (name, id), as typed.
    Name(String),
    /// A contact's DM, by user id.
    User(UserId),
}

/// A contact as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Contact {
    /// Their user id.
    pub user_id: UserId,
    /// The name this user gave them, if any.
    pub pet_name: Option<String>,
    /// Their username (from their signed profile).
    pub username: String,
    /// Their display name (from their signed profile).
    pub display_name: String,
    /// The relays their devices listed (where messages wait while they
    /// are offline).
    pub relays: Vec<String>,
}

/// A group room as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RoomInfo {
    /// The room.
    pub room_id: RoomId,
    /// Its name.
    pub name: String,
    /// Its members.
    pub members: Vec<UserId>,
    /// Its admins.
    pub admins: Vec<UserId>,
}

/// A cloneable handle to a running engine.
#[derive(Clone)]
pub struct EngineHandle {
    commands: mpsc::Sender<Command>,
    user_id: UserId,
    peer_id: PeerId,
    log: tokio::sync::watch::Receiver<u64>,
}

impl std::fmt::Debug for EngineHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineHandle")
            .field("user_id", &self.user_id)
            .finish_non_exhaustive()
    }
}

impl EngineHandle {
    /// This user.
    pub fn user_id(&self) -> UserId {
        self.user_id
    }

    /// This device's libp2p peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, EngineError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| EngineError::Stopped)?;
        rx.await.map_err(|_| EngineError::Stopped)?
    }

    /// Watches the event log: the value is the next cursor (one past the
    /// newest entry), and it changes whenever an entry is appended.
    pub fn log_watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.log.clone()
    }

    /// The contacts, in the order they were added.
    pub async fn contacts(&self) -> Result<Vec<Contact>, EngineError> {
        self.ask(Command::Contacts).await
    }

    /// Removes a contact (their keys and messages stay).
    pub async fn remove_contact(&self, user: UserId) -> Result<(), EngineError> {
        self.ask(|tx| Command::RemoveContact(user, tx)).await
    }

    /// Finds a contact by pet name, username or user id.
    pub async fn resolve(&self, target: &str) -> Result<UserId, EngineError> {
        self.ask(|tx| Command::Resolve(target.to_owned(), tx)).await
    }

    /// An invite for this user, as text.
    pub async fn invite(&self) -> Result<String, EngineError> {
        self.ask(Command::Invite).await
    }

    /// Accepts another user's invite; returns their user id.
    pub async fn add_contact(
        &self,
        invite: &str,
        pet_name: Option<String>,
    ) -> Result<UserId, EngineError> {
        self.ask(|tx| Command::AddContact(invite.to_owned(), pet_name, tx))
            .await
    }

    /// Sends a direct message; returns its event id once it is committed
    /// to the outbox ("sent").
    pub async fn send_dm(&self, to: UserId, text: &str) -> Result<EventId, EngineError> {
        self.ask(|tx| Command::Send(Target::User(to), text.to_owned(), tx))
            .await
    }

    /// Sends a message to TARGET: a contact (name, username, user id) for a
    /// DM, else a group room (name or room id).
    pub async fn send(&self, target: &str, text: &str) -> Result<EventId, EngineError> {
        self.ask(|tx| Command::Send(Target::Name(target.to_owned()), text.to_owned(), tx))
            .await
    }

    /// The last `limit` messages of TARGET (as for [`send`](Self::send)).
    pub async fn messages_of(
        &self,
        target: &str,
        limit: usize,
    ) -> Result<Vec<TimelineEntry>, EngineError> {
        self.ask(|tx| Command::MessagesOf(target.to_owned(), limit, tx))
            .await
    }

    /// Creates a group room with these contacts; this user is its admin.
    pub async fn create_room(
        &self,
        name: &str,
        members: Vec<String>,
    ) -> Result<RoomId, EngineError> {
        self.ask(|tx| Command::CreateRoom(name.to_owned(), members, tx))
            .await
    }

    /// Adds a contact to a group room (admins only).
    pub async fn room_invite(&self, room: &str, contact: &str) -> Result<(), EngineError> {
        self.ask(|tx| Command::RoomInvite(room.to_owned(), contact.to_owned(), tx))
            .await
    }

    /// Leaves a group room.
    pub async fn room_leave(&self, room: &str) -> Result<(), EngineError> {
        self.ask(|tx| Command::RoomLeave(room.to_owned(), tx)).await
    }

    /// The group rooms this user is in.
    pub async fn rooms(&self) -> Result<Vec<RoomInfo>, EngineError> {
        self.ask(Command::Rooms).await
    }

    /// The last `limit` messages with `contact`, oldest first.
    pub async fn messages(
        &self,
        contact: UserId,
        limit: usize,
    ) -> Result<Vec<TimelineEntry>, EngineError> {
        self.ask(|tx| Command::Messages(contact, limit, tx)).await
    }

    /// Event-log entries after `cursor` (0: from the start), at most `limit`.
    pub async fn events(
        &self,
        cursor: u64,
        limit: usize,
    ) -> Result<Vec<(u64, LogEntry)>, EngineError> {
        self.ask(|tx| Command::Events(cursor, limit, tx)).await
    }

    /// Where the node listens.
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, EngineError> {
        self.ask(Command::ListenAddrs).await
    }

    /// How many peers this node's gossip mesh for a group room holds: the
    /// peers it exchanges the room's messages with directly (0 until the
    /// mesh forms; messages then go by direct delivery after the grace).
    pub async fn room_mesh_peers(&self, room: &str) -> Result<usize, EngineError> {
        self.ask(|tx| Command::RoomMeshPeers(room.to_owned(), tx))
            .await
    }

    /// Stops the engine after flushing; the outbox is kept for the next start.
    pub async fn shutdown(&self) -> Result<(), EngineError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Shutdown(tx))
            .await
            .map_err(|_| EngineError::Stopped)?;
        rx.await.map_err(|_| EngineError::Stopped)
    }
}

/// An outbox item still to be delivered.
struct Pending {
    item: OutboxItem,
    /// The event id of a room message (acknowledgements name it).
    event_id: Option<EventId>,
    /// Devices still to acknowledge, and where to find them.
    targets: Vec<(PeerId, Vec<Multiaddr>)>,
    in_flight: HashSet<PeerId>,
    delivered_once: bool,
    attempts: u32,
    next_try_ms: u64,
}

struct Engine<S: Store> {
    machine: CryptoMachine<S>,
    store: EncryptedStore<S>,
    net: safemeet_net::Handle,
    config: EngineConfig,
    pending: BTreeMap<u64, Pending>,
    in_flight: JoinSet<(u64, PeerId, Result<Vec<u8>, safemeet_net::Error>)>,
    rooms: HashMap<RoomId, RoomRecord>,
    log_next: u64,
    log_watch: tokio::sync::watch::Sender<u64>,
    /// Pending room messages by event id.
    by_event: HashMap<EventId, u64>,
    /// Room topics this node is subscribed to.
    subscribed: HashSet<[u8; 32]>,
    /// Set when a room was joined, changed or left.
    rooms_changed: bool,
    /// Frames published over gossip, a group per task.
    publishing: JoinSet<()>,
    /// Room messages waiting to be published (outbox seq and topic; the
    /// frame is the pending item's), in order, as the gossip window allows.
    gossip_out: VecDeque<(u64, RoomTopic)>,
    /// Room messages published and not yet acknowledged by anyone nor
    /// handed to direct delivery: the gossip window.
    gossip_window: HashSet<u64>,
    /// Received messages applied to the store since the last flush.
    unflushed_receipts: usize,
    /// The event log is durable up to here.
    log_durable: u64,
    /// Stored room messages to acknowledge to their senders after the flush.
    acks_due: Vec<(UserId, DeviceId, EventId)>,
    /// The contacts as stored, until they change.
    contact_cache: std::cell::RefCell<Option<Arc<Vec<ContactRecord>>>>,
    /// This device's relays (where its mailbox is).
    own_relays: Vec<Relay>,
    /// Relays it used before, and until when they may still hold mail
    /// for it (ms).
    former_relays: Vec<(String, u64)>,
    /// Where to leave deliveries for other devices, by peer.
    mailboxes: HashMap<PeerId, DeviceMailbox>,
    /// Deposits on relays in flight: outbox seq, the device's peer, and
    /// the latest "stored until" of the receipts (`None`: not kept).
    depositing: JoinSet<(u64, PeerId, Option<Timestamp>)>,
    /// The task draining this device's mailboxes, while it runs.
    draining: JoinSet<mailbox::Drained>,
    /// Drains in a row that could not reach some relay.
    drain_failures: u32,
    /// Pages it fetched, for the engine to store.
    pages: mpsc::Receiver<mailbox::Page>,
    pages_tx: mpsc::Sender<mailbox::Page>,
    /// When the next drain is due (ms); 0 on start.
    next_drain_ms: u64,
    /// The oldest epoch whose mailboxes may still hold mail for this
    /// device (`None`: as far back as relays keep mail).
    drain_from: Option<u64>,
    /// The epoch current when the running drain started, and the oldest
    /// epoch in which it left something (a message not placeable yet).
    drain_epoch: u64,
    drain_leftover: Option<u64>,
}

/// Starts the engine on the current tokio runtime: opens the network with
/// the account's libp2p key and resumes the outbox.
pub fn start<S: Store + Clone + 'static>(
    machine: CryptoMachine<S>,
    config: EngineConfig,
) -> Result<EngineHandle, EngineError> {
    let keypair = machine.account().libp2p_keypair().clone();
    let user_id = machine.account().user_id();
    let (net, net_events) = safemeet_net::spawn(keypair, config.net.clone())?;
    let store = machine.store().clone();
    let log_next = match store.get(Keyspace::EventLog, name::EVENT_LOG_NEXT)? {
        Some(b) => codec::decode::<u64>(&b, 16)?,
        None => 1,
    };
    let (commands, rx) = mpsc::channel(256);
    let (log_watch, log) = tokio::sync::watch::channel(log_next);
    let (pages_tx, pages) = mpsc::channel(1);
    let own_relays = config
        .net
        .relays
        .iter()
        .filter_map(Relay::from_addr)
        .collect();
    let handle = EngineHandle {
        commands,
        user_id,
        peer_id: net.peer_id(),
        log,
    };
    let mut engine = Engine {
        machine,
        store,
        net,
        config,
        pending: BTreeMap::new(),
        in_flight: JoinSet::new(),
        rooms: HashMap::new(),
        log_next,
        log_watch,
        by_event: HashMap::new(),
        subscribed: HashSet::new(),
        rooms_changed: true,
        publishing: JoinSet::new(),
        gossip_out: VecDeque::new(),
        gossip_window: HashSet::new(),
        unflushed_receipts: 0,
        log_durable: log_next,
        acks_due: Vec::new(),
        contact_cache: std::cell::RefCell::new(None),
        own_relays,
        former_relays: Vec::new(),
        mailboxes: HashMap::new(),
        depositing: JoinSet::new(),
        draining: JoinSet::new(),
        drain_failures: 0,
        pages,
        pages_tx,
        next_drain_ms: 0,
        drain_from: None,
        drain_epoch: 0,
        drain_leftover: None,
    };
    tokio::spawn(async move {
        if let Err(e) = engine.resume_outbox() {
            tracing::error!(error = %e, "could not read the outbox");
        }
        if let Ok(Some(bytes)) = engine.store.get(Keyspace::Contacts, name::FORMER_RELAYS) {
            engine.former_relays = codec::decode(&bytes, MAX_RECORD_BYTES).unwrap_or_default();
        }
        if let Err(e) = engine.announce_relays() {
            tracing::warn!(error = %e, "could not tell contacts about this device's relays");
        }
        engine.sync_subscriptions().await;
        engine.run(rx, net_events).await;
    });
    Ok(handle)
}

fn now() -> Timestamp {
    SystemClock.now()
}

/// The room id of the direct conversation between two users (the same
/// whichever of them asks).
pub fn dm_room_id(a: &UserId, b: &UserId) -> RoomId {
    dm_room(a, b).0
}

/// The id of the DM room between two users: both sides derive the same one.
fn dm_room(a: &UserId, b: &UserId) -> (RoomId, [u8; 32]) {
    let (id, topic) = safemeet_proto::room::dm_room(a, b);
    (id, *topic.as_bytes())
}

impl<S: Store + Clone + 'static> Engine<S> {
    async fn run(
        &mut self,
        mut commands: mpsc::Receiver<Command>,
        mut events: mpsc::Receiver<safemeet_net::Event>,
    ) {
        let mut tick = tokio::time::interval(self.config.tick);
        // A command taken from the queue while gathering a group of sends.
        let mut next: Option<Command> = None;
        loop {
            let command = match next.take() {
                Some(c) => Some(c),
                None => tokio::select! {
                    command = commands.recv() => match command {
                        Some(c) => Some(c),
                        None => return,
                    },
                    Some(event) = events.recv() => {
                        self.net_events(event, &mut events).await;
                        None
                    }
                    Some(done) = self.in_flight.join_next() => {
                        if let Ok((seq, peer, result)) = done {
                            self.delivery_done(seq, peer, result);
                        }
                        // Every finished delivery that is ready too, then refill.
                        while let Some(Some(Ok((seq, peer, result)))) =
                            futures::FutureExt::now_or_never(self.in_flight.join_next())
                        {
                            self.delivery_done(seq, peer, result);
                        }
                        self.deliver_due();
                        None
                    }
                    Some(done) = self.depositing.join_next() => {
                        if let Ok((seq, peer, until)) = done {
                            self.deposit_done(seq, peer, until);
                        }
                        self.deliver_due();
                        None
                    }
                    Some(page) = self.pages.recv() => {
                        self.mailbox_page(page).await;
                        None
                    }
                    Some(drained) = self.draining.join_next() => {
                        if let Ok(drained) = drained {
                            self.drain_done(&drained);
                        }
                        None
                    }
                    _ = tick.tick() => {
                        self.deliver_due();
                        self.drain_if_due();
                        None
                    }
                },
            };
            match command {
                Some(Command::Shutdown(done)) => {
                    if let Err(e) = self.machine.close_in_place() {
                        tracing::warn!(error = %e, "the crypto state did not close cleanly");
                    }
                    let _ = self.net.shutdown().await;
                    let _ = done.send(());
                    return;
                }
                Some(Command::Send(target, text, reply)) => {
                    // Sends waiting in the queue share one flush.
                    let mut group = vec![(target, text, reply)];
                    while group.len() < MAX_GROUP {
                        match commands.try_recv() {
                            Ok(Command::Send(t, x, r)) => group.push((t, x, r)),
                            Ok(other) => {
                                next = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    self.send_texts(group);
                }
                Some(command) => self.command(command).await,
                None => {}
            }
            let frames = self.publishable();
            self.publish(frames).await;
            if self.rooms_changed {
                self.sync_subscriptions().await;
            }
            self.publish_log_cursor();
        }
    }

    /// Tells watchers how far the event log goes, once that part is
    /// durable: a cursor a client has seen is never reused after a crash.
    fn publish_log_cursor(&mut self) {
        if self.log_next != self.log_durable {
            if let Err(e) = self.machine.flush() {
                tracing::error!(error = %e, "flush failed; new events not announced");
                return;
            }
            self.log_durable = self.log_next;
        }
        let next = self.log_next;
        self.log_watch.send_if_modified(|v| {
            let changed = *v != next;
            *v = next;
            changed
        });
    }

    /// Handles `first` and the network events already waiting behind it.
    /// Deliveries among them are stored, flushed once, then acknowledged.
    async fn net_events(
        &mut self,
        first: safemeet_net::Event,
        events: &mut mpsc::Receiver<safemeet_net::Event>,
    ) {
        let mut answers = Vec::new();
        let mut verdicts = Vec::new();
        let mut event = Some(first);
        let mut taken = 0;
        while let Some(e) = event.take() {
            taken += 1;
            match e {
                safemeet_net::Event::Delivery { frame, reply, peer } => {
                    let (answer, _) = self.receive(Source::Peer(peer), &frame);
                    answers.push((reply, answer));
                }
                safemeet_net::Event::Gossip {
                    topic,
                    frame,
                    id,
                    via,
                } => {
                    let verdict = if self.subscribed.contains(topic.as_bytes()) {
                        let (answer, stored) =
                            self.receive(Source::Gossip(*topic.as_bytes()), &frame);
                        self.acks_due.extend(stored);
                        // Only what was stored is passed on; nothing is
                        // penalised (one's own other devices refuse one's
                        // own messages, for one).
                        if answer == ACK {
                            Verdict::Accept
                        } else {
                            Verdict::Ignore
                        }
                    } else {
                        Verdict::Ignore
                    };
                    verdicts.push((id, via, verdict));
                }
                other => self.net_event(other).await,
            }
            if taken < MAX_GROUP {
                event = events.try_recv().ok();
            }
        }
        if answers.is_empty() && verdicts.is_empty() {
            return;
        }
        // Received messages are durable before they are answered; the event
        // log before a cursor is announced. Acknowledgements alone that add
        // no log entry need no flush (a lost one only means a redelivery).
        if !self.flush_received() {
            tracing::error!("flush failed; deliveries not acknowledged");
            return;
        }
        if !answers.is_empty() {
            let answers = answers.into_iter().map(|(r, a)| (r, a.to_vec())).collect();
            let _ = self.net.reply_many(answers).await;
        }
        if !verdicts.is_empty() {
            let _ = self.net.report_many(verdicts).await;
        }
        let acks = std::mem::take(&mut self.acks_due);
        self.send_acks(acks);
    }

    /// Makes what was received (and the event log) durable, if anything
    /// is waiting; false when the flush failed.
    fn flush_received(&mut self) -> bool {
        if self.unflushed_receipts > 0 || self.log_next != self.log_durable {
            if let Err(e) = self.machine.flush() {
                tracing::error!(error = %e, "flush failed");
                return false;
            }
            self.unflushed_receipts = 0;
            self.log_durable = self.log_next;
        }
        true
    }

    /// Acknowledges room messages that came over gossip, one frame per
    /// sending device, directly.
    fn send_acks(&mut self, stored: Vec<(UserId, DeviceId, EventId)>) {
        let mut by_device: BTreeMap<DeviceId, (UserId, Vec<EventId>)> = BTreeMap::new();
        for (user, device, id) in stored {
            by_device
                .entry(device)
                .or_insert((user, Vec::new()))
                .1
                .push(id);
        }
        for (device, (user, ids)) in by_device {
            if self.in_flight.len() >= MAX_IN_FLIGHT * 4 {
                // Too much outstanding: the senders deliver directly instead.
                tracing::debug!("acknowledgements dropped; deliveries pending");
                return;
            }
            let Ok(Some((peer, addrs))) = self.target(&user, &device) else {
                continue;
            };
            for chunk in ids.chunks(safemeet_proto::limits::MAX_RECEIPT_EVENTS) {
                let frame = Envelope::Acks(safemeet_proto::envelope::AckEnvelope {
                    event_ids: chunk.to_vec(),
                })
                .to_frame();
                let Ok(frame) = frame else {
                    continue;
                };
                let (net, addrs) = (self.net.clone(), addrs.clone());
                // Not retried: a lost acknowledgement only means the sender
                // delivers the message directly, and that is answered too.
                self.in_flight.spawn(async move {
                    let result = net.deliver(peer, addrs, frame).await;
                    (ACK_SEQ, peer, result)
                });
            }
        }
    }

    async fn command(&mut self, command: Command) {
        match command {
            Command::Invite(tx) => {
                let _ = tx.send(self.invite().await);
            }
            Command::AddContact(text, pet, tx) => {
                let _ = tx.send(self.add_contact(&text, pet));
            }
            Command::Contacts(tx) => {
                let _ = tx.send(self.contacts());
            }
            Command::RemoveContact(user, tx) => {
                let _ = tx.send(self.remove_contact(&user));
            }
            Command::Resolve(target, tx) => {
                let _ = tx.send(self.resolve(&target));
            }
            Command::Messages(with, limit, tx) => {
                let _ = tx.send(self.messages(with, limit));
            }
            Command::Send(target, text, tx) => self.send_texts(vec![(target, text, tx)]),
            Command::MessagesOf(target, limit, tx) => {
                let result = self
                    .target_room(&target)
                    .and_then(|room| self.timeline(&room, limit));
                let _ = tx.send(result);
            }
            Command::CreateRoom(name, members, tx) => {
                self.rooms_changed = true;
                let result = self.create_room(&name, &members);
                let _ = tx.send(result);
                self.deliver_due();
            }
            Command::RoomInvite(room, contact, tx) => {
                self.rooms_changed = true;
                let result = self.room_invite(&room, &contact);
                let _ = tx.send(result);
                self.deliver_due();
            }
            Command::RoomLeave(room, tx) => {
                self.rooms_changed = true;
                let result = self.room_leave(&room);
                let _ = tx.send(result);
                self.deliver_due();
            }
            Command::Rooms(tx) => {
                let _ = tx.send(self.rooms_list());
            }
            Command::Events(cursor, limit, tx) => {
                let _ = tx.send(self.events(cursor, limit));
            }
            Command::ListenAddrs(tx) => {
                let _ = tx.send(self.net.listen_addrs().await.map_err(Into::into));
            }
            Command::RoomMeshPeers(room, tx) => {
                let topic = self.group_room(&room).and_then(|r| {
                    r.ok_or_else(|| EngineError::InvalidInput(format!("no room {room:?}")))
                });
                let result = match topic {
                    Ok(r) => self
                        .net
                        .mesh_peers(RoomTopic::from_bytes(r.topic))
                        .await
                        .map_err(Into::into),
                    Err(e) => Err(e),
                };
                let _ = tx.send(result);
            }
            Command::Shutdown(_) => {}
        }
    }

    async fn invite(&mut self) -> Result<String, EngineError> {
        let fallback_key = self.machine.fallback_key(now())?;
        let account = self.machine.account();
        let device_list = account.device_list().signed().clone();
        let certificates = vec![account.certificate().clone()];
        let profile = account.profile().signed().clone();
        let addrs = self
            .net
            .listen_addrs()
            .await?
            .into_iter()
            .take(invite::MAX_INVITE_ADDRS)
            .map(|a| a.to_string())
            .collect();
        let relays = if self.own_relays.is_empty() {
            None
        } else {
            let list = self.own_relays.iter().map(|r| r.addr.to_string()).collect();
            Some(self.machine.sign_relay_list(list, now())?)
        };
        Invite {
            version: INVITE_VERSION,
            device_list,
            certificates,
            fallback_key,
            profile,
            addrs,
            relays,
        }
        .to_text()
    }

    fn add_contact(&mut self, text: &str, pet: Option<String>) -> Result<UserId, EngineError> {
        let invite = Invite::from_text(text)?;
        let user = invite.device_list.decode_body()?.user_id;
        if user == self.machine.account().user_id() {
            return Err(EngineError::BadInvite("this is your own invite"));
        }
        self.machine
            .add_device_list(&invite.device_list, &invite.certificates)?;
        let profile = safemeet_crypto::certificate::verify_profile(&invite.profile, &user, None)?;
        let inviting = invite.fallback_key.decode_body()?.device_id;
        if let Some(signed) = &invite.relays
            && self.machine.verify_relay_list(signed)?.device_id != inviting
        {
            return Err(EngineError::BadInvite("its relay list is another device's"));
        }
        // The first Olm session starts from the signed fallback key; no round trip.
        if !self.machine.has_session(&inviting)? {
            self.machine
                .create_outbound_session(&inviting, &invite.fallback_key, now())?;
        }
        let addrs: Vec<String> = invite
            .addrs
            .iter()
            .filter(|a| a.parse::<Multiaddr>().is_ok())
            .cloned()
            .collect();
        let record = ContactRecord {
            version: VERSION,
            user_id: user,
            pet_name: pet,
            username: profile.username.as_str().to_owned(),
            display_name: profile.display_name.as_str().to_owned(),
            addrs: vec![(inviting, addrs)],
        };
        let mut index = self.contact_index()?;
        if !index.users.contains(&user) {
            index.users.push(user);
        }
        let mut batch = self.store.batch();
        self.store.batch_put_value(
            &mut batch,
            Keyspace::Contacts,
            &name::contact(&user),
            &record,
            MAX_RECORD_BYTES,
        )?;
        self.commit_contacts(batch, &index)?;
        if let Some(signed) = &invite.relays {
            self.keep_relay_list(signed)?;
        }
        Ok(user)
    }

    /// Commits `batch` with the contact index, flushed.
    fn commit_contacts(
        &self,
        mut batch: EncryptedBatch,
        index: &ContactIndex,
    ) -> Result<(), EngineError> {
        self.store.batch_put_value(
            &mut batch,
            Keyspace::Contacts,
            name::CONTACT_INDEX,
            index,
            MAX_RECORD_BYTES,
        )?;
        *self.contact_cache.borrow_mut() = None;
        self.store.apply(batch)?;
        self.store.flush()?;
        Ok(())
    }

    /// Every contact record, in the order they were added; read from the
    /// store once and kept until the contacts change.
    fn contact_records(&self) -> Result<Arc<Vec<ContactRecord>>, EngineError> {
        if let Some(cached) = self.contact_cache.borrow().as_ref() {
            return Ok(cached.clone());
        }
        let mut records = Vec::new();
        for user in self.contact_index()?.users {
            if let Some(bytes) = self.store.get(Keyspace::Contacts, &name::contact(&user))? {
                records.push(codec::decode::<ContactRecord>(&bytes, MAX_RECORD_BYTES)?);
            }
        }
        let records = Arc::new(records);
        *self.contact_cache.borrow_mut() = Some(records.clone());
        Ok(records)
    }

    fn contacts(&mut self) -> Result<Vec<Contact>, EngineError> {
        let records = self.contact_records()?;
        let mut contacts = Vec::with_capacity(records.len());
        for c in records.iter() {
            let mut relays = Vec::new();
            for device in self.machine.user_devices(&c.user_id)? {
                let key = name::relay_list(&device.device_id);
                if let Some(bytes) = self.store.get(Keyspace::Contacts, &key)? {
                    // Checked when it was kept.
                    let list = Signed::<RelayList>::from_bytes(&bytes)?.decode_body()?;
                    relays.extend(list.relays);
                }
            }
            relays.sort();
            relays.dedup();
            contacts.push(Contact {
                user_id: c.user_id,
                pet_name: c.pet_name.clone(),
                username: c.username.clone(),
                display_name: c.display_name.clone(),
                relays,
            });
        }
        Ok(contacts)
    }

    fn remove_contact(&mut self, user: &UserId) -> Result<(), EngineError> {
        let mut index = self.contact_index()?;
        if !index.users.contains(user) {
            return Err(EngineError::UnknownContact(*user));
        }
        index.users.retain(|u| u != user);
        let mut batch = self.store.batch();
        self.store
            .batch_delete(&mut batch, Keyspace::Contacts, &name::contact(user))?;
        self.commit_contacts(batch, &index)
    }

    /// A contact by pet name, then username, then user id text.
    fn resolve(&self, target: &str) -> Result<UserId, EngineError> {
        let contacts = self.contact_records()?;
        if let Some(c) = contacts
            .iter()
            .find(|c| c.pet_name.as_deref() == Some(target))
        {
            return Ok(c.user_id);
        }
        let by_name: Vec<&ContactRecord> =
            contacts.iter().filter(|c| c.username == target).collect();
        match by_name.as_slice() {
            [one] => return Ok(one.user_id),
            [] => {}
            _ => {
                return Err(EngineError::InvalidInput(format!(
                    "several contacts are called {target:?}; use a pet name or the user id"
                )));
            }
        }
        if let Ok(user) = target.parse::<UserId>()
            && contacts.iter().any(|c| c.user_id == user)
        {
            return Ok(user);
        }
        Err(EngineError::InvalidInput(format!("no contact {target:?}")))
    }

    fn contact_index(&self) -> Result<ContactIndex, EngineError> {
        Ok(
            match self.store.get(Keyspace::Contacts, name::CONTACT_INDEX)? {
                Some(b) => codec::decode(&b, MAX_RECORD_BYTES)?,
                None => ContactIndex {
                    version: VERSION,
                    users: Vec::new(),
                },
            },
        )
    }

    fn contact(&self, user: &UserId) -> Result<Option<ContactRecord>, EngineError> {
        Ok(self
            .contact_records()?
            .iter()
            .find(|c| c.user_id == *user)
            .cloned())
    }

    fn room(&mut self, room: &RoomId) -> Result<Option<RoomRecord>, EngineError> {
        if let Some(r) = self.rooms.get(room) {
            return Ok(Some(r.clone()));
        }
        let Some(bytes) = self.store.get(Keyspace::Rooms, &name::room(room))? else {
            return Ok(None);
        };
        let record = RoomRecord::decode(&bytes)?;
        self.rooms.insert(*room, record.clone());
        Ok(Some(record))
    }

    fn dm(&mut self, with: UserId) -> Result<RoomRecord, EngineError> {
        let me = self.machine.account().user_id();
        let (room_id, topic) = dm_room(&me, &with);
        Ok(self.room(&room_id)?.unwrap_or(RoomRecord {
            version: VERSION,
            room_id,
            dm_with: Some(with),
            name: None,
            members: vec![me, with],
            admins: Vec::new(),
            secret: None,
            left: false,
            topic,
            lamport: 0,
            next_seq: 0,
            state_lamport: 0,
        }))
    }

    /// The room a send goes to.
    fn send_room(&mut self, target: &Target) -> Result<RoomRecord, EngineError> {
        match target {
            Target::Name(name) => self.target_room(name),
            Target::User(user) => {
                if self.contact(user)?.is_none() {
                    return Err(EngineError::UnknownContact(*user));
                }
                self.dm(*user)
            }
        }
    }

    /// Encrypts an event for a room and commits it with its timeline entry
    /// (for messages) and event-log entry, flushed, then queues its delivery.
    fn send_event(
        &mut self,
        room: RoomRecord,
        content: EventContent,
    ) -> Result<EventId, EngineError> {
        let staged = self.stage_event(room, content)?;
        self.release_one(staged)
    }

    /// Flushes and queues one staged send.
    fn release_one(
        &mut self,
        (unflushed, meta): (Unflushed<RoomSend>, Vec<u8>),
    ) -> Result<EventId, EngineError> {
        let mut sent = self.machine.release(vec![unflushed])?;
        self.log_durable = self.log_next;
        let sent = sent.pop().ok_or(EngineError::Stopped)?;
        self.queue_sent(&sent, &meta)?;
        Ok(sent.event_id)
    }

    /// Queues the envelopes of a released send for delivery. A message in
    /// a group room is also published on the room's topic (once the gossip
    /// window has room), and delivered directly only to the members that
    /// have not acknowledged it a gossip grace after it was published.
    fn queue_sent(&mut self, sent: &RoomSend, meta: &[u8]) -> Result<(), EngineError> {
        for out in &sent.key_shares {
            self.track(out.outbox_seq, outbox_item(out, meta), 0)?;
        }
        let message = &sent.message;
        let is_text = codec::decode::<OutboxMeta>(meta, 64)?.timeline.is_some();
        let topic = match message.destination {
            Destination::Room(room) => self
                .rooms
                .get(&room)
                .filter(|r| r.dm_with.is_none() && is_text)
                .map(|r| RoomTopic::from_bytes(r.topic)),
            Destination::Device(..) => None,
        };
        let delay = match topic {
            // Not due until published; see `publishable`.
            Some(_) => NOT_DUE,
            None => 0,
        };
        let tracked = self.track(message.outbox_seq, outbox_item(message, meta), delay)?;
        if let Some(topic) = topic
            && tracked
        {
            self.gossip_out.push_back((message.outbox_seq, topic));
        }
        Ok(())
    }

    /// Takes the room messages the gossip window lets out now, starting
    /// their gossip grace.
    fn publishable(&mut self) -> Vec<(RoomTopic, Vec<u8>)> {
        let mut frames = Vec::new();
        let due = now()
            .as_millis()
            .saturating_add(self.config.gossip_grace.as_millis() as u64);
        while self.gossip_window.len() < self.config.gossip_window.max(1) {
            let Some((seq, topic)) = self.gossip_out.pop_front() else {
                break;
            };
            // Acknowledged or finished meanwhile (over direct delivery):
            // nothing left to publish.
            let Some(pending) = self.pending.get_mut(&seq) else {
                continue;
            };
            if pending.delivered_once {
                continue;
            }
            // An envelope the machine made always frames; one that did not
            // would be passed over by direct delivery too (`deliver_due`).
            let Ok(frame) = pending.item.frame() else {
                continue;
            };
            pending.next_try_ms = due;
            self.gossip_window.insert(seq);
            frames.push((topic, frame));
        }
        frames
    }

    /// Publishes frames over gossip from a task, a bounded number at once.
    async fn publish(&mut self, frames: Vec<(RoomTopic, Vec<u8>)>) {
        if frames.is_empty() {
            return;
        }
        while self.publishing.len() >= MAX_PUBLISHING {
            let _ = self.publishing.join_next().await;
        }
        let net = self.net.clone();
        self.publishing.spawn(async move {
            // Not reaching anyone now is fine: direct delivery follows.
            match net.publish_many(frames).await {
                Ok(results) => {
                    let missed = results.iter().filter(|r| r.is_err()).count();
                    if missed > 0 {
                        tracing::debug!(missed, "room messages not published");
                    }
                }
                Err(e) => tracing::debug!(error = %e, "room messages not published"),
            }
        });
    }

    /// Sends a group of texts with one flush: each is encrypted and
    /// committed in turn, then all are released together. Each caller gets
    /// its own answer.
    fn send_texts(&mut self, group: Vec<(Target, String, Reply<EventId>)>) {
        let mut staged = Vec::with_capacity(group.len());
        let mut waiting = Vec::with_capacity(group.len());
        for (target, text, reply) in group {
            let result = self
                .send_room(&target)
                .and_then(|room| self.stage_text(room, &text));
            match result {
                Ok((unflushed, meta)) => {
                    staged.push(unflushed);
                    waiting.push((reply, meta));
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            }
        }
        if staged.is_empty() {
            return;
        }
        match self.machine.release(staged) {
            Ok(sent) => {
                self.log_durable = self.log_next;
                for (sent, (reply, meta)) in sent.iter().zip(waiting) {
                    let result = self.queue_sent(sent, &meta).map(|()| sent.event_id);
                    let _ = reply.send(result);
                }
            }
            Err(e) => {
                let message = e.to_string();
                for (reply, _) in waiting {
                    let _ = reply.send(Err(EngineError::Commit(message.clone())));
                }
            }
        }
        self.deliver_due();
    }

    fn stage_text(
        &mut self,
        room: RoomRecord,
        text: &str,
    ) -> Result<(Unflushed<RoomSend>, Vec<u8>), EngineError> {
        let body = MessageText::new(text).map_err(|e| EngineError::InvalidInput(e.to_string()))?;
        self.stage_event(
            room,
            EventContent::Message(Message {
                body,
                reply_to: None,
            }),
        )
    }

    /// Encrypts an event for a room and commits it (not flushed) with its
    /// timeline entry (for messages) and event-log entry. Returns it with
    /// its outbox meta, to be released.
    fn stage_event(
        &mut self,
        mut room: RoomRecord,
        content: EventContent,
    ) -> Result<(Unflushed<RoomSend>, Vec<u8>), EngineError> {
        if room.left {
            return Err(EngineError::InvalidInput("you left this room".into()));
        }
        let text = match &content {
            EventContent::Message(m) => Some(m.body.as_str().to_owned()),
            _ => None,
        };
        room.lamport = room.lamport.saturating_add(1);
        if matches!(content, EventContent::RoomState(_)) {
            room.state_lamport = room.lamport;
        }
        let seq = room.next_seq;
        if text.is_some() {
            room.next_seq += 1;
        }
        let me = self.machine.account().user_id();
        let device = self.machine.account().device_id();
        let ts = now();
        let meta = codec::encode(&OutboxMeta {
            version: VERSION,
            timeline: text.as_ref().map(|_| (room.room_id, seq)),
        })?;
        let store = self.store.clone();
        let log_seq = self.log_next;
        let room_for_writes = room.clone();
        let members = room.members.clone();
        let writes = |event_id: &EventId| -> Result<EncryptedBatch, safemeet_crypto::Error> {
            let mut batch = store.batch();
            match &text {
                Some(text) => {
                    let entry = TimelineEntry {
                        event_id: *event_id,
                        sender: me,
                        sender_device: device,
                        lamport: room_for_writes.lamport,
                        ts,
                        text: text.clone(),
                        state: MessageState::Sent,
                    };
                    stage_message(&store, &mut batch, &room_for_writes, seq, &entry, log_seq)?;
                }
                None => stage_room(&store, &mut batch, &room_for_writes)?,
            }
            Ok(batch)
        };
        let unflushed = self.machine.encrypt_room_event_deferred(
            RoomMessage {
                room_id: room.room_id,
                topic: room.topic,
                members: &members,
                content,
                lamport: room.lamport,
            },
            ts,
            writes,
            &meta,
        )?;
        if text.is_some() {
            self.log_next += 1;
        }
        self.rooms.insert(room.room_id, room);
        Ok((unflushed, meta))
    }

    fn messages(&mut self, with: UserId, limit: usize) -> Result<Vec<TimelineEntry>, EngineError> {
        let room = self.dm(with)?;
        self.timeline(&room, limit)
    }

    /// The `limit` latest messages of a room (by arrival), oldest first in
    /// Lamport order.
    fn timeline(&self, room: &RoomRecord, limit: usize) -> Result<Vec<TimelineEntry>, EngineError> {
        let start = room.next_seq.saturating_sub(limit as u64);
        let after = start.checked_sub(1);
        let rows = self.store.scan_ordered(
            Keyspace::Timeline,
            &name::timeline(&room.room_id),
            after,
            limit,
        )?;
        let mut out: Vec<TimelineEntry> = Vec::with_capacity(rows.len());
        for (_, bytes) in rows {
            out.push(codec::decode(&bytes, MAX_RECORD_BYTES)?);
        }
        // Shown in Lamport order, ties broken by sender and event id, so
        // every member sees the same order whatever the arrival order was.
        out.sort_by(|a, b| {
            (a.lamport, a.sender, a.event_id).cmp(&(b.lamport, b.sender, b.event_id))
        });
        Ok(out)
    }

    fn events(&self, cursor: u64, limit: usize) -> Result<Vec<(u64, LogEntry)>, EngineError> {
        let after = if cursor == 0 { None } else { Some(cursor) };
        self.store
            .scan_ordered(Keyspace::EventLog, name::EVENT_LOG, after, limit)?
            .into_iter()
            .map(|(seq, bytes)| Ok((seq, codec::decode(&bytes, MAX_RECORD_BYTES)?)))
            .collect()
    }

    /// Loads every outbox item into the delivery queue (after a restart).
    fn resume_outbox(&mut self) -> Result<(), EngineError> {
        let mut after = None;
        loop {
            let items = self.machine.outbox(after, 256)?;
            if items.is_empty() {
                return Ok(());
            }
            for (seq, item) in items {
                after = Some(seq);
                self.track(seq, item, 0)?;
            }
        }
    }

    /// Works out which devices an outbox item goes to and queues it, first
    /// tried after `delay_ms` ([`NOT_DUE`]: not until that is changed).
    /// Returns whether it was queued (it has a known recipient device).
    fn track(&mut self, seq: u64, item: OutboxItem, delay_ms: u64) -> Result<bool, EngineError> {
        let mut targets = Vec::new();
        match item.destination {
            Destination::Device(user, device) => {
                if let Some(t) = self.target(&user, &device)? {
                    targets.push(t);
                }
            }
            Destination::Room(room_id) => {
                let members = self.room(&room_id)?.map(|r| r.members).unwrap_or_default();
                for user in members {
                    let devices: Vec<DeviceId> = self
                        .machine
                        .user_devices(&user)?
                        .into_iter()
                        .map(|d| d.device_id)
                        .collect();
                    for device in devices {
                        if let Some(t) = self.target(&user, &device)? {
                            targets.push(t);
                        }
                    }
                }
            }
        }
        if targets.is_empty() {
            // Nobody to deliver to (yet): keep it; it is looked at again on restart.
            tracing::debug!(seq, "an outbox item has no known recipient device");
            return Ok(false);
        }
        let event_id = match &item.envelope {
            Envelope::Room(env) => safemeet_crypto::machine::event_id(env).ok(),
            _ => None,
        };
        if let Some(id) = event_id {
            self.by_event.insert(id, seq);
        }
        self.pending.insert(
            seq,
            Pending {
                item,
                event_id,
                targets,
                in_flight: HashSet::new(),
                delivered_once: false,
                attempts: 0,
                next_try_ms: match delay_ms {
                    0 => 0,
                    NOT_DUE => NOT_DUE,
                    d => now().as_millis().saturating_add(d),
                },
            },
        );
        Ok(true)
    }

    /// Forgets a pending item that every target has acknowledged, and
    /// removes those from the outbox.
    fn finish(&mut self, seqs: &[u64]) {
        for seq in seqs {
            self.gossip_window.remove(seq);
            if let Some(p) = self.pending.remove(seq)
                && let Some(id) = p.event_id
            {
                self.by_event.remove(&id);
            }
        }
        if !seqs.is_empty()
            && let Err(e) = self.machine.remove_from_outbox(seqs)
        {
            tracing::warn!(error = %e, "could not clear outbox items");
        }
    }

    /// Acknowledgements from `peer` of room messages it got over gossip.
    fn acked(&mut self, peer: PeerId, ids: &[EventId]) -> Result<(), EngineError> {
        let mut first = Vec::new();
        let mut finished = Vec::new();
        let mut later = Vec::new();
        for id in ids {
            let Some(&seq) = self.by_event.get(id) else {
                later.push(*id);
                continue;
            };
            let Some(p) = self.pending.get_mut(&seq) else {
                continue;
            };
            let before = p.targets.len();
            p.targets.retain(|(q, _)| *q != peer);
            if p.targets.len() == before {
                continue;
            }
            if !p.delivered_once {
                p.delivered_once = true;
                self.gossip_window.remove(&seq);
                first.push(seq);
            }
            if p.targets.is_empty() && p.in_flight.is_empty() {
                finished.push(seq);
            }
        }
        let mut recorded = Ok(());
        if !first.is_empty() {
            let mut batch = self.store.batch();
            recorded = first
                .into_iter()
                .try_for_each(|seq| self.stage_state(&mut batch, seq, MessageState::Delivered))
                .and_then(|()| Ok(self.store.apply(batch)?));
        }
        // Done either way: the peers did acknowledge.
        self.finish(&finished);
        recorded?;
        self.acked_after_relay(&later)
    }

    /// Acknowledgements of messages no longer in the outbox because relays
    /// keep them: the recipient drained its mailbox; they are delivered.
    fn acked_after_relay(&mut self, ids: &[EventId]) -> Result<(), EngineError> {
        let mut batch = self.store.batch();
        for id in ids {
            let key = name::relayed(id);
            let Some(bytes) = self.store.get(Keyspace::Rooms, &key)? else {
                continue;
            };
            let (room_id, tseq): (RoomId, u64) = codec::decode(&bytes, 64)?;
            self.stage_entry_state(&mut batch, room_id, tseq, MessageState::Delivered)?;
            self.store.batch_delete(&mut batch, Keyspace::Rooms, &key)?;
        }
        if !batch.is_empty() {
            self.store.apply(batch)?;
        }
        Ok(())
    }

    fn target(
        &mut self,
        user: &UserId,
        device: &DeviceId,
    ) -> Result<Option<(PeerId, Vec<Multiaddr>)>, EngineError> {
        let Some(info) = self.machine.device(device)? else {
            return Ok(None);
        };
        let cert = info.certificate.decode_body()?;
        let Ok(peer) = PeerId::from_bytes(&cert.peer_id) else {
            return Ok(None);
        };
        if !self.mailboxes.contains_key(&peer) {
            let relays = self.relay_list(device).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "a contact's relay list is unusable; ignored");
                Vec::new()
            });
            self.mailboxes.insert(
                peer,
                DeviceMailbox {
                    key: cert.mailbox_key,
                    relays,
                },
            );
        }
        let addrs = self
            .contact(user)?
            .and_then(|c| c.addrs.into_iter().find(|(d, _)| d == device))
            .map(|(_, a)| a.iter().filter_map(|s| s.parse().ok()).collect())
            .unwrap_or_default();
        Ok(Some((peer, addrs)))
    }

    /// Keeps a contact device's relay list (checked to be that device's,
    /// from an invite or over Olm) unless a list as new is kept already,
    /// and uses it for deliveries already waiting too.
    fn keep_relay_list(&mut self, signed: &Signed<RelayList>) -> Result<(), EngineError> {
        let list = signed.decode_body()?;
        let device = list.device_id;
        let key = name::relay_list(&device);
        if let Some(bytes) = self.store.get(Keyspace::Contacts, &key)? {
            let kept = Signed::<RelayList>::from_bytes(&bytes)?.decode_body()?;
            if kept.issued_at >= list.issued_at {
                return Ok(());
            }
        }
        self.store
            .put(Keyspace::Contacts, &key, &signed.to_bytes()?)?;
        let Some(info) = self.machine.device(&device)? else {
            return Ok(());
        };
        let cert = info.certificate.decode_body()?;
        if let Ok(peer) = PeerId::from_bytes(&cert.peer_id) {
            let relays = self.relay_list(&device)?;
            self.mailboxes.insert(
                peer,
                DeviceMailbox {
                    key: cert.mailbox_key,
                    relays,
                },
            );
        }
        Ok(())
    }

    /// Tells every contact device when this device's relays changed since
    /// it last did (or since its invites, which carry them): a signed
    /// list over Olm, delivered (or left on their relays) like a message.
    fn announce_relays(&mut self) -> Result<(), EngineError> {
        let relays: Vec<String> = self.own_relays.iter().map(|r| r.addr.to_string()).collect();
        let announced = match self.store.get(Keyspace::Contacts, name::OWN_RELAYS)? {
            Some(bytes) => codec::decode::<Vec<String>>(&bytes, MAX_RECORD_BYTES)?,
            None => Vec::new(),
        };
        if announced == relays {
            return Ok(());
        }
        // Relays dropped from the list are still drained for as long as
        // they keep mail: contacts may leave mail there until they hear.
        let keep_ms = self
            .config
            .mailbox_catch_up_epochs
            .saturating_add(1)
            .saturating_mul(safemeet_crypto::mailbox::EPOCH_MILLIS);
        let until = now().as_millis().saturating_add(keep_ms);
        let mut former: Vec<(String, u64)> = self
            .former_relays
            .iter()
            .filter(|(addr, _)| !relays.contains(addr))
            .cloned()
            .collect();
        for addr in announced.iter().filter(|a| !relays.contains(a)) {
            if !former.iter().any(|(a, _)| a == addr) {
                former.push((addr.clone(), until));
            }
        }
        self.store.put(
            Keyspace::Contacts,
            name::FORMER_RELAYS,
            &codec::encode(&former)?,
        )?;
        self.former_relays = former;
        let signed = self.machine.sign_relay_list(relays.clone(), now())?;
        let meta = codec::encode(&OutboxMeta {
            version: VERSION,
            timeline: None,
        })?;
        for user in self.contact_index()?.users {
            for device in self.machine.user_devices(&user)? {
                let event = ToDeviceEvent::RelayList(signed.clone());
                let queued = self
                    .machine
                    .encrypt_to_device(
                        user,
                        device.device_id,
                        event,
                        EncryptedBatch::default(),
                        &meta,
                    )
                    .map_err(EngineError::from)
                    .and_then(|out| self.track(out.outbox_seq, outbox_item(&out, &meta), 0));
                if let Err(e) = queued {
                    tracing::warn!(error = %e, "a contact device was not told of the new relays");
                }
            }
        }
        self.store.put(
            Keyspace::Contacts,
            name::OWN_RELAYS,
            &codec::encode(&relays)?,
        )?;
        Ok(())
    }

    /// The relays a contact device listed, as far as they parse.
    fn relay_list(&mut self, device: &DeviceId) -> Result<Vec<Relay>, EngineError> {
        let Some(bytes) = self
            .store
            .get(Keyspace::Contacts, &name::relay_list(device))?
        else {
            return Ok(Vec::new());
        };
        let signed = Signed::<RelayList>::from_bytes(&bytes)?;
        let list = self.machine.verify_relay_list(&signed)?;
        Ok(list
            .relays
            .iter()
            .filter_map(|a| a.parse::<Multiaddr>().ok())
            .filter_map(|a| Relay::from_addr(&a))
            .take(self.config.mailbox_copies)
            .collect())
    }

    /// Leaves an item for `peer`, which could not be reached, on its
    /// relays. Returns false when it has none.
    fn deposit(&mut self, seq: u64, peer: PeerId) -> bool {
        let Some(mailbox) = self.mailboxes.get(&peer) else {
            return false;
        };
        if mailbox.relays.is_empty() || self.depositing.len() >= MAX_IN_FLIGHT {
            return false;
        }
        let Some(pending) = self.pending.get_mut(&seq) else {
            return false;
        };
        use safemeet_crypto::mailbox::{epoch_of, epoch_public_key, mailbox_id, seal};
        // Sealed to this epoch's mailbox key: every copy is fresh bytes.
        let sealed = epoch_public_key(&mailbox.key, epoch_of(now())).and_then(|key| {
            let frame = pending.item.frame()?;
            Ok((mailbox_id(&key), seal(&key, &frame)?))
        });
        let Ok((id, frame)) = sealed else {
            return false;
        };
        pending.in_flight.insert(peer);
        let (net, relays) = (self.net.clone(), mailbox.relays.clone());
        self.depositing.spawn(async move {
            let until = mailbox::deposit(net, id, relays, frame, now()).await;
            (seq, peer, until)
        });
        true
    }

    /// Forgets an item once no device is left to deliver it to.
    fn finish_if_done(&mut self, seq: u64) {
        let done = self
            .pending
            .get(&seq)
            .is_some_and(|p| p.targets.is_empty() && p.in_flight.is_empty());
        if done {
            self.finish(&[seq]);
        }
    }

    /// Records the outcome of a deposit on relays.
    fn deposit_done(&mut self, seq: u64, peer: PeerId, until: Option<Timestamp>) {
        let Some(pending) = self.pending.get_mut(&seq) else {
            return;
        };
        pending.in_flight.remove(&peer);
        let Some(until) = until else {
            self.retry_later(seq);
            // Acknowledged meanwhile by its last device (over gossip).
            self.finish_if_done(seq);
            return;
        };
        pending.targets.retain(|(p, _)| *p != peer);
        if !pending.delivered_once {
            let mut batch = self.store.batch();
            let staged = self
                .stage_state(&mut batch, seq, MessageState::StoredAtRelay { until })
                .and_then(|()| Ok(self.store.apply(batch)?));
            if let Err(e) = staged {
                tracing::warn!(error = %e, "could not record a deposit");
            }
        }
        self.finish_if_done(seq);
    }

    /// Starts draining this device's mailboxes when that is due and no
    /// drain runs.
    fn drain_if_due(&mut self) {
        let now = now();
        if (self.own_relays.is_empty() && self.former_relays.is_empty())
            || !self.draining.is_empty()
            || now.as_millis() < self.next_drain_ms
        {
            return;
        }
        self.next_drain_ms = now
            .as_millis()
            .saturating_add(self.config.mailbox_poll.as_millis() as u64);
        let current = safemeet_crypto::mailbox::epoch_of(now);
        // Nothing is older than this device (its certificate), nor kept
        // longer than relays keep mail.
        let born = self
            .machine
            .account()
            .certificate()
            .decode_body()
            .map_or(0, |c| safemeet_crypto::mailbox::epoch_of(c.created_at));
        let oldest = current
            .saturating_sub(self.config.mailbox_catch_up_epochs)
            .max(born);
        // Never fewer than the current and the previous epoch.
        let from = self
            .drain_from
            .or_else(
                || match self.store.get(Keyspace::Contacts, name::DRAIN_FROM) {
                    Ok(Some(bytes)) => codec::decode::<u64>(&bytes, 16).ok(),
                    _ => None,
                },
            )
            .unwrap_or(oldest)
            .max(oldest)
            .min(current.saturating_sub(1));
        self.drain_epoch = current;
        self.drain_leftover = None;
        let account = self.machine.account();
        let keys = (from..=current).map(|e| account.mailbox_key(e)).collect();
        // Former relays, while they may hold mail; one that is gone does
        // not hold up the others (its failures do not count).
        let now_ms = now.as_millis();
        self.former_relays.retain(|(_, until)| *until > now_ms);
        let former: Vec<Relay> = self
            .former_relays
            .iter()
            .filter_map(|(a, _)| a.parse::<Multiaddr>().ok())
            .filter_map(|a| Relay::from_addr(&a))
            .collect();
        let (net, relays, pages) = (
            self.net.clone(),
            self.own_relays.clone(),
            self.pages_tx.clone(),
        );
        self.draining
            .spawn(async move { mailbox::drain(net, relays, former, keys, pages).await });
    }

    /// A relay that could not be asked (often: still being dialled on
    /// start) is asked again soon, backing off up to the poll interval.
    fn drain_done(&mut self, drained: &mailbox::Drained) {
        tracing::debug!(
            fetched = drained.fetched,
            failed = drained.failed,
            "mailboxes drained"
        );
        if !drained.failed {
            self.drain_failures = 0;
            // Every relay answered for every epoch looked at: the next
            // drain starts at the previous epoch, or at the oldest one
            // where something was left.
            let previous = self.drain_epoch.saturating_sub(1);
            let from = self.drain_leftover.map_or(previous, |e| e.min(previous));
            self.drain_from = Some(from);
            if let Err(e) = codec::encode(&from)
                .map_err(EngineError::from)
                .and_then(|b| Ok(self.store.put(Keyspace::Contacts, name::DRAIN_FROM, &b)?))
            {
                tracing::warn!(error = %e, "could not record how far mailboxes are drained");
            }
            return;
        }
        self.drain_failures = self.drain_failures.saturating_add(1);
        self.next_drain_ms = self.backoff(self.drain_failures, self.config.mailbox_poll);
    }

    /// Stores a page fetched from a mailbox as direct deliveries are
    /// stored, makes it durable, and tells the drain what the relay may
    /// delete: all but what cannot be placed yet.
    async fn mailbox_page(&mut self, page: mailbox::Page) {
        let mut taken = Vec::with_capacity(page.envelopes.len());
        let key = self.machine.account().mailbox_key(page.epoch);
        // Deposits arrive in the order they were made, not sent: to-device
        // messages (room keys, room state) first, then what they unlock.
        let mut frames = Vec::with_capacity(page.envelopes.len());
        for envelope in &page.envelopes {
            match key.open(&envelope.envelope) {
                Ok(frame) => frames.push((envelope.id, frame)),
                // Not for this device, or damaged: nothing to keep it for.
                Err(_) => taken.push(envelope.id),
            }
        }
        let to_device = |f: &[u8]| matches!(Envelope::from_frame(f), Ok(Envelope::ToDevice(_)));
        frames.sort_by_key(|(_, f)| !to_device(f));
        let mut later = Vec::new();
        for (id, frame) in frames {
            let (answer, stored) = self.receive(Source::Mailbox, &frame);
            self.acks_due.extend(stored);
            if answer == LATER {
                later.push((id, frame));
            } else {
                taken.push(id);
            }
        }
        // Once more for what could not be placed: what came after may have
        // placed it (then it is a repeat now, and is taken).
        for (id, frame) in later {
            let (answer, stored) = self.receive(Source::Mailbox, &frame);
            self.acks_due.extend(stored);
            if answer == LATER {
                let oldest = self
                    .drain_leftover
                    .map_or(page.epoch, |e| e.min(page.epoch));
                self.drain_leftover = Some(oldest);
            } else {
                taken.push(id);
            }
        }
        if !self.flush_received() {
            tracing::error!("flush failed; mailbox left as it is");
            let _ = page.done.send(Vec::new());
            return;
        }
        let _ = page.done.send(taken);
        let acks = std::mem::take(&mut self.acks_due);
        self.send_acks(acks);
    }

    /// Schedules the next try of an item, with exponential backoff.
    fn retry_later(&mut self, seq: u64) {
        let Some(pending) = self.pending.get_mut(&seq) else {
            return;
        };
        pending.attempts = pending.attempts.saturating_add(1);
        let attempts = pending.attempts;
        let next = self.backoff(attempts, self.config.retry_max);
        if let Some(pending) = self.pending.get_mut(&seq) {
            pending.next_try_ms = next;
        }
    }

    /// When to try again after `attempts` failures: exponential backoff
    /// from `retry_initial`, at most `max`, each delay drawn between half
    /// and all of it (ms since the epoch). Without the jitter, deliveries
    /// that failed together retry together: a device that dials many
    /// contacts at once (a room key for a large room) meets the connection
    /// limits again at every retry.
    fn backoff(&self, attempts: u32, max: Duration) -> u64 {
        let delay = backoff_delay(
            self.config.retry_initial,
            attempts,
            max,
            &mut rand::thread_rng(),
        );
        now().as_millis().saturating_add(delay.as_millis() as u64)
    }

    /// Starts deliveries that are due, within the in-flight limit.
    fn deliver_due(&mut self) {
        let now_ms = now().as_millis();
        let mut started = self.in_flight.len() + self.depositing.len();
        for (seq, pending) in self.pending.iter_mut() {
            if started >= MAX_IN_FLIGHT {
                break;
            }
            if pending.next_try_ms > now_ms {
                continue;
            }
            let idle = pending
                .targets
                .iter()
                .any(|(peer, _)| !pending.in_flight.contains(peer));
            if !idle {
                continue;
            }
            let Ok(frame) = pending.item.frame() else {
                continue;
            };
            // Its gossip grace is over: it no longer holds a window place.
            self.gossip_window.remove(seq);
            for (peer, addrs) in &pending.targets {
                if pending.in_flight.contains(peer) || started >= MAX_IN_FLIGHT {
                    continue;
                }
                pending.in_flight.insert(*peer);
                started += 1;
                let (net, peer, addrs, frame, seq) =
                    (self.net.clone(), *peer, addrs.clone(), frame.clone(), *seq);
                self.in_flight.spawn(async move {
                    let result = net.deliver(peer, addrs, frame).await;
                    (seq, peer, result)
                });
            }
        }
    }

    /// Records the outcome of one delivery attempt.
    fn delivery_done(
        &mut self,
        seq: u64,
        peer: PeerId,
        result: Result<Vec<u8>, safemeet_net::Error>,
    ) {
        let Some(pending) = self.pending.get_mut(&seq) else {
            return;
        };
        pending.in_flight.remove(&peer);
        let done_for_peer = match &result {
            Ok(answer) if answer == ACK => true,
            Ok(answer) if answer == REFUSED => {
                tracing::warn!(seq, "a device refused a delivery; not retried");
                true
            }
            _ => false,
        };
        if done_for_peer {
            let first_ack = matches!(&result, Ok(a) if a == ACK) && !pending.delivered_once;
            if first_ack {
                pending.delivered_once = true;
                self.gossip_window.remove(&seq);
            }
            pending.targets.retain(|(p, _)| *p != peer);
            if first_ack {
                let mut batch = self.store.batch();
                let staged = self
                    .stage_state(&mut batch, seq, MessageState::Delivered)
                    .and_then(|()| Ok(self.store.apply(batch)?));
                if let Err(e) = staged {
                    tracing::warn!(error = %e, "could not record a delivery");
                }
            }
        } else if result.is_err() && self.deposit(seq, peer) {
            // Unreachable: left on its relays instead (the deposit's
            // outcome decides what happens next).
            return;
        } else {
            self.retry_later(seq);
        }
        self.finish_if_done(seq);
    }

    /// Stages a message's new delivery state: its timeline entry changes
    /// and the event log says so. "Delivered" is final; "stored at relay"
    /// only replaces "sent" or an earlier "stored at relay".
    fn stage_state(
        &mut self,
        batch: &mut EncryptedBatch,
        seq: u64,
        state: MessageState,
    ) -> Result<(), EngineError> {
        let Some(pending) = self.pending.get(&seq) else {
            return Ok(());
        };
        let meta: OutboxMeta = codec::decode(&pending.item.meta, 64)?;
        let Some((room_id, tseq)) = meta.timeline else {
            return Ok(());
        };
        // A message left on relays turns "delivered" when a recipient
        // acknowledges it later, after the outbox item is gone: remember
        // where its timeline entry is.
        if let (MessageState::StoredAtRelay { .. }, Some(id)) = (state, pending.event_id) {
            self.store.batch_put_value(
                batch,
                Keyspace::Rooms,
                &name::relayed(&id),
                &(room_id, tseq),
                64,
            )?;
        }
        self.stage_entry_state(batch, room_id, tseq, state)
    }

    /// Stages the new state of the timeline entry `tseq` of `room_id`.
    fn stage_entry_state(
        &mut self,
        batch: &mut EncryptedBatch,
        room_id: RoomId,
        tseq: u64,
        state: MessageState,
    ) -> Result<(), EngineError> {
        let tl = name::timeline(&room_id);
        let Some(bytes) = self.store.get_ordered(Keyspace::Timeline, &tl, tseq)? else {
            return Ok(());
        };
        let mut entry: TimelineEntry = codec::decode(&bytes, MAX_RECORD_BYTES)?;
        let log = match (entry.state, state) {
            (MessageState::Delivered, _) => return Ok(()),
            (MessageState::StoredAtRelay { until: old }, MessageState::StoredAtRelay { until })
                if until <= old =>
            {
                return Ok(());
            }
            (_, MessageState::StoredAtRelay { until }) => LogEntry::StoredAtRelay {
                room_id,
                event_id: entry.event_id,
                until,
            },
            _ => LogEntry::Delivered {
                room_id,
                event_id: entry.event_id,
            },
        };
        entry.state = state;
        self.store.batch_put_ordered_value(
            batch,
            Keyspace::Timeline,
            &tl,
            tseq,
            &entry,
            MAX_RECORD_BYTES,
        )?;
        self.stage_log(batch, &log)
    }

    fn stage_log(
        &mut self,
        batch: &mut EncryptedBatch,
        entry: &LogEntry,
    ) -> Result<(), EngineError> {
        stage_log_at(&self.store, batch, self.log_next, entry)?;
        self.log_next += 1;
        Ok(())
    }

    /// Handles a network event other than a delivery.
    async fn net_event(&mut self, event: safemeet_net::Event) {
        match event {
            // Deliveries are stored in groups by `net_events`.
            safemeet_net::Event::Delivery { .. } => {}
            safemeet_net::Event::Gossip { id, via, .. } => {
                // Rooms over gossip come later; direct delivery carries DMs.
                let _ = self
                    .net
                    .report(id, via, safemeet_net::Verdict::Ignore)
                    .await;
            }
            safemeet_net::Event::Connected(peer) => {
                // A relay that could not be asked is back: ask it now.
                if self.drain_failures > 0 && self.own_relays.iter().any(|r| r.peer == peer) {
                    self.next_drain_ms = 0;
                    self.drain_if_due();
                }
                self.deliver_due();
            }
            _ => {}
        }
    }

    /// Processes a received frame from `peer` (`None`: over gossip);
    /// returns the answer for the sender, and for a room message that was
    /// stored, its sender and event id.
    fn receive(
        &mut self,
        from: Source,
        frame: &[u8],
    ) -> (&'static [u8], Option<(UserId, DeviceId, EventId)>) {
        use safemeet_crypto::Error as C;
        let Ok(envelope) = Envelope::from_frame(frame) else {
            return (REFUSED, None);
        };
        // Gossip carries room messages of its own topic only.
        let on_topic = match (&from, &envelope) {
            (Source::Gossip(topic), Envelope::Room(env)) => env.topic == *topic,
            (Source::Gossip(_), _) => false,
            // A relay is no peer of the sender: acknowledgements must come
            // from the peer that names itself.
            (Source::Mailbox, Envelope::Acks(_)) => false,
            (Source::Peer(_) | Source::Mailbox, _) => true,
        };
        if !on_topic {
            return (REFUSED, None);
        }
        if !matches!(envelope, Envelope::Acks(_)) {
            self.unflushed_receipts += 1;
        }
        if let Envelope::Room(env) = &envelope {
            return match self.decrypt_and_store(env) {
                Ok(stored) => (ACK, Some(stored)),
                Err(EngineError::Crypto(C::Replay {
                    same_ciphertext: true,
                    ..
                })) => (ACK, None),
                // Not stored yet: the sender keeps it and tries again. A
                // held copy is only a head start (and is never forwarded),
                // so junk that fills the held queue loses nothing.
                Err(EngineError::Crypto(
                    C::MissingRoomKey { .. }
                    | C::InvalidRecord {
                        reason: UNKNOWN_ROOM | NOT_A_MEMBER,
                        ..
                    },
                )) => (LATER, None),
                Err(e) if is_local(&e) => {
                    tracing::warn!(error = %e, "a room message could not be stored");
                    (LATER, None)
                }
                Err(e) => {
                    tracing::debug!(error = %e, "a room message was refused");
                    (REFUSED, None)
                }
            };
        }
        let answer = match envelope {
            Envelope::Acks(acks) => match from {
                Source::Peer(peer) => match self.acked(peer, &acks.event_ids) {
                    Ok(()) => ACK,
                    Err(e) => {
                        tracing::warn!(error = %e, "could not record acknowledgements");
                        REFUSED
                    }
                },
                Source::Gossip(_) | Source::Mailbox => REFUSED,
            },
            Envelope::ToDevice(env) => match self.decrypt_to_device(&env) {
                Ok(()) => ACK,
                Err(EngineError::Crypto(C::DuplicateOlmMessage)) => ACK,
                Err(e) if is_local(&e) => {
                    tracing::warn!(error = %e, "a to-device message could not be stored");
                    LATER
                }
                Err(e) => {
                    tracing::debug!(error = %e, "a to-device message was refused");
                    REFUSED
                }
            },
            _ => REFUSED,
        };
        (answer, None)
    }

    /// Decrypts a to-device message. Room messages it releases (its room
    /// key arrived after them) are stored in the same commit as their
    /// replay records; one that cannot be placed yet gets no replay record,
    /// so its sender's next delivery of it still counts.
    fn decrypt_to_device(
        &mut self,
        env: &safemeet_proto::envelope::ToDeviceEnvelope,
    ) -> Result<(), EngineError> {
        let store = self.store.clone();
        let me = self.machine.account().user_id();
        // Rooms as the released messages change them, over what is stored.
        let mut overlay: HashMap<RoomId, RoomRecord> = HashMap::new();
        let mut log_next = self.log_next;
        let mut stored = Vec::new();
        let mut rooms_changed = false;
        let received = self.machine.decrypt_to_device_with(env, now(), |event| {
            let received = received_entry(&store, &mut overlay, me, event)?;
            let mut batch = store.batch();
            let used = stage_received(&store, &mut batch, &received, log_next)?;
            log_next += used;
            rooms_changed |= received.log.is_some();
            stored.push((event.sender.user_id, event.sender.device_id, event.event_id));
            overlay.insert(received.room.room_id, received.room);
            Ok(batch)
        })?;
        self.log_next = log_next;
        self.rooms.extend(overlay);
        self.rooms_changed |= rooms_changed;
        // They may have come over gossip: acknowledge them.
        self.acks_due.extend(stored);
        // The message is used up either way: a list that cannot be kept
        // only means deliveries to that device are not left on its relays.
        if let ToDeviceContent::RelayList(list) = &received.content
            && let Err(e) = self.keep_relay_list(list)
        {
            tracing::warn!(error = %e, "a contact's new relay list could not be kept");
        }
        Ok(())
    }

    /// Decrypts and stores a room message (applied, not flushed); returns
    /// its sender and event id.
    fn decrypt_and_store(
        &mut self,
        env: &safemeet_proto::envelope::RoomEnvelope,
    ) -> Result<(UserId, DeviceId, EventId), EngineError> {
        let store = self.store.clone();
        let me = self.machine.account().user_id();
        // The room and its counters are worked out inside the commit, from
        // the decrypted event.
        let rooms = &mut self.rooms;
        let log_next = self.log_next;
        let mut staged: Option<(RoomRecord, u64, bool)> = None;
        let event = self.machine.decrypt_room_with(env, now(), |event| {
            let received = received_entry(&store, rooms, me, event)?;
            let mut batch = store.batch();
            let used = stage_received(&store, &mut batch, &received, log_next)?;
            staged = Some((received.room, used, received.log.is_some()));
            Ok(batch)
        })?;
        if let Some((room, used, room_changed)) = staged {
            self.log_next += used;
            self.rooms.insert(room.room_id, room);
            self.rooms_changed |= room_changed;
        }
        Ok((event.sender.user_id, event.sender.device_id, event.event_id))
    }
}

/// The outbox item an `Outgoing` stands for.
fn outbox_item(out: &safemeet_crypto::machine::Outgoing, meta: &[u8]) -> OutboxItem {
    OutboxItem {
        version: VERSION,
        destination: out.destination,
        meta: meta.to_vec(),
        envelope: out.envelope.clone(),
    }
}

/// Whether an error is this device's own trouble (its store, a stopped
/// machine) rather than something wrong with what was received: the sender
/// should then try again, not give up.
fn is_local(e: &EngineError) -> bool {
    match e {
        EngineError::Crypto(c) => crypto_is_local(c),
        EngineError::Decode(_)
        | EngineError::Encode(_)
        | EngineError::Commit(_)
        | EngineError::Stopped => true,
        _ => false,
    }
}

fn crypto_is_local(e: &safemeet_crypto::Error) -> bool {
    use safemeet_crypto::Error as C;
    matches!(
        e,
        C::Poisoned | C::Closed | C::Store(_) | C::SealedValue { .. }
    )
}

/// Where a received frame came from.
enum Source {
    /// A direct delivery from this (authenticated) peer.
    Peer(PeerId),
    /// Gossip on this room topic (the forwarding peer is not the author).
    Gossip([u8; 32]),
    /// This device's mailbox on a relay (the sender is not known).
    Mailbox,
}

/// What a received event does: the room (as it is after the event), and
/// the timeline entry or the log entry it adds.
pub(crate) struct Received {
    room: RoomRecord,
    message: Option<(TimelineEntry, u64)>,
    log: Option<LogEntry>,
}

/// The delay before try `attempts + 1`: `initial` doubled per failure, at
/// most `max`, then scaled by a factor drawn from 0.5..=1 (see
/// `Engine::backoff`).
fn backoff_delay(
    initial: Duration,
    attempts: u32,
    max: Duration,
    rng: &mut impl rand::Rng,
) -> Duration {
    let full = initial.saturating_mul(1u32 << attempts.min(16)).min(max);
    let permille: u128 = rng.gen_range(500..=1000);
    let ms = full.as_millis().saturating_mul(permille) / 1000;
    Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
}

/// Why a received room event cannot be placed yet.
const UNKNOWN_ROOM: &str = "the room is not known yet";
/// Why a received room event cannot be placed (yet): the state that adds
/// its sender may still be on its way.
const NOT_A_MEMBER: &str = "the sender is not a member of the room";
/// How far a received Lamport time may run ahead of the room's: a larger
/// jump is refused, so no sender can push a room's clock to its end.
const MAX_LAMPORT_JUMP: u64 = 1 << 32;

/// Works out what a received room event does. A DM's room derives from
/// the pair of users; a group room must be known, or be joined by this
/// very event (a room state from an admin that lists this user).
fn received_entry<S: Store>(
    store: &EncryptedStore<S>,
    rooms: &mut HashMap<RoomId, RoomRecord>,
    me: UserId,
    event: &DecryptedRoomEvent,
) -> Result<Received, safemeet_crypto::Error> {
    let invalid = |reason| safemeet_crypto::Error::InvalidRecord {
        what: "received message",
        reason,
    };
    let sender = event.sender.user_id;
    if sender == me {
        return Err(invalid("own messages arrive through the outbox"));
    }
    let room_id = event.event.room_id;
    let stored = match rooms.get(&room_id) {
        Some(r) => Some(r.clone()),
        None => match store.get(Keyspace::Rooms, &name::room(&room_id))? {
            Some(b) => Some(RoomRecord::decode(&b)?),
            None => None,
        },
    };
    let (dm_id, dm_topic) = dm_room(&me, &sender);
    let fresh = |dm_with: Option<UserId>, members: Vec<UserId>, topic| RoomRecord {
        version: VERSION,
        room_id,
        dm_with,
        name: None,
        members,
        admins: Vec::new(),
        secret: None,
        left: false,
        topic,
        lamport: 0,
        next_seq: 0,
        state_lamport: 0,
    };
    let mut room = match stored {
        Some(r) => r,
        None if room_id == dm_id => fresh(Some(sender), vec![me, sender], dm_topic),
        None => match &event.event.content {
            EventContent::RoomState(state) if state.members.contains(&me) => {
                fresh(None, Vec::new(), [0; 32])
            }
            _ => return Err(invalid(UNKNOWN_ROOM)),
        },
    };
    let is_member = room.members.contains(&sender) || room.members.is_empty();
    if room.dm_with.is_none() && !is_member {
        return Err(invalid(NOT_A_MEMBER));
    }
    if room.dm_with.is_some_and(|with| with != sender) {
        // A room key can name any room id; a DM takes only its two users.
        return Err(invalid("the sender is not in this conversation"));
    }
    if event.event.lamport > room.lamport.saturating_add(MAX_LAMPORT_JUMP) {
        return Err(invalid("implausible Lamport time"));
    }
    room.lamport = room.lamport.max(event.event.lamport);
    if let EventContent::Message(message) = &event.event.content {
        if room.members.is_empty() {
            return Err(invalid(UNKNOWN_ROOM));
        }
        let seq = room.next_seq;
        room.next_seq += 1;
        let entry = TimelineEntry {
            event_id: event.event_id,
            sender,
            sender_device: event.sender.device_id,
            lamport: event.event.lamport,
            ts: event.event.ts,
            text: message.body.as_str().to_owned(),
            state: MessageState::Received,
        };
        return Ok(Received {
            room,
            message: Some((entry, seq)),
            log: None,
        });
    }
    let log = if room.dm_with.is_none() {
        update_room_from_event(
            &mut room,
            me,
            sender,
            event.event.lamport,
            &event.event.content,
        )
    } else {
        None
    };
    if room.members.is_empty() {
        // A state this user was not allowed to join from.
        return Err(invalid(UNKNOWN_ROOM));
    }
    Ok(Received {
        room,
        message: None,
        log,
    })
}

/// Stages what a received event does; returns how many log entries it used.
fn stage_received<S: Store>(
    store: &EncryptedStore<S>,
    batch: &mut EncryptedBatch,
    received: &Received,
    log_seq: u64,
) -> Result<u64, safemeet_crypto::Error> {
    if let Some((entry, seq)) = &received.message {
        stage_message(store, batch, &received.room, *seq, entry, log_seq)?;
        return Ok(1);
    }
    stage_room(store, batch, &received.room)?;
    let Some(log) = &received.log else {
        return Ok(0);
    };
    stage_log_at(store, batch, log_seq, log)?;
    Ok(1)
}

/// Stages `entry` as event-log entry `log_seq`, and the next cursor.
fn stage_log_at<S: Store>(
    store: &EncryptedStore<S>,
    batch: &mut EncryptedBatch,
    log_seq: u64,
    entry: &LogEntry,
) -> Result<(), safemeet_crypto::Error> {
    store.batch_put_ordered_value(
        batch,
        Keyspace::EventLog,
        name::EVENT_LOG,
        log_seq,
        entry,
        MAX_RECORD_BYTES,
    )?;
    store.batch_put_value(
        batch,
        Keyspace::EventLog,
        name::EVENT_LOG_NEXT,
        &(log_seq + 1),
        16,
    )
}

/// Stages a message's timeline entry, its room record and its event-log
/// entry at `log_seq`.
fn stage_message<S: Store>(
    store: &EncryptedStore<S>,
    batch: &mut EncryptedBatch,
    room: &RoomRecord,
    seq: u64,
    entry: &TimelineEntry,
    log_seq: u64,
) -> Result<(), safemeet_crypto::Error> {
    store.batch_put_ordered_value(
        batch,
        Keyspace::Timeline,
        &name::timeline(&room.room_id),
        seq,
        entry,
        MAX_RECORD_BYTES,
    )?;
    // A message's room exists already (its state came first): the index
    // stays as it is.
    put_room(store, batch, room)?;
    stage_log_at(
        store,
        batch,
        log_seq,
        &LogEntry::Message {
            room_id: room.room_id,
            entry: entry.clone(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn retry_delays_double_stay_under_the_cap_and_are_spread() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let (initial, max) = (Duration::from_secs(1), Duration::from_secs(300));
        for attempts in 0..20 {
            let full = (initial * 2u32.pow(attempts.min(16))).min(max);
            let d = backoff_delay(initial, attempts, max, &mut rng);
            assert!(d >= full / 2 && d <= full, "{attempts}: {d:?} vs {full:?}");
        }
        // Deliveries that failed together do not all retry together.
        let draws: std::collections::BTreeSet<u128> = (0..50)
            .map(|_| backoff_delay(initial, 3, max, &mut rng).as_millis())
            .collect();
        assert!(draws.len() > 25, "{draws:?}");
        // Any configured cap is safe.
        let huge = backoff_delay(Duration::MAX, 16, Duration::MAX, &mut rng);
        assert!(huge >= Duration::from_millis(u64::MAX / 2));
    }
}
