//! Receiving: frames from direct deliveries, gossip and mailboxes are
//! checked, decrypted and stored, then answered.
//!
//! Frames that arrive together are handled as a group: decryption, and
//! timeline and event-log entries committed with the replay record, then
//! one flush, and only then the answers, the gossip verdicts (forward
//! only what was stored) and the acknowledgements. When the flush fails,
//! every delivery of the group is answered "later" (its sender keeps it
//! and tries again) and nothing is forwarded: no answer is ever left out,
//! since each open delivery holds a slot in the network layer.
//!
//! A message that cannot be stored yet (its room key, its room, its
//! sender's membership or its sender's device list has not arrived, or
//! this device's store failed) is answered "later" and never forwarded.

use std::collections::HashMap;

use libp2p::PeerId;
use safemeet_crypto::EncryptedStore;
use safemeet_crypto::machine::{DecryptedRoomEvent, ToDeviceContent};
use safemeet_proto::deliver::DeliverAnswer as Answer;
use safemeet_proto::event::EventContent;
use safemeet_proto::room::RoomTopic;
use safemeet_proto::{DeviceId, Envelope, EventId, RoomId, UserId};
use safemeet_store::{Keyspace, Store};

use crate::chain::{Refusal, apply_event};
use crate::core::Core;
use crate::events::{NetInput, Output};
use crate::records::{LogEntry, MessageState, RoomRecord, TimelineEntry, name};
use crate::rooms::{dm_room, stage_room};
use crate::timeline::{stage_log_at, stage_message};
use crate::{Error, ErrorKind};

/// Why a received room event cannot be placed yet.
const UNKNOWN_ROOM: &str = "the room is not known yet";
/// Why a received room event cannot be placed (yet): the state that adds
/// its sender may still be on its way.
const NOT_A_MEMBER: &str = "the sender is not a member of the room";
/// Why a received room state cannot be applied yet: the states before it
/// may still be on their way.
const STATE_AHEAD: &str = "the room state is ahead of this device's chain";
/// How far a received Lamport time may run ahead of the room's: a larger
/// jump is refused, so no sender can push a room's clock to its end.
const MAX_LAMPORT_JUMP: u64 = 1 << 32;

/// Where a received frame came from.
pub(crate) enum Source {
    /// A direct delivery from this (authenticated) peer.
    Peer(PeerId),
    /// Gossip on this room topic (the forwarding peer is not the author).
    Gossip(RoomTopic),
    /// This device's mailbox on a relay (the sender is not known).
    Mailbox,
}

/// What a received event does: the room (as it is after the event), and
/// the timeline entry or the log entry it adds.
struct Received {
    room: RoomRecord,
    message: Option<(TimelineEntry, u64)>,
    log: Option<LogEntry>,
    /// This device issues the room's next state (a member left).
    rotate: bool,
}

impl<S: Store + Clone> Core<S> {
    /// Handles network events that arrived together.
    pub(crate) fn network(&mut self, events: Vec<NetInput>) {
        let mut answers = Vec::new();
        let mut verdicts = Vec::new();
        for event in events {
            match event {
                NetInput::Delivery { peer, frame, reply } => {
                    let (answer, _) = self.receive(Source::Peer(peer), &frame);
                    if answer == Answer::Ack {
                        self.unpark(peer);
                    }
                    answers.push((reply, answer));
                }
                NetInput::Gossip {
                    topic,
                    frame,
                    token,
                } => {
                    let (accept, forged) = if self.subscribed.contains(&topic) {
                        let (answer, stored) = self.receive(Source::Gossip(topic), &frame);
                        self.acks_due.extend(stored);
                        // Only what was stored is passed on; only forgeries
                        // are penalised (one's own other devices refuse
                        // one's own messages, for one, and a frame whose
                        // key has not come yet is merely "later").
                        (answer == Answer::Ack, std::mem::take(&mut self.forged))
                    } else {
                        (false, false)
                    };
                    verdicts.push((token, accept, forged));
                }
                NetInput::Connected(peer) => self.connected(peer),
            }
        }
        if answers.is_empty() && verdicts.is_empty() {
            return;
        }
        // Received messages are durable before they are answered; the event
        // log before a cursor is announced.
        let durable = self.flush_received();
        for (reply, answer) in answers {
            let answer = if durable { answer } else { Answer::Later };
            self.out.push(Output::Answer { reply, answer });
        }
        for (token, accept, forged) in verdicts {
            self.out.push(Output::Verdict {
                token,
                accept: accept && durable,
                forged,
            });
        }
        let acks = std::mem::take(&mut self.acks_due);
        if durable {
            self.queue_acks(acks);
        }
    }

