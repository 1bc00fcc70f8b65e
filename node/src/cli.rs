//! The daemon's flags, and the subcommands under `safemeet audit|account|
//! profile|email|device|contact|request|room|config` (`Command` and `run` are in `main.rs`), what
//! `--version` prints, and a message's text from standard input.

use std::path::PathBuf;

use clap::Subcommand;
use safemeet_proto::{DisplayName, Email};

use crate::failure::Failure;
use crate::parse;
use crate::rights;

/// How the daemon joins the network and serves its API.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct DaemonArgs {
    /// Address to listen on (repeatable). Default: all IPv4 interfaces,
    /// TCP and QUIC, free ports.
    #[arg(long, value_name = "MULTIADDR", value_parser = parse::<libp2p::Multiaddr>)]
    listen: Vec<libp2p::Multiaddr>,
    /// A peer to connect to at start, with /p2p/<peer id> (repeatable).
    #[arg(long, value_name = "MULTIADDR", value_parser = parse::<libp2p::Multiaddr>)]
    bootstrap: Vec<libp2p::Multiaddr>,
    /// Do not discover peers on the local network (mDNS).
    #[arg(long)]
    no_mdns: bool,
    /// A relay to be reachable through, with /p2p/<peer id> (repeatable):
    /// the daemon holds a circuit there and lists it among its addresses
    /// (in invites too).
    #[arg(long, value_name = "MULTIADDR", value_parser = parse::<libp2p::Multiaddr>)]
    relay: Vec<libp2p::Multiaddr>,
    /// Serve the web app and the HTTP API here (a loopback IP:PORT), or
    /// `off`. Default: 127.0.0.1:7373, or a free port if that is taken.
    #[arg(long, value_name = "ADDR|off", value_parser = parse::<crate::daemon::Web>)]
    web: Option<crate::daemon::Web>,
}

impl DaemonArgs {
    pub(crate) fn flags(self) -> crate::config::Flags {
        crate::config::Flags {
            listen: self.listen,
            bootstrap: self.bootstrap,
            relay: self.relay,
            web: self.web,
            no_mdns: self.no_mdns,
        }
    }
}

/// `safemeet config`.
#[derive(Debug, Subcommand)]
pub(crate) enum ConfigCommand {
    /// The settings a daemon started now would use, and the file's path.
    Show,
    /// Every key at its default, documented: a starting config.toml.
    Default,
    /// Where config.toml is.
    Path,
}

#[derive(Debug, Subcommand)]
pub(crate) enum AuditCommand {
    /// Check every entry: each opens under this account's key and follows
    /// the one before (exit 1 and the first bad line otherwise).
    Verify,
}

