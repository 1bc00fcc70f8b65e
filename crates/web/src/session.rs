//! Sessions: a random token in a cookie, a CSRF token beside it, and
//! expiry.
//!
//! The cookie is `HttpOnly` (no script reads it), `SameSite=Strict` (no
//! other site's page sends it), `Secure` when the app is reached over
//! HTTPS, and named after this daemon (`safemeet-<8 hex>`): browsers keep
//! cookies by host, not port, and two daemons on one machine must not
//! overwrite each other's. The server keeps only a hash of each token.
//!
//! A session ends at logout, after [`IDLE`] without a request, or
//! [`MAX_AGE`] after login, whichever comes first; at most
//! [`MAX_SESSIONS`] are open (a new login ends the oldest). Its event
//! streams end with it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use safemeet_proto::clock::{Clock, SystemClock};

use axum::http::{HeaderMap, HeaderValue, header};
use rand::RngCore;
use tokio_util::sync::CancellationToken;

/// A session unused this long ends.
pub const IDLE: Duration = Duration::from_secs(8 * 3600);
/// A session ends this long after login, used or not.
pub const MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// Most sessions open at once.
pub const MAX_SESSIONS: usize = 16;
/// The header a request that changes something carries its CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// An open session, as a request sees it.
#[derive(Debug, Clone)]
pub(crate) struct Open {
    pub(crate) csrf: String,
    /// Cancelled when the session ends.
    pub(crate) ended: CancellationToken,
}

#[derive(Debug)]
struct Session {
    open: Open,
    created: Instant,
    seen: Instant,
}

/// The open sessions of one server.
#[derive(Debug)]
pub(crate) struct Sessions {
    cookie: String,
    /// The token a login must carry as its CSRF token: in the page, which
    /// another origin cannot read.
    login_token: String,
    map: Mutex<HashMap<[u8; 32], Session>>,
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    data_encoding::BASE64URL_NOPAD.encode(&bytes)
}

fn key(token: &str) -> [u8; 32] {
    *blake3::hash(token.as_bytes()).as_bytes()
}

/// Compares two tokens in time that does not depend on where they differ.
pub(crate) fn same(a: &str, b: &str) -> bool {
    blake3::hash(a.as_bytes()) == blake3::hash(b.as_bytes())
}

impl Sessions {
    pub(crate) fn new(instance: &str, port: u16) -> Self {
        let tag = blake3::hash(format!("{instance}:{port}").as_bytes());
        let cookie = format!("safemeet-{}", &tag.to_hex()[..8]);
        Sessions {
            cookie,
            login_token: random_token(),
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Names this daemon (its cookie's name): the app keeps what it
    /// remembers in the browser under it.
    pub(crate) fn instance(&self) -> &str {
        &self.cookie
    }

    pub(crate) fn login_token(&self) -> &str {
        &self.login_token
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        // A panic while the map was held leaves it whole (each change is
        // one insert or remove): go on with it.
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Opens a session: its token (for the cookie) and CSRF token.
    pub(crate) fn open(&self) -> (String, String) {
        let (token, csrf) = (random_token(), random_token());
        let now = SystemClock.instant();
        let mut map = self.lock();
        sweep(&mut map, now);
        while map.len() >= MAX_SESSIONS {
            let Some(oldest) = map.iter().min_by_key(|(_, s)| s.created).map(|(k, _)| *k) else {
                break;
            };
            if let Some(s) = map.remove(&oldest) {
                s.open.ended.cancel();
            }
        }
        map.insert(
            key(&token),
            Session {
                open: Open {
                    csrf: csrf.clone(),
                    ended: CancellationToken::new(),
                },
                created: now,
                seen: now,
            },
        );
        (token, csrf)
    }

    /// The session the request's cookie names, if it is open (and marks it
    /// used).
    pub(crate) fn of(&self, headers: &HeaderMap) -> Option<Open> {
        let token = self.token(headers)?;
        let now = SystemClock.instant();
        let mut map = self.lock();
        let k = key(token);
        let session = map.get_mut(&k)?;
        if !live(session, now) {
            if let Some(s) = map.remove(&k) {
                s.open.ended.cancel();
            }
            return None;
        }
        session.seen = now;
        Some(session.open.clone())
    }

    /// Whether the request's cookie names an open session, without marking
    /// it used.
    pub(crate) fn peek(&self, headers: &HeaderMap) -> bool {
        let now = SystemClock.instant();
        self.token(headers)
            .and_then(|t| self.lock().get(&key(t)).map(|s| live(s, now)))
            .unwrap_or(false)
    }

    /// Ends the sessions past their time, and their event streams.
    pub(crate) fn sweep(&self) {
        sweep(&mut self.lock(), SystemClock.instant());
    }

    /// Ends the request's session, if any.
    pub(crate) fn end(&self, headers: &HeaderMap) {
        if let Some(token) = self.token(headers)
            && let Some(s) = self.lock().remove(&key(token))
        {
            s.open.ended.cancel();
        }
    }

    fn token<'a>(&self, headers: &'a HeaderMap) -> Option<&'a str> {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == self.cookie)
            .map(|(_, value)| value)
    }

    /// The `Set-Cookie` value that opens a session.
    pub(crate) fn set_cookie(&self, token: &str, secure: bool) -> Option<HeaderValue> {
        let secure = if secure { "; Secure" } else { "" };
        HeaderValue::from_str(&format!(
            "{}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
            self.cookie,
            MAX_AGE.as_secs()
        ))
        .ok()
    }

    /// The `Set-Cookie` value that clears it.
    pub(crate) fn clear_cookie(&self) -> Option<HeaderValue> {
        HeaderValue::from_str(&format!(
            "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0",
            self.cookie
        ))
        .ok()
    }
}

fn sweep(map: &mut HashMap<[u8; 32], Session>, now: Instant) {
    map.retain(|_, s| {
        let keep = live(s, now);
        if !keep {
            s.open.ended.cancel();
        }
        keep
    });
}

fn live(s: &Session, now: Instant) -> bool {
    now.duration_since(s.seen) < IDLE && now.duration_since(s.created) < MAX_AGE
}

/// Whether the request came over HTTPS (a TLS proxy in front says so).
pub(crate) fn over_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

/// The request's CSRF token matches `expected`.
pub(crate) fn csrf_ok(headers: &HeaderMap, expected: &str) -> bool {
    headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| same(t, expected))
}
