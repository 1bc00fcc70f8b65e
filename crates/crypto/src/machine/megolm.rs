//! Megolm: one outbound session per room on this device, inbound sessions
//! of other senders, rotation, replay table and held messages.

use std::collections::HashMap;

use safemeet_proto::codec;
use safemeet_proto::envelope::RoomEnvelope;
use safemeet_proto::event::{Payload, RoomEvent, RoomKey, Sealed, ToDeviceEvent};
use safemeet_proto::{DeviceId, Envelope, RoomId, Timestamp, UserId};
use safemeet_store::{Keyspace, Store};
use vodozemac::megolm::{
    DecryptionError, GroupSession, GroupSessionPickle, InboundGroupSession,
    InboundGroupSessionPickle, MegolmMessage, SessionConfig, SessionKey,
};
use zeroize::Zeroizing;

use super::records::{self, InboundRecord, OutboundRecord, Pickle, RECORD_VERSION, Share, name};
use super::{
    CryptoMachine, DecryptedRoomEvent, Destination, MAX_HELD_PER_SESSION, MAX_HELD_SESSIONS,
    ROTATION_MESSAGES, ROTATION_PERIOD_MS, RoomMessage, RoomSend, Rotation, Sender,
    ToDeviceContent, event_id, session_id_bytes,
};
use crate::{EncryptedBatch, Error};

/// Inbound sessions kept in memory before the cache is emptied.
const MAX_CACHED_INBOUND: usize = 4096;

pub(super) struct Outbound {
    generation: u64,
    created_at: Timestamp,
    messages: u64,
    shared_with: Vec<Share>,
    session_id: [u8; 32],
    session: GroupSession,
}

pub(super) struct Inbound {
    room_id: RoomId,
    sender_user: UserId,
    sender_device: DeviceId,
    first_index: u32,
    session: InboundGroupSession,
}

#[derive(Default)]
pub(super) struct Cache {
    outbound: HashMap<RoomId, Option<Outbound>>,
    inbound: HashMap<[u8; 32], Option<Inbound>>,
}

fn megolm_error(e: impl std::fmt::Display) -> Error {
    Error::Decryption {
        what: "Megolm",
        reason: e.to_string(),
    }
}

fn elapsed(now: Timestamp, since: Timestamp) -> u64 {
    now.as_millis().saturating_sub(since.as_millis())
}

impl<S: Store> CryptoMachine<S> {
    /// Loads the room's outbound session, ignoring one from before an
    /// unclean shutdown.
    fn take_outbound(&mut self, room: &RoomId) -> Result<Option<Outbound>, Error> {
        let cached = match self.megolm.outbound.remove(room) {
            Some(c) => c,
            None => match self
                .store
                .get(Keyspace::CryptoSessions, &name::outbound(room))?
            {
                Some(bytes) => {
                    let rec: OutboundRecord = records::decode(&bytes, "outbound session")?;
                    let pickle: GroupSessionPickle = rec.pickle.load()?;
                    let session = GroupSession::from_pickle(pickle);
                    Some(Outbound {
                        generation: rec.generation,
                        created_at: rec.created_at,
                        messages: rec.messages,
                        shared_with: rec.shared_with,
                        session_id: session_id_bytes(&session.session_id())?,
                        session,
                    })
                }
                None => None,
            },
        };
        Ok(cached.filter(|o| o.generation == self.run.generation))
    }

    fn stage_outbound(
        &self,
        batch: &mut EncryptedBatch,
        room: &RoomId,
        out: &Outbound,
    ) -> Result<(), Error> {
        let rec = OutboundRecord {
            version: RECORD_VERSION,
            generation: out.generation,
            room_id: *room,
            created_at: out.created_at,
            messages: out.messages,
            shared_with: out.shared_with.clone(),
            pickle: Pickle::of(&out.session.pickle())?,
        };
        self.store.batch_put(
            batch,
            Keyspace::CryptoSessions,
            &name::outbound(room),
            &records::encode(&rec)?,
        )
    }

    fn rotation_needed(
        &self,
        current: Option<&Outbound>,
        recipients: &[super::devices::Recipient],
        now: Timestamp,
    ) -> Option<Rotation> {
        let Some(out) = current else {
            return Some(Rotation::New);
        };
        if out.messages >= ROTATION_MESSAGES {
            return Some(Rotation::MessageLimit);
        }
        if elapsed(now, out.created_at) >= ROTATION_PERIOD_MS {
            return Some(Rotation::Age);
        }
        let removed = out
            .shared_with
            .iter()
            .any(|s| !recipients.iter().any(|(_, d)| *d == s.device));
        if removed {
            return Some(Rotation::RecipientRemoved);
        }
        None
    }

