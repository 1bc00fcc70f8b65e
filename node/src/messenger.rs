//! The daemon and the messaging commands.
//!
//! Every messaging command talks to the running daemon through its API
//! socket. When no daemon runs, the command starts the engine in-process
//! (without listening), serves the API on a private socket for itself, and
//! uses exactly the same calls; what it sends stays in the outbox for the
//! daemon to deliver later.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use libp2p::Multiaddr;
use safemeet_api::{Client, ClientError, Identity};
use safemeet_crypto::machine::CryptoMachine;
use safemeet_engine::{EngineConfig, EngineHandle};
use serde_json::{Value, json};

use crate::failure::Failure;
use crate::home::{Home, ProfileStore};
use crate::passphrase::Source;

/// A messaging command.
#[derive(Debug)]
pub(crate) enum Action {
    Whoami,
    Invite,
    ContactAdd {
        invite: String,
        name: Option<String>,
    },
    ContactList,
    ContactRemove {
        target: String,
    },
    Send {
        target: String,
        text: String,
    },
    Messages {
        target: String,
        limit: u64,
    },
    Listen {
        since: u64,
    },
    RoomCreate {
        name: String,
        members: Vec<String>,
    },
    RoomInvite {
        room: String,
        target: String,
    },
    RoomLeave {
        room: String,
    },
    RoomList,
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?)
}

fn identity(machine: &CryptoMachine<safemeet_store::SledStore>) -> Identity {
    let account = machine.account();
    Identity {
        user_id: account.user_id().to_string(),
        device_id: account.device_id().to_string(),
        peer_id: account.peer_id().to_string(),
        username: account.profile().username.as_str().to_owned(),
        display_name: account.profile().display_name.as_str().to_owned(),
    }
}

fn start_engine(
    store: ProfileStore,
    net: safemeet_net::Config,
) -> Result<(EngineHandle, Identity), Failure> {
    let machine = CryptoMachine::open(store)?;
    let identity = identity(&machine);
    let config = EngineConfig {
        net,
        ..EngineConfig::default()
    };
    let engine =
        safemeet_engine::start(machine, config).map_err(|e| Failure::Other(anyhow::anyhow!(e)))?;
    Ok((engine, identity))
}

/// How `safemeet daemon` joins the network.
#[derive(Debug)]
pub(crate) struct Network {
    pub(crate) listen: Vec<Multiaddr>,
    pub(crate) bootstrap: Vec<Multiaddr>,
    pub(crate) no_mdns: bool,
    pub(crate) relays: Vec<Multiaddr>,
}

/// `safemeet daemon`: runs the node and the API until SIGINT or SIGTERM.
pub(crate) fn daemon(
    home: &Home,
    source: &Source,
    json: bool,
    network: Network,
) -> Result<(), Failure> {
    let Network {
        listen,
        bootstrap,
        no_mdns,
        relays,
    } = network;
    if let Some(bad) = relays.iter().find(|a| {
        !a.iter()
            .any(|p| matches!(p, libp2p::multiaddr::Protocol::P2p(_)))
    }) {
        return Err(Failure::Usage(format!(
            "--relay {bad}: a relay address needs /p2p/<peer id> (as `safemeet relay` prints it)"
        )));
    }
    let store = home.unlock(&source.existing()?)?;
    let rt = runtime()?;
    rt.block_on(async {
        let mut net = safemeet_net::Config {
            bootstrap,
            relays,
            mdns: !no_mdns,
            ..safemeet_net::Config::default()
        };
        if !listen.is_empty() {
            net.listen = listen;
        }
        let (engine, identity) = start_engine(store, net)?;
        let socket = home.socket();
        let server = {
            let (socket, engine, identity) = (socket.clone(), engine.clone(), identity.clone());
            tokio::spawn(async move { safemeet_api::serve(&socket, engine, identity).await })
        };
        let addrs = wait_for_addrs(&engine).await;
        let full: Vec<String> = addrs
            .iter()
            .map(|a| format!("{a}/p2p/{}", engine.peer_id()))
            .collect();
        if json {
            println!(
                "{}",
                json!({ "listen_addrs": full, "socket": socket.display().to_string() })
            );
        } else {
            for a in &full {
                println!("listening on {a}");
            }
            println!("API socket: {}", socket.display());
        }
        tracing::info!("daemon running");
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        let outcome = tokio::select! {
            _ = tokio::signal::ctrl_c() => Ok(()),
            _ = term.recv() => Ok(()),
            r = server => match r {
                Ok(Err(e)) => Err(Failure::Other(anyhow::anyhow!("API socket failed: {e}"))),
                _ => Err(Failure::Other(anyhow::anyhow!("API server stopped"))),
            },
        };
        let _ = engine.shutdown().await;
        let _ = std::fs::remove_file(&socket);
        tracing::info!("daemon stopped; outbox saved");
        outcome
    })
}

