//! Presence, typing and read receipts: short-lived signals between
//! devices, each off until this user turns it on.
//!
//! - Each is a [`Signal`] sent over Olm to each device it concerns
//!   (presence: the contacts'; typing and read markers: the room's
//!   members'), **tried once**: not in the outbox, so never retried and
//!   never left on a relay ([`DeliveryToken::Signal`]). A device that is
//!   offline misses it; the next one supersedes it.
//! - **Reciprocity**: with a setting off, this device sends nothing of
//!   that kind and drops what it receives of it, so it neither shows
//!   nor learns the others' values (as in Signal).
//! - Receivers keep only the current value, in memory: presence per
//!   contact (taken from contacts only), typing per room member (gone 5 s
//!   after it was heard), and the latest read marker per room member,
//!   which is written to the store (one record per room: a member's
//!   Lamport time) so that "read by" survives a restart.
//! - Presence: online, away (no command from a client for 10 minutes) or
//!   offline (nothing heard for [`PRESENCE_SILENCE_MS`]), with a last-seen
//!   time rounded down to 5 minutes; sent when turned on, at start, when
//!   it changes, and every [`PRESENCE_EVERY_MS`]; a contact that is heard
//!   from for the first time gets this device's presence back at once.
//! - Typing: sent at most every [`TYPING_EVERY_MS`] per room while typing,
//!   and at once when it stops; heard typing expires after
//!   [`TYPING_FOR_MS`].
//! - Read markers: at most one per room per [`READ_EVERY_MS`] (later marks
//!   within it replace the waiting one).

use std::collections::{BTreeMap, HashMap};

use safemeet_proto::signal::{PRESENCE_ROUNDING_MS, PresenceState, Signal};
use safemeet_proto::{DeviceId, EventId, RoomId, Timestamp, UserId, codec};
use safemeet_store::{Keyspace, Store};
use serde::{Deserialize, Serialize};

use crate::core::Core;
use crate::events::{DeliveryToken, Output};
use crate::records::name;
use crate::revisions::locate;
use crate::{Conversation, Error};

/// Presence is sent again this often while it is on.
pub const PRESENCE_EVERY_MS: u64 = 2 * 60 * 1000;
/// A contact not heard from for this long shows offline.
pub const PRESENCE_SILENCE_MS: u64 = 5 * 60 * 1000 + 30 * 1000;
/// No command from a client for this long: away.
pub const AWAY_AFTER_MS: u64 = 10 * 60 * 1000;
/// Typing is sent at most this often per room while it goes on.
pub const TYPING_EVERY_MS: u64 = 3_000;
/// Typing heard is shown this long.
pub const TYPING_FOR_MS: u64 = 5_000;
/// At most one read marker per room this often.
pub const READ_EVERY_MS: u64 = 1_000;
/// The largest record of a room's read markers (256 members, 40 bytes
/// each, and room to spare).
const MAX_MARKERS_BYTES: usize = 12 * 1024;
/// Most signal deliveries in flight; past it a signal is dropped.
pub(crate) const MAX_IN_FLIGHT: usize = 64;

/// Which signals this user shares (and so sees).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignalSettings {
    /// Presence.
    pub presence: bool,
    /// Typing.
    pub typing: bool,
    /// Read receipts.
    pub read_receipts: bool,
}

/// Signals sent and received since start, by kind (for tests and
/// metrics: what went on the wire).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignalCounts {
    /// Presence signals sent.
    pub presence_sent: u64,
    /// Typing signals sent.
    pub typing_sent: u64,
    /// Read markers sent.
    pub read_sent: u64,
    /// Presence signals received and kept.
    pub presence_received: u64,
    /// Typing signals received and kept.
    pub typing_received: u64,
    /// Read markers received and kept.
    pub read_received: u64,
    /// Signals received and dropped (the setting off, or not from a
    /// contact or member).
    pub dropped: u64,
}

/// A contact's presence as shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PresenceView {
    /// Online, away or offline.
    pub state: PresenceState,
    /// Last seen, rounded down to 5 minutes.
    pub last_seen: Timestamp,
}

