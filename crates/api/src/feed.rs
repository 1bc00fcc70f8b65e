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
