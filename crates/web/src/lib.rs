//! The web app and the HTTP API, served by the daemon on a loopback
//! address.
//!
//! - `POST /api/v1/rpc`: one JSON-RPC 2.0 request per body, served by the
//!   same [`dispatch`](safemeet_api::dispatch) as the Unix socket.
//! - `GET /api/v1/events`: the event log as server-sent events, each with
//!   its cursor as the SSE id, so a reconnect (`Last-Event-ID`) resumes
//!   with no gap.
//! - `GET /api/v1/check`: liveness, without a session.
//! - `POST /api/v1/login`, `POST /api/v1/logout`: sessions.
//! - `GET /`: the web app (its assets are in the binary; nothing is
//!   fetched from elsewhere).
//!
//! Anything but `check`, the page and its assets needs a session, which a
//! login with the account passphrase opens. The defences, each in its
//! module: [`guard`] (Host, Origin and fetch-metadata checks against DNS
//! rebinding and cross-site requests; security headers), [`session`]
//! (cookies, CSRF tokens, expiry), [`login`] (slowed and rate-limited
//! failures, written to the security log).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use safemeet_api::Identity;
use safemeet_engine::Handle as EngineHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

mod assets;
mod events;
mod files;
pub mod guard;
mod listener;
pub mod login;
mod qr;
mod rpc;
pub mod session;

/// Checks an account passphrase (slow on purpose: a KDF). Called on a
/// blocking thread, one at a time.
pub type PassphraseCheck = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Writes an entry to the account's security log: an event name and an
/// optional subject.
pub type SecurityRecord = Arc<dyn Fn(&str, Option<String>) + Send + Sync>;

/// What the web server needs from the daemon beyond the engine.
#[derive(Clone)]
pub struct Config {
    /// Names this daemon among others on the same host (its peer id):
    /// cookies are not kept apart by port, so each daemon's has its own name.
    pub instance: String,
    /// Checks a login's passphrase.
    pub check_passphrase: PassphraseCheck,
    /// Notes logins and failed logins.
    pub record: SecurityRecord,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

/// Why the web server did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The address is not a loopback one.
    #[error(
        "--web {0}: the web app is served on a loopback address only (127.0.0.1 or [::1]); \
         it speaks plain HTTP, and the passphrase would cross the network"
    )]
    NotLoopback(SocketAddr),
    /// Binding failed.
    #[error("--web {0}: {1}")]
    Bind(SocketAddr, #[source] std::io::Error),
}

/// Binds the web server's address, which must be a loopback one. Done
/// before anything else starts, so a taken port is told at once.
pub fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, StartError> {
    if !addr.ip().is_loopback() {
        return Err(StartError::NotLoopback(addr));
    }
    let listener = std::net::TcpListener::bind(addr).map_err(|e| StartError::Bind(addr, e))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| StartError::Bind(addr, e))?;
    Ok(listener)
}

/// Shared by every request.
pub(crate) struct Shared {
    pub(crate) engine: EngineHandle,
    pub(crate) identity: Identity,
    pub(crate) config: Config,
    pub(crate) guard: guard::Hosts,
    pub(crate) sessions: session::Sessions,
    pub(crate) login: login::Throttle,
    pub(crate) streams: Arc<tokio::sync::Semaphore>,
    pub(crate) fanout: Arc<events::Fanout>,
    pub(crate) shutdown: CancellationToken,
}

/// Most event streams served at once; more get 503.
pub const MAX_STREAMS: usize = 256;

pub use listener::MAX_CONNECTIONS;

/// Serves the web app and the HTTP API on `listener` until `shutdown` is
/// cancelled. Open event streams end then too.
pub async fn serve_until(
    listener: std::net::TcpListener,
    engine: EngineHandle,
    identity: Identity,
    config: Config,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let listener = TcpListener::from_std(listener)?;
    let addr = listener.local_addr()?;
    let fanout = events::Fanout::start(&engine, shutdown.clone());
    let shared = Arc::new(Shared {
        engine,
        identity,
        guard: guard::Hosts::for_addr(addr),
        sessions: session::Sessions::new(&config.instance, addr.port()),
        login: login::Throttle::default(),
        streams: Arc::new(tokio::sync::Semaphore::new(MAX_STREAMS)),
        fanout,
        shutdown: shutdown.clone(),
        config,
    });
    // Sessions past their time end (with their streams) even if nobody
    // uses them again.
    let sweeper = {
        let (shared, stop) = (shared.clone(), shutdown.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_EVERY);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = tick.tick() => shared.sessions.sweep(),
                }
            }
        })
    };
    let app = router(shared);
    let listener = listener::Capped::new(listener);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await;
    sweeper.abort();
    served
}

/// How often sessions past their time are ended.
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

fn router(shared: Arc<Shared>) -> Router {
    let api = Router::new()
        .route(
            "/api/v1/rpc",
            post(rpc::rpc).layer(DefaultBodyLimit::max(safemeet_api::MAX_LINE_BYTES)),
        )
        .route("/api/v1/events", get(events::events))
        .route("/api/v1/check", get(rpc::check))
        .route(
            "/api/v1/login",
            post(login::login).layer(DefaultBodyLimit::max(login::MAX_BODY)),
        )
        .route("/api/v1/logout", post(login::logout))
        .route("/api/v1/invite.svg", get(qr::invite))
        // The engine enforces the file size limit as the body streams in.
        .route(
            "/api/v1/files",
            post(files::upload).layer(DefaultBodyLimit::disable()),
        )
        .route("/api/v1/files/{event}", get(files::download));
    let mut app = Router::new()
        .route("/", get(assets::page))
        .route("/assets/{name}", get(assets::asset))
        .merge(api)
        .fallback(assets::not_found)
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            guard::check,
        ))
        .with_state(shared);
    for (name, value) in guard::HEADERS {
        app = app.layer(guard::set(name, value));
    }
    app
}
