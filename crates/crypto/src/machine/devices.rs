//! Known devices: certificates, device lists and verification state.

use std::collections::{BTreeSet, HashMap};

use safemeet_proto::event::SealedSender;
use safemeet_proto::identity::{DeviceCertificate, DeviceList, DeviceStatus, RelayList, Signed};
use safemeet_proto::{DeviceId, Timestamp, UserId};
use safemeet_store::{Keyspace, Store};

use super::CryptoMachine;
use super::records::{self, DeviceRecord, RECORD_VERSION, name};
use crate::certificate::{self, Verified};
use crate::{EncryptedBatch, Error};

/// How far a device is trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeviceTrust {
    /// Verified by SAS (or this device itself).
    Verified,
    /// Listed in its user's signed device list, not verified (or revoked:
    /// see [`DeviceInfo::status`]). Usable, shown as unverified.
    Unverified,
}

/// The checked sender of a decrypted message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sender {
    /// The user (the master key that certified the device).
    pub user_id: UserId,
    /// The device.
    pub device_id: DeviceId,
    /// How far the device is trusted.
    pub trust: DeviceTrust,
}

/// What the machine knows about one device.
#[derive(Debug, Clone)]
pub struct DeviceInfo {
    /// Its user.
    pub user_id: UserId,
    /// The device.
    pub device_id: DeviceId,
    /// Its status in the user's device list, if the list is known.
    pub status: Option<DeviceStatus>,
    /// How far it is trusted.
    pub trust: DeviceTrust,
    /// Its certificate.
    pub certificate: Signed<DeviceCertificate>,
    /// When it was verified, if it was.
    pub verified_at: Option<Timestamp>,
}

/// What changed when a device list was accepted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceListUpdate {
    /// The accepted list's counter.
    pub counter: u64,
    /// Devices newly listed as active.
    pub added: Vec<DeviceId>,
    /// Devices newly revoked.
    pub revoked: Vec<DeviceId>,
    /// Active devices whose certificate is not known yet (they get no keys).
    pub missing_certificates: Vec<DeviceId>,
}

/// A signed device list with the certificates of its active devices.
pub type SignedDeviceList = (Signed<DeviceList>, Vec<Signed<DeviceCertificate>>);

/// A device that receives a room's key, with its user.
pub(super) type Recipient = (UserId, DeviceId);

pub(super) struct Entry {
    pub(super) cert: Verified<DeviceCertificate>,
    pub(super) cert_hash: [u8; 32],
    pub(super) verified_at: Option<Timestamp>,
}

/// In-memory copies of device records that exist. (Absent ones are not
/// cached: ids named by strangers must not grow memory.)
#[derive(Default)]
pub(super) struct Cache {
    pub(super) devices: HashMap<DeviceId, Entry>,
    lists: HashMap<UserId, Verified<DeviceList>>,
    /// The last recipient set computed per member list; cleared whenever a
    /// device list or certificate changes.
    recipients: HashMap<Vec<UserId>, (Vec<Recipient>, Vec<UserId>)>,
}

/// Member lists whose recipients are remembered at most.
const MAX_CACHED_RECIPIENT_SETS: usize = 256;

pub(super) fn listed_status(
    list: &DeviceList,
    device: &DeviceId,
) -> Option<(DeviceStatus, [u8; 32])> {
    list.devices
        .iter()
        .find(|e| e.device_id == *device)
        .map(|e| (e.status, e.certificate_hash))
}

impl<S: Store> CryptoMachine<S> {
    pub(super) fn load_device(&mut self, id: &DeviceId) -> Result<Option<&Entry>, Error> {
        if !self.devices.devices.contains_key(id) {
            let Some(bytes) = self.store.get(Keyspace::Devices, &name::device(id))? else {
                return Ok(None);
            };
            let rec: DeviceRecord = records::decode(&bytes, "device record")?;
            let signed: Signed<DeviceCertificate> = Signed::from_bytes(&rec.certificate)?;
            let claimed = signed.decode_body()?.user_id;
            let cert = certificate::verify_device_certificate(&signed, &claimed)?;
            let entry = Entry {
                cert_hash: certificate::certificate_hash(&signed)?,
                cert,
                verified_at: rec.verified_at,
            };
            self.devices.devices.insert(*id, entry);
        }
        Ok(self.devices.devices.get(id))
    }

