//! The text summary of a report (`summary.txt`, also printed).

use std::fmt::Write as _;

use crate::report::Report;

impl Report {
    /// The text summary.
    pub fn summary(&self) -> String {
        let mut t = String::new();
        let ms = |x: Option<f64>| x.map_or("-".to_owned(), |v| format!("{v:.1}"));
        let _ = writeln!(
            t,
            "scenario {} (seed {}, {} nodes)",
            self.scenario, self.seed, self.nodes
        );
        for f in std::iter::once(&self.run)
            .chain(self.baseline.as_ref())
            .chain(self.idle.as_ref())
        {
            let _ = writeln!(
                t,
                "  {:<8} delivery {:.2} % ({}/{}), latency p50 {} p95 {} p99 {} max {} ms, to-all p99 {} ms",
                f.mode,
                f.delivery_ratio * 100.0,
                f.delivered,
                f.expected,
                ms(f.latency.p50_ms),
                ms(f.latency.p95_ms),
                ms(f.latency.p99_ms),
                ms(f.latency.max_ms),
                ms(f.time_to_all.p99_ms),
            );
            let _ = writeln!(
                t,
                "           {} messages ({} send failures, {} planned sends skipped), dups/delivery {:.3}, bytes/node p50 {} KiB, amplification {}, connect {} s, mesh {} s, heal {:?} s, catch-up {:?} s, mailbox drain {} s",
                f.messages,
                f.send_failures,
                f.phases.sends_skipped,
                f.duplicates_per_delivery,
                f.bytes_per_node_p50 / 1024,
                f.amplification.map_or("-".into(), |a| format!("{a}×")),
                f.time_to_connect_s
                    .map_or("-".into(), |x| format!("{x:.1}")),
                f.time_to_mesh_s.map_or("-".into(), |x| format!("{x:.1}")),
                f.heal_time_s,
                f.catch_up_time_s,
                f.mailbox_drain_s.map_or("-".into(), |x| format!("{x:.2}")),
            );
            if !f.phases.warmup_complete {
                let _ = writeln!(
                    t,
                    "           warm-up incomplete after {:.0} s of set-up: {} pairs missing",
                    f.phases.setup_s, f.phases.warmup_missing,
                );
            }
            if !f.phases.leaves.is_empty() || !f.phases.joins.is_empty() {
                let _ = writeln!(
                    t,
                    "           membership: {} leaves, {} joins, join known to all in {:?} s, {} joins not known to all",
                    f.phases.leaves.len(),
                    f.phases.joins.len(),
                    f.join_time_s,
                    f.joins_unsettled,
                );
            }
            if f.relay_bytes > 0 {
                let _ = writeln!(
                    t,
                    "           relays: {} KiB on the wire, {} pairs waited for away nodes, {} messages stored at relay, envelopes held peak {} end {}, mailbox drain per return {:?} s",
                    f.relay_bytes / 1024,
                    f.waited,
                    f.stored_at_relay,
                    f.relay_peak_envelopes,
                    f.relay_envelopes_at_end,
                    f.mailbox_drain_per_return_s,
                );
            }
            crate::attack::report::summary(&mut t, f);
            let _ = writeln!(
                t,
                "           host: CPU {:.0} % of {} cores, lag p99 {} ms, peak RSS {} MiB ({} connections at most, {:.1} ends per node), wall {} s, {}",
                f.host.cpu_share * 100.0,
                f.host.cores,
                f.host.lag_p99_ms,
                f.host.peak_rss_mib,
                f.connections_peak,
                2.0 * f.connections_peak as f64 / (self.nodes + self.relays).max(1) as f64,
                f.host.wall_s,
                if f.host.valid {
                    "valid"
                } else {
                    "INVALID (CPU-bound)"
                },
            );
        }
        for (name, v) in [("baseline", &self.vs_baseline), ("idle", &self.vs_idle)] {
            let Some(v) = v else { continue };
            let mut keys: Vec<_> = v.iter().collect();
            keys.sort_by(|a, b| a.0.cmp(b.0));
            let parts: Vec<String> = keys.iter().map(|(k, r)| format!("{k} {r}×")).collect();
            let _ = writeln!(t, "  vs {name}: {}", parts.join(", "));
        }
        if let Some(g) = self.attack_rss_growth_mib {
            let _ = writeln!(
                t,
                "  the attack added {g} MiB to the process's peak resident memory over the idle run"
            );
        }
        if self.passed {
            let _ = writeln!(t, "PASS");
        } else {
            for f in &self.failures {
                let _ = writeln!(t, "FAIL: {f}");
            }
        }
        t
    }
}
