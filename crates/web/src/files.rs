//! `POST /api/v1/files` (send a file) and `GET /api/v1/files/{event}`
//! (save one): the web's way to the files the socket names by path.
//!
//! - An upload streams the request body into the engine's sealing (no
//!   copy kept in memory or on disk in plain): it needs a session, the
//!   CSRF token and a `Content-Length` (the file's size is sealed into
//!   every chunk); the node's file size limit applies.
//! - A download streams the file as each chunk is opened; the whole
//!   file's hash is checked at the end, and a file that fails it ends the
//!   answer with an error instead of its last bytes, so a browser keeps
//!   nothing of it. Only a file held whole is served. Images of a few
//!   plain types are served inline (the page shows them); everything
//!   else as an attachment of type `application/octet-stream`, with a
//!   sandboxing CSP either way, so nothing a file holds runs in the
//!   page's origin.

use std::io::Write;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt;
use safemeet_engine::FileUpload;
use safemeet_proto::EventId;
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::Shared;
use crate::login::session;

/// Image types shown inline; anything else is an attachment.
const INLINE: [&str; 4] = ["image/png", "image/jpeg", "image/gif", "image/webp"];

/// `POST /api/v1/files`'s query.
#[derive(Debug, Deserialize)]
pub(crate) struct UploadQuery {
    /// A contact or room, as for `send`.
    target: String,
    /// The file's name.
    name: String,
    /// A caption.
    #[serde(default)]
    caption: String,
}

fn error(status: StatusCode, kind: &str, message: impl std::fmt::Display) -> Response {
    (
        status,
        axum::Json(
            serde_json::json!({ "error": { "kind": kind, "message": message.to_string() } }),
        ),
    )
        .into_response()
}

pub(crate) async fn upload(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<UploadQuery>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Err(refused) = session(&shared, &headers, true) {
        return refused.into_response();
    }
    let Some(size) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return error(
            StatusCode::LENGTH_REQUIRED,
            "length_required",
            "a file upload needs its Content-Length",
        );
    };
    let media_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|t| safemeet_proto::file::check_media_type(t).is_ok())
        .unwrap_or_else(|| safemeet_api::files::media_type_of(&query.name).to_owned());
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    let reader = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(stream));
    let upload = FileUpload {
        reader: Box::new(reader),
        size,
        name: query.name,
        media_type,
    };
    match safemeet_api::files::send_upload(&shared.engine, &query.target, upload, &query.caption)
        .await
    {
        Ok(event_id) => axum::Json(serde_json::json!({ "event_id": event_id })).into_response(),
        Err(e) => {
            let status = match e.kind() {
                "file_too_large" => StatusCode::PAYLOAD_TOO_LARGE,
                "unknown_contact" | "unknown_room" | "not_found" => StatusCode::NOT_FOUND,
                _ if e.is_input() => StatusCode::BAD_REQUEST,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            error(status, e.kind(), e)
        }
    }
}

/// Sends what the engine writes to the answer's body, a block at a time.
struct ToBody(mpsc::Sender<Result<Bytes, std::io::Error>>);

impl Write for ToBody {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `filename*=` of Content-Disposition (RFC 8187): UTF-8, percent-encoded.
fn encoded_name(name: &str) -> String {
    let mut out = String::from("UTF-8''");
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub(crate) async fn download(
    State(shared): State<Arc<Shared>>,
    Path(event): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(refused) = session(&shared, &headers, false) {
        return refused.into_response();
    }
    let Ok(event) = event.parse::<EventId>() else {
        return error(StatusCode::BAD_REQUEST, "invalid_params", "not an event id");
    };
    let file = match shared.engine.file_of(event).await {
        Ok(f) => f,
        Err(e) => return error(StatusCode::NOT_FOUND, "not_a_file", e),
    };
    // Nothing is answered 200 for a file that is not whole: the status
    // goes out before the body.
    if !matches!(shared.engine.file_held(event).await, Ok(true)) {
        let (done, chunks) = shared
            .engine
            .transfer(&event)
            .map_or((0, 0), |t| (t.done, t.chunks));
        return error(
            StatusCode::CONFLICT,
            "file_not_ready",
            format!("the file has not arrived whole ({done} of {chunks} chunks)"),
        );
    }
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    let failed = tx.clone();
    let engine = shared.engine.clone();
    tokio::spawn(async move {
        if let Err(e) = engine.save_file(event, Box::new(ToBody(tx))).await {
            // Ends the body with an error: the browser keeps nothing.
            let _ = failed.send(Err(std::io::Error::other(e.to_string()))).await;
        }
    });
    let body = Body::from_stream(tokio_stream_from(rx));
    let inline = INLINE.contains(&file.media_type.as_str());
    let mut response = body.into_response();
    let h = response.headers_mut();
    let content_type = if inline {
        file.media_type.as_str()
    } else {
        "application/octet-stream"
    };
    if let Ok(v) = HeaderValue::from_str(content_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    let disposition = format!(
        "{}; filename*={}",
        if inline { "inline" } else { "attachment" },
        encoded_name(&file.name)
    );
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(file.size));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; sandbox"),
    );
    response
}

/// The receiver as a stream of body blocks.
fn tokio_stream_from(
    mut rx: mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_percent_encoded_for_the_header() {
        assert_eq!(encoded_name("a b.png"), "UTF-8''a%20b.png");
        assert_eq!(encoded_name("\"x\";.txt"), "UTF-8''%22x%22%3B.txt");
        assert_eq!(encoded_name("é"), "UTF-8''%C3%A9");
    }
}
