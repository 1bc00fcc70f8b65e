//! Edits, redactions and expiring messages in virtual time, with a
//! hostile member who lies about whose message it is, floods redactions
//! of messages that never come, and sets a room's expiry without being an
//! admin; a member who is offline while a message is deleted or expires.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::time::Duration;

use safemeet_engine::{
    Command, Conversation, LogEntry, Removal, Response, Revision, TimelineEntry,
};
use safemeet_proto::event::{Edit, EventContent, MessageText, Redaction, RoomSettings};
use safemeet_proto::{EventId, RoomId};
use safemeet_test_utils::sim::Sim;

const ALICE: usize = 0;
const BOB: usize = 1;
const CAROL: usize = 2;
const MINUTE: Duration = Duration::from_secs(60);

/// Alice, Bob and Carol, who all know each other, in Alice's room.
fn club(seed: u64, adjust: impl Fn(usize, &mut safemeet_engine::Config)) -> (Sim, RoomId) {
    let mut sim = Sim::new(&["alice", "bob", "carol"], seed, adjust);
    sim.befriend(ALICE, BOB);
    sim.befriend(ALICE, CAROL);
    sim.befriend(BOB, CAROL);
    let room = sim.create_room(ALICE, "club", &[BOB, CAROL]);
    for i in [BOB, CAROL] {
        sim.ask(i, Command::RoomJoin(room)).ok();
    }
    assert!(sim.run_until(MINUTE, |s| {
        [BOB, CAROL]
            .iter()
            .all(|i| s.room_members(*i, room) == Some(3))
    }));
    (sim, room)
}

fn entries(sim: &mut Sim, i: usize, room: RoomId) -> Vec<TimelineEntry> {
    match sim.ask(i, Command::RoomMessages { room, limit: 1000 }) {
        Ok(Response::Messages(m)) => m,
        other => panic!("no messages: {other:?}"),
    }
}

fn entry(sim: &mut Sim, i: usize, room: RoomId, id: EventId) -> Option<TimelineEntry> {
    entries(sim, i, room).into_iter().find(|e| e.event_id == id)
}

/// Node `i` says `text` in `room`, and every member has it.
fn said(sim: &mut Sim, i: usize, room: RoomId, text: &str) -> EventId {
    sim.send_room(i, room, text);
    assert!(sim.run_until(MINUTE, |s| {
        [ALICE, BOB, CAROL]
            .iter()
            .all(|m| s.room_texts(*m, room).iter().any(|(t, _)| t == text))
    }));
    entries(sim, i, room)
        .into_iter()
        .find(|e| e.text == text)
        .unwrap()
        .event_id
}

fn expiry(sim: &mut Sim, i: usize, conversation: Conversation) -> Option<u64> {
    match sim.ask(i, Command::Expiry(conversation)) {
        Ok(Response::Duration(d)) => d,
        other => panic!("no expiry: {other:?}"),
    }
}

#[test]
fn a_member_who_is_neither_sender_nor_admin_changes_nothing() {
    let (mut sim, room) = club(21, |_, _| {});
    let bobs = said(&mut sim, BOB, room, "bob's words");
    let alices = said(&mut sim, ALICE, room, "alice's words");
    let all = [ALICE, BOB, CAROL];
    // Carol lies: she redacts and edits Bob's and Alice's messages, and
    // sets the room's expiry, none of which is hers to do.
    for target in [bobs, alices] {
        let lies = [
            EventContent::Redaction(Redaction { target }),
            EventContent::Edit(Edit {
                target,
                body: MessageText::new("forged").unwrap(),
            }),
        ];
        for lie in lies {
            sim.send_unchecked(CAROL, room, &all, lie).unwrap();
        }
    }
    let settings = RoomSettings::new(Some(1_000)).unwrap();
    sim.send_unchecked(CAROL, room, &all, EventContent::Settings(settings))
        .unwrap();
    // In her DM with Alice she redacts Bob's room message: a change names
    // a message of its own conversation only (and she is no admin there).
    let dm = safemeet_engine::dm_room_id(&sim.nodes[CAROL].user, &sim.nodes[ALICE].user);
    sim.send_unchecked(
        CAROL,
        dm,
        &[ALICE, CAROL],
        EventContent::Redaction(Redaction { target: bobs }),
    )
    .unwrap();
    // And a flood of redactions of messages that never come.
    for n in 0u32..300 {
        let mut id = [7u8; 32];
        id[..4].copy_from_slice(&n.to_be_bytes());
        let target = EventId::from_bytes(id);
        sim.send_unchecked(
            CAROL,
            room,
            &all,
            EventContent::Redaction(Redaction { target }),
        )
        .unwrap();
    }
    sim.run_for(5 * MINUTE);
    assert!(
        sim.deliveries(CAROL, ALICE).len() >= 300,
        "the lies arrived"
    );
    for i in [ALICE, BOB] {
        for (id, text) in [(bobs, "bob's words"), (alices, "alice's words")] {
            let e = entry(&mut sim, i, room, id).unwrap();
            assert_eq!((e.text.as_str(), e.revision), (text, Revision::Original));
        }
        assert_eq!(expiry(&mut sim, i, Conversation::Room(room)), None);
        assert!(
            !sim.log(i)
                .iter()
                .any(|e| matches!(e, LogEntry::Removed { .. } | LogEntry::Edited { .. })),
            "nothing was changed at {i}"
        );
    }
    // The room goes on.
    said(&mut sim, ALICE, room, "still here");
    // And Carol's own commands say no.
    assert!(sim.ask(CAROL, Command::Redact(bobs)).is_err());
    assert!(
        sim.ask(CAROL, Command::Edit(alices, "mine".into()))
            .is_err()
    );
    assert!(
        sim.ask(
            CAROL,
            Command::SetExpiry {
                conversation: Conversation::Room(room),
                expire_after_ms: Some(1_000),
            }
        )
        .is_err()
    );
}

