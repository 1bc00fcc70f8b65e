//! `safemeet-bench web`: the web app's event stream under load, with real
//! `safemeet` daemons (processes, real sockets, real stores).
//!
//! Alice's daemon serves the web app; `--clients` browser-style clients
//! (default 200) follow `/api/v1/events` over HTTP, each with its own
//! connection, and one client follows the Unix socket's `subscribe` (what
//! `safemeet listen` uses) in the same run. Bob's daemon sends Alice
//! `--ops` direct messages per sample at 200 a second through its socket
//! API. Reported:
//!
//! - **latency** from Bob's `send` call to each client reading the event:
//!   p50 and p99 over every SSE client, and over the socket subscriber;
//!   the goal is an SSE p99 at most 1.2 times the socket's;
//! - **Alice's daemon's RSS**: idle with the web app (goal at most
//!   35 MiB), and at the end of the load with the web app and its
//!   streams, against the same load on a daemon with `--web off`.
//!
//! The `safemeet` binary is the one next to this one (build it first:
//! `cargo build --release -p safemeet-node`), or `--safemeet-bin PATH`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail, ensure};
use safemeet_api::{Client, Event, EventKind, Request};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::chat::{instant, percentile};
use crate::median;

/// Messages a second Bob sends.
const RATE: f64 = 200.0;
/// Text size of a message.
const TEXT_BYTES: usize = 200;
/// Bob's socket connections sending at once.
const SENDERS: usize = 8;
const PASSPHRASE: &str = "correct horse battery staple";
const P99_RATIO_GOAL: f64 = 1.2;
const IDLE_RSS_GOAL_MIB: f64 = 35.0;
/// Longest wait for every client to read every message of a sample.
const DEADLINE: Duration = Duration::from_secs(120);

/// What the run needs.
#[derive(Debug)]
pub(crate) struct Options {
    pub(crate) samples: usize,
    pub(crate) messages: usize,
    pub(crate) clients: usize,
    pub(crate) bin: Option<PathBuf>,
}

/// A daemon process, killed when dropped.
pub(crate) struct Daemon {
    pub(crate) child: Child,
    pub(crate) home: PathBuf,
    web: Option<String>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    pub(crate) fn rss_mib(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kib / 1024.0)
    }

    pub(crate) fn socket(&self) -> PathBuf {
        self.home.join("safemeet.sock")
    }
}

fn command(bin: &Path, home: &Path) -> Command {
    let mut c = Command::new(bin);
    c.arg("--home")
        .arg(home)
        .env("SAFEMEET_PASSPHRASE", PASSPHRASE)
        .env_remove("SAFEMEET_HOME")
        .env_remove("SAFEMEET_LOG");
    c
}

