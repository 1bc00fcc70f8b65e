//! What the frames a device sends show to whoever carries them: cores in
//! virtual time (the `safemeet-test-utils` simulator), every frame recorded
//! as it leaves a node.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::collections::BTreeMap;
use std::time::Duration;

use safemeet_proto::envelope::Envelope;
use safemeet_proto::header::TAG_BYTES;
use safemeet_proto::mailbox::SEAL_OVERHEAD;
use safemeet_proto::padding::{MESSAGE_FLOOR, SEALED_ROOM_OVERHEAD};
use safemeet_test_utils::sim::{Path, Sim};

const ALICE: usize = 0;
const BOB: usize = 1;
const CAROL: usize = 2;
const MINUTE: Duration = Duration::from_secs(60);

/// The kind of a frame that went directly or by gossip (deposits are
/// sealed, so their kind cannot be read).
fn kind(frame: &[u8]) -> &'static str {
    match Envelope::from_frame(frame) {
        Ok(Envelope::Room(_)) => "room message",
        Ok(Envelope::ToDevice(_)) => "to-device",
        Ok(Envelope::Acks(_)) => "acks",
        Ok(_) => "other",
        Err(_) => "undecodable",
    }
}

#[test]
fn short_and_long_messages_make_frames_of_one_size_in_every_path() {
    let relay = Sim::relay_address();
    let mut sim = Sim::new(&["alice", "bob", "carol"], 14, |_, c| {
        c.net.relays = vec![relay.clone()];
        // Every room on gossip, so that path is seen too (a room this
        // small would otherwise go by direct fan-out).
        c.direct_room_max_devices = 0;
    });
    sim.befriend(ALICE, BOB);
    sim.befriend(ALICE, CAROL);
    sim.befriend(BOB, CAROL);
    let room = sim.create_room(ALICE, "sizes", &[BOB, CAROL]);
    assert!(sim.run_until(MINUTE, |s| s.room_members(CAROL, room) == Some(3)));
    // Carol is away: what is for her goes to her relay mailbox.
    sim.set_online(CAROL, false);
    sim.record_wire();

    let texts: Vec<String> = [2, 300, 1_500].map(|n| "x".repeat(n)).into();
    for text in &texts {
        sim.send_dm(ALICE, BOB, text);
        sim.send_room(ALICE, room, text);
        sim.send_dm(ALICE, CAROL, text);
    }
    assert!(sim.run_until(MINUTE, |s| {
        let bob = s.room_texts(BOB, room);
        texts.iter().all(|t| bob.iter().any(|(b, _)| b == t))
            && s.dm_timeline(BOB, ALICE).len() == texts.len()
            // Carol's three messages and her room's three.
            && s.relay_envelopes() >= 6
    }));

    // Every frame Alice sent, by path and kind, with the sizes seen.
    let mut sizes: BTreeMap<(String, &str), Vec<usize>> = BTreeMap::new();
    for w in sim.wire().iter().filter(|w| w.from == ALICE) {
        let kind = match w.path {
            Path::Deposit => "sealed",
            _ => kind(&w.frame),
        };
        sizes
            .entry((format!("{:?}", w.path), kind))
            .or_default()
            .push(w.frame.len());
    }
    for path in ["Direct", "Gossip"] {
        assert!(
            sizes.contains_key(&(path.into(), "room message")),
            "no room message went {path}: {sizes:?}"
        );
    }
    assert!(
        sizes.contains_key(&("Deposit".into(), "sealed")),
        "{sizes:?}"
    );
    assert!(
        sizes.contains_key(&("Direct".into(), "to-device")),
        "{sizes:?}"
    );
    for ((path, kind), lens) in &sizes {
        let want = match (path.as_str(), *kind) {
            (_, "acks") => continue,
            ("Deposit", _) => MESSAGE_FLOOR + SEAL_OVERHEAD,
            _ => MESSAGE_FLOOR,
        };
        assert!(
            lens.iter().all(|l| *l == want),
            "{path} {kind}: sizes {lens:?}, all should be {want}"
        );
    }
}

/// Every distinct room frame Alice sent (a frame sent to several devices,
/// or again, is one message), with its padding cut off.
fn alice_room_frames(sim: &Sim) -> Vec<Vec<u8>> {
    let mut frames: Vec<Vec<u8>> = Vec::new();
    for w in sim.wire().iter().filter(|w| w.from == ALICE) {
        if w.path != Path::Deposit && kind(&w.frame) == "room message" {
            let mut body = w.frame.clone();
            while body.last() == Some(&0) {
                body.pop();
            }
            if !frames.contains(&body) {
                frames.push(body);
            }
        }
    }
    frames
}

fn no_field_repeats_across_messages(gossip: bool) {
    let mut sim = Sim::new(&["alice", "bob", "carol"], 15, |_, c| {
        if gossip {
            c.direct_room_max_devices = 0;
        }
    });
    sim.befriend(ALICE, BOB);
    sim.befriend(ALICE, CAROL);
    sim.befriend(BOB, CAROL);
    let room = sim.create_room(ALICE, "fields", &[BOB, CAROL]);
    assert!(sim.run_until(MINUTE, |s| s.room_members(CAROL, room) == Some(3)));
    sim.record_wire();
    for i in 0..12 {
        sim.send_room(ALICE, room, &format!("message {i}"));
    }
    assert!(sim.run_until(MINUTE, |s| s.room_texts(BOB, room).len() == 12));

    let frames = alice_room_frames(&sim);
    assert!(frames.len() >= 12, "{} frames", frames.len());
    // Past the frame's version and kind, every field is fresh: no run of
    // 16 bytes (a session id, a key, a topic, an index with its
    // neighbours) appears in two messages.
    const RUN: usize = 16;
    let mut seen: std::collections::HashMap<&[u8], usize> = Default::default();
    for (n, frame) in frames.iter().enumerate() {
        let Ok(Envelope::Room(sealed)) = Envelope::from_frame(&{
            let mut f = frame.clone();
            f.resize(MESSAGE_FLOOR, 0);
            f
        }) else {
            panic!("frame {n} is not a room message");
        };
        // The sealed part fills the bucket whatever the message.
        assert_eq!(
            sealed.sealed.len(),
            MESSAGE_FLOOR - SEALED_ROOM_OVERHEAD + TAG_BYTES,
            "{n}"
        );
        for run in frame[2..].windows(RUN) {
            if let Some(m) = seen.insert(run, n)
                && m != n
            {
                panic!("messages {m} and {n} share the bytes {run:02x?}");
            }
        }
    }
}

#[test]
fn no_field_of_a_devices_room_frames_repeats_across_messages_on_gossip() {
    no_field_repeats_across_messages(true);
}

#[test]
fn no_field_of_a_devices_room_frames_repeats_across_messages_by_fan_out() {
    no_field_repeats_across_messages(false);
}