    /// Makes what was received (and the event log) durable, if anything
    /// is waiting; false when the flush failed.
    pub(crate) fn flush_received(&mut self) -> bool {
        if self.unflushed_receipts > 0 || self.log_next != self.log_durable {
            if let Err(e) = self.machine.flush() {
                tracing::error!(error = %e, "flush failed; deliveries answered later");
                return false;
            }
            self.unflushed_receipts = 0;
            self.log_durable = self.log_next;
        }
        true
    }

    /// Processes a received frame; returns the answer for the sender, and
    /// for a room message that was stored, its sender and event id.
    pub(crate) fn receive(
        &mut self,
        from: Source,
        frame: &[u8],
    ) -> (Answer, Option<(UserId, DeviceId, EventId)>) {
        use safemeet_crypto::Error as C;
        self.forged = false;
        let Ok(envelope) = Envelope::from_frame(frame) else {
            self.forged = true;
            return (Answer::Refused, None);
        };
        // Gossip carries room messages of its own topic only (checked once
        // the envelope is open).
        let on_topic = match (&from, &envelope) {
            (Source::Gossip(_), Envelope::Room(_)) => true,
            (Source::Gossip(_), _) => false,
            // A relay is no peer of the sender: acknowledgements must come
            // from the peer that names itself.
            (Source::Mailbox, Envelope::Acks(_)) => false,
            (Source::Peer(_) | Source::Mailbox, _) => true,
        };
        if !on_topic {
            self.forged = matches!(from, Source::Gossip(_));
            return (Answer::Refused, None);
        }
        if !matches!(envelope, Envelope::Acks(_)) {
            self.unflushed_receipts += 1;
        }
        if let Envelope::Room(sealed) = &envelope {
            // A frame of a room whose key share has not come yet (or of a
            // contact-to-be, whose DM key this device cannot know yet), or
            // junk: "later", and nothing is kept or forwarded for it (see
            // `headers`).
            let Some(env) = self.open_header(sealed) else {
                let topic = match &from {
                    Source::Gossip(topic) => Some(topic.clone()),
                    Source::Peer(_) | Source::Mailbox => None,
                };
                self.hold_sealed(topic, sealed.clone());
                return (Answer::Later, None);
            };
            if let Source::Gossip(topic) = &from
                && env.topic != *topic
            {
                self.forged = true;
                return (Answer::Refused, None);
            }
            return match self.decrypt_and_store(&env) {
                Ok(stored) => (Answer::Ack, Some(stored)),
                Err(Error::Crypto(C::Replay {
                    same_ciphertext: true,
                    ..
                })) => (Answer::Ack, None),
                // Not stored yet: the sender keeps it and tries again. A
                // held copy is only a head start (and is never forwarded),
                // so junk that fills the held queue loses nothing.
                Err(Error::Crypto(
                    C::MissingRoomKey { .. }
                    | C::UnknownSender { .. }
                    | C::InvalidRecord {
                        reason: UNKNOWN_ROOM | NOT_A_MEMBER | STATE_AHEAD,
                        ..
                    },
                )) => (Answer::Later, None),
                Err(e) if e.kind() == ErrorKind::Local => {
                    tracing::warn!(error = %e, "a room message could not be stored");
                    (Answer::Later, None)
                }
                Err(e) => {
                    tracing::debug!(error = %e, "a room message was refused");
                    self.forged = forgery(&e);
                    (Answer::Refused, None)
                }
            };
        }
        let answer = match envelope {
            Envelope::Acks(acks) => match from {
                Source::Peer(peer) => match self.acked(peer, &acks.event_ids) {
                    Ok(()) => Answer::Ack,
                    Err(e) => {
                        tracing::warn!(error = %e, "could not record acknowledgements");
                        Answer::Later
                    }
                },
                Source::Gossip(_) | Source::Mailbox => Answer::Refused,
            },
            Envelope::ToDevice(env) => match self.decrypt_to_device(&env) {
                Ok(()) => Answer::Ack,
                Err(Error::Crypto(C::DuplicateOlmMessage)) => Answer::Ack,
                // A contact who added this user before this user added
                // them: their keys are taken once their invite is.
                Err(Error::Crypto(C::UnknownSender { .. })) => Answer::Later,
                Err(e) if e.kind() == ErrorKind::Local => {
                    tracing::warn!(error = %e, "a to-device message could not be stored");
                    Answer::Later
                }
                Err(e) => {
                    tracing::debug!(error = %e, "a to-device message was refused");
                    Answer::Refused
                }
            },
            _ => Answer::Refused,
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
    ) -> Result<(), Error> {
        let store = self.store.clone();
        let me = self.machine.account().user_id();
        // Rooms as the released messages change them, over what is stored.
        let mut overlay: HashMap<RoomId, RoomRecord> = HashMap::new();
        let mut log_next = self.log_next;
        let mut stored = Vec::new();
        let mut rooms_changed = false;
        let mut rotate = Vec::new();
        let received = self
            .machine
            .decrypt_to_device_with(env, self.now.wall, |event| {
                let received = received_entry(&store, &mut overlay, me, event)?;
                let mut batch = store.batch();
                let used = stage_received(&store, &mut batch, &received, log_next)?;
                log_next += used;
                rooms_changed |= received.log.is_some();
                if received.rotate {
                    rotate.push(received.room.room_id);
                }
                stored.push((event.sender.user_id, event.sender.device_id, event.event_id));
                overlay.insert(received.room.room_id, received.room);
                Ok(batch)
            })?;
        self.log_next = log_next;
        self.rooms.extend(overlay);
        self.rooms_changed |= rooms_changed;
        self.sessions_changed = true;
        for room in rotate {
            self.rotation_due(room);
        }
        // They may have come over gossip: acknowledge them.
        self.acks_due.extend(stored);
        // The message is used up either way: a list that cannot be kept
        // only means deliveries to that device are not left on its relays.
        if let ToDeviceContent::RoomKey {
            room_id, header, ..
        } = &received.content
        {
            self.keep_pending_header(*room_id, header);
            // Frames that waited for this key: stored now (their senders'
            // next tries are then repeats, acknowledged).
            for (topic, env) in self.release_sealed(header) {
                if topic.is_some_and(|t| t != env.topic) {
                    continue;
                }
                match self.decrypt_and_store(&env) {
                    Ok(stored) => self.acks_due.push(stored),
                    Err(e) => tracing::debug!(error = %e, "a held room frame was not stored"),
                }
            }
        }
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
    ) -> Result<(UserId, DeviceId, EventId), Error> {
        let store = self.store.clone();
        let me = self.machine.account().user_id();
        // The room and its counters are worked out inside the commit, from
        // the decrypted event.
        let rooms = &mut self.rooms;
        let log_next = self.log_next;
        let mut staged: Option<(RoomRecord, u64, bool, bool)> = None;
        let event = self
            .machine
            .decrypt_room_with(env, self.now.wall, |event| {
                let received = received_entry(&store, rooms, me, event)?;
                let mut batch = store.batch();
                let used = stage_received(&store, &mut batch, &received, log_next)?;
                staged = Some((received.room, used, received.log.is_some(), received.rotate));
                Ok(batch)
            })?;
        if let Some((room, used, room_changed, rotate)) = staged {
            if rotate {
                self.rotation_due(room.room_id);
            }
            self.log_next += used;
            self.rooms.insert(room.room_id, room);
            self.rooms_changed |= room_changed;
            self.devices_changed |= room_changed;
        }
        Ok((event.sender.user_id, event.sender.device_id, event.event_id))
    }
}

/// Whether a room message failed to decode or to authenticate: what no
/// honest device sends, and no honest node forwards (each decrypts before
/// it forwards). Refusals of other kinds (one's own message coming back,
/// a room this device has left) are not.
fn forgery(e: &Error) -> bool {
    use safemeet_crypto::Error as C;
    matches!(
        e,
        Error::Crypto(
            C::BadSignature { .. } | C::Decryption { .. } | C::SenderMismatch { .. } | C::Decode(_)
        )
    )
}

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
    let fresh = |dm_with, members, topic| RoomRecord::fresh(room_id, dm_with, members, topic);
    let mut room = match stored {
        Some(r) => r,
        None if room_id == dm_id => fresh(Some(sender), vec![me, sender], dm_topic),
        None => match &event.event.content {
            EventContent::RoomState(state) if state.members.contains(&me) => {
                fresh(None, Vec::new(), state.secret.topic())
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
            rotate: false,
        });
    }
    let applied = if room.dm_with.is_none() {
        apply_event(
            &mut room,
            me,
            sender,
            event.event.lamport,
            &event.event.content,
        )
        .map_err(|refusal| match refusal {
            Refusal::Ahead => invalid(STATE_AHEAD),
            Refusal::Refused(reason) => invalid(reason),
        })?
    } else {
        Default::default()
    };
    if room.members.is_empty() {
        // A state this user was not allowed to join from.
        return Err(invalid(UNKNOWN_ROOM));
    }
    Ok(Received {
        room,
        message: None,
        log: applied.log,
        rotate: applied.rotate,
    })
}

/// Stages what a received event does; returns how many log entries it used.
fn stage_received<S: Store>(
    store: &EncryptedStore<S>,
    batch: &mut safemeet_crypto::EncryptedBatch,
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
