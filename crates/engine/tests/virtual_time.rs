//! The engine's delivery logic in virtual time: cores stepped by the
//! `safemeet-test-utils` harness, with no sockets and no real sleeping.
//! An hour of retries takes milliseconds.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::time::Duration;

use safemeet_engine::{LogEntry, MessageState};
use safemeet_test_utils::sim::Sim;

const ALICE: usize = 0;
const BOB: usize = 1;
const CAROL: usize = 2;
const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

#[test]
fn retries_back_off_and_a_recipient_back_after_an_hour_gets_the_message() {
    let mut sim = Sim::new(&["alice", "bob"], 1, |_, _| {});
    sim.befriend(ALICE, BOB);
    // Their introductions cross before Bob goes.
    sim.run_for(Duration::from_secs(5));
    sim.set_online(BOB, false);
    let start = sim.elapsed();
    sim.send_dm(ALICE, BOB, "are you there?");
    sim.run_for(HOUR);

    // Two items (the room key and the message), each retried on its own.
    let mut items: std::collections::BTreeMap<_, Vec<Duration>> = Default::default();
    for s in sim.sent() {
        if s.from == ALICE && s.to == Some(BOB) && s.at >= start {
            items
                .entry(format!("{:?}", s.token))
                .or_default()
                .push(s.at);
        }
    }
    assert_eq!(items.len(), 2, "{items:?}");
    let (initial, max) = (Duration::from_secs(1), Duration::from_secs(300));
    for tries in items.values() {
        assert!(tries.len() >= 10, "{} tries in an hour", tries.len());
        assert!(tries.len() <= 40, "{} tries in an hour", tries.len());
        assert!(tries.iter().all(|t| *t >= start));
        // Each wait is drawn between half and all of the doubled delay
        // (from 1 s, at most 5 minutes), after the failure came back.
        for (k, pair) in tries.windows(2).enumerate() {
            let waited = pair[1] - pair[0] - sim.latency;
            let full = (initial * 2u32.pow((k as u32 + 1).min(16))).min(max);
            assert!(
                waited + Duration::from_millis(1) >= full / 2 && waited <= full,
                "wait {k}: {waited:?} for a delay of {full:?}"
            );
        }
    }
    assert_eq!(
        sim.dm_state(ALICE, BOB, "are you there?"),
        Some(MessageState::Sent)
    );

    sim.set_online(BOB, true);
    let delivered = sim.run_until(6 * MINUTE, |s| {
        s.dm_state(ALICE, BOB, "are you there?") == Some(MessageState::Delivered)
    });
    assert!(
        delivered,
        "delivered once bob is back (within the longest backoff)"
    );
    assert!(sim.dm_state(BOB, ALICE, "are you there?").is_some());
}

#[test]
fn the_gossip_window_holds_messages_back_and_the_direct_fallback_follows_the_grace() {
    let mut sim = Sim::new(&["alice", "bob", "carol"], 2, |_, c| {
        c.gossip_window = 4;
        c.gossip_grace = Duration::from_secs(1);
        // A room of three would go by direct fan-out: put it on gossip.
        c.direct_room_max_devices = 0;
    });
    sim.befriend(ALICE, BOB);
    sim.befriend(ALICE, CAROL);
    // Their introductions arrive before the room's keys are shared (each
    // opens the Olm session the keys then go over).
    sim.run_for(Duration::from_secs(5));
    let room = sim.create_room(ALICE, "window", &[BOB, CAROL]);
    assert!(sim.run_until(MINUTE, |s| {
        !s.rooms(BOB).is_empty() && !s.rooms(CAROL).is_empty()
    }));
    sim.run_for(Duration::from_secs(5));
    // Gossip to Carol is lost: she gets the messages only directly.
    sim.nodes[CAROL].drop_gossip = true;

    let sent_at = sim.elapsed();
    let before = sim.trace().len();
    for i in 0..10 {
        sim.send_room(ALICE, room, &format!("w{i}"));
    }
    let published: usize = sim.trace()[before..]
        .iter()
        .filter_map(|l| l.split("n0 publish ").nth(1))
        .map(|n| n.parse::<usize>().unwrap())
        .sum();
    assert_eq!(published, 4, "no more than the window goes out at once");
    assert_eq!(sim.nodes[ALICE].core.stats().gossip_window, 4);

    let all = sim.run_until(MINUTE, |s| {
        s.room_texts(BOB, room).len() == 10 && s.room_texts(CAROL, room).len() == 10
    });
    assert!(all, "every message reached both");
    // Bob acknowledged what came over gossip: nothing was delivered to him
    // directly. Carol got all ten directly, each after its grace.
    let later = |times: Vec<Duration>| times.into_iter().filter(|t| *t >= sent_at).count();
    assert_eq!(later(sim.deliveries(ALICE, BOB)), 0);
    let to_carol: Vec<Duration> = sim
        .deliveries(ALICE, CAROL)
        .into_iter()
        .filter(|t| *t >= sent_at)
        .collect();
    assert_eq!(to_carol.len(), 10);
    assert!(
        to_carol
            .iter()
            .all(|t| *t >= sent_at + Duration::from_secs(1))
    );
    assert!(
        sim.room_texts(ALICE, room)
            .iter()
            .all(|(_, s)| *s == MessageState::Delivered)
    );
}

