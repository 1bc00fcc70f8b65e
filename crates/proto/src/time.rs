//! Wall-clock timestamps.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch (UTC).
///
/// Validated on construction: a timestamp lies between the epoch and the end
/// of year 9999, so arithmetic on it cannot overflow and a peer cannot make
/// an event appear to come from the far future. Its text form is the decimal
/// number of milliseconds.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct Timestamp(u64);

/// Why a timestamp was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TimestampError {
    /// Later than [`Timestamp::MAX`].
    #[error("timestamp {0} ms is after the year 9999")]
    OutOfRange(u64),
    /// Not a decimal number.
    #[error("timestamp is not a decimal number of milliseconds")]
    NotANumber,
}

impl Timestamp {
    /// The time as a UTC date and time to the minute, as people read it:
    /// `2026-12-04 14:30 UTC`.
    pub fn utc_minutes(&self) -> String {
        let secs = self.0 / 1000;
        let (days, rest) = (secs / 86_400, secs % 86_400);
        // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
        let z = days as i64 + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        format!(
            "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
            rest / 3600,
            rest % 3600 / 60
        )
    }

    /// 9999-12-31T23:59:59.999Z. Far enough for any message, small enough
    /// that adding a few years of milliseconds never overflows a `u64`.
    pub const MAX_MILLIS: u64 = 253_402_300_799_999;

    /// The Unix epoch.
    pub const EPOCH: Timestamp = Timestamp(0);

    /// Validates a number of milliseconds since the epoch.
    pub fn from_millis(ms: u64) -> Result<Self, TimestampError> {
        if ms > Self::MAX_MILLIS {
            return Err(TimestampError::OutOfRange(ms));
        }
        Ok(Self(ms))
    }

    /// Milliseconds since the epoch.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// This timestamp plus `d`, saturating at [`Self::MAX_MILLIS`].
    pub fn saturating_add(self, d: Duration) -> Self {
        let add = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Self(self.0.saturating_add(add).min(Self::MAX_MILLIS))
    }

    /// How long after `earlier` this is (zero if it is not after it).
    pub fn saturating_since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

impl TryFrom<u64> for Timestamp {
    type Error = TimestampError;

    fn try_from(ms: u64) -> Result<Self, Self::Error> {
        Self::from_millis(ms)
    }
}

impl From<Timestamp> for u64 {
    fn from(t: Timestamp) -> u64 {
        t.0
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({}ms)", self.0)
    }
}

impl FromStr for Timestamp {
    type Err = TimestampError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // `u64::from_str` accepts a leading `+`; the canonical form has none.
        if s.is_empty()
            || !s.bytes().all(|b| b.is_ascii_digit())
            || (s.len() > 1 && s.starts_with('0'))
        {
            return Err(TimestampError::NotANumber);
        }
        let ms: u64 = s.parse().map_err(|_| TimestampError::NotANumber)?;
        Self::from_millis(ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn text_round_trips(ms in 0..=Timestamp::MAX_MILLIS) {
            let t = Timestamp::from_millis(ms).unwrap();
            prop_assert_eq!(t.to_string().parse::<Timestamp>().unwrap(), t);
        }
    }

    #[test]
    fn rejects_out_of_range_and_junk() {
        assert!(Timestamp::from_millis(Timestamp::MAX_MILLIS + 1).is_err());
        for bad in ["", "+5", "-1", "01", "1.5", "999999999999999999999"] {
            assert!(bad.parse::<Timestamp>().is_err(), "{bad}");
        }
        let t = Timestamp::from_millis(Timestamp::MAX_MILLIS).unwrap();
        assert_eq!(t.saturating_add(Duration::from_secs(10)), t);
    }
}
