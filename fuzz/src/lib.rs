//! Fuzz targets for every SafeMeet decoder that a peer, a relay, the API or
//! the disk can feed.
//!
//! Each target is a function from arbitrary bytes that must return without
//! panicking, whatever the bytes. Where a decoder promises one encoding per
//! value, the target also checks that whatever decodes encodes back to the
//! same bytes: a second accepted encoding would let two readings share one
//! signature or one event id. The functions live here, in a plain library,
//! so that `tests/corpus.rs` replays the committed corpus through them on
//! every `cargo test`, without libFuzzer; `fuzz_targets/*.rs` hands them to
//! libFuzzer (see `fuzz/README.md` and `fuzz/run`).
//!
//! This crate is not an API: it exists for `fuzz/run` and its test.
//!
//! ```
//! // Any bytes at all: an error, never a panic.
//! safemeet_fuzz::frame(b"\x02 not a frame");
//! assert!(safemeet_fuzz::TARGETS.iter().any(|t| t.name == "frame"));
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used)] // a broken invariant must crash the fuzzer

mod identity;
pub mod seeds;

use safemeet_proto::codec;
use safemeet_proto::event::{RoomState, Sealed};
use safemeet_proto::invite::{INVITE_PREFIX, Invite};
use safemeet_proto::limits::MAX_EVENT_BYTES;
use safemeet_proto::mailbox::{MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES, MailboxResponse};
use safemeet_proto::{DeliverAnswer, Envelope, padding};

pub use identity::identity;

/// A fuzz target: its name (a binary in `fuzz_targets/` and a folder in
/// `corpus/`) and its body.
#[derive(Clone, Copy)]
pub struct Target {
    /// The name.
    pub name: &'static str,
    /// What it runs on one input.
    pub run: fn(&[u8]),
}

/// Every target, in the order `fuzz/run` runs them.
pub const TARGETS: &[Target] = &[
    Target {
        name: "frame",
        run: frame,
    },
    Target {
        name: "sealed",
        run: sealed,
    },
    Target {
        name: "room_state",
        run: room_state,
    },
    Target {
        name: "invite",
        run: invite,
    },
    Target {
        name: "identity",
        run: identity,
    },
    Target {
        name: "relay_request",
        run: relay_request,
    },
    Target {
        name: "relay_answer",
        run: relay_answer,
    },
    Target {
        name: "peer_answer",
        run: peer_answer,
    },
    Target {
        name: "jsonrpc",
        run: jsonrpc,
    },
    Target {
        name: "engine_records",
        run: engine_records,
    },
    Target {
        name: "crypto_records",
        run: crypto_records,
    },
    Target {
        name: "relay_store",
        run: relay_store,
    },
    Target {
        name: "relay_config",
        run: relay_config,
    },
];

/// A frame from a gossip peer, a direct delivery or a mailbox:
/// [`Envelope::from_frame`] (version, bucket size, padding, envelope). The
/// input is tried as a whole frame, then as an envelope padded into its
/// bucket (most inputs are not a bucket long, so this is what reaches the
/// envelope's decoder).
pub fn frame(data: &[u8]) {
    check_frame(data);
    if let Ok(padded) = padding::pad(data, padding::FLOOR) {
        check_frame(&padded);
    }
}

fn check_frame(frame: &[u8]) {
    if let Ok(envelope) = Envelope::from_frame(frame) {
        let again = envelope.to_frame().expect("a decoded envelope encodes");
        assert_eq!(again, frame, "a frame decodes only from its one encoding");
    }
}

/// A decrypted plaintext: [`Sealed::decode`] and [`Sealed::decode_padded`]
/// (the sender, room events and to-device events inside).
pub fn sealed(data: &[u8]) {
    if let Ok(event) = Sealed::decode(data) {
        assert_eq!(event.encode().expect("a decoded event encodes"), data);
    }
    if let Ok(event) = Sealed::decode_padded(data) {
        let again = event.encode_padded().expect("a decoded event encodes");
        assert_eq!(again, data, "a plaintext decodes only from its one padding");
    }
}

/// A room state as an admin sends it: decoded with its checks
/// ([`RoomState`]'s `TryFrom`), then hashed as the next state names it.
pub fn room_state(data: &[u8]) {
    if let Ok(state) = codec::decode::<RoomState>(data, MAX_EVENT_BYTES) {
        assert_eq!(
            codec::encode(&state).expect("a decoded state encodes"),
            data
        );
        state.hash().expect("a decoded state hashes");
    }
}