pub(crate) fn cli(bin: &Path, home: &Path, args: &[&str]) -> anyhow::Result<Value> {
    let out = command(bin, home).args(args).arg("--json").output()?;
    ensure!(
        out.status.success(),
        "safemeet {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

pub(crate) fn start(bin: &Path, home: &Path, web: bool) -> anyhow::Result<Daemon> {
    let web_arg = if web { "127.0.0.1:0" } else { "off" };
    let mut child = command(bin, home)
        .args([
            "daemon",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--no-mdns",
            "--json",
        ])
        .args(["--web", web_arg])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting a daemon")?;
    let stdout = child.stdout.take().context("the daemon's stdout")?;
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)?;
    let started: Value = serde_json::from_str(&line).context("the daemon's first line")?;
    let web = started["web"].as_str().map(|u| {
        u.trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned()
    });
    Ok(Daemon {
        child,
        home: home.to_path_buf(),
        web,
    })
}

/// Two daemons that know each other; Alice's with the web app or not.
pub(crate) fn pair(bin: &Path, dir: &Path, web: bool) -> anyhow::Result<(Daemon, Daemon)> {
    let (a, b) = (dir.join("alice"), dir.join("bob"));
    cli(bin, &a, &["init", "--username", "alice"])?;
    cli(bin, &b, &["init", "--username", "bob"])?;
    let (alice, bob) = (start(bin, &a, web)?, start(bin, &b, false)?);
    let invite = |home: &Path| -> anyhow::Result<String> {
        Ok(cli(bin, home, &["invite"])?["invite"]
            .as_str()
            .context("an invite")?
            .to_owned())
    };
    let (ia, ib) = (invite(&a)?, invite(&b)?);
    cli(bin, &a, &["contact", "add", &ib, "--name", "bob"])?;
    cli(bin, &b, &["contact", "add", &ia, "--name", "alice"])?;
    Ok((alice, bob))
}

/// A plain HTTP/1.0 exchange: status, headers, body.
async fn http(
    authority: &str,
    head: &str,
    body: &[u8],
) -> anyhow::Result<(u16, Vec<(String, String)>, Vec<u8>)> {
    let mut stream = TcpStream::connect(authority).await?;
    stream
        .write_all(
            format!(
                "{head}\r\nHost: {authority}\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .await?;
    stream.write_all(body).await?;
    let mut raw = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut raw).await?;
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("an answer head")?;
    let text = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = text.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .context("a status")?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok((status, headers, raw[end + 4..].to_vec()))
}

/// Logs in to the web app: the session cookie (`name=value`).
async fn login(web: &str) -> anyhow::Result<String> {
    let (_, _, page) = http(web, "GET / HTTP/1.0", b"").await?;
    let page = String::from_utf8_lossy(&page);
    let start = page
        .find("name=\"csrf\" content=\"")
        .context("a login token")?
        + 21;
    let token = page[start..].split('"').next().context("a login token")?;
    let body = json!({ "passphrase": PASSPHRASE }).to_string();
    let (status, headers, _) = http(
        web,
        &format!("POST /api/v1/login HTTP/1.0\r\nX-CSRF-Token: {token}"),
        body.as_bytes(),
    )
    .await?;
    ensure!(status == 200, "login: {status}");
    let cookie = headers
        .iter()
        .find(|(n, _)| n == "set-cookie")
        .context("a cookie")?
        .1
        .split(';')
        .next()
        .context("a cookie")?
        .to_owned();
    Ok(cookie)
}

/// The sample and index of a benchmark message.
fn tag(text: &str) -> Option<(usize, usize)> {
    let mut words = text.strip_prefix("bench ")?.split(' ');
    Some((words.next()?.parse().ok()?, words.next()?.parse().ok()?))
}

/// One SSE client: opens its stream, says it is open, then records when
/// each message of `sample` arrives, until it has all `count`.
async fn sse_client(
    web: String,
    cookie: String,
    since: u64,
    sample: usize,
    count: usize,
    open: tokio::sync::mpsc::Sender<()>,
) -> anyhow::Result<Vec<Option<Instant>>> {
    let mut stream = TcpStream::connect(&web).await?;
    stream
        .write_all(
            format!(
                "GET /api/v1/events?since={since} HTTP/1.0\r\nHost: {web}\r\nCookie: {cookie}\r\n\r\n"
            )
            .as_bytes(),
        )
        .await?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    ensure!(line.contains(" 200 "), "the stream: {line}");
    loop {
        line.clear();
        reader.read_line(&mut line).await?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
    }
    let _ = open.send(()).await;
    let mut arrivals = Arrivals::new(sample, count);
    while arrivals.left > 0 {
        line.clear();
        if reader.read_line(&mut line).await? == 0 {
            bail!("the stream ended");
        }
        let Some(data) = line.strip_prefix("data:") else {
            continue;
        };
        // As a browser's handler would, cheaply: find the message's text
        // (only message events of this run carry "bench …"), no full parse.
        let at = instant();
        if let Some(text) = data.split_once("\"text\":\"").map(|(_, rest)| rest) {
            arrivals.note_text(text, at);
        }
    }
    Ok(arrivals.got)
}

/// When each message of one sample arrived at one client.
struct Arrivals {
    sample: usize,
    got: Vec<Option<Instant>>,
    left: usize,
}

impl Arrivals {
    fn new(sample: usize, count: usize) -> Self {
        Arrivals {
            sample,
            got: vec![None; count],
            left: count,
        }
    }

    /// Notes `event` if it brings a message of the sample not seen yet.
    fn note(&mut self, event: &Event, at: Instant) {
        if let EventKind::Message { message, .. } = &event.kind {
            self.note_text(&message.text, at);
        }
    }

    /// Notes a message text (or what starts with one) of the sample not
    /// seen yet.
    fn note_text(&mut self, text: &str, at: Instant) {
        if let Some((s, i)) = tag(text)
            && s == self.sample
            && let Some(slot @ None) = self.got.get_mut(i)
        {
            *slot = Some(at);
            self.left -= 1;
        }
    }
}

/// The socket subscriber: the same, over `subscribe`.
async fn socket_client(
    socket: PathBuf,
    since: u64,
    sample: usize,
    count: usize,
    open: tokio::sync::mpsc::Sender<()>,
) -> anyhow::Result<Vec<Option<Instant>>> {
    let client = Client::connect(&socket).await?;
    let mut sub = client.subscribe(since).await?;
    let _ = open.send(()).await;
    let mut arrivals = Arrivals::new(sample, count);
    while arrivals.left > 0 {
        let event = sub
            .next_event()
            .await?
            .ok_or_else(|| anyhow!("the stream ended"))?;
        arrivals.note(&event, instant());
    }
    Ok(arrivals.got)
}

/// The cursor of the last event so far.
async fn log_end(socket: &Path) -> anyhow::Result<u64> {
    let mut client = Client::connect(socket).await?;
    let mut end = 0;
    loop {
        let page = client
            .call("events", json!({ "since": end, "limit": 10_000 }))
            .await?;
        match page.as_array().and_then(|p| p.last()) {
            Some(last) => end = last["cursor"].as_u64().context("a cursor")?,
            None => return Ok(end),
        }
    }
}

/// Bob sends `count` messages at [`RATE`]: when each send call began.
async fn send_paced(bob: &Path, sample: usize, count: usize) -> anyhow::Result<Vec<Instant>> {
    let mut senders = Vec::new();
    for _ in 0..SENDERS {
        senders.push(Arc::new(tokio::sync::Mutex::new(
            Client::connect(&bob.join("safemeet.sock")).await?,
        )));
    }
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / RATE));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sends = tokio::task::JoinSet::new();
    let mut started = Vec::with_capacity(count);
    for i in 0..count {
        tick.tick().await;
        let pad = "x".repeat(TEXT_BYTES.saturating_sub(20));
        let request = Request::Send {
            target: "alice".into(),
            text: format!("bench {sample} {i} {pad}"),
            file: None,
        };
        let sender = senders[i % SENDERS].clone();
        started.push(instant());
        sends.spawn(async move { sender.lock().await.request(&request).await.map(|_| ()) });
    }
    while let Some(done) = sends.join_next().await {
        done??;
    }
    Ok(started)
}

