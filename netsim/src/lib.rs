//! SafeMeet's network simulator.
//!
//! Runs hundreds of **production** nodes (`safemeet-engine` over
//! `safemeet-net`, with real Noise, yamux, gossipsub, Kademlia and
//! request-response) in one process, over a modelled transport that knows
//! both ends of every link: latency with seeded jitter, bandwidth, loss
//! (as retransmission delay: the stream is reliable), partitions
//! (blackhole, reset, heal), crashes, restarts and nodes going offline.
//! A TOML [scenario](scenario::Scenario) names the network, the rooms, the
//! workload, the faults and the assertions; the run writes a JSON report,
//! SVG plots and a text summary, and fails when an assertion fails.
//!
//! It is not a packet simulator and not deterministic to the microsecond:
//! libp2p's timers and randomness are its own. Everything the scenario
//! draws (topology, members, senders, victims, jitter, loss) follows the
//! seed, and assertions are statistical.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! let scenario = safemeet_netsim::scenario::Scenario::load("netsim/scenarios/smoke.toml".as_ref())?;
//! let report = safemeet_netsim::simulate(scenario, safemeet_netsim::Mode::Engine, &|_, _, _| {}).await?;
//! assert!(report.passed, "{}", report.summary());
//! # Ok(()) }
//! ```

pub mod attack;
pub mod baseline;
pub mod engine;
mod joins;
pub mod link;
pub mod plan;
mod plot;
pub mod record;
pub mod report;
pub mod run;
pub mod scenario;
mod summary;
pub mod transport;

use std::time::Duration;

use crate::report::{Figures, Report};
use crate::run::{Ctx, Progress};
use crate::scenario::Scenario;

/// How often host and network samples are taken.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// What to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The production nodes.
    Engine,
    /// Raw gossipsub and request-response only.
    Baseline,
    /// The baseline, then the production nodes; the report states ratios.
    Compare,
    /// The production nodes with the scenario's attackers idle, then
    /// attacking; the report states the attack run's ratios to the idle one.
    CompareIdle,
}

async fn one(
    scenario: &Scenario,
    baseline: bool,
    attackers_idle: bool,
    progress: Progress<'_>,
) -> anyhow::Result<(Figures, std::sync::Arc<Ctx>)> {
    let ctx = Ctx::with_attackers(scenario.clone(), attackers_idle);
    let sampler = ctx
        .rec
        .spawn_sampler(ctx.hub.clone(), ctx.plan.nodes, SAMPLE_EVERY);
    let phases = if baseline {
        let mut nodes = baseline::BaselineNodes::new(ctx.clone());
        run::drive(&ctx, &mut nodes, progress).await
    } else {
        let mut nodes = engine::EngineNodes::new(ctx.clone())?;
        run::drive(&ctx, &mut nodes, progress).await
    };
    sampler.abort();
    let phases = phases?;
    let mode = match (baseline, attackers_idle) {
        (true, _) => "baseline",
        (false, true) => "idle",
        (false, false) => "engine",
    };
    Ok((report::figures(mode, &ctx, phases), ctx))
}

/// Runs a scenario and returns its report (assertions checked).
pub async fn simulate(
    scenario: Scenario,
    mode: Mode,
    progress: Progress<'_>,
) -> anyhow::Result<Report> {
    match mode {
        Mode::Engine => {
            let (run, ctx) = one(&scenario, false, false, progress).await?;
            Ok(Report::new(&ctx, run, None))
        }
        Mode::Baseline => {
            let (run, ctx) = one(&scenario, true, false, progress).await?;
            Ok(Report::new(&ctx, run, None))
        }
        Mode::Compare => {
            let (base, _) = one(&scenario, true, false, progress).await?;
            let (run, ctx) = one(&scenario, false, false, progress).await?;
            Ok(Report::new(&ctx, run, Some(base)))
        }
        Mode::CompareIdle => {
            anyhow::ensure!(
                scenario.attack.count > 0,
                "--compare-idle needs attackers ([attack] count)"
            );
            let (idle, _) = one(&scenario, false, true, progress).await?;
            let (run, ctx) = one(&scenario, false, false, progress).await?;
            Ok(Report::with_idle(&ctx, run, idle))
        }
    }
}
