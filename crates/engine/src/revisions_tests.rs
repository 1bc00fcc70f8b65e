//! The rules of `revisions`, on a real encrypted store in memory: who
//! may edit, redact and set a room's expiry, which edit wins, and what a
//! lying member gets (nothing).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use safemeet_crypto::EncryptedStore;
use safemeet_crypto::at_rest::{DataKey, StoreCipher};
use safemeet_proto::event::{Edit, EventContent, MessageText, Redaction, RoomSettings};
use safemeet_proto::room::RoomTopic;
use safemeet_proto::{DeviceId, EventId, RoomId, Timestamp, UserId};
use safemeet_store::MemoryStore;

use super::*;
use crate::records::{MessageState, RoomRecord};

const ADMIN: UserId = UserId::from_bytes([1; 32]);
const BOB: UserId = UserId::from_bytes([2; 32]);
const CAROL: UserId = UserId::from_bytes([3; 32]);
const ROOM: RoomId = RoomId::from_bytes([7; 16]);
const OTHER_ROOM: RoomId = RoomId::from_bytes([8; 16]);

fn store() -> EncryptedStore<MemoryStore> {
    EncryptedStore::new(MemoryStore::new(), StoreCipher::new(&DataKey::generate()))
}

fn group(room_id: RoomId) -> RoomRecord {
    let mut room = RoomRecord::fresh(
        room_id,
        None,
        vec![ADMIN, BOB, CAROL],
        RoomTopic::from_bytes([4; 32]),
    );
    room.admins = vec![ADMIN];
    room
}

/// Stores a message of `sender` at position `seq` of `room`.
fn message(store: &EncryptedStore<MemoryStore>, room: RoomId, seq: u64, sender: UserId) -> EventId {
    let id = EventId::from_bytes([seq as u8 + 40; 32]);
    let ts = Timestamp::from_millis(1_800_000_000_000).unwrap();
    let entry = TimelineEntry {
        event_id: id,
        sender,
        sender_device: DeviceId::from_bytes([9; 16]),
        lamport: seq,
        ts,
        text: format!("said by {seq}"),
        state: MessageState::Received,
        revision: Revision::Original,
        received_at: ts,
        file: None,
    };
    let mut batch = store.batch();
    store
        .batch_put_ordered_value(
            &mut batch,
            Keyspace::Timeline,
            &name::timeline(&room),
            seq,
            &entry,
            MAX_RECORD_BYTES,
        )
        .unwrap();
    stage_location(store, &mut batch, room, seq, &id).unwrap();
    store.apply(batch).unwrap();
    id
}

fn apply(store: &EncryptedStore<MemoryStore>, change: Option<Change>) -> bool {
    let Some(change) = change else {
        return false;
    };
    let mut batch = store.batch();
    stage_change(store, &mut batch, &change, 1).unwrap();
    store.apply(batch).unwrap();
    true
}

fn redaction(target: EventId) -> EventContent {
    EventContent::Redaction(Redaction { target })
}

fn edit(target: EventId, text: &str) -> EventContent {
    EventContent::Edit(Edit {
        target,
        body: MessageText::new(text).unwrap(),
    })
}

fn shown(store: &EncryptedStore<MemoryStore>, id: &EventId) -> (String, Revision) {
    let (_, _, entry) = locate(store, id).unwrap().unwrap();
    (entry.text, entry.revision)
}

#[test]
fn only_the_sender_or_an_admin_redacts() {
    let store = store();
    let room = group(ROOM);
    let bobs = message(&store, ROOM, 0, BOB);
    // Carol is a member, not the sender, not an admin.
    let plan_by = |who| plan(&store, &room, who, 10, &redaction(bobs)).unwrap();
    assert!(plan_by(CAROL).is_none());
    assert!(!apply(&store, plan_by(CAROL)));
    assert_eq!(shown(&store, &bobs).0, "said by 0");
    // The sender may.
    assert!(plan_by(BOB).is_some());
    // So may the admin.
    assert!(apply(&store, plan_by(ADMIN)));
    assert_eq!(shown(&store, &bobs), (String::new(), Revision::Redacted));
    // Twice is nothing new.
    assert!(plan_by(BOB).is_none());
    // Nor is an edit after it.
    assert!(
        plan(&store, &room, BOB, 11, &edit(bobs, "back"))
            .unwrap()
            .is_none()
    );
}

#[test]
fn in_a_dm_nobody_redacts_the_others_messages() {
    let store = store();
    let mut dm = RoomRecord::fresh(
        ROOM,
        Some(BOB),
        vec![ADMIN, BOB],
        RoomTopic::from_bytes([4; 32]),
    );
    // A DM has no admins; even if a record said so, a DM takes none.
    dm.admins = vec![ADMIN];
    let bobs = message(&store, ROOM, 0, BOB);
    assert!(
        plan(&store, &dm, ADMIN, 5, &redaction(bobs))
            .unwrap()
            .is_none()
    );
    assert!(
        plan(&store, &dm, BOB, 5, &redaction(bobs))
            .unwrap()
            .is_some()
    );
}