/// Milliseconds from each send to each arrival.
fn latencies(sent: &[Instant], got: &[Option<Instant>]) -> anyhow::Result<Vec<f64>> {
    sent.iter()
        .zip(got)
        .map(|(s, g)| {
            let g = g.ok_or_else(|| anyhow!("a message never arrived"))?;
            Ok(g.saturating_duration_since(*s).as_secs_f64() * 1000.0)
        })
        .collect()
}

/// One sample: open the streams, send, wait for every arrival.
async fn sample(
    alice: &Daemon,
    bob: &Daemon,
    cookie: Option<&str>,
    clients: usize,
    index: usize,
    count: usize,
) -> anyhow::Result<(Vec<f64>, Vec<f64>, Option<f64>)> {
    let since = log_end(&alice.socket()).await?;
    let (open_tx, mut open_rx) = tokio::sync::mpsc::channel(clients + 1);
    let socket = tokio::spawn(socket_client(
        alice.socket(),
        since,
        index,
        count,
        open_tx.clone(),
    ));
    let mut streams = Vec::new();
    if let (Some(web), Some(cookie)) = (&alice.web, cookie) {
        for _ in 0..clients {
            streams.push(tokio::spawn(sse_client(
                web.clone(),
                cookie.to_owned(),
                since,
                index,
                count,
                open_tx.clone(),
            )));
        }
    }
    drop(open_tx);
    for _ in 0..=streams.len() {
        tokio::time::timeout(DEADLINE, open_rx.recv())
            .await
            .context("the streams to open")?;
    }
    let sent = send_paced(&bob.home, index, count).await?;
    let socket_got = tokio::time::timeout(DEADLINE, socket)
        .await
        .context("socket")???;
    let mut sse = Vec::new();
    for stream in streams {
        let got = tokio::time::timeout(DEADLINE, stream)
            .await
            .context("SSE")???;
        sse.extend(latencies(&sent, &got)?);
    }
    // Read while the streams' connections are still held by the server.
    let rss = alice.rss_mib();
    Ok((sse, latencies(&sent, &socket_got)?, rss))
}

