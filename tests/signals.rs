//! End-to-end tests of presence, typing, read receipts and notifications,
//! with real `safemeet` daemons on 127.0.0.1: off by default and nothing
//! sent (the daemons' own counts of what left), on and seen by the
//! contact within a second; `listen --exec` runs once per message and
//! never for a muted room; `listen --notify` without a desktop goes on.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::path::Path;
use std::time::Duration;

use safemeet_proto::clock::{Clock, SystemClock};

use serde_json::Value;

mod support;

use support::node::{alice_and_bob, bin, cli, eventually};
use support::{Line, Watched};

/// What `home`'s daemon sent of each signal kind since it started.
fn sent(home: &Path) -> (u64, u64, u64) {
    let c = &cli(home, &["settings", "show"])["signal_counts"];
    (
        c["presence_sent"].as_u64().unwrap(),
        c["typing_sent"].as_u64().unwrap(),
        c["read_sent"].as_u64().unwrap(),
    )
}

/// Polls `check` until it holds; how long that took.
fn timed(what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let start = SystemClock.instant();
    eventually(what, || check().then_some(()));
    start.elapsed()
}

fn message<'a>(messages: &'a Value, text: &str) -> Option<&'a Value> {
    messages
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["text"] == text)
}

#[test]
fn signals_are_off_by_default_and_once_on_each_is_seen_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob, _da, _db) = alice_and_bob(dir.path());

    // Off: a message read, typing both ways: nothing of either kind sent.
    cli(&alice, &["send", "bob", "hello"]);
    eventually("bob has it", || {
        message(&cli(&bob, &["messages", "alice"]), "hello").map(|_| ())
    });
    cli(&bob, &["typing", "alice"]);
    cli(&alice, &["typing", "bob"]);
    cli(&bob, &["messages", "alice"]);
    assert_eq!(sent(&alice), (0, 0, 0));
    assert_eq!(sent(&bob), (0, 0, 0));
    assert_eq!(cli(&bob, &["presence"]), serde_json::json!([]));
    let shown = cli(&alice, &["settings", "show"]);
    assert_eq!(shown["signals"]["presence"], false);

    // On at both.
    for home in [&alice, &bob] {
        for setting in ["presence", "typing", "read-receipts"] {
            cli(home, &["settings", "set", setting, "on"]);
        }
    }
    let took = timed("bob sees alice online", || {
        cli(&bob, &["presence"])
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["state"] == "online")
    });
    assert!(took < Duration::from_secs(1), "presence took {took:?}");

    cli(&alice, &["typing", "bob"]);
    let took = timed("bob sees alice typing", || {
        !cli(&bob, &["typing", "alice", "--who"])
            .as_array()
            .unwrap()
            .is_empty()
    });
    assert!(took < Duration::from_secs(1), "typing took {took:?}");

    cli(&alice, &["send", "bob", "read me"]);
    eventually("bob has it", || {
        message(&cli(&bob, &["messages", "alice"]), "read me").map(|_| ())
    });
    // Bob's `messages` above read it: Alice sees it read by Bob.
    let took = timed("alice sees it read", || {
        message(&cli(&alice, &["messages", "bob"]), "read me")
            .is_some_and(|m| !m["read_by"].as_array().is_none_or(Vec::is_empty))
    });
    assert!(
        took < Duration::from_secs(1),
        "the read receipt took {took:?}"
    );
    let (p, t, r) = sent(&alice);
    assert!(
        p >= 1 && t >= 1,
        "alice sent presence {p}, typing {t}, read {r}"
    );
}

/// Alice's room "club" with Bob in it, muted at Bob's.
fn muted_club(alice: &Path, bob: &Path) {
    cli(bob, &["contact", "set", "alice", "--auto-accept-invites"]);
    let room = cli(alice, &["room", "create", "club", "--member", "bob"])["room_id"]
        .as_str()
        .unwrap()
        .to_owned();
    eventually("bob joins the club", || {
        cli(bob, &["room", "list"])
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["room_id"] == room.as_str())
            .then_some(())
    });
    cli(bob, &["mute", "club"]);
}

#[test]
fn listen_runs_a_command_per_message_and_never_for_a_muted_room() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob, _da, _db) = alice_and_bob(dir.path());
    muted_club(&alice, &bob);

    let out = dir.path().join("events.jsonl");
    let command = format!("cat >> {}", out.display());
    let mut listen = bin();
    listen
        .arg("--home")
        .arg(&bob)
        .args(["listen", "--since", "0", "--exec", &command]);
    // From the start of the log: nothing sent before it listens is missed.
    let mut listen = Watched::spawn(listen);
    for text in ["in the club 1", "in the club 2"] {
        cli(&alice, &["send", "club", text]);
    }
    for text in ["dm 1", "dm 2", "dm 3"] {
        cli(&alice, &["send", "bob", text]);
    }
    listen.wait_for(
        "the third dm",
        |l| matches!(l, Line::Out(t) if t.contains("dm 3")),
    );
    // The room's messages came before the DMs, in order: they were
    // passed over by the time the third DM's command ran.
    let lines = eventually("three commands ran", || {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (lines.len() >= 3).then_some(lines)
    });
    assert_eq!(lines.len(), 3, "{lines:?}");
    for (line, text) in lines.iter().zip(["dm 1", "dm 2", "dm 3"]) {
        assert_eq!(line["type"], "message");
        assert_eq!(line["message"]["text"], text);
    }
    // Bob has the room's messages all the same.
    let club = cli(&bob, &["messages", "club"]);
    assert!(message(&club, "in the club 2").is_some());
    // His own messages run nothing either.
    cli(&bob, &["send", "alice", "mine"]);
    cli(&alice, &["send", "bob", "dm 4"]);
    eventually("the fourth command", || {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        (text.lines().count() >= 4).then_some(())
    });
    let text = std::fs::read_to_string(&out).unwrap();
    assert_eq!(text.lines().count(), 4);
    assert!(!text.contains("\"mine\""));
    listen.signal("TERM");
    let _ = listen.finish();
}

