//! Telling devices of this user's device list: every contact device and
//! this user's other devices get it when it changes (a link, a
//! revocation). A device this one has no Olm session with yet is owed the
//! list and gets it as soon as a session exists (a contact whose first
//! message just came, say), so a revocation reaches it too.

use safemeet_proto::event::{DEVICE_LIST_NOTICE_VERSION, DeviceListNotice, ToDeviceEvent};
use safemeet_proto::identity::{OneTimeKey, Signed};
use safemeet_proto::{DeviceId, UserId, codec};
use safemeet_store::{Keyspace, Store};
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::core::Core;
use crate::records::{MAX_RECORD_BYTES, name};

/// Most devices a device list is owed to at once.
const MAX_OWED: usize = 4096;

/// The devices this device owes its current device list: they had no
/// Olm session with it when the list changed.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct OwedLists {
    version: u8,
    devices: Vec<(UserId, DeviceId)>,
}

impl<S: Store + Clone> Core<S> {
    /// Sends this user's device list to every contact device and to this
    /// user's other devices, with `keys` for new devices to start Olm
    /// sessions from. A device that cannot be reached now gets it from the
    /// outbox later; one with no Olm session is skipped (it learns the list
    /// from the next invite or notice).
    pub(crate) fn announce_devices(&mut self, keys: Vec<Signed<OneTimeKey>>) {
        self.own_devices.devices_changed();
        let me = self.user_id();
        let targets = (|| -> Result<Vec<(UserId, DeviceId)>, Error> {
            let mut users: Vec<UserId> = vec![me];
            users.extend(self.contact_records()?.iter().map(|c| c.user_id));
            let mut targets = Vec::new();
            for user in users {
                for device in self.machine.user_devices(&user)? {
                    targets.push((user, device.device_id));
                }
            }
            Ok(targets)
        })();
        match targets {
            Ok(targets) => self.send_device_list_with(&targets, keys),
            Err(e) => tracing::warn!(error = %e, "the new device list was not announced"),
        }
    }

    /// Sends this user's device list to these devices; the ones this
    /// device has no Olm session with yet are owed it (see `archive`).
    pub(crate) fn send_device_list(&mut self, targets: &[(UserId, DeviceId)]) {
        self.send_device_list_with(targets, Vec::new());
    }

    fn send_device_list_with(
        &mut self,
        targets: &[(UserId, DeviceId)],
        keys: Vec<Signed<OneTimeKey>>,
    ) {
        let me = self.user_id();
        let this = self.machine.account().device_id();
        let sent = self.machine.signed_device_list(&me).and_then(|held| {
            let Some((device_list, certificates)) = held else {
                return Ok(Vec::new());
            };
            let notice = DeviceListNotice {
                version: DEVICE_LIST_NOTICE_VERSION,
                device_list,
                certificates,
                keys,
            };
            let mut owed = Vec::new();
            for &(user, device) in targets {
                if device == this {
                    continue;
                }
                if !self.machine.has_session(&device)? {
                    owed.push((user, device));
                    continue;
                }
                let event = ToDeviceEvent::DeviceList(Box::new(notice.clone()));
                self.send_to_device(user, device, event);
            }
            Ok(owed)
        });
        let owed = sent
            .map_err(Error::from)
            .and_then(|owed| self.owe_list(owed));
        if let Err(e) = owed {
            tracing::warn!(error = %e, "the new device list was not announced");
        }
    }

    /// Remembers the devices that did not get this user's device list
    /// because this device has no Olm session with them yet.
    pub(crate) fn owe_list(&mut self, devices: Vec<(UserId, DeviceId)>) -> Result<(), Error> {
        if devices.is_empty() {
            return Ok(());
        }
        let mut owed = self.owed_lists()?;
        for d in devices {
            if !owed.devices.contains(&d) && owed.devices.len() < MAX_OWED {
                owed.devices.push(d);
            }
        }
        self.put_owed(&owed)
    }

    fn put_owed(&mut self, owed: &OwedLists) -> Result<(), Error> {
        self.store.put(
            Keyspace::Contacts,
            name::OWED_LISTS,
            &codec::encode_limited(owed, MAX_RECORD_BYTES)?,
        )?;
        self.owed_none = owed.devices.is_empty();
        Ok(())
    }

    fn owed_lists(&self) -> Result<OwedLists, Error> {
        Ok(
            match self.store.get(Keyspace::Contacts, name::OWED_LISTS)? {
                Some(bytes) => codec::decode(&bytes, MAX_RECORD_BYTES)?,
                None => OwedLists::default(),
            },
        )
    }

    /// Sends the current device list to each device it is owed to that
    /// this device now has an Olm session with (a contact device whose
    /// first message just came, say).
    pub(crate) fn pay_owed_lists(&mut self) {
        if self.owed_none {
            return;
        }
        let paid = self.owed_lists().and_then(|mut owed| {
            if owed.devices.is_empty() {
                self.owed_none = true;
                return Ok(());
            }
            let mut ready = Vec::new();
            for d in std::mem::take(&mut owed.devices) {
                if self.machine.has_session(&d.1)? {
                    ready.push(d);
                } else {
                    owed.devices.push(d);
                }
            }
            if ready.is_empty() {
                return Ok(());
            }
            self.send_device_list(&ready);
            self.put_owed(&owed)
        });
        if let Err(e) = paid {
            tracing::warn!(error = %e, "an owed device list was not sent");
        }
    }
}
