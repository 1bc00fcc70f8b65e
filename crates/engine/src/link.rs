//! Linking a new device of this user: what the device that holds the
//! master key hands the new one, and how each side takes it.
//!
//! The linking device issues the new device's keys and certificate
//! ([`CryptoMachine::link_new_device`]), publishes the device list that
//! holds it, and sends the new device a [`LinkBundle`] over the link's
//! Noise channel (see `link_io`): its account, a signed key of the linking
//! device (so the two start an Olm session at once), the contacts with
//! their signed device lists, certificates and relay lists, the rooms with
//! their membership and secrets, and the timeline of the last `days` days.
//! The new device stores it all before its first start.
//!
//! Every contact device and this user's other devices then get the new
//! list as a to-device [`DeviceListNotice`], with a signed fallback key of
//! the new device: they start an Olm session with it from that key, so
//! room keys reach it from their next message on. A room's Megolm history
//! before the link is not shared; the new device gets that history as
//! plaintext timeline, read on this device. Keys for Megolm sessions in
//! flight are not copied either: a sender shares its current session with
//! the new device as soon as it learns the new list.

use safemeet_crypto::machine::CryptoMachine;
use safemeet_proto::event::ToDeviceEvent;
use safemeet_proto::identity::{DeviceCertificate, DeviceList, OneTimeKey, Signed};
use safemeet_proto::{DeviceId, RoomId, UserId, codec};
use safemeet_store::{Keyspace, Store};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::Error;
use crate::core::Core;
use crate::outbox::outbox_item;
use crate::records::{
    ContactRecord, MAX_RECORD_BYTES, OutboxMeta, RoomRecord, TimelineEntry, VERSION, name,
};
use crate::rooms::{dm_room, stage_room};
use crate::timeline::stage_message;

/// The bundle's format version.
const BUNDLE_VERSION: u8 = 1;
/// Largest bundle a new device takes.
pub const MAX_BUNDLE_BYTES: usize = 256 * 1024 * 1024;
/// Timeline entries read from the store at a time.
const PAGE: usize = 1024;
/// Most days of history a link carries.
pub const MAX_HISTORY_DAYS: u32 = 3650;

/// A contact as a new device gets it.
#[derive(Serialize, Deserialize)]
pub(crate) struct LinkedContact {
    record: ContactRecord,
    device_list: Signed<DeviceList>,
    certificates: Vec<Signed<DeviceCertificate>>,
    /// Signed relay lists of its devices, as kept.
    relay_lists: Vec<Vec<u8>>,
    /// Its devices verified here, signed by the master key.
    trust: Option<Signed<safemeet_proto::identity::UserTrust>>,
}

/// A room as a new device gets it, with its recent timeline.
#[derive(Serialize, Deserialize)]
pub(crate) struct LinkedRoom {
    record: RoomRecord,
    messages: Vec<TimelineEntry>,
}

/// What the linking device sends the new one.
#[derive(Serialize, Deserialize)]
pub(crate) struct LinkBundle {
    version: u8,
    /// The new device's account record (its keys: secret).
    account: Vec<u8>,
    /// This user's signed device list, with its active certificates.
    device_list: Signed<DeviceList>,
    certificates: Vec<Signed<DeviceCertificate>>,
    /// A signed fallback key of the linking device.
    linking_key: Signed<OneTimeKey>,
    contacts: Vec<LinkedContact>,
    rooms: Vec<LinkedRoom>,
}

impl Drop for LinkBundle {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.account.zeroize();
    }
}

impl LinkBundle {
    /// Decodes a bundle (bounded).
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, Error> {
        let bundle: Self = codec::decode(bytes, MAX_BUNDLE_BYTES)?;
        if bundle.version != BUNDLE_VERSION {
            return Err(Error::InvalidInput(
                "the linking device runs another version".into(),
            ));
        }
        Ok(bundle)
    }

    /// The new device's account record.
    pub(crate) fn account(&self) -> &[u8] {
        &self.account
    }
}

/// A link shown for a new device.
#[derive(Clone, Serialize)]
#[non_exhaustive]
pub struct LinkShown {
    /// The link's text (secret until used).
    pub link: String,
    /// When it stops working.
    pub expires_at: safemeet_proto::Timestamp,
}

impl std::fmt::Debug for LinkShown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkShown")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// What a new device took in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LinkSummary {
    /// Contacts.
    pub contacts: usize,
    /// Rooms and conversations.
    pub rooms: usize,
    /// Messages of history.
    pub messages: usize,
}

