//! The SafeMeet client engine: contacts, direct messages and group rooms,
//! the send and receive pipelines, the outbox, relays and the event log.
//!
//! The engine's logic is [`Core`], a state machine with no runtime,
//! network or clock: inputs go in with the time, outputs come out, and
//! [`Core::poll_timeout`] says when it next wants to be woken. [`start`]
//! runs a `Core` over the real network in an actor on its own thread, and
//! callers talk to it through a cloneable [`Handle`].
//!
//! - **Send**: text → a room event, encrypted and committed to the outbox
//!   *together with* this device's own timeline entry and event-log entry →
//!   delivered directly to every member device (DMs, and group rooms of at
//!   most [`DIRECT_ROOM_MAX_DEVICES`] devices, which have no gossip topic
//!   at all), or published on a larger room's topic, gossiped only among
//!   its member devices → acknowledged → removed from the outbox and
//!   marked delivered. Undelivered items are retried with exponential
//!   backoff, also after a restart (the outbox is durable).
//! - **Receive**: frame → checks → decrypt → timeline entry and event-log
//!   entry committed with the replay record → flushed → answered.
//!   Repeats are acknowledged again but stored once.
//! - **Offline**: a delivery that cannot reach a device goes to that
//!   device's relays instead; the message shows as "stored at relay until
//!   T". The engine drains its own mailboxes on start and every
//!   [`Config::mailbox_poll`].
//! - **Rooms**: a group room's states form a chain from its creator (the
//!   room id commits to the creator; each state names the hash of the one
//!   it replaces and is taken only from an admin of it), and its secret,
//!   hence its gossip topic, changes whenever a member leaves or is
//!   removed or banned ([`Handle::room_remove`], [`Handle::room_ban`]).
//!
//! ```no_run
//! # async fn run(machine: safemeet_crypto::machine::CryptoMachine<safemeet_store::MemoryStore>,
//! #              bob: safemeet_proto::UserId) -> Result<(), safemeet_engine::Error> {
//! let engine = safemeet_engine::start(machine, safemeet_engine::Config::default())?;
//! let event = engine.send_dm(bob, "hello").await?;
//! engine.shutdown().await?;
//! # Ok(()) }
//! ```

mod acks;
mod actor;
mod admission;
pub mod archive;
mod avatar;
mod blocks;
mod call_signals;
mod calls;
mod chain;
mod config;
mod contacts;
mod core;
mod deletion;
mod device_lists;
mod error;
mod event_log;
mod events;
mod expiry;
mod file_pieces;
mod file_records;
mod files;
#[doc(hidden)]
pub mod fuzzing;
mod gossip;
mod handle;
mod headers;
#[cfg(feature = "test-hooks")]
mod hooks;
mod invitations;
pub mod link;
pub mod link_io;
mod mailbox;
mod mutes;
mod outbox;
mod own_devices;
mod parked;
mod placement;
mod profile;
mod receive;
mod records;
mod relay_client;
mod relays;
mod requests;
mod revisions;
mod rooms;
mod send;
mod signals;
mod stats;
mod timeline;
mod timeline_versions;
mod topics;
mod verify;
mod waiting;

pub use crate::actor::start;
pub use crate::avatar::AvatarInfo;
pub use crate::blocks::MAX_LISTED;
pub use crate::call_signals::{
    CallLog, CallOutcome, CallRecord, IncomingCallSignal, MAX_MET, MeetingRecord,
};
pub use crate::calls::{
    CallAudio, CallPath, CallState, CallStats, CallView, MEDIA_SILENCE, REPORT_EVERY, RING_FOR,
};
pub use crate::config::{
    Blobs, Config, DEFAULT_MAX_FILE_BYTES, SecurityEntries, SecurityFn, SecurityReadFn,
    SecurityReader, SecurityRecord, SecuritySink,
};
pub use crate::core::{Core, Now};
pub use crate::deletion::{DeletionReport, DeletionStep};
pub use crate::error::{CallError, Error, ErrorKind, FileError};
pub use crate::events::{
    ArchiveBytes, Command, DeliveryResult, DeliveryToken, Input, LinkBundleBytes, NetInput, Output,
    RequestId, Response,
};
pub use crate::file_pieces::{MAX_PIECE_JOBS, PieceJob, piece_count, piece_len, piece_name};
pub use crate::file_records::{FileEntry, FileSource};
pub use crate::files::{
    CALL_YIELD_BYTES_PER_S, CALL_YIELD_WRITE, Direction, FileUpload, MAX_FETCHING, MAX_SERVING,
    MAX_SERVING_PER_PEER, SEALED_CHUNK_BYTES, Transfer, TransferState, blob_name,
};
pub use crate::handle::Handle;
pub use crate::invitations::{Invitation, MAX_INVITATIONS, MAX_INVITATIONS_PER_INVITER};
pub use crate::link::{DeviceView, LinkSummary};
pub use crate::mailbox::Relay;
pub use crate::mutes::MAX_MUTED;
pub use crate::profile::ProfileChange;
pub use crate::records::{LogEntry, MessageState, Removal, Revision, TimelineEntry};
pub use crate::relay_client::PurgeOutcome;
pub use crate::requests::{MAX_REQUEST_FRAMES, MessageRequest};
pub use crate::rooms::dm_room_id;
pub use crate::signals::{
    AWAY_AFTER_MS, PRESENCE_EVERY_MS, PRESENCE_SILENCE_MS, PresenceView, READ_EVERY_MS,
    SignalCounts, SignalSettings, TYPING_EVERY_MS, TYPING_FOR_MS,
};
pub use crate::stats::Stats;
pub use crate::topics::DIRECT_ROOM_MAX_DEVICES;
pub use crate::verify::{MAX_FLOWS, VerificationView};
pub use safemeet_proto::invite::{INVITE_PREFIX, INVITE_VERSION, Invite};

use safemeet_proto::{RoomId, UserId};

/// A contact as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Contact {
    /// Their user id.
    pub user_id: UserId,
    /// The name this user gave them, if any.
    pub pet_name: Option<String>,
    /// Their username (from their signed profile).
    pub username: String,
    /// Their display name (from their signed profile).
    pub display_name: String,
    /// Their e-mail addresses (from their newest signed profile).
    pub emails: Vec<String>,
    /// The relays their devices listed (where messages wait while they
    /// are offline).
    pub relays: Vec<String>,
    /// Their active devices, and whether each is verified.
    pub devices: Vec<ContactDevice>,
    /// Set when a device of theirs is verified and another is not: a
    /// device was added since (see `verify`).
    pub new_device_warning: bool,
    /// Their user deleted the account (a tombstone signed with its master
    /// key came): nothing more is taken from it.
    pub deleted: bool,
    /// Their avatar, if they set one.
    pub avatar: Option<AvatarInfo>,
}

/// A conversation: a DM with a contact, or a group room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conversation {
    /// The DM with this contact.
    Dm(UserId),
    /// This group room.
    Room(safemeet_proto::RoomId),
}

/// A contact's device as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ContactDevice {
    /// The device.
    pub device_id: safemeet_proto::DeviceId,
    /// Verified by SAS, here or (cross-signed) on another device of this user.
    pub verified: bool,
}

/// A group room as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RoomInfo {
    /// The room.
    pub room_id: RoomId,
    /// Its name.
    pub name: String,
    /// Its members.
    pub members: Vec<UserId>,
    /// Its admins.
    pub admins: Vec<UserId>,
}
