//! The seed corpus: real encoded examples of what each target decodes,
//! made with the real encoders and signed with real keys, so the fuzzers
//! start from inputs that pass every check and mutate from there.
//! `tests/corpus.rs` writes them to `fuzz/corpus/<target>/` when asked
//! (see `fuzz/README.md`); the keys are fresh on every run.

use std::sync::OnceLock;

use safemeet_crypto::Verified;
use safemeet_crypto::account::Account;
use safemeet_crypto::at_rest::{DataKey, KdfParams, KeyFile, Passphrase, StoreCipher};
use safemeet_crypto::certificate;
use safemeet_proto::codec;
use safemeet_proto::envelope::{
    AckEnvelope, OlmMessageKind, RoomEnvelope, SealedRoomEnvelope, ToDeviceEnvelope,
};
use safemeet_proto::event::{
    EventContent, Membership, MembershipChange, Message, MessageText, Payload, ROOM_STATE_VERSION,
    Receipt, ReceiptKind, Redaction, RoomEvent, RoomKey, RoomState, Sealed, SealedSender,
    ToDeviceEvent, Verification, VerificationStep,
};
use safemeet_proto::header::HeaderRoot;
use safemeet_proto::identity::{DeviceCertificate, OneTimeKey, RelayList};
use safemeet_proto::invite::{INVITE_VERSION, Invite};
use safemeet_proto::mailbox::{
    AckParams, Authorized, Deposit, DepositOutcome, FetchParams, MailboxError, MailboxRequest,
    MailboxResponse, StoredEnvelope,
};
use safemeet_proto::room::{RoomSecret, StateHash};
use safemeet_proto::{
    DeliverAnswer, DisplayName, Email, Envelope, EventId, MailboxId, RoomId, Timestamp, UserId,
    Username,
};

fn ts() -> Timestamp {
    Timestamp::from_millis(1_700_000_000_000).expect("in range")
}

/// A real account, made once per process.
pub fn account() -> &'static Account {
    static ACCOUNT: OnceLock<Account> = OnceLock::new();
    ACCOUNT.get_or_init(|| {
        Account::create(
            Username::new("alice").expect("valid"),
            DisplayName::new("Alice").expect("valid"),
            vec![Email::new("alice@example.org").expect("valid")],
            ts(),
        )
        .expect("an account")
    })
}

/// The account's verified device certificate.
pub fn device() -> &'static Verified<DeviceCertificate> {
    static DEVICE: OnceLock<Verified<DeviceCertificate>> = OnceLock::new();
    DEVICE.get_or_init(|| {
        let a = account();
        certificate::verify_device_certificate(a.certificate(), &a.user_id()).expect("verifies")
    })
}

/// A store cipher under a fresh key, made once per process.
pub fn store_cipher() -> &'static StoreCipher {
    static CIPHER: OnceLock<StoreCipher> = OnceLock::new();
    CIPHER.get_or_init(|| StoreCipher::new(&DataKey::generate()))
}

fn fallback_key() -> safemeet_proto::identity::Signed<OneTimeKey> {
    let key = OneTimeKey {
        version: certificate::RECORD_VERSION,
        device_id: account().device_id(),
        key: [4; 32],
        fallback: true,
        created_at: ts(),
    };
    certificate::sign_one_time_key(account().device_keys(), &key).expect("signs")
}

fn relay_list() -> safemeet_proto::identity::Signed<RelayList> {
    let list = RelayList {
        version: certificate::RECORD_VERSION,
        device_id: account().device_id(),
        relays: vec![
            "/ip4/127.0.0.1/tcp/4011/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"
                .into(),
        ],
        issued_at: ts(),
    };
    certificate::sign_relay_list(account().device_keys(), &list).expect("signs")
}

fn invite() -> Invite {
    let a = account();
    Invite {
        version: INVITE_VERSION,
        device_list: a.device_list().signed().clone(),
        certificates: vec![a.certificate().clone()],
        fallback_key: fallback_key(),
        profile: a.profile().signed().clone(),
        addrs: vec!["/ip4/192.0.2.1/tcp/4001".into()],
        relays: Some(relay_list()),
    }
}

fn room_state(epoch: u64) -> RoomState {
    let (alice, bob) = (account().user_id(), UserId::from_bytes([3; 32]));
    RoomState {
        version: ROOM_STATE_VERSION,
        name: "friends".into(),
        secret: RoomSecret::from_bytes([6; 32]),
        members: vec![alice, bob],
        admins: vec![alice],
        banned: vec![UserId::from_bytes([8; 32])],
        creator: alice,
        nonce: [7; 16],
        epoch,
        prev: (epoch > 0).then(|| StateHash::derive(b"previous")),
        added: vec![bob],
    }
}

