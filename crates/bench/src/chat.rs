//! `safemeet-bench chat`: two SafeMeet nodes over real TCP on loopback,
//! each an engine over its own encrypted sled store, against bare libp2p
//! swarms in the same run.
//!
//! - **DM latency** at a paced rate (default 200 messages/s): from the
//!   `send` call to the moment the recipient's event log holds the message
//!   (encrypt, commit and flush, deliver, decrypt, commit and flush), and
//!   to the moment the sender records the acknowledgement (a full round
//!   trip). Baseline: a bare request-response round trip between two
//!   swarms with the same frame size, same pacing.
//! - **Room throughput**: messages per second *fully delivered and
//!   persisted* by the other member, with many sends outstanding. Baselines:
//!   the crypto-bound rate (raw vodozemac Megolm encrypt + decrypt alone,
//!   one thread) and raw gossipsub between two bare swarms (messages
//!   received per second, and how many of those published arrived).
//!
//! Times come from the engine's event-log watch: a watcher records when
//! each cursor appeared, and the log entries (which carry event ids) tie a
//! cursor to its message.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use safemeet_crypto::EncryptedStore;
use safemeet_crypto::account::Account;
use safemeet_crypto::at_rest::{DataKey, StoreCipher};
use safemeet_crypto::machine::CryptoMachine;
use safemeet_engine::LogEntry;
use safemeet_proto::RoomId;
use safemeet_proto::clock::{Clock, SystemClock};
use safemeet_proto::{DisplayName, EventId, Username};
use safemeet_store_sled::SledStore;
use serde_json::{Value, json};
use tokio::task::JoinSet;
use vodozemac::megolm::{GroupSession, InboundGroupSession, SessionConfig};

use crate::bare::BarePair;
use crate::median;

/// Text size of a benchmark message.
const TEXT_BYTES: usize = 200;
/// A padded frame of that message is in the smallest bucket.
pub(crate) const FRAME_BYTES: usize = 512;
/// Messages sent before measuring, so sessions and connections exist.
const WARM_UP: usize = 20;
/// Room sends outstanding at once.
const ROOM_CONCURRENCY: usize = 256;
/// Longest wait for a message to arrive before the run is called failed.
pub(crate) const DEADLINE: Duration = Duration::from_secs(120);

const P50_GOAL_MS: f64 = 1.5;
const P99_GOAL_MS: f64 = 10.0;
const P50_OVER_RAW_GOAL_MS: f64 = 1.0;
const ROOM_RATIO_GOAL: f64 = 0.6;

pub(crate) fn instant() -> Instant {
    SystemClock.instant()
}

fn text() -> String {
    (0..TEXT_BYTES)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect()
}

/// Percentile `p` (0-100) of sorted milliseconds.
pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn summary(mut xs: Vec<f64>) -> Value {
    xs.sort_by(f64::total_cmp);
    json!({
        "count": xs.len(),
        "p50_ms": round3(percentile(&xs, 50.0)),
        "p90_ms": round3(percentile(&xs, 90.0)),
        "p99_ms": round3(percentile(&xs, 99.0)),
        "max_ms": round3(xs.last().copied().unwrap_or(f64::NAN)),
    })
}

/// Where a benchmark node keeps its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum StoreKind {
    /// An encrypted sled store in a temporary directory (what the daemon
    /// runs on).
    Sled,
    /// An encrypted in-memory store: no disk, nothing persisted. Shows what
    /// the pipeline costs without storage; the goals do not apply.
    Memory,
}

/// One engine over its own store.
struct Node {
    engine: safemeet_engine::Handle,
    /// (next cursor, when it was seen), in order.
    seen: Arc<Mutex<Vec<(u64, Instant)>>>,
}

impl Node {
    fn start(name: &str, dir: &std::path::Path, kind: StoreKind) -> anyhow::Result<Self> {
        let engine = match kind {
            StoreKind::Sled => start_engine(
                name,
                SledStore::open(dir.join(name), &safemeet_store_sled::Config::default())?,
            )?,
            StoreKind::Memory => start_engine(name, safemeet_store::MemoryStore::new())?,
        };
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut watch = engine.log_watch();
        let record = seen.clone();
        tokio::spawn(async move {
            while watch.changed().await.is_ok() {
                let next = *watch.borrow_and_update();
                if let Ok(mut seen) = record.lock() {
                    seen.push((next, instant()));
                }
            }
        });
        Ok(Self { engine, seen })
    }

    /// When the log entry at `cursor` was first seen.
    fn seen_at(&self, cursor: u64) -> Option<Instant> {
        let seen = self.seen.lock().ok()?;
        let i = seen.partition_point(|(next, _)| *next <= cursor);
        seen.get(i).map(|(_, t)| *t)
    }

