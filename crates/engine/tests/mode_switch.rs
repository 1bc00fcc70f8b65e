//! A room switching between direct fan-out and gossip as it grows and
//! shrinks, on three engines over the in-process memory transport (real
//! libp2p: Noise, yamux, the gossip gate, request-response).
//!
//! The limit is overridden to 2 devices, so a room of two goes by direct
//! fan-out and a third member puts it on gossip. Real engines rather than
//! the simulator: the switch is only half of it; the other half is the
//! network layer's gate taking the members' peers in and letting them go
//! again, and messages sent while both happen (some on the old path, some
//! on the new) arriving exactly once.
//!
//! Each phase waits for what the switch must show from outside the
//! engine: the gate's allow-set ([`Handle::gossip_peers`]), the topics
//! subscribed to ([`Handle::gossip_topic_count`]: leaving or removing a
//! member rotates the room's secret, hence its topic, so the old topic
//! must be dropped too) and the room's gossip mesh
//! ([`Handle::room_mesh_peers`]).
//!
//! [`Handle::gossip_peers`]: safemeet_engine::Handle::gossip_peers
//! [`Handle::gossip_topic_count`]: safemeet_engine::Handle::gossip_topic_count
//! [`Handle::room_mesh_peers`]: safemeet_engine::Handle::room_mesh_peers

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::collections::{BTreeSet, HashMap};

use libp2p::PeerId;
use safemeet_engine::{Handle, LogEntry};
use safemeet_proto::RoomId;
use safemeet_test_utils::wait_until;

/// Messages each sender sends per phase.
const PER_PHASE: usize = 4;

/// How many times each message text of `room` is in `engine`'s log.
async fn counts(engine: &Handle, room: RoomId) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for (_, e) in engine.events(0, 100_000).await.unwrap() {
        if let LogEntry::Message { room_id, entry } = e
            && room_id == room
        {
            *counts.entry(entry.text).or_default() += 1;
        }
    }
    counts
}

async fn mesh(engine: &Handle, room: RoomId) -> usize {
    engine.room_mesh_peers(room).await.unwrap()
}

async fn topics(engine: &Handle) -> usize {
    engine.gossip_topic_count().await.unwrap()
}

async fn gossip_peers(engine: &Handle) -> BTreeSet<PeerId> {
    engine.gossip_peers().await.unwrap().into_iter().collect()
}

/// Sends [`PER_PHASE`] messages from each sender, interleaved; returns
/// the texts, by sender index.
async fn send_phase(
    senders: &[(usize, &Handle)],
    room: RoomId,
    phase: &str,
) -> Vec<(usize, String)> {
    let mut sent = Vec::new();
    for i in 0..PER_PHASE {
        for (who, engine) in senders {
            let text = format!("{phase} from {who} #{i}");
            engine.send_room(room, &text).await.unwrap();
            sent.push((*who, text));
        }
    }
    sent
}

/// Waits until every engine in `to` has each text in `sent` not its own,
/// and checks none has any text twice.
async fn all_arrive(to: &[(usize, &Handle)], room: RoomId, sent: &[(usize, String)]) {
    for (who, engine) in to {
        let wanted: Vec<&String> = sent
            .iter()
            .filter(|(from, _)| from != who)
            .map(|(_, t)| t)
            .collect();
        let got = wait_until(
            "every message reaches every member",
            || counts(engine, room),
            |c| wanted.iter().all(|t| c.contains_key(*t)),
        )
        .await;
        exactly_once(&got, *who);
    }
}

fn exactly_once(counts: &HashMap<String, usize>, who: usize) {
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        twice.is_empty(),
        "member {who} has messages more than once: {twice:?}"
    );
}

#[derive(Clone, Copy)]
enum Shrink {
    /// The third member leaves.
    Leave,
    /// The admin removes the third member.
    Remove,
}

