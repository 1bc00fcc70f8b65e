//! `safemeet relay`: runs a relay node (offline mailboxes) until SIGINT or
//! SIGTERM. Its identity key and its mailboxes live under `--home`/relay.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use libp2p::Multiaddr;
use libp2p::identity::Keypair;
use safemeet_relay::node::{RelayConfig, RelayEvent};
use safemeet_relay::{Limits, MailboxService, MailboxStore};
use safemeet_store::{SledConfig, SledStore, StoreError};
use serde_json::json;

use crate::failure::Failure;
use crate::home::{self, Home};

/// What the operator set on the command line.
#[derive(Debug)]
pub(crate) struct Options {
    pub(crate) listen: Vec<Multiaddr>,
    pub(crate) peer_rate: u32,
    pub(crate) peer_burst: u32,
    pub(crate) limits: Limits,
}

/// Largest identity key file read.
const MAX_KEY_FILE: u64 = 1024;

/// The relay's libp2p identity: made once, kept in `dir/identity.key`
/// (hex of the protobuf encoding, mode 0600), so its address stays valid.
fn identity(dir: &Path) -> Result<Keypair, Failure> {
    let path = dir.join("identity.key");
    if path.exists() {
        let text = home::read_bounded(&path, MAX_KEY_FILE)
            .with_context(|| format!("reading {}", path.display()))?;
        let bytes = decode_hex(text.trim())
            .with_context(|| format!("{} is not a relay key", path.display()))?;
        return Ok(Keypair::from_protobuf_encoding(&bytes)
            .with_context(|| format!("{} is not a relay key", path.display()))?);
    }
    let key = Keypair::generate_ed25519();
    let bytes = key
        .to_protobuf_encoding()
        .context("encoding the relay key")?;
    let text: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    home::publish_private_file(&path, text.as_bytes())?;
    Ok(key)
}

fn decode_hex(text: &str) -> anyhow::Result<Vec<u8>> {
    anyhow::ensure!(text.len().is_multiple_of(2), "odd length");
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .context("not hex")
        })
        .collect()
}

/// Runs the relay.
pub(crate) fn run(home: &Home, json: bool, options: Options) -> Result<(), Failure> {
    let most = safemeet_proto::limits::MAX_ENVELOPE_BYTES;
    if options.limits.max_envelope_bytes == 0 || options.limits.max_envelope_bytes > most {
        return Err(Failure::Usage(format!(
            "--max-envelope-bytes must be between 1 and {most} (the protocol's largest envelope)"
        )));
    }
    let dir = home.relay_dir();
    home::create_private_dir(&dir)?;
    let key = identity(&dir)?;
    let backend = SledStore::open(dir.join("db"), &SledConfig::default()).map_err(|e| match e {
        StoreError::Locked { .. } => Failure::Locked(format!(
            "another relay is running on {} (its database is locked)",
            dir.display()
        )),
        other => Failure::Other(anyhow::anyhow!("opening the relay database: {other}")),
    })?;
    let store = MailboxStore::new(backend, options.limits);
    let service = MailboxService::new(store, key.clone());
    let mut config = RelayConfig {
        peer_rate: options.peer_rate,
        peer_burst: options.peer_burst,
        ..RelayConfig::default()
    };
    if !options.listen.is_empty() {
        config.listen = options.listen;
    }
    let expected = config.listen.len();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async {
        let mut relay = safemeet_relay::node::spawn(key, config, service)
            .map_err(|e| Failure::Other(anyhow::anyhow!(e)))?;
        // Each configured address reports where it listens (a port of 0
        // becomes a real one); wait for those, a few seconds at most.
        let mut addrs = Vec::new();
        let deadline = tokio::time::sleep(Duration::from_secs(5));
        tokio::pin!(deadline);
        while addrs.len() < expected {
            tokio::select! {
                Some(RelayEvent::Listening(a)) = relay.events.recv() => addrs.push(a),
                _ = &mut deadline => break,
            }
        }
        let texts: Vec<String> = addrs.iter().map(ToString::to_string).collect();
        if json {
            println!(
                "{}",
                json!({ "peer_id": relay.peer_id.to_string(), "listen_addrs": texts })
            );
        } else {
            println!("relay {}", relay.peer_id);
            for a in &texts {
                println!("listening on {a}");
            }
        }
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        relay.stop().await;
        tracing::info!("relay stopped");
        Ok(())
    })
}

/// Parses a duration such as `90s`, `30m`, `12h` or `14d`.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
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
}
