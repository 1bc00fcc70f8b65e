//! The relay under flood runs in a process of its own, so that its peak
//! memory (`VmHWM`) is the relay's alone, not the attackers' nor the
//! honest client's.
//!
//! By default that process is this benchmark's own binary started again
//! with a hidden `--serve-relay DIR`: a relay node on sled under `DIR`
//! with the defaults of `safemeet relay` (limits, rates, connection caps),
//! listening on 127.0.0.1 with its metrics on. With `--relay-bin`, it is
//! the `safemeet` binary itself (`safemeet relay --listen … --metrics …`).
//! Either way the process prints one JSON line with its peer id, its
//! addresses and its metrics address, as `safemeet --json relay` does.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};
use safemeet_relay::node::{MetricsConfig, RelayConfig, RelayEvent};
use safemeet_relay::{Limits, MailboxService, MailboxStore};
use safemeet_store_sled::SledStore;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long the relay process gets to print its addresses, and a metrics
/// request to be answered: both are immediate on a local machine.
const WAIT: Duration = Duration::from_secs(20);
/// Largest `/metrics` answer read (the relay's and libp2p's counters are a
/// few KiB).
const MAX_METRICS: u64 = 1024 * 1024;

/// A relay process, killed when dropped.
pub(crate) struct RelayProcess {
    child: Child,
    /// Held open: the bench's own relay stops when it closes.
    stdin: Option<ChildStdin>,
    /// Its peer id.
    pub(crate) peer: PeerId,
    /// Where it listens, with `/p2p/<peer id>`.
    pub(crate) addr: Multiaddr,
    metrics: SocketAddr,
    /// What runs: for the report.
    pub(crate) what: String,
    /// This binary as a relay (else `safemeet relay`).
    own: bool,
    _dir: tempfile::TempDir,
}

/// Resident memory of a process, in KiB.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Memory {
    /// Resident now (`VmRSS`).
    pub(crate) rss_kib: u64,
    /// The most it has been resident (`VmHWM`).
    pub(crate) peak_kib: u64,
}

