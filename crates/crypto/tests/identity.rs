//! Device certificates, device lists and profiles: valid ones verify, and
//! each kind of bad one is refused with its own error.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use proptest::prelude::*;
use safemeet_crypto::Error;
use safemeet_crypto::account::Account;
use safemeet_crypto::certificate::{self, DEVICE_CERTIFICATE_CONTEXT, DEVICE_LIST_CONTEXT};
use safemeet_crypto::identity::{DeviceKeys, MasterKey};
use safemeet_proto::identity::{DeviceCertificate, DeviceList, Profile, Signed};
use safemeet_proto::{DeviceId, DisplayName, Email, Timestamp, UserId, Username, codec};

fn now() -> Timestamp {
    Timestamp::from_millis(1_700_000_000_000).unwrap()
}

fn account(name: &str) -> Account {
    Account::create(
        Username::new(name).unwrap(),
        DisplayName::new(format!("{name} display")).unwrap(),
        vec![Email::new(format!("{name}@example.org")).unwrap()],
        now(),
    )
    .unwrap()
}

/// A certificate body with an all-zero signature.
fn unsigned(cert: &DeviceCertificate) -> Signed<DeviceCertificate> {
    Signed::from_parts(codec::encode(cert).unwrap(), [0; 64])
}

#[test]
fn a_fresh_account_verifies() {
    let alice = account("alice");
    let cert =
        certificate::verify_device_certificate(alice.certificate(), &alice.user_id()).unwrap();
    assert_eq!(cert.user_id, alice.user_id());
    assert_eq!(cert.device_id, alice.device_id());
    assert_eq!(cert.peer_id, alice.peer_id().to_bytes());
    let list =
        certificate::verify_device_list(alice.device_list().signed(), &alice.user_id(), None)
            .unwrap();
    assert_eq!(list.devices.len(), 1);
    assert_eq!(list.devices[0].device_id, alice.device_id());
    assert_eq!(
        list.devices[0].certificate_hash,
        certificate::certificate_hash(alice.certificate()).unwrap()
    );
    let profile =
        certificate::verify_profile(alice.profile().signed(), &alice.user_id(), None).unwrap();
    assert_eq!(profile.username.as_str(), "alice");
}

#[test]
fn certificate_for_another_user_is_a_user_mismatch() {
    let alice = account("alice");
    let bob = account("bob");
    assert!(matches!(
        certificate::verify_device_certificate(alice.certificate(), &bob.user_id()),
        Err(Error::UserMismatch { .. })
    ));
}

#[test]
fn tampered_certificate_is_a_bad_signature() {
    let alice = account("alice");
    let mut body = alice.certificate().body.clone();
    // Swap in another peer id of the same length: still decodes, no longer signed.
    let mallory = DeviceKeys::generate();
    let mut cert: DeviceCertificate = codec::decode(&body, 16_384).unwrap();
    cert.peer_id = mallory.peer_id().to_bytes();
    body = codec::encode(&cert).unwrap();
    let forged = Signed::from_parts(body, alice.certificate().signature);
    assert!(matches!(
        certificate::verify_device_certificate(&forged, &alice.user_id()),
        Err(Error::BadSignature { .. })
    ));
    // A flipped signature bit is refused too.
    let mut sig = alice.certificate().signature;
    sig[10] ^= 1;
    let forged = Signed::from_parts(alice.certificate().body.clone(), sig);
    assert!(matches!(
        certificate::verify_device_certificate(&forged, &alice.user_id()),
        Err(Error::BadSignature { .. })
    ));
}

#[test]
fn mallory_cannot_certify_a_device_for_alice() {
    let alice = account("alice");
    let mallory_master = MasterKey::generate();
    let mallory_device = DeviceKeys::generate();
    // Mallory's own, valid certificate...
    let cert =
        certificate::issue_device_certificate(&mallory_master, &mallory_device, now()).unwrap();
    // ...relabelled as Alice's: the signature is not Alice's.
    let mut body: DeviceCertificate = cert.decode_body().unwrap();
    body.user_id = alice.user_id();
    let relabelled = Signed::from_parts(codec::encode(&body).unwrap(), cert.signature);
    assert!(matches!(
        certificate::verify_device_certificate(&relabelled, &alice.user_id()),
        Err(Error::BadSignature { .. })
    ));
    assert!(matches!(
        certificate::verify_device_certificate(&unsigned(&body), &alice.user_id()),
        Err(Error::BadSignature { .. })
    ));
}