#[test]
fn the_admin_redacts_anyones_message_and_no_timeline_or_log_keeps_it() {
    let (mut sim, room) = club(22, |_, _| {});
    let bobs = said(&mut sim, BOB, room, "bob's secret");
    let edited = said(&mut sim, BOB, room, "first draft");
    sim.ask(BOB, Command::Edit(edited, "second draft".into()))
        .unwrap();
    sim.ask(ALICE, Command::Redact(bobs)).unwrap();
    assert!(sim.run_until(MINUTE, |s| {
        [ALICE, BOB, CAROL].iter().all(|i| {
            entry(s, *i, room, bobs).is_some_and(|e| e.revision == Revision::Redacted)
                && entry(s, *i, room, edited).is_some_and(|e| e.text == "second draft")
        })
    }));
    for i in [ALICE, BOB, CAROL] {
        assert_eq!(entry(&mut sim, i, room, bobs).unwrap().text, "");
        let e = entry(&mut sim, i, room, edited).unwrap();
        assert!(matches!(e.revision, Revision::Edited { .. }), "{e:?}");
        // The event log names messages as they are now: nowhere the
        // redacted or the earlier text.
        let log = format!("{:?}", sim.log(i));
        assert!(!log.contains("bob's secret") && !log.contains("first draft"));
        assert!(sim.log(i).iter().any(|e| matches!(
            e,
            LogEntry::Removed { event_id, reason: Removal::Redacted, .. } if *event_id == bobs
        )));
        assert!(sim.log(i).iter().any(|e| matches!(
            e,
            LogEntry::Edited { entry, .. } if entry.event_id == edited && entry.text == "second draft"
        )));
    }
    // Only once.
    assert!(sim.ask(ALICE, Command::Redact(bobs)).is_err());
}

#[test]
fn a_message_deleted_before_an_offline_member_got_it_never_reaches_them() {
    let (mut sim, room) = club(23, |_, _| {});
    said(&mut sim, ALICE, room, "before");
    sim.set_online(CAROL, false);
    sim.send_room(ALICE, room, "taken back");
    assert!(sim.run_until(MINUTE, |s| {
        s.room_texts(BOB, room)
            .iter()
            .any(|(t, _)| t == "taken back")
    }));
    let id = entries(&mut sim, ALICE, room)
        .into_iter()
        .find(|e| e.text == "taken back")
        .unwrap()
        .event_id;
    sim.ask(ALICE, Command::Redact(id)).unwrap();
    sim.run_for(MINUTE);
    sim.set_online(CAROL, true);
    sim.send_room(ALICE, room, "after");
    assert!(sim.run_until(30 * MINUTE, |s| {
        s.room_texts(CAROL, room).iter().any(|(t, _)| t == "after")
    }));
    // Carol has what came after; Alice's device stopped sending the
    // deleted message, so Carol never had it, not even as deleted.
    assert!(
        entry(&mut sim, CAROL, room, id).is_none(),
        "the deleted message was still delivered"
    );
}