fn room_event(content: EventContent) -> Payload {
    Payload::Room(RoomEvent {
        room_id: RoomId::from_bytes([11; 16]),
        sender: account().user_id(),
        sender_device: account().device_id(),
        lamport: 42,
        ts: ts(),
        content,
    })
}

fn payloads() -> Vec<Payload> {
    let event = EventId::from_bytes([2; 32]);
    vec![
        room_event(EventContent::Message(Message {
            body: MessageText::new("hello there").expect("short"),
            reply_to: Some(event),
        })),
        room_event(EventContent::Membership(Membership {
            user_id: UserId::from_bytes([3; 32]),
            change: MembershipChange::Join,
        })),
        room_event(EventContent::Profile(account().profile().signed().clone())),
        room_event(EventContent::Redaction(Redaction { target: event })),
        room_event(EventContent::Receipt(Receipt {
            kind: ReceiptKind::Read,
            events: vec![event],
        })),
        room_event(EventContent::RoomState(Box::new(room_state(1)))),
        Payload::ToDevice(ToDeviceEvent::RoomKey(RoomKey {
            version: 1,
            room_id: RoomId::from_bytes([11; 16]),
            session_id: [5; 32],
            first_index: 0,
            session_key: vec![0x33; 229],
            header: HeaderRoot::from_bytes([12; 32]),
        })),
        Payload::ToDevice(ToDeviceEvent::Verification(Verification {
            version: 1,
            flow_id: [13; 16],
            step: VerificationStep::Mac {
                device_key: [14; 32],
                master_key: [15; 32],
            },
        })),
        Payload::ToDevice(ToDeviceEvent::NewSession),
        Payload::ToDevice(ToDeviceEvent::RelayList(relay_list())),
    ]
}

fn envelopes() -> Vec<Envelope> {
    let room = RoomEnvelope {
        topic: RoomSecret::from_bytes([6; 32]).topic(),
        session_id: [5; 32],
        ciphertext: vec![0x44; 600],
    };
    let sealed = codec::encode(&room).expect("encodes");
    vec![
        Envelope::Room(SealedRoomEnvelope {
            nonce: [16; 24],
            hint: [17; 8],
            sealed,
        }),
        Envelope::ToDevice(ToDeviceEnvelope {
            kind: OlmMessageKind::PreKey,
            session_id: [5; 32],
            ciphertext: vec![0x55; 900],
        }),
        Envelope::Acks(AckEnvelope {
            event_ids: vec![EventId::from_bytes([2; 32]), EventId::from_bytes([9; 32])],
        }),
    ]
}

fn requests() -> Vec<MailboxRequest> {
    let mailbox = MailboxId::from_bytes([18; 32]);
    let frame = envelopes()[1].to_frame().expect("encodes");
    let version = safemeet_proto::mailbox::VERSION;
    vec![
        MailboxRequest::Deposit {
            version,
            mailbox,
            envelope: frame.clone(),
            tag: [24; 32],
        },
        MailboxRequest::Challenge { version },
        MailboxRequest::Fetch(Authorized {
            version,
            key: [19; 32],
            nonce: [20; 32],
            params: FetchParams {
                mailbox,
                after: 3,
                limit: 50,
            },
            signature: [21; 64],
        }),
        MailboxRequest::Ack(Authorized {
            version,
            key: [19; 32],
            nonce: [20; 32],
            params: AckParams {
                mailbox,
                ids: vec![4, 5],
            },
            signature: [21; 64],
        }),
        MailboxRequest::DepositMany {
            version,
            items: vec![Deposit {
                mailbox,
                envelope: frame,
                tag: [24; 32],
            }],
        },
        MailboxRequest::Open(Authorized {
            version,
            key: [19; 32],
            nonce: [20; 32],
            params: safemeet_proto::mailbox::OpenParams {
                mailbox,
                check: [25; 32],
            },
            signature: [21; 64],
        }),
    ]
}

fn answers() -> Vec<MailboxResponse> {
    let mailbox = MailboxId::from_bytes([18; 32]);
    let receipt = safemeet_proto::mailbox::Receipt {
        version: safemeet_proto::mailbox::VERSION,
        mailbox,
        id: 4,
        stored_until: ts(),
        digest: [22; 32],
        signature: vec![23; 68],
    };
    vec![
        MailboxResponse::Receipt(receipt.clone()),
        MailboxResponse::Nonce([20; 32]),
        MailboxResponse::Envelopes {
            items: vec![StoredEnvelope {
                id: 4,
                stored_until: ts(),
                envelope: vec![0x66; 2100],
            }],
            more: true,
        },
        MailboxResponse::Acked { removed: 2 },
        MailboxResponse::Error {
            code: MailboxError::RateLimited,
            message: "too many requests lately".into(),
        },
        MailboxResponse::Receipts(vec![
            DepositOutcome::Stored(receipt),
            DepositOutcome::Refused {
                code: MailboxError::MailboxFull,
                message: "full".into(),
            },
        ]),
    ]
}

