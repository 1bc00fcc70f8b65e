//! Group rooms in virtual time: the chain of states from the creator
//! (forged states refused), and the rotation of the room secret when a
//! member leaves or is removed (no frame of the room reaches them after
//! it, whatever the path: gossip or direct delivery).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::time::Duration;

use safemeet_engine::{Command, DeliveryToken, MessageState, Response};
use safemeet_proto::RoomId;
use safemeet_proto::event::{EventContent, ROOM_STATE_VERSION, RoomState};
use safemeet_proto::room::{RoomSecret, room_id_for};
use safemeet_test_utils::sim::Sim;

const ALICE: usize = 0;
const BOB: usize = 1;
const CAROL: usize = 2;
const MINUTE: Duration = Duration::from_secs(60);

/// Three users who all know each other.
fn three(seed: u64) -> Sim {
    three_on(seed, false)
}

/// Three users who all know each other; with `gossip`, every room is a
/// gossip room (a room this small would otherwise go by direct fan-out,
/// with no topic to keep listening on).
fn three_on(seed: u64, gossip: bool) -> Sim {
    let mut sim = Sim::new(&["alice", "bob", "carol"], seed, |_, c| {
        if gossip {
            c.direct_room_max_devices = 0;
        }
    });
    sim.befriend(ALICE, BOB);
    sim.befriend(ALICE, CAROL);
    sim.befriend(BOB, CAROL);
    sim
}

fn admins(sim: &mut Sim, i: usize, room: RoomId) -> Option<Vec<usize>> {
    let users: Vec<_> = sim.nodes.iter().map(|n| n.user).collect();
    sim.rooms(i)
        .into_iter()
        .find(|r| r.room_id == room)
        .map(|r| {
            r.admins
                .iter()
                .filter_map(|a| users.iter().position(|u| u == a))
                .collect()
        })
}

fn has_text(sim: &mut Sim, i: usize, room: RoomId, text: &str) -> bool {
    sim.rooms(i).iter().any(|r| r.room_id == room)
        && sim.room_texts(i, room).iter().any(|(t, _)| t == text)
}

#[test]
fn a_forged_first_state_from_a_contact_is_refused_and_the_real_ones_are_taken() {
    const MALLORY: usize = 2;
    let mut sim = Sim::new(&["alice", "bob", "mallory", "carol"], 11, |_, _| {});
    sim.befriend(ALICE, BOB);
    sim.befriend(BOB, MALLORY);
    sim.befriend(ALICE, 3);
    // Alice's first state waits while she is offline.
    sim.set_online(ALICE, false);
    let room = sim.create_room(ALICE, "real", &[BOB]);

    // Mallory, a contact of Bob's, claims Alice's room for herself...
    let mallory = sim.nodes[MALLORY].user;
    let bob = sim.nodes[BOB].user;
    let forged = |creator, nonce| RoomState {
        version: ROOM_STATE_VERSION,
        name: "real".into(),
        secret: RoomSecret::from_bytes([9; 32]),
        members: vec![mallory, bob],
        admins: vec![creator],
        banned: Vec::new(),
        creator,
        nonce,
        epoch: 0,
        prev: None,
        added: vec![bob],
    };
    let to = [MALLORY, BOB];
    sim.send_unchecked(
        MALLORY,
        room,
        &to,
        EventContent::RoomState(Box::new(forged(mallory, [1; 16]))),
    )
    .unwrap();
    // ...or names Alice as its creator, but sends the state herself.
    let alice = sim.nodes[ALICE].user;
    let mut as_alice = forged(alice, [2; 16]);
    as_alice.members = vec![alice, mallory, bob];
    sim.send_unchecked(
        MALLORY,
        room,
        &to,
        EventContent::RoomState(Box::new(as_alice)),
    )
    .unwrap();
    sim.run_for(MINUTE);
    assert!(
        sim.deliveries(MALLORY, BOB).len() >= 2,
        "the forged states reached bob"
    );
    assert!(
        admins(&mut sim, BOB, room).is_none(),
        "bob took a forged state"
    );
    // Mallory's own room ids derive from her, never Alice's.
    assert_ne!(room_id_for(&mallory, &[1; 16]), room);

    // Alice comes back: her state is taken, with her as admin.
    sim.set_online(ALICE, true);
    assert!(sim.run_until(10 * MINUTE, |s| admins(s, BOB, room).is_some()));
    assert_eq!(admins(&mut sim, BOB, room), Some(vec![ALICE]));
    // And her later states too.
    let carol = sim.nodes[3].user;
    sim.ask(ALICE, Command::RoomInvite { room, user: carol })
        .unwrap();
    assert!(sim.run_until(MINUTE, |s| s.room_members(BOB, room) == Some(3)));
    sim.send_room(ALICE, room, "hello");
    assert!(sim.run_until(MINUTE, |s| has_text(s, BOB, room, "hello")));
}

