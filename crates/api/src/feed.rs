//! [`EventFeed`]: the event log from a cursor on, then new entries as they
//! are appended — what `subscribe` streams, for any transport.

use std::collections::VecDeque;

use safemeet_engine::{Error as EngineError, Handle as EngineHandle};

use crate::dispatch::DISPATCH_TIMEOUT;
use crate::{Error, Event};

/// Entries read from the engine at once. One batch is held in memory
/// (each entry at most about 100 KB as JSON, so a few MB at worst) and
/// handed out one by one.
const FEED_BATCH: usize = 32;

/// The event log after a cursor: first what is already there, then each
/// entry as it is appended.
#[derive(Debug)]
pub struct EventFeed {
    engine: EngineHandle,
    watch: tokio::sync::watch::Receiver<u64>,
    cursor: u64,
    ready: VecDeque<Event>,
}

impl EventFeed {
    /// A feed of the entries after `since` (0: from the start).
    pub fn new(engine: &EngineHandle, since: u64) -> Self {
        Self {
            // Watched before the first read, so nothing appended in between
            // is missed.
            watch: engine.log_watch(),
            engine: engine.clone(),
            cursor: since,
            ready: VecDeque::new(),
        }
    }

    /// The cursor of the last entry handed out (or the start).
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// The next entry, waiting for one to be appended if need be. This is
    /// the one wait without a deadline: a subscriber waits for events as
    /// long as it likes. It ends when the engine stops
    /// ([`EngineError::Stopped`]). Cancelling it loses nothing.
    pub async fn next(&mut self) -> Result<Event, Error> {
        loop {
            if let Some(event) = self.available().await? {
                return Ok(event);
            }
            self.watch
                .changed()
                .await
                .map_err(|_| Error::Engine(EngineError::Stopped))?;
        }
    }

    /// The next entry if the log already holds it; `None` when the feed has
    /// caught up (it does not wait).
    pub async fn available(&mut self) -> Result<Option<Event>, Error> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                self.cursor = event.cursor;
                return Ok(Some(event));
            }
            let batch = tokio::time::timeout(
                DISPATCH_TIMEOUT,
                self.engine.events(self.cursor, FEED_BATCH),
            )
            .await
            .map_err(|_| Error::Timeout {
                method: "subscribe",
                secs: DISPATCH_TIMEOUT.as_secs(),
            })??;
            if batch.is_empty() {
                return Ok(None);
            }
            self.ready.extend(
                batch
                    .iter()
                    .map(|(cursor, entry)| Event::from_log(*cursor, entry)),
            );
        }
    }
}

/// How often progress events go out at most: changes in between are
/// sent together, each transfer once with where it stands.
pub const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// Most transfers remembered as sent (the engine lists at most 1024).
const MAX_PROGRESS_KNOWN: usize = 2048;

/// File transfers as they change: what `subscribe` with `progress` and
/// the web's event stream send as `progress` events. At most one batch
/// every [`PROGRESS_EVERY`], holding each transfer that changed since
/// the last batch.
#[derive(Debug)]
pub struct ProgressFeed {
    engine: EngineHandle,
    watch: Option<tokio::sync::watch::Receiver<u64>>,
    sent: std::collections::HashMap<safemeet_proto::EventId, crate::files::FileTransfer>,
    /// A change was seen and not sent yet (so a cancelled `next` loses
    /// nothing).
    dirty: bool,
}

impl ProgressFeed {
    /// Follows `engine`'s transfers from now (those already listed are
    /// sent with their first change).
    pub fn new(engine: &EngineHandle) -> Self {
        let mut watch = engine.transfers_changed();
        if let Some(w) = &mut watch {
            w.borrow_and_update();
        }
        let sent = engine
            .transfers()
            .into_iter()
            .map(|t| (t.event_id, crate::files::FileTransfer::from(t)))
            .collect();
        Self {
            engine: engine.clone(),
            watch,
            sent,
            dirty: false,
        }
    }

    /// The transfers that changed, once some did (waiting at least
    /// [`PROGRESS_EVERY`] after the first change). Never ends on a node
    /// without files. Cancelling it loses nothing.
    pub async fn next(&mut self) -> Vec<crate::files::FileTransfer> {
        loop {
            if !self.dirty {
                let Some(watch) = &mut self.watch else {
                    return std::future::pending().await;
                };
                if watch.changed().await.is_err() {
                    self.watch = None;
                    continue;
                }
                self.dirty = true;
            }
            tokio::time::sleep(PROGRESS_EVERY).await;
            if let Some(watch) = &mut self.watch {
                watch.borrow_and_update();
            }
            self.dirty = false;
            let now: Vec<crate::files::FileTransfer> = self
                .engine
                .transfers()
                .into_iter()
                .map(crate::files::FileTransfer::from)
                .collect();
            let changed: Vec<_> = now
                .iter()
                .filter(|t| self.sent.get(&t.event_id) != Some(t))
                .cloned()
                .collect();
            if self.sent.len() > MAX_PROGRESS_KNOWN {
                self.sent.clear();
            }
            for t in &changed {
                self.sent.insert(t.event_id, t.clone());
            }
            if !changed.is_empty() {
                return changed;
            }
        }
    }
}