const JSONRPC: &[&str] = &[
    r#"{"jsonrpc":"2.0","id":1,"method":"whoami"}"#,
    r#"{"jsonrpc":"2.0","id":"a","method":"invite","params":null}"#,
    r#"{"jsonrpc":"2.0","id":2,"method":"contact.add","params":{"invite":"safemeet:abc","name":"bob"}}"#,
    r#"{"jsonrpc":"2.0","id":3,"method":"send","params":{"target":"bob","text":"hi"}}"#,
    r#"{"jsonrpc":"2.0","id":4,"method":"messages","params":{"target":"bob","limit":2}}"#,
    r#"{"jsonrpc":"2.0","id":5,"method":"events","params":{"since":0,"limit":10}}"#,
    r#"{"jsonrpc":"2.0","id":6,"method":"subscribe","params":{"since":3}}"#,
    r#"{"jsonrpc":"2.0","id":7,"method":"room.create","params":{"name":"friends","members":["bob"]}}"#,
    r#"{"jsonrpc":"2.0","id":null,"method":"contact.list","params":{}}"#,
];

const RELAY_CONFIG: &str = r#"listen = ["/ip4/0.0.0.0/tcp/4011", "/ip4/0.0.0.0/udp/4011/quic-v1"]
retention = "7d"
max_envelope_bytes = 65584
mailbox_max_envelopes = 5000
mailbox_max_bytes = 33554432
max_envelopes = 1000000
max_bytes = 4294967296
accept_new_mailboxes = true
peer_rate = 100
peer_burst = 200

[metrics]
listen = "127.0.0.1:9464"
allow = ["127.0.0.1", "::1"]
"#;

/// The seeds of the target `name` (none for an unknown name).
pub fn for_target(name: &str) -> Vec<Vec<u8>> {
    let enc = |r: Result<Vec<u8>, safemeet_proto::EncodeError>| r.expect("encodes");
    match name {
        "frame" => envelopes()
            .iter()
            .flat_map(|e| [enc(e.to_frame()), enc(codec::encode(e))])
            .collect(),
        "sealed" => {
            let certificate = SealedSender::Certificate(account().certificate().clone());
            let hash = SealedSender::CertificateHash([24; 32]);
            payloads()
                .into_iter()
                .enumerate()
                .flat_map(|(i, payload)| {
                    let sender = if i % 2 == 0 { &certificate } else { &hash };
                    let sealed = Sealed {
                        sender: sender.clone(),
                        payload,
                    };
                    [enc(sealed.encode()), enc(sealed.encode_padded())]
                })
                .collect()
        }
        "room_state" => vec![
            enc(codec::encode(&RoomState {
                admins: vec![account().user_id()],
                added: Vec::new(),
                ..room_state(0)
            })),
            enc(codec::encode(&room_state(3))),
        ],
        "invite" => {
            let invite = invite();
            vec![
                enc(codec::encode(&invite)),
                invite.to_text().expect("encodes").into_bytes(),
            ]
        }
        "identity" => {
            let a = account();
            vec![
                enc(a.certificate().to_bytes()),
                enc(a.device_list().signed().to_bytes()),
                enc(a.profile().signed().to_bytes()),
                enc(fallback_key().to_bytes()),
                enc(relay_list().to_bytes()),
            ]
        }
        "relay_request" => requests().iter().map(|r| enc(codec::encode(r))).collect(),
        "relay_answer" => answers().iter().map(|r| enc(codec::encode(r))).collect(),
        "peer_answer" => [
            DeliverAnswer::Ack,
            DeliverAnswer::Refused,
            DeliverAnswer::Later,
        ]
        .iter()
        .map(|a| a.to_bytes().to_vec())
        .collect(),
        "jsonrpc" => JSONRPC.iter().map(|l| l.as_bytes().to_vec()).collect(),
        "engine_records" => safemeet_engine::fuzzing::sample_records(),
        "crypto_records" => {
            let mut seeds = safemeet_crypto::machine::fuzzing::sample_records();
            seeds.push(account().to_record().expect("encodes").to_vec());
            let key_file = KeyFile::wrap(
                &DataKey::generate(),
                &Passphrase::new("correct horse"),
                KdfParams::default(),
            )
            .and_then(|k| k.to_json())
            .expect("a key file");
            seeds.push(key_file.into_bytes());
            seeds
        }
        "relay_store" => safemeet_relay::fuzzing::sample_records(),
        "relay_config" => vec![
            RELAY_CONFIG.as_bytes().to_vec(),
            b"retention = \"36h\"\npeer_rate = 5\n".to_vec(),
        ],
        _ => Vec::new(),
    }
}
