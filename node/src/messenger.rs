//! The messaging commands.
//!
//! Every messaging command is a typed [`Request`]: sent to the running
//! daemon through its API socket, or, when no daemon runs, served by
//! [`dispatch`] with an engine the command starts itself (without
//! listening). Either way the same code serves it; what an in-process
//! command sends stays in the outbox for the daemon to deliver later.

use anyhow::Context;
use safemeet_api::{
    Client, ClientError, Contact, ContactAdded, ContactRemoved, Identity, InviteText, Message,
    Request, Response, Room, RoomBanned, RoomCreated, RoomInvited, RoomLeft, RoomRemoved, Sent,
    State, UnexpectedResponse, Whoami, dispatch,
};
use safemeet_crypto::machine::CryptoMachine;
use safemeet_engine::{Config as EngineConfig, Handle as EngineHandle};

use serde::Serialize;

use crate::failure::Failure;
use crate::home::{Home, ProfileStore};
use crate::passphrase::Source;

/// A messaging command.
#[derive(Debug)]
pub(crate) enum Action {
    Whoami,
    Invite {
        qr: bool,
    },
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
        ids: bool,
    },
    Listen {
        since: Option<u64>,
        alerts: Option<crate::alerts::AlertOptions>,
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
    RoomRemove {
        room: String,
        target: String,
        ban: bool,
    },
    RoomList,
    /// Blocking, contact settings, room invitations.
    People(crate::people::PeopleAction),
    Files(crate::transfers::FileAction),
    Call(crate::calls_cli::CallAction),
    Signals(crate::signals_cli::SignalAction),
    /// This user's devices.
    Devices(crate::devices::DeviceAction),
    /// Show or change the profile: a `profile.*` or `email.*` request.
    Profile(Request),
    /// `export.readable`.
    Export(Request),
    /// Redact, edit, expiry and retention.
    Rights(crate::rights::RightsAction),
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?)
}

pub(crate) fn identity(machine: &CryptoMachine<safemeet_store_sled::SledStore>) -> Identity {
    let account = machine.account();
    Identity {
        user_id: account.user_id().to_string(),
        device_id: account.device_id().to_string(),
        peer_id: account.peer_id().to_string(),
        username: account.profile().username.as_str().to_owned(),
        display_name: account.profile().display_name.as_str().to_owned(),
        emails: account
            .profile()
            .emails
            .iter()
            .map(|e| e.as_str().to_owned())
            .collect(),
    }
}

/// Where a node keeps files, the largest it sends or fetches, and how
/// fast it serves them.
#[derive(Debug)]
pub(crate) struct FileSettings {
    pub(crate) dir: std::path::PathBuf,
    pub(crate) max_bytes: u64,
    pub(crate) rate: Option<u64>,
}

pub(crate) fn start_engine(
    store: ProfileStore,
    net: safemeet_net::Config,
    log: std::sync::Arc<crate::security::SecurityLog>,
    files: Option<FileSettings>,
) -> Result<(EngineHandle, Identity), Failure> {
    let machine = CryptoMachine::open(store)?;
    let (blobs, max_file_bytes, file_rate) = match files {
        Some(f) => {
            let dir = safemeet_store_sled::BlobDir::open(&f.dir)
                .map_err(|e| Failure::Other(anyhow::anyhow!(e).context("the files directory")))?;
            (
                Some(safemeet_engine::Blobs(std::sync::Arc::new(dir))),
                f.max_bytes,
                f.rate,
            )
        }
        None => (None, safemeet_engine::DEFAULT_MAX_FILE_BYTES, None),
    };
    let identity = identity(&machine);
    let reader = log.clone();
    let config = EngineConfig {
        net,
        security: Some(safemeet_engine::SecuritySink(std::sync::Arc::new(
            move |event: &str, subject: Option<String>| log.record(event, subject),
        ))),
        security_reader: Some(safemeet_engine::SecurityReader(std::sync::Arc::new(
            move || reader.read_back(),
        ))),
        blobs,
        max_file_bytes,
        file_rate,
        ..EngineConfig::default()
    };
    let engine =
        safemeet_engine::start(machine, config).map_err(|e| Failure::Other(anyhow::anyhow!(e)))?;
    Ok((engine, identity))
}

