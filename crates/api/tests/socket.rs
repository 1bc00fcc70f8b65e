//! The API against a real engine, over the socket and through `dispatch`:
//! messages far larger as JSON than a line come back whole, a page at a
//! time, and hostile lines get the documented error codes while the
//! connection goes on (or closes, for a line too long).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::path::{Path, PathBuf};
use std::time::Duration;

use safemeet_api::{
    Client, Event, EventKind, Identity, MAX_LINE_BYTES, Message, Request, Response, dispatch,
};
use safemeet_crypto::EncryptedStore;
use safemeet_crypto::account::Account;
use safemeet_crypto::at_rest::{DataKey, StoreCipher};
use safemeet_crypto::machine::CryptoMachine;
use safemeet_engine::{Config as EngineConfig, Handle as EngineHandle};
use safemeet_net::Config as NetConfig;
use safemeet_proto::clock::{Clock, SystemClock};
use safemeet_proto::{DisplayName, Username};
use safemeet_store::MemoryStore;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

const WAIT: Duration = Duration::from_secs(30);

/// An engine that does not listen, and what `whoami` says of it.
fn node(name: &str) -> (EngineHandle, Identity) {
    let account = Account::create(
        Username::new(name).unwrap(),
        DisplayName::new(name).unwrap(),
        vec![],
        SystemClock.now(),
    )
    .unwrap();
    let identity = Identity {
        user_id: account.user_id().to_string(),
        device_id: account.device_id().to_string(),
        peer_id: account.peer_id().to_string(),
        username: name.to_owned(),
        display_name: name.to_owned(),
        emails: vec![],
    };
    let store = EncryptedStore::new(MemoryStore::new(), StoreCipher::new(&DataKey::generate()));
    CryptoMachine::store_account(&store, &account).unwrap();
    let config = EngineConfig {
        net: NetConfig {
            listen: Vec::new(),
            mdns: false,
            ..NetConfig::default()
        },
        ..EngineConfig::default()
    };
    let engine = safemeet_engine::start(CryptoMachine::open(store).unwrap(), config).unwrap();
    (engine, identity)
}

/// Serves the API for `engine` on a socket in `dir`; returns once it answers.
async fn serve(dir: &Path, engine: &EngineHandle, identity: &Identity) -> PathBuf {
    let socket = dir.join("api.sock");
    {
        let (socket, engine, identity) = (socket.clone(), engine.clone(), identity.clone());
        tokio::spawn(async move { safemeet_api::serve(&socket, engine, identity).await });
    }
    tokio::time::timeout(WAIT, async {
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        loop {
            tick.tick().await;
            if Client::connect(&socket).await.is_ok() {
                return;
            }
        }
    })
    .await
    .expect("the API socket to answer");
    socket
}

/// A connection that writes raw bytes and reads raw lines.
struct Raw {
    reader: BufReader<tokio::net::unix::OwnedReadHalf>,
    writer: tokio::net::unix::OwnedWriteHalf,
}

impl Raw {
    async fn connect(socket: &Path) -> Self {
        let (read, writer) = UnixStream::connect(socket).await.unwrap().into_split();
        Self {
            reader: BufReader::new(read),
            writer,
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).await.unwrap();
        self.writer.write_all(b"\n").await.unwrap();
    }

    /// The next line as it came (`None`: the server closed the connection).
    async fn line(&mut self) -> Option<String> {
        let mut line = String::new();
        let n = tokio::time::timeout(WAIT, self.reader.read_line(&mut line))
            .await
            .expect("an answer in time")
            .unwrap();
        (n > 0).then_some(line)
    }

    async fn ask(&mut self, line: &str) -> Value {
        self.send(line.as_bytes()).await;
        let answer = self.line().await.expect("an answer");
        assert!(answer.len() <= MAX_LINE_BYTES + 1, "{} bytes", answer.len());
        serde_json::from_str(&answer).unwrap()
    }
}

/// 16 KiB (the most a message may hold) of control characters: each
/// takes six bytes as JSON (`\u0001`), so three such messages are more
/// than a line.
fn hostile_text(seed: u8) -> String {
    (0..16 * 1024)
        .map(|i| char::from(((i as u8).wrapping_add(seed)) % 32))
        .collect()
}

