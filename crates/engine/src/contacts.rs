//! Contacts: invites made and accepted, the contact list, and removal.
//!
//! A contact comes from a signed invite (see [`Invite`]): its device list,
//! certificates and profile are checked against the user id before
//! anything is kept, and the first Olm session starts from the inviting
//! device's signed fallback key, so a first message needs no round trip.

use std::sync::Arc;

use libp2p::Multiaddr;
use safemeet_crypto::EncryptedBatch;
use safemeet_proto::identity::{RelayList, Signed};
use safemeet_proto::{UserId, codec};
use safemeet_store::{Keyspace, Store};

use crate::core::Core;
use crate::records::{ContactIndex, ContactRecord, MAX_RECORD_BYTES, VERSION, name};
use crate::{Contact, Error};
use safemeet_proto::DeviceId;
use safemeet_proto::event::{INTRODUCTION_VERSION, Introduction, ToDeviceEvent};
use safemeet_proto::invite::{INVITE_VERSION, Invite, InviteError, MAX_INVITE_ADDRS};

impl<S: Store + Clone> Core<S> {
    /// An invite for this user, naming these listen addresses.
    pub(crate) fn invite(&mut self, addrs: Vec<Multiaddr>) -> Result<String, Error> {
        let fallback_key = self.machine.fallback_key(self.now.wall)?;
        let account = self.machine.account();
        let device_list = account.device_list().signed().clone();
        let certificates = vec![account.certificate().clone()];
        let profile = account.profile().signed().clone();
        let addrs = addrs
            .into_iter()
            .take(MAX_INVITE_ADDRS)
            .map(|a| a.to_string())
            .collect();
        let relays = if self.own_relays.is_empty() {
            None
        } else {
            let list = self.own_relays.iter().map(|r| r.addr.to_string()).collect();
            Some(self.machine.sign_relay_list(list, self.now.wall)?)
        };
        Ok(Invite {
            version: INVITE_VERSION,
            device_list,
            certificates,
            fallback_key,
            profile,
            addrs,
            relays,
        }
        .to_text()?)
    }

    /// Accepts another user's invite; returns their user id.
    pub(crate) fn add_contact(&mut self, text: &str, pet: Option<String>) -> Result<UserId, Error> {
        if let Some(name) = &pet
            && safemeet_proto::DisplayName::new(name.as_str()).is_err()
        {
            return Err(Error::InvalidInput(
                "a contact's name is 1-64 bytes of printable text".into(),
            ));
        }
        let invite = Invite::from_text(text)?;
        let user = invite.device_list.decode_body()?.user_id;
        if user == self.machine.account().user_id() {
            return Err(InviteError::OwnInvite.into());
        }
        // An invite whose signatures do not hold is bad input, not a fault.
        let damaged =
            |e: safemeet_crypto::Error| Error::InvalidInput(format!("invalid invite: {e}"));
        safemeet_crypto::certificate::verify_device_list(&invite.device_list, &user, None)
            .map_err(damaged)?;
        let profile = safemeet_crypto::certificate::verify_profile(&invite.profile, &user, None)
            .map_err(damaged)?;
        self.machine
            .add_device_list(&invite.device_list, &invite.certificates)
            .map_err(damaged)?;
        let inviting = invite.fallback_key.decode_body()?.device_id;
        if let Some(signed) = &invite.relays
            && self.machine.verify_relay_list(signed)?.device_id != inviting
        {
            return Err(InviteError::ForeignRelayList.into());
        }
        // The first Olm session starts from the signed fallback key; no round trip.
        if !self.machine.has_session(&inviting)? {
            self.machine
                .create_outbound_session(&inviting, &invite.fallback_key, self.now.wall)?;
        }
        let addrs: Vec<String> = invite
            .addrs
            .iter()
            .filter(|a| a.parse::<Multiaddr>().is_ok())
            .cloned()
            .collect();
        let record = ContactRecord {
            version: VERSION,
            user_id: user,
            pet_name: pet,
            username: profile.username.as_str().to_owned(),
            display_name: profile.display_name.as_str().to_owned(),
            addrs: vec![(inviting, addrs)],
        };
        let mut index = self.contact_index()?;
        if !index.users.contains(&user) {
            index.users.push(user);
        }
        self.put_contact(&record, &index)?;
        // The invite's profile is the first version held (a newer one held
        // from before stays: the invite may be old).
        if let Err(e) = self.keep_contact_profile(&user, &invite.profile) {
            tracing::debug!(error = %e, "the invite's profile is older than the one held");
        }
        self.mark_added(user)?;
        // A new DM: its header key.
        self.headers.stale = true;
        self.admission.stale = true;
        if let Some(signed) = &invite.relays {
            self.keep_relay_list(signed)?;
        }
        // Items that waited for a device of theirs can go now.
        self.devices_changed = true;
        self.introduce(user, inviting);
        // Their message request, if they asked first, is taken now.
        self.replay_request(&user)?;
        Ok(user)
    }

