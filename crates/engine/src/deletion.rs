//! Deleting this account (`safemeet account delete`), as far as the
//! network goes: the node then shreds the store (see the node's
//! `account` command and `docs/privacy.md`).
//!
//! - Every group room is left: the admin left rotates its secret (first,
//!   and delivered, before the tombstone: see [`DeletionStep`]).
//! - Every contact device gets the account's tombstone, signed with the
//!   master key; each drops the account's sessions, devices and profile,
//!   shows it as deleted and refuses what its devices send from then on.
//! - This user's other devices get it too, and are revoked.
//! - Every mailbox of this device on every relay it used is purged (see
//!   `relay_client::purge`), each relay signing a receipt.
//!
//! Each step can be run again: a receiver takes a tombstone once, a room
//! left is skipped, a mailbox already gone is receipted with nothing
//! removed.

use std::sync::Arc;

use safemeet_crypto::mailbox::EpochKey;
use safemeet_proto::event::ToDeviceEvent;
use safemeet_proto::{DeviceId, UserId};
use safemeet_store::Store;
use serde::Serialize;

use crate::Error;
use crate::core::Core;
use crate::mailbox::Relay;

/// What the network part of a deletion did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct DeletionReport {
    /// Devices the tombstone was queued for.
    pub told: Vec<(UserId, DeviceId)>,
    /// Devices it could not be sent to (no Olm session with them).
    pub not_reached: Vec<(UserId, DeviceId)>,
    /// Rooms left.
    pub rooms_left: usize,
    /// This user's other devices revoked.
    pub devices_revoked: usize,
}

/// The steps of a deletion, in order: the rooms are left (and their
/// leaves delivered) before anyone hears of the tombstone, since a member
/// who has it takes nothing more from the account, its leaves included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeletionStep {
    /// Leave every group room.
    LeaveRooms,
    /// Send the tombstone to every contact device and this user's other
    /// devices, and revoke those devices.
    Tell,
}

impl<S: Store + Clone> Core<S> {
    /// Carries out one step of a deletion (see [`DeletionStep`]). Only on
    /// the device that holds the master key.
    pub(crate) fn delete_account(&mut self, step: DeletionStep) -> Result<DeletionReport, Error> {
        if !self.machine.account().has_master_key() {
            return Err(Error::InvalidInput(
                "delete the account on the device that holds the master key".into(),
            ));
        }
        let mut report = DeletionReport::default();
        if step == DeletionStep::LeaveRooms {
            self.security("account_deletion_requested", None);
            for room in self.room_index()?.rooms {
                let joined = self
                    .room(&room)?
                    .is_some_and(|r| !r.left && !r.members.is_empty());
                if !joined {
                    continue;
                }
                match self.room_leave(&room) {
                    Ok(()) => report.rooms_left += 1,
                    Err(e) => tracing::warn!(error = %e, "a room was not left"),
                }
            }
            self.rooms_changed = true;
            return Ok(report);
        }
        let signed = self.machine.account().sign_tombstone(self.now.wall)?;
        let me = self.user_id();
        let this = self.machine.account().device_id();
        let mut users = vec![me];
        users.extend(self.contact_records()?.iter().map(|c| c.user_id));
        for user in users {
            for device in self.machine.user_devices(&user)? {
                let device = device.device_id;
                if device == this {
                    continue;
                }
                if self.machine.has_session(&device)? {
                    self.send_to_device(
                        user,
                        device,
                        ToDeviceEvent::AccountDeleted(signed.clone()),
                    );
                    report.told.push((user, device));
                } else {
                    report.not_reached.push((user, device));
                }
            }
        }
        for device in self.machine.user_devices(&me)? {
            if device.device_id != this && self.revoke_device(device.device_id).is_ok() {
                report.devices_revoked += 1;
            }
        }
        Ok(report)
    }

    /// The relays to purge (this device's and the ones it used before)
    /// and the keys of every mailbox that may be open on them: each epoch
    /// from the oldest drained to the last opened ahead.
    pub(crate) fn purge_targets(&self) -> (Vec<Relay>, Vec<Arc<EpochKey>>) {
        let mut relays = self.own_relays.clone();
        for (addr, _) in &self.former_relays {
            if let Some(relay) = addr
                .parse::<libp2p::Multiaddr>()
                .ok()
                .and_then(|a| Relay::from_addr(&a))
                && !relays.iter().any(|r| r.peer == relay.peer)
            {
                relays.push(relay);
            }
        }
        let current = safemeet_crypto::mailbox::epoch_of(self.now.wall);
        let oldest = self.oldest_epoch(current);
        let account = self.machine.account();
        let keys = (oldest..current.saturating_add(crate::mailbox::OPEN_AHEAD_EPOCHS))
            .map(|e| Arc::new(account.mailbox_key(e)))
            .collect();
        (relays, keys)
    }

    /// A contact's tombstone came (checked): their devices, sessions and
    /// profile go, and nothing more is taken from them.
    pub(crate) fn contact_deleted(&mut self, user: UserId) -> Result<(), Error> {
        if user == self.user_id() || self.is_deleted(&user) {
            return Ok(());
        }
        let peers = self.machine.forget_user(&user)?;
        self.store.delete(
            safemeet_store::Keyspace::Contacts,
            &crate::records::name::profile(&user),
        )?;
        self.mark_deleted(user, peers)?;
        self.security("contact_account_deleted", Some(user.to_string()));
        self.devices_changed = true;
        self.headers.stale = true;
        self.admission.stale = true;
        Ok(())
    }
}
