//! What the end-to-end tests share: a bare libp2p peer that only sends
//! requests, and a running `safemeet relay`. Each test file uses part of it.

#![allow(dead_code)]

pub(crate) mod http;
pub(crate) mod node;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use libp2p::{Multiaddr, PeerId};
use serde_json::Value;

use libp2p::request_response::{self, Codec, ProtocolSupport};
use libp2p::{StreamProtocol, noise, tcp, yamux};

/// A swarm that speaks `protocol` with `codec`, as a client only, over
/// TCP (Noise + yamux), with a fresh identity.
pub(crate) fn client_swarm<C>(
    codec: C,
    protocol: StreamProtocol,
) -> libp2p::Swarm<request_response::Behaviour<C>>
where
    C: Codec<Protocol = StreamProtocol> + Clone + Send + 'static,
{
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .expect("a TCP transport")
        .with_behaviour(|_| {
            request_response::Behaviour::with_codec(
                codec,
                [(protocol, ProtocolSupport::Outbound)],
                request_response::Config::default()
                    .with_request_timeout(std::time::Duration::from_secs(10)),
            )
        })
        .expect("a behaviour")
        .build()
}

/// Sends each of `requests` to `peer` and waits (30 s at most) for what
/// comes back for each: `Ok(answer)` or `Err(failure)`, in order.
pub(crate) async fn request_all<C>(
    swarm: &mut libp2p::Swarm<request_response::Behaviour<C>>,
    peer: &libp2p::PeerId,
    requests: Vec<C::Request>,
) -> Vec<Result<C::Response, String>>
where
    C: Codec<Protocol = StreamProtocol> + Clone + Send + 'static,
{
    use futures::StreamExt;
    use libp2p::request_response::{Event, Message};
    use libp2p::swarm::SwarmEvent;

    // A relay reads at most 16 streams at once on a connection (more are
    // dropped unread): a well-behaved client, like the daemon, keeps no
    // more than that in flight.
    const IN_FLIGHT: usize = 16;
    let mut waiting = requests.into_iter();
    let mut ids = Vec::new();
    let mut results = std::collections::HashMap::new();
    for r in waiting.by_ref().take(IN_FLIGHT) {
        ids.push(swarm.behaviour_mut().send_request(peer, r));
    }
    tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while results.len() < ids.len() {
            let done = match swarm.select_next_some().await {
                SwarmEvent::Behaviour(Event::Message {
                    message:
                        Message::Response {
                            request_id,
                            response,
                        },
                    ..
                }) => results.insert(request_id, Ok(response)).is_none(),
                SwarmEvent::Behaviour(Event::OutboundFailure {
                    request_id, error, ..
                }) => results.insert(request_id, Err(error.to_string())).is_none(),
                _ => false,
            };
            if done && let Some(r) = waiting.next() {
                ids.push(swarm.behaviour_mut().send_request(peer, r));
            }
        }
    })
    .await
    .expect("every request got an answer or failed");
    ids.iter()
        .map(|id| results.remove(id).expect("an answer per request"))
        .collect()
}

/// How long a process started here gets to say it is ready, to exit, and
/// (for a [`Watched`] one) to write each line.
const WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// A child process, waited for by a thread so the test can wait for its
/// exit with a timeout. Dropped before it exited, it is killed (SIGKILL).
pub(crate) struct Reaped {
    pid: u32,
    exit: std::sync::mpsc::Receiver<std::process::ExitStatus>,
    exited: bool,
}

impl Reaped {
    pub(crate) fn new(mut child: Child) -> Self {
        let pid = child.id();
        let (tx, exit) = std::sync::mpsc::sync_channel(1);
        std::thread::spawn(move || {
            if let Ok(status) = child.wait() {
                let _ = tx.send(status);
            }
        });
        Self {
            pid,
            exit,
            exited: false,
        }
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends `signal` (`TERM`, `KILL`, ...) to the process.
    pub(crate) fn signal(&self, signal: &str) {
        assert!(!self.exited, "the process has exited already");
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits for the process to exit.
    pub(crate) fn wait(&mut self) -> std::process::ExitStatus {
        let status = self
            .exit
            .recv_timeout(WAIT)
            .unwrap_or_else(|e| panic!("the process did not exit: {e}"));
        self.exited = true;
        status
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if !self.exited && self.exit.try_recv().is_err() {
            let _ = Command::new("kill")
                .args(["-KILL", &self.pid.to_string()])
                .status();
            let _ = self.exit.recv_timeout(WAIT);
        }
    }
}

/// A running `safemeet relay`, its stderr (logs) collected. Dropped
/// without [`stop`](Self::stop), it is killed.
pub(crate) struct Relay {
    process: Reaped,
    pub(crate) addr: Multiaddr,
    pub(crate) peer: PeerId,
    /// Where `/metrics` and `/status` are served, if they are.
    pub(crate) metrics: Option<String>,
    logs: Option<std::thread::JoinHandle<String>>,
}

impl Relay {
    pub(crate) fn start(home: &Path, extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_safemeet"))
            .args(["--home", home.to_str().unwrap(), "--json", "relay"])
            .args(["--listen", "/ip4/127.0.0.1/tcp/0"])
            .args(extra)
            .env_remove("SAFEMEET_HOME")
            // Everything the relay logs, to check it names no one.
            .env("SAFEMEET_LOG", "debug")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let logs = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        // The relay prints one JSON line once it listens; the reader then
        // drains stdout to its end, so nothing the relay prints is lost.
        let stdout = child.stdout.take().unwrap();
        let process = Reaped::new(child);
        let (tx, first) = std::sync::mpsc::sync_channel(1);
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
            let _ = tx.send(lines.next().unwrap_or_default());
            lines.for_each(drop);
        });
        let line = first
            .recv_timeout(WAIT)
            .expect("the relay prints its addresses");
        let started: Value = serde_json::from_str(&line).expect("the relay prints its addresses");
        let addr: Multiaddr = started["listen_addrs"][0]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let peer: PeerId = started["peer_id"].as_str().unwrap().parse().unwrap();
        let metrics = started["metrics"].as_str().map(str::to_owned);
        assert!(addr.to_string().ends_with(&format!("/p2p/{peer}")));
        Self {
            process,
            addr,
            peer,
            metrics,
            logs: Some(logs),
        }
    }

