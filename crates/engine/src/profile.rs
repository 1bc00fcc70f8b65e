//! This user's profile (display name, e-mail addresses) and contacts'.
//!
//! A profile is signed by its user's master key and counted: each change
//! is a new version, one up. The device with the master key signs it and
//! sends it ([`ToDeviceEvent::ProfileUpdate`], over Olm) to every contact
//! device and this user's other devices. A contact's device keeps only the
//! newest version it has seen (the one before is overwritten, not kept)
//! and refuses an older one, so a copy that arrives late, from a relay
//! say, cannot take a name back.

use safemeet_crypto::certificate::verify_profile;
use safemeet_proto::event::ToDeviceEvent;
use safemeet_proto::identity::{Profile, Signed};
use safemeet_proto::limits::MAX_EMAILS;
use safemeet_proto::{DisplayName, Email, UserId};
use safemeet_store::{Keyspace, Store};

use crate::core::Core;
use crate::error::Error;
use crate::records::{MAX_RECORD_BYTES, name};

/// A change to this user's profile (`profile set`, `email add|remove`).
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ProfileChange {
    /// A new display name.
    pub display_name: Option<DisplayName>,
    /// An e-mail address to add.
    pub add_email: Option<Email>,
    /// An e-mail address to remove.
    pub remove_email: Option<Email>,
}

impl ProfileChange {
    /// A new display name.
    pub fn display_name(name: DisplayName) -> Self {
        Self {
            display_name: Some(name),
            ..Self::default()
        }
    }

    /// An e-mail address to add.
    pub fn add_email(email: Email) -> Self {
        Self {
            add_email: Some(email),
            ..Self::default()
        }
    }

    /// An e-mail address to remove.
    pub fn remove_email(email: Email) -> Self {
        Self {
            remove_email: Some(email),
            ..Self::default()
        }
    }
}

/// What became of a contact's profile that arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProfileTaken {
    /// Newer: kept, the one before dropped.
    Newer,
    /// The version held.
    Same,
}

impl<S: Store + Clone> Core<S> {
    /// Applies `change` to this user's profile: a new version, signed with
    /// the master key, kept here and sent to every contact device and this
    /// user's other devices.
    pub(crate) fn change_profile(&mut self, change: ProfileChange) -> Result<Profile, Error> {
        if !self.machine.account().has_master_key() {
            return Err(safemeet_crypto::Error::NoMasterKey.into());
        }
        let current: Profile = (**self.machine.account().profile()).clone();
        let display_name = change
            .display_name
            .unwrap_or_else(|| current.display_name.clone());
        let mut emails = current.emails.clone();
        if let Some(email) = change.add_email {
            if emails.contains(&email) {
                return Err(Error::InvalidInput(format!(
                    "{} is already in your profile",
                    email.as_str()
                )));
            }
            if emails.len() >= MAX_EMAILS {
                return Err(Error::InvalidInput(format!(
                    "a profile holds at most {MAX_EMAILS} e-mail addresses"
                )));
            }
            emails.push(email);
        }
        if let Some(email) = change.remove_email {
            if !emails.contains(&email) {
                return Err(Error::InvalidInput(format!(
                    "{} is not in your profile",
                    email.as_str()
                )));
            }
            emails.retain(|e| *e != email);
        }
        if display_name == current.display_name && emails == current.emails {
            return Ok(current);
        }
        self.machine
            .update_profile(display_name, emails, self.now.wall)?;
        self.security("profile_changed", None);
        let signed = self.machine.account().profile().signed().clone();
        self.send_to_own_and_contacts(|| ToDeviceEvent::ProfileUpdate(signed.clone()))?;
        Ok((**self.machine.account().profile()).clone())
    }

    /// Sends an event to every device of every contact and this user's
    /// other devices.
    pub(crate) fn send_to_own_and_contacts(
        &mut self,
        event: impl Fn() -> ToDeviceEvent,
    ) -> Result<(), Error> {
        let me = self.user_id();
        let mut users = vec![me];
        users.extend(self.contact_records()?.iter().map(|c| c.user_id));
        let this = self.machine.account().device_id();
        for user in users {
            for device in self.machine.user_devices(&user)? {
                if device.device_id != this {
                    self.send_to_device(user, device.device_id, event());
                }
            }
        }
        Ok(())
    }

    /// A profile from a device of `sender` (its signature checked by the
    /// crypto machine): this user's own is adopted if newer; a contact's
    /// is kept if newer than the one held, and refused if older.
    pub(crate) fn profile_received(
        &mut self,
        sender: UserId,
        signed: &Signed<Profile>,
    ) -> Result<Option<ProfileTaken>, Error> {
        if sender == self.user_id() {
            let newer = self.machine.accept_own_profile(signed)?;
            return Ok(Some(if newer {
                ProfileTaken::Newer
            } else {
                ProfileTaken::Same
            }));
        }
        let Some(mut record) = self.contact(&sender)? else {
            // Not a contact (any more): nothing is kept about them.
            return Ok(None);
        };
        let taken = self.keep_contact_profile(&sender, signed)?;
        if taken == ProfileTaken::Newer {
            let profile = signed.decode_body()?;
            record.display_name = profile.display_name.as_str().to_owned();
            record.username = profile.username.as_str().to_owned();
            let index = self.contact_index()?;
            self.put_contact(&record, &index)?;
        }
        Ok(Some(taken))
    }

    /// Keeps `signed` as `user`'s profile if it is newer than the one held
    /// (which it replaces); an older one is an error.
    pub(crate) fn keep_contact_profile(
        &mut self,
        user: &UserId,
        signed: &Signed<Profile>,
    ) -> Result<ProfileTaken, Error> {
        let held = match self.store.get(Keyspace::Contacts, &name::profile(user))? {
            Some(bytes) => Some(verify_profile(&Signed::from_bytes(&bytes)?, user, None)?),
            None => None,
        };
        let verified = verify_profile(signed, user, held.as_ref())?;
        if held.is_some_and(|h| h.counter == verified.counter) {
            return Ok(ProfileTaken::Same);
        }
        let bytes = signed.to_bytes()?;
        if bytes.len() > MAX_RECORD_BYTES {
            return Err(Error::InvalidInput("a profile too large to keep".into()));
        }
        self.store
            .put(Keyspace::Contacts, &name::profile(user), &bytes)?;
        Ok(ProfileTaken::Newer)
    }

    /// A contact's e-mail addresses, from the newest profile held.
    pub(crate) fn contact_emails(&self, user: &UserId) -> Result<Vec<String>, Error> {
        let Some(bytes) = self.store.get(Keyspace::Contacts, &name::profile(user))? else {
            return Ok(Vec::new());
        };
        let profile = Signed::<Profile>::from_bytes(&bytes)?.decode_body()?;
        Ok(profile
            .emails
            .iter()
            .map(|e| e.as_str().to_owned())
            .collect())
    }
}
