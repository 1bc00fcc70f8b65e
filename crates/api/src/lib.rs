//! The SafeMeet local API: typed requests served by one [`dispatch`], and
//! JSON-RPC 2.0 over a Unix socket.
//!
//! Every method is a [`Request`] variant with typed parameters and
//! answers a [`Response`] variant; every failure is an [`Error`] with a
//! JSON-RPC code and a stable `data.kind`. [`dispatch`] serves a request
//! with an [`EngineHandle`](safemeet_engine::EngineHandle): the socket
//! server ([`serve`]) calls it, and so does the CLI when no daemon runs.
//! Names a user typed (a contact's name, a room's name) are turned into
//! ids by [`resolve`] before the engine sees them.
//!
//! This crate is not the engine: it holds no state, and a transport is a
//! thin framing around [`dispatch`].
//!
//! On the socket, one request per line, one response per line
//! (newline-delimited JSON); lines longer than [`MAX_LINE_BYTES`] are
//! refused. `messages` and `events` answer a page that fits in a line
//! (see [`page`]). `subscribe` answers once and then streams `event`
//! notifications from the given cursor on, so a client that reconnects
//! with its last cursor misses nothing. Methods are documented in
//! `docs/api.md`.
//!
//! The socket is created with mode 0600 inside the profile directory (0700):
//! only the profile's owner can talk to the daemon.
//!
//! ```no_run
//! # async fn demo(engine: safemeet_engine::Handle, me: safemeet_api::Identity)
//! # -> Result<(), safemeet_api::Error> {
//! use safemeet_api::{Request, Response, dispatch};
//!
//! let request = Request::from_parts("send", Some(serde_json::json!({"target": "bob", "text": "hi"})))?;
//! if let Response::Sent(sent) = dispatch(&engine, &me, request).await? {
//!     println!("committed as {}", sent.event_id);
//! }
//! # Ok(()) }
//! ```

mod account;
mod calls;
mod client;
mod cursor;
mod dispatch;
mod error;
mod event;
mod export;
mod feed;
pub mod files;
mod message;
mod method;
pub mod page;
mod people;
mod request;
pub mod resolve;
mod response;
mod server;
pub mod signals;
pub mod status;

pub use account::{
    AvatarView, ContactVerified, Device, DeviceLink, DeviceRenamed, DeviceRevoked, Identity,
    ProfileView, SasEmoji, VerificationState,
};
pub use client::{ANSWER_TIMEOUT, Client, ClientError, Subscription};
pub use dispatch::{DISPATCH_TIMEOUT, dispatch};
pub use error::{Error, is_input_kind};
pub use event::{Event, EventKind, Subscribed};
pub use export::{ArchiveExported, Exported, Secret};
pub use feed::{EventFeed, PROGRESS_EVERY, ProgressFeed};
pub use message::{Message, State};
pub use request::{
    BadCursor, DEFAULT_EVENTS_LIMIT, DEFAULT_MESSAGES_LIMIT, MAX_LIMIT, MessageCursor, Method,
    Request,
};
pub use response::{
    BlockedUser, Changed, Contact, ContactAdded, ContactBlocked, ContactRemoved, ContactSettings,
    ContactUnblocked, InviteText, MessageRequest, RequestAccepted, RequestDeclined, Response, Room,
    RoomBanned, RoomCreated, RoomDeclined, RoomInvitation, RoomInvited, RoomJoined, RoomLeft,
    RoomRemoved, RoomSettingsView, Sent, SettingsView, UnexpectedResponse, Whoami,
};
#[doc(hidden)]
pub use server::fuzz_request_line;
pub use server::{
    MAX_CONNECTIONS, WRITE_TIMEOUT, answer, parse_request, refusal, serve, serve_until,
};

/// Longest request or response line: room for a page of a few of the
/// largest messages (16 KiB of text can take 96 KiB as JSON), small
/// enough that a client cannot make the daemon buffer much.
pub const MAX_LINE_BYTES: usize = 256 * 1024;

/// Longest request `id` (as JSON) the server accepts: it is echoed in the
/// answer, and [`page::PAGE_BYTES`] leaves room for it.
pub const MAX_ID_BYTES: usize = 256;

/// JSON-RPC error codes used by the API. The `-32000` range is the
/// server's own; `error.data.kind` says more (see [`Error::kind`]).
pub mod codes {
    /// The line is not JSON.
    pub const PARSE_ERROR: i64 = -32700;
    /// Not a JSON-RPC 2.0 request, or a line too long.
    pub const INVALID_REQUEST: i64 = -32600;
    /// No such method.
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// The parameters are missing or of the wrong shape.
    pub const INVALID_PARAMS: i64 = -32602;
    /// The engine refused or failed (the message says why; `data.kind` names it).
    pub const ENGINE_ERROR: i64 = -32000;
    /// A contact or room named in the request does not exist.
    pub const NOT_FOUND: i64 = -32001;
    /// The engine has stopped or does not answer.
    pub const UNAVAILABLE: i64 = -32002;
}
