//! A client for the API socket, used by the CLI and by bots.
//!
//! [`Client::request`] sends a typed [`Request`] and reads the typed
//! [`Response`]; [`Client::call`] does the same with bare JSON for
//! scripts. Answers are matched to requests by id and waited for at most
//! [`Client::timeout`].

use std::path::Path;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::UnixStream;
use tokio_util::codec::{Framed, LinesCodec, LinesCodecError};

use crate::dispatch::DISPATCH_TIMEOUT;
use crate::{Event, MAX_LINE_BYTES, Method, Request, Response};

/// How long a request waits for its answer by default: longer than the
/// daemon waits for its engine ([`DISPATCH_TIMEOUT`]), so a stuck engine
/// is reported by the daemon, not by a timeout here.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(DISPATCH_TIMEOUT.as_secs() + 10);

/// How long connecting to the socket may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The socket could not be reached (no daemon running).
    #[error("cannot reach the daemon")]
    Connect(#[source] std::io::Error),
    /// Reading or writing a line failed.
    #[error("the API connection failed")]
    Lines(#[from] LinesCodecError),
    /// The daemon closed the connection before answering.
    #[error("the daemon closed the connection")]
    Closed,
    /// The answer is not JSON, or not the shape of the method's result.
    #[error("the daemon's answer is not understood")]
    BadAnswer(#[source] serde_json::Error),
    /// The answer is JSON but breaks the protocol.
    #[error("the daemon's answer breaks the protocol: {0}")]
    Protocol(&'static str),
    /// No answer in time.
    #[error("no answer from the daemon within {} s", .0.as_secs())]
    Timeout(Duration),
    /// The daemon answered with an error.
    #[error("{message}")]
    Rpc {
        /// The JSON-RPC error code.
        code: i64,
        /// The message.
        message: String,
        /// `data.kind`, when the daemon gave one.
        kind: Option<String>,
    },
}

/// A connection to the daemon.
pub struct Client {
    lines: Framed<UnixStream, LinesCodec>,
    next_id: u64,
    timeout: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

impl Client {
    /// Connects to the socket.
    pub async fn connect(socket: &Path) -> Result<Self, ClientError> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, UnixStream::connect(socket))
            .await
            .map_err(|_| ClientError::Timeout(CONNECT_TIMEOUT))?
            .map_err(ClientError::Connect)?;
        Ok(Self {
            lines: Framed::new(stream, LinesCodec::new_with_max_length(MAX_LINE_BYTES)),
            next_id: 1,
            timeout: ANSWER_TIMEOUT,
        })
    }

    /// Waits at most `timeout` for each answer (default [`ANSWER_TIMEOUT`]).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long a request waits for its answer.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    async fn exchange(&mut self, method: &str, params: Value) -> Result<Value, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let request = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
        let timeout = self.timeout;
        tokio::time::timeout(timeout, async {
            self.lines.send(request.to_string()).await?;
            let line = self.lines.next().await.ok_or(ClientError::Closed)??;
            answer(id, &line)
        })
        .await
        .map_err(|_| ClientError::Timeout(timeout))?
    }

    /// Calls a method with JSON params and returns its JSON result.
    pub async fn call(&mut self, method: &str, params: Value) -> Result<Value, ClientError> {
        self.exchange(method, params).await
    }

    /// Sends `request` and reads its answer. `subscribe` turns the
    /// connection into a stream: use [`subscribe`](Self::subscribe) for it.
    pub async fn request(&mut self, request: &Request) -> Result<Response, ClientError> {
        let method = request.method();
        if method == Method::Subscribe {
            return Err(ClientError::Protocol(
                "subscribe streams: use Client::subscribe",
            ));
        }
        let Ok(Value::Object(mut call)) = serde_json::to_value(request) else {
            return Err(ClientError::Protocol("a request did not serialise"));
        };
        let params = call.remove("params").unwrap_or(json!({}));
        let result = self.exchange(method.name(), params).await?;
        Response::from_result(method, result).map_err(ClientError::BadAnswer)
    }

    /// Subscribes to the event log from `since` (0: from the start).
    pub async fn subscribe(mut self, since: u64) -> Result<Subscription, ClientError> {
        self.exchange("subscribe", json!({ "since": since }))
            .await?;
        Ok(Subscription { lines: self.lines })
    }
}

/// The result of answer `line` to request `id`.
fn answer(id: u64, line: &str) -> Result<Value, ClientError> {
    let mut response: Value = serde_json::from_str(line).map_err(ClientError::BadAnswer)?;
    if response.get("id").and_then(Value::as_u64) != Some(id) {
        // An error about the line itself (unparseable, too long) has a
        // null id; it is still the answer to what was just sent.
        if response.get("id") != Some(&Value::Null) || response.get("error").is_none() {
            return Err(ClientError::Protocol("the answer is to another request"));
        }
    }
    if let Some(err) = response.get("error") {
        return Err(ClientError::Rpc {
            code: err.get("code").and_then(Value::as_i64).unwrap_or(0),
            message: err
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("unknown error")
                .to_owned(),
            kind: err
                .get("data")
                .and_then(|d| d.get("kind"))
                .and_then(Value::as_str)
                .map(str::to_owned),
        });
    }
    response
        .get_mut("result")
        .map(Value::take)
        .ok_or(ClientError::Protocol(
            "an answer with neither result nor error",
        ))
}

/// A stream of event-log entries from the daemon.
pub struct Subscription {
    lines: Framed<UnixStream, LinesCodec>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription").finish_non_exhaustive()
    }
}

impl Subscription {
    /// The next event as JSON (its `params`: `cursor`, `type`, …), or
    /// `None` when the daemon closed the stream. Waits as long as it takes
    /// for an event to happen.
    pub async fn next(&mut self) -> Result<Option<Value>, ClientError> {
        loop {
            let Some(line) = self.lines.next().await else {
                return Ok(None);
            };
            let mut v: Value = serde_json::from_str(&line?).map_err(ClientError::BadAnswer)?;
            if v.get("method").and_then(Value::as_str) == Some("event") {
                return Ok(v.get_mut("params").map(Value::take));
            }
        }
    }

    /// The next event, typed (see [`next`](Self::next)).
    pub async fn next_event(&mut self) -> Result<Option<Event>, ClientError> {
        match self.next().await? {
            Some(v) => Ok(Some(
                serde_json::from_value(v).map_err(ClientError::BadAnswer)?,
            )),
            None => Ok(None),
        }
    }
}
