//! Pins the encoded form of every wire type. A failing snapshot means the
//! wire format changed: that needs a new version, not a new snapshot.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

mod fixtures;

use fixtures::*;
use safemeet_proto::codec;
use safemeet_proto::envelope::Envelope;
use safemeet_proto::event::Payload;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn identity_records() {
    insta::assert_snapshot!(
        "device_certificate",
        hex(&codec::encode(&certificate()).unwrap())
    );
    insta::assert_snapshot!(
        "signed_device_certificate",
        hex(&signed_certificate().to_bytes().unwrap())
    );
    insta::assert_snapshot!("device_list", hex(&codec::encode(&device_list()).unwrap()));
    insta::assert_snapshot!("profile", hex(&codec::encode(&profile()).unwrap()));
    insta::assert_snapshot!(
        "one_time_key",
        hex(&codec::encode(&one_time_key()).unwrap())
    );
}

#[test]
fn verification_steps_are_pinned() {
    for (name, step) in verification_steps() {
        insta::assert_snapshot!(
            format!("sealed_verification_{name}"),
            hex(&verification(step).encode().unwrap())
        );
    }
}

#[test]
fn room_events() {
    for (name, content) in contents() {
        let sealed = sealed(Payload::Room(room_event(content)));
        insta::assert_snapshot!(
            format!("sealed_room_{name}"),
            hex(&sealed.encode().unwrap())
        );
    }
    insta::assert_snapshot!(
        "sealed_room_key",
        hex(&sealed_to_device().encode().unwrap())
    );
}

#[test]
fn envelopes_and_frames() {
    for (name, env) in envelopes() {
        insta::assert_snapshot!(
            format!("envelope_{name}"),
            hex(&codec::encode(&env).unwrap())
        );
        let frame = env.to_frame().unwrap();
        // Messages travel in frames of at least the message floor; only
        // acknowledgements start at the smallest bucket.
        let floor = match env {
            Envelope::Acks(_) => safemeet_proto::padding::FLOOR,
            _ => safemeet_proto::padding::MESSAGE_FLOOR,
        };
        assert_eq!(frame.len(), floor, "{name}");
        insta::assert_snapshot!(format!("frame_{name}_head"), hex(&frame[..64]));
    }
}

#[test]
fn json_forms_of_ids_are_text() {
    let json = serde_json::to_string(&certificate().user_id).unwrap();
    assert_eq!(json, format!("\"{}\"", certificate().user_id));
}

#[test]
fn delivery_answers_are_pinned() {
    use safemeet_proto::DeliverAnswer;
    // The deployed protocol's exact bytes: never change them.
    assert_eq!(DeliverAnswer::Ack.to_bytes(), b"ok");
    assert_eq!(DeliverAnswer::Refused.to_bytes(), b"refused");
    assert_eq!(DeliverAnswer::Later.to_bytes(), b"later");
}

#[test]
fn room_topic_derivations_are_pinned() {
    use safemeet_proto::room::dm_room;
    use safemeet_proto::{RoomSecret, RoomTopic, UserId};
    // Every device must derive the same topic from the same secret, and the
    // same DM room from the same two users.
    let secret = RoomSecret::from_bytes([7; 32]);
    insta::assert_snapshot!("room_topic", hex(secret.topic().as_bytes()));
    let (id, topic) = dm_room(&UserId::from_bytes([1; 32]), &UserId::from_bytes([2; 32]));
    insta::assert_snapshot!("dm_room_id", hex(id.as_bytes()));
    insta::assert_snapshot!("dm_room_topic", hex(topic.as_bytes()));
    let creator = UserId::from_bytes([1; 32]);
    insta::assert_snapshot!(
        "room_id_for_creator",
        hex(safemeet_proto::room::room_id_for(&creator, &[2; 16]).as_bytes())
    );
    insta::assert_snapshot!(
        "room_state_hash",
        hex(fixtures::room_state().hash().unwrap().as_bytes())
    );
    // The header keys that seal room envelopes, and their hints.
    use safemeet_proto::header::HeaderKey;
    let key = HeaderKey::for_room(&secret);
    insta::assert_snapshot!("room_header_root", hex(key.root().expose()));
    insta::assert_snapshot!("room_header_seal", hex(key.seal_key()));
    insta::assert_snapshot!("room_header_hint", hex(&key.hint(&[3; 24])));
    let dm = HeaderKey::for_dm(&topic);
    insta::assert_snapshot!("dm_header_root", hex(dm.root().expose()));
    insta::assert_snapshot!(
        "room_topic_encoded",
        hex(&codec::encode(&RoomTopic::from_bytes([7; 32])).unwrap())
    );
}

#[test]
fn mailbox_messages_are_pinned() {
    use safemeet_proto::MailboxId;
    use safemeet_proto::mailbox::{
        Authorized, Deposit, MailboxError, MailboxRequest, MailboxResponse, OpenParams, VERSION,
    };

    let mailbox = MailboxId::from_bytes([3; 32]);
    let open = MailboxRequest::Open(Authorized {
        version: VERSION,
        key: [1; 32],
        nonce: [2; 32],
        params: OpenParams {
            mailbox,
            check: [4; 32],
        },
        signature: [5; 64],
    });
    insta::assert_snapshot!("mailbox_open", hex(&codec::encode(&open).unwrap()));
    let deposit = MailboxRequest::Deposit {
        version: VERSION,
        mailbox,
        envelope: vec![6; 8],
        tag: [7; 32],
    };
    insta::assert_snapshot!("mailbox_deposit", hex(&codec::encode(&deposit).unwrap()));
    let many = MailboxRequest::DepositMany {
        version: VERSION,
        items: vec![Deposit {
            mailbox,
            envelope: vec![6; 8],
            tag: [7; 32],
        }],
    };
    insta::assert_snapshot!("mailbox_deposit_many", hex(&codec::encode(&many).unwrap()));
    insta::assert_snapshot!(
        "mailbox_opened",
        hex(&codec::encode(&MailboxResponse::Opened).unwrap())
    );
    let refused = MailboxResponse::Error {
        code: MailboxError::Refused,
        message: "refused".into(),
    };
    insta::assert_snapshot!("mailbox_refused", hex(&codec::encode(&refused).unwrap()));
}
