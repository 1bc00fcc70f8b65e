//! The engine's logic as a state machine: [`Core`].
//!
//! `Core` owns the [`CryptoMachine`] and the engine's state, and nothing
//! else: no runtime, no network handle, no clock, no randomness of its own.
//! Every input comes in through [`Core::handle`] together with the time
//! ([`Now`]), and every effect comes out as an [`Output`] for the caller to
//! carry out: deliver a frame, publish on a topic, deposit on relays, drain
//! mailboxes, answer a request. Timers are outputs too: after each call,
//! [`Core::poll_timeout`] says when the core next wants an
//! [`Input::Timer`]. Retries run on the monotonic part of [`Now`], so a
//! change of the wall clock does not move them; wall time is only what
//! messages and relays are stamped with. Randomness (retry jitter, room
//! ids and secrets) comes from a seeded RNG handed in at construction.
//!
//! The actor (`actor.rs`) drives a `Core` over the real network; tests and
//! simulations step several of them through virtual time with no sockets
//! (`safemeet-test-utils`).

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use libp2p::PeerId;
use rand::rngs::StdRng;
use safemeet_crypto::EncryptedStore;
use safemeet_crypto::machine::CryptoMachine;
use safemeet_proto::room::RoomTopic;
use safemeet_proto::{EventId, RoomId, Timestamp, UserId, codec};
use safemeet_store::{Keyspace, Store};

use crate::acks::AckQueue;
use crate::events::{Command, DeliveryToken, Input, Output, RequestId, Response};
use crate::gossip::GossipWindow;
use crate::mailbox::{DeviceMailbox, DrainState, Relay};
use crate::outbox::Outbox;
use crate::records::{ContactRecord, MAX_RECORD_BYTES, RoomRecord, name};
use crate::{Config, Error};

/// The time, as the core sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Wall-clock time: what messages and relay promises are stamped with.
    pub wall: Timestamp,
    /// Monotonic time since an arbitrary origin: what timers run on.
    pub mono: Duration,
}

impl Now {
    pub(crate) fn mono_ms(&self) -> u64 {
        u64::try_from(self.mono.as_millis()).unwrap_or(u64::MAX)
    }
}

/// The engine's logic for one device. See the module docs.
pub struct Core<S: Store> {
    pub(crate) machine: CryptoMachine<S>,
    pub(crate) store: EncryptedStore<S>,
    pub(crate) config: Config,
    pub(crate) rng: StdRng,
    pub(crate) now: Now,
    pub(crate) out: Vec<Output>,
    /// The peer that delivered the to-device message being opened
    /// (`None`: from a relay).
    pub(crate) to_device_from: Option<PeerId>,
    pub(crate) outbox: Outbox,
    pub(crate) gossip: GossipWindow,
    pub(crate) acks: AckQueue,
    pub(crate) rooms: HashMap<RoomId, RoomRecord>,
    pub(crate) log_next: u64,
    /// The event log is durable up to here.
    pub(crate) log_durable: u64,
    /// The cursor last announced.
    pub(crate) announced: u64,
    /// Room topics this node is subscribed to.
    pub(crate) subscribed: HashSet<RoomTopic>,
    /// The keys room frames are opened with.
    pub(crate) headers: crate::headers::HeaderKeys,
    /// Whether each group room goes by gossip (see `topics`), as worked
    /// out since rooms or devices last changed.
    pub(crate) gossip_mode: HashMap<RoomId, bool>,
    /// The peers the network was last told to gossip with.
    pub(crate) gossip_peers: BTreeSet<PeerId>,
    /// Set when a room was joined, changed or left.
    pub(crate) rooms_changed: bool,
    /// Rooms a member left whose new state this device issues (at most
    /// one entry per room; emptied by every input).
    pub(crate) rotations_due: Vec<RoomId>,
    /// Rooms whose current state this device sends again, as a new state
    /// with the same secret: a member linked a device that may have missed
    /// it (at most one entry per room).
    pub(crate) restates_due: Vec<RoomId>,
    /// Set when contacts or their devices changed: items with no known
    /// recipient are routed again.
    pub(crate) devices_changed: bool,
    /// Set when a to-device message came (a new Olm session may make an
    /// item routable); unlike `devices_changed`, the rooms' member devices
    /// are the same, so their gossip mode is not worked out again.
    pub(crate) sessions_changed: bool,
    /// Received messages applied to the store since the last flush.
    pub(crate) unflushed_receipts: usize,
    /// The frame being received is an acknowledgement frame.
    pub(crate) acks_frame: bool,
    /// Stored room messages to acknowledge to their senders after the flush.
    pub(crate) acks_due: Vec<(UserId, safemeet_proto::DeviceId, EventId)>,
    /// The contacts as stored, until they change.
    pub(crate) contact_cache: RefCell<Option<Arc<Vec<ContactRecord>>>>,
    /// This device's relays (where its mailbox is).
    pub(crate) own_relays: Vec<Relay>,
    /// Relays it used before, and until when they may still hold mail
    /// for it (wall ms).
    pub(crate) former_relays: Vec<(String, u64)>,
    /// Where to leave deliveries for other devices, by peer.
    pub(crate) mailboxes: HashMap<PeerId, DeviceMailbox>,
    pub(crate) drain: DrainState,
    /// Blocked users, removed contacts, auto-accepted inviters.
    pub(crate) people: crate::blocks::People,
    /// Whose frames may wait here for their keys.
    pub(crate) admission: crate::admission::Admission,
    /// Room frames waiting for the state that places them.
    pub(crate) waiting: crate::waiting::Waiting,
    /// The last gossip frame refused was junk (see `receive`).
    pub(crate) junk: bool,
    /// Message requests' rate.
    pub(crate) requests: crate::requests::Requests,
    /// SAS verifications with contacts' devices.
    pub(crate) verify: crate::verify::Verifications,
    /// Names and sightings of this user's other devices.
    pub(crate) own_devices: crate::own_devices::OwnDevices,
    /// No device list is owed to any device (see `archive`): known once
    /// read, so the check on every to-device message reads nothing.
    pub(crate) owed_none: bool,
    /// Rooms' expiries, this device's retention, when the next is due.
    pub(crate) expiry: crate::expiry::Expiry,
    /// Presence, typing and read markers (see `signals`).
    pub(crate) signals: crate::signals::Signals,
    /// The first input was handled.
    started: bool,
}