    pub(super) fn load_list(
        &mut self,
        user: &UserId,
    ) -> Result<Option<&Verified<DeviceList>>, Error> {
        if *user == self.account.user_id() {
            return Ok(Some(self.account.device_list()));
        }
        if !self.devices.lists.contains_key(user) {
            let Some(bytes) = self
                .store
                .get(Keyspace::Devices, &name::device_list(user))?
            else {
                return Ok(None);
            };
            let list = certificate::verify_device_list(&Signed::from_bytes(&bytes)?, user, None)?;
            self.devices.lists.insert(*user, list);
        }
        Ok(self.devices.lists.get(user))
    }

    /// Forgets another user (whose account was deleted): the Olm sessions
    /// with each of its devices, their certificates and its device list.
    /// Returns the peer ids its devices had, for the caller to refuse.
    pub fn forget_user(&mut self, user: &UserId) -> Result<Vec<Vec<u8>>, Error> {
        if *user == self.account.user_id() {
            return Err(Error::InvalidRecord {
                what: "device list",
                reason: "this device's own user cannot be forgotten",
            });
        }
        let Some(list) = self.load_list(user)?.cloned() else {
            return Ok(Vec::new());
        };
        let mut batch = self.store.batch();
        let mut peers = Vec::new();
        for entry in &list.devices {
            if let Some(device) = self.load_device(&entry.device_id)? {
                peers.push(device.cert.peer_id.clone());
            }
            self.forget_olm_sessions(&mut batch, &entry.device_id)?;
            self.store.batch_delete(
                &mut batch,
                Keyspace::Devices,
                &name::device(&entry.device_id),
            )?;
            self.devices.devices.remove(&entry.device_id);
        }
        self.store
            .batch_delete(&mut batch, Keyspace::Devices, &name::device_list(user))?;
        self.devices.lists.remove(user);
        self.devices.recipients.clear();
        self.commit(batch, true)?;
        Ok(peers)
    }

    /// Accepts a signed device list of some user (this one included) with
    /// the certificates of its devices. The list must verify under the
    /// user's master key and be at least as new as the one held; each
    /// certificate must verify and be the one the list pins. Revoked and
    /// dropped devices stop receiving room keys, so rooms rotate before
    /// their next message.
    pub fn add_device_list(
        &mut self,
        list: &Signed<DeviceList>,
        certificates: &[Signed<DeviceCertificate>],
    ) -> Result<DeviceListUpdate, Error> {
        self.check_usable()?;
        let mut batch = self.store.batch();
        let update = self.stage_device_list(&mut batch, list, certificates)?;
        self.commit(batch, true)?;
        Ok(update)
    }

    pub(super) fn stage_device_list(
        &mut self,
        batch: &mut EncryptedBatch,
        list: &Signed<DeviceList>,
        certificates: &[Signed<DeviceCertificate>],
    ) -> Result<DeviceListUpdate, Error> {
        let user = list.decode_body()?.user_id;
        let own = user == self.account.user_id();
        let previous = if own {
            // Our own list may have just been replaced by link or revoke.
            None
        } else {
            self.load_list(&user)?.cloned()
        };
        let verified = certificate::verify_device_list(list, &user, previous.as_ref())?;
        let mut checked = Vec::with_capacity(certificates.len());
        for signed in certificates {
            let cert = certificate::verify_device_certificate(signed, &user)?;
            let hash = certificate::certificate_hash(signed)?;
            if listed_status(&verified, &cert.device_id).map(|(_, h)| h) != Some(hash) {
                return Err(Error::InvalidRecord {
                    what: "device list",
                    reason: "a certificate is not the one the list pins",
                });
            }
            checked.push((cert, hash));
        }
        if own {
            self.account.accept_device_list(list)?;
            self.put_account(batch)?;
        }
        let before: BTreeSet<DeviceId> = previous
            .as_ref()
            .map(|p| {
                p.devices
                    .iter()
                    .filter(|e| e.status == DeviceStatus::Active)
                    .map(|e| e.device_id)
                    .collect()
            })
            .unwrap_or_default();
        let mut update = DeviceListUpdate {
            counter: verified.counter,
            ..DeviceListUpdate::default()
        };
        for (cert, hash) in checked {
            // A verification covers exactly one certificate: any change of
            // the device's keys needs a new one.
            let verified_at = match self.load_device(&cert.device_id)? {
                Some(old) if old.cert_hash == hash => old.verified_at,
                _ => None,
            };
            let rec = DeviceRecord {
                version: RECORD_VERSION,
                certificate: cert.signed().to_bytes()?,
                verified_at,
            };
            self.store.batch_put(
                batch,
                Keyspace::Devices,
                &name::device(&cert.device_id),
                &records::encode(&rec)?,
            )?;
            self.devices.devices.insert(
                cert.device_id,
                Entry {
                    cert,
                    cert_hash: hash,
                    verified_at,
                },
            );
        }
        for e in &verified.devices {
            match e.status {
                DeviceStatus::Active => {
                    if !before.contains(&e.device_id) {
                        update.added.push(e.device_id);
                    }
                    let known = self
                        .load_device(&e.device_id)?
                        .is_some_and(|d| d.cert_hash == e.certificate_hash);
                    if !known {
                        update.missing_certificates.push(e.device_id);
                    }
                }
                DeviceStatus::Revoked(_) => {
                    let was_revoked = previous.as_ref().is_some_and(|p| {
                        matches!(
                            listed_status(p, &e.device_id),
                            Some((DeviceStatus::Revoked(_), _))
                        )
                    });
                    if !was_revoked {
                        update.revoked.push(e.device_id);
                    }
                }
            }
        }
        self.store.batch_put(
            batch,
            Keyspace::Devices,
            &name::device_list(&user),
            &list.to_bytes()?,
        )?;
        if !own {
            self.devices.lists.insert(user, verified);
        }
        self.devices.recipients.clear();
        Ok(update)
    }

