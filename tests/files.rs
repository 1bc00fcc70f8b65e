//! End-to-end tests of files, with real `safemeet` daemons on 127.0.0.1:
//! a 20 MiB file arrives bit-identical, and a receiver killed with
//! SIGKILL half way resumes from its last chunk after a restart (the
//! sender's count of chunks served shows it); a chunk damaged on the
//! sender's disk is refused; a redacted file leaves both devices' disks.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::path::{Path, PathBuf};

use safemeet_proto::clock::{Clock, SystemClock};
use serde_json::Value;

mod support;

use support::contains;
use support::node::{Daemon, befriend, cli, cli_fails, eventually, init, own_tcp_addr, user_id};

/// Chunks of a file, sealed: 64 KiB and a 16-byte tag.
const SEALED_CHUNK: usize = 65536 + 16;

/// Pseudo-random bytes (xorshift), so no window of the file repeats.
fn bytes(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 7) as u8
        })
        .collect()
}

/// The transfer of `event` in `home`'s `files`, if listed.
fn transfer(home: &Path, event: &str) -> Option<Value> {
    cli(home, &["files"])
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["event_id"] == event)
        .cloned()
}

/// The files kept under `home/blobs`.
fn blobs(home: &Path) -> Vec<PathBuf> {
    match std::fs::read_dir(home.join("blobs")) {
        Ok(dir) => dir.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

/// Subscribes to `home`'s daemon with `progress` on; the `progress`
/// notifications it sends, as they come.
fn follow_progress(home: &Path) -> std::sync::Arc<std::sync::Mutex<Vec<Value>>> {
    use std::io::{BufRead, Write};
    let mut sock = std::os::unix::net::UnixStream::connect(home.join("safemeet.sock")).unwrap();
    writeln!(
        sock,
        r#"{{"jsonrpc":"2.0","id":1,"method":"subscribe","params":{{"since":0,"progress":true}}}}"#
    )
    .unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let out = seen.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(sock).lines() {
            let Ok(line) = line else { break };
            let Ok(note) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if note["method"] == "progress" {
                out.lock().unwrap().push(note["params"].clone());
            }
        }
    });
    seen
}

#[test]
fn a_large_file_arrives_whole_and_a_killed_receiver_resumes_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob) = (init(dir.path(), "alice"), init(dir.path(), "bob"));
    // Alice serves at 4 MiB/s, so the 20 MiB take about 5 s: time to kill
    // Bob half way.
    std::fs::write(alice.join("config.toml"), "file_rate_kib = 4096\n").unwrap();
    let _da = Daemon::start(&alice);
    let db = Daemon::start(&bob);
    befriend(&alice, "alice", &bob, "bob");

    let data = bytes(20 * 1024 * 1024, 7);
    let file = dir.path().join("holiday.bin");
    std::fs::write(&file, &data).unwrap();
    // An API client of Alice's follows the transfer as `progress` events.
    let progress = follow_progress(&alice);
    let started = SystemClock.instant();
    let sent = cli(&alice, &["send", "bob", "--file", file.to_str().unwrap()]);
    let event = sent["event_id"].as_str().unwrap().to_owned();
    let chunks = 320;

    // Bob's daemon is killed once it holds some chunks, not all.
    let held = eventually("bob to hold part of the file", || {
        let t = transfer(&bob, &event)?;
        let done = t["done"].as_u64()?;
        (done >= 64).then_some(done)
    });
    let mut db = db;
    db.process.signal("KILL");
    db.process.wait();
    assert!(held < chunks, "killed before the end ({held} of {chunks})");
    let part = blobs(&bob);
    assert_eq!(part.len(), 1, "{part:?}");
    assert!(part[0].to_str().unwrap().ends_with(".part"));
    let kept = std::fs::metadata(&part[0]).unwrap().len();
    assert!(kept >= held * SEALED_CHUNK as u64, "{kept} bytes kept");

    // Restarted, Bob fetches the rest.
    let _db = Daemon::start(&bob);
    eventually("bob to hold the whole file", || {
        (transfer(&bob, &event)?["state"] == "complete").then_some(())
    });
    let out = dir.path().join("saved.bin");
    let saved = cli(&bob, &["download", &event, out.to_str().unwrap()]);
    assert_eq!(saved["size"], data.len());
    assert!(std::fs::read(&out).unwrap() == data, "bit-identical");

    // Alice's client heard the chunks served go up, in batches at most
    // every 250 ms, to every chunk.
    let served_seen = eventually("alice's client to hear every chunk served", || {
        let seen: Vec<Value> = progress
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p["event_id"] == event.as_str())
            .cloned()
            .collect();
        (seen.last()?["served"].as_u64()? >= chunks).then_some(seen)
    });
    let elapsed = SystemClock.instant().duration_since(started);
    let counts: Vec<u64> = served_seen
        .iter()
        .map(|p| p["served"].as_u64().unwrap())
        .collect();
    assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{counts:?}");
    assert!(counts.len() >= 3, "{counts:?}");
    assert!(
        (counts.len() as u128) <= elapsed.as_millis() / 250 + 2,
        "{} events in {elapsed:?}",
        counts.len()
    );
    assert!(served_seen.iter().all(|p| p["direction"] == "send"));

    // Alice served each chunk about once: the restart asked from where
    // Bob stopped, not from the start (what was in flight at the kill is
    // served again).
    let served = transfer(&alice, &event).unwrap()["served"]
        .as_u64()
        .unwrap();
    assert!(served >= chunks, "served {served}");
    assert!(
        served < chunks + held.min(64),
        "served {served} chunks for {chunks}: the transfer started again"
    );

    // What lies on either disk is sealed: no 64-byte stretch of the file.
    for home in [&alice, &bob] {
        let kept = std::fs::read(&blobs(home)[0]).unwrap();
        for at in [0, 5_000_000, 20 * 1024 * 1024 - 64] {
            assert!(
                !contains(&kept, &data[at..at + 64]),
                "plaintext in {home:?}"
            );
        }
    }
    // And `messages` names it.
    let messages = cli(&bob, &["messages", "alice"]);
    let m = messages
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["event_id"] == event.as_str())
        .unwrap();
    assert_eq!(m["file"]["name"], "holiday.bin");
    assert_eq!(m["file"]["size"], data.len());
    assert_eq!(m["file"]["transfer"]["state"], "complete");
}

