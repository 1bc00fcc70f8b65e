//! `safemeet-bench`: named benchmark suites for SafeMeet.
//!
//! `cargo run --release -p safemeet-bench -- SUITE` runs one suite, prints a
//! readable table on stderr as it goes, and ends with one JSON line on stdout
//! holding the medians and the ratios against the baseline measured in the
//! same run. Suites:
//!
//! - `store`: encrypted put/get/batch of 300-byte values through
//!   `EncryptedStore<SledStore>` against raw sled on the same machine.
//! - `crypto`: room messages of 200 B and 4 KiB through the crypto machine
//!   (over memory and over sled stores) against raw vodozemac Megolm, and
//!   Olm sessions established per second through the machine against raw
//!   vodozemac Olm.
//! - `chat`: two engines over TCP on loopback: paced DM latency against a
//!   bare request-response round trip, and room throughput against the
//!   crypto-bound rate and raw gossipsub.
//! - `relay`: a relay node and a client over TCP on loopback: deposits and
//!   fetches per second, draining a mailbox of 10 000, and memory with
//!   many envelopes stored. With `--flood`, instead: a relay process
//!   against `--sybils` attackers for `--flood-secs` while an honest
//!   device deposits and fetches (honest loss and latency against a run
//!   without the flood, the relay's peak memory, the time until the flood
//!   is throttled).
//! - `files`: a file of `--file-mib` MiB (default 100) between two daemons
//!   on loopback against a raw libp2p stream in the same run, the extra
//!   RSS of both daemons, and the time to resume after the receiver is
//!   killed half way.
//! - `calls`: Opus encode time per 20 ms frame over `--ops` frames
//!   (default 3000), SFrame sealing and opening against raw AES-128-GCM,
//!   and an 8-way meeting in one process for `--meeting-secs` (default 60):
//!   CPU in percent of one core, and the p95 capture-to-play-out time.
//! - `link`: linking a new device to an account with `--ops` messages of
//!   history (default 10 000) over TCP on loopback, into an encrypted sled
//!   store: the whole link's time and the bytes sent (goal: 5 s for 10 000).

mod bare;
mod calls;
mod chat;
mod crypto;
mod files;
mod link;
mod mailbox_peer;
mod relay;
mod relay_drain;
mod relay_flood;
mod store;
mod web;

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