impl<S: Store + Clone> Core<S> {
    /// A core for `machine`'s device, with `config` (validated), the RNG
    /// `seed`, at `now`. Only reads: the event log's end, the relay
    /// bookkeeping and the first page of the outbox. What is due then, and
    /// telling contacts of changed relays (which commits), happen in the
    /// first [`handle`](Self::handle) call. On an error the machine is
    /// closed cleanly before it is dropped.
    pub fn new(
        mut machine: CryptoMachine<S>,
        config: Config,
        seed: u64,
        now: Now,
    ) -> Result<Self, Error> {
        let read = config.validate().and_then(|()| {
            let store = machine.store();
            let log_next = match store.get(Keyspace::EventLog, name::EVENT_LOG_NEXT)? {
                Some(b) => codec::decode::<u64>(&b, 16)?,
                None => 1,
            };
            let former: Vec<(String, u64)> =
                match store.get(Keyspace::Contacts, name::FORMER_RELAYS)? {
                    Some(bytes) => codec::decode(&bytes, MAX_RECORD_BYTES).unwrap_or_default(),
                    None => Vec::new(),
                };
            Ok((log_next, former))
        });
        let (log_next, former_relays) = match read {
            Ok(read) => read,
            Err(e) => {
                if let Err(close) = machine.close_in_place() {
                    tracing::warn!(error = %close, "the crypto state did not close cleanly");
                }
                return Err(e);
            }
        };
        let store = machine.store().clone();
        let own_relays = config
            .net
            .relays
            .iter()
            .filter_map(Relay::from_addr)
            .collect();
        let mut core = Self {
            machine,
            store,
            rng: rand::SeedableRng::seed_from_u64(seed),
            now,
            out: Vec::new(),
            to_device_from: None,
            outbox: Outbox::default(),
            gossip: GossipWindow::default(),
            acks: AckQueue::default(),
            rooms: HashMap::new(),
            log_next,
            log_durable: log_next,
            announced: 0,
            subscribed: HashSet::new(),
            headers: Default::default(),
            gossip_mode: HashMap::new(),
            gossip_peers: BTreeSet::new(),
            rooms_changed: true,
            rotations_due: Vec::new(),
            restates_due: Vec::new(),
            devices_changed: false,
            sessions_changed: false,
            unflushed_receipts: 0,
            acks_frame: false,
            acks_due: Vec::new(),
            contact_cache: RefCell::new(None),
            own_relays,
            former_relays,
            mailboxes: HashMap::new(),
            drain: DrainState::default(),
            people: Default::default(),
            admission: Default::default(),
            waiting: Default::default(),
            junk: false,
            requests: Default::default(),
            verify: Default::default(),
            own_devices: Default::default(),
            owed_none: false,
            expiry: Default::default(),
            signals: Default::default(),
            started: false,
            config,
        };
        // Whom to refuse must be known before anything is received.
        if let Err(e) = core.load_people() {
            if let Err(close) = core.machine.close_in_place() {
                tracing::warn!(error = %close, "the crypto state did not close cleanly");
            }
            return Err(e);
        }
        // A store that cannot be read here is tried again as items finish.
        if let Err(e) = core.resume_outbox() {
            tracing::warn!(error = %e, "could not read the outbox");
        }
        Ok(core)
    }