    /// Takes a device list announced by a device of its own user: the list
    /// is kept when newer than the one held (an older or equal one changes
    /// nothing, so a replayed notice cannot undo a revocation), and the
    /// keys are returned only for active devices whose certificate they
    /// verify under.
    pub(super) fn stage_device_list_notice(
        &mut self,
        batch: &mut EncryptedBatch,
        sender: &Sender,
        notice: safemeet_proto::event::DeviceListNotice,
    ) -> Result<super::ToDeviceContent, Error> {
        if notice.version != safemeet_proto::event::DEVICE_LIST_NOTICE_VERSION {
            return Err(Error::UnsupportedVersion {
                what: "device list notice",
                version: notice.version,
            });
        }
        let limit = safemeet_proto::limits::MAX_DEVICES_PER_USER;
        if notice.certificates.len() > limit || notice.keys.len() > limit {
            return Err(Error::InvalidRecord {
                what: "device list notice",
                reason: "more entries than a user may have devices",
            });
        }
        let list = notice.device_list.decode_body()?;
        if list.user_id != sender.user_id {
            return Err(Error::SenderMismatch {
                reason: "a device list of another user",
            });
        }
        let held = self.load_list(&sender.user_id)?.map(|l| l.counter);
        let update = if held.is_some_and(|c| list.counter <= c) {
            DeviceListUpdate {
                counter: held.unwrap_or_default(),
                ..DeviceListUpdate::default()
            }
        } else {
            self.stage_device_list(batch, &notice.device_list, &notice.certificates)?
        };
        let mut keys = Vec::new();
        for signed in notice.keys {
            let device = signed.decode_body()?.device_id;
            let active = self.load_list(&sender.user_id)?.is_some_and(|l| {
                listed_status(l, &device).map(|(s, _)| s) == Some(DeviceStatus::Active)
            });
            let Some(entry) = self.load_device(&device)? else {
                continue;
            };
            if active && certificate::verify_one_time_key(&signed, &entry.cert).is_ok() {
                keys.push(signed);
            }
        }
        Ok(super::ToDeviceContent::DeviceList { update, keys })
    }

    /// Signs this device's relay list (multiaddrs ending in `/p2p/<id>`).
    pub fn sign_relay_list(
        &self,
        relays: Vec<String>,
        now: Timestamp,
    ) -> Result<Signed<RelayList>, Error> {
        certificate::sign_relay_list(
            self.account.device_keys(),
            &RelayList {
                version: certificate::RECORD_VERSION,
                device_id: self.account.device_id(),
                relays,
                issued_at: now,
            },
        )
    }

    /// Checks a relay list against the certificate of the device it names,
    /// which must be known.
    pub fn verify_relay_list(&mut self, signed: &Signed<RelayList>) -> Result<RelayList, Error> {
        let device_id = signed.decode_body()?.device_id;
        let entry = self
            .load_device(&device_id)?
            .ok_or(Error::UnknownDevice { device: device_id })?;
        certificate::verify_relay_list(signed, &entry.cert)
    }

