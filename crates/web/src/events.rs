//! `GET /api/v1/events`: the event log as server-sent events.
//!
//! Each event's SSE `id` is its cursor and its `data` the event as JSON
//! (the same object `subscribe` sends on the socket). A stream starts
//! after the cursor in `Last-Event-ID` (which browsers send when they
//! reconnect), else after `?since=N`, else at the start of the log; so a
//! dropped connection resumes with nothing missed and nothing twice. The
//! stream ends when the session does (logout, expiry) or the daemon stops.
//!
//! Many streams follow one log: one task ([`Fanout`]) reads each new entry
//! once, encodes it once (the whole SSE frame) and hands the same bytes to
//! every stream. A stream first
//! reads what it missed from the log itself, then follows the fan-out,
//! skipping what it already sent; a stream that falls too far behind the
//! fan-out reads the log again from where it was. Nothing is skipped.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use safemeet_api::{EventFeed, ProgressFeed};
use safemeet_engine::Handle as EngineHandle;
use serde::Deserialize;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::Shared;
use crate::login::session;

/// A comment is sent this often on an idle stream, so proxies and the
/// browser see it alive.
pub(crate) const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Entries the fan-out holds for streams that are behind; one further
/// behind reads the log instead.
const FANOUT_DEPTH: usize = 1024;

/// One log entry, encoded once for every stream: its SSE frame.
#[derive(Debug, Clone)]
pub(crate) struct Encoded {
    cursor: u64,
    frame: Bytes,
}

impl Encoded {
    /// `id: CURSOR` and `data: JSON` (compact JSON holds no newline).
    fn of(event: &safemeet_api::Event) -> Option<Self> {
        let json = serde_json::to_string(event).ok()?;
        Some(Encoded {
            cursor: event.cursor,
            frame: Bytes::from(format!("id: {}\ndata: {json}\n\n", event.cursor)),
        })
    }
}

/// What an idle stream sends every [`KEEP_ALIVE`]: an SSE comment.
const KEEP_ALIVE_FRAME: &[u8] = b": keep-alive\n\n";

/// The one reader of new log entries, and their encoding, for every stream.
#[derive(Debug)]
pub(crate) struct Fanout {
    tx: broadcast::Sender<Encoded>,
}

impl Fanout {
    /// Starts reading the log after its current end, until `stop`.
    pub(crate) fn start(engine: &EngineHandle, stop: CancellationToken) -> Arc<Self> {
        Self::with_depth(engine, stop, FANOUT_DEPTH)
    }

