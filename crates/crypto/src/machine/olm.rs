//! Olm: one-to-one sessions between devices, for room keys and control messages.

use std::collections::HashMap;

use safemeet_proto::envelope::{OlmMessageKind, ToDeviceEnvelope};
use safemeet_proto::event::{Payload, Sealed, SealedSender, ToDeviceEvent};
use safemeet_proto::identity::{DeviceStatus, OneTimeKey, Signed};
use safemeet_proto::{DeviceId, Envelope, Timestamp};
use safemeet_store::{Keyspace, Store};
use vodozemac::Curve25519PublicKey;
use vodozemac::olm::{
    Message, OlmMessage, PreKeyMessage, Session, SessionConfig, SessionCreationError, SessionPickle,
};
use zeroize::Zeroizing;

use super::DecryptedRoomEvent;
use super::records::{self, OlmIndexRecord, OlmSessionRecord, Pickle, RECORD_VERSION, name};
use super::{
    CryptoMachine, FALLBACK_KEY_MAX_AGE_MS, MAX_OLM_SESSIONS_PER_DEVICE, ReceivedToDevice, Sender,
    ToDeviceContent, UNWEDGE_INTERVAL_MS, session_id_bytes,
};
use crate::certificate;
use crate::{EncryptedBatch, Error};

pub(super) struct Entry {
    peer_device: DeviceId,
    peer_curve25519: [u8; 32],
    created_at: Timestamp,
    generation: u64,
    wedged_at: Option<Timestamp>,
    session: Session,
}

#[derive(Default)]
pub(super) struct Cache {
    sessions: HashMap<[u8; 32], Entry>,
    by_device: HashMap<DeviceId, OlmIndexRecord>,
    /// Devices whose session broke, with when we last asked for a new one.
    wedged: HashMap<DeviceId, Timestamp>,
    /// Devices waiting for the caller to open a new session.
    needs_session: Vec<DeviceId>,
}

fn non_canonical() -> Error {
    Error::Decryption {
        what: "Olm",
        reason: "non-canonical message encoding".to_owned(),
    }
}

fn olm_error(e: impl std::fmt::Display) -> Error {
    Error::Decryption {
        what: "Olm",
        reason: e.to_string(),
    }
}

impl<S: Store> CryptoMachine<S> {
    /// Loads a session. Only sessions that exist are cached, so envelopes
    /// naming random session ids cost a store lookup, not memory.
    pub(super) fn load_olm_session(&mut self, id: &[u8; 32]) -> Result<Option<&mut Entry>, Error> {
        if !self.olm.sessions.contains_key(id) {
            let Some(bytes) = self
                .store
                .get(Keyspace::CryptoSessions, &name::olm_session(id))?
            else {
                return Ok(None);
            };
            let rec: OlmSessionRecord = records::decode(&bytes, "Olm session")?;
            let pickle: SessionPickle = rec.pickle.json_load()?;
            self.olm.sessions.insert(
                *id,
                Entry {
                    peer_device: rec.peer_device,
                    peer_curve25519: rec.peer_curve25519,
                    created_at: rec.created_at,
                    generation: rec.generation,
                    wedged_at: rec.wedged_at,
                    session: Session::from_pickle(pickle),
                },
            );
        }
        Ok(self.olm.sessions.get_mut(id))
    }

    fn load_olm_index(&mut self, device: &DeviceId) -> Result<&mut OlmIndexRecord, Error> {
        if !self.olm.by_device.contains_key(device) {
            let index = match self
                .store
                .get(Keyspace::CryptoSessions, &name::olm_index(device))?
            {
                Some(bytes) => records::decode(&bytes, "Olm session index")?,
                None => OlmIndexRecord {
                    version: RECORD_VERSION,
                    sessions: Vec::new(),
                },
            };
            self.olm.by_device.insert(*device, index);
        }
        self.olm
            .by_device
            .get_mut(device)
            .ok_or(Error::InvalidRecord {
                what: "Olm session index",
                reason: "missing after load",
            })
    }