#[test]
fn an_unreachable_recipient_gets_its_message_through_the_relay_and_drains_it_later() {
    let relay = Sim::relay_address();
    let mut sim = Sim::new(&["alice", "bob"], 3, |i, c| {
        if i == BOB {
            c.net.relays = vec![relay.clone()];
        }
    });
    sim.befriend(ALICE, BOB);
    sim.run_for(Duration::from_secs(5));
    sim.set_online(BOB, false);
    sim.send_dm(ALICE, BOB, "while you were out");
    let stored = sim.run_until(MINUTE, |s| {
        matches!(
            s.dm_state(ALICE, BOB, "while you were out"),
            Some(MessageState::StoredAtRelay { .. })
        )
    });
    assert!(stored, "left on bob's relay");
    assert!(sim.relay_envelopes() >= 2, "the room key and the message");
    // Nothing more goes to bob directly once the relay holds it.
    let tries = sim.deliveries(ALICE, BOB).len();
    sim.run_for(10 * MINUTE);
    assert_eq!(sim.deliveries(ALICE, BOB).len(), tries);

    sim.set_online(BOB, true);
    let drained = sim.run_until(5 * MINUTE, |s| {
        s.dm_state(BOB, ALICE, "while you were out").is_some()
            && s.dm_state(ALICE, BOB, "while you were out") == Some(MessageState::Delivered)
    });
    assert!(drained, "bob drained his mailbox and acknowledged");
    assert_eq!(sim.relay_envelopes(), 0, "the relay ends empty");
}

#[test]
fn late_acknowledgements_change_nothing_twice() {
    let mut sim = Sim::new(&["alice", "bob"], 4, |_, c| {
        c.gossip_grace = Duration::from_secs(1);
    });
    sim.befriend(ALICE, BOB);
    let room = sim.create_room(ALICE, "late", &[BOB]);
    assert!(sim.run_until(MINUTE, |s| !s.rooms(BOB).is_empty()));
    sim.run_for(Duration::from_secs(5));
    // Bob's acknowledgements take longer than the grace: Alice delivers
    // directly first, and the acknowledgement comes after it is done.
    sim.ack_latency = Some(Duration::from_secs(5));
    sim.send_room(ALICE, room, "slow ack");
    sim.run_for(MINUTE);
    assert_eq!(
        sim.room_texts(BOB, room),
        vec![("slow ack".to_owned(), MessageState::Received)]
    );
    let delivered = sim
        .log(ALICE)
        .into_iter()
        .filter(|e| matches!(e, LogEntry::Delivered { .. }))
        .count();
    assert_eq!(delivered, 1, "delivered once, whichever answer came first");
    assert_eq!(
        sim.room_texts(ALICE, room),
        vec![("slow ack".to_owned(), MessageState::Delivered)]
    );
    assert_eq!(sim.nodes[ALICE].core.stats().pending, 0);
}

