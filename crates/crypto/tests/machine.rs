//! The crypto machine between two and three in-memory devices: DMs, rooms,
//! rotation, revocation, replay, tampering, forged senders, late keys,
//! unclean restarts and one-time keys.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

mod support;

use safemeet_crypto::Error;
use safemeet_crypto::machine::{
    DeviceTrust, ROTATION_MESSAGES, ROTATION_PERIOD_MS, Rotation, ToDeviceContent,
};
use safemeet_proto::envelope::{OlmMessageKind, RoomEnvelope, ToDeviceEnvelope};
use safemeet_proto::event::{Payload, RoomEvent, RoomKey, Sealed, SealedSender, ToDeviceEvent};
use safemeet_proto::identity::{DeviceCertificate, Signed};
use safemeet_proto::{Envelope, codec};
use support::*;
use vodozemac::megolm::{GroupSession, SessionConfig};

#[test]
fn dm_both_ways() {
    let (mut alice, mut bob) = pair();
    let members = [alice.user(), bob.user()];

    let sent = send(&mut alice, room(1), &members, "hello bob", T0);
    assert_eq!(sent.rotation, Some(Rotation::New));
    assert_eq!(shares_for(&sent, &bob).len(), 1);
    let got = deliver(&sent, &mut bob, T0).unwrap();
    assert_eq!(body(&got), "hello bob");
    assert_eq!(got.sender.user_id, alice.user());
    assert_eq!(got.sender.device_id, alice.device_id());
    assert_eq!(got.sender.trust, DeviceTrust::Unverified);
    assert_eq!(got.event_id, sent.event_id);

    // Bob answers on the Olm session Alice opened: no key claim needed.
    let reply = send(&mut bob, room(1), &members, "hi alice", T0 + 1);
    assert!(reply.no_session.is_empty());
    let got = deliver(&reply, &mut alice, T0 + 1).unwrap();
    assert_eq!(body(&got), "hi alice");
    assert_eq!(got.sender.user_id, bob.user());

    // Later messages need no new key share.
    let second = send(&mut alice, room(1), &members, "second", T0 + 2);
    assert!(second.key_shares.is_empty());
    assert_eq!(second.rotation, None);
    assert_eq!(body(&deliver(&second, &mut bob, T0 + 2).unwrap()), "second");
}

#[test]
fn three_member_room() {
    let mut a = Device::new("alice");
    let mut b = Device::new("bob");
    let mut c = Device::new("carol");
    introduce(&mut a, &mut b);
    introduce(&mut a, &mut c);
    introduce(&mut b, &mut c);
    connect(&mut a, &mut b);
    connect(&mut a, &mut c);
    connect(&mut b, &mut c);
    let members = [a.user(), b.user(), c.user()];

    let m1 = send(&mut a, room(2), &members, "from a", T0);
    assert_eq!(m1.key_shares.len(), 2);
    assert_eq!(body(&deliver(&m1, &mut b, T0).unwrap()), "from a");
    assert_eq!(body(&deliver(&m1, &mut c, T0).unwrap()), "from a");

    let m2 = send(&mut b, room(2), &members, "from b", T0 + 1);
    assert_eq!(body(&deliver(&m2, &mut a, T0 + 1).unwrap()), "from b");
    assert_eq!(body(&deliver(&m2, &mut c, T0 + 1).unwrap()), "from b");

    let m3 = send(&mut c, room(2), &members, "from c", T0 + 2);
    assert_eq!(body(&deliver(&m3, &mut a, T0 + 2).unwrap()), "from c");
    assert_eq!(body(&deliver(&m3, &mut b, T0 + 2).unwrap()), "from c");
}

#[test]
fn removed_member_decrypts_nothing_after_rotation() {
    let (mut a, mut b, mut c) = hub_of_three();

    let all = [a.user(), b.user(), c.user()];
    let before = send(&mut a, room(3), &all, "everyone", T0);
    deliver(&before, &mut b, T0).unwrap();
    deliver(&before, &mut c, T0).unwrap();

    // Carol leaves: the next message starts a new session she never gets.
    let members = [a.user(), b.user()];
    let after = send(&mut a, room(3), &members, "without carol", T0 + 1);
    assert_eq!(after.rotation, Some(Rotation::RecipientRemoved));
    assert_ne!(after.session_id, before.session_id);
    assert!(shares_for(&after, &c).is_empty());
    assert_eq!(
        body(&deliver(&after, &mut b, T0 + 1).unwrap()),
        "without carol"
    );
    let err = room_err(&mut c, &after, T0 + 1);
    assert!(matches!(err, Error::MissingRoomKey { .. }), "{err:?}");
    // The key she holds is for the old session only.
    let mut forged = room_envelope(&after.message);
    forged.session_id = before.session_id;
    assert!(c.machine.decrypt_room(&forged, ts(T0 + 1)).is_err());
}

#[test]
fn revoked_device_decrypts_nothing_new_and_is_refused_as_sender() {
    let mut alice = Device::new("alice");
    let bob_account = new_account("bob");
    let mut bob1 = Device::with_account("bob1", &bob_account, safemeet_store::MemoryStore::new());
    let bob2_account = bob1.machine.link_new_device(ts(T0)).unwrap();
    let mut bob2 = Device::with_account("bob2", &bob2_account, safemeet_store::MemoryStore::new());
    // Bob's devices and Alice learn the two-device list.
    let list = bob1.machine.account().device_list().signed().clone();
    let certs = vec![
        bob1.machine.account().certificate().clone(),
        bob2.machine.account().certificate().clone(),
    ];
    let update = alice.machine.add_device_list(&list, &certs).unwrap();
    assert_eq!(update.added.len(), 2);
    bob2.machine.add_device_list(&list, &certs).unwrap();
    let (la, ca) = identity_of(&alice);
    bob1.machine.add_device_list(&la, &ca).unwrap();
    bob2.machine.add_device_list(&la, &ca).unwrap();
    connect(&mut alice, &mut bob1);
    connect(&mut alice, &mut bob2);

    let members = [alice.user(), bob1.user()];
    let m1 = send(&mut alice, room(4), &members, "to both devices", T0);
    assert_eq!(m1.key_shares.len(), 2);
    assert_eq!(
        body(&deliver(&m1, &mut bob1, T0).unwrap()),
        "to both devices"
    );
    assert_eq!(
        body(&deliver(&m1, &mut bob2, T0).unwrap()),
        "to both devices"
    );

    // bob1 revokes bob2; Alice accepts the new list.
    bob1.machine
        .revoke_device(bob2.device_id(), ts(T0 + 1))
        .unwrap();
    let revoked_list = bob1.machine.account().device_list().signed().clone();
    let update = alice.machine.add_device_list(&revoked_list, &[]).unwrap();
    assert_eq!(update.revoked, vec![bob2.device_id()]);

    let m2 = send(
        &mut alice,
        room(4),
        &members,
        "bob2 must not read this",
        T0 + 2,
    );
    assert_eq!(m2.rotation, Some(Rotation::RecipientRemoved));
    assert!(shares_for(&m2, &bob2).is_empty());
    assert_eq!(
        body(&deliver(&m2, &mut bob1, T0 + 2).unwrap()),
        "bob2 must not read this"
    );
    let err = room_err(&mut bob2, &m2, T0 + 2);
    assert!(matches!(err, Error::MissingRoomKey { .. }), "{err:?}");

    // What bob2 still sends is refused by Alice.
    let from_revoked = send(&mut bob2, room(4), &members, "still here", T0 + 3);
    let err = deliver(&from_revoked, &mut alice, T0 + 3).unwrap_err();
    assert!(matches!(err, Error::RevokedDevice { .. }), "{err:?}");
    // And no new Olm session can be opened to it.
    let key = bob2
        .machine
        .claim_one_time_keys(1, ts(T0))
        .unwrap()
        .remove(0);
    let err = alice
        .machine
        .create_outbound_session(&bob2.device_id(), &key, ts(T0 + 3))
        .unwrap_err();
    assert!(matches!(err, Error::RevokedDevice { .. }), "{err:?}");
}