    /// Encrypts a room event for the room's members and commits it.
    ///
    /// Rotates the room's session when due, shares the session key with
    /// every recipient device that lacks it (at the current index, so a
    /// joiner reads nothing earlier), encrypts the event (sealed with this
    /// device's certificate), and commits in one atomic, flushed batch: the
    /// caller's `extra` writes, the advanced ratchet, the Olm sessions used,
    /// and the outbox items for the key shares and the message. Only then
    /// are the frames returned.
    pub fn encrypt_room_event(
        &mut self,
        message: RoomMessage<'_>,
        now: Timestamp,
        extra: EncryptedBatch,
        meta: &[u8],
    ) -> Result<RoomSend, Error> {
        self.check_usable()?;
        let room = message.room_id;
        let (recipients, unknown_members) = self.recipient_devices(message.members)?;
        let current = self.take_outbound(&room)?;
        let rotation = self.rotation_needed(current.as_ref(), &recipients, now);
        let mut out = match (rotation, current) {
            (None, Some(out)) => out,
            _ => {
                let session = GroupSession::new(SessionConfig::version_1());
                Outbound {
                    generation: self.run.generation,
                    created_at: now,
                    messages: 0,
                    shared_with: Vec::new(),
                    session_id: session_id_bytes(&session.session_id())?,
                    session,
                }
            }
        };
        let mut batch = extra;
        let mut key_shares = Vec::new();
        let mut no_session = Vec::new();
        for (user, device) in recipients {
            let current_olm = self.sending_session(&device)?;
            let shared = out.shared_with.iter().position(|s| s.device == device);
            let olm_session = match (shared, current_olm) {
                (Some(i), Some(c)) if out.shared_with[i].olm_session == c => continue,
                (Some(_), None) => continue,
                (None, None) => {
                    no_session.push((user, device));
                    continue;
                }
                (_, Some(c)) => c,
            };
            let index = out.session.message_index();
            let key = RoomKey {
                version: RECORD_VERSION,
                room_id: room,
                session_id: out.session_id,
                first_index: index,
                session_key: out.session.session_key().to_bytes(),
            };
            let (frame, used) =
                self.olm_encrypt(&mut batch, device, ToDeviceEvent::RoomKey(key))?;
            debug_assert_eq!(used, olm_session);
            let share = Share {
                device,
                index,
                olm_session: used,
            };
            match shared {
                Some(i) => out.shared_with[i] = share,
                None => out.shared_with.push(share),
            }
            key_shares.push(self.queue(
                &mut batch,
                Destination::Device(user, device),
                meta,
                frame,
            )?);
        }
        let event = RoomEvent {
            room_id: room,
            sender: self.account.user_id(),
            sender_device: self.account.device_id(),
            lamport: message.lamport,
            ts: now,
            content: message.content,
        };
        let plaintext = Zeroizing::new(
            Sealed {
                sender: self.account.certificate().clone(),
                payload: Payload::Room(event),
            }
            .encode()?,
        );
        let message_index = out.session.message_index();
        let ciphertext = out.session.encrypt(plaintext.as_slice()).to_bytes();
        out.messages = out.messages.saturating_add(1);
        let envelope = RoomEnvelope {
            topic: message.topic,
            session_id: out.session_id,
            ciphertext,
        };
        let id = event_id(&envelope)?;
        let frame = Envelope::Room(envelope).to_frame()?;
        let session_id = out.session_id;
        self.stage_outbound(&mut batch, &room, &out)?;
        let sent = self.queue(&mut batch, Destination::Room(room), meta, frame)?;
        self.put_run(&mut batch)?;
        self.megolm.outbound.insert(room, Some(out));
        self.commit(batch, true)?;
        Ok(RoomSend {
            event_id: id,
            message: sent,
            key_shares,
            no_session,
            unknown_members,
            rotation,
            session_id,
            message_index,
        })
    }

