//! End-to-end tests of whom a daemon hears from, with real `safemeet
//! daemon` processes on 127.0.0.1: the block list through the CLI (kept
//! across a restart), and a message request from someone who took the
//! user's invite, listed with `request list --json` and accepted.
//! (Delivery-level behaviour, such as a blocked user getting no
//! acknowledgement, is tested frame by frame in
//! `crates/engine/tests/people.rs`.)

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

mod support;

const PASS: &str = "correct horse battery staple";
const WAIT: Duration = Duration::from_secs(60);

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_safemeet"));
    c.env("SAFEMEET_PASSPHRASE", PASS)
        .env_remove("SAFEMEET_HOME")
        .env_remove("SAFEMEET_LOG");
    c
}

/// Runs a command with `--json`, expects success, parses what it prints.
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
    serde_json::from_slice(&out.stdout).unwrap()
}

fn init(dir: &Path, name: &str) -> PathBuf {
    let home = dir.join(name);
    cli(&home, &["init", "--username", name]);
    home
}

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

/// A daemon on 127.0.0.1; killed when dropped.
struct Daemon {
    process: support::Reaped,
}

impl Daemon {
    fn start(home: &Path) -> Self {
        Self::start_on(home, "/ip4/127.0.0.1/tcp/0")
    }

    fn start_on(home: &Path, listen: &str) -> Self {
        let mut child = bin()
            .arg("--home")
            .arg(home)
            .args(["daemon", "--listen", listen, "--no-mdns", "--json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
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
        Self { process }
    }

    fn stop(mut self) {
        self.process.signal("TERM");
        assert!(self.process.wait().success());
    }
}

/// Where a daemon listens on TCP, without its `/p2p/` part (to start it
/// again there: its contacts know that address from its invite).
fn own_tcp_addr(home: &Path) -> String {
    let who = cli(home, &["whoami"]);
    let addr = who["listen_addrs"][0].as_str().unwrap();
    addr.split("/p2p/").next().unwrap().to_owned()
}

fn user_id(home: &Path) -> String {
    cli(home, &["whoami"])["user_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn texts(home: &Path, target: &str) -> Vec<String> {
    cli(home, &["messages", target])
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn block_and_unblock_through_the_cli_and_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob) = (init(dir.path(), "alice"), init(dir.path(), "bob"));
    let da = Daemon::start(&alice);
    let db = Daemon::start(&bob);
    let ia = cli(&alice, &["invite"])["invite"]
        .as_str()
        .unwrap()
        .to_owned();
    let ib = cli(&bob, &["invite"])["invite"]
        .as_str()
        .unwrap()
        .to_owned();
    cli(&alice, &["contact", "add", &ib, "--name", "bob"]);
    cli(&bob, &["contact", "add", &ia, "--name", "alice"]);
    let alice_id = user_id(&alice);

    let blocked = cli(&bob, &["contact", "block", "alice"]);
    assert_eq!(
        blocked["blocked"].as_str(),
        Some(alice_id.as_str()),
        "{blocked}"
    );
    let list = cli(&bob, &["contact", "blocked"]);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["user_id"].as_str(), Some(alice_id.as_str()));

    // Kept across a restart of Bob's daemon (where Alice knows to find it).
    let listen = own_tcp_addr(&bob);
    db.stop();
    let db = Daemon::start_on(&bob, &listen);
    assert_eq!(
        cli(&bob, &["contact", "blocked"])[0]["user_id"],
        alice_id.as_str()
    );

    let unblocked = cli(&bob, &["contact", "unblock", "alice"]);
    assert_eq!(unblocked["unblocked"].as_str(), Some(alice_id.as_str()));
    assert!(
        cli(&bob, &["contact", "blocked"])
            .as_array()
            .unwrap()
            .is_empty()
    );
    // Unblocking someone who is not blocked is a usage error.
    let out = bin()
        .arg("--home")
        .arg(&bob)
        .args(["contact", "unblock", "alice", "--json"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    cli(&alice, &["send", "bob", "back in touch"]);
    eventually("bob to get alice's message", || {
        texts(&bob, "alice")
            .contains(&"back in touch".to_owned())
            .then_some(())
    });
    da.stop();
    db.stop();
}

#[test]
fn a_first_message_from_a_stranger_is_a_request_until_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let (bob, carol) = (init(dir.path(), "bob"), init(dir.path(), "carol"));
    let db = Daemon::start(&bob);
    let dc = Daemon::start(&carol);
    // Carol takes Bob's invite; Bob has not taken hers.
    let ib = cli(&bob, &["invite"])["invite"]
        .as_str()
        .unwrap()
        .to_owned();
    cli(&carol, &["contact", "add", &ib, "--name", "bob"]);
    cli(&carol, &["send", "bob", "hello bob, it's carol"]);

    let carol_id = user_id(&carol);
    let request = eventually("carol's request with her message", || {
        let list = cli(&bob, &["request", "list"]);
        let r = list.as_array().unwrap().first().cloned()?;
        // The introduction, the DM's room key and the message.
        (r["frames"].as_u64() == Some(3)).then_some(r)
    });
    assert_eq!(request["username"], "carol", "{request}");
    assert_eq!(request["user_id"].as_str(), Some(carol_id.as_str()));
    assert!(
        cli(&bob, &["contact", "list"])
            .as_array()
            .unwrap()
            .is_empty()
    );

    let accepted = cli(&bob, &["request", "accept", "carol"]);
    assert_eq!(accepted["user_id"].as_str(), Some(carol_id.as_str()));
    assert!(
        cli(&bob, &["request", "list"])
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(texts(&bob, "carol"), ["hello bob, it's carol"]);
    // Carol's message shows delivered: the kept frames were acknowledged.
    eventually("carol's message to show delivered", || {
        cli(&carol, &["messages", "bob"])
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["state"] == "delivered")
            .then_some(())
    });
    db.stop();
    dc.stop();
}
