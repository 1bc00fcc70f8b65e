//! What a device keeps about its own user: the keys, its certificate, the
//! signed device list and the signed profile.
//!
//! [`Account::to_record`] and [`Account::from_record`] turn the bundle into
//! bytes for the `Account` keyspace of an [`EncryptedStore`](crate::EncryptedStore);
//! the bytes hold secrets and are zeroized when dropped.

use std::fmt;

use libp2p_identity::{Keypair, PeerId};
use safemeet_proto::identity::{
    DeviceCertificate, DeviceList, DeviceStatus, OneTimeKey, Profile, Signed,
};
use safemeet_proto::{DeviceId, DisplayName, Email, Timestamp, UserId, Username, codec};
use serde::{Deserialize, Serialize};
use vodozemac::Ed25519SecretKey;
use vodozemac::olm::{Account as OlmAccount, AccountPickle};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::Error;
use crate::certificate::{self, Verified};
use crate::identity::{DeviceKeys, MasterKey};

/// Largest account record accepted from the store.
/// vodozemac keeps up to 5 000 one-time keys (about 125 bytes each in a pickle).
const MAX_ACCOUNT_RECORD_BYTES: usize = 2 * 1024 * 1024;

/// A user's account as held by one of its devices.
///
/// Only the user's first device holds the master key. A linked device gets
/// its certificate and the device list but not the key, so a device that is
/// later revoked cannot sign itself back into the list.
pub struct Account {
    user: UserId,
    master: Option<MasterKey>,
    device: DeviceKeys,
    certificate: Verified<DeviceCertificate>,
    device_list: Verified<DeviceList>,
    profile: Verified<Profile>,
}

impl fmt::Debug for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Account")
            .field("user_id", &self.user_id())
            .field("device_id", &self.device_id())
            .finish_non_exhaustive()
    }
}

/// The stored form. Every field is zeroized on drop.
#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
struct AccountRecord {
    version: u8,
    user_id: [u8; 32],
    master_secret: Option<[u8; 32]>,
    olm_pickle: String,
    libp2p_keypair: Vec<u8>,
    mailbox_secret: [u8; 32],
    certificate: Vec<u8>,
    device_list: Vec<u8>,
    profile: Vec<u8>,
}

/// Version 1 of the stored form: every device held the master key.
#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
struct AccountRecordV1 {
    version: u8,
    master_secret: [u8; 32],
    olm_pickle: String,
    libp2p_keypair: Vec<u8>,
    mailbox_secret: [u8; 32],
    certificate: Vec<u8>,
    device_list: Vec<u8>,
    profile: Vec<u8>,
}

impl Account {
    /// Creates a new user with this device as its first device.
    pub fn create(
        username: Username,
        display_name: DisplayName,
        emails: Vec<Email>,
        now: Timestamp,
    ) -> Result<Self, Error> {
        if emails.len() > safemeet_proto::limits::MAX_EMAILS {
            return Err(Error::InvalidRecord {
                what: "profile",
                reason: "too many e-mail addresses",
            });
        }
        let master = MasterKey::generate();
        let device = DeviceKeys::generate();
        let user = master.user_id();
        let cert = certificate::issue_device_certificate(&master, &device, now)?;
        let list = certificate::issue_device_list(
            &master,
            1,
            vec![certificate::active_entry(&cert)?],
            now,
        )?;
        let profile = certificate::sign_profile(
            &master,
            &Profile {
                version: certificate::RECORD_VERSION,
                user_id: user,
                counter: 1,
                username,
                display_name,
                emails,
                updated_at: now,
            },
        )?;
        Ok(Self {
            certificate: certificate::verify_device_certificate(&cert, &user)?,
            device_list: certificate::verify_device_list(&list, &user, None)?,
            profile: certificate::verify_profile(&profile, &user, None)?,
            user,
            master: Some(master),
            device,
        })
    }

