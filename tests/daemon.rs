//! End-to-end tests with real `safemeet daemon` processes on 127.0.0.1, each
//! with its own `--home`: direct messages both ways through the CLI, a
//! recipient that is down when a message is sent, a 3-member room (members
//! leaving, removed and banned through the CLI), bad API
//! input, malformed frames from a bare libp2p peer, an event subscriber
//! that reconnects with its cursor, and SIGTERM at every step of a start.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

mod support;

const PASS: &str = "correct horse battery";
const WAIT: Duration = Duration::from_secs(30);

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_safemeet"));
    c.env("SAFEMEET_PASSPHRASE", PASS)
        .env_remove("SAFEMEET_HOME")
        .env_remove("SAFEMEET_LOG");
    c
}

/// Runs a command, expects success, parses the JSON it prints.
fn cli(home: &Path, args: &[&str]) -> Value {
    let out = bin()
        .arg("--home")
        .arg(home)
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "safemeet {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?}: not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn init(dir: &Path, name: &str) -> PathBuf {
    let home = dir.join(name);
    cli(&home, &["init", "--username", name]);
    home
}

/// A running daemon. Dropped without [`stop`](Self::stop), it is killed
/// (SIGKILL: no shutdown, as in a crash).
struct Daemon {
    process: support::Reaped,
    home: PathBuf,
}

impl Daemon {
    fn start(home: &Path, listen: &str) -> Self {
        Self::start_with(home, listen, &[])
    }

    fn start_with(home: &Path, listen: &str, extra: &[&str]) -> Self {
        let mut child = bin()
            .arg("--home")
            .arg(home)
            .args(["daemon", "--listen", listen, "--no-mdns", "--json"])
            .args(["--web", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        // The daemon prints one JSON line once it listens.
        let stdout = child.stdout.take().unwrap();
        let process = support::Reaped::new(child);
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(WAIT).expect("the daemon started");
        let v: Value = serde_json::from_str(&line).unwrap();
        assert!(!v["listen_addrs"].as_array().unwrap().is_empty(), "{v}");
        Self {
            process,
            home: home.to_path_buf(),
        }
    }

    fn addr(&self) -> String {
        cli(&self.home, &["whoami"])["listen_addrs"][0]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// SIGTERM, and wait for a clean exit.
    fn stop(mut self) {
        self.process.signal("TERM");
        let status = self.process.wait();
        assert!(
            status.success(),
            "the daemon exits cleanly on SIGTERM: {status:?}"
        );
    }
}

/// Checks `check` every 100 ms until it returns something; fails after [`WAIT`].
fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let interval = Duration::from_millis(100);
    for _ in 0..(WAIT.as_millis() / interval.as_millis()) {
        if let Some(v) = check() {
            return v;
        }
        std::thread::park_timeout(interval);
    }
    panic!("timed out waiting for {what}")
}

fn has_message(home: &Path, target: &str, text: &str, state: Option<&str>) -> bool {
    cli(home, &["messages", target])
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["text"] == text && state.is_none_or(|s| m["state"] == s))
}

fn befriend(a: &Path, b: &Path) {
    befriend_as(a, "alice", b, "bob");
}

/// `a` (called `a_name`) and `b` (called `b_name`) add each other.
fn befriend_as(a: &Path, a_name: &str, b: &Path, b_name: &str) {
    let ia = cli(a, &["invite"])["invite"].as_str().unwrap().to_owned();
    let ib = cli(b, &["invite"])["invite"].as_str().unwrap().to_owned();
    cli(a, &["contact", "add", &ib, "--name", b_name]);
    cli(b, &["contact", "add", &ia, "--name", a_name]);
}

fn room_members(home: &Path, room: &str) -> Option<usize> {
    cli(home, &["room", "list"])
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == room)
        .map(|r| r["members"].as_array().unwrap().len())
}

#[test]
fn a_running_daemon_keeps_no_trace_of_the_passphrase_in_its_environment() {
    let dir = tempfile::tempdir().unwrap();
    let home = init(dir.path(), "alice");
    let daemon = Daemon::start(&home, "/ip4/127.0.0.1/tcp/0");
    // What any process of the same user can read, for as long as it runs.
    let environ = std::fs::read(format!("/proc/{}/environ", daemon.process.pid())).unwrap();
    let entries: Vec<&[u8]> = environ.split(|b| *b == 0).collect();
    assert!(
        entries.iter().any(|e| e.starts_with(b"PATH=")),
        "the rest of the environment is intact"
    );
    assert!(
        !entries
            .iter()
            .any(|e| e.starts_with(b"SAFEMEET_PASSPHRASE")),
        "the variable is gone"
    );
    assert!(
        !environ.windows(PASS.len()).any(|w| w == PASS.as_bytes()),
        "the passphrase's text is gone"
    );
    // It was read all the same: the daemon unlocked and serves.
    assert!(cli(&home, &["whoami"])["user_id"].is_string());
    daemon.stop();
}

#[test]
fn two_daemons_exchange_direct_messages() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob) = (init(dir.path(), "alice"), init(dir.path(), "bob"));
    let da = Daemon::start(&alice, "/ip4/127.0.0.1/tcp/0");
    let db = Daemon::start(&bob, "/ip4/127.0.0.1/tcp/0");
    assert!(da.addr().contains("/p2p/"));
    befriend(&alice, &bob);

    let sent = cli(&alice, &["send", "bob", "hello from alice"]);
    assert!(sent["event_id"].as_str().unwrap().starts_with("e_"));
    eventually("bob to get the message", || {
        has_message(&bob, "alice", "hello from alice", Some("received")).then_some(())
    });
    eventually("alice's message to be delivered", || {
        has_message(&alice, "bob", "hello from alice", Some("delivered")).then_some(())
    });
    cli(&bob, &["send", "alice", "hello back"]);
    eventually("alice to get the reply", || {
        has_message(&alice, "bob", "hello back", None).then_some(())
    });
    let list = cli(&alice, &["contact", "list"]);
    assert_eq!(list[0]["name"], "bob");
    assert_eq!(list[0]["username"], "bob");
    da.stop();
    db.stop();
}