#[test]
fn expired_messages_leave_every_timeline_and_an_offline_member_drains_them_expired() {
    let relay = Sim::relay_address();
    let (mut sim, room) = club(24, |i, c| {
        if i == CAROL {
            c.net.relays = vec![relay.clone()];
        }
    });
    sim.run_for(Duration::from_secs(5));
    // Carol is away; Alice's message waits on Carol's relay.
    sim.set_online(CAROL, false);
    sim.send_room(ALICE, room, "vanishing");
    assert!(sim.run_until(MINUTE, |s| {
        s.room_texts(BOB, room)
            .iter()
            .any(|(t, _)| t == "vanishing")
            && s.relay_envelopes() >= 1
    }));
    let id = entries(&mut sim, ALICE, room)
        .into_iter()
        .find(|e| e.text == "vanishing")
        .unwrap()
        .event_id;
    // The room gets a 2 s expiry: the message is older, and goes.
    sim.ask(
        ALICE,
        Command::SetExpiry {
            conversation: Conversation::Room(room),
            expire_after_ms: Some(2_000),
        },
    )
    .unwrap();
    sim.run_for(Duration::from_secs(3));
    for i in [ALICE, BOB] {
        assert_eq!(expiry(&mut sim, i, Conversation::Room(room)), Some(2_000));
        assert!(entry(&mut sim, i, room, id).is_none(), "still at {i}");
    }
    // A message sent under the expiry: gone within its 2 s everywhere.
    sim.send_room(BOB, room, "short lived");
    sim.run_for(Duration::from_millis(2_100));
    for i in [ALICE, BOB] {
        assert!(
            !sim.room_texts(i, room)
                .iter()
                .any(|(t, _)| t == "short lived"),
            "still at {i}"
        );
    }
    // Carol comes back an hour later and drains her relay: the message
    // comes, expired, and is deleted before anything else sees it.
    sim.run_for(60 * MINUTE);
    sim.set_online(CAROL, true);
    assert!(sim.run_until(10 * MINUTE, |s| {
        s.log(CAROL).iter().any(|e| {
            matches!(e, LogEntry::Removed { event_id, reason: Removal::Expired, .. } if *event_id == id)
        })
    }));
    assert!(entry(&mut sim, CAROL, room, id).is_none());
    assert_eq!(
        expiry(&mut sim, CAROL, Conversation::Room(room)),
        Some(2_000)
    );
    assert!(
        !format!("{:?}", sim.log(CAROL)).contains("vanishing"),
        "no client hears of it"
    );
}

#[test]
fn after_a_tombstone_nothing_more_is_taken_from_the_deleted_account() {
    let (mut sim, room) = club(25, |_, _| {});
    said(&mut sim, ALICE, room, "before");
    for step in [
        safemeet_engine::DeletionStep::LeaveRooms,
        safemeet_engine::DeletionStep::Tell,
    ] {
        sim.ask(ALICE, Command::DeleteAccount(step)).unwrap();
        sim.run_for(MINUTE);
    }
    let alice = sim.nodes[ALICE].user;
    for i in [BOB, CAROL] {
        let contacts = match sim.ask(i, Command::Contacts) {
            Ok(Response::Contacts(c)) => c,
            other => panic!("{other:?}"),
        };
        let shown = contacts.iter().find(|c| c.user_id == alice).unwrap();
        assert!(shown.deleted, "{shown:?}");
        assert!(shown.devices.is_empty(), "its devices are forgotten");
        assert_eq!(sim.room_members(i, room), Some(2), "alice left first");
    }
    // Alice's device goes on sending: refused, nothing stored.
    let dm = safemeet_engine::dm_room_id(&alice, &sim.nodes[BOB].user);
    let text = EventContent::Message(safemeet_proto::event::Message {
        body: MessageText::new("from beyond").unwrap(),
        reply_to: None,
    });
    sim.send_unchecked(ALICE, dm, &[ALICE, BOB], text).unwrap();
    sim.run_for(MINUTE);
    assert!(
        !sim.dm_timeline(BOB, ALICE)
            .iter()
            .any(|e| e.text == "from beyond")
    );
    // And nothing goes to it.
    let refused = sim.ask(
        BOB,
        Command::SendDm {
            to: alice,
            text: "hello?".into(),
        },
    );
    assert!(refused.is_err());
}

#[test]
fn messages_under_a_short_expiry_go_within_a_quarter_of_it_after_their_time() {
    let (mut sim, room) = club(26, |_, _| {});
    sim.ask(
        ALICE,
        Command::SetExpiry {
            conversation: Conversation::Room(room),
            expire_after_ms: Some(2_000),
        },
    )
    .unwrap();
    sim.run_for(Duration::from_secs(1));
    for n in 0..5 {
        sim.send_room(ALICE, room, &format!("short {n}"));
        sim.run_for(Duration::from_millis(300));
    }
    // The last was sent 300 ms ago: it expires in 1.7 s, and sweeps wait
    // at most a quarter of the expiry (500 ms) after the one before.
    sim.run_for(Duration::from_millis(1_700 + 500));
    for i in [ALICE, BOB, CAROL] {
        let left: Vec<_> = sim
            .room_texts(i, room)
            .into_iter()
            .filter(|(t, _)| t.starts_with("short"))
            .collect();
        assert!(left.is_empty(), "{i}: {left:?}");
    }
}
