//! Parked devices: those that kept answering "later" for an item.
//!
//! After [`Config::later_retries`] "later" answers in a row a device is
//! parked for that item: no longer retried with the outbox's backoff. It
//! is tried again when it connects or delivers something that is accepted
//! (at most once per [`Config::retry_max`] per device, so a chatty device
//! does not cost a delivery of every parked item per frame), otherwise
//! every [`Config::parked_retry`], and after [`Config::give_up_after`]
//! parked the item is given up for it. A device answers "later" when it
//! cannot place a message yet (its room key, room, membership or sender is
//! unknown to it); one that never will (it left the room, it never adds
//! the sender) must not be retried for ever, nor keep the item for ever.
//!
//! [`Config::later_retries`]: crate::Config::later_retries
//! [`Config::retry_max`]: crate::Config::retry_max
//! [`Config::parked_retry`]: crate::Config::parked_retry
//! [`Config::give_up_after`]: crate::Config::give_up_after

use libp2p::PeerId;
use safemeet_store::Store;

use crate::core::Core;
use crate::outbox::{MAX_IN_FLIGHT, ms};

impl<S: Store + Clone> Core<S> {
    /// A peer connected: what was parked for it, and what waits on a
    /// timer for it, is tried now.
    pub(crate) fn on_connected(&mut self, peer: PeerId) {
        let now = self.now.mono_ms();
        self.unpark(peer);
        // What failed before and waits on its backoff for it can go now
        // too (not what waits out its gossip grace).
        let due: Vec<u64> = self
            .outbox
            .pending
            .iter()
            .filter(|(_, p)| {
                p.attempts > 0 && p.due.is_some() && p.targets.iter().any(|t| t.peer == peer)
            })
            .map(|(seq, _)| *seq)
            .take(MAX_IN_FLIGHT)
            .collect();
        for seq in due {
            self.outbox.set_due(seq, Some(now));
        }
    }

    /// What was parked for `peer` (it kept answering "later") is tried
    /// once more now: it connected, or delivered something that was
    /// accepted, so it may have changed its mind (added this user, joined
    /// the room). At most once per [`Config::retry_max`] per peer, so a
    /// chatty peer does not cost a delivery of every parked item per frame.
    ///
    /// [`Config::retry_max`]: crate::Config::retry_max
    pub(crate) fn unpark(&mut self, peer: PeerId) {
        let now = self.now.mono_ms();
        if !self.outbox.parked.contains_key(&peer) {
            return;
        }
        let last = self.outbox.unparked_at.get(&peer).copied();
        if last.is_some_and(|t| now < t.saturating_add(ms(self.config.retry_max))) {
            return;
        }
        self.outbox.unparked_at.insert(peer, now);
        let Some(seqs) = self.outbox.parked.remove(&peer) else {
            return;
        };
        for seq in seqs {
            let Some(p) = self.outbox.pending.get_mut(&seq) else {
                continue;
            };
            if let Some(i) = p.parked.iter().position(|t| t.peer == peer) {
                let mut t = p.parked.remove(i);
                // One more try: parked again at the next "later".
                t.later = self.config.later_retries;
                p.targets.push(t);
                self.outbox.set_due(seq, Some(now));
            }
        }
    }

    /// Parked devices of item `seq` whose [`Config::parked_retry`] came
    /// are tried once more; those parked past [`Config::give_up_after`]
    /// are given up. An item left with no device is finished.
    ///
    /// [`Config::parked_retry`]: crate::Config::parked_retry
    /// [`Config::give_up_after`]: crate::Config::give_up_after
    pub(crate) fn retry_parked(&mut self, seq: u64) {
        let now = self.now.mono_ms();
        let retry = ms(self.config.parked_retry);
        let give_up = ms(self.config.give_up_after);
        let later_retries = self.config.later_retries;
        let Some(p) = self.outbox.pending.get_mut(&seq) else {
            return;
        };
        if p.parked.is_empty() {
            return;
        }
        let mut kept = Vec::new();
        for mut t in std::mem::take(&mut p.parked) {
            let parked_for = now.saturating_sub(t.parked_at);
            let since = now.saturating_sub(t.parked_since.unwrap_or(t.parked_at));
            if since >= give_up {
                tracing::debug!(seq, "a device parked too long; given up for this item");
            } else if parked_for >= retry {
                t.later = later_retries;
                p.targets.push(t);
                continue;
            } else {
                kept.push(t);
                continue;
            }
            if let Some(set) = self.outbox.parked.get_mut(&t.peer) {
                set.remove(&seq);
            }
        }
        p.parked = kept;
        let peers: Vec<PeerId> = p.targets.iter().map(|t| t.peer).collect();
        for peer in peers {
            if let Some(set) = self.outbox.parked.get_mut(&peer) {
                set.remove(&seq);
            }
        }
        self.finish_if_done(seq);
    }

    /// Puts an item whose only devices left are parked on the timer for
    /// the first of their [`Config::parked_retry`]s.
    ///
    /// [`Config::parked_retry`]: crate::Config::parked_retry
    pub(crate) fn schedule_parked(&mut self, seq: u64) {
        let retry = ms(self.config.parked_retry);
        let Some(p) = self.outbox.pending.get(&seq) else {
            return;
        };
        if p.due.is_some() || !p.in_flight.is_empty() || p.idle_target() {
            return;
        }
        if let Some(first) = p.parked.iter().map(|t| t.parked_at).min() {
            self.outbox.set_due(seq, Some(first.saturating_add(retry)));
        }
    }
}