    /// Every log entry from `cursor` (a value of the log watch) on.
    async fn events_from(&self, cursor: u64) -> anyhow::Result<Vec<(u64, LogEntry)>> {
        let mut cursor = cursor.saturating_sub(1);
        let mut out = Vec::new();
        loop {
            let page = self.engine.events(cursor, 1000).await?;
            let Some((last, _)) = page.last() else {
                return Ok(out);
            };
            cursor = *last;
            out.extend(page);
        }
    }

    fn cursor(&self) -> u64 {
        *self.engine.log_watch().borrow()
    }

    /// Waits until the log has grown past `target`.
    async fn wait_cursor(&self, target: u64) -> anyhow::Result<()> {
        let mut watch = self.engine.log_watch();
        tokio::time::timeout(DEADLINE, watch.wait_for(|next| *next > target))
            .await
            .map_err(|_| anyhow::anyhow!("messages did not arrive within {DEADLINE:?}"))??;
        Ok(())
    }
}

pub(crate) fn start_engine<S: safemeet_store::Store + Clone + 'static>(
    name: &str,
    backend: S,
) -> anyhow::Result<safemeet_engine::Handle> {
    start_engine_on(
        backend,
        &DataKey::generate(),
        safemeet_net::Config::loopback(),
        Some(name),
    )
}

/// An engine over `backend`, sealed with `key`, with short retries; a new
/// account called `create` first, if given (else the one stored).
pub(crate) fn start_engine_on<S: safemeet_store::Store + Clone + 'static>(
    backend: S,
    key: &DataKey,
    net: safemeet_net::Config,
    create: Option<&str>,
) -> anyhow::Result<safemeet_engine::Handle> {
    let store = EncryptedStore::new(backend, StoreCipher::new(key));
    if let Some(name) = create {
        let account = Account::create(
            Username::new(name)?,
            DisplayName::new(name)?,
            vec![],
            SystemClock.now(),
        )?;
        CryptoMachine::store_account(&store, &account)?;
    }
    let config = safemeet_engine::Config {
        net,
        retry_initial: Duration::from_millis(200),
        retry_max: Duration::from_secs(2),
        auto_join_rooms: true,
        ..safemeet_engine::Config::default()
    };
    Ok(safemeet_engine::start(CryptoMachine::open(store)?, config)?)
}

pub(crate) async fn wait_listening(engine: &safemeet_engine::Handle) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    for _ in 0..1000 {
        tick.tick().await;
        if !engine.listen_addrs().await?.is_empty() {
            return Ok(());
        }
    }
    anyhow::bail!("a node did not start listening")
}

/// Sends [`WARM_UP`] messages to `target` one after another and waits until
/// `to` holds them all.
async fn warm_up(from: &Node, to: &Node, room: Option<RoomId>) -> anyhow::Result<()> {
    let start = to.cursor();
    for _ in 0..WARM_UP {
        match room {
            Some(room) => from.engine.send_room(room, "warm-up").await?,
            None => from.engine.send_dm(to.engine.user_id(), "warm-up").await?,
        };
    }
    to.wait_cursor(start + WARM_UP as u64 - 1).await
}

