//! `safemeet-bench relay`, node drain: what a daemon does with a mailbox
//! of 10 000 messages. Bob's engine (on sled, as the daemon runs) is
//! stopped; Alice's engine sends him the messages, each left on his relay;
//! Bob's engine starts again, and the time from its start until all of
//! them are in its event log is the drain (fetch, decrypt, store, flush,
//! ack).

use std::time::Duration;

use safemeet_crypto::at_rest::DataKey;
use safemeet_engine::LogEntry;
use safemeet_proto::clock::{Clock, SystemClock};
use safemeet_store_sled::SledStore;

use crate::relay::start_relay;

/// An engine on sled in `dir` (the daemon's store), opened with `key`.
fn engine_on_sled(
    dir: &std::path::Path,
    key: &DataKey,
    net: safemeet_net::Config,
    create: Option<&str>,
) -> anyhow::Result<safemeet_engine::Handle> {
    let backend = SledStore::open(dir, &safemeet_store_sled::Config::default())?;
    crate::chat::start_engine_on(backend, key, net, create)
}

/// Waits until `engine`'s event log holds `count` entries after `from`
/// that `counts` accepts.
async fn wait_entries(
    engine: &safemeet_engine::Handle,
    from: u64,
    count: usize,
    counts: impl Fn(&LogEntry) -> bool,
) -> anyhow::Result<()> {
    let deadline = SystemClock.instant() + Duration::from_secs(600);
    let (mut cursor, mut seen) = (from, 0);
    let mut watch = engine.log_watch();
    while seen < count {
        let page = engine.events(cursor, 1000).await?;
        if let Some((last, _)) = page.last() {
            cursor = *last;
            seen += page.iter().filter(|(_, e)| counts(e)).count();
            continue;
        }
        let left = deadline.saturating_duration_since(SystemClock.instant());
        tokio::time::timeout(left, watch.changed())
            .await
            .map_err(|_| anyhow::anyhow!("{seen} of {count} log entries within 600 s"))??;
    }
    Ok(())
}

/// A daemon's engine draining `count` messages from its relay mailbox:
/// Alice's engine sends them while Bob's is stopped (each is left on
/// Bob's relay), then Bob's engine starts again on its sled store and the
/// time until all of them are in its timeline is measured: fetch, decrypt,
/// store, flush, ack. Returns (seconds to leave them, seconds to drain).
pub(crate) async fn node_drain(count: usize) -> anyhow::Result<(f64, f64)> {
    let dir = tempfile::tempdir()?;
    let (relay, addr) = start_relay(dir.path()).await?;
    let bob_net = safemeet_net::Config {
        relays: vec![addr],
        ..safemeet_net::Config::loopback()
    };
    let data_key = DataKey::generate();
    let bob_dir = dir.path().join("bob");
    let bob = engine_on_sled(&bob_dir, &data_key, bob_net.clone(), Some("bob"))?;
    let alice_key = DataKey::generate();
    let alice = engine_on_sled(
        &dir.path().join("alice"),
        &alice_key,
        safemeet_net::Config::loopback(),
        Some("alice"),
    )?;
    for engine in [&alice, &bob] {
        let deadline = SystemClock.instant() + Duration::from_secs(10);
        while engine.listen_addrs().await?.is_empty() {
            anyhow::ensure!(SystemClock.instant() < deadline, "a node did not listen");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    alice
        .add_contact(&bob.invite().await?, Some("bob".into()))
        .await?;
    bob.add_contact(&alice.invite().await?, Some("alice".into()))
        .await?;
    bob.shutdown().await?;

    let from = *alice.log_watch().borrow();
    let t0 = SystemClock.instant();
    for n in 0..count {
        alice
            .send_dm(bob.user_id(), &format!("waiting message {n}"))
            .await?;
    }
    wait_entries(&alice, from.saturating_sub(1), count, |e| {
        matches!(e, LogEntry::StoredAtRelay { .. })
    })
    .await?;
    let left = t0.elapsed().as_secs_f64();

    // Bob's store is free once his engine task has ended.
    let deadline = SystemClock.instant() + Duration::from_secs(10);
    let bob = loop {
        match engine_on_sled(&bob_dir, &data_key, bob_net.clone(), None) {
            Ok(engine) => break engine,
            Err(_) if SystemClock.instant() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e),
        }
    };
    let from = *bob.log_watch().borrow();
    let t0 = SystemClock.instant();
    wait_entries(&bob, from.saturating_sub(1), count, |e| {
        matches!(e, LogEntry::Message { .. })
    })
    .await?;
    let drained = t0.elapsed().as_secs_f64();
    bob.shutdown().await?;
    alice.shutdown().await?;
    relay.stop().await;
    Ok((left, drained))
}