    /// This user.
    pub fn user_id(&self) -> UserId {
        self.machine.account().user_id()
    }

    /// The crypto machine (for closing it, or inspecting it in tests).
    pub fn machine(&self) -> &CryptoMachine<S> {
        &self.machine
    }

    /// Handles one input at `now`; returns what to do.
    pub fn handle(&mut self, input: Input, now: Now) -> Vec<Output> {
        // Time never runs backwards for the timers, whatever the caller says.
        self.now = Now {
            wall: now.wall,
            mono: now.mono.max(self.now.mono),
        };
        if !self.started {
            self.started = true;
            if let Err(e) = self.announce_relays() {
                tracing::warn!(error = %e, "could not tell contacts about this device's relays");
            }
            if let Err(e) = self.messages_in_one_place() {
                tracing::warn!(error = %e, "could not update the event log's records");
            }
        }
        match input {
            Input::SubscribeFailed(topic) => {
                // Tried again when the rooms next change.
                self.subscribed.remove(&topic);
            }
            Input::Commands(commands) => self.commands(commands),
            Input::Network(events) => self.network(events),
            Input::Delivered {
                token,
                peer,
                result,
            } => match token {
                DeliveryToken::Outbox(seq) => self.delivery_done(seq, peer, result),
                DeliveryToken::Ack(id) => self.ack_done(id, result),
                DeliveryToken::Signal => self.signal_done(),
            },
            Input::Deposited { seq, peer, until } => self.deposit_done(seq, peer, until),
            Input::Page {
                page,
                epoch,
                envelopes,
            } => self.mailbox_page(page, epoch, envelopes),
            Input::Drained { fetched, failed } => self.drain_done(fetched, failed),
            Input::Timer => {}
        }
        self.after_input();
        std::mem::take(&mut self.out)
    }

    /// When the core next wants an [`Input::Timer`] (monotonic time), if
    /// ever.
    pub fn poll_timeout(&self) -> Option<Duration> {
        [
            self.outbox.next_due(),
            self.acks.next_due(),
            self.drain_due_ms(),
            self.expiry_due_ms(),
            self.signals_due_ms(),
        ]
        .into_iter()
        .flatten()
        .min()
        .map(Duration::from_millis)
    }

    /// Closes the crypto state in place, cleanly: the next start keeps its
    /// outbound sessions.
    pub fn close(&mut self) -> Result<(), Error> {
        Ok(self.machine.close_in_place()?)
    }

    /// Reports a security event to the configured sink (the node's
    /// security log): an event name and the id it is about, nothing more.
    pub(crate) fn security(&self, event: &str, subject: Option<String>) {
        if let Some(sink) = &self.config.security {
            (sink.0)(event, subject);
        }
    }

    /// The gossip topic of a group room this user is in.
    pub fn room_topic(&mut self, room: &RoomId) -> Result<RoomTopic, Error> {
        match self.room(room)? {
            Some(r) if r.dm_with.is_none() && !r.left => Ok(r.topic),
            _ => Err(Error::UnknownRoom(*room)),
        }
    }

    /// The topics derived from a group room's secrets: the current one
    /// first, then those of the previous secrets still kept after a
    /// rotation. Empty for a room this user is not in.
    pub fn room_topics(&mut self, room: &RoomId) -> Result<Vec<RoomTopic>, Error> {
        Ok(match self.room(room)? {
            Some(r) if r.dm_with.is_none() && !r.left => r.secrets().map(|s| s.topic()).collect(),
            _ => Vec::new(),
        })
    }

