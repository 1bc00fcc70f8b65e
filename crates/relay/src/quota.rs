//! The relay's rate limiters, in memory only: requests per peer, and
//! bytes added to the disk per peer and per network prefix (see
//! [`RelayConfig`]). The keys they hold are never written or logged, and
//! idle ones are dropped (`retain_recent`).

use std::num::NonZeroU32;
use std::time::Duration;

use libp2p::PeerId;

use crate::node::RelayConfig;

/// Requests per peer, in memory only: the peer ids it holds are never
/// written or logged, and idle ones are dropped (`retain_recent`).
pub(crate) type PeerLimiter = governor::DefaultKeyedRateLimiter<PeerId>;

pub(crate) fn peer_limiter(config: &RelayConfig) -> PeerLimiter {
    let rate = NonZeroU32::new(config.peer_rate).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(config.peer_burst).unwrap_or(rate).max(rate);
    governor::RateLimiter::keyed(governor::Quota::per_second(rate).allow_burst(burst))
}

/// KiB of disk per network prefix, in memory only like [`PeerLimiter`].
pub(crate) type PrefixLimiter = governor::DefaultKeyedRateLimiter<std::net::IpAddr>;

/// A quota of `per_hour` KiB an hour, `burst` at once.
fn disk_quota(per_hour: u32, burst: u32) -> governor::Quota {
    let per_hour = NonZeroU32::new(per_hour).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst).unwrap_or(per_hour);
    governor::Quota::with_period(Duration::from_secs(3600) / per_hour.get())
        .unwrap_or(governor::Quota::per_hour(per_hour))
        .allow_burst(burst)
}

pub(crate) fn disk_limiter(config: &RelayConfig) -> PeerLimiter {
    governor::RateLimiter::keyed(disk_quota(
        config.peer_disk_kib_per_hour,
        config.peer_disk_burst_kib,
    ))
}

pub(crate) fn prefix_disk_limiter(config: &RelayConfig) -> PrefixLimiter {
    governor::RateLimiter::keyed(disk_quota(
        config.prefix_disk_kib_per_hour,
        config.prefix_disk_burst_kib,
    ))
}
