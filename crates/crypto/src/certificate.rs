//! Signing and verifying identity records.
//!
//! Every record is signed by the user's master key over
//! `context ‖ 0x00 ‖ body`, where `body` is the record's canonical encoding
//! and `context` names the kind of record. Verification checks, in order:
//! the encoding, the format version, that the record names the expected
//! user, the signature under that user's key, and the record's internal
//! consistency. It returns a [`Verified`] record, the only way other crates
//! get one.

use std::collections::HashSet;
use std::ops::Deref;

use libp2p_identity::PeerId;
use safemeet_proto::identity::{
    DeviceCertificate, DeviceList, DeviceListEntry, DeviceStatus, OneTimeKey, Profile, RelayList,
    Signed, UserTrust,
};
use safemeet_proto::limits::{
    MAX_DEVICE_RELAYS, MAX_DEVICES_PER_USER, MAX_RECORD_BYTES, MAX_RELAY_ADDR_BYTES,
};
use safemeet_proto::{Timestamp, UserId, codec};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;
use crate::identity::{DeviceKeys, MasterKey, device_id_for, verify};

/// Signature context of device certificates.
pub const DEVICE_CERTIFICATE_CONTEXT: &[u8] = b"safemeet/v1/device-certificate";
/// Signature context of device lists.
pub const DEVICE_LIST_CONTEXT: &[u8] = b"safemeet/v1/device-list";
/// Signature context of profiles.
pub const PROFILE_CONTEXT: &[u8] = b"safemeet/v1/profile";
/// Signature context of one-time and fallback keys (signed by the device key).
pub const ONE_TIME_KEY_CONTEXT: &[u8] = b"safemeet/v1/one-time-key";

/// Signature context of cross-signed trust in another user's devices.
pub const USER_TRUST_CONTEXT: &[u8] = b"safemeet/v1/user-trust";
/// Domain separation for avatars.
pub const AVATAR_CONTEXT: &[u8] = b"safemeet/v1/avatar";
/// Domain separation for account tombstones.
pub const TOMBSTONE_CONTEXT: &[u8] = b"safemeet/v1/account-tombstone";

/// Signature context of relay lists (signed by the device key).
pub const RELAY_LIST_CONTEXT: &[u8] = b"safemeet/v1/relay-list";

/// The record format version this build writes and accepts.
pub const RECORD_VERSION: u8 = 1;

/// A record whose signature and consistency have been checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified<T> {
    record: T,
    signed: Signed<T>,
}

impl<T> Verified<T> {
    /// The signed form, to store or forward.
    pub fn signed(&self) -> &Signed<T> {
        &self.signed
    }

    /// The record.
    pub fn into_record(self) -> T {
        self.record
    }
}

impl<T> Deref for Verified<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.record
    }
}

fn sign<T: Serialize + DeserializeOwned>(
    master: &MasterKey,
    context: &[u8],
    record: &T,
) -> Result<Signed<T>, Error> {
    let body = codec::encode_limited(record, MAX_RECORD_BYTES)?;
    let signature = master.sign(context, &body);
    Ok(Signed::from_parts(body, signature))
}

fn check_signature<T: Serialize + DeserializeOwned>(
    signed: &Signed<T>,
    user: &UserId,
    context: &[u8],
    what: &'static str,
) -> Result<(), Error> {
    verify(
        user.as_bytes(),
        context,
        &signed.body,
        &signed.signature,
        what,
        "master",
    )
}

fn check_user(what: &'static str, expected: &UserId, found: &UserId) -> Result<(), Error> {
    if expected != found {
        return Err(Error::UserMismatch {
            what,
            expected: *expected,
            found: *found,
        });
    }
    Ok(())
}

fn check_version(what: &'static str, version: u8) -> Result<(), Error> {
    if version != RECORD_VERSION {
        return Err(Error::UnsupportedVersion { what, version });
    }
    Ok(())
}

/// BLAKE3 hash of a signed certificate's bytes, as pinned in device lists.
pub fn certificate_hash(signed: &Signed<DeviceCertificate>) -> Result<[u8; 32], Error> {
    Ok(*blake3::hash(&signed.to_bytes()?).as_bytes())
}

