//! What a node refuses, counted and reported to the operator in aggregate.
//!
//! Each refusal (a connection over a per-address cap, a subscription over
//! the cap or malformed, a stalled or oversized stream, a rejected gossip
//! message) is counted by kind. Once a minute at most, each kind refused
//! since the last report gets one WARN line, with counts only:
//! `refused 1532 malformed gossip messages from 12 peers in the last
//! minute`. Sources are told apart by a keyed hash held in memory for the
//! current window only (never logged), and at most [`MAX_SOURCES`] of
//! them per kind. Totals since the start are kept for the application and
//! the relay's metrics.

use std::collections::HashSet;
use std::hash::{BuildHasher, Hash, RandomState};
use std::time::{Duration, Instant};

use safemeet_proto::clock::{Clock, SystemClock};

/// How often, at most, a kind of refusal is reported: once a minute keeps
/// a flood to a handful of lines an hour per kind.
pub const REPORT_EVERY: Duration = Duration::from_secs(60);

/// Most distinct sources counted per kind per window: enough to tell a
/// single host from a crowd; past it the count reads "at least".
pub(crate) const MAX_SOURCES: usize = 4096;

/// A kind of refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Refusal {
    /// An inbound connection over its IP address's or prefix's cap.
    ConnectionPerAddress,
    /// Gossip subscriptions that were malformed or over the per-peer cap
    /// (the peer is disconnected).
    Subscriptions,
    /// An inbound request stream that did not arrive in time.
    StalledStream,
    /// An inbound request stream that announced more than the protocol
    /// allows, or broke off.
    BadStream,
    /// A gossip message rejected: malformed, or failing to authenticate.
    GossipRejected,
    /// A direct delivery the application refused as junk (see `junk`).
    JunkDelivery,
}

impl Refusal {
    /// Every kind, in a fixed order (the index of [`RefusalCounts`]).
    pub const ALL: [Refusal; 6] = [
        Refusal::ConnectionPerAddress,
        Refusal::Subscriptions,
        Refusal::StalledStream,
        Refusal::BadStream,
        Refusal::GossipRejected,
        Refusal::JunkDelivery,
    ];

    fn index(self) -> usize {
        match self {
            Refusal::ConnectionPerAddress => 0,
            Refusal::Subscriptions => 1,
            Refusal::StalledStream => 2,
            Refusal::BadStream => 3,
            Refusal::GossipRejected => 4,
            Refusal::JunkDelivery => 5,
        }
    }

    /// A label for metrics (`snake_case`, no identifiers).
    pub fn label(self) -> &'static str {
        match self {
            Refusal::ConnectionPerAddress => "connection_per_address",
            Refusal::Subscriptions => "subscriptions",
            Refusal::StalledStream => "stalled_stream",
            Refusal::BadStream => "bad_stream",
            Refusal::GossipRejected => "gossip_rejected",
            Refusal::JunkDelivery => "junk_delivery",
        }
    }

    /// What is refused, in the plural, and what it comes from.
    fn words(self) -> (&'static str, &'static str) {
        match self {
            Refusal::ConnectionPerAddress => {
                ("connections over the per-address limit", "addresses")
            }
            Refusal::Subscriptions => ("malformed or excess gossip subscriptions", "peers"),
            Refusal::StalledStream => ("stalled request streams", "peers"),
            Refusal::BadStream => ("oversized or broken request streams", "peers"),
            Refusal::GossipRejected => ("malformed or forged gossip messages", "peers"),
            Refusal::JunkDelivery => ("malformed or forged direct deliveries", "peers"),
        }
    }
}

/// Refusals since the start, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RefusalCounts([u64; Refusal::ALL.len()]);

impl RefusalCounts {
    /// How many of `kind` were refused.
    pub fn get(&self, kind: Refusal) -> u64 {
        self.0[kind.index()]
    }
}

#[derive(Debug, Default)]
struct Window {
    count: u64,
    sources: HashSet<u64>,
}

/// Counts refusals and reports them (see the module docs).
#[derive(Debug)]
pub struct RefusalLog {
    totals: RefusalCounts,
    windows: [Window; Refusal::ALL.len()],
    /// Hashes sources, with a key of this process's own.
    hasher: RandomState,
    window_start: Instant,
    every: Duration,
}

