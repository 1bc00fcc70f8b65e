//! Recording SAS verification results.

use safemeet_proto::identity::DeviceStatus;
use safemeet_proto::{DeviceId, Timestamp};
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
        let rec = DeviceRecord {
            version: RECORD_VERSION,
            certificate: entry.cert.signed().to_bytes()?,
            verified_at: Some(now),
        };
        let mut batch = self.store.batch();
        self.store.batch_put(
            &mut batch,
            Keyspace::Devices,
            &name::device(&verified.device_id),
            &records::encode(&rec)?,
        )?;
        self.commit(batch, true)
    }
}
