//! End-to-end tests of what a person may do with their own data, with real
//! `safemeet` processes on 127.0.0.1: correcting their profile (display
//! name, e-mail addresses), which reaches every contact.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::path::Path;

use serde_json::Value;

mod support;

use support::node::{Daemon, cli, cli_fails as failed, eventually, init};

/// Bob's view of Alice.
fn alice_at(bob: &Path) -> Value {
    let list = cli(bob, &["contact", "list"]);
    list.as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "alice")
        .unwrap()
        .clone()
}

#[test]
fn profile_edits_reach_contacts() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob) = (init(dir.path(), "alice"), init(dir.path(), "bob"));
    let (da, db) = (Daemon::start(&alice), Daemon::start(&bob));
    let invite = |home: &Path| {
        cli(home, &["invite"])["invite"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (ia, ib) = (invite(&alice), invite(&bob));
    cli(&alice, &["contact", "add", &ib, "--name", "bob"]);
    cli(&bob, &["contact", "add", &ia, "--name", "alice"]);

    let shown = cli(&alice, &["profile", "show"]);
    assert_eq!(shown["display_name"], "alice", "{shown}");
    assert_eq!(shown["version"], 1, "{shown}");

    let set = cli(
        &alice,
        &["profile", "set", "--display-name", "Alice Liddell"],
    );
    assert_eq!(set["display_name"], "Alice Liddell", "{set}");
    assert_eq!(set["version"], 2, "{set}");
    let added = cli(&alice, &["email", "add", "alice@example.org"]);
    assert_eq!(added["emails"][0], "alice@example.org", "{added}");
    assert_eq!(added["version"], 3, "{added}");
    eventually("bob to see the new name and address", || {
        let seen = alice_at(&bob);
        (seen["display_name"] == "Alice Liddell" && seen["emails"][0] == "alice@example.org")
            .then_some(())
    });
    // The daemon's whoami shows the profile as it is now.
    let who = cli(&alice, &["whoami"]);
    assert_eq!(who["display_name"], "Alice Liddell", "{who}");
    assert_eq!(who["emails"][0], "alice@example.org", "{who}");

    // Removed: gone at Bob's too.
    let removed = cli(&alice, &["email", "remove", "alice@example.org"]);
    assert_eq!(removed["emails"], serde_json::json!([]), "{removed}");
    eventually("bob to see the address gone", || {
        let seen = alice_at(&bob);
        (seen["emails"] == serde_json::json!([])).then_some(())
    });

    // Bad input: a usage error or a clear refusal, and no new version.
    let (code, _) = failed(&alice, &["email", "add", "not an address"]);
    assert_eq!(code, Some(2));
    let (_, said) = failed(&alice, &["email", "remove", "never@example.org"]);
    assert!(said.contains("not in your profile"), "{said}");
    let (code, _) = failed(&alice, &["profile", "set", "--display-name", ""]);
    assert_eq!(code, Some(2));
    assert_eq!(cli(&alice, &["profile", "show"])["version"], 4);
    da.stop();
    db.stop();
}