    /// What is known about a device.
    pub fn device(&mut self, id: &DeviceId) -> Result<Option<DeviceInfo>, Error> {
        let Some(entry) = self.load_device(id)? else {
            return Ok(None);
        };
        let (user, signed, verified_at) = (
            entry.cert.user_id,
            entry.cert.signed().clone(),
            entry.verified_at,
        );
        let status = self
            .load_list(&user)?
            .and_then(|l| listed_status(l, id))
            .map(|(s, _)| s);
        let trust = match (status, verified_at) {
            (Some(DeviceStatus::Active), Some(_)) => DeviceTrust::Verified,
            _ => DeviceTrust::Unverified,
        };
        Ok(Some(DeviceInfo {
            user_id: user,
            device_id: *id,
            status,
            trust,
            certificate: signed,
            verified_at,
        }))
    }

    /// A user's signed device list as held, with the certificates of its
    /// active devices that are known (this device's own included): what
    /// another device needs to take the list in.
    pub fn signed_device_list(&mut self, user: &UserId) -> Result<Option<SignedDeviceList>, Error> {
        let Some(list) = self.load_list(user)? else {
            return Ok(None);
        };
        let signed = list.signed().clone();
        let ids: Vec<DeviceId> = list
            .devices
            .iter()
            .filter(|e| e.status == DeviceStatus::Active)
            .map(|e| e.device_id)
            .collect();
        let mut certificates = Vec::with_capacity(ids.len());
        for id in ids {
            if id == self.account.device_id() {
                certificates.push(self.account.certificate().clone());
            } else if let Some(entry) = self.load_device(&id)? {
                certificates.push(entry.cert.signed().clone());
            }
        }
        Ok(Some((signed, certificates)))
    }

