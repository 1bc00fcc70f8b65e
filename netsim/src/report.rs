//! Turning a run's record into figures, checking the scenario's
//! assertions, and writing the reports (JSON, text summary, SVG plots).

use std::collections::HashMap;
use std::path::Path;

use serde::Serialize;

use crate::record::{Sample, peak_rss};
use crate::run::{Ctx, Phases};
use crate::transport::NodeIdx;

/// Above this share of the host's cores in use, a run's latencies measure
/// the CPU queue more than the network: the run is marked invalid. The
/// research prototype saw p50 quadruple at 91 % of the cores.
pub const MAX_CPU_SHARE: f64 = 0.7;
/// Above this 99th percentile of scheduler lag (how late a 100 ms tick
/// fires), tasks wait for a core long enough to distort latencies.
pub const MAX_LAG_P99_MS: f64 = 25.0;

/// Latency figures, ms.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    /// Samples.
    pub count: usize,
    /// Median.
    pub p50_ms: Option<f64>,
    /// 95th percentile.
    pub p95_ms: Option<f64>,
    /// 99th percentile.
    pub p99_ms: Option<f64>,
    /// Largest.
    pub max_ms: Option<f64>,
}

impl Latency {
    fn of(mut xs: Vec<f64>) -> Self {
        xs.sort_by(f64::total_cmp);
        let pick = |p: f64| percentile(&xs, p);
        Self {
            count: xs.len(),
            p50_ms: pick(50.0),
            p95_ms: pick(95.0),
            p99_ms: pick(99.0),
            max_ms: xs.last().copied().map(round),
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted.get(rank.min(sorted.len() - 1)).copied().map(round)
}

fn round(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Host figures over the workload and drain.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Host {
    /// Cores available.
    pub cores: usize,
    /// CPU used, as a share of all cores.
    pub cpu_share: f64,
    /// Peak resident memory, MiB.
    pub peak_rss_mib: f64,
    /// 99th percentile of scheduler lag, ms.
    pub lag_p99_ms: f64,
    /// Wall time of the whole run, s.
    pub wall_s: f64,
    /// Neither CPU nor scheduler lag above their limits.
    pub valid: bool,
}

/// Every figure of one run.
#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    /// "engine" or "baseline".
    pub mode: String,
    /// Measured messages sent.
    pub messages: usize,
    /// Send calls that failed.
    pub send_failures: usize,
    /// (message, recipient) pairs expected (recipients up at the end).
    pub expected: usize,
    /// Of those, delivered.
    pub delivered: usize,
    /// delivered / expected.
    pub delivery_ratio: f64,
    /// Send to first receipt, every delivered pair.
    pub latency: Latency,
    /// Room messages only.
    pub latency_room: Latency,
    /// DMs only.
    pub latency_dm: Latency,
    /// Per room message that reached every recipient: time to the last.
    pub time_to_all: Latency,
    /// Receipts beyond the first, per delivered pair (as the application
    /// sees them: the engine stores each event once, so 0 is expected).
    pub duplicates_per_delivery: f64,
    /// Bytes each node sent plus received on the wire over the run
    /// (Noise, yamux and every protocol included), sorted.
    pub bytes_per_node: Vec<u64>,
    /// Median of `bytes_per_node`.
    pub bytes_per_node_p50: u64,
    /// Wire bytes sent during workload and drain / payload bytes delivered.
    pub amplification: Option<f64>,
    /// Most modelled connections open at once (relays' included), from
    /// the 100 ms samples.
    pub connections_peak: usize,
    /// Seconds from start until every planned link was open.
    pub time_to_connect_s: Option<f64>,
    /// Seconds from start until every room member's gossip mesh held
    /// `min(mesh_n_low, members - 1)` peers.
    pub time_to_mesh_s: Option<f64>,
    /// Per heal: seconds until the last message sent before it arrived
    /// (0 when nothing was held back).
    pub heal_time_s: Vec<f64>,
    /// Per restart or return online: the same, from that moment.
    pub catch_up_time_s: Vec<f64>,
    /// With relays: per return of a node that was away (offline or
    /// crashed), seconds from its return until it held every message sent
    /// to it while it was away (returns with nothing sent to the node
    /// while away are left out); sorted.
    /// A return whose messages did not all arrive is left out (the
    /// delivery ratio says so).
    pub mailbox_drain_per_return_s: Vec<f64>,
    /// The worst of `mailbox_drain_per_return_s` (None without relays or
    /// without returns).
    pub mailbox_drain_s: Option<f64>,
    /// "Stored at relay" entries in the senders' logs (messages a relay
    /// kept for an unreachable recipient before any recipient had them).
    pub stored_at_relay: u64,
    /// Bytes the relays sent plus received on the wire over the run.
    pub relay_bytes: u64,
    /// Most envelopes the relays held at once (sampled every 100 ms).
    pub relay_peak_envelopes: u64,
    /// Most bytes the relays' stores held at once (as on disk).
    pub relay_peak_bytes: u64,
    /// Most connections the relays held at once (all together).
    pub relay_peak_connections: usize,
    /// What the attackers did (with `[attack]`).
    pub attack: Option<crate::attack::AttackFigures>,
    /// Envelopes the relays still held at the end (mail not drained),
    /// given one mailbox poll and 5 s after the measured run, with the
    /// nodes still running, for the last drains.
    pub relay_envelopes_at_end: u64,
    /// (message, node) pairs sent to a node while it was away.
    pub waited: usize,
    /// Membership churn: per member invited back into a room, seconds
    /// until every member of the room (itself included) knew it was back;
    /// sorted.
    pub join_time_s: Vec<f64>,
    /// Members invited back that some member still did not know of at
    /// the end.
    pub joins_unsettled: usize,
    /// The phases of the run.
    pub phases: Phases,
    /// Host figures.
    pub host: Host,
    /// (seconds since the workload started, share of expected pairs
    /// delivered so far).
    pub delivery_over_time: Vec<(f64, f64)>,
    /// Sorted latencies (ms), for the CDF plot; not in the JSON.
    #[serde(skip)]
    pub latencies: Vec<f64>,
}

/// Computes the figures of a finished run.
pub fn figures(mode: &str, ctx: &Ctx, phases: Phases) -> Figures {
    let o = ctx.rec.lock();
    let down: Vec<NodeIdx> = phases.down_at_end.clone();
    let alive = |n: &NodeIdx| !down.contains(n);
    let (mut all, mut room, mut dm, mut to_all) = (vec![], vec![], vec![], vec![]);
    let (mut expected, mut delivered, mut dups, mut failures, mut messages) = (0, 0, 0u64, 0, 0);
    let mut payload = 0u64;
    let mut arrivals = Vec::new();
    for (n, s) in o.sent.iter().filter(|(_, s)| !s.warmup) {
        messages += 1;
        failures += usize::from(s.failed);
        let mut last = Some(0.0f64);
        for to in s.to.iter().filter(|t| alive(t)) {
            expected += 1;
            match o.receipts.get(&(*n, *to)) {
                Some((at, count)) => {
                    delivered += 1;
                    dups += u64::from(count.saturating_sub(1));
                    payload += s.bytes as u64;
                    let ms = at.saturating_sub(s.at).as_secs_f64() * 1000.0;
                    all.push(ms);
                    if s.dm {
                        dm.push(ms)
                    } else {
                        room.push(ms)
                    }
                    last = last.map(|l| l.max(ms));
                    arrivals.push(at.as_secs_f64());
                }
                None => last = None,
            }
        }
        if let (false, Some(l)) = (s.dm, last) {
            to_all.push(l);
        }
    }
    arrivals.sort_by(f64::total_cmp);
    let start = phases.workload_start_s;
    let delivery_over_time = o
        .samples
        .iter()
        .filter(|x| x.t_s >= start && x.t_s <= phases.end_s)
        .map(|x| {
            let got = arrivals.partition_point(|a| *a <= x.t_s);
            (
                round(x.t_s - start),
                if expected == 0 {
                    1.0
                } else {
                    got as f64 / expected as f64
                },
            )
        })
        .collect();

    let mut bytes_per_node: Vec<u64> = (0..ctx.plan.nodes as NodeIdx)
        .filter_map(|i| ctx.hub.counters(i))
        .map(|c| {
            c.sent.load(std::sync::atomic::Ordering::Relaxed)
                + c.received.load(std::sync::atomic::Ordering::Relaxed)
        })
        .collect();
    bytes_per_node.sort_unstable();
    // The workload and drain only: not set-up, not the final shutdown.
    let window: Vec<&Sample> = o
        .samples
        .iter()
        .filter(|x| x.t_s >= start && x.t_s <= phases.end_s)
        .collect();
    let wire = match (window.first(), window.last()) {
        (Some(a), Some(b)) => b.wire_bytes.saturating_sub(a.wire_bytes),
        _ => 0,
    };
    let amplification = (payload > 0).then(|| round(wire as f64 / payload as f64));

    let held_back = |from: f64| -> f64 {
        let mut worst: f64 = 0.0;
        for (n, s) in o.sent.iter().filter(|(_, s)| !s.warmup) {
            if s.at.as_secs_f64() >= from {
                continue;
            }
            for to in s.to.iter().filter(|t| alive(t)) {
                if let Some((at, _)) = o.receipts.get(&(*n, *to)) {
                    worst = worst.max(at.as_secs_f64() - from);
                }
            }
        }
        round(worst)
    };
    // Mailbox drain: a node back from being away holds every message that
    // was sent to it while away (those were left on its relays).
    let mut mailbox_drain_per_return_s: Vec<f64> = Vec::new();
    let mut waited = 0;
    if ctx.scenario.nodes.relays > 0 {
        for (node, went, back) in &phases.away {
            let mut worst: f64 = 0.0;
            let mut complete = true;
            let mut any = false;
            for (n, s) in o.sent.iter().filter(|(_, s)| !s.warmup) {
                let at = s.at.as_secs_f64();
                if at < *went || at >= *back || !s.to.contains(node) {
                    continue;
                }
                any = true;
                waited += 1;
                match o.receipts.get(&(*n, *node)) {
                    Some((r, _)) => worst = worst.max(r.as_secs_f64() - back),
                    None => complete = false,
                }
            }
            if complete && any {
                mailbox_drain_per_return_s.push(round(worst));
            }
        }
    }
    mailbox_drain_per_return_s.sort_by(f64::total_cmp);
    let mailbox_drain_s = mailbox_drain_per_return_s.last().copied();
    let relay_bytes = (ctx.plan.nodes..ctx.plan.nodes + ctx.scenario.nodes.relays)
        .filter_map(|i| ctx.hub.counters(i as NodeIdx))
        .map(|c| {
            c.sent.load(std::sync::atomic::Ordering::Relaxed)
                + c.received.load(std::sync::atomic::Ordering::Relaxed)
        })
        .sum();
    let heal_time_s = phases.heals_s.iter().map(|h| held_back(*h)).collect();
    let (mut join_time_s, mut joins_unsettled) = (Vec::new(), 0);
    for wait in crate::joins::join_waits(&o, ctx, &phases, &alive) {
        match wait {
            Some(w) => join_time_s.push(round(w)),
            None => joins_unsettled += 1,
        }
    }
    join_time_s.sort_by(f64::total_cmp);
    let catch_up_time_s = phases.returns_s.iter().map(|h| held_back(*h)).collect();

    let host = host(&window, &phases);
    let mut latencies = all.clone();
    latencies.sort_by(f64::total_cmp);
    Figures {
        mode: mode.to_owned(),
        messages,
        send_failures: failures,
        expected,
        delivered,
        delivery_ratio: if expected == 0 {
            1.0
        } else {
            delivered as f64 / expected as f64
        },
        latency: Latency::of(all),
        latency_room: Latency::of(room),
        latency_dm: Latency::of(dm),
        time_to_all: Latency::of(to_all),
        duplicates_per_delivery: if delivered == 0 {
            0.0
        } else {
            dups as f64 / delivered as f64
        },
        bytes_per_node_p50: bytes_per_node
            .get(bytes_per_node.len() / 2)
            .copied()
            .unwrap_or(0),
        bytes_per_node,
        amplification,
        connections_peak: o.samples.iter().map(|x| x.connections).max().unwrap_or(0),
        time_to_connect_s: phases.time_to_connect_s,
        time_to_mesh_s: phases.time_to_mesh_s,
        heal_time_s,
        catch_up_time_s,
        mailbox_drain_per_return_s,
        mailbox_drain_s,
        stored_at_relay: o.stored_at_relay,
        relay_bytes,
        relay_peak_envelopes: o.relay_peak_envelopes,
        relay_peak_bytes: o.relay_peak_bytes,
        relay_peak_connections: o.relay_peak_connections,
        attack: o.attack.clone(),
        relay_envelopes_at_end: o.relay_envelopes,
        waited,
        join_time_s,
        joins_unsettled,
        phases,
        host,
        delivery_over_time,
        latencies,
    }
}

/// Ratios of `run`'s figures to `other`'s.
fn ratios(run: &Figures, other: &Figures) -> HashMap<String, f64> {
    let mut m = HashMap::new();
    let mut ratio = |k: &str, a: Option<f64>, b: Option<f64>| {
        if let (Some(a), Some(b)) = (a, b)
            && b > 0.0
        {
            m.insert(k.to_owned(), (a / b * 1000.0).round() / 1000.0);
        }
    };
    ratio("p50", run.latency.p50_ms, other.latency.p50_ms);
    ratio("p95", run.latency.p95_ms, other.latency.p95_ms);
    ratio("p99", run.latency.p99_ms, other.latency.p99_ms);
    ratio(
        "delivery",
        Some(run.delivery_ratio),
        Some(other.delivery_ratio),
    );
    ratio("amplification", run.amplification, other.amplification);
    ratio(
        "bytes_per_node_p50",
        Some(run.bytes_per_node_p50 as f64),
        Some(other.bytes_per_node_p50 as f64),
    );
    m
}

fn host(window: &[&Sample], phases: &Phases) -> Host {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (cpu_share, lag_p99_ms) = match (window.first(), window.last()) {
        (Some(a), Some(b)) if b.t_s > a.t_s => {
            let mut lags: Vec<f64> = window.iter().map(|x| x.lag_ms).collect();
            lags.sort_by(f64::total_cmp);
            (
                (b.cpu_s - a.cpu_s) / ((b.t_s - a.t_s) * cores as f64),
                percentile(&lags, 99.0).unwrap_or(0.0),
            )
        }
        _ => (0.0, 0.0),
    };
    Host {
        cores,
        cpu_share: (cpu_share * 1000.0).round() / 1000.0,
        peak_rss_mib: round(peak_rss() as f64 / (1024.0 * 1024.0)),
        lag_p99_ms,
        wall_s: round(phases.end_s),
        valid: cpu_share <= MAX_CPU_SHARE && lag_p99_ms <= MAX_LAG_P99_MS,
    }
}

/// The report of a run: the scenario, the figures, the baseline's and the
/// verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// Seed.
    pub seed: u64,
    /// Nodes.
    pub nodes: usize,
    /// Relays, on top of the nodes.
    pub relays: usize,
    /// The run under test (engine, or baseline alone with `--baseline`).
    pub run: Figures,
    /// The raw-gossipsub baseline, when it ran too.
    pub baseline: Option<Figures>,
    /// Ratios run / baseline.
    pub vs_baseline: Option<HashMap<String, f64>>,
    /// The same scenario with its attackers idle, when it ran too.
    pub idle: Option<Figures>,
    /// Ratios attack run / idle run.
    pub vs_idle: Option<HashMap<String, f64>>,
    /// What the attack added to the process's peak resident memory over
    /// the idle run, MiB (with the idle run).
    pub attack_rss_growth_mib: Option<f64>,
    /// Failed assertions; empty when the run passed.
    pub failures: Vec<String>,
    /// Passed every assertion.
    pub passed: bool,
}

impl Report {
    /// Builds the report and checks the scenario's assertions.
    pub fn new(ctx: &Ctx, run: Figures, baseline: Option<Figures>) -> Self {
        Self::build(ctx, run, baseline, None)
    }

