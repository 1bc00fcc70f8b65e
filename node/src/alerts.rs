//! `listen --notify` and `listen --exec CMD`: a desktop notification, or
//! a command run with the event as JSON on its standard input, for each
//! message from someone else in a conversation that is not muted.
//!
//! Desktop notifications go through the freedesktop D-Bus interface
//! (`notify-rust`); where there is none, `listen` says so once and goes
//! on. Commands run one at a time, in order, each given 30 s; at most 64
//! wait, and past that a message's command is skipped (and said so), so
//! a slow command never holds up `listen`.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use safemeet_api::{Client, Event, EventKind, Request, Response};
use safemeet_proto::RoomId;
use safemeet_proto::clock::{Clock, SystemClock};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::failure::Failure;
use crate::messenger::{Api, Names};

/// The muted conversations are asked for again at most this often.
const MUTED_FRESH: Duration = Duration::from_secs(2);
/// Commands waiting to run, at most.
const EXEC_QUEUE: usize = 64;
/// A command's time to finish before it is killed.
const EXEC_TIME: Duration = Duration::from_secs(30);

/// What a notification shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum NotifyText {
    /// The sender and the text.
    Full,
    /// The sender only: "New message from alice".
    Sender,
    /// Nothing: "New message".
    Hidden,
}

/// How `listen` alerts.
#[derive(Debug)]
pub(crate) struct AlertOptions {
    pub(crate) desktop: bool,
    pub(crate) exec: Option<String>,
    pub(crate) text: NotifyText,
    /// The daemon's socket, to ask for the muted conversations again.
    pub(crate) socket: PathBuf,
}

/// Alerts for one `listen`.
pub(crate) struct Alerts {
    options: AlertOptions,
    names: Names,
    me: String,
    muted: HashSet<RoomId>,
    muted_at: std::time::Instant,
    engine: Option<safemeet_engine::Handle>,
    exec: Option<mpsc::Sender<Vec<u8>>>,
    desktop_warned: bool,
}

impl Alerts {
    pub(crate) async fn new(api: &mut Api, options: AlertOptions) -> Result<Self, Failure> {
        let who: safemeet_api::Whoami = api.call(Request::Whoami {}).await?;
        let names = api.names().await?;
        let muted: Vec<RoomId> = api.call(Request::MuteList {}).await?;
        let engine = match api {
            Api::InProcess { engine, .. } => Some(engine.clone()),
            Api::Daemon(_) => None,
        };
        let exec = options.exec.clone().map(spawn_runner);
        Ok(Alerts {
            options,
            names,
            me: who.identity.user_id,
            muted: muted.into_iter().collect(),
            muted_at: SystemClock.instant(),
            engine,
            exec,
            desktop_warned: false,
        })
    }

    /// The muted conversations, asked for again when stale.
    async fn refresh_muted(&mut self) {
        if self.muted_at.elapsed() < MUTED_FRESH {
            return;
        }
        self.muted_at = SystemClock.instant();
        let fresh = match &self.engine {
            Some(engine) => engine.muted().await.ok(),
            None => match Client::connect(&self.options.socket).await {
                Ok(mut client) => match client.request(&Request::MuteList {}).await {
                    Ok(Response::Muted(m)) => Some(m),
                    _ => None,
                },
                Err(_) => None,
            },
        };
        if let Some(m) = fresh {
            self.muted = m.into_iter().collect();
        }
    }

    /// Alerts for `event` if it is a message from someone else in a
    /// conversation that is not muted.
    pub(crate) async fn event(&mut self, event: &Event) {
        let EventKind::Message { room_id, message } = &event.kind else {
            return;
        };
        if message.sender.to_string() == self.me {
            return;
        }
        self.refresh_muted().await;
        if self.muted.contains(room_id) {
            return;
        }
        if let Some(exec) = &self.exec {
            match serde_json::to_vec(event) {
                Ok(json) => {
                    if exec.try_send(json).is_err() {
                        eprintln!("listen: too many commands waiting; one message's is skipped");
                    }
                }
                Err(e) => eprintln!("listen: the event could not be written as JSON: {e}"),
            }
        }
        if self.options.desktop {
            let sender = self.names.of(&message.sender);
            let (summary, body) = match self.options.text {
                NotifyText::Full => (sender, crate::transfers::message_text(message)),
                NotifyText::Sender => (format!("New message from {sender}"), String::new()),
                NotifyText::Hidden => ("New message".to_owned(), String::new()),
            };
            let shown = notify_rust::Notification::new()
                .appname("SafeMeet")
                .summary(&summary)
                .body(&body)
                .show_async()
                .await;
            if let Err(e) = shown
                && !self.desktop_warned
            {
                self.desktop_warned = true;
                eprintln!("listen: no desktop notification could be shown ({e}); going on without");
            }
        }
    }
}

/// Runs `command` (with `sh -c`) once per event it is sent, in order,
/// the event's JSON on standard input.
fn spawn_runner(command: String) -> mpsc::Sender<Vec<u8>> {
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(EXEC_QUEUE);
    tokio::spawn(async move {
        while let Some(json) = rx.recv().await {
            let child = tokio::process::Command::new("sh")
                .arg("-c")
                .arg(&command)
                .stdin(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn();
            let mut child = match child {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("listen: --exec could not start: {e}");
                    continue;
                }
            };
            if let Some(mut stdin) = child.stdin.take() {
                let _ = stdin.write_all(&json).await;
                let _ = stdin.write_all(b"\n").await;
            }
            match tokio::time::timeout(EXEC_TIME, child.wait()).await {
                Ok(Ok(status)) if !status.success() => {
                    eprintln!("listen: --exec exited with {status}");
                }
                Ok(_) => {}
                Err(_) => {
                    let _ = child.kill().await;
                    eprintln!("listen: --exec took longer than 30 s and was stopped");
                }
            }
        }
    });
    tx
}
