//! `safemeet relay`: runs a relay node (offline mailboxes) until SIGINT or
//! SIGTERM. Its identity key and its mailboxes live under `--home`/relay.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use libp2p::Multiaddr;
use libp2p::identity::Keypair;
use safemeet_relay::config_file::parse_duration;
use safemeet_relay::node::{MetricsConfig, RelayConfig, RelayEvent};
use safemeet_relay::{FileConfig, Limits, MailboxService, MailboxStore};
use safemeet_store_sled::SledStore;
use serde_json::json;

use crate::failure::Failure;
use crate::home::{self, Home};

/// `safemeet relay`'s flags. Each limit may also come from `--config`;
/// a flag wins over the file, the file over the default.
#[derive(Debug, clap::Args)]
pub(crate) struct RelayArgs {
    /// A TOML file with any of the settings below (see docs/cli.md).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on (repeatable). Default: /ip4/0.0.0.0/tcp/4011.
    #[arg(long, value_name = "MULTIADDR", value_parser = crate::parse::<Multiaddr>)]
    listen: Vec<Multiaddr>,
    /// Longest an envelope is kept (e.g. 36h, 14d). Default 14d.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    retention: Option<Duration>,
    /// Largest envelope accepted, in bytes (1-65584). Default 65584.
    #[arg(long, value_name = "BYTES")]
    max_envelope_bytes: Option<usize>,
    /// Most envelopes one mailbox holds. Default 10000.
    #[arg(long, value_name = "N")]
    mailbox_max_envelopes: Option<u64>,
    /// Most bytes one mailbox holds. Default 64 MiB.
    #[arg(long, value_name = "BYTES")]
    mailbox_max_bytes: Option<u64>,
    /// Most envelopes the relay holds. Default 2000000.
    #[arg(long, value_name = "N")]
    max_envelopes: Option<u64>,
    /// Most bytes the relay holds. Default 8 GiB.
    #[arg(long, value_name = "BYTES")]
    max_bytes: Option<u64>,
    /// Take no deposits for mailboxes not held yet (to wind a relay down).
    #[arg(long)]
    no_new_mailboxes: bool,
    /// Requests per second one peer may make, sustained. Default 200.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    peer_rate: Option<u32>,
    /// Requests one peer may make at once before --peer-rate applies.
    /// Default 400.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    peer_burst: Option<u32>,
    /// KiB one peer may add to the disk per hour (deposits, files left
    /// for devices that are away). Default 16384.
    #[arg(long, value_name = "KIB", value_parser = clap::value_parser!(u32).range(1..))]
    peer_disk_kib_per_hour: Option<u32>,
    /// KiB one peer may add at once before --peer-disk-kib-per-hour
    /// applies. Default 3072.
    #[arg(long, value_name = "KIB", value_parser = clap::value_parser!(u32).range(1..))]
    peer_disk_burst_kib: Option<u32>,
    /// Seconds one circuit through the relay (two devices that reach each
    /// other no other way) lasts at most. Default 120.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u32).range(1..))]
    circuit_secs: Option<u32>,
    /// KiB one circuit carries at most, each way. Default 128 (half a
    /// minute of a call; a call takes about 5 KiB/s each way).
    #[arg(long, value_name = "KIB", value_parser = clap::value_parser!(u32).range(1..))]
    circuit_kib: Option<u32>,
    /// Serve Prometheus `/metrics` and JSON `/status` on this address
    /// (e.g. 127.0.0.1:9464). Default: off.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
    /// A client address allowed to read the metrics (repeatable).
    /// Default: 127.0.0.1 and ::1.
    #[arg(long, value_name = "IP")]
    metrics_allow: Vec<IpAddr>,
}

/// Largest configuration file read.
const MAX_CONFIG_FILE: u64 = 64 * 1024;

