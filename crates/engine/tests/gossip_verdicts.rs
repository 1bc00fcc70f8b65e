//! What the engine tells gossipsub about each frame: forward what it
//! stored, reject (which costs the peer that passed it on) only what fails
//! to decode or to authenticate, and merely ignore what it cannot read yet.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::time::Duration;

use safemeet_proto::Envelope;
use safemeet_proto::envelope::{AckEnvelope, SealedRoomEnvelope};
use safemeet_test_utils::sim::Sim;

const ALICE: usize = 0;
const BOB: usize = 1;
const CAROL: usize = 2;
const MINUTE: Duration = Duration::from_secs(60);

#[test]
fn forgeries_are_rejected_and_frames_not_yet_readable_only_ignored() {
    // Every room is a gossip room.
    let mut sim = Sim::new(&["alice", "bob", "carol"], 21, |_, c| {
        c.direct_room_max_devices = 0;
    });
    sim.befriend(ALICE, BOB);
    sim.befriend(ALICE, CAROL);
    sim.befriend(BOB, CAROL);
    let room = sim.create_room(ALICE, "room", &[BOB, CAROL]);
    assert!(sim.run_until(MINUTE, |s| {
        s.room_members(BOB, room) == Some(3) && s.room_members(CAROL, room) == Some(3)
    }));
    sim.send_room(ALICE, room, "hello");
    assert!(
        sim.run_until(MINUTE, |s| s.nodes[CAROL].verdicts.contains(&(true, false))),
        "carol forwards what she stored"
    );
    let topic = sim.room_topic(CAROL, room).unwrap();
    let before = sim.nodes[CAROL].verdicts.len();

    // Acknowledgements go directly, never on gossip: a forgery.
    let acks = Envelope::Acks(AckEnvelope {
        event_ids: Vec::new(),
    })
    .to_frame()
    .unwrap();
    sim.inject_gossip(CAROL, topic.clone(), acks);
    // A room frame no key of hers opens: perhaps its room key is still on
    // its way. Not penalised.
    let unreadable = Envelope::Room(SealedRoomEnvelope {
        nonce: [1; 24],
        hint: [2; 8],
        sealed: vec![3; 200],
    })
    .to_frame()
    .unwrap();
    sim.inject_gossip(CAROL, topic, unreadable);
    sim.run_for(Duration::from_secs(1));
    assert_eq!(
        &sim.nodes[CAROL].verdicts[before..],
        &[(false, true), (false, false)]
    );
}
