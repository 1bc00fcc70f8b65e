//! The relay's settings as an operator writes them in a TOML file: every
//! key optional (an absent key keeps the default, see [`Limits`](crate::Limits)
//! and [`RelayConfig`](crate::node::RelayConfig)), unknown keys refused.
//! Only the node reads the file; this module parses its text, which may
//! be anything (the fuzz target `relay_config` feeds it arbitrary text).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::Error;

/// The settings in a relay's TOML file (see docs/cli.md); `None` where
/// the file does not set one.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct FileConfig {
    /// Addresses to listen on (multiaddr text; checked by the reader).
    pub listen: Option<Vec<String>>,
    /// Longest an envelope is kept ([`parse_duration`] text).
    pub retention: Option<String>,
    /// Largest envelope accepted, in bytes.
    pub max_envelope_bytes: Option<usize>,
    /// Most envelopes one mailbox holds.
    pub mailbox_max_envelopes: Option<u64>,
    /// Most bytes one mailbox holds.
    pub mailbox_max_bytes: Option<u64>,
    /// Most envelopes the relay holds.
    pub max_envelopes: Option<u64>,
    /// Most bytes the relay holds.
    pub max_bytes: Option<u64>,
    /// Whether deposits may open mailboxes the relay does not hold yet.
    pub accept_new_mailboxes: Option<bool>,
    /// Requests per second one peer may make, sustained.
    pub peer_rate: Option<u32>,
    /// Requests one peer may make at once.
    pub peer_burst: Option<u32>,
    /// KiB one peer may add to the disk per hour.
    pub peer_disk_kib_per_hour: Option<u32>,
    /// KiB one peer may add to the disk at once.
    pub peer_disk_burst_kib: Option<u32>,
    /// Seconds one circuit lasts at most.
    pub circuit_secs: Option<u32>,
    /// KiB one circuit carries at most, each way.
    pub circuit_kib: Option<u32>,
    /// The metrics endpoint, off when absent.
    pub metrics: Option<FileMetrics>,
}

/// The `[metrics]` table of a relay's TOML file.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct FileMetrics {
    /// Address to serve `/metrics` and `/status` on.
    pub listen: SocketAddr,
    /// Client addresses allowed to read them.
    pub allow: Option<Vec<IpAddr>>,
}

impl FileConfig {
    /// Parses the text of a configuration file.
    pub fn from_toml(text: &str) -> Result<Self, Error> {
        toml::from_str(text).map_err(|e| Error::Config(e.to_string()))
    }
}

/// Parses a duration such as `90s`, `30m`, `12h` or `14d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?}: give a unit (s, m, h or d)"))?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: not a whole number followed by s, m, h or d"))?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: the unit is s, m, h or d")),
    };
    n.checked_mul(seconds)
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{text:?}: out of range"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is a failure

    use super::*;

    #[test]
    fn durations_parse_with_units_and_refuse_the_rest() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("14d"), Ok(Duration::from_secs(14 * 86_400)));
        for bad in [
            "",
            "12",
            "h",
            "1.5h",
            "-3d",
            "0s",
            "3w",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_file_sets_what_it_names_and_refuses_unknown_keys() {
        let file = FileConfig::from_toml(
            "retention = \"7d\"\npeer_rate = 5\npeer_disk_burst_kib = 8192\ncircuit_secs = 600\ncircuit_kib = 4096\n[metrics]\nlisten = \"127.0.0.1:9464\"\n",
        )
        .unwrap();
        assert_eq!(file.retention.as_deref(), Some("7d"));
        assert_eq!(file.peer_rate, Some(5));
        assert_eq!(file.peer_disk_burst_kib, Some(8192));
        assert_eq!(
            (file.circuit_secs, file.circuit_kib),
            (Some(600), Some(4096))
        );
        assert_eq!(file.metrics.unwrap().listen.port(), 9464);
        assert!(file.max_bytes.is_none());
        let err = FileConfig::from_toml("mailbox_max_envelope = 1\n").unwrap_err();
        assert!(err.to_string().contains("mailbox_max_envelope"), "{err}");
    }
}