impl<S: Store + Clone> Core<S> {
    /// Issues a new device (with a copy of the master key if
    /// `with_master`) and returns its bundle with `days` of history;
    /// the new device list goes to every contact device and this user's
    /// other devices. Only on the device that holds the master key.
    pub(crate) fn export_link(
        &mut self,
        days: u32,
        with_master: bool,
    ) -> Result<(Zeroizing<Vec<u8>>, DeviceId, LinkSummary), Error> {
        if !self.machine.account().has_master_key() {
            return Err(safemeet_crypto::Error::NoMasterKey.into());
        }
        let now = self.now.wall;
        let me = self.user_id();
        let mut new = self.machine.link_new_device(now)?;
        if with_master {
            self.machine.account().copy_master_key_to(&mut new)?;
        }
        let new_key = new.new_fallback_key(now)?;
        let new_device = new.device_id();
        self.machine
            .create_outbound_session(&new_device, &new_key, now)?;
        let linking_key = self.machine.fallback_key(now)?;
        let (device_list, certificates) = self
            .machine
            .signed_device_list(&me)?
            .ok_or_else(|| Error::InvalidInput("this user has no device list".into()))?;
        let since = now
            .as_millis()
            .saturating_sub(u64::from(days.min(MAX_HISTORY_DAYS)) * 86_400_000);
        let mut summary = LinkSummary::default();
        let mut contacts = Vec::new();
        let mut room_ids: Vec<RoomId> = Vec::new();
        for c in self.contact_records()?.iter() {
            let Some((list, certs)) = self.machine.signed_device_list(&c.user_id)? else {
                continue;
            };
            let mut relay_lists = Vec::new();
            for cert in &certs {
                let device = cert.decode_body()?.device_id;
                if let Some(b) = self
                    .store
                    .get(Keyspace::Contacts, &name::relay_list(&device))?
                {
                    relay_lists.push(b.to_vec());
                }
            }
            let verified: Vec<DeviceId> = self
                .machine
                .user_devices(&c.user_id)?
                .iter()
                .filter(|d| d.trust == safemeet_crypto::machine::DeviceTrust::Verified)
                .map(|d| d.device_id)
                .collect();
            let trust = if verified.is_empty() {
                None
            } else {
                let trust = self.machine.user_trust(&c.user_id, &verified, now)?;
                Some(self.machine.sign_user_trust(&trust)?)
            };
            contacts.push(LinkedContact {
                record: c.clone(),
                device_list: list,
                certificates: certs,
                relay_lists,
                trust,
            });
            room_ids.push(dm_room(&me, &c.user_id).0);
        }
        room_ids.extend(self.room_index()?.rooms);
        let mut rooms = Vec::new();
        for id in room_ids {
            let Some(record) = self.room(&id)? else {
                continue;
            };
            if record.left {
                continue;
            }
            let messages = self.messages_since(&record, since)?;
            summary.messages += messages.len();
            rooms.push(LinkedRoom { record, messages });
        }
        summary.contacts = contacts.len();
        summary.rooms = rooms.len();
        let bundle = LinkBundle {
            version: BUNDLE_VERSION,
            account: new.to_record()?.to_vec(),
            device_list,
            certificates,
            linking_key,
            contacts,
            rooms,
        };
        let bytes = Zeroizing::new(codec::encode_limited(&bundle, MAX_BUNDLE_BYTES)?);
        drop(bundle);
        self.announce_devices(vec![new_key]);
        self.security("device_linked", Some(new_device.to_string()));
        if let Err(e) = self.share_device_names(Some(new_device)) {
            tracing::warn!(error = %e, "device names were not sent to the new device");
        }
        Ok((bytes, new_device, summary))
    }

