//! Login with the account passphrase, logout, and what guessing costs.
//!
//! Attempts are checked one at a time (each is a KDF run, seconds of
//! memory-hard work, so they must not pile up): at most [`MAX_WAITING`]
//! wait their turn and more get 429. A wrong passphrase is answered after
//! [`SLOW`]; past [`FREE_FAILURES`] failures within [`WINDOW`], each
//! further one waits twice as long as the one before, from [`PENALTY`] up
//! to [`MAX_DELAY`], and the turn is held meanwhile, so a guesser gets a
//! handful of tries a minute at most. A correct passphrase clears the
//! count. Every login and failed login is written to the security log.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use safemeet_proto::clock::{Clock, SystemClock};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::Shared;
use crate::guard::forbidden;
use crate::session::{Open, csrf_ok, over_https};

/// Largest login body.
pub const MAX_BODY: usize = 4096;
/// A wrong passphrase is answered no sooner than this.
pub const SLOW: Duration = Duration::from_millis(500);
/// Failures within [`WINDOW`] answered after [`SLOW`] alone.
pub const FREE_FAILURES: usize = 10;
/// The wait after the first failure past [`FREE_FAILURES`].
pub const PENALTY: Duration = Duration::from_secs(4);
/// The longest wait.
pub const MAX_DELAY: Duration = Duration::from_secs(60);
/// Failures older than this are forgotten.
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// Most attempts waiting for their turn.
pub const MAX_WAITING: usize = 4;

/// The failures so far, and the turn.
#[derive(Debug, Default)]
pub(crate) struct Throttle {
    failures: tokio::sync::Mutex<VecDeque<Instant>>,
    waiting: AtomicUsize,
}

/// How long the answer to the `n`th failure within the window waits.
pub fn delay_after(n: usize) -> Duration {
    if n <= FREE_FAILURES {
        return SLOW;
    }
    let doublings = u32::try_from(n - FREE_FAILURES - 1)
        .unwrap_or(u32::MAX)
        .min(16);
    PENALTY.saturating_mul(1 << doublings).min(MAX_DELAY)
}

#[derive(Deserialize)]
struct Login {
    passphrase: String,
}

/// `POST /api/v1/login` with `{"passphrase": …}` and the page's login
/// token as CSRF token: opens a session (the cookie) and answers its CSRF
/// token.
pub(crate) async fn login(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !csrf_ok(&headers, shared.sessions.login_token()) {
        return forbidden("missing or wrong CSRF token");
    }
    let Ok(Login { passphrase }) = serde_json::from_slice::<Login>(&body) else {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(serde_json::json!({ "error": "expected {\"passphrase\": \"…\"}" })),
        )
            .into_response();
    };
    let passphrase = Zeroizing::new(passphrase);
    let throttle = &shared.login;
    if throttle.waiting.fetch_add(1, Ordering::SeqCst) >= MAX_WAITING {
        throttle.waiting.fetch_sub(1, Ordering::SeqCst);
        return too_many();
    }
    let mut failures = throttle.failures.lock().await;
    throttle.waiting.fetch_sub(1, Ordering::SeqCst);
    let now = SystemClock.instant();
    while failures
        .front()
        .is_some_and(|t| now.duration_since(*t) >= WINDOW)
    {
        failures.pop_front();
    }
    let check = shared.config.check_passphrase.clone();
    let right = tokio::task::spawn_blocking(move || check(passphrase.as_str()))
        .await
        .unwrap_or(false);
    if !right {
        failures.push_back(SystemClock.instant());
        let n = failures.len();
        (shared.config.record)(
            "web_login_failed",
            Some(format!("{n} in the last {} min", WINDOW.as_secs() / 60)),
        );
        tracing::warn!(failures = n, "web login with a wrong passphrase");
        // The turn is held while waiting: nobody guesses meanwhile.
        tokio::time::sleep(delay_after(n)).await;
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(serde_json::json!({ "error": "wrong passphrase" })),
        )
            .into_response();
    }
    failures.clear();
    drop(failures);
    (shared.config.record)("web_login", None);
    let (token, csrf) = shared.sessions.open();
    let mut response = axum::Json(serde_json::json!({ "csrf": csrf })).into_response();
    if let Some(cookie) = shared.sessions.set_cookie(&token, over_https(&headers)) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

fn too_many() -> Response {
    let mut response = (
        StatusCode::TOO_MANY_REQUESTS,
        axum::Json(
            serde_json::json!({ "error": "too many login attempts at once; try again later" }),
        ),
    )
        .into_response();
    response.headers_mut().insert(
        header::RETRY_AFTER,
        axum::http::HeaderValue::from_static("5"),
    );
    response
}

/// `POST /api/v1/logout`: ends the session and its event streams.
pub(crate) async fn logout(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Err(refused) = session(&shared, &headers, true) {
        return refused.into_response();
    }
    shared.sessions.end(&headers);
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Some(cookie) = shared.sessions.clear_cookie() {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

/// Why a request was not let in.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Refused {
    /// No open session (401).
    NoSession,
    /// The CSRF token is missing or wrong (403).
    Csrf,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Refused::NoSession => (StatusCode::UNAUTHORIZED, "log in first").into_response(),
            Refused::Csrf => forbidden("missing or wrong CSRF token"),
        }
    }
}

/// The request's open session: 401 without one, and 403 when `csrf` is
/// asked for and the token is missing or wrong.
pub(crate) fn session(shared: &Shared, headers: &HeaderMap, csrf: bool) -> Result<Open, Refused> {
    let open = shared.sessions.of(headers).ok_or(Refused::NoSession)?;
    if csrf && !csrf_ok(headers, &open.csrf) {
        return Err(Refused::Csrf);
    }
    Ok(open)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_past_the_free_ones_wait_longer_each_time_up_to_the_cap() {
        for n in 1..=FREE_FAILURES {
            assert_eq!(delay_after(n), SLOW);
        }
        assert_eq!(delay_after(FREE_FAILURES + 1), PENALTY);
        assert_eq!(delay_after(FREE_FAILURES + 2), PENALTY * 2);
        assert_eq!(delay_after(FREE_FAILURES + 100), MAX_DELAY);
        assert_eq!(delay_after(usize::MAX), MAX_DELAY);
    }
}
