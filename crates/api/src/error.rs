//! The API's errors, and the JSON-RPC error code and `data.kind` of each.
//!
//! Every way a request can fail is one [`Error`] variant, whichever
//! transport carried it: the socket server and the in-process path of the
//! CLI see the same values. [`Error::code`] is the JSON-RPC code a transport
//! answers with and [`Error::kind`] the stable word it puts in
//! `error.data.kind`; scripts should branch on those, not on the message.

use safemeet_engine::Error as EngineError;

use crate::codes;

/// Why a request was not served.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The line is not JSON.
    #[error("not JSON: {0}")]
    Parse(#[source] serde_json::Error),
    /// The line is JSON but not a JSON-RPC 2.0 request.
    #[error("not a JSON-RPC 2.0 request: {0}")]
    InvalidRequest(&'static str),
    /// The line is longer than [`MAX_LINE_BYTES`](crate::MAX_LINE_BYTES);
    /// the connection is closed after this answer.
    #[error("the request line is longer than {max} bytes")]
    LineTooLong {
        /// The limit.
        max: usize,
    },
    /// No method of this name.
    #[error("no method {0:?}")]
    MethodNotFound(String),
    /// The parameters are missing, of the wrong type or out of range.
    #[error("invalid parameters for {method}: {source}")]
    InvalidParams {
        /// The method.
        method: &'static str,
        /// What serde found wrong.
        #[source]
        source: serde_json::Error,
    },
    /// The method streams (`subscribe`) and this transport answers once.
    #[error("{0} needs a streaming transport")]
    NeedsStream(&'static str),
    /// The method names a file on the daemon's machine, and this transport
    /// (HTTP) may not write there.
    #[error(
        "{0} is served on the local socket only: it writes files on the daemon's machine (use the CLI)"
    )]
    LocalOnly(&'static str),
    /// No contact is called this (by name, username or user id).
    #[error("no contact {0:?}")]
    UnknownContact(String),
    /// No room is called this (by name or room id).
    #[error("no room {0:?}")]
    UnknownRoom(String),
    /// Neither a contact nor a room is called this.
    #[error("no contact or room {0:?}")]
    NotFound(String),
    /// Several contacts or rooms are called this.
    #[error("several {what} are called {name:?}; use {instead}")]
    Ambiguous {
        /// `contacts` or `rooms`.
        what: &'static str,
        /// The name as given.
        name: String,
        /// What names exactly one.
        instead: &'static str,
    },
    /// A single entry of an answer does not fit in a line (cannot happen
    /// with entries the engine accepts; a guard against an endless pager).
    #[error("an entry of {bytes} bytes does not fit in an answer of {max} bytes")]
    TooLarge {
        /// The entry's size as JSON.
        bytes: usize,
        /// The room an answer has for entries.
        max: usize,
    },
    /// The engine did not answer in time.
    #[error("{method} got no answer from the engine within {secs} s")]
    Timeout {
        /// The method.
        method: &'static str,
        /// The limit.
        secs: u64,
    },
    /// The engine refused or failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl Error {
    /// The JSON-RPC error code of this error (see [`codes`]).
    pub fn code(&self) -> i64 {
        match self {
            Error::Parse(_) => codes::PARSE_ERROR,
            Error::InvalidRequest(_)
            | Error::LineTooLong { .. }
            | Error::NeedsStream(_)
            | Error::LocalOnly(_) => codes::INVALID_REQUEST,
            Error::MethodNotFound(_) => codes::METHOD_NOT_FOUND,
            Error::InvalidParams { .. } => codes::INVALID_PARAMS,
            Error::UnknownContact(_)
            | Error::UnknownRoom(_)
            | Error::NotFound(_)
            | Error::Engine(
                EngineError::UnknownContact(_)
                | EngineError::UnknownRoom(_)
                | EngineError::UnknownMember { .. },
            ) => codes::NOT_FOUND,
            Error::Timeout { .. } | Error::Engine(EngineError::Stopped | EngineError::Timeout) => {
                codes::UNAVAILABLE
            }
            Error::Ambiguous { .. } | Error::TooLarge { .. } | Error::Engine(_) => {
                codes::ENGINE_ERROR
            }
        }
    }

    /// The stable word for this error, sent as `error.data.kind`.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Parse(_) => "parse_error",
            Error::InvalidRequest(_) => "invalid_request",
            Error::LineTooLong { .. } => "line_too_long",
            Error::MethodNotFound(_) => "method_not_found",
            Error::InvalidParams { .. } => "invalid_params",
            Error::NeedsStream(_) => "needs_stream",
            Error::LocalOnly(_) => "local_only",
            Error::UnknownContact(_) | Error::Engine(EngineError::UnknownContact(_)) => {
                "unknown_contact"
            }
            Error::UnknownRoom(_) | Error::Engine(EngineError::UnknownRoom(_)) => "unknown_room",
            Error::NotFound(_) => "not_found",
            Error::Engine(EngineError::UnknownMember { .. }) => "unknown_member",
            Error::Ambiguous { .. } => "ambiguous",
            Error::TooLarge { .. } => "too_large",
            Error::Timeout { .. } | Error::Engine(EngineError::Timeout) => "timeout",
            Error::Engine(EngineError::BadInvite(_)) => "bad_invite",
            Error::Engine(EngineError::InvalidInput(_)) => "invalid_input",
            Error::Engine(EngineError::Stopped) => "stopped",
            Error::Engine(EngineError::Net(_)) => "network",
            Error::Engine(EngineError::File(f)) => file_kind(f),
            Error::Engine(EngineError::Call(c)) => call_kind(c),
            Error::Engine(_) => "error",
        }
    }

    /// Whether the error is the caller's input (a name that matches
    /// nothing, a damaged invite, a bad parameter) rather than a failure of
    /// the daemon: the CLI reports these as usage errors.
    pub fn is_input(&self) -> bool {
        is_input_kind(self.kind())
    }
}

