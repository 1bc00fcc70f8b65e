//! `safemeet`: the SafeMeet command line.
//!
//! This binary is thin wiring: it parses the command line, sets up tracing,
//! finds the profile directory, reads the passphrase, and calls the library
//! crates. Every command accepts `--json`; errors have stable codes and exit
//! statuses (see `docs/cli.md`).

/// Prints a line on stdout, as `std::println!` does, except that a reader
/// that went away (`safemeet messages bob | head -1`) ends the process
/// quietly with status 0 instead of a panic. Every module of the binary
/// uses this one (it shadows the standard macro).
macro_rules! println {
    () => {
        $crate::output::print_line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::output::print_line(format_args!($($arg)*))
    };
}

/// `print!`, with the same care as [`println!`].
macro_rules! print {
    ($($arg:tt)*) => {
        $crate::output::print_text(format_args!($($arg)*))
    };
}

mod account;
mod alerts;
mod archive;
mod calls_cli;
mod cli;
mod commands;
mod config;
mod conversation;
mod daemon;
mod devices;
mod doctor;
mod failure;
mod home;
mod listen;
mod logging;
mod manual;
mod messenger;
mod notify;
mod output;
mod passphrase;
mod people;
mod ports;
mod qr;
mod relay;
mod rights;
mod security;
mod shutdown;
mod signals_cli;
mod transfers;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use safemeet_api::Request;
use safemeet_crypto::at_rest::Passphrase;
use safemeet_proto::{DisplayName, Email, Username};

use crate::cli::{
    AccountCommand, AuditCommand, ConfigCommand, ContactCommand, DaemonArgs, DeviceCommand,
    EmailCommand, ProfileCommand, RequestCommand, RoomCommand,
};
use crate::failure::Failure;
use crate::people::PeopleAction;
use crate::rights::RightsAction;

/// SafeMeet: a peer-to-peer, end-to-end encrypted messenger.
#[derive(Debug, Parser)]
#[command(name = "safemeet", version = cli::long_version(), about, propagate_version = true)]
struct Cli {
    /// Profile directory (default: the XDG data directory, `safemeet/`).
    #[arg(long, global = true, env = "SAFEMEET_HOME", value_name = "DIR")]
    home: Option<PathBuf>,

    /// Print machine-readable JSON on stdout (errors as JSON on stderr).
    #[arg(long, global = true)]
    json: bool,

