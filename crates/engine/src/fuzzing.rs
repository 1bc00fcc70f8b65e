//! Entry points for the fuzz targets in `fuzz/` (not an API): every record
//! the engine reads back from its store, decoded from untrusted bytes the
//! way the engine decodes it, and real encoded examples of each for the
//! fuzzers' seed corpus. The records are private to the engine; this
//! module exposes their decoders and nothing else.

use safemeet_proto::identity::{RelayList, Signed};
use safemeet_proto::room::{RoomSecret, RoomTopic, StateHash};
use safemeet_proto::{DeviceId, EventId, RoomId, Timestamp, UserId, codec};

use crate::headers::PendingRecord;
use crate::records::{
    Chain, ContactIndex, ContactRecord, LogRecord, MAX_RECORD_BYTES, MessageState, OutboxMeta,
    Removal, Revision, RoomIndex, RoomRecord, TimelineEntry, VERSION,
};

/// Decodes `bytes` as each kind of engine record, with the limits the
/// engine reads them with. Never panics; the results are thrown away.
pub fn stored_records(bytes: &[u8]) {
    let _ = RoomRecord::decode(bytes).map(|r| r.secrets().count());
    let _ = codec::decode::<ContactRecord>(bytes, MAX_RECORD_BYTES);
    let _ = codec::decode::<RoomIndex>(bytes, MAX_RECORD_BYTES);
    let _ = codec::decode::<ContactIndex>(bytes, MAX_RECORD_BYTES);
    let _ = TimelineEntry::decode(bytes);
    let _ = codec::decode::<LogRecord>(bytes, MAX_RECORD_BYTES);
    let _ = codec::decode::<crate::revisions::SettingsRecord>(bytes, MAX_RECORD_BYTES);
    let _ = codec::decode::<crate::revisions::EarlyRedaction>(bytes, 256);
    let _ = codec::decode::<crate::expiry::LocalSettings>(bytes, 256);
    let _ = codec::decode::<Vec<EventId>>(bytes, MAX_RECORD_BYTES);
    let _ = codec::decode::<OutboxMeta>(bytes, 64);
    let _ = codec::decode::<PendingRecord>(bytes, MAX_RECORD_BYTES);
    let _ = codec::decode::<(RoomId, u64)>(bytes, 64);
    let _ = codec::decode::<u64>(bytes, 16);
    let _ = codec::decode::<Vec<(String, u64)>>(bytes, MAX_RECORD_BYTES);
    let _ = codec::decode::<Vec<String>>(bytes, MAX_RECORD_BYTES);
    let _ = Signed::<RelayList>::from_bytes(bytes).and_then(|s| s.decode_body());
}

/// One encoded example of each engine record, made with the real encoders.
pub fn sample_records() -> Vec<Vec<u8>> {
    let Ok(ts) = Timestamp::from_millis(1_700_000_000_000) else {
        return Vec::new();
    };
    let (alice, bob) = (UserId::from_bytes([1; 32]), UserId::from_bytes([3; 32]));
    let room_id = RoomId::from_bytes([11; 16]);
    let entry = TimelineEntry {
        event_id: EventId::from_bytes([2; 32]),
        sender: alice,
        sender_device: DeviceId::from_bytes([2; 16]),
        lamport: 42,
        ts,
        text: "hello there".into(),
        state: MessageState::StoredAtRelay { until: ts },
        revision: Revision::Edited { lamport: 43 },
        received_at: ts,
        file: None,
    };
    let dm = RoomRecord::fresh(
        room_id,
        Some(bob),
        vec![alice, bob],
        RoomTopic::from_bytes([4; 32]),
    );
    let mut group = RoomRecord::fresh(
        room_id,
        None,
        vec![alice, bob],
        RoomTopic::from_bytes([5; 32]),
    );
    group.name = Some("friends".into());
    group.admins = vec![alice];
    group.secret = Some(RoomSecret::from_bytes([6; 32]));
    group.chain = Some(Chain {
        creator: alice,
        nonce: [7; 16],
        epoch: 2,
        head: StateHash::derive(b"state"),
        admins: vec![alice],
        banned: vec![UserId::from_bytes([8; 32])],
        previous_secrets: vec![RoomSecret::from_bytes([9; 32])],
    });
    let encoded = [
        codec::encode(&dm),
        codec::encode(&group),
        codec::encode(&ContactRecord {
            version: VERSION,
            user_id: bob,
            pet_name: Some("bob".into()),
            username: "bob".into(),
            display_name: "Bob".into(),
            addrs: vec![(
                DeviceId::from_bytes([3; 16]),
                vec!["/ip4/127.0.0.1/tcp/4001".into()],
            )],
        }),
        codec::encode(&RoomIndex {
            version: VERSION,
            rooms: vec![room_id],
        }),
        codec::encode(&ContactIndex {
            version: VERSION,
            users: vec![bob],
        }),
        codec::encode(&entry),
        codec::encode(&LogRecord::Message { room_id, seq: 7 }),
        codec::encode(&LogRecord::Removed {
            room_id,
            event_id: entry.event_id,
            reason: Removal::Expired,
        }),
        codec::encode(&LogRecord::Room {
            room_id,
            name: "friends".into(),
            members: vec![alice, bob],
        }),
        codec::encode(&crate::revisions::SettingsRecord {
            version: VERSION,
            expire_after_ms: Some(2_000),
            lamport: 9,
            by: alice,
        }),
        codec::encode(&OutboxMeta {
            version: VERSION,
            timeline: Some((room_id, 7)),
        }),
        codec::encode(&vec![("/ip4/127.0.0.1/tcp/4011".to_string(), 99u64)]),
    ];
    encoded.into_iter().filter_map(Result::ok).collect()
}