/// The settings in force: flags over the file over the defaults.
fn settings(args: RelayArgs) -> Result<(Limits, RelayConfig), Failure> {
    let file = match &args.config {
        Some(path) => {
            let text = home::read_bounded(path, MAX_CONFIG_FILE)
                .with_context(|| format!("reading {}", path.display()))?;
            FileConfig::from_toml(&text)
                .map_err(|e| Failure::Usage(format!("{}: {e}", path.display())))?
        }
        None => FileConfig::default(),
    };
    let usage = |m: String| Failure::Usage(m);
    let defaults = Limits::default();
    let retention = match (args.retention, file.retention) {
        (Some(d), _) => d,
        (None, Some(text)) => {
            parse_duration(&text).map_err(|e| usage(format!("retention: {e}")))?
        }
        (None, None) => defaults.retention,
    };
    let limits = Limits {
        max_envelope_bytes: args
            .max_envelope_bytes
            .or(file.max_envelope_bytes)
            .unwrap_or(defaults.max_envelope_bytes),
        retention,
        mailbox_max_envelopes: args
            .mailbox_max_envelopes
            .or(file.mailbox_max_envelopes)
            .unwrap_or(defaults.mailbox_max_envelopes),
        mailbox_max_bytes: args
            .mailbox_max_bytes
            .or(file.mailbox_max_bytes)
            .unwrap_or(defaults.mailbox_max_bytes),
        max_envelopes: args
            .max_envelopes
            .or(file.max_envelopes)
            .unwrap_or(defaults.max_envelopes),
        max_bytes: args
            .max_bytes
            .or(file.max_bytes)
            .unwrap_or(defaults.max_bytes),
        accept_new_mailboxes: !args.no_new_mailboxes
            && file
                .accept_new_mailboxes
                .unwrap_or(defaults.accept_new_mailboxes),
        ..defaults
    };
    let most = safemeet_proto::mailbox::MAX_SEALED_BYTES;
    if limits.max_envelope_bytes == 0 || limits.max_envelope_bytes > most {
        return Err(usage(format!(
            "max-envelope-bytes must be between 1 and {most} (the protocol's largest envelope)"
        )));
    }
    let defaults = RelayConfig::default();
    let listen = if !args.listen.is_empty() {
        args.listen
    } else if let Some(list) = file.listen {
        list.iter()
            .map(|a| a.parse().map_err(|e| usage(format!("listen {a:?}: {e}"))))
            .collect::<Result<_, _>>()?
    } else {
        defaults.listen.clone()
    };
    let peer_rate = pick(args.peer_rate, file.peer_rate, defaults.peer_rate);
    let peer_burst = pick(args.peer_burst, file.peer_burst, defaults.peer_burst);
    let peer_disk_kib_per_hour = pick(
        args.peer_disk_kib_per_hour,
        file.peer_disk_kib_per_hour,
        defaults.peer_disk_kib_per_hour,
    );
    let peer_disk_burst_kib = pick(
        args.peer_disk_burst_kib,
        file.peer_disk_burst_kib,
        defaults.peer_disk_burst_kib,
    );
    let circuit_secs = pick(args.circuit_secs, file.circuit_secs, defaults.circuit_secs);
    let circuit_kib = pick(args.circuit_kib, file.circuit_kib, defaults.circuit_kib);
    if [
        peer_rate,
        peer_burst,
        peer_disk_kib_per_hour,
        peer_disk_burst_kib,
        circuit_secs,
        circuit_kib,
    ]
    .contains(&0)
    {
        return Err(usage(
            "peer-rate, peer-burst, peer-disk-kib-per-hour, peer-disk-burst-kib, circuit-secs and circuit-kib must be at least 1"
                .into(),
        ));
    }
    let metrics = match (args.metrics, file.metrics) {
        (Some(listen), from_file) => Some(MetricsConfig {
            listen,
            allow: allow_list(args.metrics_allow, from_file.and_then(|m| m.allow)),
        }),
        (None, Some(m)) => Some(MetricsConfig {
            listen: m.listen,
            allow: allow_list(args.metrics_allow, m.allow),
        }),
        (None, None) => None,
    };
    Ok((
        limits,
        RelayConfig {
            listen,
            peer_rate,
            peer_burst,
            peer_disk_kib_per_hour,
            peer_disk_burst_kib,
            circuit_secs,
            circuit_kib,
            metrics,
            ..defaults
        },
    ))
}

/// A setting: the flag's, else the file's, else the default.
fn pick<T>(flag: Option<T>, file: Option<T>, default: T) -> T {
    flag.or(file).unwrap_or(default)
}