impl Default for RefusalLog {
    fn default() -> Self {
        Self::new(REPORT_EVERY)
    }
}

impl RefusalLog {
    /// A log reporting at most once per `every`.
    pub fn new(every: Duration) -> Self {
        Self {
            totals: RefusalCounts::default(),
            windows: Default::default(),
            hasher: RandomState::new(),
            window_start: SystemClock.instant(),
            every,
        }
    }

    /// Counts one refusal of `kind` from `source` (a peer id, an address:
    /// only its keyed hash is kept, and only until the next report).
    pub fn record(&mut self, kind: Refusal, source: impl Hash) {
        self.record_n(kind, source, 1);
    }

    /// Counts `n` refusals of `kind` from `source`.
    pub fn record_n(&mut self, kind: Refusal, source: impl Hash, n: u64) {
        let i = kind.index();
        self.totals.0[i] = self.totals.0[i].saturating_add(n);
        let window = &mut self.windows[i];
        window.count = window.count.saturating_add(n);
        if window.sources.len() < MAX_SOURCES {
            window.sources.insert(self.hasher.hash_one(source));
        }
    }

    /// Counts `n` refusals of `kind` whose sources are not known (streams
    /// refused inside a codec).
    pub fn record_unattributed(&mut self, kind: Refusal, n: u64) {
        if n == 0 {
            return;
        }
        let i = kind.index();
        self.totals.0[i] = self.totals.0[i].saturating_add(n);
        let window = &mut self.windows[i];
        window.count = window.count.saturating_add(n);
    }

    /// Counts what the codecs refused since the last call.
    pub fn absorb(&mut self, streams: &crate::StreamRefusals) {
        let (stalled, bad) = streams.take();
        self.record_unattributed(Refusal::StalledStream, stalled);
        self.record_unattributed(Refusal::BadStream, bad);
    }

    /// Refusals since the start.
    pub fn totals(&self) -> RefusalCounts {
        self.totals
    }

    /// When the current window ends (call [`report_due`](Self::report_due)
    /// then).
    pub fn next_report(&self) -> Instant {
        self.window_start + self.every
    }

    /// If the window has ended, logs one WARN line per kind refused in it
    /// and starts the next window.
    pub fn report_due(&mut self, now: Instant) {
        if now < self.next_report() {
            return;
        }
        let minutes = self.every.as_secs().div_ceil(60).max(1);
        let span = if minutes == 1 {
            "the last minute".to_owned()
        } else {
            format!("the last {minutes} minutes")
        };
        for kind in Refusal::ALL {
            let window = std::mem::take(&mut self.windows[kind.index()]);
            if window.count == 0 {
                continue;
            }
            let (what, from) = kind.words();
            let sources = window.sources.len();
            let at_least = if sources >= MAX_SOURCES {
                "at least "
            } else {
                ""
            };
            tracing::warn!(
                "refused {} {what} from {at_least}{sources} {from} in {span}",
                window.count
            );
        }
        self.window_start = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_kind_and_distinct_source() {
        let mut log = RefusalLog::new(Duration::from_secs(60));
        for i in 0..10u32 {
            log.record(Refusal::GossipRejected, i % 3);
        }
        log.record_n(Refusal::StalledStream, "a", 5);
        let totals = log.totals();
        assert_eq!(totals.get(Refusal::GossipRejected), 10);
        assert_eq!(totals.get(Refusal::StalledStream), 5);
        assert_eq!(totals.get(Refusal::Subscriptions), 0);
        assert_eq!(
            log.windows[Refusal::GossipRejected.index()].sources.len(),
            3
        );
        // Not due yet: the window stays; due: it is reset, totals are not.
        log.report_due(SystemClock.instant());
        assert_eq!(log.windows[Refusal::GossipRejected.index()].count, 10);
        log.report_due(log.next_report());
        assert_eq!(log.windows[Refusal::GossipRejected.index()].count, 0);
        assert_eq!(log.totals().get(Refusal::GossipRejected), 10);
    }
}