    /// Read the passphrase from this file (first line). Otherwise
    /// SAFEMEET_PASSPHRASE, otherwise a prompt on the terminal.
    #[arg(long, global = true, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a new account with this device as its first device, or
    /// (with --link) join this device to an account of yours.
    Init {
        /// Your handle, shown to contacts: a-z, 0-9, '.', '_', '-' (1-32).
        #[arg(long, value_parser = parse::<Username>, required_unless_present = "link")]
        username: Option<Username>,
        /// Join the account whose device showed this link (`safemeet
        /// device link` there) as a new device of it.
        #[arg(long, value_name = "LINK", conflicts_with_all = ["username", "display_name", "email"])]
        link: Option<String>,
        /// With --link: days of message history to bring over.
        #[arg(long, value_name = "DAYS", default_value_t = 30, requires = "link",
              value_parser = clap::value_parser!(u32).range(0..=3650))]
        history: u32,
        /// With --link: a name for this device, seen only on your devices
        /// (`safemeet device rename` changes it).
        #[arg(long, value_name = "NAME", requires = "link")]
        device_name: Option<String>,
        /// Your name as contacts see it (default: the username).
        #[arg(long, value_parser = parse::<DisplayName>)]
        display_name: Option<DisplayName>,
        /// An e-mail address to show contacts (repeatable).
        #[arg(long, value_parser = parse::<Email>)]
        email: Vec<Email>,
    },
    /// Show this account's user id, device id, peer id and profile (and,
    /// with a daemon running, its listen addresses).
    Whoami,
    /// Run the node: deliver and receive messages, serve the local API
    /// and the web app. Flags not given come from the environment, then
    /// config.toml (`safemeet config show`); --listen, --bootstrap and
    /// --relay given here are remembered there.
    Daemon(DaemonArgs),
    /// The first-run shortcut: create an account if there is none (asks
    /// for a username and passphrase, or takes --username and the usual
    /// passphrase sources), then run the daemon and say where the web app
    /// is. Run again, it just starts.
    Up {
        /// The username for a new account.
        #[arg(long, value_parser = parse::<Username>)]
        username: Option<Username>,
        /// The display name for a new account (default: the username).
        #[arg(long, value_parser = parse::<DisplayName>)]
        display_name: Option<DisplayName>,
        #[command(flatten)]
        daemon: DaemonArgs,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish,
    /// powershell). For bash: `safemeet completions bash >
    /// ~/.local/share/bash-completion/completions/safemeet`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), or with --dir write one page per
    /// command there (`man -l safemeet.1` reads one).
    Man {
        /// A directory for safemeet.1 and safemeet-COMMAND.1 pages.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Check what the daemon needs: the store, the API socket, the ports,
    /// each relay and its reservation, NAT, the clock against contacts',
    /// disk space. Each check has a verdict and, when something is wrong,
    /// a fix. Exit status 1 when one fails.
    Doctor,
    /// The daemon's settings file: `config show` (what a daemon started
    /// now would use), `config default` (every key, documented), `config
    /// path`.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Run a relay: keep encrypted envelopes for devices that are offline
    /// (no account needed; its identity and mailboxes live under --home).
    Relay(relay::RelayArgs),
    /// Print an invite for others to add you as a contact.
    Invite {
        /// Draw the QR code even when the output is not a terminal.
        #[arg(long)]
        qr: bool,
    },
    /// Manage contacts.
    #[command(subcommand)]
    Contact(ContactCommand),
    /// Export your data. `export FILE`: your account in one file sealed
    /// under a passphrase, to move it to another machine (`import`); it
    /// holds the master key. `--readable DIR`: everything this device
    /// holds about you, without any key, as JSON and Markdown files a
    /// person can open (profile, devices, contacts, rooms, every message,
    /// the security log).
    Export {
        /// A new file for the archive.
        #[arg(required_unless_present = "readable", conflicts_with = "readable")]
        file: Option<PathBuf>,
        /// A new or empty directory to write into.
        #[arg(long, value_name = "DIR")]
        readable: Option<PathBuf>,
    },
    /// Take in an account archive (`export FILE`) as a new device of the
    /// same user, in a home with no account. Asks for the archive's
    /// passphrase; the new home is sealed under it.
    Import {
        /// The archive.
        file: PathBuf,
        /// Revoke the device that exported it: contacts drop it as this
        /// device meets them, and it gets nothing new.
        #[arg(long)]
        retire_old: bool,
        /// A name for this device, seen only on your devices.
        #[arg(long, value_name = "NAME")]
        device_name: Option<String>,
    },
    /// Your security log: account created, unlock failures, devices linked
    /// or revoked, verifications, contacts' new devices, profile changes,
    /// exports. `audit verify` checks that no entry was changed or removed.
    Audit {
        #[command(subcommand)]
        action: Option<AuditCommand>,
        /// Only entries at or after this time (ms since the Unix epoch).
        #[arg(long, value_name = "MS")]
        since: Option<u64>,
    },
    /// Your account: `account delete`.
    #[command(subcommand)]
    Account(AccountCommand),
    /// Your profile as contacts see it: show it, change the display name.
    #[command(subcommand)]
    Profile(ProfileCommand),
    /// The e-mail addresses in your profile.
    #[command(subcommand)]
    Email(EmailCommand),
    /// This user's devices: list them, link a new one, name or revoke one.
    #[command(subcommand)]
    Device(DeviceCommand),
    /// Verify a contact: both of you run this, compare the seven emoji
    /// (or the numbers) shown, and answer y if they match (on standard
    /// input). A mismatch cancels.
    Verify {
        /// The contact: name, username or user id.
        target: String,
    },
    #[command(flatten)]
    Conversation(conversation::ConversationCommand),
    /// Audio calls: `call TARGET` rings a contact's devices; `call
    /// accept`, `call decline`, `call hangup`, `call status`.
    Call(calls_cli::CallCommand),
    /// Join the meeting of a room (start one if none runs): up to 8
    /// devices, each hearing all the others. `call hangup` leaves it;
    /// `call status` shows it.
    Meet(calls_cli::MeetCommand),
    /// Delete a message for everyone: yours, or any in a room you
    /// administer. Every member's device removes its text.
    Redact {
        /// The message's event id (`messages --ids`).
        #[arg(value_parser = parse::<safemeet_proto::EventId>)]
        event_id: safemeet_proto::EventId,
    },
    /// Replace the text of one of your messages, everywhere; it shows as
    /// edited and the earlier text is not kept.
    Edit {
        /// The message's event id (`messages --ids`).
        #[arg(value_parser = parse::<safemeet_proto::EventId>)]
        event_id: safemeet_proto::EventId,
        /// The new text.
        text: String,
    },
    /// This device's own limits: `settings set retention 30d`.
    #[command(subcommand)]
    Settings(rights::SettingsCommand),
    /// Manage group rooms.
    #[command(subcommand)]
    Room(RoomCommand),
    /// Message requests: first messages from people who hold your invite
    /// but are not your contacts.
    #[command(subcommand)]
    Request(RequestCommand),
}

fn parse<T>(s: &str) -> Result<T, String>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    s.parse().map_err(|e: T::Err| e.to_string())
}

