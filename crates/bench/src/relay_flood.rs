//! `safemeet-bench relay --flood`: one relay, in a process of its own with
//! the defaults of `safemeet relay`, against `--sybils` attackers (100)
//! for `--flood-secs` (60), while an honest device deposits and fetches.
//!
//! 1. **Baseline**: the honest client alone for the same duration (a
//!    fresh peer id and mailbox): [`honest::RATE`] deposits a second of
//!    [`honest::ENVELOPE_BYTES`], a fetch and ack every second, then a
//!    drain to the end.
//! 2. **Flood**: a new honest client does the same while the sybils
//!    attack ([`sybil::Attack`]: deposits to mailboxes nobody opened,
//!    forged or missing tags on the honest mailbox, junk, stalled streams,
//!    and fillers of their own mailboxes), each from its own loopback
//!    address in a /24 of its own by default (`--sybil-addresses` fewer
//!    puts several behind one address, where the relay's per-address
//!    connection cap, 64, applies).
//!
//! Reported, with the goals of the abuse-resistance issue:
//!
//! - **honest loss**: deposits made during the flood and never fetched
//!   (refused, failed, or not there at the final drain), over deposits
//!   made. Goal < 1 %.
//! - **honest deposit latency**: from the moment a deposit was due to its
//!   receipt, p50 and p99, flood over baseline.
//! - **relay peak RSS**: the relay process's `VmHWM` at the end (the
//!   baseline's peak is reported too). Goal ≤ 512 MiB.
//! - **time until throttled**: the sybils' accepted bytes per second, as
//!   on disk (their stored envelopes and opened mailboxes, weighed as the
//!   quotas weigh them), counted from the relay's answers in 1-s bins from
//!   the flood's start. The steady throttled level is what the per-source
//!   quotas allow all the sybils together, `sybils × peer_disk_kib_per_hour`
//!   (100 × 16 MiB/h ≈ 455 KiB/s). The time is the start of the first
//!   second `t` from which the sybils never run ahead of that level: for
//!   every later second `s`, what they got in seconds `t..=s` is at most
//!   the level times `s − t + 1` (summed, because sources whose quotas
//!   refill get a request through in clumps, at the level on average).
//!   Goal ≤ 10 s.

mod honest;
mod process;
mod stall;
mod sybil;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub(crate) use process::serve;
use process::{Memory, RelayProcess};
use safemeet_relay::node::RelayConfig;
use serde_json::{Value, json};
use sybil::{Attack, Flood};

/// Goal: honest deposits lost, in percent, below this.
const LOSS_GOAL_PERCENT: f64 = 1.0;
/// Goal: the relay's peak resident memory, at most this.
const RSS_GOAL_MIB: f64 = 512.0;
/// Goal: the flood throttled within this long.
const THROTTLE_GOAL_S: u64 = 10;
/// The relay's counter of envelopes stored.
const DEPOSITS: &str = "safemeet_relay_deposits_total";
/// How long the relay's metrics may take to answer a sample, so a slow
/// answer does not hold up the next second's.
const SAMPLE_WAIT: Duration = Duration::from_millis(900);

/// What to run.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// How long the baseline and the flood each last.
    pub(crate) secs: u64,
    /// Attackers.
    pub(crate) sybils: usize,
    /// Distinct source addresses they come from.
    pub(crate) sybil_addresses: usize,
    /// A `safemeet` binary to run as the relay, instead of this one.
    pub(crate) relay_bin: Option<PathBuf>,
}

pub(crate) fn run(options: Options) -> anyhow::Result<Value> {
    // Two workers: the machine has two cores, shared with the relay.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run_async(options))
}