    /// The report of an attack run compared with the same run with its
    /// attackers idle.
    pub fn with_idle(ctx: &Ctx, run: Figures, idle: Figures) -> Self {
        Self::build(ctx, run, None, Some(idle))
    }

    fn build(ctx: &Ctx, run: Figures, baseline: Option<Figures>, idle: Option<Figures>) -> Self {
        let s = &ctx.scenario;
        let vs_baseline = baseline.as_ref().map(|b| ratios(&run, b));
        let vs_idle = idle.as_ref().map(|i| ratios(&run, i));
        let attack_rss_growth_mib = idle
            .as_ref()
            .map(|i| round((run.host.peak_rss_mib - i.host.peak_rss_mib).max(0.0)));
        let mut failures = Vec::new();
        let a = &s.assert;
        if let Some(min) = a.delivery_min
            && run.delivery_ratio < min
        {
            failures.push(format!(
                "delivery {:.4} below {min} ({} of {} pairs)",
                run.delivery_ratio, run.delivered, run.expected
            ));
        }
        let mut over = |what: &str, got: Option<f64>, max: Option<f64>| {
            if let Some(max) = max {
                match got {
                    Some(v) if v <= max => {}
                    Some(v) => failures.push(format!("{what} {v} ms above {max} ms")),
                    None => failures.push(format!("{what}: nothing delivered")),
                }
            }
        };
        over("p50", run.latency.p50_ms, a.p50_ms_max);
        over("p95", run.latency.p95_ms, a.p95_ms_max);
        over("p99", run.latency.p99_ms, a.p99_ms_max);
        if let Some(max) = a.p99_vs_baseline_max {
            match vs_baseline.as_ref().and_then(|m| m.get("p99")) {
                Some(r) if *r <= max => {}
                Some(r) => failures.push(format!("p99 is {r}× the baseline's, above {max}×")),
                None => failures
                    .push("p99 vs baseline: no baseline run (use --compare-baseline)".into()),
            }
        }
        if let Some(max) = a.peak_rss_mib_max
            && run.host.peak_rss_mib > max
        {
            failures.push(format!(
                "peak RSS {} MiB above {max} MiB",
                run.host.peak_rss_mib
            ));
        }
        crate::attack::report::check(
            a,
            &run,
            vs_idle.as_ref(),
            attack_rss_growth_mib,
            &mut failures,
        );
        if a.valid.unwrap_or(true) && !run.host.valid {
            failures.push(format!(
                "invalid run: CPU {:.0} % of {} cores (limit {:.0} %), scheduler lag p99 {} ms (limit {MAX_LAG_P99_MS} ms)",
                run.host.cpu_share * 100.0,
                run.host.cores,
                MAX_CPU_SHARE * 100.0,
                run.host.lag_p99_ms
            ));
        }
        Self {
            scenario: s.name.clone(),
            seed: s.seed,
            nodes: s.nodes.count,
            relays: s.nodes.relays,
            passed: failures.is_empty(),
            run,
            baseline,
            vs_baseline,
            idle,
            vs_idle,
            attack_rss_growth_mib,
            failures,
        }
    }

    /// Writes `report.json`, `summary.txt` and the SVG plots into `dir`.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("report.json"), serde_json::to_string_pretty(self)?)?;
        std::fs::write(dir.join("summary.txt"), self.summary())?;
        crate::plot::write_all(self, dir)?;
        Ok(())
    }
}
