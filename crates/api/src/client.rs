//! A client for the API socket, used by the CLI and by bots.

use std::path::Path;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::UnixStream;
use tokio_util::codec::{Framed, LinesCodec};

use crate::MAX_LINE_BYTES;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The socket could not be reached (no daemon running).
    #[error("cannot reach the daemon: {0}")]
    Connect(std::io::Error),
    /// The connection broke or sent something that is not JSON-RPC.
    #[error("API connection failed: {0}")]
    Io(String),
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
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

impl Client {
    /// Connects to the socket.
    pub async fn connect(socket: &Path) -> Result<Self, ClientError> {
        let stream = UnixStream::connect(socket)
            .await
            .map_err(ClientError::Connect)?;
        Ok(Self {
            lines: Framed::new(stream, LinesCodec::new_with_max_length(MAX_LINE_BYTES)),
            next_id: 1,
        })
    }

    async fn request(&mut self, method: &str, params: Value) -> Result<Value, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let request = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
        self.lines
            .send(request.to_string())
            .await
            .map_err(|e| ClientError::Io(e.to_string()))?;
        let line = self
            .lines
            .next()
            .await
            .ok_or_else(|| ClientError::Io("the daemon closed the connection".into()))?
            .map_err(|e| ClientError::Io(e.to_string()))?;
        let response: Value =
            serde_json::from_str(&line).map_err(|e| ClientError::Io(e.to_string()))?;
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
        Ok(response.get("result").cloned().unwrap_or(Value::Null))
    }

    /// Calls a method and returns its result.
    pub async fn call(&mut self, method: &str, params: Value) -> Result<Value, ClientError> {
        self.request(method, params).await
    }

    /// Subscribes to the event log from `since` (0: from the start).
    pub async fn subscribe(mut self, since: u64) -> Result<Subscription, ClientError> {
        self.request("subscribe", json!({ "since": since })).await?;
        Ok(Subscription { lines: self.lines })
    }
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
    /// The next event (its `params`: `cursor`, `type`, …), or `None` when
    /// the daemon closed the stream.
    pub async fn next(&mut self) -> Result<Option<Value>, ClientError> {
        loop {
            let Some(line) = self.lines.next().await else {
                return Ok(None);
            };
            let line = line.map_err(|e| ClientError::Io(e.to_string()))?;
            let v: Value =
                serde_json::from_str(&line).map_err(|e| ClientError::Io(e.to_string()))?;
            if v.get("method").and_then(Value::as_str) == Some("event") {
                return Ok(v.get("params").cloned());
            }
        }
    }
}