fn file_kind(e: &safemeet_engine::FileError) -> &'static str {
    use safemeet_engine::FileError as F;
    match e {
        F::NotAFile => "not_a_file",
        F::NotYet { .. } => "file_not_ready",
        F::Refused(_) => "file_refused",
        F::TooLarge { .. } => "file_too_large",
        F::NoBlobs => "no_files",
        F::Io(_) => "file_io",
        _ => "error",
    }
}

fn call_kind(e: &safemeet_engine::CallError) -> &'static str {
    use safemeet_engine::CallError as C;
    match e {
        C::NoCall(_) => "no_call",
        C::Busy => "call_busy",
        C::Unreachable => "unreachable",
        C::Audio(_) => "call_audio",
        _ => "error",
    }
}

/// Whether `data.kind` names an error in the caller's input (see
/// [`Error::is_input`]); for clients that only have the kind.
pub fn is_input_kind(kind: &str) -> bool {
    matches!(
        kind,
        "invalid_params"
            | "unknown_contact"
            | "unknown_room"
            | "unknown_member"
            | "not_found"
            | "ambiguous"
            | "bad_invite"
            | "invalid_input"
            | "not_a_file"
            | "file_too_large"
            | "no_call"
            | "call_audio"
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

    use super::*;

    #[test]
    fn every_error_has_a_json_rpc_code_and_a_kind() {
        let parse = serde_json::from_str::<serde_json::Value>("{").unwrap_err();
        let params = serde_json::from_str::<u64>("\"x\"").unwrap_err();
        let cases = [
            (Error::Parse(parse), -32700, "parse_error"),
            (Error::InvalidRequest("x"), -32600, "invalid_request"),
            (Error::LineTooLong { max: 1 }, -32600, "line_too_long"),
            (
                Error::MethodNotFound("x".into()),
                -32601,
                "method_not_found",
            ),
            (
                Error::InvalidParams {
                    method: "send",
                    source: params,
                },
                -32602,
                "invalid_params",
            ),
            (Error::NeedsStream("subscribe"), -32600, "needs_stream"),
            (Error::LocalOnly("export.archive"), -32600, "local_only"),
            (Error::UnknownContact("x".into()), -32001, "unknown_contact"),
            (Error::UnknownRoom("x".into()), -32001, "unknown_room"),
            (Error::NotFound("x".into()), -32001, "not_found"),
            (
                Error::Ambiguous {
                    what: "contacts",
                    name: "x".into(),
                    instead: "the user id",
                },
                -32000,
                "ambiguous",
            ),
            (Error::TooLarge { bytes: 2, max: 1 }, -32000, "too_large"),
            (
                Error::Timeout {
                    method: "send",
                    secs: 1,
                },
                -32002,
                "timeout",
            ),
            (
                Error::Engine(EngineError::BadInvite(
                    safemeet_proto::invite::InviteError::Damaged,
                )),
                -32000,
                "bad_invite",
            ),
            (
                Error::Engine(EngineError::InvalidInput("x".into())),
                -32000,
                "invalid_input",
            ),
            (Error::Engine(EngineError::Stopped), -32002, "stopped"),
            (Error::Engine(EngineError::Timeout), -32002, "timeout"),
            (
                Error::Engine(EngineError::UnknownRoom(
                    safemeet_proto::RoomId::from_bytes([1; 16]),
                )),
                -32001,
                "unknown_room",
            ),
            (
                Error::Engine(EngineError::InvalidConfig("x".into())),
                -32000,
                "error",
            ),
        ];
        for (error, code, kind) in cases {
            assert_eq!((error.code(), error.kind()), (code, kind), "{error}");
        }
    }

    #[test]
    fn sources_are_kept() {
        let params = serde_json::from_str::<u64>("\"x\"").unwrap_err();
        let e = Error::InvalidParams {
            method: "messages",
            source: params,
        };
        assert!(std::error::Error::source(&e).is_some());
    }
}
