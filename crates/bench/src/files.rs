//! `safemeet-bench files`: a file between two `safemeet` daemons on
//! loopback (real processes, TCP, Noise, yamux, sealed chunks on disk),
//! against a raw libp2p stream copying the same bytes between two bare
//! swarms in the same run. Reported:
//!
//! - **throughput**: the file's size over the time from `send` returning
//!   (the file sealed and the message committed) until Bob's daemon holds
//!   it whole and checked; against the raw stream's (goal: at least 0.5
//!   times it). Sealing is reported apart.
//! - **extra RSS** of each daemon during the transfer, above its RSS
//!   just before (goal: at most 64 MiB each).
//! - **resume**: Bob's daemon killed (SIGKILL) once it holds half the
//!   file, then started again: the time from the restart until the
//!   transfer moves again, and until it is whole; with how many chunks
//!   Alice served in all (a transfer started over would serve the whole
//!   file again).
//!
//! The `safemeet` binary is the one next to this one (build it first:
//! `cargo build --release -p safemeet-node`), or `--safemeet-bin PATH`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, StreamProtocol, noise, tcp, yamux};
use safemeet_api::files::FileTransfer;
use safemeet_api::{Client, Request, Response};
use serde_json::{Value, json};

use crate::chat::instant;
use crate::median;
use crate::web::{Daemon, cli, pair, round1, safemeet_bin, start};

const RAW_PROTOCOL: StreamProtocol = StreamProtocol::new("/safemeet-bench/copy/1");
const THROUGHPUT_GOAL: f64 = 0.5;
const EXTRA_RSS_GOAL_MIB: f64 = 64.0;
const DEADLINE: Duration = Duration::from_secs(300);
const MIB: f64 = 1024.0 * 1024.0;

/// What the run needs.
#[derive(Debug)]
pub(crate) struct Options {
    pub(crate) samples: usize,
    pub(crate) mib: usize,
    pub(crate) bin: Option<PathBuf>,
}

