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
use safemeet_crypto::machine::ToDeviceContent;
use safemeet_proto::deliver::DeliverAnswer as Answer;
use safemeet_proto::room::RoomTopic;
use safemeet_proto::signal::Signal;
use safemeet_proto::{DeviceId, Envelope, EventId, RoomId, UserId};
use safemeet_store::Store;

use crate::core::Core;
use crate::events::{NetInput, Output};
use crate::invitations::stage_invitation;
use crate::placement::{Placed, received_entry, stage_received, waits_for_state};
use crate::records::RoomRecord;
use crate::{Error, ErrorKind};

/// Where a received frame came from.
pub(crate) enum Source {
    /// A direct delivery from this (authenticated) peer.
    Peer(PeerId),
    /// Gossip on this room topic (the forwarding peer is not the author).
    Gossip(RoomTopic),
    /// This device's mailbox on a relay (the sender is not known).
    Mailbox,
}

impl<S: Store + Clone> Core<S> {
    /// Handles network events that arrived together.
    pub(crate) fn network(&mut self, events: Vec<NetInput>) {
        let mut answers = Vec::new();
        let mut verdicts = Vec::new();
        for event in events {
            match event {
                NetInput::Delivery { peer, frame, reply } => {
                    // A blocked user's (or removed contact's) device is
                    // refused unopened: no acknowledgement, nothing kept.
                    self.junk = false;
                    let answer = if self.refuses_peer(&peer) {
                        Answer::Refused
                    } else {
                        self.receive(Source::Peer(peer), &frame).0
                    };
                    if self.junk {
                        self.out.push(Output::Junk(peer));
                    }
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
                    let (accept, penalise) = if self.subscribed.contains(&topic) {
                        self.junk = false;
                        let (answer, stored) = self.receive(Source::Gossip(topic), &frame);
                        self.acks_due.extend(stored);
                        // Only what was stored is passed on. Junk no honest
                        // peer would have passed on costs the forwarder;
                        // other refusals (a blocked author, one's own
                        // message, an index before this device's key) do
                        // not.
                        (answer == Answer::Ack, self.junk)
                    } else {
                        (false, false)
                    };
                    verdicts.push((token, accept, penalise));
                }
                NetInput::Connected(peer) => {
                    self.seen_own_peer(peer);
                    self.connected(peer)
                }
            }
        }
        // A room changed: frames that waited for it may be placed now.
        let placed = self.rooms_changed && !self.waiting.is_empty() && self.retry_waiting();
        if answers.is_empty() && verdicts.is_empty() && !placed {
            return;
        }
        // Received messages are durable before they are answered; the event
        // log before a cursor is announced.
        let durable = self.flush_received();
        for (reply, answer) in answers {
            let answer = if durable { answer } else { Answer::Later };
            self.out.push(Output::Answer { reply, answer });
        }
        for (token, accept, penalise) in verdicts {
            self.out.push(Output::Verdict {
                token,
                accept: accept && durable,
                penalise,
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
    /// for a room message that was stored, its sender and event id. What
    /// is acknowledged must be durable first (see `flush_received`);
    /// nothing else is counted, so junk costs no flush.
    pub(crate) fn receive(
        &mut self,
        from: Source,
        frame: &[u8],
    ) -> (Answer, Option<(UserId, DeviceId, EventId)>) {
        self.acks_frame = false;
        let (answer, stored) = self.receive_frame(from, frame);
        // (Acknowledgements of this device's own messages need no flush
        // before they are answered.)
        if answer == Answer::Ack && !self.acks_frame {
            self.unflushed_receipts += 1;
        }
        (answer, stored)
    }

    fn receive_frame(
        &mut self,
        from: Source,
        frame: &[u8],
    ) -> (Answer, Option<(UserId, DeviceId, EventId)>) {
        use safemeet_crypto::Error as C;
        let Ok(envelope) = Envelope::from_frame(frame) else {
            self.junk = true;
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
            // File pieces are only ever left on relays.
            (Source::Peer(_), Envelope::FilePiece(_)) => false,
            (Source::Peer(_) | Source::Mailbox, _) => true,
        };
        if !on_topic {
            self.junk = true;
            return (Answer::Refused, None);
        }
        if let Envelope::Room(sealed) = &envelope {
            // Whom a frame that waits is charged to; none for a peer this
            // device does not know (see `admission`).
            let holder = self.holder(&from);
            // A frame of a room whose key share has not come yet (or of a
            // contact-to-be, whose DM key this device cannot know yet), or
            // junk: "later", and nothing is forwarded for it (see
            // `headers`); a known sender's is held, within its quota.
            let Some(env) = self.open_header(sealed) else {
                // A requester's first messages are kept with their request.
                if let Some(answer) = self.request_room_frame(&from, sealed, frame) {
                    return (answer, None);
                }
                let topic = match &from {
                    Source::Gossip(topic) => Some(topic.clone()),
                    Source::Peer(_) | Source::Mailbox => None,
                };
                if let Some(holder) = holder {
                    self.hold_sealed(holder, topic, sealed.clone());
                }
                return (Answer::Later, None);
            };
            if let Source::Gossip(topic) = &from
                && env.topic != *topic
            {
                self.junk = true;
                return (Answer::Refused, None);
            }
            let stranger = match &from {
                Source::Peer(peer) if holder.is_none() => Some(*peer),
                _ => None,
            };
            return match self.decrypt_and_store(&env, holder) {
                Ok(stored) => (Answer::Ack, Some(stored)),
                Err(Error::Crypto(C::Replay {
                    same_ciphertext: true,
                    ..
                })) => (Answer::Ack, None),
                // A contact's DM from a peer that is none of their
                // devices, under a key this device was never given: junk.
                Err(Error::Crypto(C::MissingRoomKey { .. }))
                    if stranger.is_some_and(|peer| self.foreign_dm_frame(&peer, &env)) =>
                {
                    self.junk = true;
                    (Answer::Refused, None)
                }
                // Not stored yet: the sender keeps it and tries again. A
                // held copy is only a head start (and is never forwarded),
                // and each sender holds within its own quota.
                // One whose room state has not come yet waits for it here
                // too (see `waiting`).
                Err(e) if waits_for_state(&e) => {
                    if let Some(holder) = holder {
                        self.waiting.keep(holder, env);
                    }
                    (Answer::Later, None)
                }
                Err(Error::Crypto(C::MissingRoomKey { .. } | C::UnknownSender { .. })) => {
                    (Answer::Later, None)
                }
                Err(e) if e.kind() == ErrorKind::Local => {
                    tracing::warn!(error = %e, "a room message could not be stored");
                    (Answer::Later, None)
                }
                Err(e) => {
                    tracing::debug!(error = %e, "a room message was refused");
                    self.junk |= is_junk(&e);
                    (Answer::Refused, None)
                }
            };
        }
        let answer = match envelope {
            Envelope::Acks(acks) => {
                self.acks_frame = true;
                match from {
                    Source::Peer(peer) => match self.acked(peer, &acks.event_ids) {
                        Ok(()) => Answer::Ack,
                        Err(e) => {
                            tracing::warn!(error = %e, "could not record acknowledgements");
                            Answer::Later
                        }
                    },
                    Source::Gossip(_) | Source::Mailbox => Answer::Refused,
                }
            }
            Envelope::ToDevice(env) => match self.decrypt_to_device_from(&from, &env) {
                Ok(()) => Answer::Ack,
                Err(Error::Crypto(C::DuplicateOlmMessage)) => Answer::Ack,
                // Someone who added this user before this user added
                // them: a message request (see `requests`), or "later".
                Err(Error::Crypto(C::UnknownSender { user })) => {
                    self.stranger_to_device(&from, user, &env, frame)
                }
                Err(e) if e.kind() == ErrorKind::Local => {
                    tracing::warn!(error = %e, "a to-device message could not be stored");
                    Answer::Later
                }
                Err(e) => {
                    tracing::debug!(error = %e, "a to-device message was refused");
                    // Bytes that do not even decode are junk; a message that
                    // does not decrypt may be an honest one for a session
                    // this device no longer has.
                    self.junk |= matches!(e, Error::Crypto(C::Decode(_)));
                    Answer::Refused
                }
            },
            Envelope::FilePiece(piece) => self.file_piece(&piece),
            _ => Answer::Refused,
        };
        (answer, None)
    }

    /// Decrypts a to-device message delivered by `from` (call signals
    /// are taken only from the sending device's own peer).
    fn decrypt_to_device_from(
        &mut self,
        from: &Source,
        env: &safemeet_proto::envelope::ToDeviceEnvelope,
    ) -> Result<(), Error> {
        self.to_device_from = match from {
            Source::Peer(peer) => Some(*peer),
            Source::Gossip(_) | Source::Mailbox => None,
        };
        let done = self.decrypt_to_device(env);
        self.to_device_from = None;
        done
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
        let mut follow_ups = Vec::new();
        let now = self.now.wall;
        let policy = self.join_policy();
        let received = self
            .machine
            .decrypt_to_device_with(env, self.now.wall, |event| {
                let mut batch = store.batch();
                let received = match received_entry(&store, &mut overlay, me, &policy, event, now)?
                {
                    Placed::Room(received) => *received,
                    Placed::Invitation(invitation) => {
                        stage_invitation(&store, &mut batch, invitation)?;
                        stored.push((event.sender.user_id, event.sender.device_id, event.event_id));
                        return Ok(batch);
                    }
                };
                let used = stage_received(&store, &mut batch, &received, log_next)?;
                log_next += used;
                rooms_changed |= received.log.is_some();
                follow_ups.extend(received.follow_up());
                if received.rotate {
                    rotate.push(received.room.room_id);
                }
                stored.push((event.sender.user_id, event.sender.device_id, event.event_id));
                overlay.insert(received.room.room_id, received.room);
                Ok(batch)
            })?;
        self.log_next = log_next;
        self.rooms.extend(overlay);
        self.follow_up(follow_ups);
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
                match self.decrypt_and_store(&env, None) {
                    Ok(stored) => self.acks_due.push(stored),
                    Err(e) => tracing::debug!(error = %e, "a held room frame was not stored"),
                }
            }
        }
        if let ToDeviceContent::Verification(step) = &received.content
            && let Err(e) = self.verification_received(
                received.sender.user_id,
                received.sender.device_id,
                step.clone(),
            )
        {
            tracing::info!(error = %e, "a verification step was not taken");
        }
        if received.sender.user_id == self.user_id() {
            self.seen_own_device(received.sender.device_id);
        }
        if let ToDeviceContent::Avatar(signed) = &received.content
            && let Err(e) = self.avatar_received(received.sender.user_id, signed)
        {
            tracing::info!(error = %e, "an avatar was refused");
        }
        if let ToDeviceContent::AccountDeleted(tombstone) = &received.content
            && let Err(e) = self.contact_deleted(tombstone.user_id)
        {
            tracing::warn!(error = %e, "a contact's deletion was not fully taken in");
        }
        if let ToDeviceContent::Signal(signal) = &received.content {
            let taken = match signal {
                Signal::Call(call) => self
                    .call_signal_received(
                        received.sender.user_id,
                        received.sender.device_id,
                        self.to_device_from,
                        call.clone(),
                    )
                    .map(|_| ()),
                other => self.signal_received(received.sender.user_id, other.clone()),
            };
            if let Err(e) = taken {
                tracing::debug!(error = %e, "a signal was not taken in");
            }
        }
        if let ToDeviceContent::Profile(signed) = &received.content {
            match self.profile_received(received.sender.user_id, signed) {
                Ok(_) => {}
                Err(e) => tracing::info!(error = %e, "a profile was refused"),
            }
        }
        if let ToDeviceContent::DeviceNames(names) = &received.content
            && let Err(e) = self.device_names_received(received.sender.device_id, names.clone())
        {
            tracing::info!(error = %e, "device names from another device were not taken in");
        }
        if let ToDeviceContent::Trust(notice) = &received.content
            && let Err(e) = self.trust_received(notice.clone())
        {
            tracing::info!(error = %e, "trust from another device was not taken in");
        }
        if let ToDeviceContent::DeviceList { keys, update } = &received.content
            && let Err(e) = self.devices_announced(received.sender.user_id, &update.added, keys)
        {
            tracing::warn!(error = %e, "a new device list was not fully taken in");
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
    pub(crate) fn decrypt_and_store(
        &mut self,
        env: &safemeet_proto::envelope::RoomEnvelope,
        holder: Option<safemeet_crypto::machine::Holder>,
    ) -> Result<(UserId, DeviceId, EventId), Error> {
        let store = self.store.clone();
        let me = self.machine.account().user_id();
        // The room and its counters are worked out inside the commit, from
        // the decrypted event.
        let policy = self.join_policy();
        let rooms = &mut self.rooms;
        let log_next = self.log_next;
        let mut staged: Option<(RoomRecord, u64, bool, bool)> = None;
        let mut follow_up = None;
        let now = self.now.wall;
        let event = self
            .machine
            .decrypt_room_held(env, self.now.wall, holder, |event| {
                let mut batch = store.batch();
                let received = match received_entry(&store, rooms, me, &policy, event, now)? {
                    Placed::Room(received) => *received,
                    Placed::Invitation(invitation) => {
                        stage_invitation(&store, &mut batch, invitation)?;
                        return Ok(batch);
                    }
                };
                let used = stage_received(&store, &mut batch, &received, log_next)?;
                follow_up = received.follow_up();
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
        self.follow_up(follow_up);
        Ok((event.sender.user_id, event.sender.device_id, event.event_id))
    }
}

/// Whether a refused room frame is junk no honest peer would have passed
/// on: it does not decrypt, its signature fails, or it carries something
/// other than a room event. (A blocked author, one's own message, a replay
/// or an index older than this device's key are refusals of this
/// device's own.)
fn is_junk(e: &Error) -> bool {
    use safemeet_crypto::Error as C;
    matches!(
        e,
        Error::Crypto(
            C::Decryption { .. }
                | C::BadSignature { .. }
                | C::SenderMismatch { .. }
                | C::Decode(_)
                | C::UnexpectedPayload
        )
    )
}