fn main() -> ExitCode {
    // First, while this is the only thread: see `passphrase::take_from_env`.
    let (env_passphrase, not_wiped) = passphrase::take_from_env();
    let cli = Cli::parse();
    logging::init(matches!(cli.command, Command::Relay(_)));
    if let Some(e) = not_wiped {
        tracing::warn!(
            error = %e,
            "SAFEMEET_PASSPHRASE could not be wiped from this process's memory; prefer --passphrase-file"
        );
    }
    let json = cli.json;
    match run(cli, env_passphrase) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            failure.report(json);
            ExitCode::from(failure.exit_code())
        }
    }
}

fn run(cli: Cli, env_passphrase: Option<Passphrase>) -> Result<(), Failure> {
    let home_given = cli.home.is_some();
    let home = home::Home::resolve(cli.home)?;
    let source = passphrase::Source::new(cli.passphrase_file, env_passphrase);
    match cli.command {
        Command::Init {
            username,
            link,
            history,
            device_name,
            display_name,
            email,
        } => match (link, username) {
            (Some(link), _) => {
                devices::init_linked(&home, &source, cli.json, &link, history, device_name)
            }
            (None, Some(username)) => {
                commands::init(&home, &source, cli.json, username, display_name, email)
            }
            (None, None) => Err(Failure::Usage("--username or --link is needed".into())),
        },
        Command::Whoami => messenger::run(&home, &source, cli.json, messenger::Action::Whoami),
        Command::Daemon(args) => {
            let network = daemon::Network::configured(&home, home_given, args.flags())?;
            daemon::daemon(&home, &source, cli.json, network)
        }
        Command::Up {
            username,
            display_name,
            daemon: args,
        } => {
            let network = daemon::Network::configured(&home, home_given, args.flags())?;
            commands::up(&home, &source, cli.json, username, display_name, network)
        }
        Command::Doctor => doctor::doctor(&home, home_given, &source, cli.json),
        Command::Completions { shell } => {
            manual::completions(<Cli as clap::CommandFactory>::command(), shell, cli.json)
        }
        Command::Man { dir } => {
            manual::man(<Cli as clap::CommandFactory>::command(), dir, cli.json)
        }
        Command::Config(action) => {
            config::run(action, &config::path(home.dir(), home_given)?, cli.json)
        }
        Command::Relay(args) => relay::run(&home, cli.json, args),
        Command::Invite { qr } => {
            messenger::run(&home, &source, cli.json, messenger::Action::Invite { qr })
        }
        Command::Audit { action, since } => security::audit(
            &home,
            &source,
            cli.json,
            since,
            matches!(action, Some(AuditCommand::Verify)),
        ),
        Command::Export { file, readable } => {
            // The node writes the files: it may run elsewhere than here,
            // so the path is made absolute first.
            let absolute = |p: &PathBuf| {
                std::path::absolute(p)
                    .map(|a| a.display().to_string())
                    .map_err(|e| Failure::Usage(format!("{}: {e}", p.display())))
            };
            match (file, readable) {
                (Some(file), _) => {
                    let file = absolute(&file)?;
                    let passphrase = source.new_passphrase(&[])?;
                    let request = Request::ExportArchive {
                        file,
                        passphrase: safemeet_api::Secret::new(passphrase.expose()),
                    };
                    rights(&home, &source, cli.json, RightsAction::Archive(request))
                }
                (None, Some(dir)) => {
                    let request = Request::ExportReadable {
                        dir: absolute(&dir)?,
                    };
                    messenger::run(&home, &source, cli.json, messenger::Action::Export(request))
                }
                (None, None) => Err(Failure::Usage("FILE or --readable DIR is needed".into())),
            }
        }
        Command::Import {
            file,
            retire_old,
            device_name,
        } => archive::import(&home, &source, cli.json, &file, retire_old, device_name),
        Command::Verify { target } => messenger::run(
            &home,
            &source,
            cli.json,
            messenger::Action::Devices(devices::DeviceAction::Verify { target }),
        ),
        Command::Account(AccountCommand::Delete { yes }) => {
            account::delete(&home, &source, cli.json, yes)
        }
        Command::Profile(c) => {
            let request = match c {
                ProfileCommand::Show => Request::ProfileShow {},
                ProfileCommand::Set {
                    display_name,
                    avatar,
                    remove_avatar,
                } => Request::ProfileSet {
                    display_name: display_name.map(|n| n.as_str().to_owned()),
                    avatar: avatar.map(|f| rights::avatar_file(&f)).transpose()?,
                    remove_avatar,
                },
            };
            messenger::run(
                &home,
                &source,
                cli.json,
                messenger::Action::Profile(request),
            )
        }
        Command::Email(c) => {
            let request = match c {
                EmailCommand::Add { email } => Request::EmailAdd {
                    email: email.as_str().to_owned(),
                },
                EmailCommand::Remove { email } => Request::EmailRemove {
                    email: email.as_str().to_owned(),
                },
            };
            messenger::run(
                &home,
                &source,
                cli.json,
                messenger::Action::Profile(request),
            )
        }
        Command::Device(c) => {
            let action = match c {
                DeviceCommand::List => devices::DeviceAction::List,
                DeviceCommand::Link { with_master } => devices::DeviceAction::Link { with_master },
                DeviceCommand::Revoke { device_id } => devices::DeviceAction::Revoke { device_id },
                DeviceCommand::Rename { device_id, name } => {
                    devices::DeviceAction::Rename { device_id, name }
                }
            };
            messenger::run(&home, &source, cli.json, messenger::Action::Devices(action))
        }
        Command::Contact(c) => {
            let action = match c {
                ContactCommand::Add { invite, name } => {
                    messenger::Action::ContactAdd { invite, name }
                }
                ContactCommand::List => messenger::Action::ContactList,
                ContactCommand::Verify { invite } => {
                    messenger::Action::Devices(devices::DeviceAction::VerifyInvite { invite })
                }
                ContactCommand::Remove { target } => messenger::Action::ContactRemove { target },
                ContactCommand::Block { target } => {
                    messenger::Action::People(PeopleAction::Block { target })
                }
                ContactCommand::Unblock { target } => {
                    messenger::Action::People(PeopleAction::Unblock { target })
                }
                ContactCommand::Blocked => messenger::Action::People(PeopleAction::Blocked),
                ContactCommand::Set {
                    target,
                    auto_accept_invites,
                    ask_invites,
                } => messenger::Action::People(PeopleAction::Set {
                    target,
                    auto_accept_invites: match (auto_accept_invites, ask_invites) {
                        (true, _) => Some(true),
                        (_, true) => Some(false),
                        _ => None,
                    },
                }),
            };
            messenger::run(&home, &source, cli.json, action)
        }
        Command::Request(c) => {
            let action = match c {
                RequestCommand::List => PeopleAction::Requests,
                RequestCommand::Accept { target } => PeopleAction::Accept { target },
                RequestCommand::Decline { target } => PeopleAction::DeclineRequest { target },
            };
            messenger::run(&home, &source, cli.json, messenger::Action::People(action))
        }
        Command::Conversation(c) => {
            let action = c.action(&home)?;
            messenger::run(&home, &source, cli.json, action)
        }
        Command::Call(c) => {
            let action = messenger::Action::Call(c.action()?);
            messenger::run(&home, &source, cli.json, action)
        }
        Command::Meet(c) => {
            let action = messenger::Action::Call(c.action()?);
            messenger::run(&home, &source, cli.json, action)
        }
        Command::Redact { event_id } => {
            rights(&home, &source, cli.json, RightsAction::Redact(event_id))
        }
        Command::Edit { event_id, text } => {
            rights(&home, &source, cli.json, RightsAction::Edit(event_id, text))
        }
        Command::Settings(c) => {
            use rights::Setting;
            let set = match c {
                rights::SettingsCommand::Set {
                    setting: Setting::Retention { duration },
                } => Some(duration.0),
                rights::SettingsCommand::Set { setting } => {
                    let action = signals_cli::SignalAction::set(setting);
                    return messenger::run(&home, &source, cli.json, action);
                }
                rights::SettingsCommand::Show => None,
            };
            rights(&home, &source, cli.json, RightsAction::Retention(set))
        }
        Command::Room(c) => {
            let action = match c {
                RoomCommand::Create { name, members } => {
                    messenger::Action::RoomCreate { name, members }
                }
                RoomCommand::Invite { room, contact } => messenger::Action::RoomInvite {
                    room,
                    target: contact,
                },
                RoomCommand::Leave { room } => messenger::Action::RoomLeave { room },
                RoomCommand::Remove { room, member } => messenger::Action::RoomRemove {
                    room,
                    target: member,
                    ban: false,
                },
                RoomCommand::Ban { room, member } => messenger::Action::RoomRemove {
                    room,
                    target: member,
                    ban: true,
                },
                RoomCommand::Set { target, expire } => {
                    messenger::Action::Rights(RightsAction::Expiry {
                        target,
                        set: Some(expire.0),
                    })
                }
                RoomCommand::Settings { target } => {
                    messenger::Action::Rights(RightsAction::Expiry { target, set: None })
                }
                RoomCommand::List => messenger::Action::RoomList,
                RoomCommand::Invitations => messenger::Action::People(PeopleAction::Invitations),
                RoomCommand::Join { room } => {
                    messenger::Action::People(PeopleAction::Join { room })
                }
                RoomCommand::Decline { room } => {
                    messenger::Action::People(PeopleAction::Decline { room })
                }
            };
            messenger::run(&home, &source, cli.json, action)
        }
    }
}

fn rights(
    home: &home::Home,
    source: &passphrase::Source,
    json: bool,
    action: RightsAction,
) -> Result<(), Failure> {
    messenger::run(home, source, json, messenger::Action::Rights(action))
}