    /// How many envelopes it holds, from `/status` (started with
    /// `--metrics`).
    pub(crate) fn holds(&self) -> Option<u64> {
        use std::io::Write;
        let mut stream = std::net::TcpStream::connect(self.metrics.as_deref()?).ok()?;
        write!(stream, "GET /status HTTP/1.1\r\nhost: relay\r\n\r\n").ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).ok()?;
        let body: Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1)?).ok()?;
        body["envelopes"].as_u64()
    }

    /// The value of the first `/metrics` line that starts with `series`
    /// (e.g. `safemeet_relay_refused_total{reason="rate_limited"}`), if
    /// there is one (started with `--metrics`).
    #[allow(dead_code)] // not every test file reads metrics
    pub(crate) fn metric(&self, series: &str) -> Option<u64> {
        use std::io::Write;
        let mut stream = std::net::TcpStream::connect(self.metrics.as_deref()?).ok()?;
        write!(stream, "GET /metrics HTTP/1.1\r\nhost: relay\r\n\r\n").ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).ok()?;
        answer
            .lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse::<f64>().ok())
            .map(|v| v as u64)
    }

    /// Its resident memory, in bytes (Linux).
    pub(crate) fn rss(&self) -> u64 {
        let statm = std::fs::read_to_string(format!("/proc/{}/statm", self.process.pid))
            .unwrap_or_default();
        let pages: u64 = statm
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        pages * 4096
    }

    /// SIGTERM, then the logs it wrote.
    pub(crate) fn stop(mut self) -> String {
        self.process.signal("TERM");
        let exit = self.process.wait();
        assert!(exit.success(), "the relay stops cleanly on SIGTERM: {exit}");
        self.logs
            .take()
            .map(|h| h.join().unwrap())
            .unwrap_or_default()
    }
}

/// Every byte of every file under `dir`.
pub(crate) fn dump(dir: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            all.extend(dump(&path));
        } else {
            all.extend(std::fs::read(&path).unwrap());
        }
    }
    all
}

pub(crate) fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A step of a [`Watched`] process: its name, and how its line is known.
pub(crate) type Step = (&'static str, Box<dyn Fn(&Line) -> bool>);

/// A line a [`Watched`] process wrote.
#[derive(Debug, Clone)]
pub(crate) enum Line {
    /// On stdout (what a command prints).
    Out(String),
    /// On stderr (logs).
    Err(String),
}

/// A process whose stdout and stderr lines the test sees as they are
/// written, and whose exit it waits for with a timeout. Dropped before it
/// exited, it is killed (SIGKILL). Lines wait in a bounded queue: for
/// processes that write little, or a test that keeps reading.
pub(crate) struct Watched {
    process: Reaped,
    lines: std::sync::mpsc::Receiver<Line>,
    /// Every stderr line seen so far.
    pub(crate) stderr: Vec<String>,
}

impl Watched {
    /// Starts `command` with stdout and stderr piped to the test.
    pub(crate) fn spawn(mut command: Command) -> Self {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Bounded: a reader waits while the test is behind, and the
        // process with it (as it would on a full pipe).
        let (tx, lines) = std::sync::mpsc::sync_channel(1024);
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        let tx_err = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(Line::Out(line)).is_err() {
                    break;
                }
            }
        });
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if tx_err.send(Line::Err(line)).is_err() {
                    break;
                }
            }
        });
        Self {
            process: Reaped::new(child),
            lines,
            stderr: Vec::new(),
        }
    }

    /// Waits for a line that `wanted` accepts; returns it. Fails if the
    /// process closes its output first, or a line takes too long.
    pub(crate) fn wait_for(&mut self, what: &str, wanted: impl Fn(&Line) -> bool) -> Line {
        loop {
            match self.lines.recv_timeout(WAIT) {
                Ok(line) => {
                    if let Line::Err(text) = &line {
                        self.stderr.push(text.clone());
                    }
                    if wanted(&line) {
                        return line;
                    }
                }
                Err(e) => panic!(
                    "waiting for {what}: {e}; stderr so far:\n{}",
                    self.stderr.join("\n")
                ),
            }
        }
    }

    /// Sends `signal` (`TERM`, `KILL`, ...) to the process.
    pub(crate) fn signal(&self, signal: &str) {
        self.process.signal(signal);
    }

    /// Waits for the process to exit; returns its status and everything
    /// it wrote on stderr.
    pub(crate) fn finish(mut self) -> (std::process::ExitStatus, String) {
        let status = self.process.wait();
        // The output closes with the process: read to its end.
        loop {
            match self.lines.recv_timeout(WAIT) {
                Ok(Line::Err(text)) => self.stderr.push(text),
                Ok(Line::Out(_)) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                Err(e) => panic!("the output did not close: {e}"),
            }
        }
        (status, self.stderr.join("\n"))
    }
}