/// Runs a messaging command against the daemon, or in-process.
pub(crate) fn run(home: &Home, source: &Source, json: bool, action: Action) -> Result<(), Failure> {
    let rt = runtime()?;
    rt.block_on(async {
        match Client::connect(&home.socket()).await {
            Ok(client) => perform(Api::Daemon(client), json, action).await,
            Err(_) if matches!(action, Action::Whoami) => {
                crate::commands::whoami(home, source, json)
            }
            Err(_) => in_process(home, source, json, action).await,
        }
    })
}

/// Runs the command with an engine of its own (no daemon runs): the
/// same requests, served by [`safemeet_api::dispatch`] directly.
async fn in_process(
    home: &Home,
    source: &Source,
    json: bool,
    action: Action,
) -> Result<(), Failure> {
    home.require_account()?;
    let (store, log) = home.unlock(&source.existing()?)?;
    let net = safemeet_net::Config {
        listen: Vec::new(),
        mdns: false,
        ..safemeet_net::Config::default()
    };
    // The same file limits as the daemon would use.
    let settings = home.settings()?;
    let files = Some(FileSettings {
        dir: home.blobs_dir(),
        max_bytes: settings.max_file_bytes,
        rate: settings.file_rate,
    });
    let (engine, identity) = start_engine(store, net, std::sync::Arc::new(log), files)?;
    let api = Api::InProcess {
        engine: engine.clone(),
        identity,
    };
    let result = perform(api, json, action).await;
    let _ = engine.shutdown().await;
    result
}

/// Where a command's requests go: the daemon's socket, or an engine this
/// process runs.
pub(crate) enum Api {
    Daemon(Client),
    InProcess {
        engine: EngineHandle,
        identity: Identity,
    },
}

impl Api {
    /// Serves `request`; `T` is the answer's type for that method.
    pub(crate) async fn call<T>(&mut self, request: Request) -> Result<T, Failure>
    where
        T: TryFrom<Response, Error = UnexpectedResponse>,
    {
        let response = match self {
            Api::Daemon(client) => client.request(&request).await.map_err(client_failure)?,
            Api::InProcess { engine, identity } => dispatch(engine, identity, request)
                .await
                .map_err(api_failure)?,
        };
        T::try_from(response).map_err(|e| Failure::Other(e.into()))
    }

    /// What to call each user: "me", a contact's name, else a short id.
    pub(crate) async fn names(&mut self) -> Result<Names, Failure> {
        let who: Whoami = self.call(Request::Whoami {}).await?;
        let contacts: Vec<Contact> = self.call(Request::ContactList {}).await?;
        Ok(Names {
            me: who.identity.user_id,
            contacts: contacts
                .into_iter()
                .map(|c| {
                    let name = c.name.unwrap_or(c.display_name);
                    (c.user_id.to_string(), shown(&name))
                })
                .collect(),
        })
    }

    /// Every message `messages` has for `target` (the latest `limit`),
    /// following the pages the answers are cut into.
    pub(crate) async fn all_messages(
        &mut self,
        target: &str,
        limit: u64,
    ) -> Result<Vec<Message>, Failure> {
        let mut all: Vec<Message> = Vec::new();
        // Each page holds at least one message and the window at most
        // `limit`; the bound only matters if messages keep arriving.
        for _ in 0..=limit.saturating_mul(2) {
            let page: Vec<Message> = self
                .call(Request::Messages {
                    target: target.to_owned(),
                    limit: Some(limit),
                    after: all.last().map(|m| m.cursor),
                })
                .await?;
            if page.is_empty() {
                break;
            }
            all.extend(page);
            if all.len() as u64 >= limit {
                break;
            }
        }
        Ok(all)
    }
}

/// A failed request from the daemon: bad input is a usage error.
pub(crate) fn client_failure(e: ClientError) -> Failure {
    match e {
        ClientError::Rpc {
            message,
            kind: Some(kind),
            ..
        } if safemeet_api::is_input_kind(&kind) => Failure::Usage(message),
        other => Failure::Other(other.into()),
    }
}

