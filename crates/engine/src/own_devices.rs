//! What this user knows of its own devices beyond their certificates: the
//! names they were given and when each was last seen.
//!
//! Names travel only between the user's own devices, over Olm
//! ([`ToDeviceEvent::DeviceNames`]); contacts never see them. Each name
//! carries the time it was given and the later one wins, so devices that
//! rename at once agree whichever order the notices arrive in. A device
//! that receives names older than its own answers with what it holds, so a
//! newly linked device learns the names and they learn its name.
//!
//! "Last seen" is local: when this device last had a connection to, or a
//! message from, another device of its user. It is written to the store at
//! most once a minute per device.

use std::collections::BTreeMap;

use libp2p::PeerId;
use safemeet_crypto::EncryptedStore;
use safemeet_proto::event::{DeviceName, DeviceNames, ToDeviceEvent};
use safemeet_proto::identity::DeviceStatus;
use safemeet_proto::limits::MAX_DEVICES_PER_USER;
use safemeet_proto::{DeviceId, Timestamp, codec};
use safemeet_store::{Keyspace, Store};
use serde::{Deserialize, Serialize};

use crate::core::Core;
use crate::error::Error;
use crate::records::{MAX_RECORD_BYTES, VERSION, name};

/// How far a device's "last seen" moves before it is written again (ms).
const SEEN_WRITE_MS: u64 = 60_000;

/// The stored record.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct OwnDevicesRecord {
    version: u8,
    names: Vec<DeviceName>,
    seen: Vec<(DeviceId, Timestamp)>,
}

/// The in-memory state (loaded on first use).
#[derive(Debug, Default)]
pub(crate) struct OwnDevices {
    record: Option<OwnDevicesRecord>,
    /// Last seen, newer than the record where it moved less than a minute.
    seen: BTreeMap<DeviceId, Timestamp>,
    /// The peer ids of this user's other devices (cleared when its device
    /// list changes).
    peers: Option<Vec<(PeerId, DeviceId)>>,
}

impl OwnDevices {
    /// The device list changed: peers are read again.
    pub(crate) fn devices_changed(&mut self) {
        self.peers = None;
    }
}

fn load<S: Store>(store: &EncryptedStore<S>) -> Result<OwnDevicesRecord, Error> {
    Ok(match store.get(Keyspace::Contacts, name::OWN_DEVICES)? {
        Some(bytes) => codec::decode(&bytes, MAX_RECORD_BYTES)?,
        None => OwnDevicesRecord {
            version: VERSION,
            ..Default::default()
        },
    })
}

/// Whether `new` replaces `old` for the same device: given later, or at
/// the same time with the greater name (so that every device agrees).
fn newer(new: &DeviceName, old: &DeviceName) -> bool {
    (new.set_at, &new.name) > (old.set_at, &old.name)
}

impl<S: Store + Clone> Core<S> {
    fn own_record(&mut self) -> Result<&mut OwnDevicesRecord, Error> {
        if self.own_devices.record.is_none() {
            self.own_devices.record = Some(load(&self.store)?);
        }
        self.own_devices
            .record
            .as_mut()
            .ok_or_else(|| Error::InvalidInput("the device record did not load".into()))
    }

    fn save_own_record(&mut self) -> Result<(), Error> {
        let record = self.own_record()?.clone();
        let bytes = codec::encode_limited(&record, MAX_RECORD_BYTES)?;
        self.store
            .put(Keyspace::Contacts, name::OWN_DEVICES, &bytes)?;
        Ok(())
    }

    /// The name given to `device`, if any.
    pub(crate) fn device_name(&mut self, device: &DeviceId) -> Result<Option<String>, Error> {
        Ok(self
            .own_record()?
            .names
            .iter()
            .find(|n| n.device_id == *device)
            .map(|n| n.name.clone()))
    }

    /// When `device` was last seen here.
    pub(crate) fn device_seen(&mut self, device: &DeviceId) -> Result<Option<Timestamp>, Error> {
        let held = self.own_devices.seen.get(device).copied();
        let stored = self
            .own_record()?
            .seen
            .iter()
            .find(|(d, _)| d == device)
            .map(|(_, t)| *t);
        Ok(held.max(stored))
    }

    /// Names `device` (one of this user's listed devices) and tells the
    /// user's other devices.
    pub(crate) fn rename_device(&mut self, device: DeviceId, name: String) -> Result<(), Error> {
        DeviceName::check(&name).map_err(|e| Error::InvalidInput(e.into()))?;
        let me = self.user_id();
        let listed = self.machine.listed_devices(&me)?;
        let Some(info) = listed.iter().find(|d| d.device_id == device) else {
            return Err(Error::InvalidInput(format!(
                "{device} is not one of your devices (see `safemeet device list`)"
            )));
        };
        if matches!(info.status, Some(DeviceStatus::Revoked(_))) {
            return Err(Error::InvalidInput(format!(
                "{device} was revoked: it cannot be renamed"
            )));
        }
        let now = self.now.wall;
        let record = self.own_record()?;
        let set_at = match record.names.iter().find(|n| n.device_id == device) {
            // Later than the name it replaces, even with a clock behind.
            Some(old) => now.max(
                Timestamp::from_millis(old.set_at.as_millis().saturating_add(1))
                    .map_err(|e| Error::InvalidInput(e.to_string()))?,
            ),
            None => now,
        };
        record.names.retain(|n| n.device_id != device);
        record.names.push(DeviceName {
            device_id: device,
            name,
            set_at,
        });
        self.save_own_record()?;
        self.share_device_names(None)
    }

