//! End-to-end tests of changing what was said, with real `safemeet`
//! processes on 127.0.0.1: edits and redactions reach every member and
//! leave no earlier text in any store; disappearing messages leave no
//! member's timeline or store holding them, a member who was offline and
//! caught up later included; the local retention limit.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use safemeet_proto::clock::{Clock, SystemClock};
use serde_json::Value;

mod support;

use support::contains;
use support::node::{
    Daemon, befriend, bin, cli, cli_fails, eventually, init, own_tcp_addr, store_dump,
};

/// Alice, Bob and Carol, contacts of each other, with daemons (Carol's
/// with `carol_args`), in Alice's room "club" (Alice its admin).
fn club(dir: &Path, carol_args: &[&str]) -> ([PathBuf; 3], Vec<Daemon>) {
    let homes = ["alice", "bob", "carol"].map(|n| init(dir, n));
    let daemons = vec![
        Daemon::start(&homes[0]),
        Daemon::start(&homes[1]),
        Daemon::start_with(&homes[2], "/ip4/127.0.0.1/tcp/0", carol_args),
    ];
    let [alice, bob, carol] = &homes;
    befriend(alice, "alice", bob, "bob");
    befriend(alice, "alice", carol, "carol");
    befriend(bob, "bob", carol, "carol");
    for home in [bob, carol] {
        cli(home, &["contact", "set", "alice", "--auto-accept-invites"]);
    }
    cli(
        alice,
        &[
            "room", "create", "club", "--member", "bob", "--member", "carol",
        ],
    );
    for home in [bob, carol] {
        eventually("the room to reach every member", || {
            cli(home, &["room", "list"])
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["name"] == "club" && r["members"].as_array().unwrap().len() == 3)
                .then_some(())
        });
    }
    (homes, daemons)
}

/// The message of a conversation with this event id, as `messages` shows it.
fn message(home: &Path, target: &str, event_id: &str) -> Option<Value> {
    cli(home, &["messages", target])
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["event_id"] == event_id)
        .cloned()
}

