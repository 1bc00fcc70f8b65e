//! `config.toml`: the daemon's settings, so a restart without flags runs it
//! the same way.
//!
//! The file lives under `--home` when one is given (or `SAFEMEET_HOME`),
//! else in the XDG config directory (`$XDG_CONFIG_HOME/safemeet/`). Each
//! setting is taken from, in order: the flag, the environment
//! (`SAFEMEET_LISTEN`, `SAFEMEET_BOOTSTRAP`, `SAFEMEET_RELAY` — lists
//! separated by commas —, `SAFEMEET_WEB`, `SAFEMEET_MDNS`), the file, the
//! default. An unknown key or a bad value stops the command with exit
//! status 2, naming the valid keys.
//!
//! The daemon remembers what `--listen`, `--bootstrap` and `--relay` were
//! given in the file: started again without them, it listens where it did,
//! and its contacts keep reaching it through the same relays. The file is
//! written whole again then (comments in it are not kept).

use std::path::{Path, PathBuf};

use anyhow::Context;
use libp2p::Multiaddr;
use serde::Serialize;

use crate::daemon::{DEFAULT_WEB, Web};
use crate::failure::Failure;

/// The file's name.
pub(crate) const FILE: &str = "config.toml";

/// Largest config file read.
const MAX_BYTES: u64 = 64 * 1024;

/// Every key: its name, its default as the file writes it, and what it does.
pub(crate) const KEYS: [(&str, &str, &str); 7] = [
    (
        "listen",
        "[]",
        "Addresses to listen on (multiaddrs). Empty: all IPv4 interfaces, TCP and QUIC, free ports.",
    ),
    (
        "bootstrap",
        "[]",
        "Peers to connect to at start, each with /p2p/<peer id>.",
    ),
    (
        "relay",
        "[]",
        "Relays to be reachable through, each with /p2p/<peer id>; contacts leave what they cannot deliver there.",
    ),
    (
        "web",
        "\"127.0.0.1:7373\"",
        "Where the web app and HTTP API are served (a loopback IP:PORT), or \"off\".",
    ),
    ("mdns", "true", "Discover peers on the local network."),
    (
        "max_file_mib",
        "100",
        "The largest file sent or fetched, in MiB (1 to 1048576).",
    ),
    (
        "file_rate_kib",
        "0",
        "The most KiB per second files are served at, to all devices together (0: no limit).",
    ),
];

/// The default largest file, in MiB.
const DEFAULT_MAX_FILE_MIB: u64 = 100;
/// The largest limit a file size may be given (1 TiB, in MiB).
const MAX_FILE_MIB: u64 = 1 << 20;

/// The daemon's settings as resolved: flags, environment, file, defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Settings {
    pub(crate) listen: Vec<Multiaddr>,
    pub(crate) bootstrap: Vec<Multiaddr>,
    pub(crate) relay: Vec<Multiaddr>,
    #[serde(serialize_with = "web_text")]
    pub(crate) web: Web,
    pub(crate) mdns: bool,
    /// The largest file sent or fetched, in bytes.
    pub(crate) max_file_bytes: u64,
    /// The most bytes per second files are served at (`None`: no limit).
    pub(crate) file_rate: Option<u64>,
}

fn web_text<S: serde::Serializer>(web: &Web, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&web.to_string())
}

impl std::fmt::Display for Web {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Web::Default => write!(f, "{DEFAULT_WEB}"),
            Web::Off => write!(f, "off"),
            Web::At(a) => write!(f, "{a}"),
        }
    }
}

/// What the file holds: each key optional.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct File {
    listen: Option<Vec<Multiaddr>>,
    bootstrap: Option<Vec<Multiaddr>>,
    relay: Option<Vec<Multiaddr>>,
    web: Option<Web>,
    mdns: Option<bool>,
    max_file_mib: Option<u64>,
    file_rate_kib: Option<u64>,
}

/// What the flags gave (empty or `None`: not given).
#[derive(Debug, Default, Clone)]
pub(crate) struct Flags {
    pub(crate) listen: Vec<Multiaddr>,
    pub(crate) bootstrap: Vec<Multiaddr>,
    pub(crate) relay: Vec<Multiaddr>,
    pub(crate) web: Option<Web>,
    pub(crate) no_mdns: bool,
}

