//! The link model: when a chunk of bytes written on one end of a modelled
//! connection becomes readable on the other.
//!
//! Sans-I/O: time comes in as a [`Duration`] since the start of the run, so
//! the model is tested without a clock. Each direction of a connection has
//! its own [`Direction`] with a seeded random generator, so a scenario
//! seed fixes every jitter and loss draw of a link (libp2p's own timers
//! and randomness still make two runs differ in detail).
//!
//! What a chunk pays, in order:
//! 1. **Serialisation** at the link's bandwidth, after the chunks before it
//!    (a link sends one thing at a time).
//! 2. **Propagation**: the one-way latency plus a uniform jitter draw.
//! 3. **Loss as retransmission delay.** SafeMeet runs over a reliable byte
//!    stream, so a lost packet is never missing bytes: it is a late one.
//!    Each packet of the chunk (MSS-sized) is lost with the link's loss
//!    probability; a lost packet is resent after one round trip (fast
//!    retransmit) or, for a share of losses, after the retransmission
//!    timeout; the resend may be lost again.
//! 4. **Order**: a byte stream delivers in order, so a chunk is never
//!    released before the chunk ahead of it (head-of-line blocking).

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// Bytes per packet: a TCP segment on a 1500-byte MTU.
pub const MSS: usize = 1460;
/// Share of losses repaired only by the retransmission timeout (a tail
/// loss, or too few packets after it for three duplicate acks); the rest
/// are repaired one round trip later by fast retransmit.
pub const RTO_SHARE: f64 = 0.2;
/// Linux's minimum retransmission timeout.
pub const MIN_RTO: Duration = Duration::from_millis(200);
/// Most consecutive losses of one packet that are modelled (with a loss
/// probability below 1, further ones are vanishingly rare).
const MAX_RESENDS: u32 = 8;

/// The properties of a link, one direction at a time (both directions of
/// a link get the same profile).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkProfile {
    /// One-way latency in milliseconds.
    #[serde(default)]
    pub latency_ms: f64,
    /// Extra one-way delay drawn uniformly from `0..=jitter_ms`.
    #[serde(default)]
    pub jitter_ms: f64,
    /// Bandwidth in megabits per second; 0 means unlimited.
    #[serde(default)]
    pub bandwidth_mbit: f64,
    /// Probability that a packet is lost (and resent), `0.0..1.0`.
    #[serde(default)]
    pub loss: f64,
}

impl Default for LinkProfile {
    fn default() -> Self {
        Self {
            latency_ms: 20.0,
            jitter_ms: 0.0,
            bandwidth_mbit: 0.0,
            loss: 0.0,
        }
    }
}

impl LinkProfile {
    /// Checks the values are usable.
    pub fn validate(&self) -> Result<(), String> {
        let finite = [
            self.latency_ms,
            self.jitter_ms,
            self.bandwidth_mbit,
            self.loss,
        ]
        .iter()
        .all(|v| v.is_finite() && *v >= 0.0);
        if !finite {
            return Err("link values must be finite and not negative".into());
        }
        if self.loss >= 1.0 {
            return Err(format!("loss {} must be below 1", self.loss));
        }
        Ok(())
    }

    /// The one-way latency.
    pub fn latency(&self) -> Duration {
        Duration::from_secs_f64(self.latency_ms / 1000.0)
    }

    /// The round trip (twice the one-way latency, without jitter).
    pub fn rtt(&self) -> Duration {
        self.latency() * 2
    }

    /// The retransmission timeout: a round trip plus margin, at least
    /// [`MIN_RTO`].
    pub fn rto(&self) -> Duration {
        (self.rtt() + self.rtt() / 2).max(MIN_RTO)
    }
}

/// One direction of one connection: the state the model keeps between
/// chunks.
#[derive(Debug)]
pub struct Direction {
    profile: LinkProfile,
    rng: StdRng,
    /// When the link finishes sending what it was given so far.
    busy_until: Duration,
    /// When the last chunk becomes readable.
    last_release: Duration,
}

impl Direction {
    /// A fresh direction; `seed` fixes its jitter and loss draws.
    pub fn new(profile: LinkProfile, seed: u64) -> Self {
        Self {
            profile,
            rng: StdRng::seed_from_u64(seed),
            busy_until: Duration::ZERO,
            last_release: Duration::ZERO,
        }
    }

    /// The profile.
    pub fn profile(&self) -> &LinkProfile {
        &self.profile
    }

    /// When a chunk of `len` bytes written at `now` becomes readable.
    pub fn schedule(&mut self, now: Duration, len: usize) -> Duration {
        let start = now.max(self.busy_until);
        let sent = start + self.serialisation(len);
        self.busy_until = sent;
        let mut delay = self.profile.latency();
        if self.profile.jitter_ms > 0.0 {
            let j = self.rng.gen_range(0.0..=self.profile.jitter_ms);
            delay += Duration::from_secs_f64(j / 1000.0);
        }
        delay += self.loss_delay(len);
        let release = (sent + delay).max(self.last_release);
        self.last_release = release;
        release
    }