/// Issues a certificate binding `device` to the master key's user.
pub fn issue_device_certificate(
    master: &MasterKey,
    device: &DeviceKeys,
    now: Timestamp,
) -> Result<Signed<DeviceCertificate>, Error> {
    let cert = DeviceCertificate {
        version: RECORD_VERSION,
        user_id: master.user_id(),
        device_id: device.device_id(),
        ed25519_key: *device.olm.ed25519_key().as_bytes(),
        curve25519_key: *device.olm.curve25519_key().as_bytes(),
        peer_id: device.peer_id().to_bytes(),
        mailbox_key: *device.mailbox.public_key().as_bytes(),
        created_at: now,
    };
    sign(master, DEVICE_CERTIFICATE_CONTEXT, &cert)
}

/// Verifies that `signed` is a valid certificate of a device of `user`.
pub fn verify_device_certificate(
    signed: &Signed<DeviceCertificate>,
    user: &UserId,
) -> Result<Verified<DeviceCertificate>, Error> {
    const WHAT: &str = "device certificate";
    let cert = signed.decode_body()?;
    check_version(WHAT, cert.version)?;
    check_user(WHAT, user, &cert.user_id)?;
    check_signature(signed, user, DEVICE_CERTIFICATE_CONTEXT, WHAT)?;
    let expected = device_id_for(&cert.ed25519_key);
    if cert.device_id != expected {
        return Err(Error::DeviceIdMismatch {
            expected,
            found: cert.device_id,
        });
    }
    PeerId::from_bytes(&cert.peer_id).map_err(|_| Error::InvalidPeerId)?;
    vodozemac::Ed25519PublicKey::from_slice(&cert.ed25519_key).map_err(|_| Error::InvalidKey {
        what: "device ed25519",
    })?;
    vodozemac::Ed25519PublicKey::from_slice(&cert.mailbox_key)
        .map_err(|_| Error::InvalidKey { what: "mailbox" })?;
    Ok(Verified {
        record: cert,
        signed: signed.clone(),
    })
}

/// Signs a device list.
pub fn issue_device_list(
    master: &MasterKey,
    counter: u64,
    devices: Vec<DeviceListEntry>,
    now: Timestamp,
) -> Result<Signed<DeviceList>, Error> {
    let list = DeviceList {
        version: RECORD_VERSION,
        user_id: master.user_id(),
        counter,
        issued_at: now,
        devices,
    };
    check_device_entries(&list)?;
    sign(master, DEVICE_LIST_CONTEXT, &list)
}

/// A device-list entry for an active device with this certificate.
pub fn active_entry(signed: &Signed<DeviceCertificate>) -> Result<DeviceListEntry, Error> {
    let cert = signed.decode_body()?;
    Ok(DeviceListEntry {
        device_id: cert.device_id,
        certificate_hash: certificate_hash(signed)?,
        status: DeviceStatus::Active,
    })
}

fn check_device_entries(list: &DeviceList) -> Result<(), Error> {
    const WHAT: &str = "device list";
    if list.devices.len() > MAX_DEVICES_PER_USER {
        return Err(Error::InvalidRecord {
            what: WHAT,
            reason: "too many devices",
        });
    }
    let mut seen = HashSet::new();
    if !list.devices.iter().all(|d| seen.insert(d.device_id)) {
        return Err(Error::InvalidRecord {
            what: WHAT,
            reason: "a device is listed twice",
        });
    }
    Ok(())
}

/// Verifies a device list of `user`. `accepted` is the newest list already
/// accepted for that user, if any: an older counter is [`Error::StaleVersion`],
/// the same counter with other content is [`Error::ConflictingVersion`].
pub fn verify_device_list(
    signed: &Signed<DeviceList>,
    user: &UserId,
    accepted: Option<&Verified<DeviceList>>,
) -> Result<Verified<DeviceList>, Error> {
    let verified = verify_counted(signed, user, accepted)?;
    check_device_entries(&verified)?;
    Ok(verified)
}

/// A signed record that carries a monotonic counter (device lists, profiles).
trait Counted: Serialize + DeserializeOwned + Clone {
    const WHAT: &'static str;
    const CONTEXT: &'static [u8];
    fn version(&self) -> u8;
    fn user_id(&self) -> &UserId;
    fn counter(&self) -> u64;
}

