//! A store written before messages lived in one place: its event log held
//! a copy of every message, and its timeline entries had no revision. The
//! first start moves it over: the log names each message by position,
//! the text is in the timeline only, and the old entries still read.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::time::Duration;

use safemeet_engine::{Command, Config, Core, Input, LogEntry, Now, Output, Response, Revision};
use safemeet_proto::clock::{Clock, SystemClock};
use safemeet_proto::{DeviceId, EventId, RoomId, Timestamp, UserId};
use safemeet_store::Keyspace;
use safemeet_test_utils::Device;
use serde::Serialize;

/// A timeline entry as it was stored then.
#[derive(Serialize)]
struct EntryBefore {
    event_id: EventId,
    sender: UserId,
    sender_device: DeviceId,
    lamport: u64,
    ts: Timestamp,
    text: String,
    state: StateBefore,
}

#[derive(Serialize)]
enum StateBefore {
    Received,
}

/// An event-log entry as it was stored then: a copy of the message.
#[derive(Serialize)]
enum LogBefore {
    Message { room_id: RoomId, entry: EntryBefore },
}

fn timeline_name(room: &RoomId) -> Vec<u8> {
    let mut v = b"timeline/".to_vec();
    v.extend_from_slice(room.as_bytes());
    v
}

fn events(core: &mut Core<safemeet_test_utils::FaultyStore>, now: Now) -> Vec<LogEntry> {
    let outputs = core.handle(
        Input::Commands(vec![(
            7,
            Command::Events {
                cursor: 0,
                limit: 100,
            },
        )]),
        now,
    );
    outputs
        .into_iter()
        .find_map(|o| match o {
            Output::Reply(7, Ok(Response::Events(e))) => {
                Some(e.into_iter().map(|(_, e)| e).collect())
            }
            _ => None,
        })
        .expect("an answer")
}

#[test]
fn a_store_from_before_keeps_each_text_in_one_place() {
    let ts = SystemClock.now();
    let device = Device::new("alice", ts);
    let store = device.store();
    let room = RoomId::from_bytes([5; 16]);
    let texts = ["said before the move", "and this too"];
    let mut batch = store.batch();
    for (seq, text) in texts.iter().enumerate() {
        let entry = || EntryBefore {
            event_id: EventId::from_bytes([seq as u8 + 1; 32]),
            sender: UserId::from_bytes([9; 32]),
            sender_device: DeviceId::from_bytes([8; 16]),
            lamport: seq as u64 + 1,
            ts,
            text: (*text).into(),
            state: StateBefore::Received,
        };
        let seq = seq as u64;
        store
            .batch_put_ordered_value(
                &mut batch,
                Keyspace::Timeline,
                &timeline_name(&room),
                seq,
                &entry(),
                4096,
            )
            .unwrap();
        let log = LogBefore::Message {
            room_id: room,
            entry: entry(),
        };
        store
            .batch_put_ordered_value(&mut batch, Keyspace::EventLog, b"log", seq + 1, &log, 4096)
            .unwrap();
    }
    store
        .batch_put_value(&mut batch, Keyspace::EventLog, b"log-next", &3u64, 16)
        .unwrap();
    store.apply(batch).unwrap();
    let holding = |text: &str| {
        store
            .dump()
            .unwrap()
            .iter()
            .filter(|r| r.value.windows(text.len()).any(|w| w == text.as_bytes()))
            .count()
    };
    assert_eq!(holding(texts[0]), 2, "a timeline entry and a log copy");

    let now = Now {
        wall: ts,
        mono: Duration::ZERO,
    };
    let mut core = Core::new(device.machine(), Config::default(), 1, now).unwrap();
    let log = events(&mut core, now);
    // One place each.
    for text in texts {
        assert_eq!(holding(text), 1, "{text}");
    }
    // The log still names both messages, as they are.
    assert_eq!(log.len(), 2, "{log:?}");
    for (entry, text) in log.iter().zip(texts) {
        match entry {
            LogEntry::Message { room_id, entry } => {
                assert_eq!(*room_id, room);
                assert_eq!(entry.text, text);
                assert_eq!(entry.revision, Revision::Original);
            }
            other => panic!("{other:?}"),
        }
    }
    // Done once: a second start changes nothing.
    core.close().unwrap();
    drop(core);
    let before = store.dump().unwrap();
    let mut core = Core::new(device.machine(), Config::default(), 2, now).unwrap();
    assert_eq!(events(&mut core, now).len(), 2);
    let after = store.dump().unwrap();
    let changed: Vec<_> = after
        .iter()
        .filter(|r| !before.contains(r) && r.keyspace == Keyspace::EventLog)
        .collect();
    assert!(changed.is_empty(), "the log changed again: {changed:?}");
}
