//! What junk costs a peer that delivers it directly.
//!
//! Gossip has its own peer scores (see `scoring`); a direct delivery has
//! none, so the application reports each delivery it refused as junk (a
//! frame no honest device sends: undecodable, forged, under a key its
//! sender cannot hold) with [`Handle::report_junk`]. A peer that sends
//! [`JUNK_BEFORE_BLOCK`] such deliveries within [`JUNK_WINDOW`] is
//! disconnected, and its connections are refused for [`BLOCK_FOR`]. It
//! may come back with a fresh peer id, but then the per-address limits
//! (see `ip_limits`) bound how many it holds at once, and each fresh id
//! starts its count again: the cost is a handshake per eight junk frames.
//!
//! Both tables are bounded ([`MAX_TRACKED`] peers each); past that the
//! oldest entry goes (a blocked peer is then let back in early).
//!
//! [`Handle::report_junk`]: crate::Handle::report_junk

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use libp2p::PeerId;

/// Junk deliveries a peer may send within [`JUNK_WINDOW`] before it is
/// blocked: 8. An honest device sends none (a frame it sends either
/// decodes or waits), so a few allow for a bug on the far side without
/// giving a flooder more than a handful per connection.
pub const JUNK_BEFORE_BLOCK: u32 = 8;
/// The window junk is counted over: a minute.
pub const JUNK_WINDOW: Duration = Duration::from_secs(60);
/// How long a peer that sent junk stays blocked: 10 minutes, long enough
/// that reconnecting under the same peer id is not worth it, short enough
/// that a device with a passing bug recovers without anyone's help.
pub const BLOCK_FOR: Duration = Duration::from_secs(600);
/// Most peers counted, and most blocked, at once: 4 096 each.
pub const MAX_TRACKED: usize = 4096;

/// Per-peer junk counts and the peers blocked for them.
#[derive(Debug, Default)]
pub(crate) struct JunkScores {
    counts: HashMap<PeerId, (Instant, u32)>,
    /// When each block ends, oldest first.
    blocked: VecDeque<(Instant, PeerId)>,
    /// The same peers, to look up.
    blocked_set: HashSet<PeerId>,
    /// Peers let back in early (the table was full), to unblock.
    released: Vec<PeerId>,
}

impl JunkScores {
    /// Counts one junk delivery from `peer` at `now`; true when the peer
    /// is to be blocked now (it is then counted as blocked).
    pub(crate) fn record(&mut self, peer: PeerId, now: Instant) -> bool {
        if self.is_blocked(&peer) {
            return false;
        }
        if !self.counts.contains_key(&peer) && self.counts.len() >= MAX_TRACKED {
            // The entry whose window started first goes.
            if let Some(oldest) = self
                .counts
                .iter()
                .min_by_key(|(_, (start, _))| *start)
                .map(|(p, _)| *p)
            {
                self.counts.remove(&oldest);
            }
        }
        let entry = self.counts.entry(peer).or_insert((now, 0));
        if now.saturating_duration_since(entry.0) >= JUNK_WINDOW {
            *entry = (now, 0);
        }
        entry.1 += 1;
        if entry.1 < JUNK_BEFORE_BLOCK {
            return false;
        }
        self.counts.remove(&peer);
        if self.blocked.len() >= MAX_TRACKED
            && let Some((_, early)) = self.blocked.pop_front()
        {
            self.blocked_set.remove(&early);
            self.released.push(early);
        }
        self.blocked.push_back((now + BLOCK_FOR, peer));
        self.blocked_set.insert(peer);
        true
    }

    pub(crate) fn is_blocked(&self, peer: &PeerId) -> bool {
        self.blocked_set.contains(peer)
    }

    /// The peers whose block has ended by `now` (or that were let back in
    /// early), taken off the list.
    pub(crate) fn expired(&mut self, now: Instant) -> Vec<PeerId> {
        let mut out = std::mem::take(&mut self.released);
        while let Some((until, peer)) = self.blocked.front().copied() {
            if until > now {
                break;
            }
            self.blocked.pop_front();
            self.blocked_set.remove(&peer);
            out.push(peer);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use safemeet_proto::clock::{Clock, SystemClock};

    use super::*;

    #[test]
    fn a_peer_is_blocked_at_the_threshold_within_the_window_only() {
        let mut scores = JunkScores::default();
        let t0 = SystemClock.instant();
        let slow = PeerId::random();
        // One junk frame a little more than a window apart each: never.
        for i in 0..(JUNK_BEFORE_BLOCK * 2) {
            let at = t0 + (JUNK_WINDOW + Duration::from_secs(1)) * i;
            assert!(!scores.record(slow, at));
        }
        let flooder = PeerId::random();
        for _ in 1..JUNK_BEFORE_BLOCK {
            assert!(!scores.record(flooder, t0));
        }
        assert!(scores.record(flooder, t0));
        assert!(scores.is_blocked(&flooder));
        assert!(!scores.record(flooder, t0), "blocked once");
        assert!(
            scores
                .expired(t0 + BLOCK_FOR - Duration::from_secs(1))
                .is_empty()
        );
        assert_eq!(scores.expired(t0 + BLOCK_FOR), vec![flooder]);
        assert!(!scores.is_blocked(&flooder));
    }

    #[test]
    fn the_tables_stay_bounded() {
        let mut scores = JunkScores::default();
        let now = SystemClock.instant();
        for _ in 0..(MAX_TRACKED + 10) {
            scores.record(PeerId::random(), now);
        }
        assert!(scores.counts.len() <= MAX_TRACKED);
        for _ in 0..(MAX_TRACKED + 10) {
            let peer = PeerId::random();
            for _ in 0..JUNK_BEFORE_BLOCK {
                scores.record(peer, now);
            }
        }
        assert!(scores.blocked.len() <= MAX_TRACKED);
        assert_eq!(scores.blocked_set.len(), scores.blocked.len());
        // Those let back in early are unblocked at the next check.
        assert_eq!(scores.expired(now).len(), 10);
    }
}