    /// The session used to send to `device`: the newest one of this
    /// generation not marked broken, else the newest one of this generation.
    /// (A broken mark alone does not stop sending: anyone who sees a session
    /// id can send garbage on it, and that must not cut a conversation; it
    /// only asks for a new session.) Sessions from before an unclean
    /// shutdown are never used for sending: the store may have lost their
    /// last ratchet step, and a restored step would reuse a message key.
    pub(super) fn sending_session(&mut self, device: &DeviceId) -> Result<Option<[u8; 32]>, Error> {
        let count = self.load_olm_index(device)?.sessions.len();
        let generation = self.run.generation;
        let mut newest = None;
        for i in (0..count).rev() {
            let Some(id) = self
                .olm
                .by_device
                .get(device)
                .and_then(|x| x.sessions.get(i))
                .copied()
            else {
                continue;
            };
            let id = &id;
            if let Some(e) = self.load_olm_session(id)?
                && e.generation == generation
            {
                if e.wedged_at.is_none() {
                    return Ok(Some(*id));
                }
                newest = newest.or(Some(*id));
            }
        }
        Ok(newest)
    }

    /// Stages the deletion of every Olm session with `device`, and drops
    /// them from memory.
    pub(super) fn forget_olm_sessions(
        &mut self,
        batch: &mut EncryptedBatch,
        device: &DeviceId,
    ) -> Result<(), Error> {
        let ids = self.load_olm_index(device)?.sessions.clone();
        for id in &ids {
            self.store
                .batch_delete(batch, Keyspace::CryptoSessions, &name::olm_session(id))?;
            self.olm.sessions.remove(id);
        }
        self.store
            .batch_delete(batch, Keyspace::CryptoSessions, &name::olm_index(device))?;
        self.olm.by_device.remove(device);
        self.olm.wedged.remove(device);
        self.olm.needs_session.retain(|d| d != device);
        Ok(())
    }

    fn stage_olm_session(&self, batch: &mut EncryptedBatch, id: &[u8; 32]) -> Result<(), Error> {
        let Some(e) = self.olm.sessions.get(id) else {
            return Ok(());
        };
        let rec = OlmSessionRecord {
            version: RECORD_VERSION,
            peer_device: e.peer_device,
            peer_curve25519: e.peer_curve25519,
            created_at: e.created_at,
            generation: e.generation,
            wedged_at: e.wedged_at,
            pickle: Pickle::json_of(&e.session.pickle())?,
        };
        self.store.batch_put(
            batch,
            Keyspace::CryptoSessions,
            &name::olm_session(id),
            &records::encode(&rec)?,
        )
    }

    /// Adds a new session to the cache and the device's index (dropping the
    /// oldest beyond the limit) and stages both.
    fn add_olm_session(
        &mut self,
        batch: &mut EncryptedBatch,
        id: [u8; 32],
        entry: Entry,
    ) -> Result<(), Error> {
        let device = entry.peer_device;
        self.olm.sessions.insert(id, entry);
        self.stage_olm_session(batch, &id)?;
        let index = self.load_olm_index(&device)?;
        index.sessions.retain(|s| *s != id);
        index.sessions.push(id);
        let dropped: Vec<[u8; 32]> = if index.sessions.len() > MAX_OLM_SESSIONS_PER_DEVICE {
            let excess = index.sessions.len() - MAX_OLM_SESSIONS_PER_DEVICE;
            index.sessions.drain(..excess).collect()
        } else {
            Vec::new()
        };
        let encoded = records::encode(&*index)?;
        self.store.batch_put(
            batch,
            Keyspace::CryptoSessions,
            &name::olm_index(&device),
            &encoded,
        )?;
        for old in dropped {
            self.olm.sessions.remove(&old);
            self.store
                .batch_delete(batch, Keyspace::CryptoSessions, &name::olm_session(&old))?;
        }
        self.olm.needs_session.retain(|d| *d != device);
        Ok(())
    }

    /// Starts an Olm session with `device` from a one-time (or fallback) key
    /// it handed out. The device must be known and not revoked, and the key
    /// must carry a valid signature by the device's certified key.
    pub fn create_outbound_session(
        &mut self,
        device: &DeviceId,
        key: &Signed<OneTimeKey>,
        now: Timestamp,
    ) -> Result<(), Error> {
        self.check_usable()?;
        let cert = self
            .load_device(device)?
            .map(|e| e.cert.clone())
            .ok_or(Error::UnknownDevice { device: *device })?;
        let status = self
            .load_list(&cert.user_id)?
            .and_then(|l| l.devices.iter().find(|e| e.device_id == *device))
            .map(|e| e.status);
        if matches!(status, Some(DeviceStatus::Revoked(_))) {
            return Err(Error::RevokedDevice { device: *device });
        }
        let otk = certificate::verify_one_time_key(key, &cert)?;
        if otk.fallback
            && now.as_millis().saturating_sub(otk.created_at.as_millis())
                > 2 * FALLBACK_KEY_MAX_AGE_MS
        {
            return Err(Error::InvalidRecord {
                what: "fallback key",
                reason: "the key is older than two rotation periods",
            });
        }
        let session = self
            .account
            .device_keys()
            .olm
            .create_outbound_session(
                SessionConfig::version_1(),
                Curve25519PublicKey::from_bytes(cert.curve25519_key),
                Curve25519PublicKey::from_bytes(otk.key),
            )
            .map_err(|e| Error::Decryption {
                what: "Olm session setup",
                reason: e.to_string(),
            })?;
        let id = session_id_bytes(&session.session_id())?;
        let mut batch = self.store.batch();
        self.add_olm_session(
            &mut batch,
            id,
            Entry {
                peer_device: *device,
                peer_curve25519: cert.curve25519_key,
                created_at: now,
                generation: self.run.generation,
                wedged_at: None,
                session,
            },
        )?;
        self.commit(batch, false)
    }

