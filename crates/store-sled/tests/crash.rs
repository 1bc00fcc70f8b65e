//! Crash test: a child process writes and acknowledges records and is killed
//! with SIGKILL at random points. After each kill the database is reopened
//! and every acknowledged record must be present and intact, and every
//! batch must be all-or-nothing.
//!
//! "Acknowledged" means the child printed `ACK n` after `apply` and `flush`
//! returned for record `n` (see ARCHITECTURE.md, "What acknowledged means").
//!
//! `SAFEMEET_CRASH_CYCLES` sets the number of kills (default 200);
//! `SAFEMEET_CRASH_SEED` the seed (default: fixed, printed on failure).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use safemeet_store::{Batch, Keyspace, Store};
use safemeet_store_sled::{Config, SledStore};

const CHILD_ENV: &str = "SAFEMEET_CRASH_CHILD_DIR";
const START_ENV: &str = "SAFEMEET_CRASH_CHILD_START";

/// The record for index `i`: 300 bytes that depend on `i` and keyspace, so a
/// torn, stale or misplaced value is detected.
fn record(i: u64, salt: u8) -> Vec<u8> {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(salt);
    (0..300)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return; // Only does something when started by `acknowledged_writes_survive_sigkill`.
    };
    let start: u64 = std::env::var(START_ENV).unwrap().parse().unwrap();
    let store = SledStore::open(&dir, &Config::default()).unwrap();
    let mut out = std::io::stdout().lock();
    for i in start.. {
        let mut b = Batch::new();
        b.put(Keyspace::Outbox, &i.to_be_bytes(), &record(i, 1));
        b.put(Keyspace::CryptoSessions, &i.to_be_bytes(), &record(i, 2));
        store.apply(b).unwrap();
        store.flush().unwrap();
        writeln!(out, "ACK {i}").unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let cycles: u32 = std::env::var("SAFEMEET_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let seed: u64 = std::env::var("SAFEMEET_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5afe_3ee7);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();

    let mut acked: Option<u64> = None; // highest acknowledged index so far
    let mut total_acks = 0u64;
    for cycle in 0..cycles {
        let start = acked.map_or(0, |a| a + 1);
        let mut child = Command::new(&exe)
            .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .env(START_ENV, start.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Kill after a random number of acknowledgements (0 = while opening).
        let kill_after: u64 = rng.gen_range(0..=24);
        // Lines arrive through a bounded channel so a stalled child fails
        // the test after a timeout instead of hanging it.
        let (tx, rx) = std::sync::mpsc::sync_channel::<String>(64);
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut seen = 0u64;
        while seen < kill_after {
            let line = rx
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|e| {
                    panic!("cycle {cycle} (seed {seed}): no ack from the child ({e})")
                });
            // libtest may print "test crash_child ... " on the same line first.
            if let Some(n) = line.split("ACK ").nth(1) {
                let n: u64 = n.parse().unwrap();
                assert_eq!(n, start + seen, "acks out of order");
                acked = Some(n);
                seen += 1;
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        drop(rx);
        reader.join().unwrap();
        total_acks += seen;

        // Reopen and verify.
        let store = SledStore::open(dir.path(), &Config::default())
            .unwrap_or_else(|e| panic!("cycle {cycle} (seed {seed}): reopen failed: {e}"));
        let outbox = store.scan(Keyspace::Outbox, b"", None, usize::MAX).unwrap();
        let sessions = store
            .scan(Keyspace::CryptoSessions, b"", None, usize::MAX)
            .unwrap();
        if let Some(a) = acked {
            assert!(
                outbox.len() as u64 > a,
                "cycle {cycle} (seed {seed}): {} records present, {} acknowledged",
                outbox.len(),
                a + 1
            );
        }
        // Both keyspaces hold the same indexes (batches are atomic), each
        // value intact, and the acknowledged ones form a gap-free prefix.
        assert_eq!(
            outbox.len(),
            sessions.len(),
            "cycle {cycle} (seed {seed}): torn batch"
        );
        for (idx, ((k1, v1), (k2, v2))) in outbox.iter().zip(&sessions).enumerate() {
            let i = u64::from_be_bytes(k1.as_slice().try_into().unwrap());
            assert_eq!(i, idx as u64, "cycle {cycle} (seed {seed}): gap before {i}");
            assert_eq!(k1, k2, "cycle {cycle} (seed {seed}): torn batch at {i}");
            assert_eq!(
                v1,
                &record(i, 1),
                "cycle {cycle} (seed {seed}): record {i} damaged"
            );
            assert_eq!(
                v2,
                &record(i, 2),
                "cycle {cycle} (seed {seed}): record {i} damaged"
            );
        }
        drop(store);
    }
    assert!(
        total_acks > u64::from(cycles),
        "too few acknowledged writes to mean anything"
    );
    eprintln!("crash test: {cycles} kills, {total_acks} acknowledged records, all intact");
}