fn summary(mut xs: Vec<f64>) -> Value {
    xs.sort_by(f64::total_cmp);
    json!({
        "p50_ms": (percentile(&xs, 50.0) * 1000.0).round() / 1000.0,
        "p99_ms": (percentile(&xs, 99.0) * 1000.0).round() / 1000.0,
        "samples": xs.len(),
    })
}

fn higher(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

pub(crate) fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// The `safemeet` binary to run.
pub(crate) fn safemeet_bin(explicit: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(bin) = explicit {
        return Ok(bin);
    }
    let here = std::env::current_exe()?;
    let bin = here
        .parent()
        .context("the benchmark's directory")?
        .join("safemeet");
    ensure!(
        bin.exists(),
        "no {} (build it: cargo build --release -p safemeet-node, or pass --safemeet-bin)",
        bin.display()
    );
    Ok(bin)
}

pub(crate) fn run(options: Options) -> anyhow::Result<Value> {
    let bin = safemeet_bin(options.bin)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        // With the web app: idle, then loaded.
        let dir = tempfile::tempdir()?;
        let (alice, bob) = pair(&bin, dir.path(), true)?;
        let web = alice.web.clone().context("the web app's address")?;
        let cookie = login(&web).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let idle_web = alice.rss_mib();
        let (mut sse_p99, mut socket_p99, mut sse_all, mut socket_all) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut loaded_web: Option<f64> = None;
        for i in 0..options.samples {
            let (sse, socket, rss) = sample(
                &alice,
                &bob,
                Some(&cookie),
                options.clients,
                i,
                options.messages,
            )
            .await?;
            let (mut a, mut b) = (sse.clone(), socket.clone());
            a.sort_by(f64::total_cmp);
            b.sort_by(f64::total_cmp);
            sse_p99.push(percentile(&a, 99.0));
            socket_p99.push(percentile(&b, 99.0));
            sse_all.extend(sse);
            socket_all.extend(socket);
            loaded_web = higher(loaded_web, rss);
        }
        drop((alice, bob));

        // The same load on a daemon without the web app.
        let dir = tempfile::tempdir()?;
        let (alice, bob) = pair(&bin, dir.path(), false)?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let idle_plain = alice.rss_mib();
        let mut loaded_plain: Option<f64> = None;
        for i in 0..options.samples {
            let (_, _, rss) = sample(&alice, &bob, None, 0, i, options.messages).await?;
            loaded_plain = higher(loaded_plain, rss);
        }
        drop((alice, bob));

        let ratio = median(sse_p99.clone()) / median(socket_p99.clone());
        let idle_ok = idle_web.is_some_and(|r| r <= IDLE_RSS_GOAL_MIB);
        let report = json!({
            "suite": "web",
            "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
            "samples": options.samples,
            "messages_per_sample": options.messages,
            "rate_per_second": RATE,
            "sse_clients": options.clients,
            "send_to_event": {
                "sse": summary(sse_all),
                "socket_subscribe": summary(socket_all),
                "p99_ratio_sse_to_socket": (ratio * 1000.0).round() / 1000.0,
                "judged_on": "median of per-sample p99s",
                "goal": { "ratio_max": P99_RATIO_GOAL, "goal_met": ratio <= P99_RATIO_GOAL },
            },
            "daemon_rss_mib": {
                "idle_with_web": idle_web.map(round1),
                "idle_without_web": idle_plain.map(round1),
                "loaded_with_web_and_streams": loaded_web.map(round1),
                "loaded_without_web": loaded_plain.map(round1),
                "goal": { "idle_with_web_max": IDLE_RSS_GOAL_MIB, "goal_met": idle_ok },
            },
        });
        eprintln!("{}", serde_json::to_string_pretty(&report)?);
        Ok(report)
    })
}
