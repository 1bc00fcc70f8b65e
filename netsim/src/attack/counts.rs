//! What the attackers did and what became of it: counters shared by their
//! tasks, and the snapshot the report shows.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Counts of what the attackers did and what became of it.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) connections_opened: AtomicU64,
    pub(crate) connections_closed: AtomicU64,
    pub(crate) dials_failed: AtomicU64,
    pub(crate) topics_announced: AtomicU64,
    pub(crate) resubscriptions: AtomicU64,
    pub(crate) gossip_refused: AtomicU64,
    pub(crate) gossip_frames_sent: AtomicU64,
    pub(crate) gossip_frames_accepted: AtomicU64,
    pub(crate) gossip_frames_refused: AtomicU64,
    pub(crate) gossip_frames_failed: AtomicU64,
    pub(crate) grafts_sent: AtomicU64,
    pub(crate) deliveries_sent: AtomicU64,
    pub(crate) deliveries_acked: AtomicU64,
    pub(crate) deliveries_refused: AtomicU64,
    pub(crate) deliveries_later: AtomicU64,
    pub(crate) deliveries_dropped: AtomicU64,
    pub(crate) deliveries_failed: AtomicU64,
    pub(crate) mailbox_sent: AtomicU64,
    pub(crate) deposits_stored: AtomicU64,
    pub(crate) deposits_refused: AtomicU64,
    pub(crate) mailbox_rate_limited: AtomicU64,
    pub(crate) mailbox_refused: AtomicU64,
    pub(crate) nonces: AtomicU64,
    pub(crate) mailbox_failed: AtomicU64,
}

pub(crate) fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// What the attackers did, for the report. "Refused" counts come from the
/// attackers' side: what the victims answered or would not negotiate.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AttackFigures {
    /// Attackers.
    pub attackers: usize,
    /// They sent nothing (the run to compare with).
    pub idle: bool,
    /// Connections the attackers opened, and saw closed (by either side).
    pub connections_opened: u64,
    /// Connections closed.
    pub connections_closed: u64,
    /// Dials that failed.
    pub dials_failed: u64,
    /// Topics announced through gossipsub (subscription flood).
    pub topics_announced: u64,
    /// Times the known room topics were dropped and taken again.
    pub resubscriptions: u64,
    /// Connections on which the victim would not speak gossipsub at all.
    pub gossip_refused: u64,
    /// Raw gossipsub frames (subscriptions, GRAFTs, junk messages) sent.
    pub gossip_frames_sent: u64,
    /// Of those, written on a negotiated gossipsub stream.
    pub gossip_frames_accepted: u64,
    /// Refused when the stream was negotiated (not a gossip peer).
    pub gossip_frames_refused: u64,
    /// Failed otherwise (connection closed, time-out, dial failure).
    pub gossip_frames_failed: u64,
    /// GRAFTs in the frames sent.
    pub grafts_sent: u64,
    /// Junk direct deliveries sent.
    pub deliveries_sent: u64,
    /// Answered "ok" (stored): must stay 0.
    pub deliveries_acked: u64,
    /// Answered "refused".
    pub deliveries_refused: u64,
    /// Answered "later" (a room envelope of no known key).
    pub deliveries_later: u64,
    /// Dropped unanswered (the stream closed): what the victim's network
    /// layer does with a frame that is not a padded envelope.
    pub deliveries_dropped: u64,
    /// Failed otherwise: refused stream, closed connection, time-out.
    pub deliveries_failed: u64,
    /// Mailbox requests sent to the relays.
    pub mailbox_sent: u64,
    /// Deposits the relays stored: must stay 0.
    pub deposits_stored: u64,
    /// Deposits refused (each item of a batch counts).
    pub deposits_refused: u64,
    /// Requests answered "rate limited".
    pub mailbox_rate_limited: u64,
    /// Other requests refused (bad signature, bad nonce, malformed).
    pub mailbox_refused: u64,
    /// Nonces the relays handed out.
    pub nonces: u64,
    /// Mailbox requests not answered.
    pub mailbox_failed: u64,
}

impl Counters {
    /// A snapshot, for `attackers` attackers (`idle` or not).
    pub(crate) fn figures(&self, attackers: usize, idle: bool) -> AttackFigures {
        let c = self;
        let get = |x: &AtomicU64| x.load(Ordering::Relaxed);
        AttackFigures {
            attackers,
            idle,
            connections_opened: get(&c.connections_opened),
            connections_closed: get(&c.connections_closed),
            dials_failed: get(&c.dials_failed),
            topics_announced: get(&c.topics_announced),
            resubscriptions: get(&c.resubscriptions),
            gossip_refused: get(&c.gossip_refused),
            gossip_frames_sent: get(&c.gossip_frames_sent),
            gossip_frames_accepted: get(&c.gossip_frames_accepted),
            gossip_frames_refused: get(&c.gossip_frames_refused),
            gossip_frames_failed: get(&c.gossip_frames_failed),
            grafts_sent: get(&c.grafts_sent),
            deliveries_sent: get(&c.deliveries_sent),
            deliveries_acked: get(&c.deliveries_acked),
            deliveries_refused: get(&c.deliveries_refused),
            deliveries_later: get(&c.deliveries_later),
            deliveries_dropped: get(&c.deliveries_dropped),
            deliveries_failed: get(&c.deliveries_failed),
            mailbox_sent: get(&c.mailbox_sent),
            deposits_stored: get(&c.deposits_stored),
            deposits_refused: get(&c.deposits_refused),
            mailbox_rate_limited: get(&c.mailbox_rate_limited),
            mailbox_refused: get(&c.mailbox_refused),
            nonces: get(&c.nonces),
            mailbox_failed: get(&c.mailbox_failed),
        }
    }
}
