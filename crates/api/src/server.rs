//! The Unix socket transport: accepts connections, reads one JSON-RPC
//! request per line, answers with [`dispatch`], and streams `subscribe`.
//!
//! What a hostile or broken client can cost is bounded: a line is at most
//! [`MAX_LINE_BYTES`] (a longer one is answered `-32600` and the
//! connection closed), at most [`MAX_CONNECTIONS`] are served at once,
//! and a client that stops reading its answers is dropped after
//! [`WRITE_TIMEOUT`]. Every other bad line gets its error and the
//! connection goes on.

use std::path::Path;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use safemeet_engine::Handle as EngineHandle;
use serde::Serialize;
use serde_json::Value;
use tokio::net::{UnixListener, UnixStream};
use tokio_util::codec::{Framed, LinesCodec, LinesCodecError};
use tokio_util::sync::CancellationToken;

use crate::{
    Error, EventFeed, Identity, MAX_ID_BYTES, MAX_LINE_BYTES, ProgressFeed, Request, Response,
    Subscribed, dispatch,
};

/// Most API connections served at once; more are closed unanswered.
pub const MAX_CONNECTIONS: usize = 64;

/// Longest an answer or event may wait for the client to read it. The
/// socket's buffer holds a few answers; a client that has read none of
/// them for this long is gone or hostile, and holds a connection slot.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest error message sent (it may quote what the client sent).
const MAX_MESSAGE_CHARS: usize = 1024;

/// Serves the API on `socket` until the listener fails. The socket file is
/// replaced if a stale one is there, and made readable by the owner only.
pub async fn serve(socket: &Path, engine: EngineHandle, identity: Identity) -> std::io::Result<()> {
    serve_until(socket, engine, identity, CancellationToken::new()).await
}

/// Serves the API on `socket` until `shutdown` is cancelled (or the
/// listener fails), as every long-lived task here stops: the accept loop
/// and each connection select on the token first. Returns once every
/// connection has ended; the socket file is removed.
pub async fn serve_until(
    socket: &Path,
    engine: EngineHandle,
    identity: Identity,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    if socket.exists() {
        std::fs::remove_file(socket)?;
    }
    let listener = UnixListener::bind(socket)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
    }
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut connections = tokio::task::JoinSet::new();
    let outcome = loop {
        let accepted = tokio::select! {
            biased;
            () = shutdown.cancelled() => break Ok(()),
            // Finished connections are reaped as they end.
            Some(_) = connections.join_next() => continue,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => break Err(e),
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!("too many API connections; one refused");
            continue;
        };
        let (engine, identity, stop) = (engine.clone(), identity.clone(), shutdown.clone());
        connections.spawn(async move {
            tokio::select! {
                biased;
                () = stop.cancelled() => {}
                ended = connection(stream, engine, identity) => {
                    if let Err(e) = ended {
                        tracing::debug!(error = %e, "API connection ended");
                    }
                }
            }
            drop(permit);
        });
    };
    shutdown.cancel();
    while connections.join_next().await.is_some() {}
    let _ = std::fs::remove_file(socket);
    outcome
}