#[test]
fn replays_are_rejected() {
    let (mut alice, mut bob) = pair();
    let members = [alice.user(), bob.user()];
    let sent = send(&mut alice, room(5), &members, "once", T0);
    deliver(&sent, &mut bob, T0).unwrap();

    let err = room_err(&mut bob, &sent, T0);
    assert!(
        matches!(
            err,
            Error::Replay {
                index: 0,
                same_ciphertext: true
            }
        ),
        "{err:?}"
    );
    // The room key's Olm message again.
    let err = receive_to_device(shares_for(&sent, &bob)[0], &mut bob, T0).unwrap_err();
    assert!(matches!(err, Error::DuplicateOlmMessage), "{err:?}");
    // Replays are still refused after a restart: the table is in the store.
    let mut bob = bob.restart(true);
    let err = room_err(&mut bob, &sent, T0);
    assert!(matches!(err, Error::Replay { .. }), "{err:?}");
}

#[test]
fn tampered_and_truncated_ciphertext_is_rejected() {
    let (mut alice, mut bob) = pair();
    let members = [alice.user(), bob.user()];
    let sent = send(&mut alice, room(6), &members, "integrity", T0);
    let share = to_device_envelope(shares_for(&sent, &bob)[0]);

    // Olm: flip a byte in the middle, or cut the end.
    let mut bad = share.clone();
    let mid = bad.ciphertext.len() / 2;
    bad.ciphertext[mid] ^= 1;
    assert!(bob.machine.decrypt_to_device(&bad, ts(T0)).is_err());
    let mut cut = share.clone();
    cut.ciphertext.truncate(cut.ciphertext.len() - 3);
    assert!(bob.machine.decrypt_to_device(&cut, ts(T0)).is_err());
    // The genuine share still works afterwards.
    bob.machine.decrypt_to_device(&share, ts(T0)).unwrap();

    let env = room_envelope(&sent.message);
    for i in [0, 5, env.ciphertext.len() / 2, env.ciphertext.len() - 1] {
        let mut bad = env.clone();
        bad.ciphertext[i] ^= 0x40;
        let err = bob.machine.decrypt_room(&bad, ts(T0)).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Decryption { .. }
                    | Error::BadSignature { .. }
                    | Error::MissingRoomKey { .. }
                    | Error::Replay { .. }
            ),
            "byte {i}: {err:?}"
        );
    }
    let mut cut = env.clone();
    cut.ciphertext.truncate(40);
    assert!(bob.machine.decrypt_room(&cut, ts(T0)).is_err());
    // Untouched, it decrypts once.
    assert_eq!(
        body(&bob.machine.decrypt_room(&env, ts(T0)).unwrap()),
        "integrity"
    );
}

/// Mallory is a member with her own keys. She tries to pass messages off
/// as Alice's.
#[test]
fn forged_senders_are_rejected() {
    let mut alice = Device::new("alice");
    let mut bob = Device::new("bob");
    let mut mallory = Device::new("mallory");
    introduce(&mut alice, &mut bob);
    introduce(&mut mallory, &mut bob);
    introduce(&mut mallory, &mut alice);
    connect(&mut mallory, &mut bob);
    let members = [mallory.user(), bob.user()];
    // A real message gives Bob Mallory's session (bound to Mallory).
    let real = send(&mut mallory, room(7), &members, "hi, it's mallory", T0);
    deliver(&real, &mut bob, T0).unwrap();

    // 1. Megolm: Mallory's own session, Alice's certificate sealed inside.
    let mut group = GroupSession::new(SessionConfig::version_1());
    let session_id = session_id(&group.session_id());
    let key = RoomKey {
        version: 1,
        room_id: room(7),
        session_id,
        first_index: 0,
        session_key: group.session_key().to_bytes(),
        header: header_key().root(),
    };
    let share = raw_to_device(&mallory, &mut bob, &sealed_from(&mallory, key));
    bob.machine.decrypt_to_device(&share, ts(T0)).unwrap();
    let as_alice = |cert: &Signed<DeviceCertificate>, group: &mut GroupSession, lamport| {
        let sealed = Sealed {
            sender: SealedSender::Certificate(cert.clone()),
            payload: Payload::Room(RoomEvent {
                room_id: room(7),
                sender: alice.user(),
                sender_device: alice.device_id(),
                lamport,
                ts: ts(T0),
                content: text("I am alice"),
            }),
        };
        RoomEnvelope {
            topic: safemeet_proto::room::RoomTopic::from_bytes([9; 32]),
            session_id,
            ciphertext: group.encrypt(sealed.encode_padded().unwrap()).to_bytes(),
        }
    };
    let env = as_alice(alice.machine.account().certificate(), &mut group, 2);
    let err = bob.machine.decrypt_room(&env, ts(T0)).unwrap_err();
    assert!(matches!(err, Error::SenderMismatch { .. }), "{err:?}");
    // The same by certificate hash, as room messages name their sender.
    let sealed = Sealed {
        sender: SealedSender::CertificateHash(
            safemeet_crypto::certificate::certificate_hash(alice.machine.account().certificate())
                .unwrap(),
        ),
        payload: Payload::Room(RoomEvent {
            room_id: room(7),
            sender: alice.user(),
            sender_device: alice.device_id(),
            lamport: 5,
            ts: ts(T0),
            content: text("I am alice"),
        }),
    };
    let env = RoomEnvelope {
        topic: safemeet_proto::room::RoomTopic::from_bytes([9; 32]),
        session_id,
        ciphertext: group.encrypt(sealed.encode_padded().unwrap()).to_bytes(),
    };
    let err = bob.machine.decrypt_room(&env, ts(T0)).unwrap_err();
    assert!(matches!(err, Error::SenderMismatch { .. }), "{err:?}");

    // 2. Megolm: her own certificate, but the event names Alice.
    let env = as_alice(mallory.machine.account().certificate(), &mut group, 3);
    let err = bob.machine.decrypt_room(&env, ts(T0)).unwrap_err();
    assert!(matches!(err, Error::SenderMismatch { .. }), "{err:?}");

    // 3. Olm: a fresh session from Mallory's identity key, Alice's certificate inside.
    let forged = Sealed {
        sender: SealedSender::Certificate(alice.machine.account().certificate().clone()),
        payload: Payload::ToDevice(ToDeviceEvent::NewSession),
    };
    let env = raw_to_device(&mallory, &mut bob, &forged);
    let err = bob.machine.decrypt_to_device(&env, ts(T0)).unwrap_err();
    assert!(matches!(err, Error::SenderMismatch { .. }), "{err:?}");

    // 4. A certificate for Alice's user id that Alice's master key never signed.
    let mut fake = alice.machine.account().certificate().clone();
    fake.signature[0] ^= 1;
    let env = as_alice(&fake, &mut group, 4);
    let err = bob.machine.decrypt_room(&env, ts(T0)).unwrap_err();
    assert!(matches!(err, Error::BadSignature { .. }), "{err:?}");
}