#[test]
fn three_members_talk_in_a_room_one_leaves_and_is_invited_back() {
    let dir = tempfile::tempdir().unwrap();
    let alice = init(dir.path(), "alice");
    let bob = init(dir.path(), "bob");
    let carol = init(dir.path(), "carol");
    let daemons: Vec<Daemon> = [&alice, &bob, &carol]
        .iter()
        .map(|h| Daemon::start(h, "/ip4/127.0.0.1/tcp/0"))
        .collect();
    befriend_as(&alice, "alice", &bob, "bob");
    befriend_as(&alice, "alice", &carol, "carol");
    befriend_as(&bob, "bob", &carol, "carol");
    // Carol joins Alice's rooms without asking; Bob is asked.
    let set = cli(
        &carol,
        &["contact", "set", "alice", "--auto-accept-invites"],
    );
    assert_eq!(set["auto_accept_invites"], true, "{set}");

    let created = cli(
        &alice,
        &[
            "room", "create", "club", "--member", "bob", "--member", "carol",
        ],
    );
    let room_id = created["room_id"].as_str().unwrap().to_owned();
    assert!(room_id.starts_with("r_"), "{created}");
    let invitation = eventually("bob's invitation", || {
        cli(&bob, &["room", "invitations"])
            .as_array()
            .unwrap()
            .first()
            .cloned()
    });
    assert_eq!(invitation["name"], "club", "{invitation}");
    assert_eq!(invitation["room_id"].as_str(), Some(room_id.as_str()));
    assert_eq!(
        room_members(&bob, "club"),
        None,
        "not joined before consent"
    );
    let joined = cli(&bob, &["room", "join", "club"]);
    assert_eq!(joined["room_id"].as_str(), Some(room_id.as_str()));
    assert!(
        cli(&bob, &["room", "invitations"])
            .as_array()
            .unwrap()
            .is_empty()
    );
    for home in [&bob, &carol] {
        eventually("the room to reach every member", || {
            (room_members(home, "club") == Some(3)).then_some(())
        });
    }

    cli(&alice, &["send", "club", "welcome, both"]);
    cli(&bob, &["send", &room_id, "hi all"]);
    for (home, text) in [
        (&bob, "welcome, both"),
        (&carol, "welcome, both"),
        (&alice, "hi all"),
        (&carol, "hi all"),
    ] {
        eventually("a room message to arrive", || {
            has_message(home, "club", text, None).then_some(())
        });
    }
    eventually("alice's room message to be delivered", || {
        has_message(&alice, "club", "welcome, both", Some("delivered")).then_some(())
    });

    cli(&carol, &["room", "leave", "club"]);
    assert_eq!(
        room_members(&carol, "club"),
        None,
        "carol no longer lists it"
    );
    for home in [&alice, &bob] {
        eventually("the others to see carol leave", || {
            (room_members(home, "club") == Some(2)).then_some(())
        });
    }
    cli(&alice, &["send", "club", "just us now"]);
    eventually("bob to get the message after carol left", || {
        has_message(&bob, "club", "just us now", None).then_some(())
    });
    assert!(
        !has_message(&carol, &room_id, "just us now", None),
        "a member who left gets nothing sent after"
    );
    let err = bin()
        .arg("--home")
        .arg(&carol)
        .args(["send", "club", "let me back", "--json"])
        .output()
        .unwrap();
    assert!(!err.status.success(), "sending to a room one left fails");

    // Only an admin invites; carol is invited back and hears what follows.
    let refused = bin()
        .arg("--home")
        .arg(&bob)
        .args(["room", "invite", "club", "carol", "--json"])
        .output()
        .unwrap();
    assert!(!refused.status.success(), "bob is not an admin");
    cli(&alice, &["room", "invite", "club", "carol"]);
    eventually("carol to be back in the room", || {
        (room_members(&carol, "club") == Some(3)).then_some(())
    });
    cli(&alice, &["send", "club", "welcome back"]);
    eventually("carol to get a message after rejoining", || {
        has_message(&carol, "club", "welcome back", None).then_some(())
    });
    for d in daemons {
        d.stop();
    }
}