/// A failed request served in-process: bad input is a usage error.
pub(crate) fn api_failure(e: safemeet_api::Error) -> Failure {
    if e.is_input() {
        Failure::Usage(e.to_string())
    } else {
        Failure::Other(e.into())
    }
}

pub(crate) fn print_json<T: Serialize>(v: &T) -> Result<(), Failure> {
    println!("{}", serde_json::to_string(v).context("encoding JSON")?);
    Ok(())
}

/// Text from others as a terminal shows it: control characters (escape
/// sequences, carriage returns, newlines that would fake another line)
/// are shown escaped instead of acted upon.
pub(crate) fn shown(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

async fn perform(mut api: Api, json: bool, action: Action) -> Result<(), Failure> {
    match action {
        Action::Whoami => {
            let who: Whoami = api.call(Request::Whoami {}).await?;
            if json {
                print_json(&who)?;
            } else {
                let id = &who.identity;
                println!("user id:      {}", id.user_id);
                println!("device id:    {}", id.device_id);
                println!("peer id:      {}", id.peer_id);
                println!("username:     {}", id.username);
                println!("display name: {}", id.display_name);
                for e in &id.emails {
                    println!("email:        {e}");
                }
                for a in &who.listen_addrs {
                    println!("listening:    {a}");
                }
            }
        }
        Action::Profile(request) => {
            let profile: safemeet_api::ProfileView = api.call(request).await?;
            if json {
                print_json(&profile)?;
            } else {
                println!("username:     {}", profile.username);
                println!("display name: {}", profile.display_name);
                for e in &profile.emails {
                    println!("email:        {e}");
                }
                if let Some(a) = &profile.avatar {
                    println!("avatar:       {}, {} bytes", a.media_type, a.bytes);
                }
                println!("version:      {}", profile.version);
            }
        }
        Action::Export(request) => {
            let done: safemeet_api::Exported = api.call(request).await?;
            if json {
                print_json(&done)?;
            } else {
                println!(
                    "wrote {} files to {}: {} messages in {} conversations, and no key",
                    done.files, done.dir, done.messages, done.conversations
                );
            }
        }
        Action::Invite { qr } => {
            let invite: InviteText = api.call(Request::Invite {}).await?;
            if json {
                print_json(&invite)?;
            } else {
                println!("{}", invite.invite);
                if qr || std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                    crate::qr::print(&invite.invite);
                }
            }
        }
        Action::ContactAdd { invite, name } => {
            let added: ContactAdded = api.call(Request::ContactAdd { invite, name }).await?;
            if json {
                print_json(&added)?;
            } else {
                println!("added contact {}", added.user_id);
            }
        }
        Action::ContactList => {
            let contacts: Vec<Contact> = api.call(Request::ContactList {}).await?;
            if json {
                print_json(&contacts)?;
            } else {
                for c in &contacts {
                    println!(
                        "{}\t{}\t{}\t{}{}",
                        shown(c.name.as_deref().unwrap_or("-")),
                        c.username,
                        shown(&c.display_name),
                        c.user_id,
                        if c.deleted { "\t(account deleted)" } else { "" }
                    );
                }
            }
        }
        Action::ContactRemove { target } => {
            let removed: ContactRemoved = api.call(Request::ContactRemove { target }).await?;
            if json {
                print_json(&removed)?;
            } else {
                println!("removed contact {}", removed.removed);
            }
        }
        Action::Send { target, text } => {
            let sent: Sent = api
                .call(Request::Send {
                    target,
                    text,
                    file: None,
                })
                .await?;
            if json {
                print_json(&sent)?;
            } else {
                println!("sent {}", sent.event_id);
            }
        }
        Action::Messages { target, limit, ids } => {
            crate::conversation::messages(&mut api, json, target, limit, ids).await?;
        }
        Action::RoomCreate { name, members } => {
            let created: RoomCreated = api
                .call(Request::RoomCreate {
                    name: name.clone(),
                    members,
                })
                .await?;
            if json {
                print_json(&created)?;
            } else {
                println!("created room {} ({})", shown(&name), created.room_id);
            }
        }
        Action::RoomInvite { room, target } => {
            let invited: RoomInvited = api
                .call(Request::RoomInvite {
                    room: room.clone(),
                    target: target.clone(),
                })
                .await?;
            if json {
                print_json(&invited)?;
            } else {
                println!("invited {} to {}", shown(&target), shown(&room));
            }
        }
        Action::RoomLeave { room } => {
            let left: RoomLeft = api.call(Request::RoomLeave { room: room.clone() }).await?;
            if json {
                print_json(&left)?;
            } else {
                println!("left {}", shown(&room));
            }
        }
        Action::RoomRemove { room, target, ban } => {
            let (room_, target_) = (room.clone(), target.clone());
            if ban {
                let banned: RoomBanned = api
                    .call(Request::RoomBan {
                        room: room_,
                        target: target_,
                    })
                    .await?;
                if json {
                    print_json(&banned)?;
                } else {
                    println!("banned {} from {}", shown(&target), shown(&room));
                }
            } else {
                let removed: RoomRemoved = api
                    .call(Request::RoomRemove {
                        room: room_,
                        target: target_,
                    })
                    .await?;
                if json {
                    print_json(&removed)?;
                } else {
                    println!("removed {} from {}", shown(&target), shown(&room));
                }
            }
        }
        Action::RoomList => {
            let rooms: Vec<Room> = api.call(Request::RoomList {}).await?;
            if json {
                print_json(&rooms)?;
            } else {
                for r in &rooms {
                    println!(
                        "{}\t{}\t{} members",
                        shown(&r.name),
                        r.room_id,
                        r.members.len()
                    );
                }
            }
        }
        Action::Listen { since, alerts } => {
            return api.listen(since, json, alerts).await;
        }
        Action::People(action) => return crate::people::perform(&mut api, json, action).await,
        Action::Files(action) => return crate::transfers::perform(&mut api, json, action).await,
        Action::Call(action) => return crate::calls_cli::perform(&mut api, json, action).await,
        Action::Signals(action) => {
            return crate::signals_cli::perform(&mut api, json, action).await;
        }
        Action::Devices(action) => return crate::devices::perform(&mut api, json, action).await,
        Action::Rights(action) => return crate::rights::perform(&mut api, json, action).await,
    }
    Ok(())
}