/// A member who holds Alice's session key and forwards it as her own does
/// not capture the session: Alice's messages stay Alice's, and the key cannot
/// be moved to another room.
#[test]
fn a_forwarded_room_key_does_not_capture_the_session() {
    let mut alice = Device::new("alice");
    let mut bob = Device::new("bob");
    let mut mallory = Device::new("mallory");
    introduce(&mut alice, &mut bob);
    introduce(&mut mallory, &mut bob);
    connect(&mut alice, &mut bob);
    let members = [alice.user(), bob.user()];
    let sent = send(&mut alice, room(8), &members, "mine", T0);
    // Mallory got a copy of the key (a raw session stands in for it here)
    // and forwards it before Alice's own share reaches Bob.
    let group = GroupSession::new(SessionConfig::version_1());
    let mut alice_group = GroupSession::from_pickle(group.pickle());
    let key = |room_id| RoomKey {
        version: 1,
        room_id,
        session_id: session_id(&group.session_id()),
        first_index: 0,
        session_key: group.session_key().to_bytes(),
        header: header_key().root(),
    };
    let forwarded = raw_to_device(&mallory, &mut bob, &sealed_from(&mallory, key(room(8))));
    bob.machine.decrypt_to_device(&forwarded, ts(T0)).unwrap();
    let own = raw_to_device(&alice, &mut bob, &sealed_from(&alice, key(room(8))));
    bob.machine.decrypt_to_device(&own, ts(T0)).unwrap();
    let by_alice = Sealed {
        sender: SealedSender::Certificate(alice.machine.account().certificate().clone()),
        payload: Payload::Room(RoomEvent {
            room_id: room(8),
            sender: alice.user(),
            sender_device: alice.device_id(),
            lamport: 1,
            ts: ts(T0),
            content: text("really alice"),
        }),
    };
    let env = RoomEnvelope {
        topic: safemeet_proto::room::RoomTopic::from_bytes([9; 32]),
        session_id: session_id(&group.session_id()),
        ciphertext: alice_group
            .encrypt(by_alice.encode_padded().unwrap())
            .to_bytes(),
    };
    let got = bob.machine.decrypt_room(&env, ts(T0)).unwrap();
    assert_eq!(got.sender.user_id, alice.user());
    assert_eq!(body(&got), "really alice");
    // The same session offered for another room is refused.
    let moved = raw_to_device(&mallory, &mut bob, &sealed_from(&mallory, key(room(99))));
    let err = bob.machine.decrypt_to_device(&moved, ts(T0)).unwrap_err();
    assert!(matches!(err, Error::SessionConflict), "{err:?}");
    // Bytes that are no session key are refused.
    let mut garbled = key(room(8));
    garbled.session_key = vec![0; 229];
    let bad = raw_to_device(&mallory, &mut bob, &sealed_from(&mallory, garbled));
    assert!(bob.machine.decrypt_to_device(&bad, ts(T0)).is_err());
    // The machine itself never forwards a room key.
    let err = alice
        .machine
        .encrypt_to_device(
            bob.user(),
            bob.device_id(),
            ToDeviceEvent::RoomKey(key(room(8))),
            alice.machine.store().batch(),
            b"",
        )
        .unwrap_err();
    assert!(matches!(err, Error::UnexpectedPayload), "{err:?}");
    assert_eq!(body(&deliver(&sent, &mut bob, T0).unwrap()), "mine");
}

#[test]
fn joiner_gets_the_current_index_only() {
    let (mut a, b, mut c) = hub_of_three();
    let two = [a.user(), b.user()];
    let early: Vec<_> = (0..3)
        .map(|i| send(&mut a, room(9), &two, &format!("early {i}"), T0 + i))
        .collect();
    let three = [a.user(), b.user(), c.user()];
    let joined = send(&mut a, room(9), &three, "welcome carol", T0 + 10);
    assert_eq!(joined.rotation, None, "a join does not rotate");
    assert_eq!(joined.message_index, 3);
    assert_eq!(
        body(&deliver(&joined, &mut c, T0 + 10).unwrap()),
        "welcome carol"
    );
    for e in &early {
        let err = room_err(&mut c, e, T0 + 10);
        assert!(
            matches!(err, Error::UnknownMessageIndex { first_known: 3, .. }),
            "{err:?}"
        );
    }
}

#[test]
fn rotation_after_message_limit_and_age() {
    let mut a = Device::new("alice");
    let mut b = Device::new("bob");
    introduce(&mut a, &mut b);
    connect(&mut a, &mut b);
    let members = [a.user(), b.user()];
    let first = send(&mut a, room(10), &members, "0", T0);
    for i in 1..ROTATION_MESSAGES {
        let s = send(&mut a, room(10), &members, "n", T0 + i);
        assert_eq!(s.rotation, None);
        assert_eq!(s.session_id, first.session_id);
    }
    let next = send(&mut a, room(10), &members, "101st", T0 + 200);
    assert_eq!(next.rotation, Some(Rotation::MessageLimit));
    assert_eq!(next.message_index, 0);
    assert_eq!(shares_for(&next, &b).len(), 1);
    assert_eq!(body(&deliver(&next, &mut b, T0 + 200).unwrap()), "101st");

    let week = T0 + 200 + ROTATION_PERIOD_MS;
    let just_before = send(&mut a, room(10), &members, "6d23h", week - 1);
    assert_eq!(just_before.rotation, None);
    let aged = send(&mut a, room(10), &members, "a week on", week);
    assert_eq!(aged.rotation, Some(Rotation::Age));
    assert_ne!(aged.session_id, next.session_id);
}

#[test]
fn late_room_key_releases_held_messages() {
    let (mut alice, mut bob) = pair();
    let members = [alice.user(), bob.user()];
    let m1 = send(&mut alice, room(11), &members, "first", T0);
    let m2 = send(&mut alice, room(11), &members, "second", T0 + 1);
    // The messages arrive before the key, the first one twice (gossip and
    // a direct delivery, say): it is released once.
    for m in [&m1, &m2, &m1] {
        let err = room_err(&mut bob, m, T0 + 2);
        assert!(
            matches!(err, Error::MissingRoomKey { held: true }),
            "{err:?}"
        );
    }
    // Held messages survive a restart.
    let mut bob = bob.restart(true);
    let got = receive_to_device(shares_for(&m1, &bob)[0], &mut bob, T0 + 3).unwrap();
    assert!(matches!(got.content, ToDeviceContent::RoomKey { .. }));
    let texts: Vec<String> = got
        .released
        .iter()
        .filter_map(|r| r.as_ref().ok().map(body))
        .collect();
    assert_eq!(texts, ["first", "second"]);
    assert!(
        matches!(
            got.released.last(),
            Some(Err(Error::Replay {
                same_ciphertext: true,
                ..
            }))
        ),
        "the held copy is a replay: {:?}",
        got.released.last()
    );
    // Released means decrypted: a second delivery is a replay.
    let err = room_err(&mut bob, &m2, T0 + 4);
    assert!(matches!(err, Error::Replay { .. }), "{err:?}");
}

#[test]
fn unclean_restart_discards_outbound_sessions_clean_restart_keeps_them() {
    let mut a = Device::new("alice");
    let mut b = Device::new("bob");
    introduce(&mut a, &mut b);
    connect(&mut a, &mut b);
    let members = [a.user(), b.user()];
    let first = send(&mut a, room(12), &members, "before", T0);

    let mut a = a.restart(true);
    assert!(!a.machine.started_unclean());
    let kept = send(&mut a, room(12), &members, "after clean restart", T0 + 1);
    assert_eq!(kept.session_id, first.session_id);
    assert_eq!(kept.message_index, 1);

    let mut a = a.restart(false);
    assert!(a.machine.started_unclean());
    let fresh = send(&mut a, room(12), &members, "after crash", T0 + 2);
    assert_eq!(fresh.rotation, Some(Rotation::New));
    assert_ne!(fresh.session_id, first.session_id);
    // The Olm session from before the crash is not used for sending either
    // (its last ratchet step may be lost): Bob is owed the key.
    assert_eq!(fresh.no_session, vec![(b.user(), b.device_id())]);
    assert!(fresh.key_shares.is_empty());
    assert!(!a.machine.has_session(&b.device_id()).unwrap());
    // A new session: the next message shares the key from the first index
    // Bob was owed, so he reads both.
    connect(&mut a, &mut b);
    let next = send(&mut a, room(12), &members, "with a new session", T0 + 3);
    assert_eq!(next.session_id, fresh.session_id);
    assert_eq!(shares_for(&next, &b).len(), 1);
    assert_eq!(
        body(&deliver(&next, &mut b, T0 + 3).unwrap()),
        "with a new session"
    );
    let got: Vec<String> = [&first, &kept, &fresh]
        .iter()
        .map(|m| body(&deliver(m, &mut b, T0 + 4).unwrap()))
        .collect();
    assert_eq!(got, ["before", "after clean restart", "after crash"]);
}