/// Where the file is: under an explicit home, else the XDG config dir.
pub(crate) fn path(home: &Path, home_given: bool) -> Result<PathBuf, Failure> {
    if home_given {
        return Ok(home.join(FILE));
    }
    use etcetera::BaseStrategy;
    Ok(etcetera::choose_base_strategy()
        .context("cannot find a home directory; pass --home DIR")?
        .config_dir()
        .join("safemeet")
        .join(FILE))
}

fn usage(path: &Path, what: impl std::fmt::Display) -> Failure {
    Failure::Usage(format!("{}: {what}", path.display()))
}

fn valid_keys() -> String {
    KEYS.iter()
        .map(|(k, _, _)| *k)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Reads the file (none: all defaults).
pub(crate) fn read(path: &Path) -> Result<File, Failure> {
    if !path.exists() {
        return Ok(File::default());
    }
    let text = crate::home::read_bounded(path, MAX_BYTES)
        .with_context(|| format!("reading {}", path.display()))?;
    parse(path, &text)
}

fn parse(path: &Path, text: &str) -> Result<File, Failure> {
    let table: toml::Table = toml::from_str(text).map_err(|e| usage(path, e.message()))?;
    let mut file = File::default();
    for (key, value) in table {
        let bad = |expected: &str| usage(path, format!("`{key}` must be {expected}"));
        match key.as_str() {
            "listen" | "bootstrap" | "relay" => {
                let list = value
                    .as_array()
                    .ok_or_else(|| bad("a list of multiaddrs"))?
                    .iter()
                    .map(|v| {
                        v.as_str()
                            .ok_or_else(|| bad("a list of multiaddrs"))?
                            .parse::<Multiaddr>()
                            .map_err(|e| usage(path, format!("`{key}`: {e}")))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                match key.as_str() {
                    "listen" => file.listen = Some(list),
                    "bootstrap" => file.bootstrap = Some(list),
                    _ => file.relay = Some(list),
                }
            }
            "web" => {
                let text = value
                    .as_str()
                    .ok_or_else(|| bad("a string: IP:PORT or \"off\""))?;
                file.web = Some(
                    text.parse()
                        .map_err(|e| usage(path, format!("`web`: {e}")))?,
                );
            }
            "mdns" => file.mdns = Some(value.as_bool().ok_or_else(|| bad("true or false"))?),
            "max_file_mib" => {
                let mib = value
                    .as_integer()
                    .and_then(|v| u64::try_from(v).ok())
                    .filter(|v| (1..=MAX_FILE_MIB).contains(v))
                    .ok_or_else(|| bad("a whole number of MiB from 1 to 1048576"))?;
                file.max_file_mib = Some(mib);
            }
            "file_rate_kib" => {
                let kib = value
                    .as_integer()
                    .and_then(|v| u64::try_from(v).ok())
                    .ok_or_else(|| bad("a whole number of KiB per second (0: no limit)"))?;
                file.file_rate_kib = Some(kib);
            }
            _ => {
                return Err(usage(
                    path,
                    format!("unknown key `{key}`; the valid keys are {}", valid_keys()),
                ));
            }
        }
    }
    Ok(file)
}

/// A list from the environment: items separated by commas.
fn env_list(name: &str) -> Result<Option<Vec<Multiaddr>>, Failure> {
    let Some(value) = std::env::var_os(name) else {
        return Ok(None);
    };
    let value = value
        .into_string()
        .map_err(|_| Failure::Usage(format!("{name} is not UTF-8")))?;
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse()
                .map_err(|e| Failure::Usage(format!("{name}: {s:?}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn env_value<T: std::str::FromStr>(name: &str) -> Result<Option<T>, Failure>
where
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .map(Some)
            .map_err(|e| Failure::Usage(format!("{name}: {e}"))),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => {
            Err(Failure::Usage(format!("{name} is not UTF-8")))
        }
    }
}

/// Flags, then the environment, then the file, then the defaults.
pub(crate) fn resolve(flags: &Flags, file: &File) -> Result<Settings, Failure> {
    let list = |flag: &Vec<Multiaddr>,
                var: &str,
                from_file: &Option<Vec<Multiaddr>>|
     -> Result<Vec<Multiaddr>, Failure> {
        if !flag.is_empty() {
            return Ok(flag.clone());
        }
        if let Some(env) = env_list(var)? {
            return Ok(env);
        }
        Ok(from_file.clone().unwrap_or_default())
    };
    let web = match flags.web {
        Some(w) => w,
        None => match env_value::<Web>("SAFEMEET_WEB")? {
            Some(w) => w,
            None => file.web.unwrap_or(Web::Default),
        },
    };
    let mdns = if flags.no_mdns {
        false
    } else {
        match env_value::<bool>("SAFEMEET_MDNS")? {
            Some(m) => m,
            None => file.mdns.unwrap_or(true),
        }
    };
    let max_file_mib = match env_value::<u64>("SAFEMEET_MAX_FILE_MIB")? {
        Some(m) if (1..=MAX_FILE_MIB).contains(&m) => m,
        Some(_) => {
            return Err(Failure::Usage(
                "SAFEMEET_MAX_FILE_MIB: a whole number of MiB from 1 to 1048576".into(),
            ));
        }
        None => file.max_file_mib.unwrap_or(DEFAULT_MAX_FILE_MIB),
    };
    let file_rate_kib = match env_value::<u64>("SAFEMEET_FILE_RATE_KIB")? {
        Some(k) => k,
        None => file.file_rate_kib.unwrap_or(0),
    };
    Ok(Settings {
        max_file_bytes: max_file_mib * 1024 * 1024,
        file_rate: (file_rate_kib > 0).then(|| file_rate_kib.saturating_mul(1024)),
        listen: list(&flags.listen, "SAFEMEET_LISTEN", &file.listen)?,
        bootstrap: list(&flags.bootstrap, "SAFEMEET_BOOTSTRAP", &file.bootstrap)?,
        relay: list(&flags.relay, "SAFEMEET_RELAY", &file.relay)?,
        web,
        mdns,
    })
}

/// What a daemon writes to the file once it has started.
#[derive(Debug)]
pub(crate) struct Remember {
    pub(crate) path: PathBuf,
    pub(crate) flags: Flags,
    pub(crate) file: File,
}

impl Remember {
    /// Writes the addresses given as flags; a failure is a warning (the
    /// daemon runs, and says it will not remember them).
    pub(crate) fn apply(&self) {
        if let Err(e) = remember(&self.path, &self.flags, &self.file) {
            tracing::warn!(error = %e, "the addresses given are not remembered for the next start");
        }
    }
}

/// Writes `--listen`, `--bootstrap` and `--relay`, where given, into the
/// file (keeping its other keys), if that changes it.
fn remember(path: &Path, flags: &Flags, file: &File) -> Result<(), Failure> {
    let mut next = file.clone();
    let given = |list: &Vec<Multiaddr>| (!list.is_empty()).then(|| list.clone());
    if let Some(l) = given(&flags.listen) {
        next.listen = Some(l);
    }
    if let Some(l) = given(&flags.bootstrap) {
        next.bootstrap = Some(l);
    }
    if let Some(l) = given(&flags.relay) {
        next.relay = Some(l);
    }
    if next == *file {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        crate::home::create_private_dir(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    crate::home::replace_private_file(path, render(&next).as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    tracing::info!(path = %path.display(), "the addresses given are remembered for the next start");
    Ok(())
}

fn quoted_list(list: &[Multiaddr]) -> String {
    let items: Vec<String> = list.iter().map(|a| format!("\"{a}\"")).collect();
    format!("[{}]", items.join(", "))
}

/// The file's text: every key with its comment; those not set commented
/// out at their default.
fn render(file: &File) -> String {
    let mut out =
        String::from("# SafeMeet daemon settings (`safemeet config default` shows them all).\n");
    for (key, default, doc) in KEYS {
        let value = match key {
            "listen" => file.listen.as_deref().map(quoted_list),
            "bootstrap" => file.bootstrap.as_deref().map(quoted_list),
            "relay" => file.relay.as_deref().map(quoted_list),
            "web" => file.web.map(|w| format!("\"{w}\"")),
            "mdns" => file.mdns.map(|m| m.to_string()),
            "max_file_mib" => file.max_file_mib.map(|m| m.to_string()),
            _ => file.file_rate_kib.map(|k| k.to_string()),
        };
        out.push_str(&format!("\n# {doc}\n"));
        match value {
            Some(v) => out.push_str(&format!("{key} = {v}\n")),
            None => out.push_str(&format!("# {key} = {default}\n")),
        }
    }
    out
}

/// `safemeet config default`: every key at its default, documented.
pub(crate) fn default_text() -> String {
    let mut out = String::from(
        "# SafeMeet daemon settings. Each is taken from the flag, then the environment,\n\
         # then this file, then the default shown here (uncomment a line to change it).\n",
    );
    for (key, default, doc) in KEYS {
        out.push_str(&format!("\n# {doc}\n# {key} = {default}\n"));
    }
    out
}

/// `safemeet config show|default|path`.
pub(crate) fn run(
    action: crate::cli::ConfigCommand,
    path: &Path,
    json: bool,
) -> Result<(), Failure> {
    use crate::cli::ConfigCommand;
    match action {
        ConfigCommand::Show => show(path, json),
        ConfigCommand::Default if json => print_keys(),
        ConfigCommand::Default => {
            print!("{}", default_text());
            Ok(())
        }
        ConfigCommand::Path if json => {
            crate::messenger::print_json(&serde_json::json!({ "path": path }))
        }
        ConfigCommand::Path => {
            println!("{}", path.display());
            Ok(())
        }
    }
}

/// `safemeet config default --json`: every key, its default and what it
/// does.
pub(crate) fn print_keys() -> Result<(), Failure> {
    let keys: Vec<serde_json::Value> = KEYS
        .iter()
        .map(
            |(key, default, doc)| serde_json::json!({ "key": key, "default": default, "doc": doc }),
        )
        .collect();
    crate::messenger::print_json(&keys)
}

/// `safemeet config show`: the settings as a daemon started now would use.
pub(crate) fn show(path: &Path, json: bool) -> Result<(), Failure> {
    let file = read(path)?;
    let settings = resolve(&Flags::default(), &file)?;
    if json {
        return crate::messenger::print_json(&serde_json::json!({
            "path": path.display().to_string(),
            "exists": path.exists(),
            "settings": settings,
        }));
    }
    println!(
        "# {} ({})",
        path.display(),
        if path.exists() {
            "read"
        } else {
            "absent: defaults"
        }
    );
    println!("listen = {}", quoted_list(&settings.listen));
    println!("bootstrap = {}", quoted_list(&settings.bootstrap));
    println!("relay = {}", quoted_list(&settings.relay));
    println!("web = \"{}\"", settings.web);
    println!("mdns = {}", settings.mdns);
    println!("max_file_mib = {}", settings.max_file_bytes / (1024 * 1024));
    println!(
        "file_rate_kib = {}",
        settings.file_rate.map_or(0, |r| r / 1024)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_file_parses_to_the_defaults_and_names_every_key() {
        let file = parse(Path::new("x"), &default_text()).unwrap();
        assert_eq!(file, File::default());
        // Uncommented, each default reads as itself.
        let active = default_text().replace("\n# ", "\n");
        let active = active
            .lines()
            .filter(|l| {
                KEYS.iter()
                    .any(|(k, _, _)| l.starts_with(&format!("{k} = ")))
            })
            .collect::<Vec<_>>()
            .join("\n");
        let file = parse(Path::new("x"), &active).unwrap();
        let resolved = resolve(&Flags::default(), &file).unwrap();
        assert!(resolved.listen.is_empty() && resolved.relay.is_empty());
        assert_eq!(resolved.web, Web::At(DEFAULT_WEB));
        assert!(resolved.mdns);
        for (key, _, _) in KEYS {
            assert!(default_text().contains(&format!("\n# {key} = ")), "{key}");
        }
    }

    #[test]
    fn unknown_keys_and_bad_values_are_usage_errors_naming_the_valid_keys() {
        let e = parse(Path::new("c.toml"), "lisen = []").unwrap_err();
        let Failure::Usage(text) = e else {
            panic!("{e:?}")
        };
        assert!(text.contains("unknown key `lisen`"), "{text}");
        assert!(
            text.contains("listen, bootstrap, relay, web, mdns, max_file_mib, file_rate_kib"),
            "{text}"
        );
        for bad in [
            "listen = 3",
            "listen = [\"nope\"]",
            "web = \"x\"",
            "mdns = \"yes\"",
        ] {
            assert!(
                matches!(parse(Path::new("c"), bad), Err(Failure::Usage(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_rendered_file_reads_back_the_same() {
        let file = File {
            relay: Some(vec!["/ip4/10.0.0.1/tcp/4011".parse().unwrap()]),
            web: Some(Web::Off),
            ..File::default()
        };
        assert_eq!(parse(Path::new("x"), &render(&file)).unwrap(), file);
    }
}