#[derive(Debug, Clone, Copy)]
struct Heard {
    state: PresenceState,
    last_seen: Timestamp,
    at: u64,
}

/// The core's signal state.
#[derive(Debug, Default)]
pub(crate) struct Signals {
    pub(crate) settings: SignalSettings,
    loaded: bool,
    presence: HashMap<UserId, Heard>,
    typing: HashMap<(RoomId, UserId), u64>,
    typing_sent: HashMap<RoomId, (bool, u64)>,
    read_due: BTreeMap<RoomId, (EventId, u64)>,
    read_sent: HashMap<RoomId, u64>,
    next_presence: Option<u64>,
    /// When a client last did something (monotonic ms; 0: the start),
    /// and the wall time then.
    last_activity: u64,
    last_active_at: Option<Timestamp>,
    sent_state: Option<PresenceState>,
    pub(crate) in_flight: usize,
    pub(crate) counts: SignalCounts,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
enum Kind {
    Presence,
    Typing,
    Read,
}

/// A room's read markers as stored: each member's latest, by Lamport time.
type Markers = Vec<(UserId, u64)>;

fn markers_name(room: &RoomId) -> Vec<u8> {
    let mut v = b"read-markers/".to_vec();
    v.extend_from_slice(room.as_bytes());
    v
}

fn rounded(ts: Timestamp) -> Timestamp {
    let ms = ts.as_millis();
    Timestamp::from_millis(ms - ms % PRESENCE_ROUNDING_MS).unwrap_or(ts)
}

impl<S: Store + Clone> Core<S> {
    /// The signal settings, read once.
    pub(crate) fn signal_settings(&mut self) -> Result<SignalSettings, Error> {
        if !self.signals.loaded {
            if let Some(bytes) = self.store.get(Keyspace::Rooms, name::SIGNAL_SETTINGS)? {
                self.signals.settings = codec::decode(&bytes, 64)?;
            }
            self.signals.loaded = true;
            if self.signals.settings.presence {
                self.signals.next_presence = Some(self.now.mono_ms());
            }
        }
        Ok(self.signals.settings)
    }

    /// Changes the signal settings; what they are now. Turning a signal
    /// off forgets what was heard of it.
    pub(crate) fn set_signals(
        &mut self,
        presence: Option<bool>,
        typing: Option<bool>,
        read_receipts: Option<bool>,
    ) -> Result<SignalSettings, Error> {
        let mut s = self.signal_settings()?;
        s.presence = presence.unwrap_or(s.presence);
        s.typing = typing.unwrap_or(s.typing);
        s.read_receipts = read_receipts.unwrap_or(s.read_receipts);
        self.store
            .put(Keyspace::Rooms, name::SIGNAL_SETTINGS, &codec::encode(&s)?)?;
        self.machine.flush()?;
        let was = self.signals.settings;
        self.signals.settings = s;
        if !s.presence {
            self.signals.presence.clear();
            self.signals.next_presence = None;
            self.signals.sent_state = None;
        } else if !was.presence {
            self.signals.next_presence = Some(self.now.mono_ms());
        }
        if !s.typing {
            self.signals.typing.clear();
            self.signals.typing_sent.clear();
        }
        if !s.read_receipts {
            self.signals.read_due.clear();
        }
        Ok(s)
    }

    /// A signal's delivery ended (how does not matter: it is not retried).
    pub(crate) fn signal_done(&mut self) {
        self.signals.in_flight = self.signals.in_flight.saturating_sub(1);
    }

    /// A client did something: presence is online again.
    pub(crate) fn client_active(&mut self) {
        self.signals.last_activity = self.now.mono_ms();
        self.signals.last_active_at = Some(self.now.wall);
        if self.signals.sent_state == Some(PresenceState::Away) {
            self.signals.next_presence = Some(self.now.mono_ms());
        }
    }