#[test]
fn one_time_keys_are_signed_distinct_and_checked() {
    let mut alice = Device::new("alice");
    let mut bob = Device::new("bob");
    let mut eve = Device::new("eve");
    introduce(&mut alice, &mut bob);

    let keys = bob.machine.claim_one_time_keys(50, ts(T0)).unwrap();
    let more = bob.machine.claim_one_time_keys(50, ts(T0)).unwrap();
    let mut all: Vec<[u8; 32]> = keys
        .iter()
        .chain(&more)
        .map(|k| k.decode_body().unwrap().key)
        .collect();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 100, "every key is handed out once");
    assert!(bob.machine.claim_one_time_keys(51, ts(T0)).is_err());

    // A key with a broken signature, or one signed by another device, is refused.
    let mut bad = keys[0].clone();
    bad.signature[10] ^= 1;
    let err = alice
        .machine
        .create_outbound_session(&bob.device_id(), &bad, ts(T0))
        .unwrap_err();
    assert!(matches!(err, Error::BadSignature { .. }), "{err:?}");
    let eves = eve
        .machine
        .claim_one_time_keys(1, ts(T0))
        .unwrap()
        .remove(0);
    let err = alice
        .machine
        .create_outbound_session(&bob.device_id(), &eves, ts(T0))
        .unwrap_err();
    assert!(matches!(err, Error::InvalidRecord { .. }), "{err:?}");
    // A device Alice does not know.
    let err = alice
        .machine
        .create_outbound_session(&eve.device_id(), &eves, ts(T0))
        .unwrap_err();
    assert!(matches!(err, Error::UnknownDevice { .. }), "{err:?}");
    // A genuine key works, and the session carries a room key.
    alice
        .machine
        .create_outbound_session(&bob.device_id(), &keys[1], ts(T0))
        .unwrap();
    let members = [alice.user(), bob.user()];
    let sent = send(&mut alice, room(13), &members, "ok", T0);
    assert_eq!(body(&deliver(&sent, &mut bob, T0).unwrap()), "ok");
    let _ = &mut eve;
}

#[test]
fn fallback_key_is_stable_for_a_week_then_replaced_and_works() {
    let mut alice = Device::new("alice");
    let mut bob = Device::new("bob");
    introduce(&mut alice, &mut bob);
    let f1 = bob.machine.fallback_key(ts(T0)).unwrap();
    assert!(f1.decode_body().unwrap().fallback);
    assert_eq!(bob.machine.fallback_key(ts(T0 + 1000)).unwrap(), f1);
    let f2 = bob
        .machine
        .fallback_key(ts(T0 + safemeet_crypto::machine::FALLBACK_KEY_MAX_AGE_MS))
        .unwrap();
    assert_ne!(f2, f1);
    // Sessions can start from the current fallback key, and from the
    // previous one while messages set up with it are in flight.
    for (i, key) in [&f2, &f1].into_iter().enumerate() {
        let mut a = Device::new("alice");
        introduce(&mut a, &mut bob);
        a.machine
            .create_outbound_session(&bob.device_id(), key, ts(T0))
            .unwrap();
        let members = [a.user(), bob.user()];
        let sent = send(&mut a, room(14 + i as u8), &members, "fb", T0);
        assert_eq!(body(&deliver(&sent, &mut bob, T0).unwrap()), "fb");
    }
    let _ = &mut alice;
}

#[test]
fn a_broken_olm_session_is_replaced_and_keys_reshared() {
    let (mut alice, mut bob) = pair();
    let members = [alice.user(), bob.user()];
    let m1 = send(&mut alice, room(15), &members, "one", T0);
    deliver(&m1, &mut bob, T0).unwrap();
    // Bob answers so Alice's next Olm messages are normal messages.
    let r = send(&mut bob, room(15), &members, "re", T0 + 1);
    deliver(&r, &mut alice, T0 + 1).unwrap();

    // A normal message on the session that does not decrypt: the session is broken.
    let out = to_device(&mut alice, &bob, ToDeviceEvent::NewSession);
    let mut env = to_device_envelope(&out);
    assert_eq!(env.kind, OlmMessageKind::Normal);
    let last = env.ciphertext.len() - 1;
    env.ciphertext[last] ^= 1;
    assert!(bob.machine.decrypt_to_device(&env, ts(T0 + 2)).is_err());
    assert_eq!(
        bob.machine.take_devices_needing_session(),
        vec![alice.device_id()]
    );
    // Asked once per interval only.
    assert!(bob.machine.decrypt_to_device(&env, ts(T0 + 3)).is_err());
    assert!(bob.machine.take_devices_needing_session().is_empty());

    // Bob opens a new session and announces it.
    connect(&mut bob, &mut alice);
    let hello = to_device(&mut bob, &alice, ToDeviceEvent::NewSession);
    let got = receive_to_device(&hello, &mut alice, T0 + 4).unwrap();
    assert!(matches!(got.content, ToDeviceContent::NewSession));
    // Alice's next room message re-shares the room key over the new session.
    let m2 = send(&mut alice, room(15), &members, "two", T0 + 5);
    assert_eq!(m2.rotation, None);
    assert_eq!(shares_for(&m2, &bob).len(), 1);
    assert_eq!(body(&deliver(&m2, &mut bob, T0 + 5).unwrap()), "two");
}

#[test]
fn outbox_holds_every_committed_frame_until_removed() {
    let (mut alice, bob) = pair();
    let members = [alice.user(), bob.user()];
    let sent = send(&mut alice, room(16), &members, "queued", T0);
    let items = alice.machine.outbox(None, 100).unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(
        items[0].1.frame().unwrap(),
        sent.key_shares[0].frame().unwrap()
    );
    assert_eq!(items[1].1.frame().unwrap(), sent.message.frame().unwrap());
    assert_eq!(items[1].1.envelope, sent.message.envelope);
    alice
        .machine
        .remove_from_outbox(&[items[0].0, items[1].0])
        .unwrap();
    assert!(alice.machine.outbox(None, 100).unwrap().is_empty());
}

#[test]
fn no_plaintext_in_the_store() {
    let (mut alice, mut bob) = pair();
    let secret = "the eagle lands at midnight";
    let members = [alice.user(), bob.user()];
    let sent = send(&mut alice, room(17), &members, secret, T0);
    deliver(&sent, &mut bob, T0).unwrap();
    for d in [&alice.backend, &bob.backend] {
        for ks in safemeet_store::Keyspace::ALL {
            use safemeet_store::Store;
            for (k, v) in d.scan(ks, &[], None, usize::MAX).unwrap() {
                for hay in [&k, &v] {
                    assert!(!hay.windows(secret.len()).any(|w| w == secret.as_bytes()));
                    assert!(
                        !hay.windows(32)
                            .any(|w| w == alice.user().as_bytes() || w == bob.user().as_bytes())
                    );
                }
            }
        }
    }
}