/// Carol leaves (or Alice, the admin, removes her) while Carol's node keeps
/// listening on every topic it had: after the new state, no frame of the
/// room reaches Carol, while Alice and Bob go on talking on a new topic.
fn no_frame_reaches_a_member_after_they_go(remove: bool, seed: u64) {
    let mut sim = three_on(seed, true);
    let room = sim.create_room(ALICE, "r", &[BOB, CAROL]);
    assert!(sim.run_until(MINUTE, |s| {
        s.room_members(BOB, room) == Some(3) && s.room_members(CAROL, room) == Some(3)
    }));
    sim.send_room(BOB, room, "before");
    assert!(sim.run_until(MINUTE, |s| {
        has_text(s, CAROL, room, "before") && has_text(s, ALICE, room, "before")
    }));
    let old_topic = sim.room_topic(ALICE, room).unwrap();
    sim.nodes[CAROL].keep_topics = true;

    if remove {
        let carol = sim.nodes[CAROL].user;
        // Not by a non-admin.
        let refused = sim.ask(BOB, Command::RoomRemove { room, user: carol });
        assert!(refused.unwrap_err().contains("admins"));
        sim.ask(ALICE, Command::RoomRemove { room, user: carol })
            .unwrap();
    } else {
        sim.ask(CAROL, Command::RoomLeave(room)).unwrap();
    }
    // The remaining members take the new state, on a new topic.
    assert!(sim.run_until(MINUTE, |s| {
        s.room_members(BOB, room) == Some(2)
            && s.room_topic(BOB, room) != Some(old_topic.clone())
            && s.room_topic(ALICE, room) == s.room_topic(BOB, room)
    }));
    assert!(sim.rooms(CAROL).is_empty(), "carol is out");
    // Frames sent before still finish; then nothing more may reach Carol.
    sim.run_for(MINUTE);
    let new_topic = sim.room_topic(ALICE, room).unwrap();
    assert_ne!(new_topic, old_topic);
    let mut topics = sim.nodes[ALICE].core.room_topics(&room).unwrap();
    assert_eq!(topics.remove(0), new_topic);
    assert_eq!(
        topics,
        vec![old_topic],
        "the old secret is kept for late frames"
    );
    let sent_before = sim.sent().len();
    let heard_before = sim.nodes[CAROL].gossip_heard.len();
    let bob_heard_before = sim.nodes[BOB].gossip_heard.len();

    for i in 0..3 {
        sim.send_room(ALICE, room, &format!("from alice {i}"));
        sim.send_room(BOB, room, &format!("from bob {i}"));
    }
    assert!(sim.run_until(MINUTE, |s| {
        (0..3).all(|i| {
            has_text(s, BOB, room, &format!("from alice {i}"))
                && has_text(s, ALICE, room, &format!("from bob {i}"))
        })
    }));
    // Delivered, acknowledged: the members go on talking.
    assert!(sim.run_until(MINUTE, |s| {
        s.room_texts(ALICE, room)
            .iter()
            .filter(|(t, _)| t.starts_with("from alice"))
            .all(|(_, st)| *st == MessageState::Delivered)
    }));
    sim.run_for(MINUTE);
    let to_carol: Vec<_> = sim.sent()[sent_before..]
        .iter()
        .filter(|s| s.to == Some(CAROL) && s.from != CAROL)
        .collect();
    assert!(to_carol.is_empty(), "frames sent to carol: {to_carol:?}");
    assert!(
        sim.sent()[sent_before..].iter().any(|s| s.from == ALICE
            && s.to == Some(BOB)
            && matches!(s.token, DeliveryToken::Outbox(_)))
            || sim.nodes[BOB].gossip_heard.len() > bob_heard_before,
        "the members reached each other"
    );
    assert_eq!(
        sim.nodes[CAROL].gossip_heard.len(),
        heard_before,
        "gossip reached carol on the old topic"
    );
}