#[test]
fn listen_notify_without_a_desktop_says_so_once_and_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob, _da, _db) = alice_and_bob(dir.path());
    let mut listen = bin();
    listen
        .arg("--home")
        .arg(&bob)
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .env("XDG_RUNTIME_DIR", dir.path())
        .args([
            "listen",
            "--since",
            "0",
            "--notify",
            "--notify-text",
            "hidden",
        ]);
    cli(&alice, &["send", "bob", "one"]);
    let mut listen = Watched::spawn(listen);
    listen.wait_for(
        "the warning",
        |l| matches!(l, Line::Err(t) if t.contains("no desktop notification could be shown")),
    );
    cli(&alice, &["send", "bob", "two"]);
    listen.wait_for(
        "the next message",
        |l| matches!(l, Line::Out(t) if t.contains("two")),
    );
    listen.signal("TERM");
    let (_, stderr) = listen.finish();
    assert_eq!(
        stderr.matches("no desktop notification").count(),
        1,
        "{stderr}"
    );
}

/// A stand-in desktop: the freedesktop notification service on a bus of
/// the test's own, keeping each notification's summary and body.
struct Desktop(std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>);

#[zbus::interface(name = "org.freedesktop.Notifications")]
impl Desktop {
    #[allow(clippy::too_many_arguments)] // the interface's own signature
    fn notify(
        &self,
        _app_name: String,
        _replaces_id: u32,
        _app_icon: String,
        summary: String,
        body: String,
        _actions: Vec<String>,
        _hints: std::collections::HashMap<String, zbus::OwnedVariant>,
        _expire_timeout: i32,
    ) -> u32 {
        let mut shown = self.0.lock().unwrap();
        shown.push((summary, body));
        shown.len() as u32
    }

    fn get_capabilities(&self) -> Vec<String> {
        vec!["body".into()]
    }

    fn get_server_information(&self) -> (String, String, String, String) {
        ("test".into(), "safemeet".into(), "1".into(), "1.2".into())
    }
}

#[test]
fn listen_notify_shows_one_notification_per_message_and_none_for_a_muted_room() {
    let dir = tempfile::tempdir().unwrap();
    // A session bus of the test's own.
    let mut bus = std::process::Command::new("dbus-daemon");
    bus.args(["--session", "--nofork", "--print-address=1"])
        .arg(format!(
            "--address=unix:path={}",
            dir.path().join("bus").display()
        ));
    let mut bus = Watched::spawn(bus);
    let Line::Out(address) = bus.wait_for("the bus address", |l| matches!(l, Line::Out(_))) else {
        unreachable!()
    };
    let shown = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let _desktop = rt
        .block_on(
            zbus::connection::Builder::address(address.trim())
                .name("org.freedesktop.Notifications")
                .serve_at("/org/freedesktop/Notifications", Desktop(shown.clone()))
                .build(),
        )
        .unwrap();

    let (alice, bob, _da, _db) = alice_and_bob(dir.path());
    muted_club(&alice, &bob);
    cli(&alice, &["send", "club", "in the club"]);
    cli(&alice, &["send", "bob", "one"]);
    cli(&alice, &["send", "bob", "two"]);
    let mut listen = bin();
    listen
        .arg("--home")
        .arg(&bob)
        .env("DBUS_SESSION_BUS_ADDRESS", address.trim())
        .args([
            "listen",
            "--since",
            "0",
            "--notify",
            "--notify-text",
            "sender",
        ]);
    let mut listen = Watched::spawn(listen);
    listen.wait_for(
        "the second dm",
        |l| matches!(l, Line::Out(t) if t.contains("two")),
    );
    eventually("two notifications", || {
        (shown.lock().unwrap().len() >= 2).then_some(())
    });
    // Bob's own message shows nothing either; Alice's next one does.
    cli(&bob, &["send", "alice", "mine"]);
    cli(&alice, &["send", "bob", "three"]);
    listen.wait_for(
        "the third dm",
        |l| matches!(l, Line::Out(t) if t.contains("three")),
    );
    eventually("three notifications", || {
        (shown.lock().unwrap().len() >= 3).then_some(())
    });
    let got = shown.lock().unwrap().clone();
    assert_eq!(got.len(), 3, "{got:?}");
    for (summary, body) in &got {
        assert_eq!(summary, "New message from alice");
        assert_eq!(body, "", "the text is hidden");
    }
    listen.signal("TERM");
    let (_, stderr) = listen.finish();
    assert!(!stderr.contains("no desktop notification"), "{stderr}");
    bus.signal("TERM");
}
