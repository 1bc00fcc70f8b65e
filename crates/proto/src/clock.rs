//! How time enters SafeMeet.
//!
//! State machines (`proto`, `crypto`, the core of `engine`) never read the
//! clock: they take a [`Timestamp`] or an instant as an argument. The edges
//! of the system (node, net, store backends) hold a [`Clock`] and pass its
//! readings in. This module is the one place allowed to call
//! `SystemTime::now` and `Instant::now` (enforced by `clippy.toml`), so tests
//! can swap in a [`ManualClock`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::Timestamp;

/// A source of wall-clock and monotonic time.
pub trait Clock: Send + Sync {
    /// The current wall-clock time.
    fn now(&self) -> Timestamp;
    /// A monotonic instant, for timeouts and measuring durations.
    fn instant(&self) -> Instant;
}

/// The operating system's clocks.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // this is the one clock module
    fn now(&self) -> Timestamp {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Timestamp::from_millis(ms.min(Timestamp::MAX_MILLIS)).unwrap_or(Timestamp::EPOCH)
    }

    #[allow(clippy::disallowed_methods)] // this is the one clock module
    fn instant(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that moves only when told to. Cloning shares the same time.
#[derive(Debug, Clone)]
pub struct ManualClock {
    millis: Arc<AtomicU64>,
    base: Instant,
}

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: Timestamp) -> Self {
        Self {
            millis: Arc::new(AtomicU64::new(start.as_millis())),
            base: SystemClock.instant(),
        }
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        let add = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        self.millis.fetch_add(add, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        let ms = self
            .millis
            .load(Ordering::SeqCst)
            .min(Timestamp::MAX_MILLIS);
        Timestamp::from_millis(ms).unwrap_or(Timestamp::EPOCH)
    }

    fn instant(&self) -> Instant {
        let ms = self.millis.load(Ordering::SeqCst);
        self.base + Duration::from_millis(ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(Timestamp::from_millis(1_000).unwrap());
        let i0 = c.instant();
        assert_eq!(c.now().as_millis(), 1_000);
        c.advance(Duration::from_millis(250));
        assert_eq!(c.now().as_millis(), 1_250);
        assert_eq!(c.instant() - i0, Duration::from_millis(250));
    }

    #[test]
    fn system_clock_is_after_2020() {
        assert!(SystemClock.now().as_millis() > 1_577_836_800_000);
    }
}