    /// Holds what is queued until `at` (a healed partition): nothing
    /// written before then arrives earlier than `at` plus the latency.
    pub fn hold_until(&mut self, at: Duration) {
        let earliest = at + self.profile.latency();
        self.last_release = self.last_release.max(earliest);
        self.busy_until = self.busy_until.max(at);
    }

    fn serialisation(&self, len: usize) -> Duration {
        if self.profile.bandwidth_mbit <= 0.0 {
            return Duration::ZERO;
        }
        let bits = len as f64 * 8.0;
        Duration::from_secs_f64(bits / (self.profile.bandwidth_mbit * 1e6))
    }

    /// The extra delay losses add to a chunk: the worst over its packets
    /// (they are resent in parallel; the chunk waits for the last).
    fn loss_delay(&mut self, len: usize) -> Duration {
        if self.profile.loss <= 0.0 {
            return Duration::ZERO;
        }
        let packets = len.div_ceil(MSS).max(1);
        let mut worst = Duration::ZERO;
        for _ in 0..packets {
            let mut extra = Duration::ZERO;
            let mut resends = 0;
            while resends < MAX_RESENDS && self.rng.gen_bool(self.profile.loss) {
                extra += if self.rng.gen_bool(RTO_SHARE) {
                    self.profile.rto() * (1 << resends)
                } else {
                    self.profile.rtt()
                };
                resends += 1;
            }
            worst = worst.max(extra);
        }
        worst
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn ms(x: u64) -> Duration {
        Duration::from_millis(x)
    }

    fn profile(latency: f64, jitter: f64, mbit: f64, loss: f64) -> LinkProfile {
        LinkProfile {
            latency_ms: latency,
            jitter_ms: jitter,
            bandwidth_mbit: mbit,
            loss,
        }
    }

    #[test]
    fn latency_only_delays_by_the_latency() {
        let mut d = Direction::new(profile(50.0, 0.0, 0.0, 0.0), 1);
        assert_eq!(d.schedule(ms(0), 100), ms(50));
        assert_eq!(d.schedule(ms(10), 100_000), ms(60));
    }

    #[test]
    fn bandwidth_serialises_chunks_one_after_another() {
        // 8 Mbit/s = 1 byte per µs: 1000 bytes take 1 ms.
        let mut d = Direction::new(profile(10.0, 0.0, 8.0, 0.0), 1);
        assert_eq!(d.schedule(ms(0), 1000), ms(11));
        // Written at once: waits for the first to be sent.
        assert_eq!(d.schedule(ms(0), 1000), ms(12));
        // Later, on an idle link: no wait.
        assert_eq!(d.schedule(ms(100), 1000), ms(111));
    }

    #[test]
    fn jitter_stays_in_range_keeps_order_and_is_fixed_by_the_seed() {
        let draws = |seed| {
            let mut d = Direction::new(profile(20.0, 10.0, 0.0, 0.0), seed);
            (0..200).map(|i| d.schedule(ms(i), 10)).collect::<Vec<_>>()
        };
        let a = draws(7);
        assert_eq!(a, draws(7));
        assert_ne!(a, draws(8));
        for (i, r) in a.iter().enumerate() {
            let sent = ms(i as u64);
            assert!(*r >= sent + ms(20));
            assert!(*r <= sent + ms(30) || i > 0 && *r == a[i - 1]);
        }
        assert!(a.windows(2).all(|w| w[0] <= w[1]), "released in order");
    }

    #[test]
    fn loss_costs_a_round_trip_or_a_timeout_never_bytes() {
        let mut d = Direction::new(profile(50.0, 0.0, 0.0, 0.1), 3);
        let mut late = 0;
        let mut now = Duration::ZERO;
        for _ in 0..2000 {
            now += Duration::from_secs(10); // far apart: no head-of-line effects
            let r = d.schedule(now, 100) - now;
            assert!(r >= ms(50));
            if r > ms(50) {
                late += 1;
                // At least one retransmission: a round trip (100 ms) or an RTO.
                assert!(r >= ms(150), "{r:?}");
            }
        }
        // About 10 % of single-packet chunks are late.
        assert!((120..=280).contains(&late), "{late} late of 2000");
    }

    #[test]
    fn a_late_chunk_holds_back_the_ones_behind_it() {
        let mut d = Direction::new(profile(10.0, 0.0, 0.0, 0.5), 11);
        let releases: Vec<_> = (0..100).map(|i| d.schedule(ms(i), 10)).collect();
        assert!(releases.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn hold_until_delays_what_follows_a_heal() {
        let mut d = Direction::new(profile(30.0, 0.0, 0.0, 0.0), 1);
        d.hold_until(ms(1000));
        assert_eq!(d.schedule(ms(500), 10), ms(1030));
        assert_eq!(d.schedule(ms(2000), 10), ms(2030));
    }

    #[test]
    fn bad_profiles_are_refused() {
        assert!(profile(1.0, 0.0, 0.0, 1.0).validate().is_err());
        assert!(profile(-1.0, 0.0, 0.0, 0.0).validate().is_err());
        assert!(profile(f64::NAN, 0.0, 0.0, 0.0).validate().is_err());
        assert!(profile(50.0, 5.0, 10.0, 0.01).validate().is_ok());
    }
}
