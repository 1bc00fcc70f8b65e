//! Round trips and hostile input for every decoder.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

mod fixtures;

use fixtures::*;
use proptest::prelude::*;
use safemeet_proto::codec::{self, DecodeError};
use safemeet_proto::envelope::{AckEnvelope, OlmMessageKind, SealedRoomEnvelope, ToDeviceEnvelope};
use safemeet_proto::event::{EventContent, Message, MessageText, Payload, RoomEvent, Sealed};
use safemeet_proto::identity::{DeviceCertificate, DeviceList, Profile, Signed};
use safemeet_proto::limits::MAX_RECORD_BYTES;
use safemeet_proto::{
    DeliverAnswer, DeviceId, Envelope, RoomId, RoomSecret, RoomTopic, Timestamp, UserId,
};

fn arb_envelope() -> impl Strategy<Value = Envelope> {
    prop_oneof![
        (
            any::<[u8; 24]>(),
            any::<[u8; 8]>(),
            proptest::collection::vec(any::<u8>(), 0..2000)
        )
            .prop_map(|(nonce, hint, sealed)| Envelope::Room(SealedRoomEnvelope {
                nonce,
                hint,
                sealed
            })),
        (
            any::<bool>(),
            any::<[u8; 32]>(),
            proptest::collection::vec(any::<u8>(), 0..2000)
        )
            .prop_map(|(pre, session_id, ciphertext)| Envelope::ToDevice(
                ToDeviceEnvelope {
                    kind: if pre {
                        OlmMessageKind::PreKey
                    } else {
                        OlmMessageKind::Normal
                    },
                    session_id,
                    ciphertext
                }
            )),
        proptest::collection::vec(any::<[u8; 32]>(), 0..=256).prop_map(|ids| Envelope::Acks(
            AckEnvelope {
                event_ids: ids
                    .into_iter()
                    .map(safemeet_proto::EventId::from_bytes)
                    .collect()
            }
        )),
    ]
}

#[test]
fn an_ack_frame_with_too_many_ids_is_refused() {
    // The wire form, without the limit check.
    #[derive(serde::Serialize)]
    enum Raw {
        _Room,
        _ToDevice,
        Acks(Vec<safemeet_proto::EventId>),
    }
    let ids = |n| vec![safemeet_proto::EventId::from_bytes([1; 32]); n];
    let payload = codec::encode(&Raw::Acks(ids(257))).unwrap();
    let frame = safemeet_proto::padding::pad(&payload, safemeet_proto::padding::FLOOR).unwrap();
    assert!(Envelope::from_frame(&frame).is_err());
    let payload = codec::encode(&Raw::Acks(ids(256))).unwrap();
    let frame = safemeet_proto::padding::pad(&payload, safemeet_proto::padding::FLOOR).unwrap();
    assert!(
        matches!(Envelope::from_frame(&frame), Ok(Envelope::Acks(a)) if a.event_ids.len() == 256)
    );
}

fn arb_message_event() -> impl Strategy<Value = RoomEvent> {
    (
        any::<[u8; 16]>(),
        any::<[u8; 32]>(),
        any::<[u8; 16]>(),
        any::<u64>(),
        0..=Timestamp::MAX_MILLIS,
        "\\PC{0,200}",
    )
        .prop_map(|(room, user, device, lamport, ms, text)| RoomEvent {
            room_id: RoomId::from_bytes(room),
            sender: UserId::from_bytes(user),
            sender_device: DeviceId::from_bytes(device),
            lamport,
            ts: Timestamp::from_millis(ms).unwrap(),
            content: EventContent::Message(Message {
                body: MessageText::new(text).unwrap(),
                reply_to: None,
            }),
        })
}

proptest! {
    #[test]
    fn envelope_frames_round_trip(env in arb_envelope()) {
        let frame = env.to_frame().unwrap();
        prop_assert_eq!(Envelope::from_frame(&frame).unwrap(), env);
    }

    #[test]
    fn sealed_events_round_trip(ev in arb_message_event()) {
        let s = sealed(Payload::Room(ev));
        prop_assert_eq!(Sealed::decode(&s.encode().unwrap()).unwrap(), s);
    }

    #[test]
    fn room_topics_round_trip(bytes in any::<[u8; 32]>()) {
        let topic = RoomTopic::from_bytes(bytes);
        let encoded = codec::encode(&topic).unwrap();
        prop_assert_eq!(codec::decode::<RoomTopic>(&encoded, 64).unwrap(), topic);
    }

    #[test]
    fn a_delivery_answer_is_exactly_its_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..16)) {
        match DeliverAnswer::from_bytes(&bytes) {
            Ok(answer) => prop_assert_eq!(answer.to_bytes(), bytes.as_slice()),
            Err(e) => prop_assert_eq!(e.len, bytes.len()),
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
        let _ = Envelope::from_frame(&bytes);
        let _ = DeliverAnswer::from_bytes(&bytes);
        let _ = codec::decode::<RoomTopic>(&bytes, 64);
        let _ = codec::decode::<RoomSecret>(&bytes, 64);
        let _ = codec::decode::<Envelope>(&bytes, 70_000);
        let _ = Sealed::decode(&bytes);
        let _ = Signed::<DeviceCertificate>::from_bytes(&bytes);
        let _ = codec::decode::<DeviceCertificate>(&bytes, MAX_RECORD_BYTES);
        let _ = codec::decode::<DeviceList>(&bytes, MAX_RECORD_BYTES);
        let _ = codec::decode::<Profile>(&bytes, MAX_RECORD_BYTES);
    }

    #[test]
    fn mutated_valid_encodings_never_panic(idx in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<prop::sample::Index>()) {
        let mut bytes = sealed_to_device().encode().unwrap();
        let i = idx.index(bytes.len());
        bytes[i] = byte;
        let _ = Sealed::decode(&bytes);
        let c = cut.index(bytes.len());
        let _ = Sealed::decode(&bytes[..c]);
    }
}