#[test]
fn device_id_must_match_the_device_key() {
    let master = MasterKey::generate();
    let device = DeviceKeys::generate();
    let good = certificate::issue_device_certificate(&master, &device, now()).unwrap();
    assert!(certificate::verify_device_certificate(&good, &master.user_id()).is_ok());

    // Correctly signed by the master key, but internally inconsistent.
    let mut cert = good.decode_body().unwrap();
    cert.device_id = DeviceId::from_bytes([7; 16]);
    let resigned = resign(&master, &cert);
    assert!(matches!(
        certificate::verify_device_certificate(&resigned, &master.user_id()),
        Err(Error::DeviceIdMismatch { .. })
    ));

    cert = good.decode_body().unwrap();
    cert.version = 2;
    assert!(matches!(
        certificate::verify_device_certificate(&resign(&master, &cert), &master.user_id()),
        Err(Error::UnsupportedVersion { .. })
    ));

    cert = good.decode_body().unwrap();
    cert.peer_id = vec![1, 2, 3];
    assert!(matches!(
        certificate::verify_device_certificate(&resign(&master, &cert), &master.user_id()),
        Err(Error::InvalidPeerId)
    ));
}

/// Re-signs a modified certificate with `master`, using the documented
/// signing rule (`context ‖ 0 ‖ body`) through vodozemac's Ed25519.
fn resign(master: &MasterKey, cert: &DeviceCertificate) -> Signed<DeviceCertificate> {
    let body = codec::encode(cert).unwrap();
    let sig = sign_with(master, DEVICE_CERTIFICATE_CONTEXT, &body);
    Signed::from_parts(body, sig)
}

#[test]
fn signatures_do_not_cross_record_kinds() {
    // A valid certificate body signed by the right master key, but under the
    // device-list context: not a certificate signature.
    let master = MasterKey::generate();
    let device = DeviceKeys::generate();
    let cert = certificate::issue_device_certificate(&master, &device, now()).unwrap();
    let wrong_context = sign_with(&master, DEVICE_LIST_CONTEXT, &cert.body);
    assert!(matches!(
        certificate::verify_device_certificate(
            &Signed::<DeviceCertificate>::from_parts(cert.body.clone(), wrong_context),
            &master.user_id()
        ),
        Err(Error::BadSignature { .. })
    ));
    // And with the right context the same body verifies.
    let right = sign_with(&master, DEVICE_CERTIFICATE_CONTEXT, &cert.body);
    assert!(
        certificate::verify_device_certificate(
            &Signed::from_parts(cert.body.clone(), right),
            &master.user_id()
        )
        .is_ok()
    );
}

fn sign_with(master: &MasterKey, context: &[u8], body: &[u8]) -> [u8; 64] {
    let secret = vodozemac::Ed25519SecretKey::from_slice(&master.secret_bytes());
    let mut msg = context.to_vec();
    msg.push(0);
    msg.extend_from_slice(body);
    secret.sign(&msg).to_bytes()
}

#[test]
fn invalid_device_key_is_refused() {
    let master = MasterKey::generate();
    let device = DeviceKeys::generate();
    let good = certificate::issue_device_certificate(&master, &device, now()).unwrap();
    // Find 32 bytes that are not an Ed25519 point.
    let bad_key = (0u8..=255)
        .map(|b| {
            let mut k = [0u8; 32];
            k[0] = b;
            k[31] = 0x7f;
            k
        })
        .find(|k| vodozemac::Ed25519PublicKey::from_slice(k).is_err())
        .expect("some byte strings are not points");
    let mut cert = good.decode_body().unwrap();
    cert.ed25519_key = bad_key;
    cert.device_id = safemeet_crypto::identity::device_id_for(&bad_key);
    assert!(matches!(
        certificate::verify_device_certificate(&resign(&master, &cert), &master.user_id()),
        Err(Error::InvalidKey { .. })
    ));
}

