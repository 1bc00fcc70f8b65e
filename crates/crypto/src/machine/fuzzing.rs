//! Entry points for the fuzz targets in `fuzz/` (not an API): every record
//! the crypto machine reads back from its store, decoded from untrusted
//! bytes the way the machine decodes it, and real encoded examples of each
//! for the fuzzers' seed corpus. The records are private to the machine;
//! this module exposes their decoders and nothing else.

use safemeet_proto::identity::{OneTimeKey, Signed};
use safemeet_proto::{DeviceId, RoomId, Timestamp, UserId, codec};
use vodozemac::megolm::{GroupSession, InboundGroupSession, SessionConfig};
use vodozemac::olm::{Account as OlmAccount, Session, SessionPickle};

use super::OutboxItem;
use super::records::{
    self, DeviceRecord, HeldIndexRecord, HeldSession, InboundRecord, KeysRecord, OlmIndexRecord,
    OlmSessionRecord, OutboundRecord, Pickle, RECORD_VERSION, RunRecord, Share, SharesRecord,
};

/// Decodes `bytes` as each kind of machine record, as the machine does
/// when it reads one back (version check, then the pickle into its
/// session). Never panics; the results are thrown away.
pub fn stored_records(bytes: &[u8]) {
    let _ = records::decode::<RunRecord>(bytes, "run marker");
    let _ = records::decode::<KeysRecord>(bytes, "keys");
    if let Ok(rec) = records::decode::<DeviceRecord>(bytes, "device") {
        let _ = Signed::<safemeet_proto::identity::DeviceCertificate>::from_bytes(&rec.certificate)
            .and_then(|s| s.decode_body());
    }
    if let Ok(rec) = records::decode::<OlmSessionRecord>(bytes, "Olm session")
        && let Ok(pickle) = rec.pickle.json_load::<SessionPickle>()
    {
        let _ = Session::from_pickle(pickle);
    }
    let _ = records::decode::<OlmIndexRecord>(bytes, "Olm index");
    if let Ok(rec) = records::decode::<OutboundRecord>(bytes, "outbound session") {
        let _ = GroupSession::from_pickle(rec.pickle);
    }
    let _ = records::decode::<SharesRecord>(bytes, "shares");
    if let Ok(rec) = records::decode::<InboundRecord>(bytes, "inbound session") {
        let _ = InboundGroupSession::from_pickle(rec.pickle);
    }
    let _ = records::decode::<HeldIndexRecord>(bytes, "held index");
    let _ = records::decode::<OutboxItem>(bytes, "outbox item");
}

/// One encoded example of each machine record, made with the real encoders
/// (fresh keys, so the bytes differ from call to call).
pub fn sample_records() -> Vec<Vec<u8>> {
    let Ok(ts) = Timestamp::from_millis(1_700_000_000_000) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut push = |r: Result<Vec<u8>, crate::Error>| {
        if let Ok(b) = r {
            out.push(b);
        }
    };
    push(records::encode_plain(&RunRecord {
        version: RECORD_VERSION,
        clean: true,
        generation: 3,
        outbox_reserved: 4096,
    }));
    let key = OneTimeKey {
        version: 1,
        device_id: DeviceId::from_bytes([2; 16]),
        key: [4; 32],
        fallback: false,
        created_at: ts,
    };
    let signed = codec::encode(&key).map(|b| Signed::from_parts(b, [9; 64]));
    if let Ok(signed) = signed {
        push(records::encode_plain(&KeysRecord {
            version: RECORD_VERSION,
            pool: vec![signed.clone()],
            fallback: Some(signed),
            fallback_created: Some(ts),
        }));
    }
    push(records::encode_plain(&DeviceRecord {
        version: RECORD_VERSION,
        certificate: vec![1, 2, 3],
        verified_at: Some(ts),
    }));
    let alice = OlmAccount::new();
    let mut bob = OlmAccount::new();
    bob.generate_one_time_keys(1);
    let otk = bob.one_time_keys().values().next().copied();
    if let Some(otk) = otk
        && let Ok(session) = alice.create_outbound_session(
            vodozemac::olm::SessionConfig::version_1(),
            bob.curve25519_key(),
            otk,
        )
        && let Ok(pickle) = Pickle::json_of(&session.pickle())
    {
        push(records::encode_plain(&OlmSessionRecord {
            version: RECORD_VERSION,
            peer_device: DeviceId::from_bytes([5; 16]),
            peer_curve25519: bob.curve25519_key().to_bytes(),
            created_at: ts,
            generation: 1,
            wedged_at: None,
            pickle,
        }));
    }
    push(records::encode_plain(&OlmIndexRecord {
        version: RECORD_VERSION,
        sessions: vec![[6; 32], [7; 32]],
    }));
    let group = GroupSession::new(SessionConfig::version_1());
    let inbound = InboundGroupSession::new(&group.session_key(), SessionConfig::version_1());
    push(records::encode_plain(&OutboundRecord {
        version: RECORD_VERSION,
        generation: 1,
        room_id: RoomId::from_bytes([11; 16]),
        created_at: ts,
        messages: 2,
        pickle: group.pickle(),
    }));
    push(records::encode_plain(&SharesRecord {
        version: RECORD_VERSION,
        session_id: [8; 32],
        shared_with: vec![Share {
            device: DeviceId::from_bytes([5; 16]),
            index: 0,
            olm_session: Some([6; 32]),
        }],
    }));
    push(records::encode_plain(&InboundRecord {
        version: RECORD_VERSION,
        room_id: RoomId::from_bytes([11; 16]),
        senders: vec![(UserId::from_bytes([1; 32]), DeviceId::from_bytes([2; 16]))],
        first_index: 0,
        verified: true,
        pickle: inbound.pickle(),
    }));
    push(records::encode_plain(&HeldIndexRecord {
        version: RECORD_VERSION,
        sessions: vec![HeldSession {
            session: [8; 32],
            first: 1,
            next: 3,
            bytes: 4000,
            since: ts,
            holder: super::Holder([9; 32]),
        }],
    }));
    push(records::encode_plain(&OutboxItem {
        version: RECORD_VERSION,
        destination: super::Destination::Room(RoomId::from_bytes([11; 16])),
        meta: vec![1, 0],
        envelope: safemeet_proto::Envelope::ToDevice(safemeet_proto::envelope::ToDeviceEnvelope {
            kind: safemeet_proto::envelope::OlmMessageKind::Normal,
            session_id: [6; 32],
            ciphertext: vec![0x42; 300],
        }),
    }));
    out
}