mod random_input {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn random_envelopes_never_panic(
            session_id in any::<[u8; 32]>(),
            ciphertext in proptest::collection::vec(any::<u8>(), 0..600),
            pre in any::<bool>(),
        ) {
            let mut bob = Device::new("bob");
            let room_env = RoomEnvelope { topic: safemeet_proto::room::RoomTopic::from_bytes([0; 32]), session_id, ciphertext: ciphertext.clone() };
            prop_assert!(bob.machine.decrypt_room(&room_env, ts(T0)).is_err());
            let kind = if pre { OlmMessageKind::PreKey } else { OlmMessageKind::Normal };
            let td = ToDeviceEnvelope { kind, session_id, ciphertext };
            prop_assert!(bob.machine.decrypt_to_device(&td, ts(T0)).is_err());
        }

        #[test]
        fn mutated_genuine_envelopes_never_panic(
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
            cut in any::<usize>(),
        ) {
            let mut alice = Device::new("alice");
            let mut bob = Device::new("bob");
            introduce(&mut alice, &mut bob);
            connect(&mut alice, &mut bob);
            let members = [alice.user(), bob.user()];
            let sent = send(&mut alice, room(1), &members, "x", T0);
            let mut share = to_device_envelope(&sent.key_shares[0]);
            let mut env = room_envelope(&sent.message);
            for (i, b) in &flips {
                let n = share.ciphertext.len();
                share.ciphertext[i % n] ^= b | 1;
                let n = env.ciphertext.len();
                env.ciphertext[i % n] ^= b | 1;
            }
            let _ = bob.machine.decrypt_to_device(&share, ts(T0));
            let _ = bob.machine.decrypt_room(&env, ts(T0));
            env.ciphertext.truncate(cut % (env.ciphertext.len() + 1));
            let _ = bob.machine.decrypt_room(&env, ts(T0));
            // A frame is checked too.
            let sealed = safemeet_crypto::header::seal(&header_key(), &env).unwrap();
            let frame = Envelope::Room(sealed).to_frame().unwrap();
            let _ = Envelope::from_frame(&frame[..cut % frame.len()]);
            let _ = codec::encode(&share);
        }
    }
}

/// Runs a SAS verification between two machines over their Olm channel.
fn verify_over_olm(alice: &mut Device, bob: &mut Device) -> (String, String) {
    use safemeet_crypto::verification::SasFlow;
    let send_step =
        |from: &mut Device, to: &Device, v| to_device(from, to, ToDeviceEvent::Verification(v));
    let recv_step = |to: &mut Device, out| match receive_to_device(&out, to, T0).unwrap().content {
        ToDeviceContent::Verification(v) => v,
        other => panic!("expected a verification step, got {other:?}"),
    };
    let bob_identity = alice.machine.device_identity(&bob.device_id()).unwrap();
    let (mut a_flow, start) = SasFlow::start(alice.machine.own_identity(), bob_identity);
    let out = send_step(alice, bob, start);
    let start = recv_step(bob, out);
    let alice_identity = bob.machine.device_identity(&alice.device_id()).unwrap();
    let (mut b_flow, accept) =
        SasFlow::respond(bob.machine.own_identity(), alice_identity, &start).unwrap();
    let mut to_alice = Some(send_step(bob, alice, accept));
    let mut to_bob = None;
    while to_alice.is_some() || to_bob.is_some() {
        if let Some(out) = to_alice.take() {
            let step = recv_step(alice, out);
            if let Some(reply) = a_flow.receive(&step).unwrap() {
                to_bob = Some(send_step(alice, bob, reply));
            }
        }
        if let Some(out) = to_bob.take() {
            let step = recv_step(bob, out);
            if let Some(reply) = b_flow.receive(&step).unwrap() {
                to_alice = Some(send_step(bob, alice, reply));
            }
        }
    }
    let shown = (
        a_flow.short_auth_string().unwrap().to_string(),
        b_flow.short_auth_string().unwrap().to_string(),
    );
    // Both users see the same string and confirm.
    let a_mac = a_flow.confirm().unwrap();
    let b_mac = b_flow.confirm().unwrap();
    let out = send_step(alice, bob, a_mac);
    let step = recv_step(bob, out);
    assert!(b_flow.receive(&step).unwrap().is_none());
    let out = send_step(bob, alice, b_mac);
    let step = recv_step(alice, out);
    assert!(a_flow.receive(&step).unwrap().is_none());
    alice.machine.mark_verified(&a_flow, ts(T0)).unwrap();
    bob.machine.mark_verified(&b_flow, ts(T0)).unwrap();
    shown
}

#[test]
fn sas_over_olm_marks_devices_verified() {
    let (mut alice, mut bob) = pair();
    let members = [alice.user(), bob.user()];
    // Establish the session both ways first.
    let m = send(&mut alice, room(20), &members, "before", T0);
    assert_eq!(
        deliver(&m, &mut bob, T0).unwrap().sender.trust,
        DeviceTrust::Unverified
    );
    assert_eq!(
        alice
            .machine
            .device(&bob.device_id())
            .unwrap()
            .unwrap()
            .trust,
        DeviceTrust::Unverified
    );

    let (a_sees, b_sees) = verify_over_olm(&mut alice, &mut bob);
    assert_eq!(a_sees, b_sees);
    assert_eq!(
        alice
            .machine
            .device(&bob.device_id())
            .unwrap()
            .unwrap()
            .trust,
        DeviceTrust::Verified
    );
    // Messages now carry the verified state, also after a restart.
    let mut bob = bob.restart(true);
    let m = send(&mut alice, room(20), &members, "after", T0 + 1);
    assert_eq!(
        deliver(&m, &mut bob, T0 + 1).unwrap().sender.trust,
        DeviceTrust::Verified
    );
}

#[test]
fn an_unfinished_or_foreign_verification_marks_nothing() {
    use safemeet_crypto::verification::SasFlow;
    let mut alice = Device::new("alice");
    let mut bob = Device::new("bob");
    let carol = Device::new("carol");
    introduce(&mut alice, &mut bob);
    let bob_identity = alice.machine.device_identity(&bob.device_id()).unwrap();
    let (flow, _) = SasFlow::start(alice.machine.own_identity(), bob_identity);
    assert!(alice.machine.mark_verified(&flow, ts(T0)).is_err());
    // Carol is unknown to Alice: no identity to verify against.
    let err = alice
        .machine
        .device_identity(&carol.device_id())
        .unwrap_err();
    assert!(matches!(err, Error::UnknownDevice { .. }), "{err:?}");
    assert_eq!(
        alice
            .machine
            .device(&bob.device_id())
            .unwrap()
            .unwrap()
            .trust,
        DeviceTrust::Unverified
    );
}

/// Sends `event` from one device to another over Olm, committed.
fn to_device(
    from: &mut Device,
    to: &Device,
    event: ToDeviceEvent,
) -> safemeet_crypto::machine::Outgoing {
    let batch = from.machine.store().batch();
    from.machine
        .encrypt_to_device(to.user(), to.device_id(), event, batch, b"")
        .unwrap()
}

/// Decrypting the room message of `sent` fails: the error.
fn room_err(to: &mut Device, sent: &safemeet_crypto::machine::RoomSend, now: u64) -> Error {
    to.machine
        .decrypt_room(&room_envelope(&sent.message), ts(now))
        .unwrap_err()
}

/// A to-device plaintext from `from` carrying a room key.
fn sealed_from(from: &Device, key: RoomKey) -> Sealed {
    Sealed {
        sender: SealedSender::Certificate(from.machine.account().certificate().clone()),
        payload: Payload::ToDevice(ToDeviceEvent::RoomKey(key)),
    }
}