    /// When signals are next due (monotonic ms).
    pub(crate) fn signals_due_ms(&self) -> Option<u64> {
        let read = self.signals.read_due.values().map(|(_, at)| *at).min();
        [self.signals.next_presence, read]
            .into_iter()
            .flatten()
            .min()
    }

    /// Sends what is due: presence, read markers.
    pub(crate) fn send_due_signals(&mut self) {
        if let Err(e) = self.signal_settings() {
            tracing::debug!(error = %e, "signal settings unreadable");
            return;
        }
        let now = self.now.mono_ms();
        if self.signals.next_presence.is_some_and(|at| at <= now) {
            self.signals.next_presence = Some(now + PRESENCE_EVERY_MS);
            if let Err(e) = self.send_presence(None) {
                tracing::debug!(error = %e, "presence not sent");
            }
        }
        let due: Vec<(RoomId, EventId)> = self
            .signals
            .read_due
            .iter()
            .filter(|(_, (_, at))| *at <= now)
            .map(|(r, (e, _))| (*r, *e))
            .collect();
        for (room, event) in due {
            self.signals.read_due.remove(&room);
            self.signals.read_sent.insert(room, now);
            let signal = Signal::Read {
                room_id: room,
                event_id: event,
            };
            if let Err(e) = self.signal_room(room, &signal, Kind::Read) {
                tracing::debug!(error = %e, "a read marker was not sent");
            }
        }
    }

    fn presence_now(&self) -> PresenceState {
        let idle = self
            .now
            .mono_ms()
            .saturating_sub(self.signals.last_activity);
        if idle >= AWAY_AFTER_MS {
            PresenceState::Away
        } else {
            PresenceState::Online
        }
    }

    /// Sends this user's presence to every contact device, or to one
    /// user's devices.
    fn send_presence(&mut self, only: Option<UserId>) -> Result<(), Error> {
        if !self.signals.settings.presence {
            return Ok(());
        }
        let state = self.presence_now();
        self.signals.sent_state = Some(state);
        // Away: last seen when a client last did something (or at the
        // start); online: now.
        let seen = match state {
            PresenceState::Away => self.signals.last_active_at.unwrap_or(self.now.wall),
            _ => self.now.wall,
        };
        let signal = Signal::Presence {
            state,
            last_seen: rounded(seen),
        };
        let users: Vec<UserId> = match only {
            Some(u) => vec![u],
            None => self.contact_records()?.iter().map(|c| c.user_id).collect(),
        };
        for user in users {
            self.signal_user(user, &signal, Kind::Presence)?;
        }
        Ok(())
    }

    /// Sends `signal` to every member of `room` but this device (a DM
    /// nothing was said in yet is not stored, but has its two users).
    fn signal_room(&mut self, room: RoomId, signal: &Signal, kind: Kind) -> Result<(), Error> {
        let record = match self.room(&room)? {
            Some(r) => r,
            None => match self.dm_partner(&room)? {
                Some(with) => self.dm(with)?,
                None => return Ok(()),
            },
        };
        if record.left {
            return Ok(());
        }
        let me = self.user_id();
        for user in record.members.clone() {
            if user != me && !self.is_deleted(&user) {
                self.signal_user(user, signal, kind)?;
            }
        }
        Ok(())
    }

    fn signal_user(&mut self, user: UserId, signal: &Signal, kind: Kind) -> Result<(), Error> {
        for device in self.machine.user_devices(&user)? {
            self.signal_device(user, device.device_id, signal.clone(), kind);
        }
        Ok(())
    }

    /// Encrypts and delivers one signal, once; dropped when too many are
    /// in flight or there is no session with the device.
    fn signal_device(&mut self, user: UserId, device: DeviceId, signal: Signal, kind: Kind) {
        let sent = (|| -> Result<(), Error> {
            if self.deliver_signal(user, device, signal)?.is_none() {
                return Ok(());
            }
            let counts = &mut self.signals.counts;
            match kind {
                Kind::Presence => counts.presence_sent += 1,
                Kind::Typing => counts.typing_sent += 1,
                Kind::Read => counts.read_sent += 1,
            }
            Ok(())
        })();
        if let Err(e) = sent {
            tracing::debug!(error = %e, "a signal was not sent");
        }
    }