/// Paced DMs; returns (one-way latencies, round trips to the ack), in ms.
async fn dm_latency(
    alice: &Node,
    bob: &Node,
    count: usize,
    rate: u32,
) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let body = text();
    let (alice_start, bob_start) = (alice.cursor(), bob.cursor());
    let mut sent: HashMap<EventId, Instant> = HashMap::with_capacity(count);
    let mut pace = tokio::time::interval(Duration::from_secs(1) / rate);
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for _ in 0..count {
        pace.tick().await;
        let t = instant();
        let id = alice.engine.send_dm(bob.engine.user_id(), &body).await?;
        sent.insert(id, t);
    }
    bob.wait_cursor(bob_start + count as u64 - 1).await?;
    // Every message is acknowledged too (a "delivered" log entry each).
    let deadline = instant() + DEADLINE;
    let (mut one_way, mut round_trip) = (Vec::new(), Vec::new());
    loop {
        let delivered: Vec<(u64, EventId)> = alice
            .events_from(alice_start)
            .await?
            .into_iter()
            .filter_map(|(c, e)| match e {
                // Only this run's messages (a warm-up one may be acknowledged late).
                LogEntry::Delivered { event_id, .. } if sent.contains_key(&event_id) => {
                    Some((c, event_id))
                }
                _ => None,
            })
            .collect();
        if delivered.len() >= count || instant() > deadline {
            for (cursor, id) in delivered {
                if let (Some(t0), Some(t1)) = (sent.get(&id), alice.seen_at(cursor)) {
                    round_trip.push(ms(t1.saturating_duration_since(*t0)));
                }
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (cursor, entry) in bob.events_from(bob_start).await? {
        if let LogEntry::Message { entry, .. } = entry
            && let (Some(t0), Some(t1)) = (sent.get(&entry.event_id), bob.seen_at(cursor))
        {
            one_way.push(ms(t1.saturating_duration_since(*t0)));
        }
    }
    anyhow::ensure!(
        one_way.len() == count,
        "{} of {count} DMs arrived",
        one_way.len()
    );
    Ok((one_way, round_trip))
}

/// `count` room messages with many sends outstanding; returns messages per
/// second fully persisted by Bob, and the send rate Alice managed.
/// Room messages/s delivered and persisted, sends/s committed, and the
/// process's CPU time per message in µs (both nodes, every thread) where
/// it can be read.
async fn room_throughput(
    alice: &Node,
    bob: &Node,
    room: RoomId,
    count: usize,
) -> anyhow::Result<(f64, f64, Option<f64>)> {
    let bob_start = bob.cursor();
    let body = Arc::new(text());
    let cpu0 = crate::process_cpu();
    let t0 = instant();
    let mut sends = JoinSet::new();
    let mut issued = 0;
    while issued < count || !sends.is_empty() {
        while issued < count && sends.len() < ROOM_CONCURRENCY {
            let (engine, body) = (alice.engine.clone(), body.clone());
            sends.spawn(async move { engine.send_room(room, &body).await });
            issued += 1;
        }
        if let Some(done) = sends.join_next().await {
            done??;
        }
    }
    let sent = instant().saturating_duration_since(t0);
    bob.wait_cursor(bob_start + count as u64 - 1).await?;
    let all = instant().saturating_duration_since(t0);
    let cpu_us = match (cpu0, crate::process_cpu()) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a).as_secs_f64() * 1e6 / count as f64),
        _ => None,
    };
    let ids: Vec<EventId> = bob
        .events_from(bob_start)
        .await?
        .into_iter()
        .filter_map(|(_, e)| match e {
            LogEntry::Message { entry, .. } => Some(entry.event_id),
            _ => None,
        })
        .collect();
    let distinct: std::collections::HashSet<&EventId> = ids.iter().collect();
    anyhow::ensure!(
        ids.len() == count && distinct.len() == count,
        "{} room messages stored ({} distinct) of {count} sent",
        ids.len(),
        distinct.len()
    );
    Ok((
        count as f64 / all.as_secs_f64(),
        count as f64 / sent.as_secs_f64(),
        cpu_us,
    ))
}

/// Raw vodozemac Megolm encrypt + decrypt of `count` messages: messages/s.
fn crypto_bound(count: usize) -> anyhow::Result<f64> {
    let body = text();
    let mut outbound = GroupSession::new(SessionConfig::version_1());
    let mut inbound = InboundGroupSession::new(&outbound.session_key(), SessionConfig::version_1());
    let t0 = instant();
    for _ in 0..count {
        let m = outbound.encrypt(body.as_bytes());
        let d = inbound.decrypt(&m)?;
        anyhow::ensure!(d.plaintext.len() == TEXT_BYTES, "decrypted");
    }
    Ok(count as f64 / instant().saturating_duration_since(t0).as_secs_f64())
}

pub(crate) fn run(samples: usize, ops: Option<usize>, store: StoreKind) -> anyhow::Result<Value> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run_async(samples, ops, store))
}