/// How a message state reads in the human output.
pub(crate) fn state_word(state: State) -> &'static str {
    match state {
        State::Received => "received",
        State::Sent => "sent",
        State::Delivered => "delivered",
        State::StoredAtRelay => "stored at relay",
        _ => "unknown",
    }
}

/// Names of users, for people reading.
#[derive(Debug)]
pub(crate) struct Names {
    me: String,
    contacts: std::collections::HashMap<String, String>,
}

impl Names {
    pub(crate) fn of(&self, user: &safemeet_proto::UserId) -> String {
        let id = user.to_string();
        if id == self.me {
            return "me".to_owned();
        }
        match self.contacts.get(&id) {
            Some(name) => name.clone(),
            None => format!("{}…", id.chars().take(12).collect::<String>()),
        }
    }
}

/// A time in ms since the epoch in this machine's time zone, to the minute.
pub(crate) fn local_time(ms: u64) -> String {
    use chrono::TimeZone;
    i64::try_from(ms)
        .ok()
        .and_then(|ms| chrono::Local.timestamp_millis_opt(ms).single())
        .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_else(|| utc(ms))
}

/// A time (ms since the Unix epoch) as `YYYY-MM-DD HH:MM UTC`.
pub(crate) fn utc(ms: u64) -> String {
    safemeet_proto::Timestamp::from_millis(ms)
        .map(|t| t.utc_minutes())
        .unwrap_or_else(|_| format!("{ms} ms"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

    #[test]
    fn times_show_as_utc_dates() {
        assert_eq!(super::utc(0), "1970-01-01 00:00 UTC");
        // 2026-12-04 14:30 UTC, and the last minute of a leap day.
        assert_eq!(super::utc(1_796_394_600_000), "2026-12-04 14:30 UTC");
        assert_eq!(super::utc(1_709_251_140_000), "2024-02-29 23:59 UTC");
    }
}
