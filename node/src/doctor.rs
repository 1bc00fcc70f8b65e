//! `safemeet doctor`: checks what a daemon needs, each with a plain
//! verdict and, when something is wrong, what to do about it.
//!
//! With a daemon running, it asks the daemon (`status`, `messages`); with
//! none, it opens the store itself (asking for the passphrase) and checks
//! what it can from outside. Exit status 1 when a check fails.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use safemeet_api::status::{Nat, Status};
use safemeet_api::{Client, Contact, Message, Request, Room, Whoami};
use serde::Serialize;

use crate::failure::Failure;
use crate::home::Home;
use crate::messenger::Api;
use crate::passphrase::Source;

/// Free space below this fails; below [`DISK_LOW`] warns.
const DISK_FULL: u64 = 100 << 20;
const DISK_LOW: u64 = 1 << 30;
/// Clocks further apart than this are warned of.
const CLOCK_SKEW: Duration = Duration::from_secs(120);
/// How long a relay gets to accept a TCP connection.
const CONNECT_WAIT: Duration = Duration::from_secs(3);
/// Conversations read for the clock check.
const CLOCK_CONVERSATIONS: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Verdict {
    Ok,
    Warn,
    Fail,
    Skip,
}

#[derive(Debug, Serialize)]
struct Check {
    check: String,
    verdict: Verdict,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    fix: Option<String>,
}

fn check(name: impl Into<String>, verdict: Verdict, detail: impl Into<String>) -> Check {
    Check {
        check: name.into(),
        verdict,
        detail: detail.into(),
        fix: None,
    }
}

impl Check {
    fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }
}

/// `safemeet doctor`.
pub(crate) fn doctor(
    home: &Home,
    home_given: bool,
    source: &Source,
    json: bool,
) -> Result<(), Failure> {
    home.require_account()?;
    let rt = crate::messenger::runtime()?;
    let checks = rt.block_on(run(home, home_given, source));
    let failed = checks.iter().filter(|c| c.verdict == Verdict::Fail).count();
    if json {
        crate::messenger::print_json(&serde_json::json!({ "ok": failed == 0, "checks": checks }))?;
    } else {
        for c in &checks {
            let word = match c.verdict {
                Verdict::Ok => "ok  ",
                Verdict::Warn => "WARN",
                Verdict::Fail => "FAIL",
                Verdict::Skip => "--  ",
            };
            println!("{word}  {}: {}", c.check, c.detail);
            if let Some(fix) = &c.fix {
                println!("      fix: {fix}");
            }
        }
    }
    if failed > 0 {
        return Err(Failure::Other(anyhow::anyhow!("{failed} check(s) failed")));
    }
    Ok(())
}

async fn run(home: &Home, home_given: bool, source: &Source) -> Vec<Check> {
    let mut checks = Vec::new();
    if !home.has_account() {
        checks.push(
            check(
                "account",
                Verdict::Fail,
                format!("no account in {}", home.dir().display()),
            )
            .fix("create one with `safemeet up`"),
        );
        return checks;
    }
    checks.push(check(
        "account",
        Verdict::Ok,
        home.dir().display().to_string(),
    ));
    let settings = match settings(home, home_given) {
        Ok(s) => {
            checks.push(check("config", Verdict::Ok, "config.toml reads"));
            Some(s)
        }
        Err(e) => {
            checks.push(
                check("config", Verdict::Fail, e.to_string())
                    .fix("correct the file (`safemeet config default` shows every key)"),
            );
            None
        }
    };
    let daemon = match tokio::time::timeout(CONNECT_WAIT, Client::connect(&home.socket())).await {
        Ok(Ok(client)) => Some(client),
        _ => None,
    };
    match daemon {
        Some(client) => with_daemon(client, settings.as_ref(), &mut checks).await,
        None => without_daemon(home, source, settings.as_ref(), &mut checks).await,
    }
    checks.push(disk(home.dir()));
    checks
}

fn settings(home: &Home, home_given: bool) -> Result<crate::config::Settings, Failure> {
    let path = crate::config::path(home.dir(), home_given)?;
    let file = crate::config::read(&path)?;
    crate::config::resolve(&crate::config::Flags::default(), &file)
}