async fn run_async(o: Options) -> anyhow::Result<Value> {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    let relay = RelayProcess::start(o.relay_bin.as_deref())?;
    eprintln!(
        "relay: {}; load average before: {load}\nbaseline: the honest client alone for {} s ({} deposits/s of {} B)",
        relay.what,
        o.secs,
        honest::RATE,
        honest::ENVELOPE_BYTES
    );
    let at_start = relay.memory();
    let cpu = Cpu::read(&relay);
    let baseline = honest::spawn(relay.addr.clone(), relay.peer, o.secs, None)?.await??;
    let after_baseline = relay.memory();
    let baseline_cpu = Cpu::read(&relay).since(cpu);
    print_honest("baseline", &baseline);
    let before = relay.metrics().await?;

    eprintln!(
        "flood: {} sybils from {} addresses for {} s, with a new honest client",
        o.sybils, o.sybil_addresses, o.secs
    );
    let (ready, target) = tokio::sync::oneshot::channel();
    let outcome = honest::spawn(relay.addr.clone(), relay.peer, o.secs, Some(ready))?;
    let target = target.await?;
    let flood = Arc::new(Flood::new(o.secs));
    let cpu = Cpu::read(&relay);
    let tasks = sybil::launch(
        &flood,
        o.sybils,
        o.sybil_addresses,
        &relay.addr,
        relay.peer,
        target,
    );
    let samples = sample(&relay, &flood, o.secs).await;
    let flood_cpu = Cpu::read(&relay).since(cpu);
    for task in &tasks {
        task.abort();
    }
    let during = outcome.await??;
    print_honest("flood", &during);
    let after_flood = relay.memory();
    let after = relay.metrics().await?;
    let what = relay.what.clone();
    relay.stop();
    Ok(report(
        &o,
        Readings {
            load,
            what,
            baseline,
            during,
            memory: [at_start, after_baseline, after_flood],
            cpu: [baseline_cpu, flood_cpu],
            before,
            after,
            tally: flood.tally(),
            samples,
        },
    ))
}

/// CPU time used so far by the relay and by this process (the honest
/// client and the attackers).
#[derive(Clone, Copy)]
struct Cpu([Option<Duration>; 2]);

impl Cpu {
    fn read(relay: &RelayProcess) -> Self {
        Self([relay.cpu(), crate::process_cpu()])
    }

    /// Seconds of CPU used since `then`, relay and this process.
    fn since(self, then: Cpu) -> [Option<f64>; 2] {
        let used = |now: Option<Duration>, then: Option<Duration>| {
            Some(now?.checked_sub(then?)?.as_secs_f64())
        };
        [used(self.0[0], then.0[0]), used(self.0[1], then.0[1])]
    }
}

/// The relay each second of the flood: resident memory (KiB) and its
/// counters (`None` where they did not answer in time).
type Sample = (Option<Memory>, Option<BTreeMap<String, f64>>);

/// Samples the relay at each second of the flood, printing a line per
/// second; returns after `secs`.
async fn sample(relay: &RelayProcess, flood: &Flood, secs: u64) -> Vec<Sample> {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut samples = Vec::new();
    for s in 0..secs {
        tick.tick().await;
        let memory = relay.memory();
        let metrics = tokio::time::timeout(SAMPLE_WAIT, relay.metrics())
            .await
            .ok()
            .and_then(Result::ok);
        let tally = flood.tally();
        let second = tally.seconds.get(s as usize).copied().unwrap_or_default();
        eprintln!(
            "  {:>3} s: sybils got {} answers, {} rate-limited, {} envelopes stored ({} KiB as on disk), {} stalled streams opened; relay RSS {}",
            s + 1,
            second.answers,
            second.rate_limited,
            second.stored,
            second.accepted_bytes / 1024,
            second.stalls,
            memory.map_or("?".into(), |m| format!("{} MiB", m.rss_kib / 1024)),
        );
        samples.push((memory, metrics));
    }
    samples
}

fn print_honest(phase: &str, o: &honest::Outcome) {
    let (p50, p99) = (
        percentile(&o.latencies_ms(0.0), 50.0),
        percentile(&o.latencies_ms(0.0), 99.0),
    );
    eprintln!(
        "{phase}: {} deposits, {} stored, {} fetched, {} lost ({:.2} %); refused {:?}, failed {}; latency p50 {p50:.1} ms, p99 {p99:.1} ms, max {:.1} ms",
        o.sent,
        o.stored,
        o.fetched,
        o.lost(),
        loss_percent(o),
        o.refused,
        o.failed,
        percentile(&o.latencies_ms(0.0), 100.0),
    );
}