    fn load_inbound(&mut self, id: &[u8; 32]) -> Result<Option<&mut Inbound>, Error> {
        if !self.megolm.inbound.contains_key(id) {
            if self.megolm.inbound.len() >= MAX_CACHED_INBOUND {
                self.megolm.inbound.clear();
            }
            let entry = match self
                .store
                .get(Keyspace::CryptoSessions, &name::inbound(id))?
            {
                Some(bytes) => {
                    let rec: InboundRecord = records::decode(&bytes, "inbound session")?;
                    let pickle: InboundGroupSessionPickle = rec.pickle.load()?;
                    Some(Inbound {
                        room_id: rec.room_id,
                        sender_user: rec.sender_user,
                        sender_device: rec.sender_device,
                        first_index: rec.first_index,
                        session: InboundGroupSession::from_pickle(pickle),
                    })
                }
                None => None,
            };
            self.megolm.inbound.insert(*id, entry);
        }
        Ok(self.megolm.inbound.get_mut(id).and_then(Option::as_mut))
    }

    /// Stores a room key received over Olm from `sender`, bound to that
    /// sender and room. A key for a session already bound to another
    /// sender or room is refused; a copy that starts later than the one
    /// held is ignored.
    pub(super) fn stage_room_key(
        &mut self,
        batch: &mut EncryptedBatch,
        sender: &Sender,
        key: &RoomKey,
    ) -> Result<ToDeviceContent, Error> {
        if key.version != RECORD_VERSION {
            return Err(Error::UnsupportedVersion {
                what: "room key",
                version: key.version,
            });
        }
        let session_key = SessionKey::from_bytes(&key.session_key).map_err(megolm_error)?;
        let session = InboundGroupSession::new(&session_key, SessionConfig::version_1());
        let id = session_id_bytes(&session.session_id())?;
        if id != key.session_id || session.first_known_index() != key.first_index {
            return Err(Error::InvalidRecord {
                what: "room key",
                reason: "the key does not match its session id or index",
            });
        }
        let content = ToDeviceContent::RoomKey {
            room_id: key.room_id,
            session_id: id,
            first_index: key.first_index,
        };
        if let Some(held) = self.load_inbound(&id)? {
            if held.sender_device != sender.device_id
                || held.sender_user != sender.user_id
                || held.room_id != key.room_id
            {
                return Err(Error::SessionConflict);
            }
            if held.first_index <= key.first_index {
                return Ok(content);
            }
        }
        let rec = InboundRecord {
            version: RECORD_VERSION,
            room_id: key.room_id,
            sender_user: sender.user_id,
            sender_device: sender.device_id,
            first_index: key.first_index,
            pickle: Pickle::of(&session.pickle())?,
        };
        self.store.batch_put(
            batch,
            Keyspace::CryptoSessions,
            &name::inbound(&id),
            &records::encode(&rec)?,
        )?;
        self.megolm.inbound.insert(
            id,
            Some(Inbound {
                room_id: key.room_id,
                sender_user: sender.user_id,
                sender_device: sender.device_id,
                first_index: key.first_index,
                session,
            }),
        );
        Ok(content)
    }

    /// Decrypts a room message.
    ///
    /// Errors of note: [`Error::MissingRoomKey`] when the session's key has
    /// not arrived (the message is then held and comes back in
    /// [`ReceivedToDevice::released`](super::ReceivedToDevice) with the key);
    /// [`Error::Replay`] for a (session, index) already decrypted;
    /// [`Error::UnknownMessageIndex`] for a message older than the key held;
    /// [`Error::SenderMismatch`] when the sealed sender is not the device
    /// that shared the session.
    pub fn decrypt_room(
        &mut self,
        envelope: &RoomEnvelope,
        now: Timestamp,
    ) -> Result<DecryptedRoomEvent, Error> {
        self.check_usable()?;
        self.decrypt_room_inner(envelope, now, true)
    }