async fn with_daemon(
    client: Client,
    settings: Option<&crate::config::Settings>,
    checks: &mut Vec<Check>,
) {
    let mut api = Api::Daemon(client);
    let status: Status = match api.call(Request::Status {}).await {
        Ok(s) => s,
        Err(e) => {
            checks.push(
                check(
                    "daemon",
                    Verdict::Fail,
                    format!("the socket answers, but: {e}"),
                )
                .fix("restart the daemon"),
            );
            return;
        }
    };
    checks.push(check(
        "daemon",
        Verdict::Ok,
        format!(
            "running; the API socket answers; {} peers connected",
            status.connected_peers
        ),
    ));
    checks.push(check("store", Verdict::Ok, "open in the running daemon"));
    checks.push(check(
        "ports",
        Verdict::Ok,
        format!("listening on {}", status.listen_addrs.join(", ")),
    ));
    // The relays the daemon uses, and those config.toml names.
    let mut relays: Vec<String> = status
        .relays
        .iter()
        .map(|r| r.addr.trim_end_matches("/p2p-circuit").to_owned())
        .collect();
    for relay in settings.map(|s| s.relay.as_slice()).unwrap_or_default() {
        let relay = relay.to_string();
        if !relays.contains(&relay) {
            relays.push(relay);
        }
    }
    for relay in relays {
        let circuit = format!("{relay}/p2p-circuit");
        let state = status.relays.iter().find(|r| r.addr == circuit);
        checks.push(match state {
            Some(r) if r.reserved => check(
                format!("relay {relay}"),
                Verdict::Ok,
                "reachable; it holds this device's reservation",
            ),
            Some(r) if r.failures == 0 => check(
                format!("relay {relay}"),
                Verdict::Warn,
                "waiting for the relay to answer the reservation",
            )
            .fix("run `safemeet doctor` again in a few seconds"),
            Some(r) => check(
                format!("relay {relay}"),
                Verdict::Fail,
                format!("no reservation ({} failed tries)", r.failures),
            )
            .fix("check that the relay runs and this machine can reach it; the daemon tries again"),
            None => check(
                format!("relay {relay}"),
                Verdict::Warn,
                "in config.toml, but the running daemon was started without it",
            )
            .fix("restart the daemon"),
        });
    }
    let reserved = status.relays.iter().any(|r| r.reserved);
    checks.push(match status.nat {
        Nat::Public => check("nat", Verdict::Ok, "reachable directly (AutoNAT)"),
        Nat::Private if reserved => check(
            "nat",
            Verdict::Ok,
            "behind NAT or a firewall: reachable through the relay",
        ),
        Nat::Private => check(
            "nat",
            Verdict::Warn,
            "behind NAT or a firewall, with no relay: only peers on this network reach it",
        )
        .fix("run with --relay ADDR (a relay contacts can reach)"),
        Nat::Unknown => check(
            "nat",
            Verdict::Skip,
            "not tested (AutoNAT runs when the daemon uses a relay)",
        ),
    });
    checks.push(clock(&mut api).await);
}

/// How far this machine's clock is from its contacts', from the messages
/// they sent: per sender the smallest gap between their clock and the
/// arrival here (delays, a relay's storage, only ever add to it), then the
/// median over senders.
async fn clock(api: &mut Api) -> Check {
    let gaps = match sender_gaps(api).await {
        Ok(g) => g,
        Err(e) => {
            return check(
                "clock",
                Verdict::Skip,
                format!("could not read messages: {e}"),
            );
        }
    };
    if gaps.is_empty() {
        return check(
            "clock",
            Verdict::Skip,
            "no messages from others yet to compare with",
        );
    }
    let mut gaps: Vec<i64> = gaps.into_values().collect();
    gaps.sort_unstable();
    let median = gaps[gaps.len() / 2];
    let seconds = median / 1000;
    let detail = format!(
        "{} s from {} sender(s)' clocks",
        if seconds >= 0 {
            format!("+{seconds}")
        } else {
            seconds.to_string()
        },
        gaps.len()
    );
    if median.unsigned_abs() > u64::try_from(CLOCK_SKEW.as_millis()).unwrap_or(u64::MAX) {
        check("clock", Verdict::Warn, detail).fix(
            "set the clock right (`timedatectl set-ntp true`); disappearing messages expire by their senders' clocks",
        )
    } else {
        check("clock", Verdict::Ok, detail)
    }
}