    fn with_depth(engine: &EngineHandle, stop: CancellationToken, depth: usize) -> Arc<Self> {
        let (tx, _) = broadcast::channel(depth);
        let fanout = Arc::new(Fanout { tx: tx.clone() });
        let engine = engine.clone();
        tokio::spawn(async move {
            // From the end (the watch holds the next cursor): streams read
            // what came before from the log.
            let end = engine.log_watch().borrow().saturating_sub(1);
            let mut feed = EventFeed::new(&engine, end);
            loop {
                let next = tokio::select! {
                    () = stop.cancelled() => return,
                    next = feed.next() => next,
                };
                let Ok(event) = next else { return };
                let Some(encoded) = Encoded::of(&event) else {
                    continue;
                };
                // No stream listening is fine.
                let _ = tx.send(encoded);
            }
        });
        fanout
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct Since {
    since: Option<u64>,
    /// `1`: file transfers as they change, as `progress` events too.
    progress: Option<u8>,
}

pub(crate) async fn events(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(query): Query<Since>,
) -> Response {
    let open = match session(&shared, &headers, false) {
        Ok(open) => open,
        Err(refused) => return refused.into_response(),
    };
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().parse::<u64>());
    let since = match resume {
        Some(Ok(cursor)) => cursor,
        Some(Err(_)) => {
            return (StatusCode::BAD_REQUEST, "Last-Event-ID must be a cursor").into_response();
        }
        None => query.since.unwrap_or(0),
    };
    let Ok(permit) = shared.streams.clone().try_acquire_owned() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "too many event streams").into_response();
    };
    let follower = Follower::new(&shared.fanout, &shared.engine, since);
    let progress = (query.progress == Some(1)).then(|| ProgressFeed::new(&shared.engine));
    let stream = futures::stream::unfold((follower, progress), |(mut f, mut p)| async move {
        let frame = tokio::select! {
            next = f.next() => next?.frame,
            changed = async {
                match p.as_mut() {
                    Some(p) => p.next().await,
                    None => std::future::pending().await,
                }
            } => progress_frames(&changed),
            () = tokio::time::sleep(KEEP_ALIVE) => Bytes::from_static(KEEP_ALIVE_FRAME),
        };
        Some((Ok::<_, Infallible>(frame), (f, p)))
    })
    .take_until(open.ended.cancelled_owned())
    .take_until(shared.shutdown.clone().cancelled_owned())
    // The slot is held as long as the stream.
    .map(move |item| {
        let _held = &permit;
        item
    });
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Transfers as `progress` events: no `id` (they are not in the log, so
/// a reconnection does not resume after one), `data` the transfer as
/// `files` lists it.
fn progress_frames(transfers: &[safemeet_api::files::FileTransfer]) -> Bytes {
    let mut out = String::new();
    for t in transfers {
        if let Ok(json) = serde_json::to_string(t) {
            out.push_str("event: progress\ndata: ");
            out.push_str(&json);
            out.push_str("\n\n");
        }
    }
    Bytes::from(out)
}

/// One stream: catching up from the log, then following the fan-out.
struct Follower {
    rx: broadcast::Receiver<Encoded>,
    /// Reading the log itself (catching up), until it has caught up.
    feed: Option<EventFeed>,
    engine: EngineHandle,
    /// The last cursor sent.
    cursor: u64,
}

impl Follower {
    fn new(fanout: &Fanout, engine: &EngineHandle, since: u64) -> Self {
        Follower {
            // Subscribed before the log is read: nothing appended in
            // between is missed.
            rx: fanout.tx.subscribe(),
            feed: Some(EventFeed::new(engine, since)),
            engine: engine.clone(),
            cursor: since,
        }
    }

    /// The next entry to send; `None` ends the stream. Cancelling it
    /// loses nothing.
    async fn next(&mut self) -> Option<Encoded> {
        loop {
            if let Some(feed) = &mut self.feed {
                match feed.available().await {
                    Ok(Some(event)) => {
                        self.cursor = event.cursor;
                        return Encoded::of(&event);
                    }
                    Ok(None) => self.feed = None,
                    Err(e) => {
                        tracing::debug!(error = %e, "an event stream ended");
                        return None;
                    }
                }
            }
            match self.rx.recv().await {
                Ok(item) if item.cursor > self.cursor => {
                    self.cursor = item.cursor;
                    return Some(item);
                }
                // Already sent while catching up.
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    self.feed = Some(EventFeed::new(&self.engine, self.cursor));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

    use super::*;

    /// Streams that start in the past, keep up, or fall far behind the
    /// fan-out (here it holds 4 entries) each get every entry once, in
    /// order: exactly what the log lists.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn followers_behind_or_ahead_miss_nothing_and_repeat_nothing() {
        let nodes = safemeet_test_utils::spawn_nodes(2).await;
        let (alice, bob) = (&nodes[0].1, &nodes[1].1);
        let stop = CancellationToken::new();
        let fanout = Fanout::with_depth(alice, stop.clone(), 4);
        let start = alice.log_watch().borrow().saturating_sub(1);
        let mut early = Follower::new(&fanout, alice, 0);
        let mut slow = Follower::new(&fanout, alice, start);
        for i in 0..40 {
            bob.send_dm(alice.user_id(), &format!("m{i}"))
                .await
                .unwrap();
        }
        // Wait until all 40 are in Alice's log.
        let listed = tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                let all = alice.events(0, 10_000).await.unwrap();
                let messages = all
                    .iter()
                    .filter(|(_, e)| matches!(e, safemeet_engine::LogEntry::Message { .. }))
                    .count();
                if messages >= 40 {
                    return all.iter().map(|(c, _)| *c).collect::<Vec<u64>>();
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("the messages arrived");
        let end = *listed.last().unwrap();
        for (follower, from) in [(&mut early, 0), (&mut slow, start)] {
            let mut got = Vec::new();
            while got.last() != Some(&end) {
                let next = tokio::time::timeout(Duration::from_secs(30), follower.next())
                    .await
                    .expect("the next entry")
                    .expect("the stream goes on");
                let frame = String::from_utf8(next.frame.to_vec()).unwrap();
                assert!(frame.starts_with(&format!("id: {}\ndata: {{", next.cursor)));
                got.push(next.cursor);
            }
            let expected: Vec<u64> = listed.iter().copied().filter(|c| *c > from).collect();
            assert_eq!(got, expected, "from {from}");
        }
        stop.cancel();
    }
}
