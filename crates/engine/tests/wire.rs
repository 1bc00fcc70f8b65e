//! What the frames a device sends show to whoever carries them: cores in
//! virtual time (the `safemeet-test-utils` simulator), every frame recorded
//! as it leaves a node.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::collections::BTreeMap;
use std::time::Duration;

use safemeet_proto::envelope::Envelope;
use safemeet_proto::mailbox::SEAL_OVERHEAD;
use safemeet_proto::padding::MESSAGE_FLOOR;
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
