//! `POST /api/v1/rpc` and `GET /api/v1/check`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use safemeet_api::{Error, Request};

use crate::Shared;
use crate::login::session;

/// Serves one JSON-RPC request (the body) as the socket would, with the
/// session's CSRF token. A JSON-RPC error is still HTTP 200, as on the
/// socket; HTTP errors are for the request itself (401 no session, 403
/// no CSRF token, 413 a body over 256 KiB).
pub(crate) async fn rpc(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(refused) = session(&shared, &headers, true) {
        return refused.into_response();
    }
    let answer = match std::str::from_utf8(&body) {
        Err(_) => safemeet_api::refusal(
            &serde_json::Value::Null,
            &Error::InvalidRequest("the body is not UTF-8"),
        ),
        Ok(text) => match safemeet_api::parse_request(text) {
            Err(line) => line,
            Ok((id, request)) => match local_only(&request) {
                Some(error) => safemeet_api::refusal(&id, &error),
                None => safemeet_api::answer(&shared.engine, &shared.identity, &id, request).await,
            },
        },
    };
    json(answer)
}

/// Methods that name a file or directory on the daemon's machine are
/// served on the Unix socket only: a web session must not read or write
/// files where the daemon's user can (it uploads and downloads over
/// `/api/v1/files` instead).
fn local_only(request: &Request) -> Option<Error> {
    matches!(
        request,
        Request::ExportArchive { .. }
            | Request::ExportReadable { .. }
            | Request::Download { .. }
            | Request::Send { file: Some(_), .. }
            | Request::Call {
                wav_in: Some(_),
                ..
            }
            | Request::Call {
                wav_out: Some(_),
                ..
            }
            | Request::CallAccept {
                wav_in: Some(_),
                ..
            }
            | Request::Meet {
                wav_in: Some(_),
                ..
            }
            | Request::Meet {
                wav_out: Some(_),
                ..
            }
            | Request::CallAccept {
                wav_out: Some(_),
                ..
            }
    )
    .then(|| Error::LocalOnly(request.method().name()))
}

fn json(body: String) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// `GET /api/v1/check`: the daemon answers, and whether this request has
/// a session. Says nothing else about the account.
pub(crate) async fn check(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    // Asking does not keep a session alive.
    let logged_in = shared.sessions.peek(&headers);
    axum::Json(serde_json::json!({
        "ok": true,
        "version": env!("CARGO_PKG_VERSION"),
        "logged_in": logged_in,
    }))
    .into_response()
}