impl Counted for DeviceList {
    const WHAT: &'static str = "device list";
    const CONTEXT: &'static [u8] = DEVICE_LIST_CONTEXT;
    fn version(&self) -> u8 {
        self.version
    }
    fn user_id(&self) -> &UserId {
        &self.user_id
    }
    fn counter(&self) -> u64 {
        self.counter
    }
}

impl Counted for Profile {
    const WHAT: &'static str = "profile";
    const CONTEXT: &'static [u8] = PROFILE_CONTEXT;
    fn version(&self) -> u8 {
        self.version
    }
    fn user_id(&self) -> &UserId {
        &self.user_id
    }
    fn counter(&self) -> u64 {
        self.counter
    }
}

/// Decodes and checks version, user, signature and counter of a counted record.
fn verify_counted<T: Counted>(
    signed: &Signed<T>,
    user: &UserId,
    accepted: Option<&Verified<T>>,
) -> Result<Verified<T>, Error> {
    let record = signed.decode_body()?;
    check_version(T::WHAT, record.version())?;
    check_user(T::WHAT, user, record.user_id())?;
    check_signature(signed, user, T::CONTEXT, T::WHAT)?;
    if let Some(a) = accepted {
        // An accepted record of another user would make the comparison meaningless.
        check_user(T::WHAT, user, a.user_id())?;
        let (seen, got) = (a.counter(), record.counter());
        if got < seen {
            return Err(Error::StaleVersion {
                what: T::WHAT,
                seen,
                got,
            });
        }
        if got == seen && signed.body != a.signed.body {
            return Err(Error::ConflictingVersion {
                what: T::WHAT,
                counter: got,
            });
        }
    }
    Ok(Verified {
        record,
        signed: signed.clone(),
    })
}

/// Signs a profile.
pub fn sign_profile(master: &MasterKey, profile: &Profile) -> Result<Signed<Profile>, Error> {
    check_user("profile", &master.user_id(), &profile.user_id)?;
    sign(master, PROFILE_CONTEXT, profile)
}

/// Verifies a profile of `user`, refusing one older than `accepted` (as for
/// [`verify_device_list`]).
pub fn verify_profile(
    signed: &Signed<Profile>,
    user: &UserId,
    accepted: Option<&Verified<Profile>>,
) -> Result<Verified<Profile>, Error> {
    verify_counted(signed, user, accepted)
}

/// Signs this user's trust in another user's devices with the master key.
pub fn sign_user_trust(master: &MasterKey, trust: &UserTrust) -> Result<Signed<UserTrust>, Error> {
    check_user("user trust", &master.user_id(), &trust.truster)?;
    if trust.devices.len() > MAX_DEVICES_PER_USER {
        return Err(Error::InvalidRecord {
            what: "user trust",
            reason: "more devices than a user may have",
        });
    }
    sign(master, USER_TRUST_CONTEXT, trust)
}

/// Signs an avatar with its user's master key.
pub fn sign_avatar(
    master: &MasterKey,
    avatar: &safemeet_proto::identity::Avatar,
) -> Result<Signed<safemeet_proto::identity::Avatar>, Error> {
    sign(master, AVATAR_CONTEXT, avatar)
}

/// Checks an avatar: signed by the master key of the user it names, which
/// is `user`'s (its image's rules are checked as it decodes).
pub fn verify_avatar(
    signed: &Signed<safemeet_proto::identity::Avatar>,
    user: &UserId,
) -> Result<safemeet_proto::identity::Avatar, Error> {
    check_signature(signed, user, AVATAR_CONTEXT, "avatar")?;
    let avatar = signed.decode_body()?;
    check_version("avatar", avatar.version)?;
    check_user("avatar", user, &avatar.user_id)?;
    Ok(avatar)
}

/// Signs an account's tombstone with its master key.
pub fn sign_tombstone(
    master: &MasterKey,
    tombstone: &safemeet_proto::identity::AccountTombstone,
) -> Result<Signed<safemeet_proto::identity::AccountTombstone>, Error> {
    sign(master, TOMBSTONE_CONTEXT, tombstone)
}