/// Why a connection was closed by the server.
#[derive(Debug, thiserror::Error)]
enum Closed {
    /// Reading or writing a line failed, or a line was too long.
    #[error("the connection failed")]
    Lines(#[from] LinesCodecError),
    /// The client did not read an answer in time.
    #[error("the client read nothing for {} s", WRITE_TIMEOUT.as_secs())]
    Stalled,
    /// A subscription's feed ended (the engine stopped).
    #[error("the event feed ended")]
    Feed(#[source] Error),
}

type Lines = Framed<UnixStream, LinesCodec>;

async fn connection(
    stream: UnixStream,
    engine: EngineHandle,
    identity: Identity,
) -> Result<(), Closed> {
    let mut lines = Framed::new(stream, LinesCodec::new_with_max_length(MAX_LINE_BYTES));
    while let Some(line) = lines.next().await {
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                // Too long or not UTF-8: answer and close this connection.
                let error = match &e {
                    LinesCodecError::MaxLineLengthExceeded => Error::LineTooLong {
                        max: MAX_LINE_BYTES,
                    },
                    LinesCodecError::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => {
                        Error::InvalidRequest("the line is not UTF-8")
                    }
                    // The connection itself failed: nobody to answer.
                    LinesCodecError::Io(_) => return Err(e.into()),
                };
                let _ = send(&mut lines, &failure(&Value::Null, &error)).await;
                // Read what the client still sends, for a while, before
                // closing: a client that writes its whole request before it
                // reads then gets to read the answer, where closing at once
                // would fail its write and lose it.
                drain(lines.into_inner()).await;
                return Err(e.into());
            }
        };
        let (id, request) = match parse(&line) {
            Ok(parsed) => parsed,
            Err((id, error)) => {
                send(&mut lines, &failure(&id, &error)).await?;
                continue;
            }
        };
        if let Request::Subscribe { since, progress } = request {
            let progress = progress
                .unwrap_or(false)
                .then(|| ProgressFeed::new(&engine));
            return subscribe(lines, &id, since.unwrap_or(0), progress, &engine).await;
        }
        let answer = match dispatch(&engine, &identity, request).await {
            Ok(response) => success(&id, &response),
            Err(error) => failure(&id, &error),
        };
        send(&mut lines, &answer).await?;
    }
    Ok(())
}

/// At most this much of a refused request is read (and dropped) after the
/// answer, for at most [`DRAIN_TIME`].
const DRAIN_BYTES: usize = 16 << 20;
const DRAIN_TIME: Duration = Duration::from_secs(5);

/// Ends the writing side (the client sees the answer, then the end) and
/// reads the reading side until the client stops, or the bounds.
async fn drain(mut stream: UnixStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = stream.shutdown().await;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        let mut buf = vec![0u8; 64 * 1024];
        let mut read = 0;
        while read < DRAIN_BYTES {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => read += n,
            }
        }
    })
    .await;
}

/// One request (a line on the socket, a body over HTTP) → its id and
/// request, or the error answer to send. Every transport parses with this.
pub fn parse_request(text: &str) -> Result<(Value, Request), String> {
    parse(text).map_err(|(id, e)| failure(&id, &e))
}

/// The answer to a parsed request, as the socket sends it: `subscribe`
/// needs a stream and is refused here ([`Error::NeedsStream`]).
pub async fn answer(
    engine: &EngineHandle,
    identity: &Identity,
    id: &Value,
    request: Request,
) -> String {
    if let Request::Subscribe { .. } = request {
        return failure(id, &Error::NeedsStream("subscribe"));
    }
    match dispatch(engine, identity, request).await {
        Ok(response) => success(id, &response),
        Err(error) => failure(id, &error),
    }
}

/// The error answer to a request refused before it was served.
pub fn refusal(id: &Value, error: &Error) -> String {
    failure(id, error)
}

/// What the server makes of one request line, for the fuzz target
/// `jsonrpc` (not an API): the request, or the error line it answers with.
#[doc(hidden)]
pub fn fuzz_request_line(line: &str) -> Result<Request, String> {
    parse(line)
        .map(|(_, r)| r)
        .map_err(|(id, e)| failure(&id, &e))
}

/// A request line → its id and request; or the id to answer with (null
/// when the line has none that can be trusted) and the error.
fn parse(line: &str) -> Result<(Value, Request), (Value, Error)> {
    let value: Value = serde_json::from_str(line).map_err(|e| (Value::Null, Error::Parse(e)))?;
    let Value::Object(mut object) = value else {
        return Err((Value::Null, Error::InvalidRequest("not a JSON object")));
    };
    let id = object.remove("id").unwrap_or(Value::Null);
    if !matches!(id, Value::Null | Value::Number(_) | Value::String(_)) {
        return Err((
            Value::Null,
            Error::InvalidRequest("`id` must be a number, a string or null"),
        ));
    }
    if id.to_string().len() > MAX_ID_BYTES {
        return Err((Value::Null, Error::InvalidRequest("`id` is too long")));
    }
    if object.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err((id, Error::InvalidRequest("`jsonrpc` must be \"2.0\"")));
    }
    let Some(Value::String(method)) = object.remove("method") else {
        return Err((id, Error::InvalidRequest("`method` must be a string")));
    };
    match Request::from_parts(&method, object.remove("params")) {
        Ok(request) => Ok((id, request)),
        Err(e) => Err((id, e)),
    }
}