    /// The master key's secret bytes, if this device holds it: for audits
    /// and tests that check where a key may not be. Never log or send them.
    pub fn master_secret(&self) -> Option<Zeroizing<[u8; 32]>> {
        self.master.as_ref().map(|m| m.secret_bytes())
    }

    /// The user id.
    pub fn user_id(&self) -> UserId {
        self.user
    }

    /// True on the device that holds the master key (the user's first).
    pub fn has_master_key(&self) -> bool {
        self.master.is_some()
    }

    fn master(&self) -> Result<&MasterKey, Error> {
        self.master.as_ref().ok_or(Error::NoMasterKey)
    }

    /// This device's id (from its verified certificate, which matches its keys).
    pub fn device_id(&self) -> DeviceId {
        self.certificate.device_id
    }

    /// This device's libp2p peer id.
    pub fn peer_id(&self) -> PeerId {
        self.device.peer_id()
    }

    /// This device's libp2p keypair.
    pub fn libp2p_keypair(&self) -> &Keypair {
        &self.device.libp2p
    }

    /// The key of this device's relay mailbox in `epoch` (see
    /// [`crate::mailbox`]).
    pub fn mailbox_key(&self, epoch: u64) -> crate::mailbox::EpochKey {
        crate::mailbox::EpochKey::derive(&self.device.mailbox, epoch)
    }

    /// The device keys.
    pub fn device_keys(&self) -> &DeviceKeys {
        &self.device
    }

    /// This device's signed certificate.
    pub fn certificate(&self) -> &Signed<DeviceCertificate> {
        self.certificate.signed()
    }

    /// The current signed device list.
    pub fn device_list(&self) -> &Verified<DeviceList> {
        &self.device_list
    }

    /// The current signed profile.
    pub fn profile(&self) -> &Verified<Profile> {
        &self.profile
    }

    /// The device keys, for the crypto machine's Olm bookkeeping.
    pub(crate) fn device_keys_mut(&mut self) -> &mut DeviceKeys {
        &mut self.device
    }

    /// This device's verified certificate.
    pub fn verified_certificate(&self) -> &Verified<DeviceCertificate> {
        &self.certificate
    }

    /// Creates the keys and certificate of a new device of this user and
    /// publishes a device list that holds it. Returns the new device's
    /// account, without the master key; this device's list is updated too.
    /// (Moving the new account to the new device is the device-link
    /// handshake's job.) Only the device with the master key can do this.
    pub fn link_new_device(&mut self, now: Timestamp) -> Result<Account, Error> {
        let device = DeviceKeys::generate();
        let cert = certificate::issue_device_certificate(self.master()?, &device, now)?;
        let mut entries = self.device_list.devices.clone();
        entries.push(certificate::active_entry(&cert)?);
        self.publish_device_list(entries, now)?;
        Ok(Account {
            user: self.user,
            master: None,
            certificate: certificate::verify_device_certificate(&cert, &self.user_id())?,
            device,
            device_list: self.device_list.clone(),
            profile: self.profile.clone(),
        })
    }

    /// Makes a new fallback key for this device and signs it with the
    /// device key. (A freshly linked device's announcement carries one, so
    /// that the other devices can start Olm sessions with it before it was
    /// ever online.)
    pub fn new_fallback_key(&mut self, now: Timestamp) -> Result<Signed<OneTimeKey>, Error> {
        self.device.olm.generate_fallback_key();
        let key = self
            .device
            .olm
            .fallback_key()
            .values()
            .next()
            .map(|k| k.to_bytes())
            .ok_or(Error::InvalidRecord {
                what: "fallback key",
                reason: "none was generated",
            })?;
        self.device.olm.mark_keys_as_published();
        certificate::sign_one_time_key(
            &self.device,
            &OneTimeKey {
                version: certificate::RECORD_VERSION,
                device_id: self.device_id(),
                key,
                fallback: true,
                created_at: now,
            },
        )
    }

