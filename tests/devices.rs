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

use support::contains;
use support::node::{Daemon, bin, cli, cli_fails, eventually, init, store_dump, texts, user_id};

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
    cli_fails(home, &["init", "--link", link])
}

/// The texts of a conversation, or `None` while it is not known there.
fn texts_if_known(home: &Path, target: &str) -> Option<Vec<String>> {
    let out = bin()
        .arg("--home")
        .arg(home)
        .args(["messages", target, "--json"])
        .output()
        .unwrap();
    if !out.status.success() {
        return None;
    }
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    Some(
        v.as_array()
            .unwrap()
            .iter()
            .map(|m| m["text"].as_str().unwrap().to_owned())
            .collect(),
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
    let linked = cli(
        &alice2,
        &[
            "init",
            "--link",
            &link(&alice),
            "--device-name",
            "alice laptop",
        ],
    );
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

    // Names: the one the new device was given reaches the first; a rename
    // on either reaches the other. Each sees when it last saw the other.
    let first = devices[0]["device_id"].as_str().unwrap().to_owned();
    eventually("the new device's name on the first device", || {
        let list = cli(&alice, &["device", "list"]);
        (list[1]["name"] == "alice laptop").then_some(())
    });
    let renamed = cli(&alice2, &["device", "rename", &first, "home server"]);
    assert_eq!(renamed["name"], "home server", "{renamed}");
    eventually("the rename on the first device", || {
        let list = cli(&alice, &["device", "list"]);
        (list[0]["name"] == "home server" && list[1]["last_seen_at"].is_u64()).then_some(())
    });
    assert!(cli(&alice2, &["device", "list"])[0]["last_seen_at"].is_u64());
    for bad in ["", " padded", &"x".repeat(65), "tab\there"] {
        let (_, said) = cli_fails(&alice, &["device", "rename", &first, bad]);
        assert!(said.contains("device name"), "{bad:?}: {said}");
    }
    assert_eq!(cli(&alice, &["device", "list"])[0]["name"], "home server");

    // A new profile, signed on the device with the master key, reaches
    // the other; the other cannot sign one.
    cli(&alice, &["profile", "set", "--display-name", "Alice L"]);
    eventually("the new profile on the second device", || {
        (cli(&alice2, &["whoami"])["display_name"] == "Alice L").then_some(())
    });
    let (_, said) = cli_fails(&alice2, &["profile", "set", "--display-name", "Mallory"]);
    assert!(said.contains("master key"), "{said}");

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

    // A room made on one device is on the other too.
    cli(&bob, &["contact", "set", "alice", "--auto-accept-invites"]);
    cli(&alice, &["room", "create", "team", "--member", "bob"]);
    cli(&alice, &["send", "team", "room before the revocation"]);
    for home in [&alice2, &bob] {
        eventually("the room message on alice2 and bob", || {
            texts_if_known(home, "team")?
                .contains(&"room before the revocation".to_owned())
                .then_some(())
        });
    }

    // Revoked: it is listed as such, and gets nothing sent after.
    let revoked = cli(&alice, &["device", "revoke", &second]);
    assert_eq!(revoked["revoked"].as_str(), Some(second.as_str()));
    let devices = cli(&alice, &["device", "list"]);
    assert!(devices[1]["revoked_at"].is_u64(), "{devices}");
    // Bob drops it: it is no longer among Alice's devices he encrypts for.
    eventually("bob to drop the revoked device", || {
        let list = cli(&bob, &["contact", "list"]);
        let alice_there = list
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "alice")
            .unwrap()
            .clone();
        (alice_there["devices"].as_array().unwrap().len() == 1).then_some(())
    });
    cli(&alice, &["send", "bob", "after the revocation"]);
    cli(&bob, &["send", "alice", "bob after the revocation"]);
    cli(&alice, &["send", "team", "room after the revocation"]);
    cli(
        &bob,
        &["send", "team", "bob in the room after the revocation"],
    );
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
    eventually("bob's room message on the first device", || {
        texts(&alice, "team")
            .contains(&"bob in the room after the revocation".to_owned())
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
    // Still in the room's gossip and online, it reads nothing sent there
    // after: the room's Megolm sessions rotated without it.
    let room = texts(&alice2, "team");
    assert!(
        room.contains(&"room before the revocation".to_owned()),
        "{room:?}"
    );
    assert!(
        !room.iter().any(|t| t.contains("after the revocation")),
        "{room:?}"
    );
    // A device cannot revoke itself.
    let this = devices[0]["device_id"].as_str().unwrap();
    let (_, said) = cli_fails(&alice, &["device", "revoke", this]);
    assert!(said.contains("the device you are running"), "{said}");
    d2.stop();
    da.stop();
    db.stop();
    // Every record of each store, opened: the revoked device holds no
    // plaintext sent after; the first device does (the dump sees it);
    // Bob's store holds none of Alice's device names.
    let holds = |home: &Path, text: &str| {
        store_dump(home)
            .iter()
            .any(|r| contains(&r.value, text.as_bytes()))
    };
    assert!(holds(&alice, "room after the revocation"));
    assert!(holds(&alice, "bob after the revocation"));
    assert!(holds(&alice2, "room before the revocation"));
    assert!(!holds(&alice2, "after the revocation"));
    assert!(holds(&alice, "alice laptop") && holds(&alice2, "home server"));
    assert!(!holds(&bob, "alice laptop") && !holds(&bob, "home server"));
}

/// The records two dumps of one store differ in: keyspace and stored key
/// of each record changed, gone or new.
fn changed(
    before: &[safemeet_crypto::DumpedRecord],
    after: &[safemeet_crypto::DumpedRecord],
) -> std::collections::BTreeSet<(&'static str, Vec<u8>)> {
    let only = |a: &[safemeet_crypto::DumpedRecord], b: &[safemeet_crypto::DumpedRecord]| {
        a.iter()
            .filter(|r| !b.contains(r))
            .map(|r| (r.keyspace.name(), r.key.clone()))
            .collect::<Vec<_>>()
    };
    let mut out: std::collections::BTreeSet<_> = only(before, after).into_iter().collect();
    out.extend(only(after, before));
    out
}

/// A home that failed to link holds no account and no store.
fn nothing_in(home: &Path) {
    let left: Vec<_> = match std::fs::read_dir(home) {
        Ok(entries) => entries.map(|e| e.unwrap().file_name()).collect(),
        Err(_) => Vec::new(),
    };
    assert!(
        left.iter().all(|n| n == "init.lock"),
        "{} holds {left:?}",
        home.display()
    );
}

#[test]
fn a_wrong_used_or_expired_link_fails_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let alice = init(dir.path(), "alice");
    // A first start makes the device's one-time keys.
    Daemon::start(&alice).stop();
    // A control: a daemon's start, a link shown, and its stop change one
    // record, the crypto state's run marker (each start reserves outbox
    // numbers); any other change below would be the failed links'.
    let before = store_dump(&alice);
    let da = Daemon::start(&alice);
    link(&alice);
    da.stop();
    let before_second = store_dump(&alice);
    let noise = changed(&before, &before_second);
    assert_eq!(
        noise.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
        ["crypto_sessions"]
    );
    let before = before_second;

    let da = Daemon::start(&alice);
    let shown = link(&alice);
    let devices_before = cli(&alice, &["device", "list"]);

    // A wrong secret: refused by Alice's device at the handshake.
    let mut wrong = LinkOffer::from_text(&shown).unwrap();
    wrong.secret[0] ^= 1;
    let new = dir.path().join("wrong");
    let (_, said) = failed_link(&new, &wrong.to_text().unwrap());
    assert!(said.contains("refused the link"), "{said}");
    nothing_in(&new);
    assert_eq!(cli(&alice, &["device", "list"]), devices_before);

    // An expired link fails before anything is sent.
    let mut old = LinkOffer::from_text(&link(&alice)).unwrap();
    old.expires_at = safemeet_proto::Timestamp::from_millis(1_000).unwrap();
    let late = dir.path().join("late");
    let (_, said) = failed_link(&late, &old.to_text().unwrap());
    assert!(said.contains("expired"), "{said}");
    nothing_in(&late);
    // Not a link at all: a usage error.
    let junk = dir.path().join("junk");
    let (code, _) = failed_link(&junk, "safemeet-link:zzzz");
    assert_eq!(code, Some(2));
    nothing_in(&junk);
    da.stop();
    // Alice's store, record by record, is as it was but for the run marker.
    assert_eq!(changed(&before, &store_dump(&alice)), noise);

    // Offers live in the daemon's memory only: the one shown before the
    // restart is gone.
    let da = Daemon::start(&alice);
    let stale = dir.path().join("stale");
    failed_link(&stale, &shown);
    nothing_in(&stale);
    // A new one works after a wrong try, once.
    let shown = link(&alice);
    let wrong_first = {
        let mut w = LinkOffer::from_text(&shown).unwrap();
        w.secret[31] ^= 0x80;
        w
    };
    let (_, said) = failed_link(&dir.path().join("wrong2"), &wrong_first.to_text().unwrap());
    assert!(said.contains("refused the link"), "{said}");
    let first = dir.path().join("first");
    cli(&first, &["init", "--link", &shown]);
    assert_eq!(
        cli(&alice, &["device", "list"]).as_array().unwrap().len(),
        2
    );
    let devices_after_use = cli(&alice, &["device", "list"]);
    let first_dump = store_dump(&first);
    let used = dir.path().join("used");
    let (_, said) = failed_link(&used, &shown);
    assert!(said.contains("refused the link"), "{said}");
    nothing_in(&used);
    assert_eq!(cli(&alice, &["device", "list"]), devices_after_use);
    // The device that did link is untouched by the second try.
    assert!(changed(&first_dump, &store_dump(&first)).is_empty());
    da.stop();
}

/// A running `safemeet verify TARGET --json`: its JSON lines as they come,
/// and its standard input for the answer.
struct Verifying {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Verifying {
    fn start(home: &Path, target: &str) -> Self {
        use std::io::BufRead;
        let mut child = bin()
            .arg("--home")
            .arg(home)
            .args(["verify", target, "--json"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::sync_channel(8);
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self { child, lines }
    }

    /// The next JSON line.
    fn next(&self) -> Value {
        let line = self
            .lines
            .recv_timeout(support::node::WAIT)
            .expect("verify printed a line");
        serde_json::from_str(&line).unwrap()
    }

    fn answer(&mut self, yes: bool) {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(if yes { b"y\n" } else { b"n\n" }).unwrap();
        stdin.flush().unwrap();
    }

    /// Waits for the end; its exit status and what it said on stderr.
    fn finish(mut self) -> (bool, String) {
        use std::io::Read;
        let status = self.child.wait().unwrap();
        let mut err = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        (status.success(), err)
    }
}

fn contact_of<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap()
}

/// Runs `verify` on both sides, both answering `yes`; returns what each
/// showed to compare.
fn verify_both(one: (&Path, &str), other: (&Path, &str), yes: (bool, bool)) -> (Value, Value) {
    let mut a = Verifying::start(one.0, one.1);
    let mut b = Verifying::start(other.0, other.1);
    let (sa, sb) = (a.next(), b.next());
    assert_eq!(sa["state"], "compare", "{sa}");
    // Whoever says no first cancels; the other's yes then finds it so.
    if !yes.1 {
        b.answer(yes.1);
        a.answer(yes.0);
    } else {
        a.answer(yes.0);
        b.answer(yes.1);
    }
    let (ok_a, said_a) = a.finish();
    let (ok_b, said_b) = b.finish();
    let all_yes = yes.0 && yes.1;
    assert_eq!(ok_a, all_yes, "{said_a}");
    assert_eq!(ok_b, all_yes, "{said_b}");
    if !all_yes {
        assert!(
            said_a.contains("cancelled") || said_a.contains("do not match"),
            "{said_a}"
        );
    }
    (sa, sb)
}

fn contact_in(home: &Path, name: &str) -> Value {
    contact_of(&cli(home, &["contact", "list"]), name).clone()
}

#[test]
fn contacts_verify_each_other_by_sas_and_trust_carries_to_their_other_devices() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob, da, db) = alice_and_bob(dir.path());
    let alice2 = dir.path().join("alice2");
    cli(&alice2, &["init", "--link", &link(&alice)]);
    let d2 = Daemon::start(&alice2);
    eventually("bob to know alice's second device", || {
        (contact_in(&bob, "alice")["devices"]
            .as_array()
            .unwrap()
            .len()
            == 2)
            .then_some(())
    });
    assert_eq!(contact_in(&alice, "bob")["verified"], false);

    // One side says the strings differ: cancelled on both, nobody verified.
    verify_both((&alice, "bob"), (&bob, "alice"), (true, false));
    assert_eq!(contact_in(&alice, "bob")["verified"], false);
    assert_eq!(contact_in(&bob, "alice")["devices"][0]["verified"], false);

    // Both say yes: the same seven emoji and numbers, and verified.
    let (sa, sb) = verify_both((&alice, "bob"), (&bob, "alice"), (true, true));
    assert_eq!(sa["emoji"].as_array().unwrap().len(), 7, "{sa}");
    assert_eq!(sa["emoji"], sb["emoji"]);
    assert_eq!(sa["decimals"], sb["decimals"]);
    let bob_there = contact_in(&alice, "bob");
    assert_eq!(bob_there["verified"], true, "{bob_there}");
    assert_eq!(bob_there["devices"][0]["verified"], true, "{bob_there}");
    // Bob's messages now show as from a verified device.
    cli(&bob, &["send", "alice", "verified now"]);
    let shown = eventually("bob's message", || {
        messages(&alice, "bob")
            .into_iter()
            .find(|m| m["text"] == "verified now")
    });
    assert_eq!(shown["verified"], true, "{shown}");

    // Alice's second device trusts Bob without a SAS of its own: her
    // master key signed the trust (cross-signing).
    eventually("alice's second device to trust bob", || {
        (contact_in(&alice2, "bob")["verified"] == true).then_some(())
    });
    // Bob verified one of Alice's two devices: the other is flagged.
    let alice_there = contact_in(&bob, "alice");
    assert_eq!(alice_there["verified"], false, "{alice_there}");
    assert!(alice_there["warning"].is_string(), "{alice_there}");

    // Bob verifies her second device too (which has no master key: it
    // asks her first device to sign the trust).
    verify_both((&bob, "alice"), (&alice2, "bob"), (true, true));
    let alice_there = contact_in(&bob, "alice");
    assert_eq!(alice_there["verified"], true, "{alice_there}");
    assert!(alice_there.get("warning").is_none(), "{alice_there}");

    // Alice links a third device: Bob is warned; the new device trusts Bob
    // from the start.
    let alice3 = dir.path().join("alice3");
    cli(&alice3, &["init", "--link", &link(&alice)]);
    let warned = eventually("bob to see alice's new device", || {
        let c = contact_in(&bob, "alice");
        c["warning"].is_string().then_some(c)
    });
    assert!(
        warned["warning"]
            .as_str()
            .unwrap()
            .contains("new device, not verified"),
        "{warned}"
    );
    assert_eq!(warned["verified"], false, "{warned}");
    let d3 = Daemon::start(&alice3);
    assert_eq!(contact_in(&alice3, "bob")["verified"], true);
    d3.stop();
    d2.stop();
    da.stop();
    db.stop();
}

#[test]
fn a_device_linked_with_the_master_key_links_and_revokes_too() {
    let dir = tempfile::tempdir().unwrap();
    let alice = init(dir.path(), "alice");
    let da = Daemon::start(&alice);
    // A device linked without the master key cannot link others.
    let plain = dir.path().join("plain");
    let shown = link(&alice);
    cli(&plain, &["init", "--link", &shown]);
    let dp = Daemon::start(&plain);
    let (_, said) = cli_fails(&plain, &["device", "link"]);
    assert!(said.contains("master key"), "{said}");

    // With it, it can.
    let shown = cli(&alice, &["device", "link", "--with-master"])["link"]
        .as_str()
        .unwrap()
        .to_owned();
    let second = dir.path().join("second");
    cli(&second, &["init", "--link", &shown]);
    let d2 = Daemon::start(&second);
    let devices = cli(&second, &["device", "list"]);
    let this = devices
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["this_device"] == true)
        .unwrap();
    assert_eq!(this["master_key"], true, "{devices}");
    let third = dir.path().join("third");
    cli(&third, &["init", "--link", &link(&second)]);
    let plain_id = cli(&plain, &["whoami"])["device_id"]
        .as_str()
        .unwrap()
        .to_owned();
    cli(&second, &["device", "revoke", &plain_id]);
    let devices = cli(&second, &["device", "list"]);
    assert_eq!(devices.as_array().unwrap().len(), 4, "{devices}");
    let revoked = devices
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["device_id"] == plain_id.as_str())
        .unwrap();
    assert!(revoked["revoked_at"].is_u64(), "{devices}");
    // The first device learns the list from the second.
    eventually("alice's first device to see the revocation", || {
        cli(&alice, &["device", "list"])
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["device_id"] == plain_id.as_str() && d["revoked_at"].is_u64())
            .then_some(())
    });
    d2.stop();
    dp.stop();
    da.stop();
}

#[test]
fn a_contacts_invite_scanned_in_person_verifies_them() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob, da, db) = alice_and_bob(dir.path());
    let carol = init(dir.path(), "carol");
    let dc = Daemon::start(&carol);
    assert_eq!(contact_in(&alice, "bob")["verified"], false);

    // Bob shows his invite (its QR code) to Alice, who scans it.
    let done = cli(&alice, &["contact", "verify", &invite(&bob)]);
    assert_eq!(done["user_id"].as_str(), Some(user_id(&bob).as_str()));
    assert_eq!(done["verified"].as_array().unwrap().len(), 1, "{done}");
    assert_eq!(contact_in(&alice, "bob")["verified"], true);

    // Someone who is not a contact: refused, nothing marked.
    let (code, said) = cli_fails(&alice, &["contact", "verify", &invite(&carol)]);
    assert_eq!(code, Some(2));
    assert!(said.contains("contact add"), "{said}");
    dc.stop();
    da.stop();
    db.stop();
}