    /// A room's timeline entries sent at or after `since` (ms), in order.
    fn messages_since(&self, room: &RoomRecord, since: u64) -> Result<Vec<TimelineEntry>, Error> {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let rows = self.store.scan_ordered(
                Keyspace::Timeline,
                &name::timeline(&room.room_id),
                after,
                PAGE,
            )?;
            let done = rows.len() < PAGE;
            for (seq, bytes) in rows {
                after = Some(seq);
                let entry = TimelineEntry::decode(&bytes)?;
                // A redacted message is not handed on, even as a gap.
                if entry.ts.as_millis() >= since
                    && entry.revision != crate::records::Revision::Redacted
                {
                    out.push(entry);
                }
            }
            if done {
                return Ok(out);
            }
        }
    }

    /// Takes in a bundle from the linking device, on a fresh store of the
    /// new device's account. `linking_addrs` are where the linking device
    /// listens (from the link).
    pub(crate) fn import_link(
        &mut self,
        bundle: &LinkBundle,
        linking_addrs: &[String],
    ) -> Result<LinkSummary, Error> {
        let now = self.now.wall;
        let me = self.user_id();
        self.machine
            .add_device_list(&bundle.device_list, &bundle.certificates)?;
        let linking = bundle.linking_key.decode_body()?.device_id;
        self.machine
            .create_outbound_session(&linking, &bundle.linking_key, now)?;
        let mut index = self.contact_index()?;
        for c in &bundle.contacts {
            let user = c.record.user_id;
            if user == me || c.device_list.decode_body()?.user_id != user {
                return Err(Error::InvalidInput(
                    "the bundle holds a contact list that does not match".into(),
                ));
            }
            self.machine
                .add_device_list(&c.device_list, &c.certificates)?;
            if !index.users.contains(&user) {
                index.users.push(user);
            }
            self.put_contact(&c.record, &index)?;
            self.mark_added(user)?;
            if let Some(trust) = &c.trust {
                self.machine.accept_user_trust(trust, now)?;
            }
            for bytes in &c.relay_lists {
                let signed = Signed::from_bytes(bytes)?;
                if let Err(e) = self.keep_relay_list(&signed) {
                    tracing::debug!(error = %e, "a contact's relay list was not kept");
                }
            }
        }
        let mut summary = LinkSummary {
            contacts: bundle.contacts.len(),
            rooms: bundle.rooms.len(),
            messages: 0,
        };
        for linked in &bundle.rooms {
            let mut room = linked.record.clone();
            room.next_seq = 0;
            let mut batch = self.store.batch();
            stage_room(&self.store, &mut batch, &room)?;
            for entry in &linked.messages {
                let seq = room.next_seq;
                room.next_seq += 1;
                stage_message(&self.store, &mut batch, &room, seq, entry, self.log_next)?;
                self.log_next += 1;
            }
            self.store.apply(batch)?;
            summary.messages += linked.messages.len();
            self.rooms.insert(room.room_id, room);
        }
        // No device but the linking one knows where this one listens, nor
        // has an Olm session with it yet: its first start connects to its
        // user's and its contacts' devices, so that they learn its
        // addresses and can deliver the session it needs.
        let mut dials: Vec<String> = linking_addrs.to_vec();
        for c in &bundle.contacts {
            for (_, addrs) in &c.record.addrs {
                dials.extend(addrs.iter().cloned());
            }
        }
        self.store.put(
            Keyspace::Contacts,
            name::FIRST_DIALS,
            &codec::encode_limited(&dials, MAX_RECORD_BYTES)?,
        )?;
        self.store.flush()?;
        self.headers.stale = true;
        self.admission.stale = true;
        self.devices_changed = true;
        self.rooms_changed = true;
        Ok(summary)
    }

    /// Queues one to-device event; a failure is logged (the event is lost
    /// for that device only). Nothing is sent to a device this one has no
    /// Olm session with.
    pub(crate) fn send_to_device(&mut self, user: UserId, device: DeviceId, event: ToDeviceEvent) {
        // A device with no Olm session yet: skipped, as documented where
        // each caller says how that device learns it instead.
        if !self.machine.has_session(&device).unwrap_or(false) {
            tracing::debug!("a to-device event skipped: no Olm session with the device yet");
            return;
        }
        let now = self.now.mono_ms();
        let queued = codec::encode(&OutboxMeta {
            version: VERSION,
            timeline: None,
        })
        .map_err(Error::from)
        .and_then(|meta| {
            let out = self.machine.encrypt_to_device(
                user,
                device,
                event,
                safemeet_crypto::EncryptedBatch::default(),
                &meta,
            )?;
            self.track(out.outbox_seq, outbox_item(&out, &meta), Some(now))
        });
        if let Err(e) = queued {
            tracing::warn!(error = %e, "a to-device event was not sent");
        }
    }

    /// A device list came from a device of its own user: Olm sessions with
    /// its new devices start from the keys it carried, and each new device
    /// gets an empty message on its session so that it can answer on it.
    pub(crate) fn devices_announced(
        &mut self,
        user: UserId,
        added: &[DeviceId],
        keys: &[Signed<OneTimeKey>],
    ) -> Result<(), Error> {
        self.devices_changed = true;
        self.headers.stale = true;
        self.admission.stale = true;
        if user == self.user_id() {
            self.own_devices.devices_changed();
        }
        for device in added {
            let event = if user == self.user_id() {
                "own_device_added"
            } else {
                "contact_device_added"
            };
            self.security(event, Some(device.to_string()));
        }
        if !added.is_empty() {
            self.restate_rooms_of(user)?;
        }
        for key in keys {
            let device = key.decode_body()?.device_id;
            if device == self.machine.account().device_id() || self.machine.has_session(&device)? {
                continue;
            }
            self.machine
                .create_outbound_session(&device, key, self.now.wall)?;
            self.send_to_device(user, device, ToDeviceEvent::NewSession);
        }
        Ok(())
    }
}