#[test]
fn a_chunk_damaged_at_the_sender_is_refused_and_nothing_is_saved() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob) = (init(dir.path(), "alice"), init(dir.path(), "bob"));
    let _da = Daemon::start(&alice);
    let db = Daemon::start(&bob);
    befriend(&alice, "alice", &bob, "bob");
    // Bob is away while Alice sends, so the damage is in place before he
    // asks for the file. He comes back where Alice knows to find him.
    let bob_addr = own_tcp_addr(&bob);
    db.stop();
    let data = bytes(5 * 65536 + 100, 3);
    let file = dir.path().join("report.pdf");
    std::fs::write(&file, &data).unwrap();
    let sent = cli(
        &alice,
        &[
            "send",
            "bob",
            "--file",
            file.to_str().unwrap(),
            "--caption",
            "the report",
        ],
    );
    let event = sent["event_id"].as_str().unwrap().to_owned();
    let kept = eventually("alice's sealed copy", || {
        blobs(&alice)
            .into_iter()
            .find(|p| !p.to_str().unwrap().ends_with(".part"))
    });
    let mut sealed = std::fs::read(&kept).unwrap();
    sealed[2 * SEALED_CHUNK + 10] ^= 1;
    std::fs::write(&kept, &sealed).unwrap();

    let _db = Daemon::start_on(&bob, &bob_addr);
    let t = eventually("bob to refuse the file", || {
        let t = transfer(&bob, &event)?;
        (t["state"] == "failed").then_some(t)
    });
    assert!(
        t["reason"].as_str().unwrap().contains("chunk 2 is damaged"),
        "{t}"
    );
    let out = dir.path().join("report-saved.pdf");
    let (code, err) = cli_fails(&bob, &["download", &event, out.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("damaged"), "{err}");
    assert!(!out.exists());
    // Bob kept the two good chunks before it, sealed, and nothing after.
    let part = blobs(&bob);
    assert_eq!(part.len(), 1);
    assert_eq!(
        std::fs::metadata(&part[0]).unwrap().len(),
        2 * SEALED_CHUNK as u64
    );
    // The caption and the file's name came, in the message.
    let messages = cli(&bob, &["messages", "alice"]);
    let m = &messages.as_array().unwrap()[0];
    assert_eq!(m["text"], "the report");
    assert_eq!(m["file"]["media_type"], "application/pdf");
}