/// What a run measured.
struct Readings {
    load: String,
    what: String,
    baseline: honest::Outcome,
    during: honest::Outcome,
    /// The relay at start, after the baseline, after the flood.
    memory: [Option<Memory>; 3],
    /// CPU seconds (relay, this process) during the baseline and the flood.
    cpu: [[Option<f64>; 2]; 2],
    /// Its counters before and after the flood.
    before: BTreeMap<String, f64>,
    after: BTreeMap<String, f64>,
    tally: sybil::Tally,
    samples: Vec<Sample>,
}

fn report(o: &Options, r: Readings) -> Value {
    let config = RelayConfig::default();
    let level = throttled_level(o.sybils as u64, config.peer_disk_kib_per_hour);
    let accepted: Vec<u64> = r.tally.seconds.iter().map(|s| s.accepted_bytes).collect();
    let throttled = throttled_after(&accepted, level);
    let loss = loss_percent(&r.during);
    let peak_mib = r.memory[2].map(|m| m.peak_kib as f64 / 1024.0);
    let (base_p50, base_p99) = (
        percentile(&r.baseline.latencies_ms(0.0), 50.0),
        percentile(&r.baseline.latencies_ms(0.0), 99.0),
    );
    let (p50, p99) = (
        percentile(&r.during.latencies_ms(0.0), 50.0),
        percentile(&r.during.latencies_ms(0.0), 99.0),
    );
    // The honest client's deposits once the sybils were throttled (its
    // first deposit and the flood start together, within milliseconds).
    let calm = throttled
        .filter(|t| *t < o.secs)
        .map(|t| r.during.latencies_ms(t as f64));
    let calm_json = calm.as_ref().map(|ms| {
        json!({
            "from_second": throttled,
            "latency_ms_p50": percentile(ms, 50.0),
            "latency_ms_p99": percentile(ms, 99.0),
        })
    });
    let mib = |m: Option<Memory>, peak: bool| {
        m.map(|m| ((if peak { m.peak_kib } else { m.rss_kib }) as f64 / 1024.0).round())
    };
    // What the relay counted during the flood, by counter.
    let counted: BTreeMap<&String, f64> = r
        .after
        .iter()
        .filter(|(k, _)| k.starts_with("safemeet_relay_") && k.contains("refused"))
        .chain(r.after.get_key_value(DEPOSITS))
        .map(|(k, v)| (k, v - r.before.get(k).copied().unwrap_or(0.0)))
        .collect();
    let attacks: BTreeMap<&str, Value> = r
        .tally
        .attacks
        .iter()
        .map(|(a, t)| {
            (
                a.label(),
                json!({
                    "sybils": t.sybils, "sent": t.sent, "answers": t.answers,
                    "stored": t.stored, "refused": t.refused, "failed": t.failed,
                    "connections": t.connections, "dial_failures": t.dial_failures,
                }),
            )
        })
        .collect();
    let mut last_deposits = r.before.get(DEPOSITS).copied();
    let per_second: Vec<Value> = r
        .tally
        .seconds
        .iter()
        .zip(r.samples.iter().map(Some).chain(std::iter::repeat(None)))
        .map(|(s, sample)| {
            let (memory, metrics) = sample.cloned().unwrap_or((None, None));
            let deposits = metrics.and_then(|m| m.get(DEPOSITS).copied());
            let stored_by_relay = deposits.zip(last_deposits).map(|(now, then)| now - then);
            last_deposits = deposits.or(last_deposits);
            json!({
                "answers": s.answers,
                "stored": s.stored,
                "accepted_bytes": s.accepted_bytes,
                "rate_limited": s.rate_limited,
                "stalls_opened": s.stalls,
                "relay_rss_mib": memory.map(|m| m.rss_kib / 1024),
                "relay_deposits": stored_by_relay,
            })
        })
        .collect();
    let report = json!({
        "suite": "relay-flood",
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
        "load_average_before": r.load,
        "relay": r.what,
        "flood_seconds": o.secs,
        "sybils": o.sybils,
        "sybil_addresses": o.sybil_addresses,
        "attacks": Attack::ALL.iter().map(|a| a.label()).collect::<Vec<_>>(),
        "honest": {
            "deposits_per_second": honest::RATE,
            "envelope_bytes": honest::ENVELOPE_BYTES,
            "baseline": honest_json(&r.baseline),
            "flood": honest_json(&r.during),
            "flood_once_throttled": calm_json,
            "p50_ratio": p50 / base_p50,
            "p99_ratio": p99 / base_p99,
        },
        "relay_memory_mib": {
            "rss_at_start": mib(r.memory[0], false),
            "peak_after_baseline": mib(r.memory[1], true),
            "peak": mib(r.memory[2], true),
            "rss_at_end": mib(r.memory[2], false),
        },
        "relay_counted_during_flood": counted,
        "cpu_seconds": {
            "baseline": { "relay": r.cpu[0][0], "bench": r.cpu[0][1] },
            "flood": { "relay": r.cpu[1][0], "bench": r.cpu[1][1] },
        },
        "sybil": {
            "attacks": attacks,
            "stored_envelopes": r.tally.seconds.iter().map(|s| s.stored).sum::<u64>(),
            "accepted_bytes_as_on_disk": accepted.iter().sum::<u64>(),
            "errors": r.tally.errors,
            "first_error": r.tally.first_error,
            "per_second": per_second,
        },
        "throttle": {
            "level_bytes_per_second": level,
            "throttled_after_seconds": throttled,
        },
        "goal": {
            "honest_loss_percent_max": LOSS_GOAL_PERCENT,
            "honest_loss_met": loss < LOSS_GOAL_PERCENT,
            "peak_rss_mib_max": RSS_GOAL_MIB,
            "peak_rss_met": peak_mib.is_some_and(|p| p <= RSS_GOAL_MIB),
            "throttled_seconds_max": THROTTLE_GOAL_S,
            "throttled_met": throttled.is_some_and(|t| t <= THROTTLE_GOAL_S),
        },
    });
    let met = |ok: bool| if ok { "met" } else { "NOT met" };
    eprintln!(
        "honest loss during the flood: {loss:.2} % (goal < {LOSS_GOAL_PERCENT} %: {})",
        met(loss < LOSS_GOAL_PERCENT)
    );
    eprintln!(
        "honest deposit latency: p50 {p50:.1} ms against {base_p50:.1} ms alone ({:.2}×), p99 {p99:.1} ms against {base_p99:.1} ms ({:.2}×)",
        p50 / base_p50,
        p99 / base_p99
    );
    if let (Some(ms), Some(t)) = (&calm, throttled) {
        eprintln!(
            "  of deposits due once the sybils were throttled (from {t} s): p50 {:.1} ms, p99 {:.1} ms",
            percentile(ms, 50.0),
            percentile(ms, 99.0)
        );
    }
    let cores = |c: Option<f64>| c.map_or("?".into(), |c| format!("{:.2}", c / o.secs as f64));
    eprintln!(
        "CPU in cores: relay {} alone, {} under the flood; attackers and honest client {}",
        cores(r.cpu[0][0]),
        cores(r.cpu[1][0]),
        cores(r.cpu[1][1]),
    );
    eprintln!(
        "relay peak RSS: {} (goal ≤ {RSS_GOAL_MIB} MiB: {})",
        peak_mib.map_or("?".into(), |p| format!("{p:.0} MiB")),
        met(peak_mib.is_some_and(|p| p <= RSS_GOAL_MIB))
    );
    eprintln!(
        "throttled (sybils' accepted bytes ≤ {} KiB/s from then on): {} (goal ≤ {THROTTLE_GOAL_S} s: {})",
        level / 1024,
        throttled.map_or("not within the flood".into(), |t| format!("after {t} s")),
        met(throttled.is_some_and(|t| t <= THROTTLE_GOAL_S))
    );
    report
}