#[derive(Debug, Subcommand)]
pub(crate) enum AccountCommand {
    /// Delete the account: every contact is told (a tombstone signed with
    /// your master key), your other devices are revoked, every room is
    /// left, your mailboxes are purged from your relays (each signs a
    /// receipt), then this device's key file is overwritten and its store
    /// removed. Asks you to type the username. Stop the daemon first. If
    /// it is stopped half way, run it again: it finishes.
    Delete {
        /// Do not ask (for scripts).
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ProfileCommand {
    /// Show your profile (what contacts see).
    Show,
    /// Change your display name or avatar; every contact's devices get
    /// the new signed version (on the device that holds the master key).
    #[command(group = clap::ArgGroup::new("change").required(true).multiple(true))]
    Set {
        /// The new display name (1-64 characters).
        #[arg(long, value_parser = parse::<DisplayName>, group = "change")]
        display_name: Option<DisplayName>,
        /// A PNG or JPEG: its metadata (location, camera, times, text) is
        /// removed here, and it must then fit in 48 KiB.
        #[arg(
            long,
            value_name = "FILE",
            group = "change",
            conflicts_with = "remove_avatar"
        )]
        avatar: Option<PathBuf>,
        /// Remove your avatar.
        #[arg(long, group = "change")]
        remove_avatar: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum EmailCommand {
    /// Add an e-mail address to your profile (contacts see it).
    Add {
        /// The address.
        #[arg(value_parser = parse::<Email>)]
        email: Email,
    },
    /// Remove an e-mail address from your profile.
    Remove {
        /// The address.
        #[arg(value_parser = parse::<Email>)]
        email: Email,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum DeviceCommand {
    /// List this user's devices.
    List,
    /// Show a link (and QR code) for a new device: run `safemeet init
    /// --link LINK` there. It works once, within 10 minutes.
    Link {
        /// Give the new device a copy of the master key, so that it can
        /// link and revoke devices too (see ARCHITECTURE.md for the risk).
        #[arg(long)]
        with_master: bool,
    },
    /// Revoke another of this user's devices: it gets no key for anything
    /// sent from then on.
    Revoke {
        /// The device id (see `device list`).
        device_id: String,
    },
    /// Name one of this user's devices (1-64 characters). Its other devices
    /// learn the name; contacts never see it.
    Rename {
        /// The device id (see `device list`).
        device_id: String,
        /// The new name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ContactCommand {
    /// Verify a contact from their invite, scanned from their screen or
    /// pasted in person: the devices whose keys match the ones held are
    /// marked verified.
    Verify {
        /// Their invite text (`safemeet:…`).
        invite: String,
    },
    /// Add a contact from their invite.
    Add {
        /// The invite text (`safemeet:…`).
        invite: String,
        /// A name for them, used as TARGET in other commands.
        #[arg(long)]
        name: Option<String>,
    },
    /// List contacts.
    List,
    /// Remove a contact (what they send from now on is refused until you
    /// add them again). TARGET: name, username or user id.
    Remove {
        /// Who to remove.
        target: String,
    },
    /// Block a user: their messages are refused without a delivery
    /// receipt and nothing of theirs is stored. TARGET: contact name,
    /// username or user id (a contact or not).
    Block {
        /// Who to block.
        target: String,
    },
    /// Unblock a user.
    Unblock {
        /// Who to unblock.
        target: String,
    },
    /// List the blocked users.
    Blocked,
    /// Change a contact's settings.
    Set {
        /// The contact (name, username or user id).
        target: String,
        /// Join the rooms this contact invites you to without asking.
        #[arg(long, conflicts_with = "ask_invites")]
        auto_accept_invites: bool,
        /// Ask before joining the rooms this contact invites you to (the default).
        #[arg(long)]
        ask_invites: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum RequestCommand {
    /// List the message requests.
    List,
    /// Accept a request: its sender becomes a contact and their messages show.
    Accept {
        /// The requester (username or user id).
        target: String,
    },
    /// Decline a request: it and its messages are deleted.
    Decline {
        /// The requester (username or user id).
        target: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum RoomCommand {
    /// Create a room with you as its admin.
    Create {
        /// Its name, used as TARGET in other commands.
        name: String,
        /// A contact to add (name, username or user id; repeatable).
        #[arg(long = "member", value_name = "CONTACT")]
        members: Vec<String>,
    },
    /// Add a contact to a room you administer.
    Invite {
        /// The room (name or room id).
        room: String,
        /// The contact (name, username or user id).
        contact: String,
    },
    /// Leave a room.
    Leave {
        /// The room (name or room id).
        room: String,
    },
    /// Remove a member from a room you administer; the others get a new
    /// room secret.
    Remove {
        /// The room (name or room id).
        room: String,
        /// The member (contact name, username or user id).
        member: String,
    },
    /// Remove a member from a room you administer and bar them from it.
    Ban {
        /// The room (name or room id).
        room: String,
        /// The member (contact name, username or user id).
        member: String,
    },
    /// Set how long a conversation's messages are kept, on every member's
    /// device (a room's admins, or either of you in a direct conversation).
    Set {
        /// The room (name or room id), or a contact for your direct
        /// conversation.
        target: String,
        /// Delete each message this long after it was sent (90s, 5m, 12h,
        /// 30d, 2w), the ones already older included; `off` keeps them.
        #[arg(long, value_parser = rights::parse_limit)]
        expire: rights::Limit,
    },
    /// Show a conversation's settings.
    Settings {
        /// The room (name or room id), or a contact.
        target: String,
    },
    /// List the rooms you are in.
    List,
    /// List the room invitations waiting for your consent.
    Invitations,
    /// Join a room you were invited to.
    Join {
        /// The room (its name in the invitation, or its room id).
        room: String,
    },
    /// Decline a room invitation.
    Decline {
        /// The room (its name in the invitation, or its room id).
        room: String,
    },
}

/// What `--version` prints: the version, the commit, and the versions of
/// the formats this build speaks.
pub(crate) fn long_version() -> &'static str {
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TEXT.get_or_init(|| {
        format!(
            "{} (commit {})\nprotocols: frame {}, invite {}, link {}, mailbox {}, room state {}, archive {}",
            env!("CARGO_PKG_VERSION"),
            env!("SAFEMEET_COMMIT"),
            safemeet_proto::padding::FRAME_VERSION,
            safemeet_proto::invite::INVITE_VERSION,
            safemeet_proto::link::LINK_VERSION,
            safemeet_proto::mailbox::VERSION,
            safemeet_proto::event::ROOM_STATE_VERSION,
            safemeet_crypto::archive::VERSION,
        )
    })
}

/// A message's text from standard input: at most the protocol's limit,
/// UTF-8, with one trailing newline dropped (`echo hi | safemeet send bob -`).
pub(crate) fn text_from_stdin() -> Result<String, Failure> {
    use std::io::Read as _;
    let max = safemeet_proto::limits::MAX_MESSAGE_TEXT_BYTES;
    let mut bytes = Vec::new();
    std::io::stdin()
        .take(max as u64 + 2)
        .read_to_end(&mut bytes)
        .map_err(|e| Failure::Usage(format!("reading standard input: {e}")))?;
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
    }
    if bytes.len() > max {
        return Err(Failure::Usage(format!(
            "the text on standard input is longer than the limit of {} KiB",
            max / 1024
        )));
    }
    String::from_utf8(bytes)
        .map_err(|_| Failure::Usage("the text on standard input is not UTF-8".into()))
}