#[test]
fn a_redacted_file_leaves_both_disks_and_a_bad_request_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob) = (init(dir.path(), "alice"), init(dir.path(), "bob"));
    let _da = Daemon::start(&alice);
    let _db = Daemon::start(&bob);
    befriend(&alice, "alice", &bob, "bob");
    let data = bytes(300_000, 5);
    let file = dir.path().join("photo.png");
    std::fs::write(&file, &data).unwrap();
    let sent = cli(&alice, &["send", "bob", "--file", file.to_str().unwrap()]);
    let event = sent["event_id"].as_str().unwrap().to_owned();
    eventually("bob to hold the file", || {
        (transfer(&bob, &event)?["state"] == "complete").then_some(())
    });
    // Saved into a directory under its own name; not over a file.
    let out = dir.path().join("inbox");
    std::fs::create_dir(&out).unwrap();
    let saved = cli(&bob, &["download", &event, out.to_str().unwrap()]);
    assert_eq!(saved["path"], out.join("photo.png").to_str().unwrap());
    assert!(std::fs::read(out.join("photo.png")).unwrap() == data);
    let (code, err) = cli_fails(&bob, &["download", &event, out.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("exists already"), "{err}");
    // A text message is no file; a missing path is no file to send.
    let text = cli(&alice, &["send", "bob", "hello"]);
    let (code, err) = cli_fails(
        &bob,
        &[
            "download",
            text["event_id"].as_str().unwrap(),
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("no file"), "{err}");
    let missing = dir.path().join("nothing-here");
    let (code, err) = cli_fails(
        &alice,
        &["send", "bob", "--file", missing.to_str().unwrap()],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("cannot be read"), "{err}");

    assert_eq!(blobs(&alice).len(), 1);
    assert_eq!(blobs(&bob).len(), 1);
    cli(&alice, &["redact", &event]);
    eventually("the file to leave both disks", || {
        (blobs(&alice).is_empty() && blobs(&bob).is_empty()).then_some(())
    });
    let (code, _) = cli_fails(&bob, &["download", &event, out.to_str().unwrap()]);
    assert_eq!(code, Some(2));
}

#[test]
fn a_device_that_is_away_gets_a_file_through_its_relay() {
    let dir = tempfile::tempdir().unwrap();
    // A relay whose per-peer disk quota takes 6 MiB as on disk at once
    // (the 5 MiB file is about 12 MiB as on disk), then about 290 KiB a
    // second: Alice's device must wait for it part of the way (at the
    // defaults, 3 MiB at once and 16 MiB an hour, it takes half an
    // hour).
    let relay = support::Relay::start(
        &dir.path().join("relay"),
        &[
            "--metrics",
            "127.0.0.1:0",
            "--peer-disk-burst-kib",
            "6144",
            "--peer-disk-kib-per-hour",
            "1048576",
        ],
    );
    let relay_addr = relay.addr.to_string();
    let (alice, bob) = (init(dir.path(), "alice"), init(dir.path(), "bob"));
    let da = Daemon::start_with(&alice, "/ip4/127.0.0.1/tcp/0", &["--relay", &relay_addr]);
    let db = Daemon::start_with(&bob, "/ip4/127.0.0.1/tcp/0", &["--relay", &relay_addr]);
    befriend(&alice, "alice", &bob, "bob");
    let ids = [user_id(&alice), user_id(&bob)];

    // Bob goes away. Alice's messages for him go to his relay.
    let bob_addr = own_tcp_addr(&bob);
    db.stop();
    cli(&alice, &["send", "bob", "are you there?"]);
    eventually("the message to wait on bob's relay", || {
        (relay.holds() >= Some(1)).then_some(())
    });
    let before = relay.holds().unwrap();

    let data = bytes(5 * 1024 * 1024, 11);
    let file = dir.path().join("slides.pdf");
    std::fs::write(&file, &data).unwrap();
    let sent = cli(&alice, &["send", "bob", "--file", file.to_str().unwrap()]);
    let event = sent["event_id"].as_str().unwrap().to_owned();
    // Sealed, the file is 81 pieces of a little under 64 KiB.
    let pieces = 81;
    eventually("the whole file to wait on bob's relay", || {
        (transfer(&alice, &event)?["relayed"].as_u64()? >= pieces).then_some(())
    });
    let held = relay.holds().unwrap();
    assert!(held > before + pieces, "{before} then {held}");
    // The relay's quota counted the pieces: some were refused, and
    // offered again once it allowed.
    let refused = relay.metric("safemeet_relay_refused_total{reason=\"rate_limited\"}");
    assert!(refused >= Some(1), "{refused:?}");
    assert_eq!(transfer(&alice, &event).unwrap()["served"], 0);
    // Alice goes too: the file can only come from the relay now.
    da.stop();

    let _db = Daemon::start_on(&bob, &bob_addr);
    eventually("bob to hold the whole file", || {
        (transfer(&bob, &event)?["state"] == "complete").then_some(())
    });
    let out = dir.path().join("slides-saved.pdf");
    let saved = cli(&bob, &["download", &event, out.to_str().unwrap()]);
    assert_eq!(saved["size"], data.len());
    assert!(std::fs::read(&out).unwrap() == data, "bit-identical");
    // Bob took everything from his mailbox, and keeps only the file,
    // sealed (no piece is left over).
    eventually("bob's mailbox to be empty", || {
        (relay.holds() == Some(0)).then_some(())
    });
    let kept = blobs(&bob);
    assert_eq!(kept.len(), 1, "{kept:?}");
    let sealed = std::fs::read(&kept[0]).unwrap();
    assert_eq!(sealed.len(), data.len() + 80 * 16);
    assert!(!contains(&sealed, &data[1000..1064]));
    // The relay's logs name neither of them.
    let logs = relay.stop();
    for id in ids {
        assert!(!logs.contains(&id), "the relay logged a user id");
    }
}