fn honest_json(o: &honest::Outcome) -> Value {
    json!({
        "deposits": o.sent,
        "stored": o.stored,
        "fetched": o.fetched,
        "lost": o.lost(),
        "loss_percent": loss_percent(o),
        "refused": o.refused,
        "failed": o.failed,
        "fetch_errors": o.fetch_errors,
        "reconnects": o.reconnects,
        "latency_ms_p50": percentile(&o.latencies_ms(0.0), 50.0),
        "latency_ms_p99": percentile(&o.latencies_ms(0.0), 99.0),
        "latency_ms_max": percentile(&o.latencies_ms(0.0), 100.0),
    })
}

/// Lost over made, in percent (0 when none were made).
fn loss_percent(o: &honest::Outcome) -> f64 {
    if o.sent == 0 {
        return 0.0;
    }
    o.lost() as f64 * 100.0 / o.sent as f64
}

/// The `p`-th percentile (nearest rank) of `xs`; NaN for none.
fn percentile(xs: &[f64], p: f64) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    let mut sorted = xs.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Bytes a second (as on disk) that the per-source quotas let `sources`
/// add together once their bursts are spent.
fn throttled_level(sources: u64, kib_per_hour: u32) -> u64 {
    sources * u64::from(kib_per_hour) * 1024 / 3600
}

