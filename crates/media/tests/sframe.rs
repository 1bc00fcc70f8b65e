//! SFrame against RFC 9605's test vectors (Appendix C: header encodings,
//! and key derivation and sealing for suite 0x0004), and the call's key
//! schedule: a joiner opens nothing from before it came, one who left
//! opens nothing sealed after the switch, replays and forgeries are
//! refused, and a counter never repeats.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use safemeet_media::keys::{MAX_RATCHET_AHEAD, OwnKey, PeerKeys, kid};
use safemeet_media::sframe::{
    BaseKey, Header, MAX_OLD_KEYS, ReceiveKeys, SendKey, SframeError, derive, ratchet,
};

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// RFC 9605 Appendix C.2 (a selection across every length of KID and
/// CTR): the header encodings.
const HEADERS: &[(u64, u64, &str)] = &[
    (0, 0, "00"),
    (0, 1, "01"),
    (0, 255, "08ff"),
    (0, 256, "090100"),
    (0, 65535, "09ffff"),
    (0, 65536, "0a010000"),
    (0, 4294967296, "0c0100000000"),
    (0, 18446744073709551615, "0fffffffffffffffff"),
    (1, 0, "10"),
    (1, 255, "18ff"),
    (1, 72057594037927936, "1f0100000000000000"),
    (255, 0, "80ff"),
    (255, 1, "81ff"),
    (255, 256, "89ff0100"),
    (256, 0, "900100"),
    (256, 255, "980100ff"),
    (256, 18446744073709551615, "9f0100ffffffffffffffff"),
    (65535, 65536, "9affff010000"),
    (65536, 0, "a0010000"),
    (16777216, 16777216, "bb0100000001000000"),
    (4294967295, 1, "b1ffffffff"),
    (4294967296, 256, "c901000000000100"),
    (1099511627775, 0, "c0ffffffffff"),
    (18446744073709551615, 0, "f0ffffffffffffffff"),
    (18446744073709551615, 256, "f9ffffffffffffffff0100"),
    (
        18446744073709551615,
        18446744073709551615,
        "ffffffffffffffffffffffffffffffffff",
    ),
];

#[test]
fn headers_encode_and_decode_as_the_rfc_says() {
    for (kid, ctr, encoded) in HEADERS {
        let header = Header {
            kid: *kid,
            ctr: *ctr,
        };
        let mut out = Vec::new();
        header.encode(&mut out);
        assert_eq!(out, unhex(encoded), "kid {kid} ctr {ctr}");
        let (back, used) = Header::decode(&out).unwrap();
        assert_eq!((back, used), (header, out.len()));
        // Cut anywhere, it does not decode.
        for cut in 0..out.len() {
            assert_eq!(
                Header::decode(&out[..cut]),
                Err(SframeError::Truncated),
                "{encoded} cut at {cut}"
            );
        }
    }
}

#[test]
fn suite_0004_derives_and_seals_as_the_rfc_says() {
    // RFC 9605 Appendix C.5, cipher suite 4 (AES_128_GCM_SHA256_128).
    let base = unhex("000102030405060708090a0b0c0d0e0f");
    let (kid, ctr) = (0x123, 0x4567);
    let (key, salt) = derive(&base, kid);
    assert_eq!(key.to_vec(), unhex("d34f547f4ca4f9a7447006fe7fcbf768"));
    assert_eq!(salt.to_vec(), unhex("75234edefe07819026751816"));
    let metadata = unhex("4945544620534672616d65205747");
    let plaintext = unhex("64726166742d696574662d736672616d652d656e63");
    let ciphertext = unhex(
        "9901234567b7412c2513a1b66dbb48841bbaf17f598751176ad847681a69c6d0b091c07018ce4adb34eb",
    );
    let mut send = SendKey::with_base(&base, kid, ctr);
    assert_eq!(send.encrypt(&metadata, &plaintext).unwrap(), ciphertext);
    let mut receive = ReceiveKeys::new();
    receive.add_base(&base, kid);
    let (header, opened) = receive.decrypt(&ciphertext, &metadata).unwrap();
    assert_eq!(header, Header { kid, ctr });
    assert_eq!(*opened, plaintext);
}

#[test]
fn forged_replayed_and_foreign_frames_are_refused() {
    let base = BaseKey::generate();
    let mut send = SendKey::new(&base, 7);
    let mut receive = ReceiveKeys::new();
    receive.add(&base, 7);
    let call = b"call one";
    let frames: Vec<Vec<u8>> = (0..300)
        .map(|i| send.encrypt(call, &[i as u8; 40]).unwrap())
        .collect();
    // Counters never repeat under a key.
    let ctrs: std::collections::BTreeSet<u64> = frames
        .iter()
        .map(|f| Header::decode(f).unwrap().0.ctr)
        .collect();
    assert_eq!(ctrs.len(), 300);

    // Another call's metadata, a flipped bit, a cut tag: nothing opens,
    // and none of it spends the frame's place in the window.
    assert_eq!(
        receive.decrypt(&frames[0], b"call two").unwrap_err(),
        SframeError::Decrypt
    );
    let mut flipped = frames[0].clone();
    *flipped.last_mut().unwrap() ^= 1;
    assert_eq!(
        receive.decrypt(&flipped, call).unwrap_err(),
        SframeError::Decrypt
    );
    assert_eq!(
        receive.decrypt(&frames[0][..10], call).unwrap_err(),
        SframeError::Truncated
    );
    assert_eq!(
        receive.decrypt(&vec![0; 5000], call).unwrap_err(),
        SframeError::TooLarge
    );
    receive.decrypt(&frames[0], call).unwrap();
    // Twice: refused.
    assert_eq!(
        receive.decrypt(&frames[0], call).unwrap_err(),
        SframeError::Replay
    );
    // Out of order within the window: taken, once.
    receive.decrypt(&frames[150], call).unwrap();
    receive.decrypt(&frames[100], call).unwrap();
    assert_eq!(
        receive.decrypt(&frames[100], call).unwrap_err(),
        SframeError::Replay
    );
    // Further back than the window: refused.
    receive.decrypt(&frames[299], call).unwrap();
    assert_eq!(
        receive.decrypt(&frames[160], call).unwrap_err(),
        SframeError::Replay
    );
    // An unknown KID.
    let mut other = SendKey::new(&base, 8);
    assert_eq!(
        receive
            .decrypt(&other.encrypt(call, b"x").unwrap(), call)
            .unwrap_err(),
        SframeError::UnknownKey
    );
}