    /// Stores a contact record with the contact index, flushed.
    pub(crate) fn put_contact(
        &self,
        record: &ContactRecord,
        index: &ContactIndex,
    ) -> Result<(), Error> {
        let mut batch = self.store.batch();
        self.store.batch_put_value(
            &mut batch,
            Keyspace::Contacts,
            &name::contact(&record.user_id),
            record,
            MAX_RECORD_BYTES,
        )?;
        self.commit_contacts(batch, index)
    }

    /// Sends this user's introduction to the device whose invite was
    /// taken: if its user has not added this one, it shows as a message
    /// request there (see `requests`). A failure only costs that.
    fn introduce(&mut self, user: UserId, device: DeviceId) {
        let account = self.machine.account();
        let introduction = Introduction {
            version: INTRODUCTION_VERSION,
            device_list: account.device_list().signed().clone(),
            certificates: vec![account.certificate().clone()],
            profile: account.profile().signed().clone(),
        };
        self.send_to_device(
            user,
            device,
            ToDeviceEvent::Introduction(Box::new(introduction)),
        );
    }

    /// Commits `batch` with the contact index, flushed.
    fn commit_contacts(
        &self,
        mut batch: EncryptedBatch,
        index: &ContactIndex,
    ) -> Result<(), Error> {
        self.store.batch_put_value(
            &mut batch,
            Keyspace::Contacts,
            name::CONTACT_INDEX,
            index,
            MAX_RECORD_BYTES,
        )?;
        *self.contact_cache.borrow_mut() = None;
        self.store.apply(batch)?;
        self.store.flush()?;
        Ok(())
    }

    /// Every contact record, in the order they were added; read from the
    /// store once and kept until the contacts change.
    pub(crate) fn contact_records(&self) -> Result<Arc<Vec<ContactRecord>>, Error> {
        if let Some(cached) = self.contact_cache.borrow().as_ref() {
            return Ok(cached.clone());
        }
        let mut records = Vec::new();
        for user in self.contact_index()?.users {
            if let Some(bytes) = self.store.get(Keyspace::Contacts, &name::contact(&user))? {
                records.push(codec::decode::<ContactRecord>(&bytes, MAX_RECORD_BYTES)?);
            }
        }
        let records = Arc::new(records);
        *self.contact_cache.borrow_mut() = Some(records.clone());
        Ok(records)
    }

    /// The contacts as the API shows them.
    pub(crate) fn contacts(&mut self) -> Result<Vec<Contact>, Error> {
        let records = self.contact_records()?;
        let mut contacts = Vec::with_capacity(records.len());
        for c in records.iter() {
            let mut relays = Vec::new();
            for device in self.machine.user_devices(&c.user_id)? {
                let key = name::relay_list(&device.device_id);
                if let Some(bytes) = self.store.get(Keyspace::Contacts, &key)? {
                    // Checked when it was kept.
                    let list = Signed::<RelayList>::from_bytes(&bytes)?.decode_body()?;
                    relays.extend(list.relays);
                }
            }
            relays.sort();
            relays.dedup();
            let devices: Vec<crate::ContactDevice> = self
                .machine
                .user_devices(&c.user_id)?
                .into_iter()
                .map(|d| crate::ContactDevice {
                    device_id: d.device_id,
                    verified: d.trust == safemeet_crypto::machine::DeviceTrust::Verified,
                })
                .collect();
            let new_device_warning =
                devices.iter().any(|d| d.verified) && devices.iter().any(|d| !d.verified);
            contacts.push(Contact {
                user_id: c.user_id,
                pet_name: c.pet_name.clone(),
                username: c.username.clone(),
                display_name: c.display_name.clone(),
                emails: self.contact_emails(&c.user_id)?,
                relays,
                devices,
                new_device_warning,
                deleted: self.is_deleted(&c.user_id),
                avatar: self.avatar_info(&c.user_id)?,
            });
        }
        Ok(contacts)
    }

    /// Removes a contact (their keys and the messages stored so far stay);
    /// what they send from now on is refused until their invite is
    /// accepted again.
    pub(crate) fn remove_contact(&mut self, user: &UserId) -> Result<(), Error> {
        let mut index = self.contact_index()?;
        if !index.users.contains(user) {
            return Err(Error::UnknownContact(*user));
        }
        index.users.retain(|u| u != user);
        let mut batch = self.store.batch();
        self.store
            .batch_delete(&mut batch, Keyspace::Contacts, &name::contact(user))?;
        self.commit_contacts(batch, &index)?;
        self.mark_removed(*user)?;
        self.headers.stale = true;
        self.admission.stale = true;
        Ok(())
    }

    pub(crate) fn contact_index(&self) -> Result<ContactIndex, Error> {
        Ok(
            match self.store.get(Keyspace::Contacts, name::CONTACT_INDEX)? {
                Some(b) => codec::decode(&b, MAX_RECORD_BYTES)?,
                None => ContactIndex {
                    version: VERSION,
                    users: Vec::new(),
                },
            },
        )
    }

    pub(crate) fn contact(&self, user: &UserId) -> Result<Option<ContactRecord>, Error> {
        Ok(self
            .contact_records()?
            .iter()
            .find(|c| c.user_id == *user)
            .cloned())
    }
}
