//! Device certificates, device lists and profiles: valid ones verify, and
//! each kind of bad one is refused with its own error.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use proptest::prelude::*;
use safemeet_crypto::Error;
use safemeet_crypto::account::Account;
use safemeet_crypto::certificate::{self, DEVICE_CERTIFICATE_CONTEXT};
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
    let secret = vodozemac::Ed25519SecretKey::from_slice(&master.secret_bytes());
    let mut msg = DEVICE_CERTIFICATE_CONTEXT.to_vec();
    msg.push(0);
    msg.extend_from_slice(&body);
    Signed::from_parts(body, secret.sign(&msg).to_bytes())
}

#[test]
fn signatures_do_not_cross_record_kinds() {
    // A device-list signature over the same bytes is not a certificate signature.
    let alice = account("alice");
    let list = alice.device_list().signed();
    let as_cert: Signed<DeviceCertificate> = Signed::from_parts(list.body.clone(), list.signature);
    assert!(certificate::verify_device_certificate(&as_cert, &alice.user_id()).is_err());
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
    // Splice Bob's certificate into Alice's record: the keys no longer match.
    let alice = account("alice");
    let bob = account("bob");
    let a = alice.to_record().unwrap();
    let b_cert = bob.certificate().to_bytes().unwrap();
    let a_cert = alice.certificate().to_bytes().unwrap();
    let pos = a
        .windows(a_cert.len())
        .position(|w| w == a_cert.as_slice())
        .unwrap();
    assert_eq!(a_cert.len(), b_cert.len());
    let mut spliced = a.to_vec();
    spliced[pos..pos + a_cert.len()].copy_from_slice(&b_cert);
    assert!(Account::from_record(&spliced).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
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