#[test]
fn a_member_who_left_gets_no_frame_of_the_room_after_the_rotation() {
    no_frame_reaches_a_member_after_they_go(false, 21);
}

#[test]
fn a_removed_member_gets_no_frame_of_the_room_after_the_rotation() {
    no_frame_reaches_a_member_after_they_go(true, 31);
}

#[test]
fn a_banned_member_cannot_be_added_again_and_errors_are_clear() {
    let mut sim = three(41);
    let room = sim.create_room(ALICE, "r", &[BOB, CAROL]);
    assert!(sim.run_until(MINUTE, |s| s.room_members(CAROL, room) == Some(3)));
    let (bob, carol) = (sim.nodes[BOB].user, sim.nodes[CAROL].user);

    let err = sim
        .ask(BOB, Command::RoomBan { room, user: carol })
        .unwrap_err();
    assert!(err.contains("only the room's admins"), "{err}");
    let err = sim
        .ask(
            ALICE,
            Command::RoomRemove {
                room,
                user: sim.nodes[ALICE].user,
            },
        )
        .unwrap_err();
    assert!(err.contains("leave"), "{err}");
    let unknown = RoomId::from_bytes([3; 16]);
    let err = sim
        .ask(
            ALICE,
            Command::RoomBan {
                room: unknown,
                user: carol,
            },
        )
        .unwrap_err();
    assert!(err.contains("no room"), "{err}");

    assert!(matches!(
        sim.ask(ALICE, Command::RoomBan { room, user: carol }),
        Ok(Response::Done)
    ));
    assert!(sim.run_until(MINUTE, |s| {
        s.room_members(BOB, room) == Some(2) && s.rooms(CAROL).is_empty()
    }));
    let err = sim
        .ask(ALICE, Command::RoomRemove { room, user: carol })
        .unwrap_err();
    assert!(err.contains("not a member"), "{err}");
    let err = sim
        .ask(ALICE, Command::RoomInvite { room, user: carol })
        .unwrap_err();
    assert!(err.contains("banned"), "{err}");
    // Bob is no admin and cannot add her either.
    let err = sim
        .ask(BOB, Command::RoomInvite { room, user: carol })
        .unwrap_err();
    assert!(err.contains("admins"), "{err}");
    // The room goes on without her.
    sim.send_room(ALICE, room, "still here");
    assert!(sim.run_until(MINUTE, |s| has_text(s, BOB, room, "still here")));
    assert_eq!(sim.room_members(ALICE, room), Some(2));
    assert!(sim.rooms(BOB)[0].members.contains(&bob));
}

#[test]
fn a_member_who_is_no_admin_cannot_ban_or_issue_a_state_and_nothing_breaks() {
    let mut sim = three(51);
    let room = sim.create_room(ALICE, "r", &[BOB, CAROL]);
    assert!(sim.run_until(MINUTE, |s| {
        s.room_members(BOB, room) == Some(3) && s.room_members(CAROL, room) == Some(3)
    }));
    let (alice, bob, carol) = (
        sim.nodes[ALICE].user,
        sim.nodes[BOB].user,
        sim.nodes[CAROL].user,
    );
    let mark = sim.trace().len();
    // Bob bans Carol, and issues a state that makes him the admin.
    let ban = EventContent::Membership(safemeet_proto::event::Membership {
        user_id: carol,
        change: safemeet_proto::event::MembershipChange::Ban,
    });
    sim.send_unchecked(BOB, room, &[ALICE, BOB, CAROL], ban)
        .unwrap();
    let state = RoomState {
        version: ROOM_STATE_VERSION,
        name: "mine".into(),
        secret: RoomSecret::from_bytes([9; 32]),
        members: vec![bob, alice],
        admins: vec![bob],
        banned: vec![carol],
        creator: alice,
        nonce: [0; 16],
        epoch: 1,
        prev: Some(safemeet_proto::room::StateHash::from_bytes([0; 32])),
        added: Vec::new(),
    };
    sim.send_unchecked(
        BOB,
        room,
        &[ALICE, BOB, CAROL],
        EventContent::RoomState(Box::new(state)),
    )
    .unwrap();
    sim.run_for(MINUTE);
    let refused = |sim: &Sim, node: &str| {
        sim.trace()[mark..]
            .iter()
            .filter(|l| l.contains(&format!(" {node} answer Refused")))
            .count()
    };
    assert!(refused(&sim, "n0") >= 2, "alice refused both");
    assert!(refused(&sim, "n2") >= 2, "carol refused both");
    for i in [ALICE, CAROL] {
        assert_eq!(sim.room_members(i, room), Some(3));
        assert_eq!(admins(&mut sim, i, room), Some(vec![ALICE]));
    }
    sim.send_room(ALICE, room, "still one room");
    assert!(sim.run_until(MINUTE, |s| has_text(s, CAROL, room, "still one room")));
}

