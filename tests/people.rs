//! End-to-end tests of whom a daemon hears from, with real `safemeet
//! daemon` processes on 127.0.0.1: the block list through the CLI (kept
//! across a restart), and a message request from someone who took the
//! user's invite, listed with `request list --json` and accepted.
//! (Delivery-level behaviour, such as a blocked user getting no
//! acknowledgement, is tested frame by frame in
//! `crates/engine/tests/people.rs`.)

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

mod support;

use support::node::{Daemon, bin, cli, eventually, init, own_tcp_addr, texts, user_id};

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