    /// Encrypts `signal` for `user`'s `device` and delivers it once, directly;
    /// its peer (`None`: too many in flight, no session, or no peer).
    pub(crate) fn deliver_signal(
        &mut self,
        user: UserId,
        device: DeviceId,
        signal: Signal,
    ) -> Result<Option<libp2p::PeerId>, Error> {
        if self.signals.in_flight >= MAX_IN_FLIGHT || !self.machine.has_session(&device)? {
            return Ok(None);
        }
        let Some((peer, addrs)) = self.target(&user, &device)? else {
            return Ok(None);
        };
        let frame = self
            .machine
            .encrypt_signal(user, device, signal)?
            .to_frame()?;
        self.signals.in_flight += 1;
        self.out.push(Output::Deliver {
            token: DeliveryToken::Signal,
            peer,
            addrs,
            frame,
        });
        Ok(Some(peer))
    }

    /// This user types in a conversation, or stopped.
    pub(crate) fn typing(&mut self, conversation: Conversation, typing: bool) -> Result<(), Error> {
        self.client_active();
        if !self.signal_settings()?.typing {
            return Ok(());
        }
        let room = self.conversation_room(conversation)?.room_id;
        let now = self.now.mono_ms();
        let last = self.signals.typing_sent.get(&room).copied();
        let send = match (typing, last) {
            (true, Some((true, at))) => now.saturating_sub(at) >= TYPING_EVERY_MS,
            (false, Some((true, _))) => true,
            (false, _) => false,
            (true, _) => true,
        };
        if send {
            self.signals.typing_sent.insert(room, (typing, now));
            self.signal_room(
                room,
                &Signal::Typing {
                    room_id: room,
                    typing,
                },
                Kind::Typing,
            )?;
        }
        Ok(())
    }

    /// This user read a conversation up to its latest message: a read
    /// marker goes out (batched: one per room per second at most).
    pub(crate) fn mark_read(&mut self, conversation: Conversation) -> Result<(), Error> {
        self.client_active();
        if !self.signal_settings()?.read_receipts {
            return Ok(());
        }
        let room = self.conversation_room(conversation)?.room_id;
        let me = self.user_id();
        let latest = match self.room(&room)? {
            Some(record) => self
                .timeline(&record, 1)?
                .pop()
                .filter(|e| e.sender != me)
                .map(|e| e.event_id),
            None => None,
        };
        let Some(event) = latest else {
            return Ok(());
        };
        let now = self.now.mono_ms();
        let at = self
            .signals
            .read_sent
            .get(&room)
            .map_or(now, |sent| (sent + READ_EVERY_MS).max(now));
        self.signals.read_due.insert(room, (event, at));
        Ok(())
    }

    /// A signal from `sender`'s device: kept if this user shares that
    /// kind and the sender may send it.
    pub(crate) fn signal_received(&mut self, sender: UserId, signal: Signal) -> Result<(), Error> {
        let settings = self.signal_settings()?;
        let now = self.now.mono_ms();
        let kept = match signal {
            Signal::Presence { state, last_seen } => {
                if settings.presence && self.contact(&sender)?.is_some() {
                    let new = !self.signals.presence.contains_key(&sender);
                    self.signals.presence.insert(
                        sender,
                        Heard {
                            state,
                            last_seen: rounded(last_seen),
                            at: now,
                        },
                    );
                    self.signals.counts.presence_received += 1;
                    if new {
                        self.send_presence(Some(sender))?;
                    }
                    true
                } else {
                    false
                }
            }
            Signal::Typing { room_id, typing } => {
                if settings.typing && self.is_member(&room_id, &sender)? {
                    if typing {
                        self.signals
                            .typing
                            .insert((room_id, sender), now + TYPING_FOR_MS);
                    } else {
                        self.signals.typing.remove(&(room_id, sender));
                    }
                    self.signals.counts.typing_received += 1;
                    true
                } else {
                    false
                }
            }
            Signal::Read { room_id, event_id } => {
                settings.read_receipts
                    && self.is_member(&room_id, &sender)?
                    && self.read_marker_received(room_id, sender, &event_id)?
            }
            // Taken by `call_signals`, never here.
            Signal::Call(_) => false,
        };
        if !kept {
            self.signals.counts.dropped += 1;
        }
        Ok(())
    }

