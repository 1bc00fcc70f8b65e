//! `GET /api/v1/events`: the event log as server-sent events.
//!
//! Each event's SSE `id` is its cursor and its `data` the event as JSON
//! (the same object `subscribe` sends on the socket). A stream starts
//! after the cursor in `Last-Event-ID` (which browsers send when they
//! reconnect), else after `?since=N`, else at the start of the log; so a
//! dropped connection resumes with nothing missed and nothing twice. The
//! stream ends when the session does (logout, expiry) or the daemon stops.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use safemeet_api::EventFeed;
use serde::Deserialize;

use crate::Shared;
use crate::login::session;

/// A comment is sent this often on an idle stream, so proxies and the
/// browser see it alive.
pub(crate) const KEEP_ALIVE: Duration = Duration::from_secs(15);

#[derive(Debug, Deserialize)]
pub(crate) struct Since {
    since: Option<u64>,
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
    let feed = EventFeed::new(&shared.engine, since);
    let stream = futures::stream::unfold(Some(feed), |feed| async move {
        let mut feed = feed?;
        match feed.next().await {
            Ok(event) => {
                let data = serde_json::to_string(&event).ok()?;
                let sse = Event::default().id(event.cursor.to_string()).data(data);
                Some((Ok::<_, Infallible>(sse), Some(feed)))
            }
            Err(e) => {
                tracing::debug!(error = %e, "an event stream ended");
                None
            }
        }
    })
    .take_until(open.ended.cancelled_owned())
    .take_until(shared.shutdown.clone().cancelled_owned())
    // The slot is held as long as the stream.
    .map(move |item| {
        let _held = &permit;
        item
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response()
}
