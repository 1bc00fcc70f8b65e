//! Megolm: one outbound session per room on this device, inbound sessions
//! of other senders, rotation and replay table (held messages: `held`).

use std::collections::HashMap;

use safemeet_proto::envelope::RoomEnvelope;
use safemeet_proto::event::{Payload, RoomEvent, RoomKey, Sealed, SealedSender, ToDeviceEvent};
use safemeet_proto::header::HeaderKey;
use safemeet_proto::{DeviceId, Envelope, EventId, RoomId, Timestamp, UserId};
use safemeet_store::{Keyspace, Store};
use vodozemac::megolm::{
    DecryptionError, ExportedSessionKey, GroupSession, InboundGroupSession,
    InboundGroupSessionPickle, MegolmMessage, SessionConfig, SessionKey,
};
use zeroize::Zeroizing;

use super::records::{
    self, InboundRecord, OutboundRecord, RECORD_VERSION, Share, SharesRecord, name,
};
use super::{
    CryptoMachine, DecryptedRoomEvent, Destination, Holder, ROTATION_MESSAGES, ROTATION_PERIOD_MS,
    RoomMessage, RoomSend, Rotation, Sender, ToDeviceContent, event_id_of, session_id_bytes,
};
use crate::{EncryptedBatch, Error};

/// Inbound sessions kept in memory before the cache is emptied.
const MAX_CACHED_INBOUND: usize = 4096;

pub(super) struct Outbound {
    generation: u64,
    created_at: Timestamp,
    messages: u64,
    shared_with: Vec<Share>,
    /// `shared_with` changed since it was last staged.
    shares_dirty: bool,
    session_id: [u8; 32],
    session: GroupSession,
    /// The record's hashed store name.
    record_name: crate::PointName,
}

pub(super) struct Inbound {
    room_id: RoomId,
    senders: Vec<(UserId, DeviceId)>,
    first_index: u32,
    /// Made from a key signed by the session itself.
    verified: bool,
    session: InboundGroupSession,
}

/// Most devices recorded as having shared one session's key.
const MAX_SHARERS: usize = 8;

#[derive(Default)]
pub(super) struct Cache {
    outbound: HashMap<RoomId, Option<Outbound>>,
    inbound: HashMap<[u8; 32], Inbound>,
}

fn megolm_error(e: impl std::fmt::Display) -> Error {
    Error::Decryption {
        what: "Megolm",
        reason: e.to_string(),
    }
}

/// Whether `bytes` is the one encoding vodozemac gives `message`: the
/// version byte, the message index as field 1 (a minimal varint, always
/// present), the ciphertext as field 2 (omitted when empty), then the MAC
/// and the signature. Equivalent to `message.to_bytes() == bytes` without
/// building a copy of the message.
fn is_canonical(bytes: &[u8], message: &MegolmMessage) -> bool {
    fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    let Some(&version) = bytes.first() else {
        return false;
    };
    let ciphertext = message.ciphertext();
    let mut header = Vec::with_capacity(16);
    header.push(version);
    header.push(0x08);
    varint(&mut header, u64::from(message.message_index()));
    if !ciphertext.is_empty() {
        header.push(0x12);
        varint(&mut header, ciphertext.len() as u64);
    }
    let body_end = header.len() + ciphertext.len();
    bytes.len() == body_end + message.mac().len() + 64
        && bytes.starts_with(&header)
        && bytes.get(header.len()..body_end) == Some(ciphertext)
}