    /// What every input ends with: route what waits for a recipient, carry
    /// out due rotations, follow the rooms' topics and gossip peers, start
    /// what is due, publish what the gossip window lets out, and announce
    /// the durable end of the event log.
    fn after_input(&mut self) {
        if self.outbox.paging()
            && let Err(e) = self.page_in()
        {
            tracing::warn!(error = %e, "could not read the outbox");
        }
        let devices_changed = std::mem::take(&mut self.devices_changed);
        let sessions_changed = std::mem::take(&mut self.sessions_changed);
        if devices_changed || sessions_changed {
            self.route_unrouted();
            self.pay_owed_lists();
        }
        // Rotations first: they change rooms, and their states go out
        // this step.
        if !self.rotations_due.is_empty() || !self.restates_due.is_empty() {
            self.rotate_due();
        }
        // Rooms' modes before anything goes out: a room that grew onto
        // gossip, or shrank off it, sends this step's messages its new way.
        if self.rooms_changed || devices_changed {
            self.headers.stale = true;
            self.admission.stale = true;
            self.sync_subscriptions();
        }
        // Direct deliveries first: a grace that ended frees its place in
        // the gossip window for the next message.
        self.deliver_due();
        self.publish_due();
        self.send_due_acks();
        self.send_due_signals();
        self.drain_if_due();
        // Before the log's end is announced: a message that arrived
        // expired is gone before any client hears of it.
        self.expire_due();
        self.publish_log_cursor();
    }

    fn commands(&mut self, commands: Vec<(RequestId, Command)>) {
        let mut sends = Vec::new();
        for (id, command) in commands {
            match command {
                Command::SendDm { to, text } => sends.push((id, Target::User(to), text)),
                Command::SendRoom { room, text } => sends.push((id, Target::Room(room), text)),
                other => {
                    // Sends before another request go out first, in order.
                    if !sends.is_empty() {
                        self.send_texts(std::mem::take(&mut sends));
                    }
                    let result = self.command(other);
                    self.out.push(Output::Reply(id, result));
                }
            }
        }
        if !sends.is_empty() {
            self.send_texts(sends);
        }
    }