fn bytes(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The transfer of `event` as `socket`'s daemon lists it.
async fn transfer(client: &mut Client, event: &str) -> anyhow::Result<Option<FileTransfer>> {
    match client.request(&Request::Files {}).await? {
        Response::Files(all) => Ok(all.into_iter().find(|t| t.event_id.to_string() == event)),
        other => bail!("unexpected answer {other:?}"),
    }
}

async fn connect(socket: &Path) -> anyhow::Result<Client> {
    let deadline = instant() + Duration::from_secs(30);
    loop {
        match Client::connect(socket).await {
            Ok(c) => return Ok(c),
            Err(e) if instant() > deadline => return Err(e.into()),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Polls `daemon`'s transfer of `event` until `done` says so; samples both
/// daemons' RSS on the way (the highest of each is returned).
async fn wait_for(
    daemon: &Daemon,
    others: &[&Daemon],
    event: &str,
    done: impl Fn(&FileTransfer) -> bool,
) -> anyhow::Result<(Instant, FileTransfer, Vec<f64>)> {
    let mut client = connect(&daemon.socket()).await?;
    let mut peaks = vec![0.0f64; 1 + others.len()];
    let start = instant();
    for poll in 0u64.. {
        // The daemons' RSS every 50 ms: reading /proc costs CPU the
        // transfer shares on a small machine.
        if poll % 5 == 0 {
            for (i, d) in std::iter::once(daemon)
                .chain(others.iter().copied())
                .enumerate()
            {
                if let Some(r) = d.rss_mib() {
                    peaks[i] = peaks[i].max(r);
                }
            }
        }
        if let Some(t) = transfer(&mut client, event).await? {
            if t.state == "failed" {
                bail!("the transfer failed: {:?}", t.reason);
            }
            if done(&t) {
                return Ok((instant(), t, peaks));
            }
        }
        ensure!(start.elapsed() < DEADLINE, "the transfer did not finish");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bail!("unreachable: the poll loop ended")
}

struct Sample {
    seal_s: f64,
    transfer_s: f64,
    extra_rss: [f64; 2],
}

/// Alice sends the file to Bob once; the time and the daemons' RSS.
async fn sample(bin: &Path, alice: &Daemon, bob: &Daemon, file: &Path) -> anyhow::Result<Sample> {
    let idle = [alice.rss_mib().unwrap_or(0.0), bob.rss_mib().unwrap_or(0.0)];
    let started = instant();
    let sent = cli(
        bin,
        &alice.home,
        &["send", "bob", "--file", file.to_str().context("path")?],
    )?;
    let sealed = instant();
    let event = sent["event_id"].as_str().context("an event id")?.to_owned();
    let (done, _, peaks) = wait_for(bob, &[alice], &event, |t| t.state == "complete").await?;
    Ok(Sample {
        seal_s: (sealed - started).as_secs_f64(),
        transfer_s: (done - sealed).as_secs_f64(),
        // peaks: [bob, alice]
        extra_rss: [(peaks[1] - idle[0]).max(0.0), (peaks[0] - idle[1]).max(0.0)],
    })
}

#[derive(libp2p::swarm::NetworkBehaviour)]
struct Bare {
    stream: libp2p_stream::Behaviour,
}

fn bare_swarm() -> anyhow::Result<libp2p::Swarm<Bare>> {
    Ok(libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_behaviour(|_| Bare {
            stream: libp2p_stream::Behaviour::new(),
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build())
}

/// Copies `len` bytes in 64 KiB writes over one raw libp2p stream between
/// two bare swarms (TCP, Noise, yamux); the seconds it took.
async fn raw_copy(len: usize) -> anyhow::Result<f64> {
    let mut a = bare_swarm()?;
    let mut b = bare_swarm()?;
    b.listen_on("/ip4/127.0.0.1/tcp/0".parse::<Multiaddr>()?)?;
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = b.select_next_some().await {
            break address;
        }
    };
    let b_peer = *b.local_peer_id();
    let mut incoming = b
        .behaviour()
        .stream
        .new_control()
        .accept(RAW_PROTOCOL)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut control = a.behaviour().stream.new_control();
    a.dial(addr.with(libp2p::multiaddr::Protocol::P2p(b_peer)))?;
    let drive = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = a.select_next_some() => {}
                _ = b.select_next_some() => {}
            }
        }
    });
    let reader = tokio::spawn(async move {
        let (_, mut stream) = incoming.next().await.context("a stream")?;
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = 0usize;
        while got < len {
            let n = stream.read(&mut buf).await?;
            ensure!(n > 0, "the stream ended early");
            got += n;
        }
        anyhow::Ok(instant())
    });
    let data = bytes(len, 11);
    let mut stream = control
        .open_stream(b_peer, RAW_PROTOCOL)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let start = instant();
    for chunk in data.chunks(64 * 1024) {
        stream.write_all(chunk).await?;
    }
    stream.flush().await?;
    let end = tokio::time::timeout(DEADLINE, reader).await???;
    drive.abort();
    Ok((end - start).as_secs_f64())
}

/// Kills Bob once he holds half the file, starts him again, and times
/// the rest.
async fn resume(
    bin: &Path,
    alice: &Daemon,
    bob: Daemon,
    file: &Path,
    chunks: u64,
) -> anyhow::Result<(Value, Daemon)> {
    let sent = cli(
        bin,
        &alice.home,
        &["send", "bob", "--file", file.to_str().context("path")?],
    )?;
    let event = sent["event_id"].as_str().context("an event id")?.to_owned();
    let (_, at_kill, _) = wait_for(&bob, &[], &event, |t| t.done >= chunks / 2).await?;
    let home = bob.home.clone();
    let mut bob = bob;
    bob.child.kill()?;
    bob.child.wait()?;
    drop(bob);
    let restarted = instant();
    let bob = start(bin, &home, false)?;
    let kept = at_kill.done;
    let (moving, _, _) = wait_for(&bob, &[], &event, |t| {
        t.done > kept || t.state == "complete"
    })
    .await?;
    let (whole, _, _) = wait_for(&bob, &[], &event, |t| t.state == "complete").await?;
    let mut a = connect(&alice.socket()).await?;
    let served = transfer(&mut a, &event)
        .await?
        .map(|t| t.served)
        .unwrap_or(0);
    Ok((
        json!({
            "killed_at_chunk": kept,
            "chunks": chunks,
            "restart_to_moving_ms": round1((moving - restarted).as_secs_f64() * 1000.0),
            "restart_to_whole_ms": round1((whole - restarted).as_secs_f64() * 1000.0),
            "chunks_served_in_all": served,
            "started_over": served >= chunks + kept,
        }),
        bob,
    ))
}

pub(crate) fn run(options: Options) -> anyhow::Result<Value> {
    let bin = safemeet_bin(options.bin)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let len = options.mib * 1024 * 1024;
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("bench.bin");
        std::fs::write(&file, bytes(len, 7))?;
        let chunks = len.div_ceil(64 * 1024).max(1) as u64;
        let (alice, bob) = pair(&bin, dir.path(), false)?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut raw = Vec::new();
        let mut ours = Vec::new();
        let mut seal = Vec::new();
        let mut rss_alice = Vec::new();
        let mut rss_bob = Vec::new();
        for i in 0..options.samples {
            let r = raw_copy(len).await?;
            let s = sample(&bin, &alice, &bob, &file).await?;
            eprintln!(
                "sample {i}: raw {:.0} MiB/s, daemons {:.0} MiB/s (sealing {:.2} s), extra RSS alice {:.1} MiB bob {:.1} MiB",
                len as f64 / MIB / r,
                len as f64 / MIB / s.transfer_s,
                s.seal_s,
                s.extra_rss[0],
                s.extra_rss[1]
            );
            raw.push(len as f64 / MIB / r);
            ours.push(len as f64 / MIB / s.transfer_s);
            seal.push(s.seal_s);
            rss_alice.push(s.extra_rss[0]);
            rss_bob.push(s.extra_rss[1]);
        }
        let (resumed, bob) = resume(&bin, &alice, bob, &file, chunks).await?;
        drop((alice, bob));
        let ratio = median(ours.clone()) / median(raw.clone());
        let peak = |xs: &[f64]| xs.iter().copied().fold(0.0, f64::max);
        let worst_rss = peak(&rss_alice).max(peak(&rss_bob));
        let report = json!({
            "suite": "files",
            "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
            "samples": options.samples,
            "file_mib": options.mib,
            "throughput_mib_s": {
                "daemons_median": round1(median(ours)),
                "raw_stream_median": round1(median(raw)),
                "ratio": (ratio * 1000.0).round() / 1000.0,
                "goal": { "ratio_min": THROUGHPUT_GOAL, "goal_met": ratio >= THROUGHPUT_GOAL },
            },
            "sealing_s_median": (median(seal) * 1000.0).round() / 1000.0,
            "extra_rss_mib": {
                "sender_max": round1(peak(&rss_alice)),
                "receiver_max": round1(peak(&rss_bob)),
                "goal": { "max": EXTRA_RSS_GOAL_MIB, "goal_met": worst_rss <= EXTRA_RSS_GOAL_MIB },
            },
            "resume_after_kill_at_half": resumed,
        });
        eprintln!("{}", serde_json::to_string_pretty(&report)?);
        Ok(report)
    })
}