/// Alice, with Bob as a contact called "bob" and three hostile messages
/// sent to him (they stay "sent": Bob is not reachable).
async fn alice_with_hostile_messages() -> (EngineHandle, Identity, Vec<String>) {
    let (alice, identity) = node("alice");
    let (bob, _) = node("bob");
    alice
        .add_contact(&bob.invite().await.unwrap(), Some("bob".into()))
        .await
        .unwrap();
    let texts: Vec<String> = (0..3).map(hostile_text).collect();
    for text in &texts {
        let sent = dispatch(
            &alice,
            &identity,
            Request::Send {
                target: "bob".into(),
                text: text.clone(),
                file: None,
            },
        )
        .await
        .unwrap();
        assert!(matches!(sent, Response::Sent(_)));
    }
    let _ = bob.shutdown().await;
    // Unpaged, the three would not fit in one line: the case is real.
    let all = alice.dm_messages(bob.user_id(), 50).await.unwrap();
    let unpaged: Vec<Message> = all.iter().map(Message::from).collect();
    assert!(serde_json::to_string(&unpaged).unwrap().len() > MAX_LINE_BYTES);
    (alice, identity, texts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_messages_come_back_whole_a_page_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, identity, texts) = alice_with_hostile_messages().await;
    let socket = serve(dir.path(), &alice, &identity).await;

    // Over the socket, as raw lines: every page fits in a line.
    let mut raw = Raw::connect(&socket).await;
    let mut got: Vec<Value> = Vec::new();
    let mut pages = 0;
    loop {
        let after = got.last().map(|m| m["cursor"].clone());
        let request = json!({"jsonrpc": "2.0", "id": pages, "method": "messages",
                             "params": {"target": "bob", "after": after}});
        let answer = raw.ask(&request.to_string()).await;
        let page = answer["result"].as_array().expect("a page").clone();
        if page.is_empty() {
            break;
        }
        pages += 1;
        got.extend(page);
        assert!(pages <= 3, "pages keep coming");
    }
    assert_eq!(pages, 2, "two messages fit in a line, the third comes next");
    let shown: Vec<&str> = got.iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert_eq!(shown, texts);

    // Through the typed client, and through `dispatch` as the CLI does.
    let mut client = Client::connect(&socket).await.unwrap();
    let first = client
        .request(&Request::Messages {
            target: "bob".into(),
            limit: None,
            after: None,
        })
        .await
        .unwrap();
    let Response::Messages(first) = first else {
        panic!("not messages: {first:?}")
    };
    let rest = dispatch(
        &alice,
        &identity,
        Request::Messages {
            target: "bob".into(),
            limit: None,
            after: first.last().map(|m| m.cursor),
        },
    )
    .await
    .unwrap();
    let Response::Messages(rest) = rest else {
        panic!("not messages: {rest:?}")
    };
    let both: Vec<&str> = first.iter().chain(&rest).map(|m| m.text.as_str()).collect();
    assert_eq!(both, texts);

    // The event log pages the same way.
    let mut since = 0;
    let mut logged = Vec::new();
    loop {
        let answer = raw
            .ask(
                &json!({"jsonrpc": "2.0", "id": "ev", "method": "events",
                        "params": {"since": since}})
                .to_string(),
            )
            .await;
        let page: Vec<Event> = serde_json::from_value(answer["result"].clone()).unwrap();
        let Some(last) = page.last() else { break };
        since = last.cursor;
        logged.extend(page.into_iter().filter_map(|e| match e.kind {
            EventKind::Message { message, .. } => Some(message.text),
            _ => None,
        }));
    }
    assert_eq!(logged, texts);

    // And a subscription streams them, one per line.
    let mut subscription = Client::connect(&socket)
        .await
        .unwrap()
        .subscribe(0)
        .await
        .unwrap();
    let mut streamed = Vec::new();
    while streamed.len() < texts.len() {
        let event = tokio::time::timeout(WAIT, subscription.next_event())
            .await
            .expect("an event in time")
            .unwrap()
            .expect("the stream goes on");
        if let EventKind::Message { message, .. } = event.kind {
            streamed.push(message.text);
        }
    }
    assert_eq!(streamed, texts);
    alice.shutdown().await.unwrap();
}