#[test]
fn every_fixture_round_trips() {
    for (_, content) in contents() {
        let s = sealed(Payload::Room(room_event(content)));
        assert_eq!(Sealed::decode(&s.encode().unwrap()).unwrap(), s);
    }
    let s = sealed_to_device();
    assert_eq!(Sealed::decode(&s.encode().unwrap()).unwrap(), s);
    let cert = signed_certificate();
    assert_eq!(Signed::from_bytes(&cert.to_bytes().unwrap()).unwrap(), cert);
    assert_eq!(cert.decode_body().unwrap(), certificate());
    for (_, env) in envelopes() {
        assert_eq!(Envelope::from_frame(&env.to_frame().unwrap()).unwrap(), env);
    }
}

#[test]
fn truncated_input_is_an_error() {
    let bytes = sealed_to_device().encode().unwrap();
    for cut in 0..bytes.len() {
        assert!(Sealed::decode(&bytes[..cut]).is_err(), "cut at {cut}");
    }
    assert_eq!(Sealed::decode(&[]), Err(DecodeError::Truncated));
}

#[test]
fn oversized_lists_are_rejected() {
    let mut list = device_list();
    let entry = list.devices[0].clone();
    list.devices = vec![entry; 33];
    let bytes = codec::encode(&list).unwrap();
    assert!(matches!(
        codec::decode::<DeviceList>(&bytes, MAX_RECORD_BYTES),
        Err(DecodeError::Malformed(_))
    ));
}

#[test]
fn overlong_message_text_is_rejected() {
    let long = "x".repeat(16 * 1024 + 1);
    assert!(MessageText::new(long.clone()).is_err());
    // Forge the encoding directly: a String in place of MessageText.
    let bytes = codec::encode(&long).unwrap();
    assert!(codec::decode::<MessageText>(&bytes, 100_000).is_err());
}

#[test]
fn oversized_envelopes_are_refused() {
    let env = Envelope::Room(SealedRoomEnvelope {
        nonce: [0; 24],
        hint: [0; 8],
        sealed: vec![0; 70_000],
    });
    assert!(env.to_frame().is_err());
}

#[test]
fn oversized_receipts_and_email_lists_are_rejected() {
    use safemeet_proto::event::{Receipt, ReceiptKind};
    use safemeet_proto::{Email, EventId};
    // Encode the over-long lists through a look-alike struct, since the real
    // types refuse to be built that way.
    #[derive(serde::Serialize)]
    struct RawReceipt {
        kind: ReceiptKind,
        events: Vec<EventId>,
    }
    let ok = codec::encode(&RawReceipt {
        kind: ReceiptKind::Read,
        events: vec![EventId::from_bytes([1; 32]); 256],
    })
    .unwrap();
    assert!(codec::decode::<Receipt>(&ok, 100_000).is_ok());
    let long = codec::encode(&RawReceipt {
        kind: ReceiptKind::Read,
        events: vec![EventId::from_bytes([1; 32]); 257],
    })
    .unwrap();
    assert!(matches!(
        codec::decode::<Receipt>(&long, 100_000),
        Err(DecodeError::Malformed(_))
    ));

    let mut p = profile();
    p.emails = vec![Email::new("a@b.cd").unwrap(); 9];
    let bytes = codec::encode(&p).unwrap();
    assert!(matches!(
        codec::decode::<Profile>(&bytes, MAX_RECORD_BYTES),
        Err(DecodeError::Malformed(_))
    ));
    p.emails.truncate(8);
    let bytes = codec::encode(&p).unwrap();
    assert!(codec::decode::<Profile>(&bytes, MAX_RECORD_BYTES).is_ok());
}

#[test]
fn non_canonical_nested_encodings_are_rejected() {
    // Rewrite the body-length varint of a signed record with an over-long
    // form: same value, different bytes. It must not decode.
    let signed = signed_certificate();
    let bytes = signed.to_bytes().unwrap();
    let varint_len = bytes.iter().position(|b| b & 0x80 == 0).unwrap() + 1;
    let mut overlong = bytes[..varint_len].to_vec();
    overlong[varint_len - 1] |= 0x80;
    overlong.push(0x00);
    overlong.extend_from_slice(&bytes[varint_len..]);
    assert_eq!(
        Signed::<DeviceCertificate>::from_bytes(&overlong),
        Err(DecodeError::NonCanonical)
    );

    // And inside the body: the timestamp varint of a certificate.
    let body = &signed.body;
    let ts_bytes = codec::encode(&certificate().created_at).unwrap();
    let at = body.len() - ts_bytes.len();
    assert_eq!(&body[at..], ts_bytes.as_slice());
    let mut stretched = body[..at].to_vec();
    let mut ts = ts_bytes.clone();
    let last = ts.len() - 1;
    ts[last] |= 0x80;
    ts.push(0x00);
    stretched.extend_from_slice(&ts);
    assert_eq!(
        codec::decode::<DeviceCertificate>(&stretched, MAX_RECORD_BYTES),
        Err(DecodeError::NonCanonical)
    );
}