    /// Gives `new`, a device of this same user, a copy of the master key
    /// (`device link --with-master`): it can then link and revoke devices
    /// too, and whoever takes it can do the same.
    pub fn copy_master_key_to(&self, new: &mut Account) -> Result<(), Error> {
        if new.user != self.user {
            return Err(Error::UserMismatch {
                what: "account",
                expected: self.user,
                found: new.user,
            });
        }
        new.master = Some(MasterKey::from_secret_bytes(&self.master()?.secret_bytes()));
        Ok(())
    }

    /// Signs trust in another user's devices with the master key.
    pub fn sign_user_trust(
        &self,
        trust: &safemeet_proto::identity::UserTrust,
    ) -> Result<Signed<safemeet_proto::identity::UserTrust>, Error> {
        certificate::sign_user_trust(self.master()?, trust)
    }

    /// Signs an avatar of this account with the master key.
    pub fn sign_avatar(
        &self,
        avatar: &safemeet_proto::identity::Avatar,
    ) -> Result<Signed<safemeet_proto::identity::Avatar>, Error> {
        certificate::sign_avatar(self.master()?, avatar)
    }

    /// Signs this account's tombstone with the master key.
    pub fn sign_tombstone(
        &self,
        deleted_at: Timestamp,
    ) -> Result<Signed<safemeet_proto::identity::AccountTombstone>, Error> {
        let tombstone = safemeet_proto::identity::AccountTombstone {
            version: 1,
            user_id: self.user_id(),
            deleted_at,
        };
        certificate::sign_tombstone(self.master()?, &tombstone)
    }

    /// Marks `device` revoked in a new version of the device list. A device
    /// cannot revoke itself; only the device with the master key can revoke.
    pub fn revoke_device(&mut self, device: DeviceId, now: Timestamp) -> Result<(), Error> {
        let mismatch = |reason| Error::InvalidRecord {
            what: "device list",
            reason,
        };
        if device == self.device_id() {
            return Err(mismatch("a device cannot revoke itself"));
        }
        let mut entries = self.device_list.devices.clone();
        let entry = entries
            .iter_mut()
            .find(|e| e.device_id == device)
            .ok_or(mismatch("no such device"))?;
        if entry.status != DeviceStatus::Active {
            return Err(mismatch("the device is already revoked"));
        }
        entry.status = DeviceStatus::Revoked(now);
        self.publish_device_list(entries, now)
    }

    /// Adopts a newer device list of this user (published by another of its
    /// devices). It must still hold this device as active.
    pub fn accept_device_list(&mut self, list: &Signed<DeviceList>) -> Result<bool, Error> {
        let verified =
            certificate::verify_device_list(list, &self.user_id(), Some(&self.device_list))?;
        if verified.counter == self.device_list.counter {
            return Ok(false);
        }
        let me = self.device_id();
        let active = verified
            .devices
            .iter()
            .any(|d| d.device_id == me && d.status == DeviceStatus::Active);
        if !active {
            return Err(Error::InvalidRecord {
                what: "device list",
                reason: "the list revokes or omits this device",
            });
        }
        self.device_list = verified;
        Ok(true)
    }

    fn publish_device_list(
        &mut self,
        entries: Vec<safemeet_proto::identity::DeviceListEntry>,
        now: Timestamp,
    ) -> Result<(), Error> {
        let counter = self
            .device_list
            .counter
            .checked_add(1)
            .ok_or(Error::InvalidRecord {
                what: "device list",
                reason: "counter exhausted",
            })?;
        let list = certificate::issue_device_list(self.master()?, counter, entries, now)?;
        self.device_list =
            certificate::verify_device_list(&list, &self.user_id(), Some(&self.device_list))?;
        Ok(())
    }