async fn wait_for_addrs(engine: &EngineHandle) -> Vec<Multiaddr> {
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    for _ in 0..250 {
        tick.tick().await;
        if let Ok(addrs) = engine.listen_addrs().await
            && !addrs.is_empty()
        {
            return addrs;
        }
    }
    Vec::new()
}

/// Runs a messaging command against the daemon, or in-process.
pub(crate) fn run(home: &Home, source: &Source, json: bool, action: Action) -> Result<(), Failure> {
    let rt = runtime()?;
    rt.block_on(async {
        match Client::connect(&home.socket()).await {
            Ok(client) => perform(client, json, action).await,
            Err(_) if matches!(action, Action::Whoami) => {
                crate::commands::whoami(home, source, json)
            }
            Err(_) => in_process(home, source, json, action).await,
        }
    })
}

async fn in_process(
    home: &Home,
    source: &Source,
    json: bool,
    action: Action,
) -> Result<(), Failure> {
    let store = home.unlock(&source.existing()?)?;
    let net = safemeet_net::Config {
        listen: Vec::new(),
        mdns: false,
        ..safemeet_net::Config::default()
    };
    let (engine, identity) = start_engine(store, net)?;
    let socket = home.private_socket();
    let server = {
        let (socket, engine) = (socket.clone(), engine.clone());
        tokio::spawn(async move { safemeet_api::serve(&socket, engine, identity).await })
    };
    let client = connect_when_ready(&socket).await;
    let result = match client {
        Ok(client) => perform(client, json, action).await,
        Err(e) => Err(Failure::Other(anyhow::anyhow!(e))),
    };
    let _ = engine.shutdown().await;
    server.abort();
    let _ = std::fs::remove_file(&socket);
    result
}

