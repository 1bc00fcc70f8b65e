//! Checks every request passes before any handler runs, and the headers
//! every answer carries.
//!
//! - **Host.** Only the names this server is reached by on loopback: its
//!   address (`127.0.0.1:PORT`, `[::1]:PORT`) and `localhost:PORT`. A page
//!   on another site that rebinds its DNS name to 127.0.0.1 sends its own
//!   name as `Host`, and gets 403 before it can read anything.
//! - **Origin.** A request that changes something (not GET or HEAD) must
//!   come from this origin: `Origin`, when sent, must be exactly
//!   `http://HOST`. Browsers send it on every cross-origin POST.
//! - **Fetch metadata.** `Sec-Fetch-Site: cross-site` or `same-site` (a
//!   page on another localhost port is the same site) is refused, except a
//!   top-level navigation to `/`, so a link to the app still opens it.
//! - CSRF tokens are checked per route, with the session
//!   ([`crate::session`]).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::set_header::SetResponseHeaderLayer;

use crate::Shared;

/// The `Host` values this server answers to.
#[derive(Debug)]
pub(crate) struct Hosts(Vec<String>);

impl Hosts {
    pub(crate) fn for_addr(addr: SocketAddr) -> Self {
        let port = addr.port();
        // The address itself (`127.0.0.1:PORT`, `[::1]:PORT`, any other
        // loopback one it was bound to), and `localhost`.
        Hosts(vec![addr.to_string(), format!("localhost:{port}")])
    }

    fn allows(&self, host: &str) -> bool {
        self.0.iter().any(|h| h.eq_ignore_ascii_case(host))
    }
}

/// A refusal: 403 with a short plain-text reason.
pub(crate) fn forbidden(why: &'static str) -> Response {
    (StatusCode::FORBIDDEN, why).into_response()
}

/// The request's `Host`, if it is one this server answers to.
pub(crate) fn host(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::HOST).and_then(|h| h.to_str().ok())
}

/// The middleware: Host, fetch metadata, then Origin.
pub(crate) async fn check(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    let Some(host) = host(headers).filter(|h| shared.guard.allows(h)) else {
        return forbidden("this server answers only to its loopback address");
    };
    let site = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none");
    let navigation = request.method() == Method::GET
        && request.uri().path() == "/"
        && headers.get("sec-fetch-mode").and_then(|v| v.to_str().ok()) == Some("navigate");
    if matches!(site, "cross-site" | "same-site") && !navigation {
        return forbidden("cross-site request refused");
    }
    if !matches!(*request.method(), Method::GET | Method::HEAD)
        && let Some(origin) = headers.get(header::ORIGIN)
    {
        let ours = [format!("http://{host}"), format!("https://{host}")];
        if !ours.iter().any(|o| origin.as_bytes() == o.as_bytes()) {
            return forbidden("cross-origin request refused");
        }
    }
    next.run(request).await
}

/// The Content Security Policy: scripts, styles, images and connections
/// from this origin only; no inline script, no framing, no plugins.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; form-action 'self'; \
    frame-ancestors 'none'; base-uri 'none'";

/// The headers every answer carries (unless the handler set its own).
pub(crate) const HEADERS: [(&str, &str); 8] = [
    ("content-security-policy", CSP),
    ("x-frame-options", "DENY"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
    (
        "permissions-policy",
        "camera=(), microphone=(), geolocation=()",
    ),
    ("cache-control", "no-store"),
];

/// Sets one of [`HEADERS`] on every answer that lacks it.
pub(crate) fn set(name: &'static str, value: &'static str) -> SetResponseHeaderLayer<HeaderValue> {
    SetResponseHeaderLayer::if_not_present(
        HeaderName::from_static(name),
        HeaderValue::from_static(value),
    )
}