    fn command(&mut self, command: Command) -> Result<Response, Error> {
        Ok(match command {
            Command::Invite { addrs } => Response::Invite(self.invite(addrs)?),
            Command::AddContact { invite, pet_name } => {
                Response::User(self.add_contact(&invite, pet_name)?)
            }
            Command::Contacts => Response::Contacts(self.contacts()?),
            Command::LinkExport { days, with_master } => {
                let (bytes, device_id, summary) = self.export_link(days, with_master)?;
                Response::LinkBundle(crate::events::LinkBundleBytes {
                    bytes: std::sync::Arc::new(bytes),
                    device_id,
                    summary,
                })
            }
            Command::Devices => Response::Devices(self.devices()?),
            Command::VerifiedDevices => Response::DeviceIds(self.verified_devices()?),
            Command::VerifyStart(user) => Response::Verification(self.verify_start(user)?),
            Command::VerifyStatus(user) => Response::Verification(self.verify_status(user)?),
            Command::VerifyInvite(invite) => {
                let (user, devices) = self.verify_by_invite(&invite)?;
                Response::UserDevices(user, devices)
            }
            Command::VerifyAnswer { user, matches } => {
                Response::Verification(self.verify_answer(user, matches)?)
            }
            Command::RevokeDevice(device) => {
                self.revoke_device(device)?;
                Response::Done
            }
            Command::Security(event, subject) => {
                self.security(event, subject);
                Response::Done
            }
            Command::Profile => {
                Response::Profile(Box::new((**self.machine.account().profile()).clone()))
            }
            Command::ChangeProfile(change) => {
                Response::Profile(Box::new(self.change_profile(change)?))
            }
            Command::RenameDevice(device, name) => {
                self.rename_device(device, name)?;
                Response::Done
            }
            Command::RemoveContact(user) => {
                self.remove_contact(&user)?;
                Response::Done
            }
            Command::Block(user) => {
                self.block(user)?;
                self.admission.stale = true;
                Response::Done
            }
            Command::Unblock(user) => {
                self.unblock(user)?;
                self.admission.stale = true;
                Response::Done
            }
            Command::Blocked => Response::Users(self.blocked()),
            Command::SetAutoAccept { user, on } => {
                self.set_auto_accept(user, on)?;
                Response::Done
            }
            Command::DmMessages { with, limit } => {
                self.client_active();
                if self.contact(&with)?.is_none() {
                    return Err(Error::UnknownContact(with));
                }
                let room = self.dm(with)?;
                Response::Messages(self.timeline(&room, limit)?)
            }
            Command::TimelinePage {
                conversation,
                after,
                limit,
            } => {
                let room = self.conversation_room(conversation)?;
                Response::Page(self.timeline_page(&room, after, limit)?)
            }
            Command::RoomMessages { room, limit } => {
                self.client_active();
                let room = self.group_room(&room)?;
                Response::Messages(self.timeline(&room, limit)?)
            }
            Command::CreateRoom { name, members } => {
                self.rooms_changed = true;
                Response::Room(self.create_room(&name, &members)?)
            }
            Command::RoomInvite { room, user } => {
                self.rooms_changed = true;
                self.room_invite(&room, &user)?;
                Response::Done
            }
            Command::RoomLeave(room) => {
                self.rooms_changed = true;
                self.room_leave(&room)?;
                Response::Done
            }
            Command::RoomRemove { room, user } => {
                self.rooms_changed = true;
                self.room_remove(&room, &user, false)?;
                Response::Done
            }
            Command::RoomBan { room, user } => {
                self.rooms_changed = true;
                self.room_remove(&room, &user, true)?;
                Response::Done
            }
            Command::Rooms => Response::Rooms(self.rooms_list()?),
            Command::Invitations => Response::Invitations(self.invitations()?),
            Command::Requests => Response::Requests(self.requests()?),
            Command::RequestAccept(user) => {
                self.accept_request(&user)?;
                Response::Done
            }
            Command::RequestDecline(user) => {
                self.decline_request(&user)?;
                Response::Done
            }
            Command::RoomJoin(room) => {
                self.room_join(&room)?;
                Response::Done
            }
            Command::RoomDecline(room) => {
                self.room_decline(&room)?;
                Response::Done
            }
            Command::Events { cursor, limit } => Response::Events(self.events(cursor, limit)?),
            Command::Redact(event) => Response::Sent(self.redact(event)?),
            Command::Edit(event, text) => Response::Sent(self.edit(event, &text)?),
            Command::SetExpiry {
                conversation,
                expire_after_ms,
            } => Response::Sent(self.set_expiry(conversation, expire_after_ms)?),
            Command::Expiry(conversation) => {
                let room = self.conversation_room(conversation)?;
                let room_ms = crate::revisions::settings(&self.store, &room.room_id)?
                    .and_then(|s| s.expire_after_ms);
                Response::Duration(room_ms)
            }
            Command::SetRetention(ms) => Response::Duration(self.set_retention(ms)?.retention_ms),
            Command::Retention => Response::Duration(self.local_settings()?.retention_ms),
            Command::SetAvatar(image) => Response::AvatarInfo(self.set_avatar(image)?),
            Command::AvatarInfo(user) => Response::AvatarInfo(self.avatar_info(&user)?),
            Command::Avatar(user) => {
                Response::AvatarImage(self.avatar_of(&user)?.and_then(|a| a.image))
            }
            Command::DeleteAccount(step) => Response::Deletion(self.delete_account(step)?),
            Command::Pending => Response::Count(self.outbox.pending.len()),
            Command::ExportArchive => {
                let (body, export) = self.export_archive()?;
                Response::Archive(crate::events::ArchiveBytes {
                    body: Arc::new(body),
                    export,
                })
            }
            Command::SecurityLog => Response::SecurityLog(match &self.config.security_reader {
                Some(read) => (read.0)().map_err(Error::InvalidInput)?,
                None => crate::SecurityEntries {
                    entries: Vec::new(),
                    broken: None,
                },
            }),
            c @ (Command::SendFile(..)
            | Command::FileForPeer(..)
            | Command::FileSource(_)
            | Command::FileEntries
            | Command::PieceJobs
            | Command::PiecesLeft { .. }) => self.file_command(c)?,
            c @ (Command::SetSignals { .. }
            | Command::Signals
            | Command::SignalCounts
            | Command::Typing(..)
            | Command::MarkRead(_)
            | Command::Typers(_)
            | Command::Presence
            | Command::SetMuted(..)
            | Command::Muted
            | Command::ReadMarkers(_)) => self.signal_command(c)?,
            c @ (Command::CallSignal { .. } | Command::NoteCall(_)) => self.call_command(c)?,
            Command::SendDm { .. } | Command::SendRoom { .. } => {
                return Err(Error::InvalidInput("sends are handled in groups".into()));
            }
        })
    }
}

/// Where a message goes.
pub(crate) enum Target {
    /// A contact's DM.
    User(UserId),
    /// A group room.
    Room(RoomId),
}
