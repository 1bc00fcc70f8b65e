//! The commands of a conversation: `send` (text or a file), `download`,
//! `files`, `presence`, `typing`, `messages`, `listen` and `mute`, each
//! turned into the messenger action that carries it out.

use clap::Subcommand;

use crate::failure::Failure;
use crate::home::Home;
use crate::messenger::Action;
use crate::signals_cli::SignalAction;
use crate::transfers::FileAction;

#[derive(Debug, Subcommand)]
pub(crate) enum ConversationCommand {
    /// Send a message. TARGET: a contact's name, username or user id (a
    /// direct message), or a room's name or room id.
    Send {
        /// Who to send to.
        target: String,
        /// The text (at most 16 KiB of UTF-8), or `-` to read it from
        /// standard input (one trailing newline dropped).
        #[arg(required_unless_present = "file", conflicts_with = "file")]
        text: Option<String>,
        /// Send this file instead (up to `max_file_mib`, 100 MiB unless
        /// set); each recipient device fetches it from this daemon.
        #[arg(long, value_name = "PATH")]
        file: Option<std::path::PathBuf>,
        /// A caption for the file.
        #[arg(long, requires = "file", default_value = "")]
        caption: String,
    },
    /// Save the file of a message (`messages --ids`), checked whole, to
    /// PATH: a new file, or a directory to save it in under its own name
    /// (default: the current directory). Waits while it is arriving.
    Download {
        /// The file message's event id.
        #[arg(value_parser = crate::parse::<safemeet_proto::EventId>)]
        event_id: safemeet_proto::EventId,
        /// Where to save it.
        path: Option<std::path::PathBuf>,
    },
    /// The files on their way, and those done since the daemon started.
    Files,
    /// Your contacts' presence (with `settings set presence on`).
    Presence,
    /// Tell a conversation's members you are typing (it shows for 5 s),
    /// or that you stopped (with `settings set typing on`).
    Typing {
        /// The conversation (as for `send`).
        target: String,
        /// You stopped typing.
        #[arg(long, conflicts_with = "who")]
        stop: bool,
        /// Instead, show who is typing there now.
        #[arg(long)]
        who: bool,
    },
    /// Show the messages with a contact or in a room, oldest first (Lamport order).
    Messages {
        /// Which conversation (as for `send`).
        target: String,
        /// How many of the latest messages.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=10_000))]
        limit: u64,
        /// Show each message's event id (for `edit` and `redact`).
        #[arg(long)]
        ids: bool,
    },
    /// Print events as they happen (from now on, or after --since CURSOR).
    /// (Human lines; `--json` for one JSON object per event.)
    Listen {
        /// Replay the events after this cursor first (0: the whole
        /// history). Without it, only what happens from now on.
        #[arg(long)]
        since: Option<u64>,
        /// Show a desktop notification for each message from someone
        /// else in a conversation that is not muted (`mute`).
        #[arg(long)]
        notify: bool,
        /// What the notification shows: the sender and the text, the
        /// sender only, or just "New message".
        #[arg(long, value_enum, default_value = "full", env = "SAFEMEET_NOTIFY_TEXT")]
        notify_text: crate::alerts::NotifyText,
        /// Run CMD (with `sh -c`) for each such message, the event as one
        /// line of JSON on its standard input.
        #[arg(long, value_name = "CMD")]
        exec: Option<String>,
    },
    /// Mute a conversation's notifications on this device (`listen
    /// --notify`/`--exec`); its messages still arrive.
    Mute {
        /// The conversation (as for `send`).
        target: String,
        /// Unmute it instead.
        #[arg(long)]
        off: bool,
    },
}

impl ConversationCommand {
    /// The action that carries the command out.
    pub(crate) fn action(self, home: &Home) -> Result<Action, Failure> {
        Ok(match self {
            Self::Send {
                target,
                text,
                file,
                caption,
            } => match (text, file) {
                (_, Some(path)) => Action::Files(FileAction::Send {
                    target,
                    path,
                    caption,
                }),
                (Some(text), None) if text == "-" => Action::Send {
                    target,
                    text: crate::cli::text_from_stdin()?,
                },
                (text, None) => Action::Send {
                    target,
                    text: text.unwrap_or_default(),
                },
            },
            Self::Download { event_id, path } => {
                Action::Files(FileAction::Download { event_id, path })
            }
            Self::Files => Action::Files(FileAction::List),
            Self::Messages { target, limit, ids } => Action::Messages { target, limit, ids },
            Self::Presence => Action::Signals(SignalAction::Presence),
            Self::Typing { target, stop, who } => Action::Signals(if who {
                SignalAction::Typers { target }
            } else {
                SignalAction::Typing {
                    target,
                    typing: !stop,
                }
            }),
            Self::Listen {
                since,
                notify,
                notify_text,
                exec,
            } => Action::Listen {
                since,
                alerts: (notify || exec.is_some()).then(|| crate::alerts::AlertOptions {
                    desktop: notify,
                    exec,
                    text: notify_text,
                    socket: home.socket(),
                }),
            },
            Self::Mute { target, off } => Action::Signals(SignalAction::Mute {
                target,
                muted: !off,
            }),
        })
    }
}

/// `messages`: prints a conversation's messages (with "read by"), then
/// marks it read (a read receipt goes out if they are on).
pub(crate) async fn messages(
    api: &mut crate::messenger::Api,
    json: bool,
    target: String,
    limit: u64,
    ids: bool,
) -> Result<(), Failure> {
    use crate::messenger::{local_time, print_json, state_word};
    use safemeet_api::{Request, State};
    let messages = api.all_messages(&target, limit).await?;
    if json {
        print_json(&messages)?;
    } else {
        let names = api.names().await?;
        for m in &messages {
            let state = match (m.state, m.stored_until) {
                (State::StoredAtRelay, Some(until)) => {
                    format!("stored at relay until {}", local_time(until))
                }
                (state, _) => state_word(state).to_owned(),
            };
            let id = if ids {
                format!("{} ", m.event_id)
            } else {
                String::new()
            };
            let who = names.of(&m.sender);
            let when = local_time(m.ts);
            let text = if m.redacted {
                "(deleted)".to_owned()
            } else if m.edited {
                format!("{} (edited)", crate::transfers::message_text(m))
            } else {
                crate::transfers::message_text(m)
            };
            let read = if m.read_by.is_empty() {
                String::new()
            } else {
                let by: Vec<String> = m.read_by.iter().map(|u| names.of(u)).collect();
                format!(" (read by {})", by.join(", "))
            };
            println!("{id}{when} [{state}] {who}: {text}{read}");
        }
    }
    // Shown: read (a read receipt goes out if they are on).
    let _: safemeet_api::signals::Signaled = api.call(Request::Read { target }).await?;
    Ok(())
}