/// Runs a command that must fail; returns its exit status and the JSON
/// error it prints on stderr.
fn cli_err(home: &Path, args: &[&str]) -> (i32, Value) {
    let out = bin()
        .arg("--home")
        .arg(home)
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    assert!(!out.status.success(), "safemeet {args:?} succeeded");
    let err = serde_json::from_slice(&out.stderr).unwrap_or_else(|e| {
        panic!(
            "{args:?}: not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), err)
}

#[test]
fn an_admin_removes_and_bans_members_and_others_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let alice = init(dir.path(), "alice");
    let bob = init(dir.path(), "bob");
    let carol = init(dir.path(), "carol");
    let daemons: Vec<Daemon> = [&alice, &bob, &carol]
        .iter()
        .map(|h| Daemon::start(h, "/ip4/127.0.0.1/tcp/0"))
        .collect();
    befriend_as(&alice, "alice", &bob, "bob");
    befriend_as(&alice, "alice", &carol, "carol");
    befriend_as(&bob, "bob", &carol, "carol");
    for home in [&bob, &carol] {
        cli(home, &["contact", "set", "alice", "--auto-accept-invites"]);
    }
    cli(
        &alice,
        &[
            "room", "create", "club", "--member", "bob", "--member", "carol",
        ],
    );
    for home in [&bob, &carol] {
        eventually("the room to reach every member", || {
            (room_members(home, "club") == Some(3)).then_some(())
        });
    }

    // Not an admin, no such room, no such member, oneself.
    let (code, err) = cli_err(&bob, &["room", "remove", "club", "carol"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err["error"]["message"].as_str().unwrap().contains("admins"),
        "{err}"
    );
    let (_, err) = cli_err(&bob, &["room", "ban", "club", "carol"]);
    assert!(
        err["error"]["message"].as_str().unwrap().contains("admins"),
        "{err}"
    );
    let (code, err) = cli_err(&alice, &["room", "remove", "nowhere", "carol"]);
    assert_eq!(code, 2, "{err}");
    let stranger = "u_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let (code, err) = cli_err(&alice, &["room", "remove", "club", stranger]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not a member"),
        "{err}"
    );
    let me = cli(&alice, &["whoami"])["user_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, err) = cli_err(&alice, &["room", "remove", "club", &me]);
    assert!(
        err["error"]["message"].as_str().unwrap().contains("leave"),
        "{err}"
    );

    // Alice removes Carol: the others go on without her.
    let removed = cli(&alice, &["room", "remove", "club", "carol"]);
    assert_eq!(removed, serde_json::json!({"removed": true}));
    eventually("bob to see carol removed", || {
        (room_members(&bob, "club") == Some(2)).then_some(())
    });
    eventually("carol to be out", || {
        room_members(&carol, "club").is_none().then_some(())
    });
    cli(&alice, &["send", "club", "after carol"]);
    eventually("bob to get the message", || {
        has_message(&bob, "club", "after carol", None).then_some(())
    });

    // Invited back, then banned: she cannot be added again.
    cli(&alice, &["room", "invite", "club", "carol"]);
    eventually("carol to be back", || {
        (room_members(&carol, "club") == Some(3)).then_some(())
    });
    let banned = cli(&alice, &["room", "ban", "club", "carol"]);
    assert_eq!(banned, serde_json::json!({"banned": true}));
    eventually("bob to see carol banned", || {
        (room_members(&bob, "club") == Some(2)).then_some(())
    });
    let (code, err) = cli_err(&alice, &["room", "invite", "club", "carol"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err["error"]["message"].as_str().unwrap().contains("banned"),
        "{err}"
    );
    for d in daemons {
        d.stop();
    }
}

#[test]
fn a_message_sent_while_the_recipient_is_down_arrives_once_it_starts() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob) = (init(dir.path(), "alice"), init(dir.path(), "bob"));
    let da = Daemon::start(&alice, "/ip4/127.0.0.1/tcp/0");
    let db = Daemon::start(&bob, "/ip4/127.0.0.1/tcp/0");
    befriend(&alice, &bob);
    let bob_listen = db.addr();
    let bob_listen = bob_listen.split("/p2p/").next().unwrap().to_owned();
    db.stop();

    cli(&alice, &["send", "bob", "are you there?"]);
    assert!(has_message(&alice, "bob", "are you there?", Some("sent")));
    let db = Daemon::start(&bob, &bob_listen);
    eventually("bob to get the message after starting", || {
        has_message(&bob, "alice", "are you there?", None).then_some(())
    });
    eventually("the message to be delivered", || {
        has_message(&alice, "bob", "are you there?", Some("delivered")).then_some(())
    });
    let count = cli(&bob, &["messages", "alice"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["text"] == "are you there?")
        .count();
    assert_eq!(count, 1, "delivered exactly once");
    da.stop();
    db.stop();
}

#[test]
fn bad_api_input_gets_errors_and_the_daemon_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let alice = init(dir.path(), "alice");
    let da = Daemon::start(&alice, "/ip4/127.0.0.1/tcp/0");
    let mut sock = UnixStream::connect(alice.join("safemeet.sock")).unwrap();
    sock.set_read_timeout(Some(WAIT)).unwrap();
    let mut reader = BufReader::new(sock.try_clone().unwrap());
    let mut ask = |line: &str| -> Value {
        writeln!(sock, "{line}").unwrap();
        let mut answer = String::new();
        reader.read_line(&mut answer).unwrap();
        serde_json::from_str(&answer).unwrap()
    };
    assert_eq!(ask("this is not json")["error"]["code"], -32700);
    assert_eq!(
        ask(r#"{"id": 1, "method": "whoami"}"#)["error"]["code"],
        -32600
    );
    assert_eq!(
        ask(r#"{"jsonrpc": "2.0", "id": 2, "method": "no.such.method"}"#)["error"]["code"],
        -32601
    );
    assert_eq!(
        ask(r#"{"jsonrpc": "2.0", "id": 3, "method": "send", "params": {}}"#)["error"]["code"],
        -32602
    );
    let bad = ask(
        r#"{"jsonrpc": "2.0", "id": 4, "method": "contact.add", "params": {"invite": "safemeet:zzzz"}}"#,
    );
    assert_eq!(bad["error"]["code"], -32000);
    assert_eq!(bad["error"]["data"]["kind"], "bad_invite");
    // The same connection and the CLI still work.
    let who = ask(r#"{"jsonrpc": "2.0", "id": 5, "method": "whoami"}"#);
    assert_eq!(who["id"], 5);
    assert!(who["result"]["user_id"].as_str().unwrap().starts_with("u_"));
    let out = bin()
        .arg("--home")
        .arg(&alice)
        .args(["send", "nobody", "hi", "--json"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown contact is a usage error"
    );
    cli(&alice, &["whoami"]);
    da.stop();
}

/// Runs a command without `--json`, expects success, returns its stdout.
fn cli_human(home: &Path, args: &[&str]) -> String {
    let out = bin().arg("--home").arg(home).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "safemeet {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn hostile_messages_reach_the_cli_whole_with_and_without_a_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob) = (init(dir.path(), "alice"), init(dir.path(), "bob"));
    // No daemon: every command runs the engine in-process.
    befriend(&alice, &bob);
    // Three of the longest texts, all control characters (1..=31; an
    // argument cannot hold NUL): 96 KiB each as JSON, more than a line
    // for the three.
    let texts: Vec<String> = (0..3u8)
        .map(|seed| {
            (0..16 * 1024)
                .map(|i: usize| char::from(1 + (i as u8).wrapping_add(seed) % 31))
                .collect()
        })
        .collect();
    for text in &texts {
        cli(&alice, &["send", "bob", text]);
    }
    let read = |home: &Path| -> Vec<String> {
        cli(home, &["messages", "bob"])
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["text"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(read(&alice), texts, "in-process");
    let da = Daemon::start(&alice, "/ip4/127.0.0.1/tcp/0");
    assert_eq!(read(&alice), texts, "through the daemon's socket");
    // Shown to a person, control characters are escaped, not sent to the
    // terminal (escape sequences, fake lines).
    let shown = cli_human(&alice, &["messages", "bob"]);
    assert_eq!(shown.lines().count(), 3, "one line per message");
    assert!(
        !shown.chars().any(|c| c.is_control() && c != '\n'),
        "raw control characters reach the terminal"
    );
    assert!(shown.contains("\\u{1b}"), "ESC is shown escaped");
    da.stop();
}

/// Reads `listen` output lines until `n` events have arrived; returns them.
fn listen_events(home: &Path, since: u64, n: usize) -> Vec<Value> {
    let mut child = bin()
        .arg("--home")
        .arg(home)
        .args(["listen", "--since", &since.to_string(), "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let rx = support::node::lines_of(stdout);
    let mut events = Vec::new();
    while events.len() < n {
        let line = rx.recv_timeout(WAIT).expect("an event");
        events.push(serde_json::from_str::<Value>(&line).unwrap());
    }
    let _ = child.kill();
    let _ = child.wait();
    events
}

#[test]
fn a_subscriber_that_reconnects_with_its_cursor_misses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob) = (init(dir.path(), "alice"), init(dir.path(), "bob"));
    let da = Daemon::start(&alice, "/ip4/127.0.0.1/tcp/0");
    let db = Daemon::start(&bob, "/ip4/127.0.0.1/tcp/0");
    befriend(&alice, &bob);
    cli(&alice, &["send", "bob", "one"]);
    let first = listen_events(&bob, 0, 1);
    assert_eq!(first[0]["message"]["text"], "one");
    let cursor = first[0]["cursor"].as_u64().unwrap();
    // While nobody listens, two more arrive.
    cli(&alice, &["send", "bob", "two"]);
    cli(&alice, &["send", "bob", "three"]);
    eventually("both to arrive", || {
        has_message(&bob, "alice", "three", None).then_some(())
    });
    let rest = listen_events(&bob, cursor, 2);
    let texts: Vec<&str> = rest
        .iter()
        .map(|e| e["message"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["two", "three"]);
    assert!(rest.iter().all(|e| e["cursor"].as_u64().unwrap() > cursor));
    da.stop();
    db.stop();
}

#[test]
fn a_sender_killed_right_after_send_delivers_once_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob) = (init(dir.path(), "alice"), init(dir.path(), "bob"));
    let da = Daemon::start(&alice, "/ip4/127.0.0.1/tcp/0");
    let db = Daemon::start(&bob, "/ip4/127.0.0.1/tcp/0");
    befriend(&alice, &bob);
    let bob_listen = db.addr().split("/p2p/").next().unwrap().to_owned();
    db.stop();
    cli(&alice, &["send", "bob", "survives a crash"]);
    // SIGKILL: no shutdown, no flush beyond what `send` committed.
    drop(da);
    let db = Daemon::start(&bob, &bob_listen);
    let da = Daemon::start(&alice, "/ip4/127.0.0.1/tcp/0");
    eventually("the message to arrive after the sender restarted", || {
        has_message(&bob, "alice", "survives a crash", None).then_some(())
    });
    eventually("the message to be delivered", || {
        has_message(&alice, "bob", "survives a crash", Some("delivered")).then_some(())
    });
    let count = cli(&bob, &["messages", "alice"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["text"] == "survives a crash")
        .count();
    assert_eq!(count, 1, "delivered exactly once");
    da.stop();
    db.stop();
}

/// A bare libp2p peer that writes whatever bytes it is given on
/// `/safemeet/deliver/1`, length prefix included.
mod raw_peer {
    use std::io;

    use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
    use libp2p::StreamProtocol;
    use libp2p::request_response::{self, Codec};

    pub(crate) const DELIVER: StreamProtocol = StreamProtocol::new("/safemeet/deliver/1");

    #[derive(Clone, Default)]
    pub(crate) struct RawCodec;

    impl Codec for RawCodec {
        type Protocol = StreamProtocol;
        type Request = Vec<u8>;
        type Response = Vec<u8>;

        async fn read_request<T: AsyncRead + Unpin + Send>(
            &mut self,
            _: &StreamProtocol,
            _: &mut T,
        ) -> io::Result<Vec<u8>> {
            Err(io::Error::other("this peer takes no requests"))
        }

        async fn read_response<T: AsyncRead + Unpin + Send>(
            &mut self,
            _: &StreamProtocol,
            io: &mut T,
        ) -> io::Result<Vec<u8>> {
            let mut len = [0u8; 4];
            io.read_exact(&mut len).await?;
            let len = u32::from_be_bytes(len) as usize;
            assert!(len <= 1024, "a reply of {len} bytes");
            let mut buf = vec![0; len];
            io.read_exact(&mut buf).await?;
            Ok(buf)
        }

        async fn write_request<T: AsyncWrite + Unpin + Send>(
            &mut self,
            _: &StreamProtocol,
            io: &mut T,
            raw: Vec<u8>,
        ) -> io::Result<()> {
            io.write_all(&raw).await?;
            io.close().await
        }

        async fn write_response<T: AsyncWrite + Unpin + Send>(
            &mut self,
            _: &StreamProtocol,
            _: &mut T,
            _: Vec<u8>,
        ) -> io::Result<()> {
            Err(io::Error::other("this peer sends no responses"))
        }
    }

    pub(crate) fn swarm() -> libp2p::Swarm<request_response::Behaviour<RawCodec>> {
        crate::support::client_swarm(RawCodec, DELIVER)
    }
}

/// Sends each raw request to `addr` and returns what came back for each:
/// `Ok(answer)` or `Err(failure)`.
fn raw_requests(addr: &str, requests: Vec<Vec<u8>>) -> Vec<Result<Vec<u8>, String>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut swarm = raw_peer::swarm();
        let addr: libp2p::Multiaddr = addr.parse().unwrap();
        let Some(libp2p::multiaddr::Protocol::P2p(peer)) = addr.iter().last() else {
            panic!("no /p2p/ in {addr}")
        };
        swarm.dial(addr.clone()).unwrap();
        crate::support::request_all(&mut swarm, &peer, requests).await
    })
}

fn prefixed(len: u32, body: &[u8]) -> Vec<u8> {
    let mut v = len.to_be_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

#[test]
fn malformed_frames_from_a_raw_peer_are_refused_and_the_daemon_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob) = (init(dir.path(), "alice"), init(dir.path(), "bob"));
    let da = Daemon::start(&alice, "/ip4/127.0.0.1/tcp/0");
    let db = Daemon::start(&bob, "/ip4/127.0.0.1/tcp/0");
    befriend(&alice, &bob);

    use safemeet_proto::envelope::{Envelope, OlmMessageKind, RoomEnvelope, ToDeviceEnvelope};
    let padded_garbage = safemeet_proto::padding::pad(
        b"not an envelope at all",
        safemeet_proto::padding::MESSAGE_FLOOR,
    )
    .unwrap();
    // Room frames are sealed under a header key. A DM's key derives from
    // the two user ids, so a raw peer who knows them can seal frames Bob
    // opens: well-formed envelopes whose ciphertext is garbage, never
    // stored.
    let user = |who: &std::path::Path| -> safemeet_proto::UserId {
        cli(who, &["whoami"])["user_id"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    let (_, dm_topic) = safemeet_proto::room::dm_room(&user(&alice), &user(&bob));
    let dm_key = safemeet_proto::header::HeaderKey::for_dm(&dm_topic);
    let sealed = |env: RoomEnvelope, key: &safemeet_proto::header::HeaderKey| {
        Envelope::Room(safemeet_crypto::header::seal(key, &env).unwrap())
            .to_frame()
            .unwrap()
    };
    let forged_room = sealed(
        RoomEnvelope {
            topic: dm_topic.clone(),
            session_id: [8; 32],
            ciphertext: vec![0x03; 200],
        },
        &dm_key,
    );
    let mut stranger = vodozemac::megolm::GroupSession::new(Default::default());
    let unknown_session = sealed(
        RoomEnvelope {
            topic: dm_topic.clone(),
            session_id: [6; 32],
            ciphertext: stranger.encrypt(b"who am I").to_bytes(),
        },
        &dm_key,
    );
    // Sealed under a key Bob does not hold: it may be the frame of a room
    // whose key share has not come yet, so "later", and never stored.
    let unknown_key = sealed(
        RoomEnvelope {
            topic: dm_topic,
            session_id: [6; 32],
            ciphertext: vec![0x03; 200],
        },
        &safemeet_proto::header::HeaderKey::for_room(&safemeet_proto::RoomSecret::from_bytes(
            [5; 32],
        )),
    );
    let forged_olm = Envelope::ToDevice(ToDeviceEnvelope {
        kind: OlmMessageKind::PreKey,
        session_id: [9; 32],
        ciphertext: vec![0x03; 300],
    })
    .to_frame()
    .unwrap();
    let results = raw_requests(
        &db.addr(),
        vec![
            // Not a padded frame.
            prefixed(600, &[0xff; 600]),
            // A length over the limit (4 GiB), with a little data.
            prefixed(u32::MAX, &[0; 64]),
            // Shorter than its length says.
            prefixed(1000, &[1; 10]),
            // Correctly padded, but not an envelope.
            prefixed(padded_garbage.len() as u32, &padded_garbage),
            prefixed(forged_room.len() as u32, &forged_room),
            prefixed(forged_olm.len() as u32, &forged_olm),
            prefixed(unknown_session.len() as u32, &unknown_session),
            prefixed(unknown_key.len() as u32, &unknown_key),
        ],
    );
    assert_eq!(
        results[7].as_deref(),
        Ok(&b"later"[..]),
        "unknown header key"
    );
    // A real Megolm message of a session nobody shared, under Alice's DM
    // key but from a peer that is none of Alice's devices: junk, refused
    // (and never stored or held).
    assert_eq!(
        results[6].as_deref(),
        Ok(&b"refused"[..]),
        "unknown session from a stranger"
    );
    for (i, r) in results[..4].iter().enumerate() {
        assert!(r.is_err(), "malformed frame {i} was answered: {r:?}");
    }
    assert_eq!(
        results[4].as_deref(),
        Ok(&b"refused"[..]),
        "forged room message"
    );
    assert_eq!(
        results[5].as_deref(),
        Ok(&b"refused"[..]),
        "forged Olm message"
    );

    // The daemon still serves its API and its contacts.
    assert_eq!(cli(&bob, &["whoami"])["username"], "bob");
    cli(&alice, &["send", "bob", "still there?"]);
    eventually("bob to get a message after the garbage", || {
        has_message(&bob, "alice", "still there?", None).then_some(())
    });
    assert_eq!(
        cli(&bob, &["messages", "alice"]).as_array().unwrap().len(),
        1,
        "nothing from the raw peer was stored"
    );
    da.stop();
    db.stop();
}

#[test]
fn a_daemon_reachable_only_through_a_relay_gets_its_messages() {
    let dir = tempfile::tempdir().unwrap();
    let relay = support::Relay::start(&dir.path().join("relay"), &[]);
    let (a, b) = (init(dir.path(), "alice"), init(dir.path(), "bob"));
    // Alice listens on nothing another process can reach (an in-process
    // memory address): Bob can only get to her through the relay's circuit.
    let memory = format!("/memory/{}", std::process::id() as u64 * 1000 + 7);
    let relay_addr = relay.addr.to_string();
    let da = Daemon::start_with(&a, &memory, &["--relay", &relay_addr]);
    let circuit = eventually("Alice's circuit through the relay", || {
        cli(&a, &["whoami"])["listen_addrs"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .find(|addr| addr.contains("/p2p-circuit"))
            .map(str::to_owned)
    });
    assert!(
        circuit.starts_with(&relay_addr),
        "{circuit} runs through {relay_addr}"
    );
    // As printed, it names Alice once, at the end (a doubled `/p2p` is an
    // address other libp2p implementations refuse to dial).
    let alice_peer = cli(&a, &["whoami"])["peer_id"].as_str().unwrap().to_owned();
    assert!(
        circuit.ends_with(&format!("/p2p-circuit/p2p/{alice_peer}")),
        "{circuit}"
    );
    assert_eq!(circuit.matches("/p2p/").count(), 2, "{circuit}");
    assert!(circuit.parse::<libp2p::Multiaddr>().is_ok(), "{circuit}");
    let db = Daemon::start(&b, "/ip4/127.0.0.1/tcp/0");
    befriend(&a, &b);

    let sent = cli(&b, &["send", "alice", "through the relay"]);
    assert!(sent["event_id"].is_string());
    eventually("the message through the relay", || {
        has_message(&a, "bob", "through the relay", None).then_some(())
    });
    // And back (Alice reaches Bob directly).
    cli(&a, &["send", "bob", "and back"]);
    eventually("the answer", || {
        has_message(&b, "alice", "and back", None).then_some(())
    });
    eventually("Bob's message marked delivered", || {
        has_message(&b, "alice", "through the relay", Some("delivered")).then_some(())
    });
    da.stop();
    db.stop();
    relay.stop();
}

#[test]
fn a_relay_address_without_a_peer_id_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = init(dir.path(), "alice");
    let out = bin()
        .arg("--home")
        .arg(&a)
        .args(["daemon", "--relay", "/ip4/127.0.0.1/tcp/4011", "--no-mdns"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/p2p/"));
}

/// The log line `safemeet::shutdown` writes once SIGINT and SIGTERM are
/// handled: before it a signal ends any process at once, so it is the
/// earliest point a test can send one and expect a clean stop.
const HANDLED: &str = "SIGINT and SIGTERM now stop cleanly";
/// What the crypto machine logs (at warn) when the last run did not close
/// it: the start then discards every outbound room session.
const UNCLEAN: &str = "unclean shutdown";

/// A daemon on `home` whose stdout and stderr the test watches, logging
/// its start-up steps (and warnings) on stderr.
fn watched_daemon(home: &Path) -> support::Watched {
    let mut command = bin();
    command
        .arg("--home")
        .arg(home)
        .args([
            "daemon",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--no-mdns",
            "--json",
        ])
        .env(
            "SAFEMEET_LOG",
            "warn,safemeet::shutdown=debug,safemeet::daemon=debug,safemeet::messenger=debug",
        );
    support::Watched::spawn(command)
}

fn on_stderr(text: &'static str) -> impl Fn(&support::Line) -> bool {
    move |line| matches!(line, support::Line::Err(l) if l.contains(text))
}

fn ready(line: &support::Line) -> bool {
    matches!(line, support::Line::Out(l) if l.starts_with('{'))
}

#[test]
fn sigterm_at_any_point_of_the_start_stops_the_daemon_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let home = init(dir.path(), "alice");
    // SIGTERM as soon as the daemon reaches each step: while it unlocks
    // the profile, while the engine opens, while it waits for its
    // addresses, and once it is ready. Twice over.
    let steps: [support::Step; 4] = [
        ("the signal handlers", Box::new(on_stderr(HANDLED))),
        (
            "the profile unlocked",
            Box::new(on_stderr("profile unlocked")),
        ),
        ("the engine started", Box::new(on_stderr("engine started"))),
        ("the ready line", Box::new(ready)),
    ];
    for round in 0..2 {
        for (step, reached) in &steps {
            let mut daemon = watched_daemon(&home);
            daemon.wait_for(step, reached);
            daemon.signal("TERM");
            let (status, stderr) = daemon.finish();
            assert_eq!(
                status.code(),
                Some(0),
                "round {round}, SIGTERM at {step}: not a clean exit ({status:?}):\n{stderr}"
            );
            // This start found the last run's crypto machine closed.
            assert!(
                !stderr.contains(UNCLEAN),
                "round {round}, SIGTERM at {step}: the run before did not close cleanly:\n{stderr}"
            );
        }
    }
    // The check above can fail: after a SIGKILL the next start says so...
    let mut daemon = watched_daemon(&home);
    daemon.wait_for("the ready line", ready);
    daemon.signal("KILL");
    let (status, _) = daemon.finish();
    assert_eq!(status.code(), None, "killed");
    let mut daemon = watched_daemon(&home);
    daemon.wait_for("the ready line", ready);
    daemon.signal("TERM");
    let (status, stderr) = daemon.finish();
    assert!(status.success(), "{status:?}:\n{stderr}");
    assert!(stderr.contains(UNCLEAN), "a kill goes unnoticed:\n{stderr}");
    // ...and a clean stop after it makes the next start clean again.
    let mut daemon = watched_daemon(&home);
    daemon.wait_for("the ready line", ready);
    daemon.signal("TERM");
    let (status, stderr) = daemon.finish();
    assert!(status.success(), "{status:?}:\n{stderr}");
    assert!(!stderr.contains(UNCLEAN), "{stderr}");
}

/// A relay; Alice, and Bob who uses the relay, running and contacts.
fn met_with_a_relay(dir: &Path) -> (support::Relay, String, PathBuf, PathBuf, Daemon, Daemon) {
    let relay = support::Relay::start(&dir.join("relay"), &["--metrics", "127.0.0.1:0"]);
    let relay_addr = relay.addr.to_string();
    let (alice, bob) = (init(dir, "alice"), init(dir, "bob"));
    let da = Daemon::start(&alice, "/ip4/127.0.0.1/tcp/0");
    let db = Daemon::start_with(&bob, "/ip4/127.0.0.1/tcp/0", &["--relay", &relay_addr]);
    befriend(&alice, &bob);
    (relay, relay_addr, alice, bob, da, db)
}

#[test]
fn an_offline_device_gets_what_was_left_on_its_relay_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    // Bob's invite lists his relay.
    let (relay, relay_addr, alice, bob, da, db) = met_with_a_relay(dir.path());
    cli(&alice, &["room", "create", "plans", "--member", "bob"]);
    eventually("Bob's invitation", || {
        let list = cli(&bob, &["room", "invitations"]);
        (!list.as_array().unwrap().is_empty()).then_some(())
    });
    cli(&bob, &["room", "join", "plans"]);
    eventually("the room to reach Bob", || {
        (room_members(&bob, "plans") == Some(2)).then_some(())
    });
    let bob_listen = support::node::own_tcp_addr(&bob);
    db.stop();

    // Bob is offline: Alice's messages go to his relay.
    let dms = ["first while away", "second while away", "third while away"];
    for text in dms {
        cli(&alice, &["send", "bob", text]);
    }
    cli(&alice, &["send", "plans", "the room while away"]);
    let sent: Vec<(&str, &str)> = dms
        .iter()
        .map(|t| ("bob", *t))
        .chain([("plans", "the room while away")])
        .collect();
    let now_ms = safemeet_proto::clock::Clock::now(&safemeet_proto::clock::SystemClock).as_millis();
    for (target, text) in &sent {
        let until = eventually("the message to be stored at the relay", || {
            cli(&alice, &["messages", target])
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["text"] == *text && m["state"] == "stored_at_relay")
                .and_then(|m| m["stored_until"].as_u64())
        });
        assert!(until > now_ms, "kept for a while: {until} > {now_ms}");
    }
    let whoami = cli(&alice, &["whoami"]);
    da.stop();

    // Bob starts while Alice is gone, and gets each message once.
    let db = Daemon::start_with(&bob, &bob_listen, &["--relay", &relay_addr]);
    for (target, text) in &sent {
        let from = if *target == "bob" { "alice" } else { target };
        eventually("Bob to get the message from his relay", || {
            has_message(&bob, from, text, None).then_some(())
        });
    }
    // What he stored is deleted from the relay.
    eventually("the relay to hold nothing more", || {
        (relay.holds() == Some(0)).then_some(())
    });
    db.stop();
    let db = Daemon::start_with(&bob, &bob_listen, &["--relay", &relay_addr]);
    for (target, text) in &sent {
        let from = if *target == "bob" { "alice" } else { target };
        let count = cli(&bob, &["messages", from])
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["text"] == *text)
            .count();
        assert_eq!(count, 1, "{text:?} arrived exactly once");
    }
    db.stop();
    let logs = relay.stop();

    // The relay's store and logs hold no plaintext and nothing naming Alice.
    let files = support::dump(&dir.path().join("relay"));
    assert!(!files.is_empty() && !logs.is_empty(), "something to search");
    let user: safemeet_proto::UserId = whoami["user_id"].as_str().unwrap().parse().unwrap();
    let peer: libp2p::PeerId = whoami["peer_id"].as_str().unwrap().parse().unwrap();
    let mut needles: Vec<Vec<u8>> = sent.iter().map(|(_, t)| t.as_bytes().to_vec()).collect();
    needles.extend([
        user.as_bytes().to_vec(),
        user.to_string().into_bytes(),
        whoami["device_id"].as_str().unwrap().as_bytes().to_vec(),
        peer.to_bytes(),
        peer.to_string().into_bytes(),
        b"alice".to_vec(),
    ]);
    for needle in &needles {
        let shown = String::from_utf8_lossy(needle);
        assert!(
            !support::contains(&files, needle),
            "{shown} in the relay's files"
        );
        assert!(
            !support::contains(logs.as_bytes(), needle),
            "{shown} in the relay's logs"
        );
    }
}

#[test]
fn contacts_learn_of_relays_added_after_they_met() {
    let dir = tempfile::tempdir().unwrap();
    let relay = support::Relay::start(&dir.path().join("relay"), &[]);
    let relay_addr = relay.addr.to_string();
    let (alice, bob) = (init(dir.path(), "alice"), init(dir.path(), "bob"));
    let da = Daemon::start(&alice, "/ip4/127.0.0.1/tcp/0");
    let db = Daemon::start(&bob, "/ip4/127.0.0.1/tcp/0");
    // They meet while Bob uses no relay.
    befriend(&alice, &bob);
    let bob_listen = support::node::own_tcp_addr(&bob);
    db.stop();

    // Bob comes back with a relay: he tells Alice, and it is where her
    // next message waits once he is gone again.
    let db = Daemon::start_with(&bob, &bob_listen, &["--relay", &relay_addr]);
    eventually("Alice to learn of Bob's relay", || {
        cli(&alice, &["contact", "list"])[0]["relays"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == relay_addr.as_str())
            .then_some(())
    });
    db.stop();
    cli(&alice, &["send", "bob", "after he left"]);
    eventually("the message to be stored at his new relay", || {
        has_message(&alice, "bob", "after he left", Some("stored_at_relay")).then_some(())
    });
    let db = Daemon::start_with(&bob, &bob_listen, &["--relay", &relay_addr]);
    eventually("Bob to get it from his relay", || {
        has_message(&bob, "alice", "after he left", None).then_some(())
    });
    // Bob acknowledges what he drained: Alice sees it delivered.
    eventually("the relayed message to show as delivered", || {
        has_message(&alice, "bob", "after he left", Some("delivered")).then_some(())
    });
    da.stop();
    db.stop();
    relay.stop();
}

#[test]
fn a_relay_dropped_from_the_list_is_still_drained_of_what_it_holds() {
    let dir = tempfile::tempdir().unwrap();
    let (relay, _, alice, bob, da, db) = met_with_a_relay(dir.path());
    let bob_listen = support::node::own_tcp_addr(&bob);
    db.stop();
    cli(&alice, &["send", "bob", "left on his old relay"]);
    eventually("the message to be stored at the relay", || {
        has_message(
            &alice,
            "bob",
            "left on his old relay",
            Some("stored_at_relay"),
        )
        .then_some(())
    });
    da.stop();

    // Bob comes back without that relay (taken out of the config.toml that
    // remembered it): what it holds still reaches him.
    let config = std::fs::read_to_string(bob.join("config.toml")).unwrap();
    assert!(config.contains(&relay.addr.to_string()), "{config}");
    std::fs::write(bob.join("config.toml"), "relay = []\n").unwrap();
    let db = Daemon::start(&bob, &bob_listen);
    eventually("Bob to get it from the relay he dropped", || {
        has_message(&bob, "alice", "left on his old relay", None).then_some(())
    });
    db.stop();
    relay.stop();
}

#[derive(libp2p::swarm::NetworkBehaviour)]
struct DhtNode {
    identify: libp2p::identify::Behaviour,
    kad: libp2p::kad::Behaviour<libp2p::kad::store::MemoryStore>,
}

/// A bare rust-libp2p node speaking SafeMeet's identify and Kademlia
/// protocols: a DHT server (`serve`), or a client that only asks.
fn dht_node(serve: bool) -> libp2p::Swarm<DhtNode> {
    use libp2p::{identify, kad};
    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            libp2p::tcp::Config::default(),
            libp2p::noise::Config::new,
            libp2p::yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|key| {
            let local = key.public().to_peer_id();
            DhtNode {
                identify: identify::Behaviour::new(identify::Config::new(
                    safemeet_net::IDENTIFY_PROTOCOL.to_owned(),
                    key.public(),
                )),
                kad: kad::Behaviour::with_config(
                    local,
                    kad::store::MemoryStore::new(local),
                    kad::Config::new(safemeet_net::KAD_PROTOCOL),
                ),
            }
        })
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(30)))
        .build();
    let mode = if serve {
        libp2p::kad::Mode::Server
    } else {
        libp2p::kad::Mode::Client
    };
    swarm.behaviour_mut().kad.set_mode(Some(mode));
    swarm
}

/// Anyone holding an invite knows a device's peer id. Asking a relay for
/// it (FIND_NODE) must not give the addresses of a daemon that merely
/// connected to it: the relay hands out only peers that serve the DHT, as
/// the DHT server it is asked about here shows.
#[test]
fn a_relay_hands_out_no_address_of_a_daemon_that_connected_to_it() {
    use futures::StreamExt;
    use libp2p::swarm::SwarmEvent;

    let dir = tempfile::tempdir().unwrap();
    let relay = support::Relay::start(&dir.path().join("relay"), &[]);
    let a = init(dir.path(), "alice");
    let relay_addr = relay.addr.to_string();
    // Alice's daemon connects to the relay at start (and tells it, over
    // identify, where it listens).
    let daemon = Daemon::start_with(&a, "/ip4/127.0.0.1/tcp/0", &["--bootstrap", &relay_addr]);
    let alice: libp2p::PeerId = cli(&a, &["whoami"])["peer_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // A DHT server that introduces itself to the relay.
        let mut server = dht_node(true);
        let server_id = *server.local_peer_id();
        server
            .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
            .unwrap();
        server.dial(relay.addr.clone()).unwrap();
        tokio::time::timeout(WAIT, async {
            loop {
                // Its identify reached the relay once the relay's came back.
                if let SwarmEvent::Behaviour(DhtNodeEvent::Identify(
                    libp2p::identify::Event::Received { peer_id, .. },
                )) = server.select_next_some().await
                    && peer_id == relay.peer
                {
                    return;
                }
            }
        })
        .await
        .expect("the DHT server met the relay");
        tokio::spawn(async move {
            loop {
                server.select_next_some().await;
            }
        });

        // A stranger asks the relay for Alice's peer id, and dials what it
        // is told of. The server's identify may reach the relay a moment
        // after the relay's reached the server, so the stranger asks again
        // until the server is named; Alice must never be.
        let mut asker = dht_node(false);
        asker
            .behaviour_mut()
            .kad
            .add_address(&relay.peer, relay.addr.clone());
        let mut dialled = Vec::new();
        tokio::time::timeout(WAIT, async {
            while !dialled.contains(&server_id) {
                asker.behaviour_mut().kad.get_closest_peers(alice);
                loop {
                    match asker.select_next_some().await {
                        SwarmEvent::Dialing {
                            peer_id: Some(p), ..
                        } => dialled.push(p),
                        SwarmEvent::Behaviour(DhtNodeEvent::Kad(
                            libp2p::kad::Event::OutboundQueryProgressed { step, .. },
                        )) if step.last => break,
                        _ => {}
                    }
                }
                assert!(
                    !dialled.contains(&alice),
                    "the relay handed out Alice's addresses"
                );
            }
        })
        .await
        .unwrap_or_else(|_| {
            panic!("the relay never answered FIND_NODE with the DHT server it knows: {dialled:?}")
        });
    });
    daemon.stop();
    relay.stop();
}

