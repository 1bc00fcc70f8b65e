//! Recording SAS verification results.

use safemeet_proto::identity::{DeviceCertificate, DeviceStatus, Signed, UserTrust};
use safemeet_proto::{DeviceId, Timestamp, UserId};
use safemeet_store::{Keyspace, Store};

use super::CryptoMachine;
use super::records::{self, DeviceRecord, RECORD_VERSION, name};
use crate::Error;
use crate::verification::{DeviceIdentity, SasFlow};

impl<S: Store> CryptoMachine<S> {
    /// The identity of a known, active device, to start a SAS verification with.
    pub fn device_identity(&mut self, id: &DeviceId) -> Result<DeviceIdentity, Error> {
        let info = self
            .device(id)?
            .ok_or(Error::UnknownDevice { device: *id })?;
        if matches!(info.status, Some(DeviceStatus::Revoked(_))) {
            return Err(Error::RevokedDevice { device: *id });
        }
        let cert = info.certificate.decode_body()?;
        Ok(DeviceIdentity {
            user_id: cert.user_id,
            device_id: cert.device_id,
            ed25519_key: cert.ed25519_key,
        })
    }

    /// This device's identity, for SAS verification.
    pub fn own_identity(&self) -> DeviceIdentity {
        let cert = self.account.verified_certificate();
        DeviceIdentity {
            user_id: cert.user_id,
            device_id: cert.device_id,
            ed25519_key: cert.ed25519_key,
        }
    }

    /// What this user trusts of `user` now: each of `devices` whose
    /// certificate is held, pinned by its hash (for cross-signing).
    pub fn user_trust(
        &mut self,
        user: &UserId,
        devices: &[DeviceId],
        now: Timestamp,
    ) -> Result<UserTrust, Error> {
        let mut pinned = Vec::with_capacity(devices.len());
        for id in devices {
            if let Some(entry) = self.load_device(id)?
                && entry.cert.user_id == *user
            {
                pinned.push((*id, entry.cert_hash));
            }
        }
        Ok(UserTrust {
            version: crate::certificate::RECORD_VERSION,
            truster: self.account.user_id(),
            user_id: *user,
            devices: pinned,
            verified_at: now,
        })
    }

    /// Signs `trust` with the master key (only on the device that holds it).
    pub fn sign_user_trust(&self, trust: &UserTrust) -> Result<Signed<UserTrust>, Error> {
        self.account.sign_user_trust(trust)
    }

    /// Takes in trust signed by this user's master key: each device it
    /// names whose held certificate has the pinned hash is marked
    /// verified. Returns how many were.
    pub fn accept_user_trust(
        &mut self,
        signed: &Signed<UserTrust>,
        now: Timestamp,
    ) -> Result<usize, Error> {
        let trust = crate::certificate::verify_user_trust(signed, &self.account.user_id())?;
        self.mark_trusted(&trust, now)
    }

    /// Marks verified each device `trust` names whose held certificate has
    /// the pinned hash (trust this device established itself, by SAS or an
    /// invite scanned in person). Returns how many were.
    pub fn mark_trusted(&mut self, trust: &UserTrust, now: Timestamp) -> Result<usize, Error> {
        self.check_usable()?;
        let mut batch = self.store.batch();
        let mut marked = 0;
        for (id, hash) in &trust.devices {
            let Some(entry) = self.load_device(id)? else {
                continue;
            };
            if entry.cert_hash != *hash || entry.cert.user_id != trust.user_id {
                continue;
            }
            let certificate = entry.cert.signed().clone();
            if let Some(e) = self.devices.devices.get_mut(id) {
                e.verified_at = Some(now);
            }
            stage_verified(&self.store, &mut batch, id, &certificate, now)?;
            marked += 1;
        }
        self.commit(batch, true)?;
        Ok(marked)
    }

    /// Records the result of a finished SAS verification: the device is
    /// marked verified. The flow must be done, and the keys it verified
    /// must be the ones this machine holds for that device.
    pub fn mark_verified(&mut self, flow: &SasFlow, now: Timestamp) -> Result<(), Error> {
        self.check_usable()?;
        let verified = flow.verified_device().ok_or(Error::InvalidRecord {
            what: "verification",
            reason: "the verification is not finished",
        })?;
        let held = self.device_identity(&verified.device_id)?;
        if held != *verified {
            return Err(Error::SenderMismatch {
                reason: "the verified keys are not the keys held for this device",
            });
        }
        let Some(entry) = self.devices.devices.get_mut(&verified.device_id) else {
            return Err(Error::UnknownDevice {
                device: verified.device_id,
            });
        };
        entry.verified_at = Some(now);
        let mut batch = self.store.batch();
        stage_verified(
            &self.store,
            &mut batch,
            &verified.device_id,
            entry.cert.signed(),
            now,
        )?;
        self.commit(batch, true)
    }
}

/// Stages a device's record as verified at `now`.
fn stage_verified<S: Store>(
    store: &crate::EncryptedStore<S>,
    batch: &mut crate::EncryptedBatch,
    id: &DeviceId,
    certificate: &Signed<DeviceCertificate>,
    now: Timestamp,
) -> Result<(), Error> {
    let rec = DeviceRecord {
        version: RECORD_VERSION,
        certificate: certificate.to_bytes()?,
        verified_at: Some(now),
    };
    store.batch_put(
        batch,
        Keyspace::Devices,
        &name::device(id),
        &records::encode(&rec)?,
    )
}