#[test]
fn a_change_names_a_message_of_its_own_room_only() {
    let store = store();
    let other = message(&store, OTHER_ROOM, 0, BOB);
    // Bob is the sender, but the redaction and the edit come in another
    // room than the message's: a room key can name any room id.
    let room = group(ROOM);
    assert!(
        plan(&store, &room, BOB, 3, &redaction(other))
            .unwrap()
            .is_none()
    );
    assert!(
        plan(&store, &room, BOB, 3, &edit(other, "x"))
            .unwrap()
            .is_none()
    );
    assert_eq!(shown(&store, &other).0, "said by 0");
}

#[test]
fn only_the_sender_edits_and_the_latest_edit_wins() {
    let store = store();
    let room = group(ROOM);
    let bobs = message(&store, ROOM, 0, BOB);
    // Not even an admin edits someone else's message.
    assert!(
        plan(&store, &room, ADMIN, 9, &edit(bobs, "forged"))
            .unwrap()
            .is_none()
    );
    assert!(
        plan(&store, &room, CAROL, 9, &edit(bobs, "forged"))
            .unwrap()
            .is_none()
    );
    assert!(apply(
        &store,
        plan(&store, &room, BOB, 9, &edit(bobs, "nine")).unwrap()
    ));
    assert_eq!(
        shown(&store, &bobs),
        ("nine".into(), Revision::Edited { lamport: 9 })
    );
    // An older edit arriving late, or the same clock again, changes nothing.
    assert!(
        plan(&store, &room, BOB, 5, &edit(bobs, "five"))
            .unwrap()
            .is_none()
    );
    assert!(
        plan(&store, &room, BOB, 9, &edit(bobs, "nine again"))
            .unwrap()
            .is_none()
    );
    assert!(apply(
        &store,
        plan(&store, &room, BOB, 12, &edit(bobs, "twelve")).unwrap()
    ));
    assert_eq!(shown(&store, &bobs).0, "twelve");
}

#[test]
fn a_rooms_expiry_is_set_by_its_admins_and_the_latest_wins() {
    let store = store();
    let room = group(ROOM);
    let expiry = |ms| EventContent::Settings(RoomSettings::new(Some(ms)).unwrap());
    assert!(
        plan(&store, &room, BOB, 4, &expiry(2_000))
            .unwrap()
            .is_none()
    );
    assert!(apply(
        &store,
        plan(&store, &room, ADMIN, 4, &expiry(2_000)).unwrap()
    ));
    assert_eq!(
        settings(&store, &ROOM).unwrap().unwrap().expire_after_ms,
        Some(2_000)
    );
    // An older setting arriving late changes nothing.
    assert!(
        plan(&store, &room, ADMIN, 3, &expiry(60_000))
            .unwrap()
            .is_none()
    );
    assert!(apply(
        &store,
        plan(&store, &room, ADMIN, 6, &expiry(60_000)).unwrap()
    ));
    assert_eq!(
        settings(&store, &ROOM).unwrap().unwrap().expire_after_ms,
        Some(60_000)
    );
    // In a DM, either user sets it.
    let dm = RoomRecord::fresh(
        OTHER_ROOM,
        Some(BOB),
        vec![ADMIN, BOB],
        RoomTopic::from_bytes([4; 32]),
    );
    assert!(plan(&store, &dm, BOB, 1, &expiry(2_000)).unwrap().is_some());
    assert!(
        plan(&store, &dm, CAROL, 1, &expiry(2_000))
            .unwrap()
            .is_none()
    );
}

#[test]
fn redactions_that_come_first_are_kept_and_bounded() {
    let store = store();
    let room = group(ROOM);
    let ahead = EventId::from_bytes([99; 32]);
    // Carol (not an admin) redacts a message of Bob's before it came:
    // it is kept, but does not redact Bob's message when it comes.
    assert!(apply(
        &store,
        plan(&store, &room, CAROL, 2, &redaction(ahead)).unwrap()
    ));
    assert!(!redacted_early(&store, &ROOM, BOB, &ahead).unwrap());
    // Her own, it does; and only in its room.
    assert!(redacted_early(&store, &ROOM, CAROL, &ahead).unwrap());
    assert!(!redacted_early(&store, &OTHER_ROOM, CAROL, &ahead).unwrap());
    // An admin's redacts anyone's.
    let admins = EventId::from_bytes([98; 32]);
    assert!(apply(
        &store,
        plan(&store, &room, ADMIN, 2, &redaction(admins)).unwrap()
    ));
    assert!(redacted_early(&store, &ROOM, BOB, &admins).unwrap());

    // A flood of redactions for messages that never come: the store
    // keeps the newest MAX_EARLY_REDACTIONS.
    let records = || store.dump().unwrap().len();
    let before = records();
    for n in 0..(MAX_EARLY_REDACTIONS as u32 + 300) {
        let mut id = [0u8; 32];
        id[..4].copy_from_slice(&n.to_be_bytes());
        id[31] = 1;
        apply(
            &store,
            plan(&store, &room, CAROL, 3, &redaction(EventId::from_bytes(id))).unwrap(),
        );
    }
    assert!(
        records() <= before + MAX_EARLY_REDACTIONS,
        "{} records",
        records()
    );
    // The first ones are gone, the last one is kept.
    assert!(!redacted_early(&store, &ROOM, CAROL, &ahead).unwrap());
    let mut last = [0u8; 32];
    last[..4].copy_from_slice(&(MAX_EARLY_REDACTIONS as u32 + 299).to_be_bytes());
    last[31] = 1;
    assert!(redacted_early(&store, &ROOM, CAROL, &EventId::from_bytes(last)).unwrap());
}
