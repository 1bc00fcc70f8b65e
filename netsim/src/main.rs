//! `safemeet-netsim run SCENARIO.toml --out DIR`: simulates a SafeMeet
//! network and writes its reports. Exit status 0 when every assertion
//! holds, 1 when one fails, 2 when the run could not be made.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use safemeet_netsim::Mode;
use safemeet_netsim::scenario::Scenario;

#[derive(Parser)]
#[command(about = "SafeMeet network simulator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs a scenario.
    Run {
        /// The scenario (TOML).
        scenario: PathBuf,
        /// Where the reports go.
        #[arg(long, default_value = "netsim-out")]
        out: PathBuf,
        /// Run the raw-gossipsub baseline only.
        #[arg(long, conflicts_with = "compare_baseline")]
        baseline: bool,
        /// Run the baseline first, then the production nodes, and report ratios.
        #[arg(long, conflicts_with = "compare_idle")]
        compare_baseline: bool,
        /// Run the scenario with its attackers idle first, then attacking,
        /// and report the attack run's ratios to the idle one.
        #[arg(long, conflicts_with = "baseline")]
        compare_idle: bool,
        /// Override the scenario's seed.
        #[arg(long)]
        seed: Option<u64>,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("netsim: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<bool> {
    let Command::Run {
        scenario,
        out,
        baseline,
        compare_baseline,
        compare_idle,
        seed,
    } = cli.command;
    let mut s = Scenario::load(&scenario)?;
    if let Some(seed) = seed {
        s.seed = seed;
    }
    let mode = match (baseline, compare_baseline, compare_idle) {
        (true, _, _) => Mode::Baseline,
        (_, true, _) => Mode::Compare,
        (_, _, true) => Mode::CompareIdle,
        _ => Mode::Engine,
    };
    let total = s.workload.duration_s + s.workload.drain_s;
    let bar = ProgressBar::new((total * 10.0) as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:40} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let tty = std::io::stderr().is_terminal();
    let last_phase = Mutex::new(String::new());
    let progress = |phase: &str, t: f64, delivered: f64| {
        bar.set_position((t * 10.0) as u64);
        bar.set_message(format!(
            "{phase} {t:.1}/{total:.0} s, {delivered:.0} delivered"
        ));
        if !tty
            && let Ok(mut last) = last_phase.lock()
            && *last != phase
        {
            eprintln!("netsim: {phase}");
            *last = phase.to_owned();
        }
    };
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    let report = runtime.block_on(safemeet_netsim::simulate(s, mode, &progress))?;
    bar.finish_and_clear();
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    report.write(&out)?;
    print!("{}", report.summary());
    println!("reports in {}", out.display());
    Ok(report.passed)
}
