//! Counters of the core's queues, for metrics and tests.

use safemeet_store::Store;

use crate::core::Core;

/// Counters of the core's queues.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Outbox items in memory waiting for delivery.
    pub pending: usize,
    /// Outbox items with no known recipient device yet.
    pub unrouted: usize,
    /// Deliveries and deposits in flight.
    pub in_flight: usize,
    /// Room messages holding a place in the gossip window.
    pub gossip_window: usize,
    /// Acknowledgement frames waiting or in flight.
    pub acks_queued: usize,
    /// Acknowledgement frames given up (queue full, or out of retries).
    pub acks_dropped: u64,
}

impl<S: Store + Clone> Core<S> {
    /// Counters of the core's queues, for metrics and tests.
    pub fn stats(&self) -> Stats {
        Stats {
            pending: self.outbox.pending.len(),
            unrouted: self.outbox.unrouted_len(),
            in_flight: self.outbox.in_flight,
            gossip_window: self.gossip.window.len(),
            acks_queued: self.acks.len(),
            acks_dropped: self.acks.dropped,
        }
    }
}