    /// True when an Olm session to `device` exists for sending.
    pub fn has_session(&mut self, device: &DeviceId) -> Result<bool, Error> {
        Ok(self.sending_session(device)?.is_some())
    }

    /// Devices whose Olm session broke: open a new session with each (claim
    /// a one-time key, [`create_outbound_session`](Self::create_outbound_session))
    /// and send [`ToDeviceEvent::NewSession`] on it. Asked at most once per
    /// [`UNWEDGE_INTERVAL_MS`] per device.
    pub fn take_devices_needing_session(&mut self) -> Vec<DeviceId> {
        std::mem::take(&mut self.olm.needs_session)
    }

    /// Encrypts `event` for `device` on its sending session and stages the
    /// advanced session. Returns the envelope and the session id.
    pub(super) fn olm_encrypt(
        &mut self,
        batch: &mut EncryptedBatch,
        device: DeviceId,
        event: ToDeviceEvent,
    ) -> Result<(Envelope, [u8; 32]), Error> {
        let id = self
            .sending_session(&device)?
            .ok_or(Error::NoOlmSession { device })?;
        let plaintext = Zeroizing::new(
            Sealed {
                sender: SealedSender::Certificate(self.account.certificate().clone()),
                payload: Payload::ToDevice(event),
            }
            .encode_padded()?,
        );
        let entry = self
            .load_olm_session(&id)?
            .ok_or(Error::NoOlmSession { device })?;
        let message =
            entry
                .session
                .encrypt(plaintext.as_slice())
                .map_err(|e| Error::Decryption {
                    what: "Olm encryption",
                    reason: e.to_string(),
                })?;
        let (kind, ciphertext) = match message {
            OlmMessage::PreKey(m) => (OlmMessageKind::PreKey, m.to_bytes()),
            OlmMessage::Normal(m) => (OlmMessageKind::Normal, m.to_bytes()),
        };
        self.stage_olm_session(batch, &id)?;
        let envelope = Envelope::ToDevice(ToDeviceEnvelope {
            kind,
            session_id: id,
            ciphertext,
        });
        Ok((envelope, id))
    }

    /// Decrypts a to-device message. Room keys are stored (and release held
    /// room messages); verification steps are returned. The sender is
    /// checked: its certificate verifies, its device is not revoked, and the
    /// Olm identity key that set up the session is the certified one.
    pub fn decrypt_to_device(
        &mut self,
        envelope: &ToDeviceEnvelope,
        now: Timestamp,
    ) -> Result<ReceivedToDevice, Error> {
        self.decrypt_to_device_with(envelope, now, |_| Ok(EncryptedBatch::default()))
    }