#[test]
fn strangers_are_refused_without_costing_a_one_time_key() {
    let mut alice = Device::new("alice");
    let mut bob = Device::new("bob");
    // Alice knows Bob; Bob does not know Alice.
    let (list, certs) = identity_of(&bob);
    alice.machine.add_device_list(&list, &certs).unwrap();
    connect(&mut alice, &mut bob);
    let sent = send(&mut alice, room(30), &[bob.user()], "hello stranger", T0);
    let share = to_device_envelope(shares_for(&sent, &bob)[0]);
    let err = bob.machine.decrypt_to_device(&share, ts(T0)).unwrap_err();
    assert!(matches!(err, Error::UnknownSender { .. }), "{err:?}");
    let err = bob
        .machine
        .decrypt_room(&room_envelope(&sent.message), ts(T0))
        .unwrap_err();
    assert!(
        matches!(err, Error::MissingRoomKey { held: true }),
        "{err:?}"
    );
    // Once Bob accepts Alice's device list, the very same messages work:
    // the one-time key was not used up by the refusal.
    let (list, certs) = identity_of(&alice);
    bob.machine.add_device_list(&list, &certs).unwrap();
    let got = bob.machine.decrypt_to_device(&share, ts(T0 + 1)).unwrap();
    let released: Vec<String> = got
        .released
        .iter()
        .map(|r| body(r.as_ref().unwrap()))
        .collect();
    assert_eq!(released, ["hello stranger"]);
}

#[test]
fn re_encoded_messages_are_refused() {
    let (mut alice, mut bob) = pair();
    let members = [alice.user(), bob.user()];
    let sent = send(&mut alice, room(31), &members, "exact bytes", T0);
    for share in shares_for(&sent, &bob) {
        receive_to_device(share, &mut bob, T0).unwrap();
    }
    let env = room_envelope(&sent.message);
    // An unknown protobuf field after the version byte: still parses, and
    // the MAC and signature cover the re-encoding, not these bytes.
    let mut padded = env.clone();
    padded.ciphertext.splice(1..1, [0x28, 0x01]);
    let err = bob.machine.decrypt_room(&padded, ts(T0)).unwrap_err();
    assert!(
        matches!(&err, Error::Decryption { reason, .. } if reason.contains("non-canonical")),
        "{err:?}"
    );
    // The topic is routing data: it does not change the event id.
    let mut moved = env.clone();
    moved.topic = safemeet_proto::room::RoomTopic::from_bytes([0xee; 32]);
    assert_eq!(
        safemeet_crypto::machine::event_id(&moved).unwrap(),
        sent.event_id
    );
    assert_eq!(
        body(&bob.machine.decrypt_room(&env, ts(T0)).unwrap()),
        "exact bytes"
    );
}

#[test]
fn a_device_reads_its_own_room_messages() {
    let (mut alice, bob) = pair();
    let members = [alice.user(), bob.user()];
    let sent = send(&mut alice, room(32), &members, "echo", T0);
    let got = alice
        .machine
        .decrypt_room(&room_envelope(&sent.message), ts(T0))
        .unwrap();
    assert_eq!(body(&got), "echo");
    assert_eq!(got.sender.device_id, alice.device_id());
    assert_eq!(got.sender.trust, DeviceTrust::Verified);
}

#[test]
fn held_messages_are_bounded_and_expire() {
    use safemeet_crypto::machine::{HELD_TTL_MS, MAX_HELD_PER_SESSION, MAX_HELD_SESSIONS};
    let mut bob = Device::new("bob");
    let envelope = |group: &mut GroupSession| RoomEnvelope {
        topic: safemeet_proto::room::RoomTopic::from_bytes([0; 32]),
        session_id: session_id(&group.session_id()),
        ciphertext: group.encrypt(b"unreadable").to_bytes(),
    };
    // More sessions than may be held: the oldest make room, none is refused.
    let mut first = GroupSession::new(SessionConfig::version_1());
    let first_env = envelope(&mut first);
    let err = bob.machine.decrypt_room(&first_env, ts(T0)).unwrap_err();
    assert!(
        matches!(err, Error::MissingRoomKey { held: true }),
        "{err:?}"
    );
    for i in 0..MAX_HELD_SESSIONS as u64 {
        let mut g = GroupSession::new(SessionConfig::version_1());
        let err = bob
            .machine
            .decrypt_room(&envelope(&mut g), ts(T0 + 1 + i))
            .unwrap_err();
        assert!(
            matches!(err, Error::MissingRoomKey { held: true }),
            "{err:?}"
        );
    }
    // One session cannot hold more than its share.
    let mut busy = GroupSession::new(SessionConfig::version_1());
    let mut refused = 0;
    for _ in 0..MAX_HELD_PER_SESSION + 5 {
        if let Err(Error::MissingRoomKey { held: false }) = bob
            .machine
            .decrypt_room(&envelope(&mut busy), ts(T0 + 1000))
        {
            refused += 1;
        }
    }
    assert_eq!(refused, 5);
    // After the time to live, held messages are gone: a late key releases nothing.
    let mut late = GroupSession::new(SessionConfig::version_1());
    let late_key = late.session_key().to_bytes();
    let late_env = envelope(&mut late);
    let _ = bob.machine.decrypt_room(&late_env, ts(T0 + 2000));
    let mut later = GroupSession::new(SessionConfig::version_1());
    let _ = bob
        .machine
        .decrypt_room(&envelope(&mut later), ts(T0 + 2000 + HELD_TTL_MS));
    let mut alice = Device::new("alice");
    introduce(&mut alice, &mut bob);
    let key = RoomKey {
        version: 1,
        room_id: room(33),
        session_id: session_id(&late.session_id()),
        first_index: 0,
        session_key: late_key,
        header: header_key().root(),
    };
    let share = raw_to_device(&alice, &mut bob, &sealed_from(&alice, key));
    let got = bob
        .machine
        .decrypt_to_device(&share, ts(T0 + 3000 + HELD_TTL_MS))
        .unwrap();
    assert!(got.released.is_empty());
}

#[test]
fn decrypt_with_commits_the_callers_writes_with_the_replay_record() {
    use safemeet_store::Keyspace;
    let (mut alice, mut bob) = pair();
    let members = [alice.user(), bob.user()];
    let sent = send(&mut alice, room(34), &members, "persist me", T0);
    for share in shares_for(&sent, &bob) {
        receive_to_device(share, &mut bob, T0).unwrap();
    }
    let env = room_envelope(&sent.message);
    // The caller's write fails: nothing is recorded, the message can come again.
    let err = bob
        .machine
        .decrypt_room_with(&env, ts(T0), |_| {
            Err(Error::InvalidRecord {
                what: "timeline",
                reason: "disk full",
            })
        })
        .unwrap_err();
    assert!(matches!(err, Error::InvalidRecord { .. }), "{err:?}");
    let store = bob.machine.store().clone();
    let got = bob
        .machine
        .decrypt_room_with(&env, ts(T0), |event| {
            let mut batch = store.batch();
            store.batch_put(
                &mut batch,
                Keyspace::Timeline,
                event.event_id.as_bytes(),
                b"stored",
            )?;
            Ok(batch)
        })
        .unwrap();
    assert_eq!(body(&got), "persist me");
    assert_eq!(
        store
            .get(Keyspace::Timeline, sent.event_id.as_bytes())
            .unwrap()
            .unwrap()
            .as_slice(),
        b"stored"
    );
    assert!(matches!(
        bob.machine.decrypt_room(&env, ts(T0)).unwrap_err(),
        Error::Replay { .. }
    ));
}