    /// Signs a new version of the profile (counter one up) with this
    /// display name and these e-mail addresses. Only with the master key.
    pub fn update_profile(
        &mut self,
        display_name: safemeet_proto::DisplayName,
        emails: Vec<safemeet_proto::Email>,
        now: Timestamp,
    ) -> Result<(), Error> {
        let old = &self.profile;
        let counter = old.counter.checked_add(1).ok_or(Error::InvalidRecord {
            what: "profile",
            reason: "counter exhausted",
        })?;
        let profile = Profile {
            version: certificate::RECORD_VERSION,
            user_id: self.user_id(),
            counter,
            username: old.username.clone(),
            display_name,
            emails,
            updated_at: now,
        };
        let signed = certificate::sign_profile(self.master()?, &profile)?;
        self.profile = certificate::verify_profile(&signed, &self.user_id(), Some(&self.profile))?;
        Ok(())
    }

    /// Adopts a newer profile of this user (signed on another of its
    /// devices); whether it was newer.
    pub fn accept_profile(&mut self, signed: &Signed<Profile>) -> Result<bool, Error> {
        let verified = certificate::verify_profile(signed, &self.user_id(), Some(&self.profile))?;
        if verified.counter == self.profile.counter {
            return Ok(false);
        }
        self.profile = verified;
        Ok(true)
    }

    /// Encodes the account, secrets included, for sealed storage.
    pub fn to_record(&self) -> Result<Zeroizing<Vec<u8>>, Error> {
        let pickle = Zeroizing::new(
            serde_json::to_string(&self.device.olm.pickle())
                .map_err(|e| safemeet_proto::EncodeError::Serialize(e.to_string()))?,
        );
        let record = AccountRecord {
            version: 2,
            user_id: *self.user.as_bytes(),
            master_secret: self.master.as_ref().map(|m| *m.secret_bytes()),
            olm_pickle: pickle.to_string(),
            libp2p_keypair: self
                .device
                .libp2p
                .to_protobuf_encoding()
                .map_err(|e| safemeet_proto::EncodeError::Serialize(e.to_string()))?,
            mailbox_secret: *self.device.mailbox.to_bytes(),
            certificate: self.certificate.signed().to_bytes()?,
            device_list: self.device_list.signed().to_bytes()?,
            profile: self.profile.signed().to_bytes()?,
        };
        Ok(codec::encode_secret(&record, MAX_ACCOUNT_RECORD_BYTES)?)
    }

