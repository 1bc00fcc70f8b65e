//! The API server: accepts connections on the socket and answers requests.

use std::path::Path;

use futures::{SinkExt, StreamExt};
use safemeet_engine::{EngineError, EngineHandle, LogEntry, TimelineEntry};
use safemeet_proto::UserId;
use serde_json::{Value, json};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::codec::{Framed, LinesCodec};

use crate::{Identity, MAX_LINE_BYTES, codes};

/// Most API connections served at once.
const MAX_CONNECTIONS: usize = 64;

/// Serves the API on `socket` until the listener fails. The socket file is
/// replaced if a stale one is there, and made readable by the owner only.
pub async fn serve(socket: &Path, engine: EngineHandle, identity: Identity) -> std::io::Result<()> {
    if socket.exists() {
        std::fs::remove_file(socket)?;
    }
    let listener = UnixListener::bind(socket)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
    }
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, _) = listener.accept().await?;
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!("too many API connections; one refused");
            continue;
        };
        let (engine, identity) = (engine.clone(), identity.clone());
        tokio::spawn(async move {
            if let Err(e) = connection(stream, engine, identity).await {
                tracing::debug!(error = %e, "API connection ended");
            }
            drop(permit);
        });
    }
}

type Lines = Framed<UnixStream, LinesCodec>;

async fn send(lines: &mut Lines, value: &Value) -> Result<(), String> {
    lines
        .send(value.to_string())
        .await
        .map_err(|e| e.to_string())
}

fn error(id: Value, code: i64, message: String, kind: Option<&str>) -> Value {
    let mut err = json!({ "code": code, "message": message });
    if let Some(kind) = kind {
        err["data"] = json!({ "kind": kind });
    }
    json!({ "jsonrpc": "2.0", "id": id, "error": err })
}

fn engine_error(id: Value, e: EngineError) -> Value {
    let kind = match &e {
        EngineError::BadInvite(_) => "bad_invite",
        EngineError::UnknownContact(_) => "unknown_contact",
        EngineError::InvalidInput(_) => "invalid_input",
        EngineError::Stopped => "stopped",
        EngineError::Net(_) => "network",
        _ => "error",
    };
    error(id, codes::ENGINE_ERROR, e.to_string(), Some(kind))
}

async fn connection(
    stream: UnixStream,
    engine: EngineHandle,
    identity: Identity,
) -> Result<(), String> {
    let mut lines = Framed::new(stream, LinesCodec::new_with_max_length(MAX_LINE_BYTES));
    while let Some(line) = lines.next().await {
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                // Too long or not UTF-8: answer and close this connection.
                let v = error(Value::Null, codes::INVALID_REQUEST, e.to_string(), None);
                let _ = send(&mut lines, &v).await;
                return Err(e.to_string());
            }
        };
        let request: Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(e) => {
                send(
                    &mut lines,
                    &error(
                        Value::Null,
                        codes::PARSE_ERROR,
                        format!("not JSON: {e}"),
                        None,
                    ),
                )
                .await?;
                continue;
            }
        };
        let id = request.get("id").cloned().unwrap_or(Value::Null);
        let (Some("2.0"), Some(method)) = (
            request.get("jsonrpc").and_then(Value::as_str),
            request.get("method").and_then(Value::as_str),
        ) else {
            send(
                &mut lines,
                &error(
                    id,
                    codes::INVALID_REQUEST,
                    "not a JSON-RPC 2.0 request".into(),
                    None,
                ),
            )
            .await?;
            continue;
        };
        let params = request.get("params").cloned().unwrap_or(json!({}));
        if method == "subscribe" {
            return subscribe(lines, id, &params, &engine).await;
        }
        let response = match call(method, &params, &engine, &identity).await {
            Ok(result) => json!({ "jsonrpc": "2.0", "id": id, "result": result }),
            Err(Failure::NoMethod) => error(
                id,
                codes::METHOD_NOT_FOUND,
                format!("no method {method:?}"),
                None,
            ),
            Err(Failure::Params(m)) => error(id, codes::INVALID_PARAMS, m, None),
            Err(Failure::Engine(e)) => engine_error(id, e),
        };
        send(&mut lines, &response).await?;
    }
    Ok(())
}

enum Failure {
    NoMethod,
    Params(String),
    Engine(EngineError),
}

impl From<EngineError> for Failure {
    fn from(e: EngineError) -> Self {
        Failure::Engine(e)
    }
}

fn param_str<'a>(params: &'a Value, name: &str) -> Result<&'a str, Failure> {
    params
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| Failure::Params(format!("missing string parameter {name:?}")))
}

fn param_u64(params: &Value, name: &str, default: u64) -> Result<u64, Failure> {
    match params.get(name) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v.as_u64().ok_or_else(|| {
            Failure::Params(format!("parameter {name:?} must be a non-negative integer"))
        }),
    }
}

/// A message as the API shows it.
fn message_json(m: &TimelineEntry) -> Value {
    use safemeet_engine::MessageState;
    let mut message = json!({
        "event_id": m.event_id.to_string(),
        "sender": m.sender.to_string(),
        "text": m.text,
        "ts": m.ts.as_millis(),
        "state": match m.state {
            MessageState::Received => "received",
            MessageState::Sent => "sent",
            MessageState::Delivered => "delivered",
            MessageState::StoredAtRelay { .. } => "stored_at_relay",
        },
    });
    if let MessageState::StoredAtRelay { until } = m.state {
        message["stored_until"] = json!(until.as_millis());
    }
    message
}