/// Checks a tombstone: signed by the master key of the account it names,
/// which is `user`'s.
pub fn verify_tombstone(
    signed: &Signed<safemeet_proto::identity::AccountTombstone>,
    user: &UserId,
) -> Result<safemeet_proto::identity::AccountTombstone, Error> {
    check_signature(signed, user, TOMBSTONE_CONTEXT, "account tombstone")?;
    let tombstone = signed.decode_body()?;
    check_version("account tombstone", tombstone.version)?;
    check_user("account tombstone", user, &tombstone.user_id)?;
    Ok(tombstone)
}

/// Verifies a trust record signed by `truster`'s master key.
pub fn verify_user_trust(signed: &Signed<UserTrust>, truster: &UserId) -> Result<UserTrust, Error> {
    check_signature(signed, truster, USER_TRUST_CONTEXT, "user trust")?;
    let trust = signed.decode_body()?;
    check_version("user trust", trust.version)?;
    check_user("user trust", truster, &trust.truster)?;
    if trust.devices.len() > MAX_DEVICES_PER_USER {
        return Err(Error::InvalidRecord {
            what: "user trust",
            reason: "more devices than a user may have",
        });
    }
    Ok(trust)
}

/// Signs a one-time or fallback key with the device's Olm Ed25519 key.
pub fn sign_one_time_key(
    device: &DeviceKeys,
    key: &OneTimeKey,
) -> Result<Signed<OneTimeKey>, Error> {
    let body = codec::encode_limited(key, MAX_RECORD_BYTES)?;
    let signature = device
        .olm
        .sign(crate::identity::domain_message(ONE_TIME_KEY_CONTEXT, &body))
        .to_bytes();
    Ok(Signed::from_parts(body, signature))
}

/// Verifies a one-time key offered for `device`: the format version, that it
/// names that device, and the signature under the device's certified Olm
/// Ed25519 key. Only a key that passes may start an Olm session.
pub fn verify_one_time_key(
    signed: &Signed<OneTimeKey>,
    device: &Verified<DeviceCertificate>,
) -> Result<OneTimeKey, Error> {
    const WHAT: &str = "one-time key";
    let key = signed.decode_body()?;
    check_version(WHAT, key.version)?;
    if key.device_id != device.device_id {
        return Err(Error::InvalidRecord {
            what: WHAT,
            reason: "the key names another device",
        });
    }
    verify(
        &device.ed25519_key,
        ONE_TIME_KEY_CONTEXT,
        &signed.body,
        &signed.signature,
        WHAT,
        "device Ed25519",
    )?;
    Ok(key)
}

/// Signs a device's relay list with its Olm Ed25519 key.
pub fn sign_relay_list(device: &DeviceKeys, list: &RelayList) -> Result<Signed<RelayList>, Error> {
    check_relay_list(list)?;
    let body = codec::encode_limited(list, MAX_RECORD_BYTES)?;
    let signature = device
        .olm
        .sign(crate::identity::domain_message(RELAY_LIST_CONTEXT, &body))
        .to_bytes();
    Ok(Signed::from_parts(body, signature))
}

/// Verifies a relay list of `device`: the format version, that it names
/// that device, its size, and the signature under the device's certified
/// Olm Ed25519 key. The addresses are checked to be short; whether they
/// parse is the reader's to check.
pub fn verify_relay_list(
    signed: &Signed<RelayList>,
    device: &Verified<DeviceCertificate>,
) -> Result<RelayList, Error> {
    const WHAT: &str = "relay list";
    let list = signed.decode_body()?;
    check_version(WHAT, list.version)?;
    if list.device_id != device.device_id {
        return Err(Error::InvalidRecord {
            what: WHAT,
            reason: "the list names another device",
        });
    }
    check_relay_list(&list)?;
    verify(
        &device.ed25519_key,
        RELAY_LIST_CONTEXT,
        &signed.body,
        &signed.signature,
        WHAT,
        "device Ed25519",
    )?;
    Ok(list)
}

fn check_relay_list(list: &RelayList) -> Result<(), Error> {
    let invalid = |reason| Error::InvalidRecord {
        what: "relay list",
        reason,
    };
    if list.relays.len() > MAX_DEVICE_RELAYS {
        return Err(invalid("too many relays"));
    }
    if list.relays.iter().any(|r| r.len() > MAX_RELAY_ADDR_BYTES) {
        return Err(invalid("a relay address is too long"));
    }
    Ok(())
}