#[test]
fn device_lists_only_move_forward() {
    let master = MasterKey::generate();
    let user = master.user_id();
    let d1 = DeviceKeys::generate();
    let c1 = certificate::issue_device_certificate(&master, &d1, now()).unwrap();
    let e1 = certificate::active_entry(&c1).unwrap();
    let v1 = certificate::issue_device_list(&master, 1, vec![e1.clone()], now()).unwrap();
    let d2 = DeviceKeys::generate();
    let c2 = certificate::issue_device_certificate(&master, &d2, now()).unwrap();
    let v2 = certificate::issue_device_list(
        &master,
        2,
        vec![e1.clone(), certificate::active_entry(&c2).unwrap()],
        now(),
    )
    .unwrap();

    let accepted1 = certificate::verify_device_list(&v1, &user, None).unwrap();
    let accepted2 = certificate::verify_device_list(&v2, &user, Some(&accepted1)).unwrap();
    assert!(matches!(
        certificate::verify_device_list(&v1, &user, Some(&accepted2)),
        Err(Error::StaleVersion {
            seen: 2,
            got: 1,
            ..
        })
    ));
    // Re-receiving the accepted version is fine; a different list with the same counter is not.
    assert!(certificate::verify_device_list(&v2, &user, Some(&accepted2)).is_ok());
    let fork = certificate::issue_device_list(&master, 2, vec![e1.clone()], now()).unwrap();
    assert!(matches!(
        certificate::verify_device_list(&fork, &user, Some(&accepted2)),
        Err(Error::ConflictingVersion { counter: 2, .. })
    ));
    // Duplicate devices are refused at issue time.
    assert!(matches!(
        certificate::issue_device_list(&master, 3, vec![e1.clone(), e1], now()),
        Err(Error::InvalidRecord { .. })
    ));
    // Another user's list is a mismatch.
    assert!(matches!(
        certificate::verify_device_list(&v2, &UserId::from_bytes([9; 32]), None),
        Err(Error::UserMismatch { .. })
    ));
}

#[test]
fn account_record_round_trips() {
    let alice = account("alice");
    let record = alice.to_record().unwrap();
    let back = Account::from_record(&record).unwrap();
    assert_eq!(back.user_id(), alice.user_id());
    assert_eq!(back.device_id(), alice.device_id());
    assert_eq!(back.peer_id(), alice.peer_id());
    assert_eq!(back.profile().display_name.as_str(), "alice display");
    assert_eq!(back.certificate(), alice.certificate());
}

#[test]
fn account_record_with_foreign_certificate_is_refused() {
    // Splice in a certificate that Alice's own master key issued for another
    // device: every signature checks, but the keys are not this device's.
    let alice = account("alice");
    let record = alice.to_record().unwrap();
    let own = alice.certificate().to_bytes().unwrap();
    let pos = record
        .windows(own.len())
        .position(|w| w == own.as_slice())
        .unwrap();
    let cert = alice.certificate().decode_body().unwrap();
    let other = DeviceKeys::generate();
    let mut foreign = cert.clone();
    foreign.ed25519_key = *other.olm.ed25519_key().as_bytes();
    foreign.device_id = safemeet_crypto::identity::device_id_for(&foreign.ed25519_key);
    // Same encoded length as the original, so the record stays well-formed.
    let master = master_of(&record);
    let foreign = resign(&master, &foreign).to_bytes().unwrap();
    assert_eq!(foreign.len(), own.len());
    let mut spliced = record.to_vec();
    spliced[pos..pos + own.len()].copy_from_slice(&foreign);
    assert!(matches!(
        Account::from_record(&spliced),
        Err(Error::InvalidRecord { reason, .. }) if reason.contains("certificate")
    ));

    // A certificate for this very device that the device list does not pin.
    let mut newer = cert;
    newer.created_at = Timestamp::from_millis(1_700_000_000_001).unwrap();
    let newer = resign(&master, &newer).to_bytes().unwrap();
    assert_eq!(newer.len(), own.len());
    let mut spliced = record.to_vec();
    spliced[pos..pos + own.len()].copy_from_slice(&newer);
    let err = Account::from_record(&spliced).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidRecord { reason, .. } if reason.contains("device list")),
        "{err:?}"
    );
}

/// The master key inside an account record: after the version byte, the
/// 32-byte user id and the option tag.
fn master_of(record: &[u8]) -> MasterKey {
    assert_eq!(record[33], 1, "the record holds a master key");
    MasterKey::from_secret_bytes(record[34..66].try_into().unwrap())
}