impl RelayProcess {
    /// Starts a relay process: `relay_bin` (a `safemeet` binary) or this
    /// binary as a relay; its database in a fresh temporary directory.
    pub(crate) fn start(relay_bin: Option<&Path>) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let home = dir
            .path()
            .to_str()
            .context("a temporary path that is not UTF-8")?;
        let (mut command, what) = match relay_bin {
            Some(bin) => {
                let mut c = Command::new(bin);
                c.args(["--home", home, "--json", "relay"])
                    .args(["--listen", "/ip4/127.0.0.1/tcp/0"])
                    .args(["--metrics", "127.0.0.1:0"])
                    .env_remove("SAFEMEET_HOME");
                (c, format!("`{} relay` (defaults)", bin.display()))
            }
            None => {
                let mut c = Command::new(std::env::current_exe()?);
                c.args(["relay", "--serve-relay", home]);
                (
                    c,
                    "this binary as a relay process (the defaults of `safemeet relay`)".to_owned(),
                )
            }
        };
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {what}"))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("no stdout")?;
        // The first line says where it listens; the rest is drained so the
        // relay never blocks on a full pipe.
        let (tx, first) = std::sync::mpsc::sync_channel(1);
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
            let _ = tx.send(lines.next().unwrap_or_default());
            lines.for_each(drop);
        });
        let mut process = Self {
            child,
            stdin,
            peer: PeerId::random(),
            addr: Multiaddr::empty(),
            metrics: SocketAddr::from(([127, 0, 0, 1], 0)),
            own: relay_bin.is_none(),
            what,
            _dir: dir,
        };
        let line = first
            .recv_timeout(WAIT)
            .context("the relay process did not say where it listens")?;
        let started: Value = serde_json::from_str(&line)
            .with_context(|| format!("the relay process printed {line:?}"))?;
        process.addr = started["listen_addrs"][0]
            .as_str()
            .context("no listen address")?
            .parse()?;
        process.peer = started["peer_id"].as_str().context("no peer id")?.parse()?;
        process.metrics = started["metrics"]
            .as_str()
            .context("no metrics address")?
            .parse()?;
        Ok(process)
    }

    /// Its resident memory now and at its peak, from `/proc/PID/status`.
    pub(crate) fn memory(&self) -> Option<Memory> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let field = |name: &str| -> Option<u64> {
            let line = status.lines().find(|l| l.starts_with(name))?;
            line.split_whitespace().nth(1)?.parse().ok()
        };
        Some(Memory {
            rss_kib: field("VmRSS:")?,
            peak_kib: field("VmHWM:")?,
        })
    }

    /// CPU time it has used so far.
    pub(crate) fn cpu(&self) -> Option<Duration> {
        crate::cpu_of(&self.child.id().to_string())
    }

    /// Its Prometheus counters and gauges, by name with labels.
    pub(crate) async fn metrics(&self) -> anyhow::Result<BTreeMap<String, f64>> {
        let text = tokio::time::timeout(WAIT, scrape(self.metrics))
            .await
            .context("the relay's metrics did not answer")??;
        Ok(parse_metrics(&text))
    }

    /// Stops it: the bench's own relay when its input closes, `safemeet
    /// relay` on SIGTERM; killed if it has not exited within 10 s (its
    /// database is thrown away with the directory anyway).
    pub(crate) fn stop(mut self) {
        self.stdin.take();
        if !self.own {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
        }
        let step = Duration::from_millis(50);
        for _ in 0..200 {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(step);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `GET /metrics` over plain HTTP/1.1; the body.
async fn scrape(addr: SocketAddr) -> anyhow::Result<String> {
    let mut socket = tokio::net::TcpStream::connect(addr).await?;
    socket
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: relay\r\nconnection: close\r\n\r\n")
        .await?;
    let mut bytes = Vec::new();
    socket.take(MAX_METRICS).read_to_end(&mut bytes).await?;
    let text = String::from_utf8_lossy(&bytes);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok(body.to_owned())
}

/// Prometheus text as `name{labels}` → value; comments and lines that do
/// not parse are skipped.
pub(crate) fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

/// The child side of [`RelayProcess::start`] (`--serve-relay DIR`): a
/// relay node with the defaults of `safemeet relay` on sled under `dir`,
/// until its standard input closes (the bench ended, or died).
pub(crate) fn serve(dir: PathBuf) -> anyhow::Result<()> {
    // As `safemeet relay` runs it: tokio's default multi-threaded runtime.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let backend = SledStore::open(dir.join("db"), &safemeet_store_sled::Config::default())?;
        let key = Keypair::generate_ed25519();
        let service =
            MailboxService::new(MailboxStore::new(backend, Limits::default()), key.clone());
        let config = RelayConfig {
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse()?],
            metrics: Some(MetricsConfig {
                listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                allow: vec![[127, 0, 0, 1].into()],
            }),
            ..RelayConfig::default()
        };
        let mut relay = safemeet_relay::node::spawn(key, config, service)?;
        let Ok(Some(RelayEvent::Listening(addr))) =
            tokio::time::timeout(WAIT, relay.events.recv()).await
        else {
            anyhow::bail!("the relay did not listen");
        };
        println!(
            "{}",
            json!({
                "peer_id": relay.peer_id.to_string(),
                "listen_addrs": [addr.to_string()],
                "metrics": relay.metrics_addr.map(|a| a.to_string()),
            })
        );
        let (closed, stdin_closed) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
            let _ = closed.send(());
        });
        let _ = stdin_closed.await;
        relay.stop().await;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_read_by_name_and_labels() {
        let text = "# HELP x\n# TYPE x counter\n\
            safemeet_relay_deposits_total 12\n\
            safemeet_relay_network_refused_total{reason=\"stalled_stream\"} 320\n\
            garbage\n";
        let m = parse_metrics(text);
        assert_eq!(m.get("safemeet_relay_deposits_total"), Some(&12.0));
        assert_eq!(
            m.get("safemeet_relay_network_refused_total{reason=\"stalled_stream\"}"),
            Some(&320.0)
        );
        assert_eq!(m.len(), 2);
    }
}