    /// Sends the names held to this user's other devices (`only`: one of
    /// them).
    pub(crate) fn share_device_names(&mut self, only: Option<DeviceId>) -> Result<(), Error> {
        let names = self.own_record()?.names.clone();
        // Even no names go to a new device: it answers with its own.
        if names.is_empty() && only.is_none() {
            return Ok(());
        }
        let me = self.user_id();
        let this = self.machine.account().device_id();
        for d in self.machine.user_devices(&me)? {
            // (`send_to_device` skips a device with no Olm session yet: it
            // learns the names when it sends its own.)
            if d.device_id == this || only.is_some_and(|o| o != d.device_id) {
                continue;
            }
            let event = ToDeviceEvent::DeviceNames(DeviceNames {
                names: names.clone(),
            });
            self.send_to_device(me, d.device_id, event);
        }
        Ok(())
    }

    /// Names from `from`, another device of this user (the crypto machine
    /// checked that): the acceptable ones for listed devices are merged;
    /// if `from` lacks a newer name held here, it is told.
    pub(crate) fn device_names_received(
        &mut self,
        from: DeviceId,
        names: DeviceNames,
    ) -> Result<(), Error> {
        let me = self.user_id();
        let listed: Vec<DeviceId> = self
            .machine
            .listed_devices(&me)?
            .iter()
            .map(|d| d.device_id)
            .collect();
        let received: Vec<DeviceName> = names
            .names
            .into_iter()
            .take(MAX_DEVICES_PER_USER)
            .filter(|n| DeviceName::check(&n.name).is_ok() && listed.contains(&n.device_id))
            .collect();
        let record = self.own_record()?;
        let mut changed = false;
        for new in &received {
            match record
                .names
                .iter_mut()
                .find(|n| n.device_id == new.device_id)
            {
                Some(old) if newer(new, old) => {
                    *old = new.clone();
                    changed = true;
                }
                Some(_) => {}
                None => {
                    record.names.push(new.clone());
                    changed = true;
                }
            }
        }
        // The sender lacks a name held here, or has an older one: it is
        // told (it then holds the same, and does not answer).
        let behind = record
            .names
            .iter()
            .filter(|n| listed.contains(&n.device_id))
            .any(|n| !received.contains(n));
        if changed {
            self.save_own_record()?;
        }
        if behind {
            self.share_device_names(Some(from))?;
        }
        Ok(())
    }

    /// Another device of this user was seen now (a message from it, or a
    /// connection).
    pub(crate) fn seen_own_device(&mut self, device: DeviceId) {
        let now = self.now.wall;
        self.own_devices.seen.insert(device, now);
        let written = self.own_record().map(|r| {
            r.seen
                .iter()
                .find(|(d, _)| *d == device)
                .map(|(_, t)| t.as_millis())
        });
        let due = match written {
            Ok(Some(at)) => now.as_millis().saturating_sub(at) >= SEEN_WRITE_MS,
            Ok(None) => true,
            Err(_) => false,
        };
        if !due {
            return;
        }
        let saved = self.own_record().map(|r| {
            r.seen.retain(|(d, _)| *d != device);
            // Newest first: the bound drops the longest unseen.
            r.seen.insert(0, (device, now));
            r.seen.truncate(MAX_DEVICES_PER_USER * 2);
        });
        if let Err(e) = saved.and_then(|()| self.save_own_record()) {
            tracing::debug!(error = %e, "a device's last sighting was not written");
        }
    }

    /// A peer connected: if it is another device of this user, it is seen.
    pub(crate) fn seen_own_peer(&mut self, peer: PeerId) {
        if self.own_devices.peers.is_none() {
            let me = self.user_id();
            let this = self.machine.account().device_id();
            let peers = self.machine.listed_devices(&me).map(|list| {
                list.iter()
                    .filter(|d| {
                        d.device_id != this && !matches!(d.status, Some(DeviceStatus::Revoked(_)))
                    })
                    .filter_map(|d| {
                        let cert = d.certificate.decode_body().ok()?;
                        Some((PeerId::from_bytes(&cert.peer_id).ok()?, d.device_id))
                    })
                    .collect()
            });
            match peers {
                Ok(p) => self.own_devices.peers = Some(p),
                Err(e) => {
                    tracing::debug!(error = %e, "this user's devices were not read");
                    return;
                }
            }
        }
        let device = self
            .own_devices
            .peers
            .as_ref()
            .and_then(|p| p.iter().find(|(id, _)| *id == peer).map(|(_, d)| *d));
        if let Some(device) = device {
            self.seen_own_device(device);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(name: &str, at: u64) -> DeviceName {
        DeviceName {
            device_id: DeviceId::from_bytes([7; 16]),
            name: name.into(),
            set_at: Timestamp::from_millis(at).unwrap(),
        }
    }

    #[test]
    fn the_later_name_wins_and_a_tie_is_decided_the_same_everywhere() {
        assert!(newer(&named("b", 2), &named("a", 1)));
        assert!(!newer(&named("a", 1), &named("b", 2)));
        // Given at the same moment on two devices: both keep "b".
        assert!(newer(&named("b", 5), &named("a", 5)));
        assert!(!newer(&named("a", 5), &named("b", 5)));
        // The same name again changes nothing (no answer loops).
        assert!(!newer(&named("a", 5), &named("a", 5)));
    }
}