/// One of this user's devices, as `device list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct DeviceView {
    /// The device.
    pub device_id: DeviceId,
    /// The name it was given (`device rename`), if any.
    pub name: Option<String>,
    /// When this device last had a connection to it or a message from it
    /// (`None` for this device, and for one not seen yet).
    pub last_seen_at: Option<safemeet_proto::Timestamp>,
    /// When its certificate was issued.
    pub created_at: safemeet_proto::Timestamp,
    /// When it was revoked, if it was.
    pub revoked_at: Option<safemeet_proto::Timestamp>,
    /// Verified by this device (this device itself counts as verified).
    pub verified: bool,
    /// The device this answer comes from.
    pub this_device: bool,
    /// Whether it holds the master key (known for this device only).
    pub master_key: Option<bool>,
}

impl<S: Store + Clone> Core<S> {
    /// This user's devices, in the order of the device list.
    pub(crate) fn devices(&mut self) -> Result<Vec<DeviceView>, Error> {
        use safemeet_crypto::machine::DeviceTrust;
        use safemeet_proto::identity::DeviceStatus;
        let me = self.user_id();
        let this = self.machine.account().device_id();
        let master = self.machine.account().has_master_key();
        let mut out = Vec::new();
        for info in self.machine.listed_devices(&me)? {
            let created_at = info.certificate.decode_body()?.created_at;
            let last_seen_at = if info.device_id == this {
                None
            } else {
                self.device_seen(&info.device_id)?
            };
            out.push(DeviceView {
                device_id: info.device_id,
                name: self.device_name(&info.device_id)?,
                last_seen_at,
                created_at,
                revoked_at: match info.status {
                    Some(DeviceStatus::Revoked(at)) => Some(at),
                    _ => None,
                },
                verified: info.trust == DeviceTrust::Verified,
                this_device: info.device_id == this,
                master_key: (info.device_id == this).then_some(master),
            });
        }
        Ok(out)
    }

    /// Revokes another device of this user and tells every contact device
    /// and this user's other devices; rooms rotate their sessions before
    /// their next message (the device is no longer a recipient).
    pub(crate) fn revoke_device(&mut self, device: DeviceId) -> Result<(), Error> {
        self.machine.revoke_device(device, self.now.wall)?;
        self.security("device_revoked", Some(device.to_string()));
        self.devices_changed = true;
        self.headers.stale = true;
        self.admission.stale = true;
        self.announce_devices(Vec::new());
        Ok(())
    }
}

impl<S: Store + Clone> Core<S> {
    /// The addresses a freshly linked device dials on its first start
    /// (taken once).
    pub(crate) fn take_first_dials(&mut self) -> Vec<libp2p::Multiaddr> {
        let read = self
            .store
            .get(Keyspace::Contacts, name::FIRST_DIALS)
            .ok()
            .flatten()
            .and_then(|b| codec::decode::<Vec<String>>(&b, MAX_RECORD_BYTES).ok());
        let Some(addrs) = read else {
            return Vec::new();
        };
        if let Err(e) = self.store.delete(Keyspace::Contacts, name::FIRST_DIALS) {
            tracing::warn!(error = %e, "the first dials were not cleared");
        }
        addrs.iter().filter_map(|a| a.parse().ok()).collect()
    }
}

/// Opens a Core on a fresh store of a linked account and takes in the
/// bundle: what `init --link` does before the new device's first start.
/// `linking_addrs` are the link's addresses; `name`, if given, names the
/// new device (its other devices learn it once it runs).
pub fn import_bundle<S: Store + Clone>(
    machine: CryptoMachine<S>,
    bundle: &[u8],
    linking_addrs: &[String],
    now: crate::Now,
    name: Option<String>,
) -> Result<LinkSummary, Error> {
    import_bundle_and(machine, bundle, linking_addrs, now, name, |_| Ok(()))
}

/// [`import_bundle`], then `then` on the core before it closes.
pub(crate) fn import_bundle_and<S: Store + Clone>(
    machine: CryptoMachine<S>,
    bundle: &[u8],
    linking_addrs: &[String],
    now: crate::Now,
    name: Option<String>,
    then: impl FnOnce(&mut Core<S>) -> Result<(), Error>,
) -> Result<LinkSummary, Error> {
    if let Some(name) = &name {
        safemeet_proto::event::DeviceName::check(name)
            .map_err(|e| Error::InvalidInput(e.into()))?;
    }
    let bundle = LinkBundle::decode(bundle)?;
    let mut core = Core::new(machine, crate::Config::default(), 0, now)?;
    let imported = core
        .import_link(&bundle, linking_addrs)
        .and_then(|summary| {
            if let Some(name) = name {
                let this = core.machine.account().device_id();
                core.rename_device(this, name)?;
            }
            then(&mut core)?;
            Ok(summary)
        });
    let closed = core.close();
    let summary = imported?;
    closed?;
    Ok(summary)
}

/// The account record a bundle carries (checked when it is stored).
pub fn bundle_account(bundle: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
    Ok(Zeroizing::new(
        LinkBundle::decode(bundle)?.account().to_vec(),
    ))
}