    fn is_member(&mut self, room: &RoomId, user: &UserId) -> Result<bool, Error> {
        if self.dm_partner(room)? == Some(*user) {
            return Ok(true);
        }
        Ok(self
            .room(room)?
            .is_some_and(|r| !r.left && r.members.contains(user)))
    }

    /// The contact whose DM `room` is, if it is one.
    fn dm_partner(&mut self, room: &RoomId) -> Result<Option<UserId>, Error> {
        let me = self.user_id();
        Ok(self
            .contact_records()?
            .iter()
            .map(|c| c.user_id)
            .find(|u| crate::rooms::dm_room_id(&me, u) == *room))
    }

    fn read_marker_received(
        &mut self,
        room: RoomId,
        sender: UserId,
        event: &EventId,
    ) -> Result<bool, Error> {
        let Some((at_room, _, entry)) = locate(&self.store, event)? else {
            return Ok(false);
        };
        if at_room != room {
            return Ok(false);
        }
        let mut markers = self.read_markers(&room)?;
        match markers.iter_mut().find(|(u, _)| *u == sender) {
            Some((_, lamport)) if *lamport >= entry.lamport => return Ok(true),
            Some((_, lamport)) => *lamport = entry.lamport,
            None => markers.push((sender, entry.lamport)),
        }
        let mut batch = self.store.batch();
        self.store.batch_put_value(
            &mut batch,
            Keyspace::Rooms,
            &markers_name(&room),
            &markers,
            MAX_MARKERS_BYTES,
        )?;
        self.store.apply(batch)?;
        self.signals.counts.read_received += 1;
        Ok(true)
    }

    /// Each member's read marker in a room (Lamport times); none while
    /// read receipts are off.
    pub(crate) fn read_markers(&mut self, room: &RoomId) -> Result<Markers, Error> {
        if !self.signal_settings()?.read_receipts {
            return Ok(Vec::new());
        }
        Ok(
            match self.store.get(Keyspace::Rooms, &markers_name(room))? {
                Some(bytes) => codec::decode(&bytes, MAX_MARKERS_BYTES)?,
                None => Vec::new(),
            },
        )
    }

    /// Read markers of a conversation.
    pub(crate) fn conversation_markers(
        &mut self,
        conversation: Conversation,
    ) -> Result<Markers, Error> {
        let room = self.conversation_room(conversation)?.room_id;
        self.read_markers(&room)
    }

    /// Contacts' presence (none while presence is off).
    pub(crate) fn presence_list(&mut self) -> Result<Vec<(UserId, PresenceView)>, Error> {
        if !self.signal_settings()?.presence {
            return Ok(Vec::new());
        }
        let now = self.now.mono_ms();
        Ok(self
            .signals
            .presence
            .iter()
            .map(|(user, h)| {
                let silent = now.saturating_sub(h.at) >= PRESENCE_SILENCE_MS;
                (
                    *user,
                    PresenceView {
                        state: if silent {
                            PresenceState::Offline
                        } else {
                            h.state
                        },
                        last_seen: h.last_seen,
                    },
                )
            })
            .collect())
    }

    /// Who is typing in a conversation now.
    pub(crate) fn typers(&mut self, conversation: Conversation) -> Result<Vec<UserId>, Error> {
        if !self.signal_settings()?.typing {
            return Ok(Vec::new());
        }
        let room = self.conversation_room(conversation)?.room_id;
        let now = self.now.mono_ms();
        self.signals.typing.retain(|_, until| *until > now);
        Ok(self
            .signals
            .typing
            .keys()
            .filter(|(r, _)| *r == room)
            .map(|(_, u)| *u)
            .collect())
    }
}