/// The first second `t` from which the bytes of `per_second` never run
/// ahead of `level`: for every later second `s`, seconds `t..=s` together
/// hold at most `level × (s − t + 1)`. Summed, not second by second: a
/// source whose quota refills by the hour gets one more request through
/// whenever it has refilled enough for one, so once throttled the sources
/// still add bytes in clumps, at the level on average. `None` if even the
/// last second is above it.
fn throttled_after(per_second: &[u64], level: u64) -> Option<u64> {
    let stays_down = |t: usize| {
        let mut sum = 0u64;
        per_second[t..].iter().enumerate().all(|(k, &b)| {
            sum += b;
            sum <= level * (k as u64 + 1)
        })
    };
    if per_second.is_empty() {
        return Some(0);
    }
    (0..per_second.len())
        .find(|&t| stays_down(t))
        .map(|t| t as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttled_is_where_the_rate_stays_down_for_good() {
        // Above, a dip, above again, then down to the end: the last rise counts.
        assert_eq!(
            throttled_after(&[900, 900, 10, 900, 10, 0, 0], 100),
            Some(4)
        );
        assert_eq!(throttled_after(&[0, 0, 0], 100), Some(0));
        // At the level is throttled.
        assert_eq!(throttled_after(&[900, 100, 100], 100), Some(1));
        // Still above at the end: never throttled within the flood.
        assert_eq!(throttled_after(&[900, 10, 900], 100), None);
        assert_eq!(throttled_after(&[], 100), Some(0));
    }

    #[test]
    fn refills_in_clumps_at_the_level_on_average_are_throttled() {
        // After the burst, nothing for three seconds, then a clump that
        // the quiet seconds paid for.
        assert_eq!(throttled_after(&[900, 900, 0, 0, 0, 300, 0], 100), Some(2));
        // A clump sooner than paid for is still the burst.
        assert_eq!(throttled_after(&[900, 900, 0, 300, 0, 0, 0], 100), Some(4));
    }

    #[test]
    fn the_level_is_the_quota_of_every_source_together() {
        // 100 sources of 16 MiB an hour: about 455 KiB a second.
        assert_eq!(throttled_level(100, 16 * 1024), 466_033);
        assert_eq!(throttled_level(1, 3600), 1024);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let xs: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&xs, 50.0), 50.0);
        assert_eq!(percentile(&xs, 99.0), 99.0);
        assert_eq!(percentile(&xs, 100.0), 100.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        assert!(percentile(&[], 50.0).is_nan());
    }

    #[test]
    fn loss_counts_what_was_never_fetched() {
        let o = honest::Outcome {
            sent: 200,
            fetched: 197,
            ..honest::Outcome::default()
        };
        assert_eq!(o.lost(), 3);
        assert_eq!(loss_percent(&o), 1.5);
        assert_eq!(loss_percent(&honest::Outcome::default()), 0.0);
    }
}
