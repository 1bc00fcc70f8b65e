//! End-to-end tests of several devices per user, with real `safemeet`
//! processes on 127.0.0.1: linking a second device with `device link` and
//! `init --link` over the Noise_XXpsk3 link protocol, history and contacts
//! carried over, a contact's messages reaching both devices, one device's
//! messages showing on the other as the user's own, revocation, and links
//! that are wrong, used or expired.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::path::Path;

use safemeet_proto::link::LinkOffer;
use serde_json::Value;

mod support;

use support::node::{Daemon, bin, cli, eventually, init, texts, user_id};

fn invite(home: &Path) -> String {
    cli(home, &["invite"])["invite"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn link(home: &Path) -> String {
    cli(home, &["device", "link"])["link"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// `init --link`, expected to fail: its exit status and what it said.
fn failed_link(home: &Path, link: &str) -> (Option<i32>, String) {
    let out = bin()
        .arg("--home")
        .arg(home)
        .args(["init", "--link", link, "--json"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "linking with a bad link succeeded");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn messages(home: &Path, target: &str) -> Vec<Value> {
    cli(home, &["messages", target, "--limit", "1000"])
        .as_array()
        .unwrap()
        .clone()
}

/// Alice and Bob as contacts, each with a daemon, having said one thing
/// each.
fn alice_and_bob(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, Daemon, Daemon) {
    let (alice, bob) = (init(dir, "alice"), init(dir, "bob"));
    let da = Daemon::start(&alice);
    let db = Daemon::start(&bob);
    let (ia, ib) = (invite(&alice), invite(&bob));
    cli(&alice, &["contact", "add", &ib, "--name", "bob"]);
    cli(&bob, &["contact", "add", &ia, "--name", "alice"]);
    cli(&alice, &["send", "bob", "from before the link"]);
    cli(&bob, &["send", "alice", "bob says hi"]);
    eventually("the first messages to arrive", || {
        (texts(&bob, "alice").contains(&"from before the link".to_owned())
            && texts(&alice, "bob").contains(&"bob says hi".to_owned()))
        .then_some(())
    });
    (alice, bob, da, db)
}

#[test]
fn a_linked_device_gets_the_history_and_every_message_after() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob, da, db) = alice_and_bob(dir.path());
    let alice_id = user_id(&alice);

    let alice2 = dir.path().join("alice2");
    let linked = cli(&alice2, &["init", "--link", &link(&alice)]);
    assert_eq!(
        linked["user_id"].as_str(),
        Some(alice_id.as_str()),
        "{linked}"
    );
    assert_eq!(linked["contacts"], 1, "{linked}");
    assert!(linked["messages"].as_u64().unwrap() >= 2, "{linked}");
    let d2 = Daemon::start(&alice2);

    // The history came along, as it was.
    let history = texts(&alice2, "bob");
    assert!(
        history.contains(&"from before the link".to_owned()),
        "{history:?}"
    );
    assert!(history.contains(&"bob says hi".to_owned()), "{history:?}");

    // Both devices are in the list; each knows which one it is.
    let devices = cli(&alice, &["device", "list"]);
    assert_eq!(devices.as_array().unwrap().len(), 2, "{devices}");
    let this: Vec<bool> = devices
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["this_device"].as_bool().unwrap())
        .collect();
    assert_eq!(this, [true, false], "{devices}");
    let second = linked["device_id"].as_str().unwrap().to_owned();
    assert_eq!(devices[1]["device_id"].as_str(), Some(second.as_str()));

    // Bob's messages reach both of Alice's devices.
    cli(&bob, &["send", "alice", "to both of you"]);
    for home in [&alice, &alice2] {
        eventually("bob's message on each of alice's devices", || {
            texts(home, "bob")
                .contains(&"to both of you".to_owned())
                .then_some(())
        });
    }

    // What one of Alice's devices sends shows on the other as hers.
    cli(&alice, &["send", "bob", "sent from the first device"]);
    cli(&alice2, &["send", "bob", "sent from the second device"]);
    let mine = |home: &Path, text: &str| {
        messages(home, "bob")
            .iter()
            .find(|m| m["text"] == text)
            .map(|m| m["sender"].as_str().unwrap().to_owned())
    };
    let sender = eventually("the first device's message on the second", || {
        mine(&alice2, "sent from the first device")
    });
    assert_eq!(sender, alice_id);
    let sender = eventually("the second device's message on the first", || {
        mine(&alice, "sent from the second device")
    });
    assert_eq!(sender, alice_id);
    eventually("bob to get both", || {
        let got = texts(&bob, "alice");
        (got.contains(&"sent from the first device".to_owned())
            && got.contains(&"sent from the second device".to_owned()))
        .then_some(())
    });

    // Revoked: it is listed as such, and gets nothing sent after.
    let revoked = cli(&alice, &["device", "revoke", &second]);
    assert_eq!(revoked["revoked"].as_str(), Some(second.as_str()));
    let devices = cli(&alice, &["device", "list"]);
    assert!(devices[1]["revoked_at"].is_u64(), "{devices}");
    cli(&alice, &["send", "bob", "after the revocation"]);
    cli(&bob, &["send", "alice", "bob after the revocation"]);
    eventually("bob's next message on the first device", || {
        texts(&alice, "bob")
            .contains(&"bob after the revocation".to_owned())
            .then_some(())
    });
    eventually("alice's next message at bob", || {
        texts(&bob, "alice")
            .contains(&"after the revocation".to_owned())
            .then_some(())
    });
    let left = texts(&alice2, "bob");
    assert!(
        !left.contains(&"after the revocation".to_owned()),
        "{left:?}"
    );
    assert!(
        !left.contains(&"bob after the revocation".to_owned()),
        "{left:?}"
    );
    // A device cannot revoke itself.
    let out = bin()
        .arg("--home")
        .arg(&alice)
        .args([
            "device",
            "revoke",
            devices[0]["device_id"].as_str().unwrap(),
            "--json",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("the device you are running"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    d2.stop();
    da.stop();
    db.stop();
}

#[test]
fn a_wrong_used_or_expired_link_fails_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let alice = init(dir.path(), "alice");
    let da = Daemon::start(&alice);
    let shown = link(&alice);
    let devices_before = cli(&alice, &["device", "list"]);

    // A wrong secret: refused by Alice's device at the handshake.
    let mut wrong = LinkOffer::from_text(&shown).unwrap();
    wrong.secret[0] ^= 1;
    let new = dir.path().join("wrong");
    let (_, said) = failed_link(&new, &wrong.to_text().unwrap());
    assert!(said.contains("refused the link"), "{said}");
    assert!(!new.join("store").exists() || std::fs::read_dir(&new).unwrap().count() == 0);
    assert_eq!(cli(&alice, &["device", "list"]), devices_before);

    // The right one still works after the wrong try, once.
    let first = dir.path().join("first");
    cli(&first, &["init", "--link", &shown]);
    assert_eq!(
        cli(&alice, &["device", "list"]).as_array().unwrap().len(),
        2
    );
    let devices_after_use = cli(&alice, &["device", "list"]);
    let used = dir.path().join("used");
    let (_, said) = failed_link(&used, &shown);
    assert!(said.contains("refused the link"), "{said}");
    assert_eq!(cli(&alice, &["device", "list"]), devices_after_use);

    // An expired link fails before anything is sent.
    let mut old = LinkOffer::from_text(&link(&alice)).unwrap();
    old.expires_at = safemeet_proto::Timestamp::from_millis(1_000).unwrap();
    let (_, said) = failed_link(&dir.path().join("late"), &old.to_text().unwrap());
    assert!(said.contains("expired"), "{said}");
    // Not a link at all: a usage error.
    let (code, _) = failed_link(&dir.path().join("junk"), "safemeet-link:zzzz");
    assert_eq!(code, Some(2));
    assert_eq!(cli(&alice, &["device", "list"]), devices_after_use);
    da.stop();
}
