//! The SafeMeet local API: JSON-RPC 2.0 over a Unix socket.
//!
//! One request per line, one response per line (newline-delimited JSON).
//! Lines longer than [`MAX_LINE_BYTES`] are refused. Methods are documented
//! in `docs/api.md`; every CLI command has one. `subscribe` answers once and
//! then streams `event` notifications from the given cursor on, so a client
//! that reconnects with its last cursor misses nothing.
//!
//! The socket is created with mode 0600 inside the profile directory (0700):
//! only the profile's owner can talk to the daemon.

mod client;
mod server;

pub use client::{Client, ClientError, Subscription};
pub use server::{Identity, serve};

/// Longest request or response line.
pub const MAX_LINE_BYTES: usize = 256 * 1024;

/// JSON-RPC error codes used by the API.
pub mod codes {
    /// The line is not JSON.
    pub const PARSE_ERROR: i64 = -32700;
    /// Not a JSON-RPC 2.0 request.
    pub const INVALID_REQUEST: i64 = -32600;
    /// No such method.
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// The parameters are missing or of the wrong shape.
    pub const INVALID_PARAMS: i64 = -32602;
    /// The engine refused or failed (the message says why; `data.kind` names it).
    pub const ENGINE_ERROR: i64 = -32000;
}