/// Alice writes to Bob while he is away, through a relay, and he comes
/// back; returns the trace.
fn scenario(seed: u64, shift_wall: i64) -> (Vec<String>, Vec<Duration>) {
    let mut sim = Sim::new(&["alice", "bob"], seed, |_, _| {});
    sim.befriend(ALICE, BOB);
    sim.set_online(BOB, false);
    for i in 0..3 {
        sim.send_dm(ALICE, BOB, &format!("m{i}"));
    }
    sim.run_for(5 * MINUTE);
    sim.shift_wall_clock(shift_wall);
    sim.run_for(25 * MINUTE);
    sim.set_online(BOB, true);
    sim.run_for(10 * MINUTE);
    (sim.trace().to_vec(), sim.deliveries(ALICE, BOB))
}

#[test]
fn a_seeded_run_repeats_exactly() {
    let (first, _) = scenario(42, 0);
    let (second, _) = scenario(42, 0);
    assert!(first.len() > 50, "{} outputs", first.len());
    assert_eq!(first, second);
    // And the seed matters: the retry jitter differs.
    let (other, _) = scenario(43, 0);
    assert_ne!(first, other);
}

#[test]
fn a_changed_wall_clock_does_not_move_retries() {
    let (_, steady) = scenario(7, 0);
    let (_, back) = scenario(7, -86_400_000);
    let (_, ahead) = scenario(7, 86_400_000);
    assert!(steady.len() > 5);
    assert_eq!(steady, back);
    assert_eq!(steady, ahead);
}

#[test]
fn a_blocked_members_gossip_is_dropped_without_penalty_and_unblock_restores() {
    use safemeet_engine::Command;
    let mut sim = Sim::new(&["alice", "bob", "carol"], 3, |_, c| {
        // A room of three would go by direct fan-out: put it on gossip.
        c.direct_room_max_devices = 0;
    });
    sim.befriend(ALICE, BOB);
    sim.befriend(ALICE, CAROL);
    sim.befriend(BOB, CAROL);
    let room = sim.create_room(ALICE, "loud", &[BOB, CAROL]);
    assert!(sim.run_until(MINUTE, |s| {
        !s.rooms(BOB).is_empty() && !s.rooms(CAROL).is_empty()
    }));
    sim.run_for(Duration::from_secs(5));
    let alice = sim.nodes[ALICE].core.user_id();
    sim.ask(BOB, Command::Block(alice)).unwrap();

    let before = sim.trace().len();
    sim.send_room(ALICE, room, "from a blocked member");
    assert!(sim.run_until(MINUTE, |s| s.room_texts(CAROL, room).len() == 1));
    // Past the gossip grace and the direct fallback's retries.
    sim.run_for(10 * MINUTE);
    assert!(
        sim.room_texts(BOB, room).is_empty(),
        "nothing stored or shown"
    );
    let bob_lines: Vec<&String> = sim.trace()[before..]
        .iter()
        .filter(|l| l.contains(" n1 "))
        .collect();
    assert!(
        bob_lines.iter().any(|l| l.ends_with("verdict false")),
        "the gossip frame was not passed on: {bob_lines:?}"
    );
    assert!(
        !bob_lines.iter().any(|l| l.contains("reject")),
        "a blocked author's frame costs its forwarder nothing"
    );
    assert!(
        bob_lines.iter().any(|l| l.ends_with("answer Refused")),
        "the direct fallback was refused"
    );
    assert!(
        !bob_lines.iter().any(|l| l.ends_with("answer Ack")),
        "no acknowledgement of anything of Alice's: {bob_lines:?}"
    );

    sim.ask(BOB, Command::Unblock(alice)).unwrap();
    sim.send_room(ALICE, room, "heard again");
    assert!(sim.run_until(MINUTE, |s| {
        s.room_texts(BOB, room)
            .iter()
            .any(|(t, _)| t == "heard again")
    }));
    assert_eq!(sim.room_texts(BOB, room).len(), 1);
}