async fn sender_gaps(api: &mut Api) -> Result<HashMap<String, i64>, Failure> {
    let me: Whoami = api.call(Request::Whoami {}).await?;
    let contacts: Vec<Contact> = api.call(Request::ContactList {}).await?;
    let rooms: Vec<Room> = api.call(Request::RoomList {}).await?;
    let targets = contacts
        .iter()
        .map(|c| c.user_id.to_string())
        .chain(rooms.iter().map(|r| r.room_id.to_string()))
        .take(CLOCK_CONVERSATIONS);
    let mut gaps: HashMap<String, i64> = HashMap::new();
    for target in targets {
        let messages: Vec<Message> = api
            .call(Request::Messages {
                target,
                limit: Some(50),
                after: None,
            })
            .await?;
        for m in messages {
            let sender = m.sender.to_string();
            let (Some(at), Ok(ts)) = (m.received_at, i64::try_from(m.ts)) else {
                continue;
            };
            if sender == me.identity.user_id {
                continue;
            }
            let gap = i64::try_from(at).unwrap_or(i64::MAX) - ts;
            gaps.entry(sender)
                .and_modify(|g| *g = (*g).min(gap))
                .or_insert(gap);
        }
    }
    Ok(gaps)
}

async fn without_daemon(
    home: &Home,
    source: &Source,
    settings: Option<&crate::config::Settings>,
    checks: &mut Vec<Check>,
) {
    checks.push(
        check(
            "daemon",
            Verdict::Warn,
            "not running (the API socket does not answer)",
        )
        .fix("start it: `safemeet up`"),
    );
    checks.push(match source.existing().and_then(|p| home.unlock(&p)) {
        Ok(_) => check("store", Verdict::Ok, "opens with the passphrase"),
        Err(Failure::Locked(what)) => check("store", Verdict::Fail, what).fix(
            "another process holds it: a daemon that does not answer? stop it, then start again",
        ),
        Err(Failure::WrongPassphrase) => {
            check("store", Verdict::Fail, "the passphrase does not open it")
        }
        Err(e) => check("store", Verdict::Fail, e.to_string()),
    });
    let Some(settings) = settings else {
        checks.push(check("nat", Verdict::Skip, "checked when the daemon runs"));
        checks.push(check(
            "clock",
            Verdict::Skip,
            "checked when the daemon runs",
        ));
        return;
    };
    match crate::ports::ensure_free(&settings.listen) {
        Ok(()) => checks.push(check("ports", Verdict::Ok, "the listen ports are free")),
        Err(e) => checks.push(
            check("ports", Verdict::Fail, e.to_string())
                .fix("stop what holds the port, or choose another (--listen, config.toml)"),
        ),
    }
    for relay in &settings.relay {
        checks.push(match tcp_target(relay) {
            None => check(
                format!("relay {relay}"),
                Verdict::Skip,
                "not a TCP address: checked when the daemon runs",
            ),
            Some(target) => {
                match tokio::time::timeout(CONNECT_WAIT, tokio::net::TcpStream::connect(target))
                    .await
                {
                    Ok(Ok(_)) => check(
                        format!("relay {relay}"),
                        Verdict::Ok,
                        "reachable (its reservation is checked when the daemon runs)",
                    ),
                    _ => check(format!("relay {relay}"), Verdict::Fail, "does not answer")
                        .fix("check that the relay runs and this machine can reach it"),
                }
            }
        });
    }
    checks.push(check("nat", Verdict::Skip, "checked when the daemon runs"));
    checks.push(check(
        "clock",
        Verdict::Skip,
        "checked when the daemon runs",
    ));
}

/// The IP and TCP port of a multiaddr.
fn tcp_target(addr: &Multiaddr) -> Option<std::net::SocketAddr> {
    let mut ip = None;
    for p in addr.iter() {
        match p {
            Protocol::Ip4(a) => ip = Some(std::net::IpAddr::V4(a)),
            Protocol::Ip6(a) => ip = Some(std::net::IpAddr::V6(a)),
            Protocol::Tcp(port) => return ip.map(|ip| std::net::SocketAddr::new(ip, port)),
            _ => {}
        }
    }
    None
}

fn disk(dir: &Path) -> Check {
    match rustix::fs::statvfs(dir) {
        Ok(s) => {
            let free = s.f_bavail.saturating_mul(s.f_frsize);
            let detail = format!("{} MiB free where the profile is", free >> 20);
            if free < DISK_FULL {
                check("disk", Verdict::Fail, detail)
                    .fix("free space: the store cannot take messages in when the disk is full")
            } else if free < DISK_LOW {
                check("disk", Verdict::Warn, detail).fix("free space soon")
            } else {
                check("disk", Verdict::Ok, detail)
            }
        }
        Err(e) => check("disk", Verdict::Skip, format!("could not tell: {e}")),
    }
}