/// The error object of an answer, checked to carry `code` and `kind`.
fn assert_error(answer: &Value, code: i64, kind: &str) {
    assert_eq!(answer["error"]["code"], code, "{answer}");
    assert_eq!(answer["error"]["data"]["kind"], kind, "{answer}");
    assert!(answer["error"]["message"].as_str().is_some(), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_lines_get_their_error_codes_and_the_connection_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, identity) = node("alice");
    let socket = serve(dir.path(), &alice, &identity).await;
    let mut raw = Raw::connect(&socket).await;

    assert_error(&raw.ask("this is not json").await, -32700, "parse_error");
    assert_error(
        &raw.ask("{\"jsonrpc\": \"2.0\", ").await,
        -32700,
        "parse_error",
    );
    assert_error(&raw.ask("[1, 2]").await, -32600, "invalid_request");
    assert_error(
        &raw.ask(r#"{"id": 1, "method": "whoami"}"#).await,
        -32600,
        "invalid_request",
    );
    let answer = raw
        .ask(r#"{"jsonrpc": "2.0", "id": {"a": 1}, "method": "whoami"}"#)
        .await;
    assert_error(&answer, -32600, "invalid_request");
    assert_eq!(answer["id"], Value::Null, "a bad id is not echoed");
    let long_id = "i".repeat(10_000);
    let answer = raw
        .ask(&json!({"jsonrpc": "2.0", "id": long_id, "method": "whoami"}).to_string())
        .await;
    assert_error(&answer, -32600, "invalid_request");
    assert_eq!(answer["id"], Value::Null);
    let answer = raw.ask(r#"{"jsonrpc": "2.0", "id": 3, "method": 7}"#).await;
    assert_error(&answer, -32600, "invalid_request");
    assert_eq!(answer["id"], 3);

    let answer = raw
        .ask(r#"{"jsonrpc": "2.0", "id": 4, "method": "no.such.method"}"#)
        .await;
    assert_error(&answer, -32601, "method_not_found");
    let answer = raw
        .ask(&json!({"jsonrpc": "2.0", "id": 5, "method": "x".repeat(100_000)}).to_string())
        .await;
    assert_error(&answer, -32601, "method_not_found");
    assert!(
        answer.to_string().len() < 2_000,
        "the name is not echoed whole"
    );

    for (method, params) in [
        ("send", json!({})),
        ("send", json!({"target": 1, "text": "hi"})),
        ("send", json!({"target": "bob", "text": ["hi"]})),
        ("messages", json!({"target": "bob", "limit": "ten"})),
        ("messages", json!({"target": "bob", "limit": -1})),
        (
            "messages",
            json!({"target": "bob", "after": "not a cursor"}),
        ),
        ("events", json!({"since": "0"})),
        ("room.create", json!({"name": "club", "members": "bob"})),
        ("contact.add", json!({"invite": false})),
        ("subscribe", json!({"since": true})),
    ] {
        let answer = raw
            .ask(
                &json!({"jsonrpc": "2.0", "id": 6, "method": method, "params": params}).to_string(),
            )
            .await;
        assert_error(&answer, -32602, "invalid_params");
        assert_eq!(answer["id"], 6);
    }

    // Names that match nothing, and input the engine refuses.
    let answer = raw
        .ask(r#"{"jsonrpc": "2.0", "id": 7, "method": "send", "params": {"target": "nobody", "text": "hi"}}"#)
        .await;
    assert_error(&answer, -32001, "not_found");
    let answer = raw
        .ask(
            r#"{"jsonrpc": "2.0", "id": 8, "method": "room.leave", "params": {"room": "nowhere"}}"#,
        )
        .await;
    assert_error(&answer, -32001, "unknown_room");
    let answer = raw
        .ask(r#"{"jsonrpc": "2.0", "id": 9, "method": "contact.add", "params": {"invite": "safemeet:zzzz"}}"#)
        .await;
    assert_error(&answer, -32000, "bad_invite");

    // After all that, the same connection still serves.
    let who = raw
        .ask(r#"{"jsonrpc": "2.0", "id": "last", "method": "whoami"}"#)
        .await;
    assert_eq!(who["id"], "last");
    assert_eq!(who["result"]["user_id"], identity.user_id);

    // `subscribe` needs a stream: `dispatch` alone refuses it.
    let e = dispatch(
        &alice,
        &identity,
        Request::Subscribe {
            since: None,
            progress: None,
        },
    )
    .await
    .unwrap_err();
    assert_eq!((e.code(), e.kind()), (-32600, "needs_stream"));
    alice.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_too_long_or_not_utf8_is_answered_then_the_connection_closes() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, identity) = node("alice");
    let socket = serve(dir.path(), &alice, &identity).await;

    let mut raw = Raw::connect(&socket).await;
    let oversized = vec![b'a'; MAX_LINE_BYTES + 64 * 1024];
    let mut writer = raw.writer;
    // The server stops reading part-way: write from another task, and do
    // not mind the write failing once it has closed.
    let writing = tokio::spawn(async move {
        let _ = writer.write_all(&oversized).await;
        let _ = writer.write_all(b"\n").await;
        writer
    });
    let answer: Value = serde_json::from_str(&{
        let mut line = String::new();
        tokio::time::timeout(WAIT, raw.reader.read_line(&mut line))
            .await
            .expect("an answer in time")
            .unwrap();
        line
    })
    .unwrap();
    assert_error(&answer, -32600, "line_too_long");
    let mut rest = String::new();
    let n = tokio::time::timeout(WAIT, raw.reader.read_line(&mut rest))
        .await
        .expect("the close in time")
        .unwrap_or(0);
    assert_eq!(n, 0, "the connection is closed: {rest:?}");
    drop(writing.await.unwrap());

    let mut raw = Raw::connect(&socket).await;
    raw.send(b"{\"jsonrpc\": \"2.0\", \"id\": 1, \"method\": \"wh\xff\xfe\"}")
        .await;
    let answer: Value = serde_json::from_str(&raw.line().await.unwrap()).unwrap();
    assert_error(&answer, -32600, "invalid_request");
    assert_eq!(raw.line().await, None, "the connection is closed");

    // A client that writes a whole 1 MB line before it reads anything
    // still reads why it was refused.
    let mut raw = Raw::connect(&socket).await;
    let mut huge = vec![b'a'; 1 << 20];
    huge.push(b'\n');
    tokio::time::timeout(WAIT, raw.writer.write_all(&huge))
        .await
        .expect("the write in time")
        .expect("the whole line was taken");
    let answer: Value = serde_json::from_str(&raw.line().await.unwrap()).unwrap();
    assert_error(&answer, -32600, "line_too_long");

    // The server itself serves on.
    let mut raw = Raw::connect(&socket).await;
    let who = raw
        .ask(r#"{"jsonrpc": "2.0", "id": 1, "method": "whoami"}"#)
        .await;
    assert_eq!(who["result"]["username"], "alice");
    alice.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_stops_with_its_token_and_closes_every_connection() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, identity) = node("stopper");
    let socket = dir.path().join("api.sock");
    let stop = tokio_util::sync::CancellationToken::new();
    let server = {
        let (socket, engine, identity, stop) = (
            socket.clone(),
            engine.clone(),
            identity.clone(),
            stop.clone(),
        );
        tokio::spawn(
            async move { safemeet_api::serve_until(&socket, engine, identity, stop).await },
        )
    };
    let mut idle = tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(stream) = UnixStream::connect(&socket).await {
                let (read, writer) = stream.into_split();
                return Raw {
                    reader: BufReader::new(read),
                    writer,
                };
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the socket answers");
    // One connection streams events, one is idle between requests.
    let mut streaming = Raw::connect(&socket).await;
    let subscribed = streaming
        .ask(r#"{"jsonrpc":"2.0","id":1,"method":"subscribe","params":{}}"#)
        .await;
    assert_eq!(subscribed["result"]["subscribed"], true, "{subscribed}");
    let whoami = idle
        .ask(r#"{"jsonrpc":"2.0","id":2,"method":"whoami"}"#)
        .await;
    assert!(whoami["result"]["user_id"].is_string(), "{whoami}");

    stop.cancel();
    let ended = tokio::time::timeout(WAIT, server).await;
    assert!(
        matches!(ended, Ok(Ok(Ok(())))),
        "the server returned: {ended:?}"
    );
    assert_eq!(streaming.line().await, None, "the stream was closed");
    assert_eq!(idle.line().await, None, "the idle connection was closed");
    assert!(!socket.exists(), "the socket file is removed");
    engine.shutdown().await.unwrap();
}