    fn decrypt_room_inner(
        &mut self,
        envelope: &RoomEnvelope,
        now: Timestamp,
        hold: bool,
    ) -> Result<DecryptedRoomEvent, Error> {
        let id = envelope.session_id;
        let message = MegolmMessage::from_bytes(&envelope.ciphertext).map_err(megolm_error)?;
        let index = message.message_index();
        if self.load_inbound(&id)?.is_none() {
            let held = hold && self.hold(envelope, now)?;
            return Err(Error::MissingRoomKey { held });
        }
        let seen = name::seen_megolm(&id, index);
        let hash: [u8; 32] = blake3::hash(&envelope.ciphertext).into();
        if let Some(prev) = self.store.get(Keyspace::SeenMegolmIndexes, &seen)? {
            return Err(Error::Replay {
                index,
                same_ciphertext: prev.as_slice() == hash,
            });
        }
        let inbound = self
            .load_inbound(&id)?
            .ok_or(Error::MissingRoomKey { held: false })?;
        let decrypted = inbound.session.decrypt(&message).map_err(|e| match e {
            DecryptionError::UnknownMessageIndex(first_known, index) => {
                Error::UnknownMessageIndex { first_known, index }
            }
            other => megolm_error(other),
        })?;
        let (room_id, sender_user, sender_device) =
            (inbound.room_id, inbound.sender_user, inbound.sender_device);
        let plaintext = Zeroizing::new(decrypted.plaintext);
        let sealed = Sealed::decode(&plaintext)?;
        let (cert, trust) = self.check_sender(&sealed.sender)?;
        if cert.device_id != sender_device || cert.user_id != sender_user {
            return Err(Error::SenderMismatch {
                reason: "the sealed sender is not the device that shared the room key",
            });
        }
        let Payload::Room(event) = sealed.payload else {
            return Err(Error::UnexpectedPayload);
        };
        if event.sender != cert.user_id || event.sender_device != cert.device_id {
            return Err(Error::SenderMismatch {
                reason: "the event names another sender than its certificate",
            });
        }
        if event.room_id != room_id {
            return Err(Error::SenderMismatch {
                reason: "the event names another room than its session",
            });
        }
        let mut batch = self.store.batch();
        self.store
            .batch_put(&mut batch, Keyspace::SeenMegolmIndexes, &seen, &hash)?;
        self.commit(batch, false)?;
        Ok(DecryptedRoomEvent {
            event_id: event_id(envelope)?,
            sender: Sender {
                user_id: cert.user_id,
                device_id: cert.device_id,
                trust,
            },
            event,
            session_id: id,
            message_index: index,
        })
    }

    /// Keeps a message whose key has not arrived. Returns false when the
    /// bounds are reached (the message is then not kept).
    fn hold(&mut self, envelope: &RoomEnvelope, _now: Timestamp) -> Result<bool, Error> {
        let id = envelope.session_id;
        let pos = self.held.sessions.iter().position(|(s, _, _)| *s == id);
        let seq = match pos {
            Some(i) => {
                let (_, next, count) = &mut self.held.sessions[i];
                if *count >= MAX_HELD_PER_SESSION {
                    return Ok(false);
                }
                *count += 1;
                let seq = *next;
                *next += 1;
                seq
            }
            None => {
                if self.held.sessions.len() >= MAX_HELD_SESSIONS {
                    return Ok(false);
                }
                self.held.sessions.push((id, 1, 1));
                0
            }
        };
        let mut batch = self.store.batch();
        self.store.batch_put_ordered(
            &mut batch,
            Keyspace::CryptoSessions,
            &name::held(&id),
            seq,
            &codec::encode(envelope)?,
        )?;
        self.put_held_index(&mut batch)?;
        self.commit(batch, false)?;
        Ok(true)
    }

    fn put_held_index(&self, batch: &mut EncryptedBatch) -> Result<(), Error> {
        self.store.batch_put(
            batch,
            Keyspace::CryptoSessions,
            name::HELD_INDEX,
            &records::encode(&self.held)?,
        )
    }

    /// Decrypts and drops the messages held for `session`.
    pub(super) fn release_held(
        &mut self,
        session: &[u8; 32],
        now: Timestamp,
    ) -> Result<Vec<Result<DecryptedRoomEvent, Error>>, Error> {
        let Some(pos) = self.held.sessions.iter().position(|(s, _, _)| s == session) else {
            return Ok(Vec::new());
        };
        let held = self.store.scan_ordered(
            Keyspace::CryptoSessions,
            &name::held(session),
            None,
            MAX_HELD_PER_SESSION as usize,
        )?;
        let mut results = Vec::with_capacity(held.len());
        let mut batch = self.store.batch();
        for (seq, bytes) in held {
            let decoded: Result<RoomEnvelope, _> =
                codec::decode(&bytes, safemeet_proto::padding::MAX_PAYLOAD_BYTES);
            results.push(match decoded {
                Ok(env) => self.decrypt_room_inner(&env, now, false),
                Err(e) => Err(e.into()),
            });
            self.store.batch_delete_ordered(
                &mut batch,
                Keyspace::CryptoSessions,
                &name::held(session),
                seq,
            )?;
        }
        self.held.sessions.remove(pos);
        self.put_held_index(&mut batch)?;
        self.commit(batch, false)?;
        Ok(results)
    }
}