/// Run a SafeMeet benchmark suite.
#[derive(Debug, Parser)]
#[command(name = "safemeet-bench")]
struct Args {
    /// Which suite to run.
    suite: Suite,
    /// Measured samples per operation (the median is reported).
    #[arg(long, default_value_t = 9, value_parser = clap::value_parser!(u32).range(1..=1000))]
    samples: u32,
    /// Operations per sample: records for `store` (default 20 000),
    /// messages per size for `crypto` (default 500), DMs for `chat`
    /// (default 1000; five times as many room messages), deposits for
    /// `relay` (default 20 000; fifty times as many stored for the memory
    /// reading).
    #[arg(long, value_parser = clap::value_parser!(u32).range(100..=10_000_000))]
    ops: Option<u32>,
    /// `chat` only: where the two nodes keep their state. `memory` persists
    /// nothing and shows the pipeline without storage (goals do not apply).
    #[arg(long, value_enum, default_value_t = chat::StoreKind::Sled)]
    store: chat::StoreKind,
    /// `relay` only: the flood mode (see `--flood-secs`, `--sybils`)
    /// instead of the throughput suite; `--samples` and `--ops` do not
    /// apply. Ends with one JSON line like the suites.
    #[arg(long)]
    flood: bool,
    /// `--flood`: how long the flood lasts, and the honest baseline before
    /// it, in seconds.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    flood_secs: u64,
    /// `--flood`: attackers, each with its own peer id and connection.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
    sybils: u32,
    /// `--flood`: distinct source addresses the attackers come from
    /// (default: one each, each in a /24 of its own). Fewer puts several
    /// behind one address, where the relay's per-address caps apply.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    sybil_addresses: Option<u32>,
    /// `--flood`: run this `safemeet` binary as the relay (`safemeet relay`
    /// with its defaults) instead of this binary as a relay process.
    #[arg(long, value_name = "PATH")]
    relay_bin: Option<PathBuf>,
    /// `web` only: browser-style clients following the event stream.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=500))]
    clients: u32,
    /// `calls` only: how long the 8-way meeting runs, in seconds.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    meeting_secs: u64,
    /// `files` only: the file's size in MiB.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1024))]
    file_mib: u32,
    /// `web` and `files`: the `safemeet` binary to run (default: the one next to
    /// this benchmark).
    #[arg(long, value_name = "PATH")]
    safemeet_bin: Option<PathBuf>,
    /// Internal: serve a relay with a database under DIR until standard
    /// input closes (the flood mode's relay process).
    #[arg(long, value_name = "DIR", hide = true)]
    serve_relay: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Suite {
    /// Encrypted store vs raw sled.
    Store,
    /// Crypto machine vs raw vodozemac.
    Crypto,
    /// Two nodes chatting vs bare libp2p.
    Chat,
    /// A relay's mailboxes over the network.
    Relay,
    /// Linking a device with a long history.
    Link,
    /// The web app's event stream under load, against the socket API.
    Web,
    /// A file between two daemons, against a raw libp2p stream.
    Files,
    /// Call media: Opus encoding, SFrame against raw AES-GCM, and an
    /// 8-way meeting in one process.
    Calls,
}

impl Suite {
    /// Operations per sample when `--ops` is not given. A machine message
    /// with a flushed sled commit costs far more than a store put, so the
    /// crypto suite takes fewer to stay well under a minute.
    fn default_ops(self) -> u32 {
        match self {
            Suite::Store => 20_000,
            Suite::Crypto => 500,
            Suite::Chat => 1000,
            Suite::Relay => 20_000,
            Suite::Link => 10_000,
            Suite::Web => 1000,
            Suite::Files => 1,
            Suite::Calls => 3000,
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(dir) = args.serve_relay {
        return relay_flood::serve(dir);
    }
    if cfg!(debug_assertions) {
        eprintln!(
            "warning: a debug build; numbers mean nothing. Use `cargo run --release -p safemeet-bench`."
        );
    }
    let samples = args.samples as usize;
    let ops = args.ops.unwrap_or(args.suite.default_ops()) as usize;
    anyhow::ensure!(
        !args.flood || matches!(args.suite, Suite::Relay),
        "--flood is a mode of the relay suite"
    );
    let report = match args.suite {
        Suite::Store => store::run(samples, ops)?,
        Suite::Crypto => crypto::run(samples, ops)?,
        Suite::Chat => chat::run(samples, args.ops.map(|n| n as usize), args.store)?,
        Suite::Relay if args.flood => relay_flood::run(relay_flood::Options {
            secs: args.flood_secs,
            sybils: args.sybils as usize,
            sybil_addresses: args.sybil_addresses.unwrap_or(args.sybils) as usize,
            relay_bin: args.relay_bin,
        })?,
        Suite::Relay => relay::run(samples, ops)?,
        Suite::Link => link::run(samples, ops)?,
        Suite::Files => files::run(files::Options {
            samples,
            mib: args.file_mib as usize,
            bin: args.safemeet_bin,
        })?,
        Suite::Calls => calls::run(calls::Options {
            samples,
            frames: ops,
            meeting_secs: args.meeting_secs,
        })?,
        Suite::Web => web::run(web::Options {
            samples,
            messages: ops,
            clients: args.clients as usize,
            bin: args.safemeet_bin,
        })?,
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// Median of a list of samples.
pub(crate) fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// CPU time (user + system) this process has used so far, from
/// `/proc/self/stat`; `None` where that is not available.
pub(crate) fn process_cpu() -> Option<std::time::Duration> {
    cpu_of("self")
}

/// CPU time (user + system) process `pid` (or `self`) has used so far,
/// from `/proc/PID/stat`; `None` where that is not available.
pub(crate) fn cpu_of(pid: &str) -> Option<std::time::Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at `)`.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, in ticks.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // Linux reports these in USER_HZ, which is 100 on every architecture.
    Some(std::time::Duration::from_millis((utime + stime) * 10))
}