    /// Every device of `user` in its list, revoked ones included (this
    /// device too), with what is known of each.
    pub fn listed_devices(&mut self, user: &UserId) -> Result<Vec<DeviceInfo>, Error> {
        let Some(list) = self.load_list(user)? else {
            return Ok(Vec::new());
        };
        let ids: Vec<DeviceId> = list.devices.iter().map(|e| e.device_id).collect();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if id == self.account.device_id() {
                let cert = self.account.certificate().clone();
                out.push(DeviceInfo {
                    user_id: *user,
                    device_id: id,
                    status: Some(DeviceStatus::Active),
                    trust: DeviceTrust::Verified,
                    certificate: cert,
                    verified_at: None,
                });
            } else if let Some(info) = self.device(&id)? {
                out.push(info);
            }
        }
        Ok(out)
    }

    /// The known, active devices of `user` (this device excluded), with
    /// their certificates.
    pub fn user_devices(&mut self, user: &UserId) -> Result<Vec<DeviceInfo>, Error> {
        let own = self.account.device_id();
        let Some(list) = self.load_list(user)? else {
            return Ok(Vec::new());
        };
        let ids: Vec<DeviceId> = list
            .devices
            .iter()
            .filter(|e| e.status == DeviceStatus::Active && e.device_id != own)
            .map(|e| e.device_id)
            .collect();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(info) = self.device(&id)? {
                out.push(info);
            }
        }
        Ok(out)
    }

    /// Checks a sealed sender certificate: it verifies under the master key
    /// it names, that user's device list is known, and the device is active
    /// in it with exactly this certificate. Senders whose device list is
    /// unknown are refused, so strangers cannot make this device keep
    /// sessions, keys or records for them.
    pub(super) fn check_sender(
        &mut self,
        signed: &Signed<DeviceCertificate>,
    ) -> Result<(Verified<DeviceCertificate>, DeviceTrust), Error> {
        if signed == self.account.certificate() {
            return Ok((
                self.account.verified_certificate().clone(),
                DeviceTrust::Verified,
            ));
        }
        let claimed = signed.decode_body()?;
        if self.refused.contains(&claimed.user_id) {
            return Err(Error::RefusedSender);
        }
        let device = claimed.device_id;
        let status = self
            .load_list(&claimed.user_id)?
            .map(|l| listed_status(l, &device));
        let hash = match status {
            None => {
                return Err(Error::UnknownSender {
                    user: claimed.user_id,
                });
            }
            Some(None) => return Err(Error::UnlistedDevice { device }),
            Some(Some((DeviceStatus::Revoked(_), _))) => {
                return Err(Error::RevokedDevice { device });
            }
            Some(Some((DeviceStatus::Active, hash))) => hash,
        };
        // Fast path: the certificate held for this device, checked when stored.
        if let Some(e) = self.load_device(&device)?
            && e.cert.signed() == signed
        {
            let trust = if e.verified_at.is_some() {
                DeviceTrust::Verified
            } else {
                DeviceTrust::Unverified
            };
            return Ok((e.cert.clone(), trust));
        }
        let cert = certificate::verify_device_certificate(signed, &claimed.user_id)?;
        if hash != certificate::certificate_hash(signed)? {
            return Err(Error::SenderMismatch {
                reason: "the certificate is not the one the device list pins",
            });
        }
        Ok((cert, DeviceTrust::Unverified))
    }

    /// Checks the sender of a room message whose session was shared by
    /// `candidates`. A message names its sender by certificate hash: it must
    /// be the hash of the certificate held for one of the candidates, which
    /// must still be active in its user's device list with that very
    /// certificate. (A full certificate is accepted too, checked the same
    /// way.)
    pub(super) fn check_room_sender(
        &mut self,
        sender: &SealedSender,
        candidates: &[(UserId, DeviceId)],
    ) -> Result<Sender, Error> {
        let hash = match sender {
            SealedSender::CertificateHash(h) => *h,
            SealedSender::Certificate(signed) => certificate::certificate_hash(signed)?,
        };
        let own = (self.account.user_id(), self.account.device_id());
        for (user, device) in candidates {
            if (*user, *device) == own {
                if hash == self.own_cert_hash {
                    return Ok(Sender {
                        user_id: *user,
                        device_id: *device,
                        trust: DeviceTrust::Verified,
                    });
                }
                continue;
            }
            let Some(entry) = self.load_device(device)? else {
                continue;
            };
            if entry.cert_hash != hash || entry.cert.user_id != *user {
                continue;
            }
            let verified = entry.verified_at.is_some();
            if self.refused.contains(user) {
                return Err(Error::RefusedSender);
            }
            let status = self.load_list(user)?.map(|l| listed_status(l, device));
            return match status {
                None => Err(Error::UnknownSender { user: *user }),
                Some(None) => Err(Error::UnlistedDevice { device: *device }),
                Some(Some((DeviceStatus::Revoked(_), _))) => {
                    Err(Error::RevokedDevice { device: *device })
                }
                Some(Some((DeviceStatus::Active, listed))) if listed == hash => Ok(Sender {
                    user_id: *user,
                    device_id: *device,
                    trust: if verified {
                        DeviceTrust::Verified
                    } else {
                        DeviceTrust::Unverified
                    },
                }),
                Some(Some(_)) => Err(Error::SenderMismatch {
                    reason: "the certificate is not the one the device list pins",
                }),
            };
        }
        if let SealedSender::Certificate(signed) = sender {
            // Not a device that shared the key; still report a forged or
            // revoked certificate as such.
            self.check_sender(signed)?;
        }
        Err(Error::SenderMismatch {
            reason: "the sealed sender is not a device that shared the room key",
        })
    }

    /// The devices that receive a room's key: every active, certified
    /// device of every member (this user's other devices included), and
    /// the members whose device list is unknown.
    pub(super) fn recipient_devices(
        &mut self,
        members: &[UserId],
    ) -> Result<(Vec<Recipient>, Vec<UserId>), Error> {
        if let Some(hit) = self.devices.recipients.get(members) {
            return Ok(hit.clone());
        }
        let computed = self.compute_recipients(members)?;
        if self.devices.recipients.len() >= MAX_CACHED_RECIPIENT_SETS {
            self.devices.recipients.clear();
        }
        self.devices
            .recipients
            .insert(members.to_vec(), computed.clone());
        Ok(computed)
    }

    fn compute_recipients(
        &mut self,
        members: &[UserId],
    ) -> Result<(Vec<Recipient>, Vec<UserId>), Error> {
        let own_user = self.account.user_id();
        let own_device = self.account.device_id();
        let mut users: Vec<UserId> = members.to_vec();
        users.push(own_user);
        users.sort_unstable();
        users.dedup();
        let mut devices = Vec::new();
        let mut unknown = Vec::new();
        for user in users {
            let Some(list) = self.load_list(&user)? else {
                unknown.push(user);
                continue;
            };
            let active: Vec<(DeviceId, [u8; 32])> = list
                .devices
                .iter()
                .filter(|e| e.status == DeviceStatus::Active && e.device_id != own_device)
                .map(|e| (e.device_id, e.certificate_hash))
                .collect();
            for (device, hash) in active {
                if self
                    .load_device(&device)?
                    .is_some_and(|d| d.cert_hash == hash)
                {
                    devices.push((user, device));
                }
            }
        }
        Ok((devices, unknown))
    }
}