#[derive(Serialize)]
struct Success<'a, T> {
    jsonrpc: &'static str,
    id: &'a Value,
    result: T,
}

#[derive(Serialize)]
struct Failure<'a> {
    jsonrpc: &'static str,
    id: &'a Value,
    error: ErrorObject,
}

#[derive(Serialize)]
struct ErrorObject {
    code: i64,
    message: String,
    data: ErrorData,
}

#[derive(Serialize)]
struct ErrorData {
    kind: &'static str,
}

#[derive(Serialize)]
struct Notification<'a, T> {
    jsonrpc: &'static str,
    method: &'static str,
    params: &'a T,
}

/// The answer line of a served request. An answer that would not fit in a
/// line (a list that is not paged grew too long) becomes an error.
fn success(id: &Value, response: &Response) -> String {
    let line = to_line(&Success {
        jsonrpc: "2.0",
        id,
        result: response,
    });
    if line.len() > MAX_LINE_BYTES {
        return failure(
            id,
            &Error::TooLarge {
                bytes: line.len(),
                max: MAX_LINE_BYTES,
            },
        );
    }
    line
}

/// The answer line of a failed request.
fn failure(id: &Value, error: &Error) -> String {
    let mut message = error.to_string();
    if let Some((end, _)) = message.char_indices().nth(MAX_MESSAGE_CHARS) {
        message.truncate(end);
        message.push('…');
    }
    to_line(&Failure {
        jsonrpc: "2.0",
        id,
        error: ErrorObject {
            code: error.code(),
            message,
            data: ErrorData { kind: error.kind() },
        },
    })
}

fn to_line<T: Serialize>(value: &T) -> String {
    // Our own answer types always serialise (string keys, no failing
    // Serialize impls); the fallback keeps the connection in protocol.
    serde_json::to_string(value).unwrap_or_else(|e| {
        tracing::error!(error = %e, "an API answer did not serialise");
        r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32603,"message":"internal error","data":{"kind":"error"}}}"#.to_owned()
    })
}

async fn send(lines: &mut Lines, line: &str) -> Result<(), Closed> {
    match tokio::time::timeout(WRITE_TIMEOUT, lines.send(line)).await {
        Ok(sent) => Ok(sent?),
        Err(_) => Err(Closed::Stalled),
    }
}

/// Answers the subscription, then streams every event-log entry after
/// `since` as an `event` notification, as they come, until the client
/// closes the connection or the engine stops; and, with `progress`, file
/// transfers as they change as `progress` notifications (one per
/// transfer, at most every [`PROGRESS_EVERY`](crate::PROGRESS_EVERY)).
/// Lines the client sends meanwhile are read and ignored.
async fn subscribe(
    mut lines: Lines,
    id: &Value,
    since: u64,
    mut progress: Option<ProgressFeed>,
    engine: &EngineHandle,
) -> Result<(), Closed> {
    let mut feed = EventFeed::new(engine, since);
    let subscribed = Response::Subscribed(Subscribed {
        subscribed: true,
        since,
    });
    send(&mut lines, &success(id, &subscribed)).await?;
    loop {
        tokio::select! {
            biased;
            incoming = lines.next() => match incoming {
                None => return Ok(()),
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(_)) => continue,
            },
            event = feed.next() => {
                let event = event.map_err(Closed::Feed)?;
                let note = to_line(&Notification {
                    jsonrpc: "2.0",
                    method: "event",
                    params: &event,
                });
                send(&mut lines, &note).await?;
            }
            changed = async {
                match progress.as_mut() {
                    Some(p) => p.next().await,
                    None => std::future::pending().await,
                }
            } => {
                for transfer in changed {
                    let note = to_line(&Notification {
                        jsonrpc: "2.0",
                        method: "progress",
                        params: &transfer,
                    });
                    send(&mut lines, &note).await?;
                }
            }
        }
    }
}