fn event_json(cursor: u64, entry: &LogEntry) -> Value {
    match entry {
        LogEntry::Message { room_id, entry } => json!({
            "cursor": cursor,
            "type": "message",
            "room_id": room_id.to_string(),
            "message": message_json(entry),
        }),
        LogEntry::Room {
            room_id,
            name,
            members,
        } => json!({
            "cursor": cursor,
            "type": "room",
            "room_id": room_id.to_string(),
            "name": name,
            "members": members.iter().map(ToString::to_string).collect::<Vec<_>>(),
        }),
        LogEntry::Delivered { room_id, event_id } => json!({
            "cursor": cursor,
            "type": "delivered",
            "room_id": room_id.to_string(),
            "event_id": event_id.to_string(),
        }),
        LogEntry::StoredAtRelay {
            room_id,
            event_id,
            until,
        } => json!({
            "cursor": cursor,
            "type": "stored_at_relay",
            "room_id": room_id.to_string(),
            "event_id": event_id.to_string(),
            "stored_until": until.as_millis(),
        }),
        _ => json!({ "cursor": cursor, "type": "other" }),
    }
}

async fn resolve(engine: &EngineHandle, params: &Value) -> Result<UserId, Failure> {
    Ok(engine.resolve(param_str(params, "target")?).await?)
}

async fn call(
    method: &str,
    params: &Value,
    engine: &EngineHandle,
    identity: &Identity,
) -> Result<Value, Failure> {
    Ok(match method {
        "whoami" => {
            let addrs: Vec<String> = engine
                .listen_addrs()
                .await?
                .iter()
                .map(|a| format!("{a}/p2p/{}", engine.peer_id()))
                .collect();
            let mut v =
                serde_json::to_value(identity).map_err(|e| Failure::Params(e.to_string()))?;
            v["listen_addrs"] = json!(addrs);
            v
        }
        "invite" => json!({ "invite": engine.invite().await? }),
        "contact.add" => {
            let invite = param_str(params, "invite")?;
            let name = params
                .get("name")
                .and_then(Value::as_str)
                .map(str::to_owned);
            let user = engine.add_contact(invite, name).await?;
            json!({ "user_id": user.to_string() })
        }
        "contact.list" => {
            let contacts = engine.contacts().await?;
            json!(
                contacts
                    .iter()
                    .map(|c| json!({
                        "user_id": c.user_id.to_string(),
                        "name": c.pet_name,
                        "username": c.username,
                        "display_name": c.display_name,
                        "relays": c.relays,
                    }))
                    .collect::<Vec<_>>()
            )
        }
        "contact.remove" => {
            let user = resolve(engine, params).await?;
            engine.remove_contact(user).await?;
            json!({ "removed": user.to_string() })
        }
        "send" => {
            let target = param_str(params, "target")?;
            let text = param_str(params, "text")?;
            let event_id = engine.send(target, text).await?;
            json!({ "event_id": event_id.to_string() })
        }
        "messages" => {
            let target = param_str(params, "target")?;
            let limit = param_u64(params, "limit", 50)?.min(10_000) as usize;
            let messages = engine.messages_of(target, limit).await?;
            json!(messages.iter().map(message_json).collect::<Vec<_>>())
        }
        "room.create" => {
            let name = param_str(params, "name")?;
            let members = match params.get("members") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|m| {
                        m.as_str()
                            .map(str::to_owned)
                            .ok_or_else(|| Failure::Params("members must be strings".into()))
                    })
                    .collect::<Result<_, _>>()?,
                Some(_) => return Err(Failure::Params("members must be an array".into())),
            };
            let room = engine.create_room(name, members).await?;
            json!({ "room_id": room.to_string() })
        }
        "room.invite" => {
            engine
                .room_invite(param_str(params, "room")?, param_str(params, "target")?)
                .await?;
            json!({ "invited": true })
        }
        "room.leave" => {
            engine.room_leave(param_str(params, "room")?).await?;
            json!({ "left": true })
        }
        "room.list" => {
            let rooms = engine.rooms().await?;
            json!(
                rooms
                    .iter()
                    .map(|r| json!({
                        "room_id": r.room_id.to_string(),
                        "name": r.name,
                        "members": r.members.iter().map(ToString::to_string).collect::<Vec<_>>(),
                        "admins": r.admins.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    }))
                    .collect::<Vec<_>>()
            )
        }
        "events" => {
            let since = param_u64(params, "since", 0)?;
            let limit = param_u64(params, "limit", 100)?.min(10_000) as usize;
            let events = engine.events(since, limit).await?;
            json!(
                events
                    .iter()
                    .map(|(c, e)| event_json(*c, e))
                    .collect::<Vec<_>>()
            )
        }
        _ => return Err(Failure::NoMethod),
    })
}

/// Answers the subscription, then streams every event-log entry after
/// `since` as an `event` notification, as they come.
async fn subscribe(
    mut lines: Lines,
    id: Value,
    params: &Value,
    engine: &EngineHandle,
) -> Result<(), String> {
    let mut cursor = match param_u64(params, "since", 0) {
        Ok(c) => c,
        Err(Failure::Params(m)) => {
            return send(&mut lines, &error(id, codes::INVALID_PARAMS, m, None)).await;
        }
        Err(_) => 0,
    };
    let mut watch = engine.log_watch();
    send(
        &mut lines,
        &json!({ "jsonrpc": "2.0", "id": id, "result": { "subscribed": true, "since": cursor } }),
    )
    .await?;
    loop {
        let batch = engine
            .events(cursor, 256)
            .await
            .map_err(|e| e.to_string())?;
        if batch.is_empty() {
            // Wait for the log to grow (or the engine to stop).
            watch.changed().await.map_err(|e| e.to_string())?;
            continue;
        }
        for (c, entry) in &batch {
            let note =
                json!({ "jsonrpc": "2.0", "method": "event", "params": event_json(*c, entry) });
            send(&mut lines, &note).await?;
            cursor = *c;
        }
    }
}