    /// [`decrypt_to_device`](Self::decrypt_to_device), committing the
    /// caller's writes for each released room message (made by `place`)
    /// together with its replay record. A message `place` refuses gets no
    /// replay record, so a copy delivered again can still be decrypted.
    pub fn decrypt_to_device_with(
        &mut self,
        envelope: &ToDeviceEnvelope,
        now: Timestamp,
        place: impl FnMut(&DecryptedRoomEvent) -> Result<EncryptedBatch, Error>,
    ) -> Result<ReceivedToDevice, Error> {
        self.check_usable()?;
        let hash: [u8; 32] = blake3::hash(&envelope.ciphertext).into();
        let seen = name::seen_olm(&hash);
        if self
            .store
            .tag_matches(Keyspace::SeenMegolmIndexes, &seen, &[])?
            .is_some()
        {
            return Err(Error::DuplicateOlmMessage);
        }
        let id = envelope.session_id;
        let mut account_changed = false;
        let mut new_session = None;
        let plaintext = match envelope.kind {
            OlmMessageKind::PreKey => {
                let pre = PreKeyMessage::from_bytes(&envelope.ciphertext).map_err(olm_error)?;
                if pre.to_bytes() != envelope.ciphertext {
                    return Err(non_canonical());
                }
                if session_id_bytes(&pre.session_id())? != id {
                    return Err(Error::InvalidRecord {
                        what: "to-device envelope",
                        reason: "the session id does not match the message",
                    });
                }
                match self.load_olm_session(&id)? {
                    Some(entry) => Zeroizing::new(
                        entry
                            .session
                            .decrypt(&OlmMessage::PreKey(pre))
                            .map_err(olm_error)?,
                    ),
                    None => {
                        let identity = pre.identity_key();
                        let olm_account = &mut self.account.device_keys_mut().olm;
                        let keys_before = olm_account.stored_one_time_key_count();
                        let created = olm_account
                            .create_inbound_session(SessionConfig::version_1(), identity, &pre)
                            .map_err(|e| match e {
                                SessionCreationError::MissingOneTimeKey(_) => {
                                    Error::MissingOneTimeKey
                                }
                                other => olm_error(other),
                            })?;
                        // A one-time key was used up (a fallback key is not).
                        account_changed = olm_account.stored_one_time_key_count() != keys_before;
                        new_session = Some((created.session, identity.to_bytes()));
                        Zeroizing::new(created.plaintext)
                    }
                }
            }
            OlmMessageKind::Normal => {
                let message = Message::from_bytes(&envelope.ciphertext).map_err(olm_error)?;
                if message.to_bytes() != envelope.ciphertext {
                    return Err(non_canonical());
                }
                let entry = self
                    .load_olm_session(&id)?
                    .ok_or(Error::UnknownOlmSession)?;
                match entry.session.decrypt(&OlmMessage::Normal(message)) {
                    Ok(p) => Zeroizing::new(p),
                    Err(e) => {
                        self.mark_wedged(&id, now)?;
                        return Err(olm_error(e));
                    }
                }
            }
        };
        let mut batch = self.store.batch();
        if account_changed {
            self.put_account(&mut batch)?;
        }
        let checked = self.check_to_device(&plaintext, &id, new_session.as_ref().map(|s| s.1));
        let result = match checked {
            Ok((sender, event)) => {
                if let Some((session, curve)) = new_session {
                    self.add_olm_session(
                        &mut batch,
                        id,
                        Entry {
                            peer_device: sender.device_id,
                            peer_curve25519: curve,
                            created_at: now,
                            generation: self.run.generation,
                            wedged_at: None,
                            session,
                        },
                    )?;
                } else {
                    self.stage_olm_session(&mut batch, &id)?;
                }
                self.store
                    .batch_put_tag(&mut batch, Keyspace::SeenMegolmIndexes, &seen, &[])?;
                self.handle_to_device(&mut batch, sender, event)
            }
            Err(e) => {
                if new_session.is_none() {
                    // The ratchet advanced for a validly encrypted message;
                    // keep it in step with the store though the content is
                    // refused.
                    self.stage_olm_session(&mut batch, &id)?;
                } else if account_changed {
                    // Keep the one-time key: the same message may be
                    // accepted later (for example once the sender's device
                    // list is known).
                    self.reload_account()?;
                    batch = self.store.batch();
                }
                Err(e)
            }
        };
        self.commit(batch, false)?;
        let (sender, content, release) = result?;
        let released = match release {
            Some(session) => self.release_held(&session, now, place)?,
            None => Vec::new(),
        };
        Ok(ReceivedToDevice {
            sender,
            content,
            released,
        })
    }

    /// Decodes a decrypted to-device plaintext and checks its sender against
    /// the session's peer key (`new_peer` for a session being created).
    fn check_to_device(
        &mut self,
        plaintext: &[u8],
        id: &[u8; 32],
        new_peer: Option<[u8; 32]>,
    ) -> Result<(Sender, ToDeviceEvent), Error> {
        let sealed = Sealed::decode_padded(plaintext)?;
        let SealedSender::Certificate(certificate) = &sealed.sender else {
            return Err(Error::SenderMismatch {
                reason: "a to-device message must carry the sender's certificate",
            });
        };
        let (cert, trust) = self.check_sender(certificate)?;
        let (peer_curve, peer_device) = match new_peer {
            Some(curve) => (curve, cert.device_id),
            None => {
                let e = self.load_olm_session(id)?.ok_or(Error::UnknownOlmSession)?;
                (e.peer_curve25519, e.peer_device)
            }
        };
        if cert.curve25519_key != peer_curve || cert.device_id != peer_device {
            return Err(Error::SenderMismatch {
                reason: "the Olm session key is not the certified device's key",
            });
        }
        let Payload::ToDevice(event) = sealed.payload else {
            return Err(Error::UnexpectedPayload);
        };
        Ok((
            Sender {
                user_id: cert.user_id,
                device_id: cert.device_id,
                trust,
            },
            event,
        ))
    }