#[test]
fn members_who_all_leave_and_are_invited_back_take_part_again() {
    let mut sim = Sim::new(&["alice", "bob", "carol", "dave"], 21, |_, _| {});
    for a in 0..4 {
        for b in a + 1..4 {
            sim.befriend(a, b);
        }
    }
    let room = sim.create_room(ALICE, "churn", &[BOB, CAROL, 3]);
    assert!(sim.run_until(MINUTE, |s| {
        (1..4).all(|i| s.room_members(i, room) == Some(4))
    }));
    for i in 1..4 {
        sim.ask(i, Command::RoomLeave(room)).unwrap();
    }
    assert!(sim.run_until(MINUTE, |s| s.room_members(ALICE, room) == Some(1)));
    for i in 1..4 {
        let user = sim.nodes[i].user;
        sim.ask(ALICE, Command::RoomInvite { room, user }).unwrap();
    }
    let ok = sim.run_until(MINUTE, |s| {
        (0..4).all(|i| s.room_members(i, room) == Some(4))
    });
    let views: Vec<_> = (0..4).map(|i| sim.room_members(i, room)).collect();
    assert!(ok, "members seen by each: {views:?}");
    sim.send_room(BOB, room, "back again");
    assert!(
        sim.run_until(MINUTE, |s| [ALICE, CAROL, 3].iter().all(|i| has_text(
            s,
            *i,
            room,
            "back again"
        )))
    );
}

/// What the creator sends while everyone else has left goes to no one:
/// not to the members it invites back later (they were not recipients,
/// and hold no key for it), who would only refuse it.
#[test]
fn what_is_sent_while_alone_in_a_room_goes_to_no_one_who_comes_back() {
    let mut sim = three(23);
    let room = sim.create_room(ALICE, "quiet", &[BOB, CAROL]);
    assert!(sim.run_until(MINUTE, |s| {
        [BOB, CAROL]
            .iter()
            .all(|i| s.room_members(*i, room) == Some(3))
    }));
    for i in [BOB, CAROL] {
        sim.ask(i, Command::RoomLeave(room)).unwrap();
    }
    assert!(sim.run_until(MINUTE, |s| s.room_members(ALICE, room) == Some(1)));
    sim.send_room(ALICE, room, "to no one");
    sim.run_for(Duration::from_secs(5));
    // Done, not kept aside for whoever comes in next (nor is the state
    // Alice issued alone).
    let stats = sim.nodes[ALICE].core.stats();
    assert_eq!(stats.unrouted, 0, "{stats:?}");
    for i in [BOB, CAROL] {
        let user = sim.nodes[i].user;
        sim.ask(ALICE, Command::RoomInvite { room, user }).unwrap();
    }
    assert!(sim.run_until(MINUTE, |s| {
        (0..3).all(|i| s.room_members(i, room) == Some(3))
    }));
    sim.send_room(ALICE, room, "to everyone");
    assert!(
        sim.run_until(MINUTE, |s| [BOB, CAROL].iter().all(|i| has_text(
            s,
            *i,
            room,
            "to everyone"
        )))
    );
    for i in [BOB, CAROL] {
        assert!(!has_text(&mut sim, i, room, "to no one"));
    }
}