fn allow_list(flags: Vec<IpAddr>, file: Option<Vec<IpAddr>>) -> Vec<IpAddr> {
    if !flags.is_empty() {
        return flags;
    }
    file.unwrap_or_else(|| {
        vec![
            IpAddr::from([127, 0, 0, 1]),
            IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
        ]
    })
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
        let bytes = data_encoding::HEXLOWER
            .decode(text.trim().as_bytes())
            .with_context(|| format!("{} is not a relay key", path.display()))?;
        return Ok(Keypair::from_protobuf_encoding(&bytes)
            .with_context(|| format!("{} is not a relay key", path.display()))?);
    }
    let key = Keypair::generate_ed25519();
    let bytes = key
        .to_protobuf_encoding()
        .context("encoding the relay key")?;
    let text = data_encoding::HEXLOWER.encode(&bytes);
    home::publish_private_file(&path, text.as_bytes())?;
    Ok(key)
}

/// How long the relay waits for its listeners to report their addresses
/// before it prints what it has: binding is immediate on a local machine,
/// so a listener that has not reported in 5 s is not going to.
const LISTEN_WAIT: Duration = Duration::from_secs(5);

/// After the first address of an unspecified listen address, how long to
/// wait for those of the other interfaces (reported together).
const MORE_INTERFACES_WAIT: Duration = Duration::from_millis(300);

/// Runs the relay until SIGINT or SIGTERM. The signal handlers come first
/// (see [`crate::shutdown`]): a signal at any point after them ends in a
/// clean stop and exit status 0.
pub(crate) fn run(home: &Home, json: bool, args: RelayArgs) -> Result<(), Failure> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let stop = crate::shutdown::install(&rt)?;
    let (limits, config) = settings(args)?;
    let dir = home.relay_dir();
    home::create_private_dir(&dir)?;
    let key = identity(&dir)?;
    let backend = SledStore::open(dir.join("db"), &safemeet_store_sled::Config::default())
        .map_err(|e| match e {
            safemeet_store::Error::Locked { .. } => Failure::Locked(format!(
                "another relay is running on {} (its database is locked)",
                dir.display()
            )),
            other => {
                Failure::Other(anyhow::Error::new(other).context("opening the relay database"))
            }
        })?;
    tracing::debug!("relay database opened");
    if stop.is_cancelled() {
        return Ok(());
    }
    let store = MailboxStore::new(backend, limits);
    let service = MailboxService::new(store, key.clone());
    crate::ports::ensure_free(&config.listen)?;
    let expected = config.listen.len();
    let unspecified = config.listen.iter().any(|a| {
        a.iter().any(|p| match p {
            libp2p::multiaddr::Protocol::Ip4(ip) => ip.is_unspecified(),
            libp2p::multiaddr::Protocol::Ip6(ip) => ip.is_unspecified(),
            _ => false,
        })
    });
    rt.block_on(async {
        let mut relay =
            safemeet_relay::node::spawn(key, config, service).context("starting the relay node")?;
        // Each configured address reports where it listens (a port of 0
        // becomes a real one); wait for those, a few seconds at most.
        let mut addrs = Vec::new();
        let deadline = tokio::time::sleep(LISTEN_WAIT);
        tokio::pin!(deadline);
        while addrs.len() < expected && !stop.is_cancelled() {
            tokio::select! {
                biased;
                () = stop.cancelled() => {}
                Some(RelayEvent::Listening(a)) = relay.events.recv() => addrs.push(a),
                () = &mut deadline => break,
            }
        }
        // An unspecified address (0.0.0.0, ::) listens on every interface
        // and reports each: take them all, not only the first.
        if unspecified {
            while let Ok(Some(RelayEvent::Listening(a))) =
                tokio::time::timeout(MORE_INTERFACES_WAIT, relay.events.recv()).await
            {
                addrs.push(a);
            }
        }
        if !stop.is_cancelled() {
            print_started(json, &relay, &addrs);
            crate::notify::ready("relaying");
            stop.cancelled().await;
            crate::notify::stopping();
        }
        relay.stop().await;
        tracing::info!("relay stopped");
        Ok(())
    })
}

/// Prints the relay's peer id, addresses and metrics address.
fn print_started(json: bool, relay: &safemeet_relay::node::RelayHandle, addrs: &[Multiaddr]) {
    let texts: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    let metrics = relay.metrics_addr.map(|a| a.to_string());
    if json {
        println!(
            "{}",
            json!({ "peer_id": relay.peer_id.to_string(), "listen_addrs": texts, "metrics": metrics })
        );
    } else {
        println!("relay {}", relay.peer_id);
        for a in &texts {
            println!("listening on {a}");
        }
        if let Some(m) = &metrics {
            println!("metrics on http://{m}/metrics and /status");
        }
    }
}