#[test]
fn a_linked_device_cannot_sign_device_lists() {
    let mut first = Device::new("bob");
    let second_account = first.machine.link_new_device(ts(T0)).unwrap();
    assert!(!second_account.has_master_key());
    let mut second =
        Device::with_account("bob2", &second_account, safemeet_store::MemoryStore::new());
    let err = second
        .machine
        .revoke_device(first.device_id(), ts(T0 + 1))
        .unwrap_err();
    assert!(matches!(err, Error::NoMasterKey), "{err:?}");
    assert!(matches!(
        second.machine.link_new_device(ts(T0 + 1)).unwrap_err(),
        Error::NoMasterKey
    ));
    // The first device revokes the second; the second accepts nothing
    // that would leave it revoked.
    first
        .machine
        .revoke_device(second.device_id(), ts(T0 + 2))
        .unwrap();
    let (list, _) = identity_of(&first);
    assert!(second.machine.add_device_list(&list, &[]).is_err());
}

/// A member who forwards a doctored export of someone else's session can
/// neither block the genuine key nor replace it.
#[test]
fn a_doctored_session_export_loses_to_the_signed_key() {
    let mut alice = Device::new("alice");
    let mut bob = Device::new("bob");
    let mut mallory = Device::new("mallory");
    introduce(&mut alice, &mut bob);
    introduce(&mut mallory, &mut bob);
    let mut group = GroupSession::new(SessionConfig::version_1());
    let signed = group.session_key();
    let mut export =
        vodozemac::megolm::InboundGroupSession::new(&signed, SessionConfig::version_1())
            .export_at(0)
            .unwrap()
            .to_bytes();
    export[10] ^= 0xff; // a different ratchet, same signing key
    let id = session_id(&group.session_id());
    let key = |session_key: Vec<u8>| RoomKey {
        version: 1,
        room_id: room(40),
        session_id: id,
        first_index: 0,
        session_key,
        header: header_key().root(),
    };
    // The doctored copy arrives first and is held (unverified).
    let fake = raw_to_device(
        &mallory,
        &mut bob,
        &sealed_from(&mallory, key(export.clone())),
    );
    bob.machine.decrypt_to_device(&fake, ts(T0)).unwrap();
    // The signed key replaces it.
    let real = raw_to_device(
        &alice,
        &mut bob,
        &sealed_from(&alice, key(signed.to_bytes())),
    );
    bob.machine.decrypt_to_device(&real, ts(T0)).unwrap();
    let by_alice = Sealed {
        sender: SealedSender::Certificate(alice.machine.account().certificate().clone()),
        payload: Payload::Room(RoomEvent {
            room_id: room(40),
            sender: alice.user(),
            sender_device: alice.device_id(),
            lamport: 1,
            ts: ts(T0),
            content: text("genuine"),
        }),
    };
    let env = RoomEnvelope {
        topic: safemeet_proto::room::RoomTopic::from_bytes([9; 32]),
        session_id: id,
        ciphertext: group.encrypt(by_alice.encode_padded().unwrap()).to_bytes(),
    };
    assert_eq!(
        body(&bob.machine.decrypt_room(&env, ts(T0)).unwrap()),
        "genuine"
    );
    // The doctored copy is now refused outright.
    let again = raw_to_device(&mallory, &mut bob, &sealed_from(&mallory, key(export)));
    let err = bob.machine.decrypt_to_device(&again, ts(T0)).unwrap_err();
    assert!(matches!(err, Error::SessionConflict), "{err:?}");
}

/// A memory store that counts its flushes and syncs, and the writes
/// applied since the last sync.
#[derive(Default)]
struct FlushCounter {
    inner: safemeet_store::MemoryStore,
    flushes: std::sync::atomic::AtomicUsize,
    syncs: std::sync::atomic::AtomicUsize,
    unsynced: std::sync::atomic::AtomicUsize,
}