    /// Restores an account from [`Account::to_record`] bytes, re-verifying
    /// every signed record, that every device key matches the certificate,
    /// and that the device list holds this certificate as active.
    pub fn from_record(bytes: &[u8]) -> Result<Self, Error> {
        let record: AccountRecord = match bytes.first() {
            Some(1) => {
                let v1: AccountRecordV1 = codec::decode(bytes, MAX_ACCOUNT_RECORD_BYTES)?;
                let master = MasterKey::from_secret_bytes(&v1.master_secret);
                AccountRecord {
                    version: 2,
                    user_id: *master.user_id().as_bytes(),
                    master_secret: Some(v1.master_secret),
                    olm_pickle: v1.olm_pickle.clone(),
                    libp2p_keypair: v1.libp2p_keypair.clone(),
                    mailbox_secret: v1.mailbox_secret,
                    certificate: v1.certificate.clone(),
                    device_list: v1.device_list.clone(),
                    profile: v1.profile.clone(),
                }
            }
            Some(2) => codec::decode(bytes, MAX_ACCOUNT_RECORD_BYTES)?,
            other => {
                return Err(Error::UnsupportedVersion {
                    what: "account record",
                    version: other.copied().unwrap_or(0),
                });
            }
        };
        let user = UserId::from_bytes(record.user_id);
        let master = record
            .master_secret
            .as_ref()
            .map(MasterKey::from_secret_bytes);
        if master.as_ref().is_some_and(|m| m.user_id() != user) {
            return Err(Error::InvalidRecord {
                what: "account record",
                reason: "the master key is not the user's",
            });
        }
        let pickle: AccountPickle = serde_json::from_str(&record.olm_pickle)
            .map_err(|e| safemeet_proto::DecodeError::Malformed(e.to_string()))?;
        let device = DeviceKeys {
            olm: OlmAccount::from_pickle(pickle),
            libp2p: Keypair::from_protobuf_encoding(&record.libp2p_keypair)
                .map_err(|e| safemeet_proto::DecodeError::Malformed(e.to_string()))?,
            mailbox: Ed25519SecretKey::from_slice(&record.mailbox_secret),
        };
        let certificate = certificate::verify_device_certificate(
            &Signed::from_bytes(&record.certificate)?,
            &user,
        )?;
        let mismatch = |reason| Error::InvalidRecord {
            what: "account record",
            reason,
        };
        if certificate.device_id != device.device_id() {
            return Err(mismatch("device keys do not match the certificate"));
        }
        if certificate.peer_id != device.peer_id().to_bytes() {
            return Err(mismatch("libp2p key does not match the certificate"));
        }
        if certificate.curve25519_key != *device.olm.curve25519_key().as_bytes() {
            return Err(mismatch(
                "Olm Curve25519 key does not match the certificate",
            ));
        }
        if certificate.mailbox_key != *device.mailbox.public_key().as_bytes() {
            return Err(mismatch("mailbox key does not match the certificate"));
        }
        let device_list = certificate::verify_device_list(
            &Signed::from_bytes(&record.device_list)?,
            &user,
            None,
        )?;
        let cert_hash = certificate::certificate_hash(certificate.signed())?;
        let listed = device_list.devices.iter().any(|d| {
            d.device_id == certificate.device_id
                && d.certificate_hash == cert_hash
                && d.status == DeviceStatus::Active
        });
        if !listed {
            return Err(mismatch("this device is not active in the device list"));
        }
        let profile =
            certificate::verify_profile(&Signed::from_bytes(&record.profile)?, &user, None)?;
        Ok(Self {
            user,
            master,
            device,
            certificate,
            device_list,
            profile,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

    use super::*;

    fn alice() -> Account {
        Account::create(
            Username::new("alice").unwrap(),
            DisplayName::new("Alice").unwrap(),
            vec![],
            Timestamp::from_millis(1_700_000_000_000).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn version_1_records_still_open() {
        let account = alice();
        let v2 = Account::from_record(&account.to_record().unwrap()).unwrap();
        let v1 = AccountRecordV1 {
            version: 1,
            master_secret: *account.master().unwrap().secret_bytes(),
            olm_pickle: serde_json::to_string(&account.device.olm.pickle()).unwrap(),
            libp2p_keypair: account.device.libp2p.to_protobuf_encoding().unwrap(),
            mailbox_secret: *account.device.mailbox.to_bytes(),
            certificate: account.certificate().to_bytes().unwrap(),
            device_list: account.device_list().signed().to_bytes().unwrap(),
            profile: account.profile().signed().to_bytes().unwrap(),
        };
        let bytes = codec::encode_secret(&v1, MAX_ACCOUNT_RECORD_BYTES).unwrap();
        let opened = Account::from_record(&bytes).unwrap();
        assert_eq!(opened.user_id(), account.user_id());
        assert_eq!(opened.device_id(), v2.device_id());
        assert!(opened.has_master_key());
    }

    #[test]
    fn a_linked_device_record_has_no_master_key() {
        let mut first = alice();
        let second = first
            .link_new_device(Timestamp::from_millis(1_700_000_000_001).unwrap())
            .unwrap();
        let reopened = Account::from_record(&second.to_record().unwrap()).unwrap();
        assert!(!reopened.has_master_key());
        assert_eq!(reopened.user_id(), first.user_id());
        assert_eq!(reopened.device_list().counter, 2);
    }

    #[test]
    fn unknown_record_versions_are_refused() {
        let mut bytes = alice().to_record().unwrap().to_vec();
        bytes[0] = 9;
        assert!(matches!(
            Account::from_record(&bytes),
            Err(Error::UnsupportedVersion { version: 9, .. })
        ));
        assert!(Account::from_record(&[]).is_err());
    }
}