pub(super) fn elapsed(now: Timestamp, since: Timestamp) -> u64 {
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
                    let session = GroupSession::from_pickle(rec.pickle);
                    let session_id = session_id_bytes(&session.session_id())?;
                    let shares = match self
                        .store
                        .get(Keyspace::CryptoSessions, &name::shares(room))?
                    {
                        Some(b) => {
                            let shares: SharesRecord = records::decode(&b, "session shares")?;
                            if shares.session_id == session_id {
                                shares.shared_with
                            } else {
                                Vec::new()
                            }
                        }
                        None => Vec::new(),
                    };
                    Some(Outbound {
                        generation: rec.generation,
                        created_at: rec.created_at,
                        messages: rec.messages,
                        shared_with: shares,
                        shares_dirty: false,
                        session_id,
                        session,
                        record_name: self
                            .store
                            .point_name(Keyspace::CryptoSessions, &name::outbound(room))?,
                    })
                }
                None => None,
            },
        };
        Ok(cached.filter(|o| o.generation == self.run.generation))
    }

    /// Stages the session (every message) and its shares (when they changed).
    fn stage_outbound(
        &self,
        batch: &mut EncryptedBatch,
        room: &RoomId,
        out: &mut Outbound,
    ) -> Result<(), Error> {
        let rec = OutboundRecord {
            version: RECORD_VERSION,
            generation: out.generation,
            room_id: *room,
            created_at: out.created_at,
            messages: out.messages,
            pickle: out.session.pickle(),
        };
        self.store
            .batch_put_value_at(batch, &out.record_name, &rec, records::MAX_RECORD_BYTES)?;
        if out.shares_dirty {
            let shares = SharesRecord {
                version: RECORD_VERSION,
                session_id: out.session_id,
                shared_with: out.shared_with.clone(),
            };
            self.store.batch_put(
                batch,
                Keyspace::CryptoSessions,
                &name::shares(room),
                &records::encode_plain(&shares)?,
            )?;
            out.shares_dirty = false;
        }
        Ok(())
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
        self.encrypt_room_event_with(message, now, |_| Ok(extra), meta)
    }

    /// [`encrypt_room_event`](Self::encrypt_room_event), the caller's writes
    /// made by `writes` from the new event's id (a timeline entry of one's
    /// own message, say) and committed in the same batch.
    pub fn encrypt_room_event_with(
        &mut self,
        message: RoomMessage<'_>,
        now: Timestamp,
        writes: impl FnOnce(&EventId) -> Result<EncryptedBatch, Error>,
        meta: &[u8],
    ) -> Result<RoomSend, Error> {
        self.encrypt_room(message, now, writes, meta, true)
    }

    /// [`encrypt_room_event_with`](Self::encrypt_room_event_with) without
    /// the flush: the batch is applied, and the result comes out of
    /// [`release`](Self::release), which flushes once for a whole group.
    /// Until then nothing of it can be sent.
    pub fn encrypt_room_event_deferred(
        &mut self,
        message: RoomMessage<'_>,
        now: Timestamp,
        writes: impl FnOnce(&EventId) -> Result<EncryptedBatch, Error>,
        meta: &[u8],
    ) -> Result<super::Unflushed<RoomSend>, Error> {
        let inner = self.encrypt_room(message, now, writes, meta, false)?;
        Ok(super::Unflushed {
            inner,
            instance: self.instance,
        })
    }

    fn encrypt_room(
        &mut self,
        message: RoomMessage<'_>,
        now: Timestamp,
        writes: impl FnOnce(&EventId) -> Result<EncryptedBatch, Error>,
        meta: &[u8],
        flush: bool,
    ) -> Result<RoomSend, Error> {
        self.check_usable()?;
        let room = message.room_id;
        let (recipients, unknown_members) = self.recipient_devices(message.members)?;
        let current = self.take_outbound(&room)?;
        let rotation = self.rotation_needed(current.as_ref(), &recipients, now);
        let mut batch = self.store.batch();
        let mut new_key = None;
        let mut out = match (rotation, current) {
            (None, Some(out)) => out,
            _ => {
                let session = GroupSession::new(SessionConfig::version_1());
                let out = Outbound {
                    generation: self.run.generation,
                    created_at: now,
                    messages: 0,
                    shared_with: Vec::new(),
                    shares_dirty: true,
                    session_id: session_id_bytes(&session.session_id())?,
                    session,
                    record_name: self
                        .store
                        .point_name(Keyspace::CryptoSessions, &name::outbound(&room))?,
                };
                // This device reads its own messages too (echoes, catch-up).
                let own = Sender {
                    user_id: self.account.user_id(),
                    device_id: self.account.device_id(),
                    trust: super::DeviceTrust::Verified,
                };
                let key = out.session.session_key();
                let copy = InboundGroupSession::new(&key, SessionConfig::version_1());
                new_key = Some(Zeroizing::new(key.to_bytes()));
                self.stage_inbound(&mut batch, &own, room, copy, true)?;
                out
            }
        };
        let mut key_shares = Vec::new();
        let mut no_session = Vec::new();
        let mut current_key = new_key;
        for (user, device) in recipients {
            let current_olm = self.sending_session(&device)?;
            let shared = out.shared_with.iter().position(|s| s.device == device);
            let olm_session = match (shared, current_olm) {
                (Some(i), Some(c)) if out.shared_with[i].olm_session == Some(c) => continue,
                (Some(_), None) => continue,
                (None, None) => {
                    // Owed from this index: shared once a session exists.
                    out.shared_with.push(Share {
                        device,
                        index: out.session.message_index(),
                        olm_session: None,
                    });
                    out.shares_dirty = true;
                    no_session.push((user, device));
                    continue;
                }
                (_, Some(c)) => c,
            };
            let index = shared.map_or(out.session.message_index(), |i| out.shared_with[i].index);
            let key = self.room_key_at(room, &out, index, &mut current_key, message.header)?;
            let (envelope, used) =
                self.olm_encrypt(&mut batch, device, ToDeviceEvent::RoomKey(key))?;
            debug_assert_eq!(used, olm_session);
            let share = Share {
                device,
                index,
                olm_session: Some(used),
            };
            match shared {
                Some(i) => out.shared_with[i] = share,
                None => out.shared_with.push(share),
            }
            out.shares_dirty = true;
            key_shares.push(self.queue(
                &mut batch,
                Destination::Device(user, device),
                meta,
                envelope,
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
        // Room plaintext is message content, not key material: it goes on to
        // the timeline and the application as text, so its buffers are not
        // wiped (to-device plaintext, which carries room keys, is).
        let plaintext = Sealed::encode_parts(
            &SealedSender::CertificateHash(self.own_cert_hash),
            &Payload::Room(event),
        )?;
        let message_index = out.session.message_index();
        let encrypted = out.session.encrypt(&plaintext);
        out.messages = out.messages.saturating_add(1);
        let id = event_id_of(&out.session_id, &encrypted);
        batch.extend(writes(&id)?);
        let envelope = crate::header::seal(
            message.header,
            &RoomEnvelope {
                topic: message.topic.clone(),
                session_id: out.session_id,
                ciphertext: encrypted.to_bytes(),
            },
        )?;
        let session_id = out.session_id;
        self.stage_outbound(&mut batch, &room, &mut out)?;
        let sent = self.queue(
            &mut batch,
            Destination::Room(room),
            meta,
            Envelope::Room(envelope),
        )?;
        self.megolm.outbound.insert(room, Some(out));
        self.commit(batch, flush)?;
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

    /// The room key of `out` from message `index` on: the signed session key
    /// at the current index, or an export of this device's own inbound copy
    /// for an earlier index owed to a device.
    /// `current_key` caches the signed session key at the current index for
    /// the duration of one call (exporting it costs a signature).
    fn room_key_at(
        &mut self,
        room: RoomId,
        out: &Outbound,
        index: u32,
        current_key: &mut Option<Zeroizing<Vec<u8>>>,
        header: &HeaderKey,
    ) -> Result<RoomKey, Error> {
        let current = out.session.message_index();
        let exported = if index < current {
            self.load_inbound(&out.session_id)?
                .and_then(|own| own.session.export_at(index))
        } else {
            None
        };
        Ok(match exported {
            Some(key) => RoomKey {
                version: RECORD_VERSION,
                room_id: room,
                session_id: out.session_id,
                first_index: index,
                session_key: key.to_bytes(),
                header: header.root(),
            },
            None => RoomKey {
                version: RECORD_VERSION,
                room_id: room,
                session_id: out.session_id,
                first_index: current,
                session_key: current_key
                    .get_or_insert_with(|| Zeroizing::new(out.session.session_key().to_bytes()))
                    .to_vec(),
                header: header.root(),
            },
        })
    }

    /// Loads an inbound session. Only sessions that exist are cached, so
    /// envelopes naming random session ids cost a store lookup, not memory.
    fn load_inbound(&mut self, id: &[u8; 32]) -> Result<Option<&mut Inbound>, Error> {
        if !self.megolm.inbound.contains_key(id) {
            let Some(bytes) = self
                .store
                .get(Keyspace::CryptoSessions, &name::inbound(id))?
            else {
                return Ok(None);
            };
            let rec: InboundRecord = records::decode(&bytes, "inbound session")?;
            let pickle: InboundGroupSessionPickle = rec.pickle;
            if self.megolm.inbound.len() >= MAX_CACHED_INBOUND {
                self.megolm.inbound.clear();
            }
            self.megolm.inbound.insert(
                *id,
                Inbound {
                    room_id: rec.room_id,
                    senders: rec.senders,
                    first_index: rec.first_index,
                    verified: rec.verified,
                    session: InboundGroupSession::from_pickle(pickle),
                },
            );
        }
        Ok(self.megolm.inbound.get_mut(id))
    }

    /// Stores an inbound session for `room` shared by `sender`, or adds
    /// `sender` to the devices that shared it. `verified` is true when the
    /// key was signed by the session's own key (a fresh session key), false
    /// for an export. Copies of one session must agree (their ratchets must
    /// be connected): the earliest is kept. A copy that disagrees is
    /// refused, unless it is signed and the held one is not, in which case
    /// the signed one replaces it. A session bound to another room is refused.
    fn stage_inbound(
        &mut self,
        batch: &mut EncryptedBatch,
        sender: &Sender,
        room: RoomId,
        mut session: InboundGroupSession,
        verified: bool,
    ) -> Result<(), Error> {
        let id = session_id_bytes(&session.session_id())?;
        let who = (sender.user_id, sender.device_id);
        let (senders, session, verified) = match self.load_inbound(&id)? {
            Some(held) => {
                if held.room_id != room {
                    return Err(Error::SessionConflict);
                }
                if !session.connected(&mut held.session) {
                    if !verified || held.verified {
                        return Err(Error::SessionConflict);
                    }
                    (vec![who], session, true)
                } else {
                    let known = held.senders.contains(&who);
                    let earlier = session.first_known_index() < held.first_index;
                    let upgrade = verified && !held.verified;
                    if known && !earlier && !upgrade {
                        return Ok(());
                    }
                    if !known {
                        if held.senders.len() >= MAX_SHARERS {
                            return Err(Error::SessionConflict);
                        }
                        held.senders.push(who);
                    }
                    let keep = if earlier {
                        session
                    } else {
                        InboundGroupSession::from_pickle(held.session.pickle())
                    };
                    (held.senders.clone(), keep, verified || held.verified)
                }
            }
            None => (vec![who], session, verified),
        };
        let first_index = session.first_known_index();
        let rec = InboundRecord {
            version: RECORD_VERSION,
            room_id: room,
            senders: senders.clone(),
            first_index,
            verified,
            pickle: session.pickle(),
        };
        self.store.batch_put_value(
            batch,
            Keyspace::CryptoSessions,
            &name::inbound(&id),
            &rec,
            records::MAX_RECORD_BYTES,
        )?;
        if self.megolm.inbound.len() >= MAX_CACHED_INBOUND {
            self.megolm.inbound.clear();
        }
        self.megolm.inbound.insert(
            id,
            Inbound {
                room_id: room,
                senders,
                first_index,
                verified,
                session,
            },
        );
        Ok(())
    }

    /// Stores a room key received over Olm from `sender`, bound to that
    /// sender and the key's room (see [`InboundRecord`]).
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
        // A fresh session key (signed by the session), or an export from an
        // earlier index that the sender owed this device. Either way the
        // messages are checked against the session's signing key, which is
        // the session id.
        let (session, verified) = match SessionKey::from_bytes(&key.session_key) {
            Ok(k) => (
                InboundGroupSession::new(&k, SessionConfig::version_1()),
                true,
            ),
            Err(_) => (
                InboundGroupSession::import(
                    &ExportedSessionKey::from_bytes(&key.session_key).map_err(megolm_error)?,
                    SessionConfig::version_1(),
                ),
                false,
            ),
        };
        let id = session_id_bytes(&session.session_id())?;
        if id != key.session_id || session.first_known_index() != key.first_index {
            return Err(Error::InvalidRecord {
                what: "room key",
                reason: "the key does not match its session id or index",
            });
        }
        self.stage_inbound(batch, sender, key.room_id, session, verified)?;
        Ok(ToDeviceContent::RoomKey {
            room_id: key.room_id,
            session_id: id,
            first_index: key.first_index,
            header: key.header.clone(),
        })
    }

    /// Decrypts a room message.
    ///
    /// Errors of note: [`Error::MissingRoomKey`] when the session's key has
    /// not arrived (the message is then held and comes back in
    /// [`ReceivedToDevice::released`](super::ReceivedToDevice) with the key);
    /// [`Error::Replay`] for a (session, index) already decrypted;
    /// [`Error::UnknownMessageIndex`] for a message older than the key held;
    /// [`Error::SenderMismatch`] when the sealed sender is not a device that
    /// shared the session.
    ///
    /// The sender is checked cryptographically; whether it may write in the
    /// room (membership) is the caller's check, made on the returned event.
    pub fn decrypt_room(
        &mut self,
        envelope: &RoomEnvelope,
        now: Timestamp,
    ) -> Result<DecryptedRoomEvent, Error> {
        self.decrypt_room_with(envelope, now, |_| Ok(EncryptedBatch::default()))
    }

    /// [`decrypt_room`](Self::decrypt_room), committing the caller's writes
    /// for the event (made by `writes` from the decrypted event) in the same
    /// batch as the replay record. Then a crash leaves either both or
    /// neither, and a redelivered message is never lost to the replay table.
    pub fn decrypt_room_with(
        &mut self,
        envelope: &RoomEnvelope,
        now: Timestamp,
        writes: impl FnOnce(&DecryptedRoomEvent) -> Result<EncryptedBatch, Error>,
    ) -> Result<DecryptedRoomEvent, Error> {
        self.decrypt_room_held(envelope, now, Some(Holder::default()), writes)
    }

    /// [`decrypt_room_with`](Self::decrypt_room_with), holding a message
    /// whose key has not arrived only when `holder` names whom it is
    /// charged to (see the [module docs](super)); `None` holds nothing
    /// (its sender, or a relay, keeps it).
    pub fn decrypt_room_held(
        &mut self,
        envelope: &RoomEnvelope,
        now: Timestamp,
        holder: Option<Holder>,
        writes: impl FnOnce(&DecryptedRoomEvent) -> Result<EncryptedBatch, Error>,
    ) -> Result<DecryptedRoomEvent, Error> {
        self.check_usable()?;
        let (event, mut batch) = self.open_room(envelope, now, holder)?;
        let extra = writes(&event)?;
        batch.extend(extra);
        self.commit(batch, false)?;
        Ok(event)
    }

    /// Decrypts and checks a room message; returns it with the replay
    /// record staged (not committed).
    pub(super) fn open_room(
        &mut self,
        envelope: &RoomEnvelope,
        now: Timestamp,
        holder: Option<Holder>,
    ) -> Result<(DecryptedRoomEvent, EncryptedBatch), Error> {
        let id = envelope.session_id;
        let message = MegolmMessage::from_bytes(&envelope.ciphertext).map_err(megolm_error)?;
        if !is_canonical(&envelope.ciphertext, &message) {
            // Only one encoding of a message is accepted, so a relay cannot
            // change its bytes (and with them its event id) and keep it valid.
            return Err(Error::Decryption {
                what: "Megolm",
                reason: "non-canonical message encoding".to_owned(),
            });
        }
        let index = message.message_index();
        if self.load_inbound(&id)?.is_none() {
            let held = match holder {
                Some(holder) => self.hold(envelope, holder, now)?,
                None => false,
            };
            return Err(Error::MissingRoomKey { held });
        }
        let seen = self
            .store
            .point_name(Keyspace::SeenMegolmIndexes, &name::seen_megolm(&id, index))?;
        let id_of_event = event_id_of(&id, &message);
        let previous = self.store.tag_matches_at(&seen, id_of_event.as_bytes())?;
        if previous == Some(true) {
            return Err(Error::Replay {
                index,
                same_ciphertext: true,
            });
        }
        let inbound = self
            .load_inbound(&id)?
            .ok_or(Error::MissingRoomKey { held: false })?;
        let decrypted = inbound.session.decrypt(&message).map_err(|e| match e {
            DecryptionError::UnknownMessageIndex(first_known, index) => {
                Error::UnknownMessageIndex { first_known, index }
            }
            DecryptionError::Signature(_) => Error::BadSignature {
                what: "Megolm message",
            },
            other => megolm_error(other),
        })?;
        if previous.is_some() {
            // Validly signed, different bytes at a used index.
            return Err(Error::Replay {
                index,
                same_ciphertext: false,
            });
        }
        let (room_id, senders) = (inbound.room_id, inbound.senders.clone());
        let sealed = Sealed::decode_padded(&decrypted.plaintext)?;
        let sender = self.check_room_sender(&sealed.sender, &senders)?;
        let Payload::Room(event) = sealed.payload else {
            return Err(Error::UnexpectedPayload);
        };
        if event.sender != sender.user_id || event.sender_device != sender.device_id {
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
            .batch_put_tag_at(&mut batch, &seen, id_of_event.as_bytes());
        let decrypted = DecryptedRoomEvent {
            event_id: id_of_event,
            sender,
            event,
            session_id: id,
            message_index: index,
        };
        Ok((decrypted, batch))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

    use super::*;

    #[test]
    fn canonical_check_agrees_with_re_encoding() {
        let mut group = GroupSession::new(SessionConfig::version_1());
        for i in 0..300usize {
            let plaintext = vec![7u8; (i * 37) % 5000];
            let bytes = group.encrypt(&plaintext).to_bytes();
            let parsed = MegolmMessage::from_bytes(&bytes).unwrap();
            assert!(is_canonical(&bytes, &parsed));
            // Non-canonical variants that still parse: an unknown field
            // inserted after the version byte, an over-long index varint.
            let mut padded = bytes.clone();
            padded.splice(1..1, [0x28, 0x01]);
            if let Ok(m) = MegolmMessage::from_bytes(&padded) {
                assert_eq!(is_canonical(&padded, &m), m.to_bytes() == padded);
                assert!(!is_canonical(&padded, &m));
            }
            let mut long = bytes.clone();
            if long[2] < 0x80 {
                let v = long[2];
                long.splice(2..3, [v | 0x80, 0x00]);
                if let Ok(m) = MegolmMessage::from_bytes(&long) {
                    assert_eq!(is_canonical(&long, &m), m.to_bytes() == long);
                }
            }
        }
    }
}