/// libp2p listens with SO_REUSEPORT: without a check, a second daemon or
/// relay on a taken port would start and split connections with the first.
#[test]
fn a_daemon_or_relay_on_a_taken_port_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (init(dir.path(), "alice"), init(dir.path(), "bob"));
    let first = Daemon::start(&a, "/ip4/127.0.0.1/tcp/0");
    let taken = support::node::own_tcp_addr(&a);
    for args in [
        vec![
            "--home",
            b.to_str().unwrap(),
            "daemon",
            "--listen",
            &taken,
            "--no-mdns",
        ],
        vec![
            "--home",
            dir.path().join("relay").to_str().unwrap(),
            "relay",
            "--listen",
            &taken,
        ],
    ] {
        let out = bin().args(&args).output().unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {said}");
        assert!(said.contains("in use"), "{said}");
    }
    // The first one still serves.
    assert!(cli(&a, &["whoami"])["listen_addrs"].is_array());
    first.stop();
}

/// `messages` for people: names (the contact's, "me"), times in the local
/// time zone (here UTC+05:30, from `TZ`), the state.
#[test]
fn messages_show_names_local_times_and_me() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob) = (init(dir.path(), "alice"), init(dir.path(), "bob"));
    let da = Daemon::start(&alice, "/ip4/127.0.0.1/tcp/0");
    let db = Daemon::start(&bob, "/ip4/127.0.0.1/tcp/0");
    befriend(&alice, &bob);
    cli(&alice, &["send", "bob", "from alice"]);
    cli(&bob, &["send", "alice", "from bob"]);
    eventually("both to be delivered", || {
        (has_message(&alice, "bob", "from alice", Some("delivered"))
            && has_message(&alice, "bob", "from bob", None))
        .then_some(())
    });
    let listed = cli(&alice, &["messages", "bob"]);
    let out = bin()
        .arg("--home")
        .arg(&alice)
        .args(["messages", "bob"])
        .env("TZ", "IST-5:30")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let at = |i: usize| {
        let ms = listed[i]["ts"].as_u64().unwrap();
        let local = chrono::DateTime::from_timestamp_millis(i64::try_from(ms).unwrap()).unwrap()
            + chrono::Duration::minutes(5 * 60 + 30);
        local.format("%Y-%m-%d %H:%M").to_string()
    };
    let mine = lines.iter().position(|l| l.ends_with("me: from alice"));
    let theirs = lines.iter().position(|l| l.ends_with("bob: from bob"));
    let (Some(mine), Some(theirs)) = (mine, theirs) else {
        panic!("names in {lines:?}")
    };
    let index = |t: &str| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .position(|m| m["text"] == t)
            .unwrap()
    };
    assert!(
        lines[mine].starts_with(&format!("{} [delivered] ", at(index("from alice")))),
        "{lines:?}"
    );
    assert!(
        lines[theirs].starts_with(&format!("{} [received] ", at(index("from bob")))),
        "{lines:?}"
    );
    assert!(!text.contains("u_"), "no raw user ids: {text}");
    da.stop();
    db.stop();
}