async fn run_async(samples: usize, ops: Option<usize>, store: StoreKind) -> anyhow::Result<Value> {
    let dm_count = ops.unwrap_or(1000);
    let room_count = ops.map_or(5000, |n| n * 5);
    let rate = 200;
    eprintln!(
        "{samples} samples: {dm_count} DMs at {rate}/s, {room_count} room messages; two nodes on 127.0.0.1 over TCP, {store:?} stores"
    );
    if store == StoreKind::Memory {
        eprintln!("note: in-memory stores, nothing persisted: the goals do not apply");
    }
    let persisted = store == StoreKind::Sled;
    let dir = tempfile::tempdir()?;
    let alice = Node::start("alice", dir.path(), store)?;
    let bob = Node::start("bob", dir.path(), store)?;
    wait_listening(&alice.engine).await?;
    wait_listening(&bob.engine).await?;
    let (ia, ib) = (alice.engine.invite().await?, bob.engine.invite().await?);
    alice.engine.add_contact(&ib, Some("bob".into())).await?;
    bob.engine.add_contact(&ia, Some("alice".into())).await?;
    warm_up(&alice, &bob, None).await?;
    let bench_room = alice
        .engine
        .create_room("bench", vec![bob.engine.user_id()])
        .await?;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    for _ in 0..1000 {
        tick.tick().await;
        if !bob.engine.rooms().await?.is_empty() {
            break;
        }
    }
    warm_up(&alice, &bob, Some(bench_room)).await?;
    let mut bare = BarePair::new().await?;
    bare.rr_latency(WARM_UP, rate).await?;

    let (mut one_way, mut round_trip, mut raw_rt) = (vec![], vec![], vec![]);
    let (mut p50s, mut raw_p50s) = (vec![], vec![]);
    let (mut room_rates, mut send_rates, mut crypto_rates) = (vec![], vec![], vec![]);
    let mut room_cpu = vec![];
    let (mut gossip_rates, mut gossip_fractions, mut room_ratios) = (vec![], vec![], vec![]);
    for sample in 1..=samples {
        let raw = bare.rr_latency(dm_count, rate).await?;
        let (ow, rt) = dm_latency(&alice, &bob, dm_count, rate).await?;
        let mut sorted = ow.clone();
        sorted.sort_by(f64::total_cmp);
        let mut raw_sorted = raw.clone();
        raw_sorted.sort_by(f64::total_cmp);
        let (p50, p99, raw_p50) = (
            percentile(&sorted, 50.0),
            percentile(&sorted, 99.0),
            percentile(&raw_sorted, 50.0),
        );
        p50s.push(p50);
        raw_p50s.push(raw_p50);
        let crypto = crypto_bound(room_count)?;
        let (room, sends, cpu_us) = room_throughput(&alice, &bob, bench_room, room_count).await?;
        let (gossip, fraction) = bare.gossip_throughput(room_count).await?;
        eprintln!(
            "sample {sample}/{samples}: DM one-way p50 {p50:.3} ms p99 {p99:.3} ms (raw rr round trip p50 {raw_p50:.3} ms); room {room:.0} msg/s (sends {sends:.0}/s, {} µs CPU per message), crypto-bound {crypto:.0}/s = {:.3}×; raw gossip {gossip:.0}/s, {:.1} % arrived",
            cpu_us.map_or("?".to_owned(), |c| format!("{c:.0}")),
            room / crypto,
            fraction * 100.0
        );
        one_way.extend(ow);
        round_trip.extend(rt);
        raw_rt.extend(raw);
        room_ratios.push(room / crypto);
        room_rates.push(room);
        room_cpu.extend(cpu_us);
        send_rates.push(sends);
        crypto_rates.push(crypto);
        gossip_rates.push(gossip);
        gossip_fractions.push(fraction);
    }
    alice.engine.shutdown().await?;
    bob.engine.shutdown().await?;

    let dm = summary(one_way.clone());
    let raw = summary(raw_rt.clone());
    let mut sorted = one_way;
    sorted.sort_by(f64::total_cmp);
    let (p50, p99) = (percentile(&sorted, 50.0), percentile(&sorted, 99.0));
    let mut raw_sorted = raw_rt;
    raw_sorted.sort_by(f64::total_cmp);
    let raw_p50 = percentile(&raw_sorted, 50.0);
    let room_ratio = median(room_ratios);
    let report = json!({
        "suite": "chat",
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
        "samples": samples,
        "transport": "TCP + Noise + yamux on 127.0.0.1",
        "store": if persisted { "encrypted sled (persisted)" } else { "encrypted memory (not persisted; goals do not apply)" },
        "dm": {
            "messages_per_sample": dm_count,
            "rate_per_second": rate,
            "text_bytes": TEXT_BYTES,
            "one_way_send_to_persisted": dm,
            "round_trip_send_to_ack_recorded": summary(round_trip),
            "raw_request_response_round_trip": raw,
            "p50_minus_raw_p50_ms": round3(p50 - raw_p50),
            "goal": {
                "p50_ms_max": P50_GOAL_MS,
                "p99_ms_max": P99_GOAL_MS,
                "p50_over_raw_ms_max": P50_OVER_RAW_GOAL_MS,
                "goal_met": persisted && p50 <= P50_GOAL_MS && p99 <= P99_GOAL_MS && p50 - raw_p50 <= P50_OVER_RAW_GOAL_MS,
            },
        },
        "room": {
            "messages_per_sample": room_count,
            "sends_outstanding": ROOM_CONCURRENCY,
            "delivered_and_persisted_per_second": median(room_rates).round(),
            "cpu_us_per_message_both_nodes": (!room_cpu.is_empty()).then(|| median(room_cpu).round()),
            "sends_committed_per_second": median(send_rates).round(),
            "crypto_bound_per_second": median(crypto_rates).round(),
            "ratio_to_crypto_bound": round3(room_ratio),
            "raw_gossipsub_received_per_second": median(gossip_rates).round(),
            "raw_gossipsub_fraction_received": round3(median(gossip_fractions)),
            "goal": {
                "ratio_to_crypto_bound_min": ROOM_RATIO_GOAL,
                "judged_on": "median of per-sample ratios",
                "goal_met": persisted && room_ratio >= ROOM_RATIO_GOAL,
            },
        },
    });
    eprintln!("{}", serde_json::to_string_pretty(&report)?);
    Ok(report)
}
