//! The attack's part of a report: its assertions and its summary lines.

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::report::Figures;
use crate::scenario::Assertions;

/// Checks the attack's assertions on the attack run `run` (`vs_idle`: its
/// ratios to the idle run; `growth`: what it added to the process's peak
/// resident memory over the idle run, MiB).
pub fn check(
    a: &Assertions,
    run: &Figures,
    vs_idle: Option<&HashMap<String, f64>>,
    growth: Option<f64>,
    failures: &mut Vec<String>,
) {
    if let Some(max) = a.p99_vs_idle_max {
        match vs_idle.and_then(|m| m.get("p99")) {
            Some(r) if *r <= max => {}
            Some(r) => failures.push(format!(
                "p99 is {r}× the run with the attackers idle, above {max}×"
            )),
            None => failures.push("p99 vs idle: no idle run (use --compare-idle)".into()),
        }
    }
    if let Some(max) = a.attack_rss_growth_mib_max {
        match growth {
            Some(g) if g <= max => {}
            Some(g) => failures.push(format!(
                "the attack added {g} MiB of resident memory, above {max} MiB"
            )),
            None => failures.push("attack memory: no idle run (use --compare-idle)".into()),
        }
    }
    if let Some(max) = a.relay_stored_mib_max {
        let mib = run.relay_peak_bytes as f64 / (1024.0 * 1024.0);
        if mib > max {
            failures.push(format!("the relays held {mib:.1} MiB, above {max} MiB"));
        }
    }
}

/// The attack's lines of a run's summary (none without attackers).
pub fn summary(t: &mut String, f: &Figures) {
    let Some(x) = &f.attack else {
        return;
    };
    let _ = writeln!(
        t,
        "           attack{}: {} attackers, connections {} opened {} closed {} dials failed; {} topics announced, gossip refused on {} connections",
        if x.idle { " (idle)" } else { "" },
        x.attackers,
        x.connections_opened,
        x.connections_closed,
        x.dials_failed,
        x.topics_announced,
        x.gossip_refused,
    );
    let _ = writeln!(
        t,
        "           raw gossip frames {} sent ({} GRAFTs): {} accepted, {} refused, {} failed; {} resubscriptions",
        x.gossip_frames_sent,
        x.grafts_sent,
        x.gossip_frames_accepted,
        x.gossip_frames_refused,
        x.gossip_frames_failed,
        x.resubscriptions,
    );
    let _ = writeln!(
        t,
        "           junk deliveries {} sent: {} stored, {} refused, {} later, {} dropped unanswered, {} failed",
        x.deliveries_sent,
        x.deliveries_acked,
        x.deliveries_refused,
        x.deliveries_later,
        x.deliveries_dropped,
        x.deliveries_failed,
    );
    let _ = writeln!(
        t,
        "           mailbox requests {} sent: {} deposits stored, {} refused, {} rate-limited, {} other refusals, {} nonces, {} unanswered; relays held at most {} KiB and {} connections",
        x.mailbox_sent,
        x.deposits_stored,
        x.deposits_refused,
        x.mailbox_rate_limited,
        x.mailbox_refused,
        x.nonces,
        x.mailbox_failed,
        f.relay_peak_bytes / 1024,
        f.relay_peak_connections,
    );
}