#[test]
fn a_receiver_keeps_five_old_keys_and_the_newest() {
    let mut receive = ReceiveKeys::new();
    let bases: Vec<BaseKey> = (0..10).map(|_| BaseKey::generate()).collect();
    for (i, base) in bases.iter().enumerate() {
        receive.add(base, i as u64);
    }
    assert_eq!(
        receive.kids(),
        (10 - MAX_OLD_KEYS as u64 - 1..10).collect::<Vec<_>>()
    );
    let mut oldest = SendKey::new(&bases[0], 0);
    assert_eq!(
        receive
            .decrypt(&oldest.encrypt(b"", b"x").unwrap(), b"")
            .unwrap_err(),
        SframeError::UnknownKey
    );
}

#[test]
fn a_counter_at_its_end_refuses_to_seal() {
    let mut send = SendKey::with_base(&[1; 32], 1, u64::MAX);
    send.encrypt(b"", b"last").unwrap();
    assert_eq!(
        send.encrypt(b"", b"one more").unwrap_err(),
        SframeError::CounterExhausted
    );
}

#[test]
fn a_joiner_opens_nothing_from_before_it_joined() {
    let call = b"meeting";
    let mut alice = OwnKey::new(0);
    // Bob is in the call from the start.
    let mut bob_holds = PeerKeys::new(0);
    let (epoch, base) = alice.current();
    bob_holds.learn(epoch, base);
    let before = alice.seal(call, b"before carol").unwrap();
    bob_holds.open(&before, call).unwrap();

    // Carol joins: Alice ratchets and hands Carol (only) the new key.
    let (epoch, base) = alice.ratchet_for_join();
    assert_eq!(epoch, 1);
    let mut carol_holds = PeerKeys::new(0);
    carol_holds.learn(epoch, base);
    let after = alice.seal(call, b"after carol").unwrap();
    assert_eq!(*carol_holds.open(&after, call).unwrap().1, b"after carol");
    // Carol cannot open what was said before she came.
    assert_eq!(
        carol_holds.open(&before, call).unwrap_err(),
        SframeError::UnknownKey
    );
    // Bob follows without a message: he ratchets the key he holds.
    assert_eq!(*bob_holds.open(&after, call).unwrap().1, b"after carol");
    // Several joins in a row too, up to the limit.
    for _ in 0..MAX_RATCHET_AHEAD {
        alice.ratchet_for_join();
    }
    let far = alice.seal(call, b"far").unwrap();
    assert_eq!(*bob_holds.open(&far, call).unwrap().1, b"far");
    assert_eq!(*carol_holds.open(&far, call).unwrap().1, b"far");
}

#[test]
fn one_who_left_opens_nothing_after_the_switch() {
    let call = b"meeting";
    let mut alice = OwnKey::new(3);
    let (epoch, base) = alice.current();
    let (mut bob, mut mallory) = (PeerKeys::new(3), PeerKeys::new(3));
    bob.learn(epoch, base.clone());
    mallory.learn(epoch, base);

    // Mallory leaves: a fresh key goes to Bob only; until the switch,
    // Alice seals with the old one (Bob may not have the new yet).
    let (epoch, fresh) = alice.rotate_for_leave();
    let meanwhile = alice.seal(call, b"meanwhile").unwrap();
    bob.open(&meanwhile, call).unwrap();
    bob.learn(epoch, fresh);
    alice.switch();
    let after = alice.seal(call, b"after mallory").unwrap();
    assert_eq!(*bob.open(&after, call).unwrap().1, b"after mallory");
    // Mallory ratchets what she holds: it does not open, and is not kept.
    assert_eq!(
        mallory.open(&after, call).unwrap_err(),
        SframeError::Decrypt
    );
    assert_eq!(
        mallory.open(&after, call).unwrap_err(),
        SframeError::Decrypt
    );
    // A frame claiming another sender's index is not opened with Alice's.
    let mut eve = OwnKey::new(4);
    let forged = eve.seal(call, b"x").unwrap();
    assert_eq!(
        bob.open(&forged, call).unwrap_err(),
        SframeError::UnknownKey
    );
}

#[test]
fn ratcheting_is_one_way_and_kids_name_sender_and_epoch() {
    let base = BaseKey::generate();
    let next = ratchet(&base);
    assert_ne!(base.expose(), next.expose());
    assert_eq!(ratchet(&base).expose(), next.expose(), "deterministic");
    assert_eq!(kid(3, 0), 3);
    assert_eq!(kid(3, 2), 0x203);
    assert_eq!(safemeet_media::keys::split_kid(0x203), Some((3, 2)));
}