#[test]
fn profiles_only_move_forward() {
    let alice = account("alice");
    let user = alice.user_id();
    let master = master_of(&alice.to_record().unwrap());
    let v1 = certificate::verify_profile(alice.profile().signed(), &user, None).unwrap();
    let mut p2 = v1.clone().into_record();
    p2.counter = 2;
    p2.display_name = DisplayName::new("Alice Two").unwrap();
    let v2 = certificate::verify_profile(
        &certificate::sign_profile(&master, &p2).unwrap(),
        &user,
        Some(&v1),
    )
    .unwrap();
    assert!(matches!(
        certificate::verify_profile(v1.signed(), &user, Some(&v2)),
        Err(Error::StaleVersion {
            seen: 2,
            got: 1,
            ..
        })
    ));
    let mut fork = p2.clone();
    fork.display_name = DisplayName::new("Not Alice").unwrap();
    assert!(matches!(
        certificate::verify_profile(
            &certificate::sign_profile(&master, &fork).unwrap(),
            &user,
            Some(&v2)
        ),
        Err(Error::ConflictingVersion { counter: 2, .. })
    ));
    // An accepted record of another user is a caller bug, reported as such.
    let bob = account("bob");
    let bob_v1 = certificate::verify_profile(bob.profile().signed(), &bob.user_id(), None).unwrap();
    assert!(matches!(
        certificate::verify_profile(v2.signed(), &user, Some(&bob_v1)),
        Err(Error::UserMismatch { .. })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn mutated_records_never_verify_or_panic(idx in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let alice = account("alice");
        let user = alice.user_id();
        let mut bytes = alice.certificate().to_bytes().unwrap();
        let i = idx.index(bytes.len());
        prop_assume!(bytes[i] != byte);
        bytes[i] = byte;
        if let Ok(s) = Signed::<DeviceCertificate>::from_bytes(&bytes) {
            prop_assert!(certificate::verify_device_certificate(&s, &user).is_err());
        }
        let mut bytes = alice.device_list().signed().to_bytes().unwrap();
        let i = idx.index(bytes.len());
        prop_assume!(bytes[i] != byte);
        bytes[i] = byte;
        if let Ok(s) = Signed::<DeviceList>::from_bytes(&bytes) {
            prop_assert!(certificate::verify_device_list(&s, &user, None).is_err());
        }
        let mut record = alice.to_record().unwrap().to_vec();
        let i = idx.index(record.len());
        record[i] ^= byte | 1;
        let _ = Account::from_record(&record);
    }

    #[test]
    fn random_records_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Account::from_record(&bytes);
        if let Ok(s) = Signed::<DeviceCertificate>::from_bytes(&bytes) {
            let _ = certificate::verify_device_certificate(&s, &UserId::from_bytes([1; 32]));
        }
        if let Ok(s) = Signed::<DeviceList>::from_bytes(&bytes) {
            let _ = certificate::verify_device_list(&s, &UserId::from_bytes([1; 32]), None);
        }
        if let Ok(s) = Signed::<Profile>::from_bytes(&bytes) {
            let _ = certificate::verify_profile(&s, &UserId::from_bytes([1; 32]), None);
        }
    }
}

#[test]
fn a_tombstone_speaks_only_for_the_account_whose_master_key_signed_it() {
    let alice = account("alice");
    let mallory = account("mallory");
    let tombstone = alice.sign_tombstone(now()).unwrap();
    let read = certificate::verify_tombstone(&tombstone, &alice.user_id()).unwrap();
    assert_eq!(read.user_id, alice.user_id());
    // Sent by someone else, it names another account than theirs.
    assert!(certificate::verify_tombstone(&tombstone, &mallory.user_id()).is_err());
    // Mallory's master key signing a tombstone that names Alice: refused.
    let forged_body = safemeet_proto::identity::AccountTombstone {
        version: 1,
        user_id: alice.user_id(),
        deleted_at: now(),
    };
    let mallory_master = MasterKey::from_secret_bytes(&mallory.master_secret().unwrap());
    let forged = certificate::sign_tombstone(&mallory_master, &forged_body).unwrap();
    assert!(certificate::verify_tombstone(&forged, &alice.user_id()).is_err());
    // A signature made for another purpose (a profile) does not pass as one.
    let profile = alice.profile().signed().clone();
    let reused = Signed::from_parts(codec::encode(&forged_body).unwrap(), profile.signature);
    assert!(certificate::verify_tombstone(&reused, &alice.user_id()).is_err());
}