    fn handle_to_device(
        &mut self,
        batch: &mut EncryptedBatch,
        sender: Sender,
        event: ToDeviceEvent,
    ) -> Result<(Sender, ToDeviceContent, Option<[u8; 32]>), Error> {
        match event {
            ToDeviceEvent::RoomKey(key) => {
                let content = self.stage_room_key(batch, &sender, &key)?;
                let session = key.session_id;
                Ok((sender, content, Some(session)))
            }
            ToDeviceEvent::Verification(v) => Ok((sender, ToDeviceContent::Verification(v), None)),
            ToDeviceEvent::NewSession => Ok((sender, ToDeviceContent::NewSession, None)),
            // A known sender's introduction: nothing new to learn from it.
            ToDeviceEvent::Introduction(_) => Ok((sender, ToDeviceContent::Introduction, None)),
            // Trust travels only between one user's own devices.
            ToDeviceEvent::Trust(notice) => {
                if sender.user_id != self.account.user_id() {
                    return Err(Error::SenderMismatch {
                        reason: "trust from another user's device",
                    });
                }
                Ok((sender, ToDeviceContent::Trust(*notice), None))
            }
            // A profile: signed by the sender's own master key.
            ToDeviceEvent::ProfileUpdate(signed) => {
                crate::certificate::verify_profile(&signed, &sender.user_id, None)?;
                Ok((sender, ToDeviceContent::Profile(signed), None))
            }
            // Device names too: contacts never learn them.
            ToDeviceEvent::DeviceNames(names) => {
                if sender.user_id != self.account.user_id() {
                    return Err(Error::SenderMismatch {
                        reason: "device names from another user's device",
                    });
                }
                Ok((sender, ToDeviceContent::DeviceNames(names), None))
            }
            ToDeviceEvent::DeviceList(notice) => {
                let content = self.stage_device_list_notice(batch, &sender, *notice)?;
                Ok((sender, content, None))
            }
            // An avatar: signed by the sender's own master key.
            ToDeviceEvent::AvatarUpdate(signed) => {
                crate::certificate::verify_avatar(&signed, &sender.user_id)?;
                Ok((sender, ToDeviceContent::Avatar(signed), None))
            }
            // A tombstone: signed by the sender's own master key.
            ToDeviceEvent::AccountDeleted(signed) => {
                let tombstone = crate::certificate::verify_tombstone(&signed, &sender.user_id)?;
                Ok((sender, ToDeviceContent::AccountDeleted(tombstone), None))
            }
            ToDeviceEvent::Signal(signal) => Ok((sender, ToDeviceContent::Signal(signal), None)),
            ToDeviceEvent::RelayList(signed) => {
                if self.verify_relay_list(&signed)?.device_id != sender.device_id {
                    return Err(Error::SenderMismatch {
                        reason: "a relay list of another device",
                    });
                }
                Ok((sender, ToDeviceContent::RelayList(signed), None))
            }
            _ => Err(Error::UnexpectedPayload),
        }
    }

    /// A message on session `id` failed to decrypt: mark it so a newer
    /// session is preferred and, at most once per [`UNWEDGE_INTERVAL_MS`],
    /// ask the caller for a new one.
    fn mark_wedged(&mut self, id: &[u8; 32], now: Timestamp) -> Result<(), Error> {
        let Some(entry) = self.load_olm_session(id)? else {
            return Ok(());
        };
        let device = entry.peer_device;
        if entry.wedged_at.is_none() {
            entry.wedged_at = Some(now);
            let mut batch = self.store.batch();
            self.stage_olm_session(&mut batch, id)?;
            self.commit(batch, false)?;
        }
        let due = self.olm.wedged.get(&device).is_none_or(|last| {
            now.as_millis().saturating_sub(last.as_millis()) >= UNWEDGE_INTERVAL_MS
        });
        if due {
            tracing::debug!("an Olm session broke; a new one is needed");
            self.olm.wedged.insert(device, now);
            if !self.olm.needs_session.contains(&device) {
                self.olm.needs_session.push(device);
            }
        }
        Ok(())
    }
}