/// An invite a user pastes: [`Invite::from_text`], on the input as text
/// and on the input's bytes in invite text form, then the signed records
/// inside checked as accepting the invite checks them.
pub fn invite(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        check_invite(text);
    }
    let text = format!(
        "{INVITE_PREFIX}{}",
        data_encoding::BASE32_NOPAD
            .encode(data)
            .to_ascii_lowercase()
    );
    check_invite(&text);
}

fn check_invite(text: &str) {
    let Ok(invite) = Invite::from_text(text) else {
        return;
    };
    let again = Invite::from_text(&invite.to_text().expect("a decoded invite encodes"));
    assert_eq!(
        again.as_ref(),
        Ok(&invite),
        "an invite survives its text form"
    );
    identity::check_invite(&invite);
}

/// A request to a relay: [`safemeet_relay::service::decode_request`] and
/// what it costs the sender's rate.
pub fn relay_request(data: &[u8]) {
    let decoded = safemeet_relay::service::decode_request(data);
    let _ = safemeet_relay::service::request_cost(&decoded);
    if let Ok(request) = decoded {
        let again = codec::encode_limited(&request, MAX_REQUEST_BYTES).expect("it encodes");
        assert_eq!(again, data);
    }
}

/// A relay's answer, decoded as the client decodes it.
pub fn relay_answer(data: &[u8]) {
    if let Ok(answer) = codec::decode::<MailboxResponse>(data, MAX_RESPONSE_BYTES) {
        if let MailboxResponse::Error { message, .. } = &answer {
            let _shown: String = message.chars().take(200).collect();
        }
        assert_eq!(codec::encode(&answer).expect("it encodes"), data);
    }
}

/// A peer's answer to a direct delivery: [`DeliverAnswer::from_bytes`].
pub fn peer_answer(data: &[u8]) {
    if let Ok(answer) = DeliverAnswer::from_bytes(data) {
        assert_eq!(answer.to_bytes(), data);
    }
}

/// A JSON-RPC request line from a local API client, parsed as the server
/// parses it (a line longer than the server's limit never reaches it);
/// a parsed request serializes back to the same method and params.
pub fn jsonrpc(data: &[u8]) {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    if line.len() > safemeet_api::MAX_LINE_BYTES || line.contains('\n') {
        return;
    }
    let Ok(request) = safemeet_api::fuzz_request_line(line) else {
        return;
    };
    let mut value = serde_json::to_value(&request).expect("a request serializes");
    let method = value["method"].as_str().expect("a method").to_owned();
    let params = value.get_mut("params").map(serde_json::Value::take);
    let again = safemeet_api::Request::from_parts(&method, params);
    assert_eq!(
        again.ok().as_ref(),
        Some(&request),
        "a request survives JSON"
    );
}

/// A record the engine reads back from its store.
pub fn engine_records(data: &[u8]) {
    safemeet_engine::fuzzing::stored_records(data);
}

/// What the crypto layer reads back from disk: the machine's records, the
/// account record ([`safemeet_crypto::account::Account::from_record`]), the
/// key file ([`safemeet_crypto::at_rest::KeyFile::from_json`]) and sealed
/// store values ([`safemeet_crypto::at_rest::StoreCipher::open`]).
pub fn crypto_records(data: &[u8]) {
    safemeet_crypto::machine::fuzzing::stored_records(data);
    let _ = safemeet_crypto::account::Account::from_record(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = safemeet_crypto::at_rest::KeyFile::from_json(text);
    }
    let cipher = seeds::store_cipher();
    for keyspace in safemeet_store::Keyspace::ALL {
        let _ = cipher.open(keyspace, b"name", data);
    }
}

/// A record the relay reads back from its store.
pub fn relay_store(data: &[u8]) {
    safemeet_relay::fuzzing::stored_records(data);
}

/// A relay operator's TOML file: parsed, then its values read as the node
/// reads them (durations, addresses).
pub fn relay_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(file) = safemeet_relay::FileConfig::from_toml(text) else {
        return;
    };
    if let Some(retention) = &file.retention {
        let _ = safemeet_relay::config_file::parse_duration(retention);
    }
    for addr in file.listen.iter().flatten() {
        let _ = addr.parse::<libp2p::Multiaddr>();
    }
}