impl FlushCounter {
    fn flushes(&self) -> usize {
        self.flushes.load(std::sync::atomic::Ordering::SeqCst)
    }
    fn syncs(&self) -> usize {
        self.syncs.load(std::sync::atomic::Ordering::SeqCst)
    }
    fn unsynced(&self) -> usize {
        self.unsynced.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl safemeet_store::Store for FlushCounter {
    fn get(
        &self,
        ks: safemeet_store::Keyspace,
        key: &[u8],
    ) -> safemeet_store::Result<Option<Vec<u8>>> {
        self.inner.get(ks, key)
    }
    fn scan(
        &self,
        ks: safemeet_store::Keyspace,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> safemeet_store::Result<Vec<safemeet_store::Entry>> {
        self.inner.scan(ks, prefix, after, limit)
    }
    fn apply(&self, batch: safemeet_store::Batch) -> safemeet_store::Result<()> {
        self.unsynced
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.apply(batch)
    }
    fn put(
        &self,
        ks: safemeet_store::Keyspace,
        key: &[u8],
        value: &[u8],
    ) -> safemeet_store::Result<()> {
        self.unsynced
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.put(ks, key, value)
    }
    fn flush(&self) -> safemeet_store::Result<()> {
        self.flushes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.flush()
    }
    fn sync(&self) -> safemeet_store::Result<()> {
        self.syncs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.unsynced.store(0, std::sync::atomic::Ordering::SeqCst);
        self.inner.sync()
    }
}

#[test]
fn the_run_marker_is_synced_before_the_machine_opens() {
    let counter = std::sync::Arc::new(FlushCounter::default());
    let alice = Device::with_account("alice", &new_account("alice"), counter.clone());
    assert!(counter.syncs() >= 1, "opening syncs the run marker");
    assert_eq!(
        counter.unsynced(),
        0,
        "nothing written while opening is left unsynced"
    );
    // And again on a restart after a crash, which marks a new generation.
    let syncs = counter.syncs();
    let alice = alice.restart(false);
    assert!(counter.syncs() > syncs, "the unclean restart is synced too");
    assert_eq!(counter.unsynced(), 0);
    drop(alice);
}

fn deferred<S: safemeet_store::Store + Clone>(
    from: &mut Device<S>,
    members: &[safemeet_proto::UserId],
    msg: &str,
    lamport: u64,
) -> safemeet_crypto::machine::Unflushed<safemeet_crypto::machine::RoomSend> {
    let batch = from.machine.store().batch();
    from.machine
        .encrypt_room_event_deferred(
            safemeet_crypto::machine::RoomMessage {
                room_id: room(1),
                topic: safemeet_proto::room::RoomTopic::from_bytes([9; 32]),
                header: &header_key(),
                members,
                content: text(msg),
                lamport,
            },
            ts(T0),
            |_| Ok(batch),
            b"",
        )
        .unwrap()
}

#[test]
fn a_group_of_deferred_sends_comes_out_after_one_flush() {
    let counter = std::sync::Arc::new(FlushCounter::default());
    let mut alice = Device::with_account("alice", &new_account("alice"), counter.clone());
    let mut bob = Device::new("bob");
    introduce(&mut alice, &mut bob);
    connect(&mut alice, &mut bob);
    let members = [alice.user(), bob.user()];

    let before = counter.flushes();
    let group: Vec<_> = (0..5)
        .map(|i| deferred(&mut alice, &members, &format!("m{i}"), i))
        .collect();
    assert_eq!(
        counter.flushes(),
        before,
        "nothing is flushed before release"
    );
    assert_eq!(
        alice.machine.outbox(None, 100).unwrap().len(),
        6,
        "committed: the key share and five messages"
    );
    let sent = alice.machine.release(group).unwrap();
    assert_eq!(counter.flushes(), before + 1, "one flush for the group");
    let indices: Vec<u32> = sent.iter().map(|s| s.message_index).collect();
    assert_eq!(indices, vec![0, 1, 2, 3, 4], "no index twice");
    for (i, s) in sent.iter().enumerate() {
        assert_eq!(body(&deliver(s, &mut bob, T0).unwrap()), format!("m{i}"));
    }

    // Another machine's output does not come out of this one.
    let mut carol = Device::new("carol");
    let carol_only = [carol.user()];
    let foreign = deferred(&mut carol, &carol_only, "mine", 0);
    assert!(matches!(
        alice.machine.release(vec![foreign]),
        Err(Error::InvalidRecord { .. })
    ));
    // And the refusal does not stop the machine.
    let one = deferred(&mut alice, &members, "later", 5);
    let later = alice.machine.release(vec![one]).unwrap();
    assert_eq!(body(&deliver(&later[0], &mut bob, T0).unwrap()), "later");
}

#[test]
fn a_released_message_the_caller_cannot_place_can_come_again() {
    let (mut alice, mut bob) = pair();
    let members = [alice.user(), bob.user()];
    let m1 = send(&mut alice, room(13), &members, "not yet", T0);
    let m2 = send(&mut alice, room(13), &members, "placed", T0 + 1);
    for m in [&m1, &m2] {
        let err = room_err(&mut bob, m, T0 + 2);
        assert!(
            matches!(err, Error::MissingRoomKey { held: true }),
            "{err:?}"
        );
    }
    // The key arrives; the caller refuses to place the first message.
    let share = to_device_envelope(shares_for(&m1, &bob)[0]);
    let got = bob
        .machine
        .decrypt_to_device_with(&share, ts(T0 + 3), |event| {
            if body(event) == "not yet" {
                Err(Error::InvalidRecord {
                    what: "test",
                    reason: "cannot place it yet",
                })
            } else {
                Ok(safemeet_crypto::EncryptedBatch::default())
            }
        })
        .unwrap();
    let outcome: Vec<Result<String, String>> = got
        .released
        .iter()
        .map(|r| r.as_ref().map(body).map_err(|e| e.to_string()))
        .collect();
    assert!(outcome[0].is_err(), "{outcome:?}");
    assert_eq!(outcome[1].as_deref(), Ok("placed"));
    // Delivered again, the refused one decrypts; the placed one is a replay.
    let again = bob
        .machine
        .decrypt_room(&room_envelope(&m1.message), ts(T0 + 4))
        .unwrap();
    assert_eq!(body(&again), "not yet");
    let err = room_err(&mut bob, &m2, T0 + 4);
    assert!(matches!(err, Error::Replay { .. }), "{err:?}");
}

#[test]
fn junk_from_one_holder_cannot_push_out_another_holders_held_message() {
    use safemeet_crypto::machine::{Holder, MAX_HELD_BYTES, MAX_HELD_BYTES_PER_HOLDER};
    let (mut alice, mut bob) = pair();
    let members = [alice.user(), bob.user()];
    let real = send(&mut alice, room(40), &members, "real", T0);
    let (member, stranger) = (Holder([1; 32]), Holder([2; 32]));
    let err = bob
        .machine
        .decrypt_room_held(
            &room_envelope(&real.message),
            ts(T0 + 1),
            Some(member),
            |_| Ok(Default::default()),
        )
        .unwrap_err();
    assert!(
        matches!(err, Error::MissingRoomKey { held: true }),
        "{err:?}"
    );
    // 400 frames of about 60 KiB with made-up sessions, more than twice what
    // the whole store holds: the flood replaces only its own frames.
    let junk = vec![0x55; 60 * 1024];
    let mut flood_bytes = 0u64;
    for i in 0..400u64 {
        let mut g = GroupSession::new(SessionConfig::version_1());
        let env = RoomEnvelope {
            topic: safemeet_proto::room::RoomTopic::from_bytes([0; 32]),
            session_id: session_id(&g.session_id()),
            ciphertext: g.encrypt(&junk).to_bytes(),
        };
        flood_bytes += env.ciphertext.len() as u64;
        let _ = bob
            .machine
            .decrypt_room_held(&env, ts(T0 + 2 + i), Some(stranger), |_| {
                Ok(Default::default())
            });
    }
    assert!(flood_bytes > 2 * MAX_HELD_BYTES);
    // What is held is bounded: the store's size grew by about one
    // holder's quota, not by the flood.
    let held: u64 = safemeet_store::Store::scan(
        &bob.backend,
        safemeet_store::Keyspace::CryptoSessions,
        &[],
        None,
        usize::MAX,
    )
    .unwrap()
    .iter()
    .map(|(_, v)| v.len() as u64)
    .sum();
    assert!(
        held < 2 * MAX_HELD_BYTES_PER_HOLDER,
        "{held} bytes of crypto sessions after the flood"
    );
    // The member's message is still held: the key releases it.
    let got = receive_to_device(shares_for(&real, &bob)[0], &mut bob, T0 + 1000).unwrap();
    let texts: Vec<String> = got
        .released
        .iter()
        .filter_map(|r| r.as_ref().ok().map(body))
        .collect();
    assert_eq!(texts, ["real"]);
}

#[test]
fn refused_senders_get_nothing_decrypted_and_are_heard_again_when_allowed() {
    let (mut alice, mut bob) = pair();
    let members = [alice.user(), bob.user()];
    let first = send(&mut alice, room(41), &members, "first", T0);
    bob.machine.set_refused_senders([alice.user()]);
    // The key share is refused, so is the message (a second try too).
    let err = receive_to_device(shares_for(&first, &bob)[0], &mut bob, T0 + 1).unwrap_err();
    assert!(matches!(err, Error::RefusedSender), "{err:?}");
    // Allowed again: the same share (sent again) and message are taken.
    bob.machine.set_refused_senders([]);
    let got = receive_to_device(shares_for(&first, &bob)[0], &mut bob, T0 + 2).unwrap();
    assert!(matches!(got.content, ToDeviceContent::RoomKey { .. }));
    let event = bob
        .machine
        .decrypt_room(&room_envelope(&first.message), ts(T0 + 3))
        .unwrap();
    assert_eq!(body(&event), "first");
    // Refused once the key is known: the room message is not decrypted
    // into the store (no replay record: allowed later, it still counts).
    let second = send(&mut alice, room(41), &members, "second", T0 + 4);
    bob.machine.set_refused_senders([alice.user()]);
    let err = room_err(&mut bob, &second, T0 + 5);
    assert!(matches!(err, Error::RefusedSender), "{err:?}");
    bob.machine.set_refused_senders([]);
    let event = bob
        .machine
        .decrypt_room(&room_envelope(&second.message), ts(T0 + 6))
        .unwrap();
    assert_eq!(body(&event), "second");
}

#[test]
fn device_names_and_trust_from_a_contact_are_refused() {
    // Only a user's own devices may name its devices or tell it whom to
    // trust: a contact's device that sends either is refused.
    let (mut alice, mut bob) = pair();
    let names = safemeet_proto::event::DeviceNames {
        names: vec![safemeet_proto::event::DeviceName {
            device_id: bob.device_id(),
            name: "renamed by alice".into(),
            set_at: ts(T0),
        }],
    };
    let out = to_device(&mut alice, &bob, ToDeviceEvent::DeviceNames(names));
    let err = receive_to_device(&out, &mut bob, T0).unwrap_err();
    assert!(matches!(err, Error::SenderMismatch { .. }), "{err:?}");
    let trust = safemeet_proto::identity::UserTrust {
        version: 1,
        truster: alice.user(),
        user_id: bob.user(),
        devices: vec![(bob.device_id(), [0; 32])],
        verified_at: ts(T0),
    };
    let notice = safemeet_proto::event::TrustNotice::Request(trust);
    let out = to_device(&mut alice, &bob, ToDeviceEvent::Trust(Box::new(notice)));
    let err = receive_to_device(&out, &mut bob, T0 + 1).unwrap_err();
    assert!(matches!(err, Error::SenderMismatch { .. }), "{err:?}");
}
