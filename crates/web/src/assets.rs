//! The page and its assets, compiled into the binary: the app works with
//! no network beyond this daemon, and no CDN learns who uses it.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::Shared;

const INDEX: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const APP_CSS: &str = include_str!("../assets/app.css");

/// `GET /`: the app. The page carries a CSRF token: the session's when the
/// request has one, else the login token (which a login must present, so
/// a page elsewhere cannot log this browser in).
pub(crate) async fn page(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let (csrf, session) = match shared.sessions.of(&headers) {
        Some(open) => (open.csrf, "in"),
        None => (shared.sessions.login_token().to_owned(), "out"),
    };
    // Base64url, hex or fixed words: nothing to escape.
    let html = INDEX
        .replace("{{csrf}}", &csrf)
        .replace("{{session}}", session)
        .replace("{{instance}}", shared.sessions.instance());
    typed(html, "text/html; charset=utf-8")
}

/// `GET /assets/NAME`.
pub(crate) async fn asset(Path(name): Path<String>) -> Response {
    match name.as_str() {
        "app.js" => typed(APP_JS.to_owned(), "text/javascript; charset=utf-8"),
        "app.css" => typed(APP_CSS.to_owned(), "text/css; charset=utf-8"),
        _ => not_found().await,
    }
}

pub(crate) async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found").into_response()
}

fn typed(body: String, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