fn sent(home: &Path, target: &str, text: &str) -> String {
    cli(home, &["send", target, text])["event_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Whether any record of a stopped node's store holds `text`.
fn store_holds(home: &Path, text: &str) -> bool {
    store_dump(home)
        .iter()
        .any(|r| contains(&r.value, text.as_bytes()))
}

/// Events from `listen`, until one matches `wanted` (or the wait ends).
fn wait_for_event(home: &Path, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
    let mut child = bin()
        .arg("--home")
        .arg(home)
        .args(["listen", "--since", "0", "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let rx = support::node::lines_of(stdout);
    let deadline = SystemClock.instant() + Duration::from_secs(60);
    let found = loop {
        let left = deadline.saturating_duration_since(SystemClock.instant());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
        let event: Value = serde_json::from_str(&line).unwrap();
        if wanted(&event) {
            break event;
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    found
}

#[test]
fn edits_and_redactions_reach_every_member_and_leave_no_earlier_text() {
    let dir = tempfile::tempdir().unwrap();
    let ([alice, bob, carol], daemons) = club(dir.path(), &[]);

    // A DM, edited, then deleted for everyone.
    let dm = sent(&alice, "bob", "dm marker original");
    eventually("bob to get the DM", || message(&bob, "alice", &dm));
    let edit = cli(&alice, &["edit", &dm, "dm marker edited"]);
    assert_eq!(edit["event_id"], dm.as_str(), "{edit}");
    assert!(edit["change_id"].as_str().unwrap().starts_with("e_"));
    let seen = eventually("bob to see the edit", || {
        message(&bob, "alice", &dm).filter(|m| m["text"] == "dm marker edited")
    });
    assert_eq!(seen["edited"], true, "{seen}");
    let mine = message(&alice, "bob", &dm).unwrap();
    assert_eq!(mine["text"], "dm marker edited", "{mine}");
    assert_eq!(mine["edited"], true, "{mine}");
    cli(&alice, &["redact", &dm]);
    for (home, with) in [(&alice, "bob"), (&bob, "alice")] {
        let gone = eventually("the DM to be deleted", || {
            message(home, with, &dm).filter(|m| m["redacted"] == true)
        });
        assert_eq!(gone["text"], "", "{gone}");
    }
    // A deleted message is deleted: no edit, no second redaction.
    let (code, err) = cli_fails(&alice, &["edit", &dm, "back again"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("deleted already"), "{err}");

    // In the room: Alice, its admin, deletes Bob's message.
    let bobs = sent(&bob, "club", "bob room marker");
    for home in [&alice, &carol] {
        eventually("bob's room message to arrive", || {
            message(home, "club", &bobs)
        });
    }
    cli(&alice, &["redact", &bobs]);
    for home in [&alice, &bob, &carol] {
        eventually("bob's message to be deleted everywhere", || {
            message(home, "club", &bobs).filter(|m| m["redacted"] == true && m["text"] == "")
        });
    }
    // Bob is not an admin: Carol's message is not his to delete or edit.
    let carols = sent(&carol, "club", "carol room marker");
    eventually("carol's message to reach bob", || {
        message(&bob, "club", &carols)
    });
    for args in [
        vec!["redact", carols.as_str()],
        vec!["edit", carols.as_str(), "forged"],
    ] {
        let (code, err) = cli_fails(&bob, &args);
        assert_eq!(code, Some(2), "{err}");
        assert!(err.contains("only its sender"), "{err}");
    }
    // Not a message at all, or not an event id: clear errors.
    let unknown = format!("e_{}", "a".repeat(43));
    let (code, err) = cli_fails(&bob, &["redact", &unknown]);
    assert!(code.is_some_and(|c| c != 0), "{err}");
    let (code, err) = cli_fails(&bob, &["redact", "not-an-id"]);
    assert_eq!(code, Some(2), "{err}");

    // An edit of a room message shows everywhere, marked.
    let alices = sent(&alice, "club", "room marker before edit");
    for home in [&bob, &carol] {
        eventually("alice's room message to arrive", || {
            message(home, "club", &alices)
        });
    }
    cli(&alice, &["edit", &alices, "room marker after edit"]);
    for home in [&alice, &bob, &carol] {
        eventually("the edit to show everywhere", || {
            message(home, "club", &alices)
                .filter(|m| m["text"] == "room marker after edit" && m["edited"] == true)
        });
    }
    // Carol's message stands.
    for home in [&alice, &bob, &carol] {
        let m = message(home, "club", &carols).unwrap();
        assert_eq!(m["text"], "carol room marker", "{m}");
    }
    // API clients hear of both kinds of change.
    let redacted = wait_for_event(&carol, "a redacted event", |e| {
        e["type"] == "redacted" && e["event_id"] == bobs.as_str()
    });
    assert!(redacted["room_id"].as_str().unwrap().starts_with("r_"));
    let edited = wait_for_event(&carol, "an edited event", |e| {
        e["type"] == "edited" && e["message"]["event_id"] == alices.as_str()
    });
    assert_eq!(edited["message"]["text"], "room marker after edit");

    for d in daemons {
        d.stop();
    }
    // Every decrypted record of every store: no earlier text, no deleted
    // one; the current texts are there (the check can fail).
    for home in [&alice, &bob, &carol] {
        for gone in [
            "dm marker original",
            "dm marker edited",
            "bob room marker",
            "room marker before edit",
        ] {
            assert!(
                !store_holds(home, gone),
                "{} holds {gone:?}",
                home.display()
            );
        }
        assert!(store_holds(home, "room marker after edit"));
        assert!(store_holds(home, "carol room marker"));
    }
    assert!(!store_holds(&carol, "dm marker"), "carol never had the DM");
}

#[test]
fn disappearing_messages_leave_every_member_even_one_that_caught_up_later() {
    let dir = tempfile::tempdir().unwrap();
    // Carol keeps a mailbox on a relay for when she is offline.
    let relay = support::Relay::start(&dir.path().join("relay"), &["--metrics", "127.0.0.1:0"]);
    let relay_addr = relay.addr.to_string();
    let ([alice, bob, carol], mut daemons) = club(dir.path(), &["--relay", &relay_addr]);

    // Only an admin sets a room's expiry; either user a DM's.
    let (code, err) = cli_fails(&bob, &["room", "set", "club", "--expire", "2s"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("only a room admin"), "{err}");
    for bad in ["0s", "2", "soon", "11000w"] {
        let (code, err) = cli_fails(&alice, &["room", "set", "club", "--expire", bad]);
        assert_eq!(code, Some(2), "{bad}: {err}");
    }
    cli(&bob, &["room", "set", "alice", "--expire", "2s"]);
    eventually("alice to see the DM's expiry", || {
        (cli(&alice, &["room", "settings", "bob"])["expire_after_ms"] == 2_000).then_some(())
    });

    // Carol goes offline; Alice says something in the room, which her
    // device leaves on Carol's relay.
    let carol_addr = own_tcp_addr(&carol);
    daemons.pop().unwrap().stop();
    let room_msg = sent(&alice, "club", "vanishing room marker");
    eventually("bob to get the room message", || {
        message(&bob, "club", &room_msg)
    });
    eventually("the message to wait on carol's relay", || {
        (relay.holds() >= Some(1)).then_some(())
    });

    // Then the room gets its expiry: what is older goes at once.
    let set = cli(&alice, &["room", "set", "club", "--expire", "2s"]);
    assert_eq!(set["expire_after_ms"], 2_000, "{set}");
    eventually("bob to see the room's expiry", || {
        (cli(&bob, &["room", "settings", "club"])["expire_after_ms"] == 2_000).then_some(())
    });
    // Everyone's API clients hear of it.
    wait_for_event(&bob, "the room settings event", |e| {
        e["type"] == "room_settings" && e["expire_after_ms"] == 2_000
    });
    // A DM under a 2 s expiry: gone from both sides within 3 s.
    let sent_at = SystemClock.instant();
    let dm_msg = sent(&bob, "alice", "vanishing dm marker");
    // Each got it (its log says it expired, so it came).
    wait_for_event(&alice, "the DM to expire at alice", |e| {
        e["type"] == "expired" && e["event_id"] == dm_msg.as_str()
    });
    wait_for_event(&bob, "the room message to expire at bob", |e| {
        e["type"] == "expired" && e["event_id"] == room_msg.as_str()
    });
    let three = Duration::from_secs(3);
    std::thread::park_timeout(three.saturating_sub(sent_at.elapsed()));
    for (home, target) in [
        (&alice, "club"),
        (&bob, "club"),
        (&alice, "bob"),
        (&bob, "alice"),
    ] {
        let listed = cli(home, &["messages", target]);
        assert!(
            !listed.to_string().contains("vanishing"),
            "{} still shows {listed}",
            home.display()
        );
    }

    // Carol comes back: she drains the message, and the expiry, from her
    // relay; the message is expired, and gone before any client hears of
    // it.
    daemons.push(Daemon::start_with(
        &carol,
        &carol_addr,
        &["--relay", &relay_addr],
    ));
    let expired = wait_for_event(&carol, "the room message to expire at carol", |e| {
        e["type"] == "expired" && e["event_id"] == room_msg.as_str()
    });
    assert_eq!(expired["event_id"], room_msg.as_str());
    assert!(
        !cli(&carol, &["messages", "club"])
            .to_string()
            .contains("vanishing")
    );

    // Clearing the expiry keeps what is sent next.
    cli(&alice, &["room", "set", "club", "--expire", "off"]);
    eventually("bob to see the expiry off", || {
        cli(&bob, &["room", "settings", "club"])["expire_after_ms"]
            .is_null()
            .then_some(())
    });
    let kept = sent(&alice, "club", "kept after the expiry");
    eventually("bob to get the kept message", || {
        message(&bob, "club", &kept)
    });

    for d in daemons {
        d.stop();
    }
    for home in [&alice, &bob, &carol] {
        assert!(
            !store_holds(home, "vanishing"),
            "{} holds it",
            home.display()
        );
    }
    assert!(store_holds(&bob, "kept after the expiry"));
}

#[test]
fn the_retention_limit_deletes_old_messages_on_this_device_only() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob) = (init(dir.path(), "alice"), init(dir.path(), "bob"));
    let (da, db) = (Daemon::start(&alice), Daemon::start(&bob));
    befriend(&alice, "alice", &bob, "bob");
    assert!(cli(&bob, &["settings", "show"])["retention_ms"].is_null());
    let old = sent(&alice, "bob", "retained marker");
    eventually("bob to get it", || message(&bob, "alice", &old));

    let set = cli(&bob, &["settings", "set", "retention", "1s"]);
    assert_eq!(set["retention_ms"], 1_000, "{set}");
    assert_eq!(cli(&bob, &["settings", "show"])["retention_ms"], 1_000);
    eventually("bob's copy to go", || {
        message(&bob, "alice", &old).is_none().then_some(())
    });
    // Alice's copy is hers: a retention limit is local.
    assert!(message(&alice, "bob", &old).is_some());
    let (code, err) = cli_fails(&bob, &["settings", "set", "retention", "forever"]);
    assert_eq!(code, Some(2), "{err}");
    cli(&bob, &["settings", "set", "retention", "off"]);
    let later = sent(&alice, "bob", "kept marker");
    eventually("bob to get the next one", || message(&bob, "alice", &later));

    da.stop();
    db.stop();
    assert!(!store_holds(&bob, "retained marker"));
    assert!(store_holds(&alice, "retained marker"));
    assert!(store_holds(&bob, "kept marker"));
}