/// `listen` with no flags: human lines, and only what happens from now on.
#[test]
fn listen_shows_what_happens_from_now_on_in_human_lines() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob) = (init(dir.path(), "alice"), init(dir.path(), "bob"));
    let da = Daemon::start(&alice, "/ip4/127.0.0.1/tcp/0");
    let db = Daemon::start(&bob, "/ip4/127.0.0.1/tcp/0");
    befriend(&alice, &bob);
    cli(&bob, &["send", "alice", "said before listening"]);
    eventually("alice to have it", || {
        has_message(&alice, "bob", "said before listening", None).then_some(())
    });
    let mut child = bin()
        .arg("--home")
        .arg(&alice)
        .arg("listen")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let rx = support::node::lines_of(stdout);
    // Sent until one shows (the listener may not have started at first).
    let mut lines = Vec::new();
    eventually("a new message to show", || {
        cli(&bob, &["send", "alice", "said while listening"]);
        while let Ok(line) = rx.recv_timeout(Duration::from_millis(300)) {
            lines.push(line);
        }
        lines
            .iter()
            .any(|l| l.contains("said while listening"))
            .then_some(())
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        !lines.iter().any(|l| l.contains("said before listening")),
        "{lines:?}"
    );
    assert!(!lines.iter().any(|l| l.starts_with('{')), "{lines:?}");
    da.stop();
    db.stop();
}