async fn connect_when_ready(socket: &Path) -> Result<Client, ClientError> {
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut last = None;
    for _ in 0..500 {
        tick.tick().await;
        match Client::connect(socket).await {
            Ok(c) => return Ok(c),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or(ClientError::Io("the API did not start".into())))
}

fn failure(e: ClientError) -> Failure {
    match e {
        ClientError::Rpc {
            message,
            kind: Some(kind),
            ..
        } if matches!(
            kind.as_str(),
            "bad_invite" | "unknown_contact" | "invalid_input"
        ) =>
        {
            Failure::Usage(message)
        }
        other => Failure::Other(anyhow::anyhow!(other)),
    }
}

/// `text` as a QR code for a terminal (two rows per character), if it fits.
fn qr_art(text: &str) -> Option<String> {
    let code =
        qrcode::QrCode::with_error_correction_level(text.as_bytes(), qrcode::EcLevel::L).ok()?;
    Some(
        code.render::<qrcode::render::unicode::Dense1x2>()
            .quiet_zone(true)
            .build(),
    )
}

fn print_qr(text: &str) {
    match qr_art(text) {
        Some(art) => println!("{art}"),
        None => tracing::debug!("the invite is too long for a QR code"),
    }
}

fn print_json(v: &Value) {
    println!("{v}");
}

async fn perform(mut client: Client, json: bool, action: Action) -> Result<(), Failure> {
    match action {
        Action::Whoami => {
            let v = client.call("whoami", json!({})).await.map_err(failure)?;
            if json {
                print_json(&v);
            } else {
                for (label, key) in [
                    ("user id:     ", "user_id"),
                    ("device id:   ", "device_id"),
                    ("peer id:     ", "peer_id"),
                    ("username:    ", "username"),
                    ("display name:", "display_name"),
                ] {
                    println!("{label} {}", v[key].as_str().unwrap_or(""));
                }
                for a in v["listen_addrs"].as_array().into_iter().flatten() {
                    println!("listening:    {}", a.as_str().unwrap_or(""));
                }
            }
        }
        Action::Invite => {
            let v = client.call("invite", json!({})).await.map_err(failure)?;
            if json {
                print_json(&v);
            } else {
                let invite = v["invite"].as_str().unwrap_or("");
                println!("{invite}");
                if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                    print_qr(invite);
                }
            }
        }
        Action::ContactAdd { invite, name } => {
            let v = client
                .call("contact.add", json!({ "invite": invite, "name": name }))
                .await
                .map_err(failure)?;
            if json {
                print_json(&v);
            } else {
                println!("added contact {}", v["user_id"].as_str().unwrap_or(""));
            }
        }
        Action::ContactList => {
            let v = client
                .call("contact.list", json!({}))
                .await
                .map_err(failure)?;
            if json {
                print_json(&v);
            } else {
                for c in v.as_array().into_iter().flatten() {
                    let name = c["name"].as_str().unwrap_or("-");
                    println!(
                        "{name}\t{}\t{}\t{}",
                        c["username"].as_str().unwrap_or(""),
                        c["display_name"].as_str().unwrap_or(""),
                        c["user_id"].as_str().unwrap_or("")
                    );
                }
            }
        }
        Action::ContactRemove { target } => {
            let v = client
                .call("contact.remove", json!({ "target": target }))
                .await
                .map_err(failure)?;
            if json {
                print_json(&v);
            } else {
                println!("removed contact {}", v["removed"].as_str().unwrap_or(""));
            }
        }
        Action::Send { target, text } => {
            let v = client
                .call("send", json!({ "target": target, "text": text }))
                .await
                .map_err(failure)?;
            if json {
                print_json(&v);
            } else {
                println!("sent {}", v["event_id"].as_str().unwrap_or(""));
            }
        }
        Action::Messages { target, limit } => {
            let v = client
                .call("messages", json!({ "target": target, "limit": limit }))
                .await
                .map_err(failure)?;
            if json {
                print_json(&v);
            } else {
                for m in v.as_array().into_iter().flatten() {
                    let state = match (m["state"].as_str(), m["stored_until"].as_u64()) {
                        (Some("stored_at_relay"), Some(until)) => {
                            format!("stored at relay until {}", utc(until))
                        }
                        (state, _) => state.unwrap_or("").to_owned(),
                    };
                    println!(
                        "[{state}] {}: {}",
                        m["sender"].as_str().unwrap_or(""),
                        m["text"].as_str().unwrap_or("")
                    );
                }
            }
        }
        Action::RoomCreate { name, members } => {
            let v = client
                .call("room.create", json!({ "name": name, "members": members }))
                .await
                .map_err(failure)?;
            if json {
                print_json(&v);
            } else {
                println!(
                    "created room {name} ({})",
                    v["room_id"].as_str().unwrap_or("")
                );
            }
        }
        Action::RoomInvite { room, target } => {
            let v = client
                .call("room.invite", json!({ "room": room, "target": target }))
                .await
                .map_err(failure)?;
            if json {
                print_json(&v);
            } else {
                println!("invited {target} to {room}");
            }
        }
        Action::RoomLeave { room } => {
            let v = client
                .call("room.leave", json!({ "room": room }))
                .await
                .map_err(failure)?;
            if json {
                print_json(&v);
            } else {
                println!("left {room}");
            }
        }
        Action::RoomList => {
            let v = client.call("room.list", json!({})).await.map_err(failure)?;
            if json {
                print_json(&v);
            } else {
                for r in v.as_array().into_iter().flatten() {
                    println!(
                        "{}\t{}\t{} members",
                        r["name"].as_str().unwrap_or(""),
                        r["room_id"].as_str().unwrap_or(""),
                        r["members"].as_array().map_or(0, Vec::len)
                    );
                }
            }
        }
        Action::Listen { since } => {
            let mut sub = client.subscribe(since).await.map_err(failure)?;
            let interrupted = tokio::signal::ctrl_c();
            tokio::pin!(interrupted);
            loop {
                tokio::select! {
                    _ = &mut interrupted => return Ok(()),
                    next = sub.next() => match next.map_err(failure)? {
                        Some(event) => print_json(&event),
                        None => return Ok(()),
                    },
                }
            }
        }
    }
    Ok(())
}

/// A time (ms since the Unix epoch) as `YYYY-MM-DD HH:MM UTC`.
fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

    #[test]
    fn an_invite_sized_text_fits_a_qr_code() {
        let invite = format!("safemeet:{}", "a".repeat(1800));
        let art = super::qr_art(&invite).unwrap();
        let rows: Vec<&str> = art.lines().collect();
        assert!(rows.len() > 20, "{} rows", rows.len());
        assert!(
            rows.iter()
                .all(|r| r.chars().count() == rows[0].chars().count())
        );
        assert!(art.contains('█') || art.contains('▀') || art.contains('▄'));
        assert!(super::qr_art(&"x".repeat(10_000)).is_none());
    }

    #[test]
    fn times_show_as_utc_dates() {
        assert_eq!(super::utc(0), "1970-01-01 00:00 UTC");
        // 2026-12-04 14:30 UTC, and the last minute of a leap day.
        assert_eq!(super::utc(1_796_394_600_000), "2026-12-04 14:30 UTC");
        assert_eq!(super::utc(1_709_251_140_000), "2024-02-29 23:59 UTC");
    }
}