async fn grow_then_shrink(shrink: Shrink) {
    let nodes = safemeet_test_utils::spawn_nodes_with(3, |c| c.direct_room_max_devices = 2).await;
    let (alice, bob, carol) = (&nodes[0].1, &nodes[1].1, &nodes[2].1);
    let room = alice
        .create_room("switching", vec![bob.user_id()])
        .await
        .unwrap();
    wait_until(
        "bob joins",
        || async { bob.rooms().await.unwrap() },
        |r| r.iter().any(|r| r.room_id == room),
    )
    .await;

    // Two devices: direct fan-out, no topic, nobody allowed to gossip.
    let mut sent = send_phase(&[(0, alice), (1, bob)], room, "small").await;
    all_arrive(&[(0, alice), (1, bob)], room, &sent).await;
    for engine in [alice, bob] {
        assert!(gossip_peers(engine).await.is_empty(), "no gossip peers yet");
        assert_eq!(topics(engine).await, 0, "no topic for a small room");
        assert_eq!(mesh(engine, room).await, 0);
    }

    // A third device: the room goes on gossip. Alice and Bob keep talking
    // while it switches.
    alice.room_invite(room, carol.user_id()).await.unwrap();
    sent.extend(send_phase(&[(0, alice), (1, bob)], room, "growing").await);
    let (a, b, c) = (alice.peer_id(), bob.peer_id(), carol.peer_id());
    for (engine, others) in [(alice, [b, c]), (bob, [a, c]), (carol, [a, b])] {
        let want: BTreeSet<PeerId> = others.into_iter().collect();
        wait_until(
            "the gate allows the room's other devices",
            || gossip_peers(engine),
            |p| *p == want,
        )
        .await;
        wait_until(
            "the member is in the room's gossip mesh",
            || mesh(engine, room),
            |n| *n > 0,
        )
        .await;
        assert_eq!(topics(engine).await, 1, "one topic: the room's");
    }
    let big = send_phase(&[(0, alice), (1, bob), (2, carol)], room, "big").await;
    all_arrive(&[(2, carol)], room, &big).await;
    sent.extend(big);
    all_arrive(&[(0, alice), (1, bob)], room, &sent).await;

    // Back to two devices: unsubscribed, and the gate lets nobody gossip.
    match shrink {
        Shrink::Leave => carol.room_leave(room).await.unwrap(),
        Shrink::Remove => alice.room_remove(room, carol.user_id()).await.unwrap(),
    }
    let shrinking = send_phase(&[(0, alice), (1, bob)], room, "shrinking").await;
    for engine in [alice, bob] {
        wait_until(
            "the gate drops every peer",
            || gossip_peers(engine),
            BTreeSet::is_empty,
        )
        .await;
        wait_until(
            "the room has no gossip mesh",
            || mesh(engine, room),
            |n| *n == 0,
        )
        .await;
        wait_until("no topic is left", || topics(engine), |n| *n == 0).await;
    }
    // The member who is gone gossips no more either.
    wait_until("carol drops the topic", || topics(carol), |n| *n == 0).await;
    wait_until(
        "carol's gate drops every peer",
        || gossip_peers(carol),
        BTreeSet::is_empty,
    )
    .await;
    let small = send_phase(&[(0, alice), (1, bob)], room, "small again").await;
    sent.extend(shrinking.iter().cloned());
    sent.extend(small.iter().cloned());
    all_arrive(&[(0, alice), (1, bob)], room, &sent).await;
    for engine in [alice, bob] {
        assert!(
            gossip_peers(engine).await.is_empty(),
            "still no gossip peers"
        );
        assert_eq!(topics(engine).await, 0, "still no topic");
    }
    // The direct path after the shrink skips the member who is gone.
    let at_carol = counts(carol, room).await;
    for (_, text) in &small {
        assert!(!at_carol.contains_key(text), "a former member got {text:?}");
    }
    exactly_once(&at_carol, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_moves_to_gossip_as_it_grows_and_back_when_a_member_leaves() {
    grow_then_shrink(Shrink::Leave).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_moves_back_to_direct_fan_out_when_a_member_is_removed() {
    grow_then_shrink(Shrink::Remove).await;
}
