//! The security log: `security.log` in the profile directory, one sealed,
//! hash-chained entry per line (see `safemeet_crypto::security_log`),
//! appended by the process that holds the store (the daemon, or a command
//! running without one) and read by `safemeet audit`.
//!
//! A wrong passphrase cannot seal anything (the key comes from the data key
//! it failed to unwrap): it leaves one plain line, `unlock_failed MS`, in
//! `security.pending`; the next unlock seals each such line into the log
//! and removes the file.

use std::io::{Read as _, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context;
use safemeet_crypto::at_rest::DataKey;
use safemeet_crypto::security_log::{
    self, ChainBroken, SecurityEntry, SecurityLogKey, first_prev, line_hash,
};
use safemeet_proto::clock::{Clock, SystemClock};

use crate::failure::Failure;

/// The log's file name in the profile directory.
pub(crate) const LOG_FILE: &str = "security.log";
/// Unlock failures waiting to be sealed.
pub(crate) const PENDING_FILE: &str = "security.pending";
/// The most pending lines kept (a flood of wrong passphrases stays small).
const MAX_PENDING: usize = 1000;

/// The security log of one profile, open for appending.
pub(crate) struct SecurityLog {
    path: PathBuf,
    key: SecurityLogKey,
    /// The next number and the hash of the last line.
    head: Mutex<(u64, String)>,
}

impl std::fmt::Debug for SecurityLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecurityLog")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// The largest log read (about 100 000 entries).
const MAX_LOG_BYTES: u64 = 64 << 20;

/// The complete lines of the log file (a last line still being written,
/// with no newline yet, is left out). A line too long to be an entry is
/// kept, so that `verify` names it.
fn read_lines(path: &Path) -> Result<Vec<String>, Failure> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(Failure::Other(
                anyhow::anyhow!(e).context("reading the security log"),
            ));
        }
    };
    let mut bytes = Vec::new();
    file.take(MAX_LOG_BYTES + 1)
        .read_to_end(&mut bytes)
        .context("reading the security log")?;
    if bytes.len() as u64 > MAX_LOG_BYTES {
        return Err(Failure::Other(anyhow::anyhow!(
            "the security log is larger than {MAX_LOG_BYTES} bytes"
        )));
    }
    let text = String::from_utf8_lossy(&bytes);
    let mut lines: Vec<String> = text.split('\n').map(str::to_owned).collect();
    // The piece after the last newline is a line still being written.
    lines.pop();
    Ok(lines)
}

impl SecurityLog {
    /// Opens the log of the profile in `dir` under the store's data key,
    /// and seals the unlock failures waiting in `security.pending`.
    pub(crate) fn open(dir: &Path, data_key: &DataKey) -> Result<Self, Failure> {
        let path = dir.join(LOG_FILE);
        let key = SecurityLogKey::derive(data_key);
        let lines = read_lines(&path)?;
        let head = match lines.last() {
            Some(last) => match security_log::open_line(&key, last) {
                Ok(entry) => (entry.seq + 1, line_hash(last)),
                // A damaged last line: new entries still chain to it, and
                // `audit verify` shows where the damage is.
                Err(_) => (lines.len() as u64 + 1, line_hash(last)),
            },
            None => (1, first_prev()),
        };
        let log = Self {
            path,
            key,
            head: Mutex::new(head),
        };
        log.seal_pending(dir);
        Ok(log)
    }

    /// Appends an entry, synced. A failure is logged, not returned: the
    /// action it records has happened.
    pub(crate) fn record(&self, event: &str, subject: Option<String>) {
        if let Err(e) = self.append(event, subject, SystemClock.now().as_millis()) {
            tracing::warn!(error = %e, event, "the security log could not be written");
        }
    }

    fn append(&self, event: &str, subject: Option<String>, at: u64) -> anyhow::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut head = self
            .head
            .lock()
            .map_err(|_| anyhow::anyhow!("the security log's lock is poisoned"))?;
        let entry = SecurityEntry {
            seq: head.0,
            at,
            event: event.to_owned(),
            subject,
            prev: head.1.clone(),
        };
        let line = security_log::seal_line(&self.key, &entry)?;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&self.path)?;
        f.write_all(format!("{line}\n").as_bytes())?;
        f.sync_all()?;
        *head = (head.0 + 1, line_hash(&line));
        Ok(())
    }

    /// Seals the unlock failures in `security.pending`, then removes it.
    fn seal_pending(&self, dir: &Path) {
        let pending = dir.join(PENDING_FILE);
        let Ok(text) = std::fs::read_to_string(&pending) else {
            return;
        };
        for line in text.lines().take(MAX_PENDING) {
            let at = line
                .strip_prefix("unlock_failed ")
                .and_then(|ms| ms.trim().parse::<u64>().ok());
            if let Some(at) = at
                && let Err(e) = self.append("unlock_failed", None, at)
            {
                tracing::warn!(error = %e, "an unlock failure could not be sealed");
                return;
            }
        }
        if let Err(e) = std::fs::remove_file(&pending) {
            tracing::warn!(error = %e, "security.pending was not removed");
        }
    }

    /// The log of the profile in `dir`, to read: unlock failures noted
    /// since the last unlock stay where they are (the process holding the
    /// store seals them).
    pub(crate) fn reader(dir: &Path, data_key: &DataKey) -> Result<Self, Failure> {
        Ok(Self {
            path: dir.join(LOG_FILE),
            key: SecurityLogKey::derive(data_key),
            head: Mutex::new((0, String::new())),
        })
    }

    /// Unlock failures noted and not sealed yet: their times (ms).
    pub(crate) fn pending(dir: &Path) -> Vec<u64> {
        std::fs::read_to_string(dir.join(PENDING_FILE))
            .unwrap_or_default()
            .lines()
            .take(MAX_PENDING)
            .filter_map(|l| l.strip_prefix("unlock_failed ")?.trim().parse().ok())
            .collect()
    }

    /// What the readable export shows: every entry that checks, and where
    /// the chain breaks if it does.
    pub(crate) fn read_back(&self) -> Result<safemeet_engine::SecurityEntries, String> {
        let lines = read_lines(&self.path).map_err(|e| e.to_string())?;
        let checked = |n: usize| {
            security_log::verify_lines(&self.key, lines.iter().take(n).map(String::as_str))
        };
        let (entries, broken) = match checked(lines.len()) {
            Ok(entries) => (entries, None),
            Err(b) => (
                checked(b.line.saturating_sub(1)).unwrap_or_default(),
                Some(b.to_string()),
            ),
        };
        Ok(safemeet_engine::SecurityEntries {
            entries: entries
                .into_iter()
                .map(|e| safemeet_engine::SecurityRecord {
                    seq: e.seq,
                    at: e.at,
                    event: e.event,
                    subject: e.subject,
                })
                .collect(),
            broken,
        })
    }

    /// Every entry, checked: or where the chain breaks.
    pub(crate) fn verify(&self) -> Result<Result<Vec<SecurityEntry>, ChainBroken>, Failure> {
        let lines = read_lines(&self.path)?;
        Ok(security_log::verify_lines(
            &self.key,
            lines.iter().map(String::as_str),
        ))
    }
}

/// Notes a failed unlock in `security.pending` (plain: no key to seal it
/// with). Best effort; bounded.
pub(crate) fn note_unlock_failure(dir: &Path) {
    use std::os::unix::fs::OpenOptionsExt;
    let pending = dir.join(PENDING_FILE);
    let full = std::fs::metadata(&pending).is_ok_and(|m| m.len() > (MAX_PENDING * 32) as u64);
    if full || !dir.exists() {
        return;
    }
    let written = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(&pending)
        .and_then(|mut f| {
            writeln!(f, "unlock_failed {}", SystemClock.now().as_millis())?;
            f.sync_all()
        });
    if let Err(e) = written {
        tracing::debug!(error = %e, "an unlock failure was not noted");
    }
}

/// One line of `safemeet audit`.
#[derive(serde::Serialize)]
struct Shown {
    /// Its number in the log; `None` for an unlock failure not sealed yet.
    seq: Option<u64>,
    at: u64,
    event: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<String>,
}

/// `safemeet audit [--since MS]` and `safemeet audit verify`.
pub(crate) fn audit(
    home: &crate::home::Home,
    source: &crate::passphrase::Source,
    json: bool,
    since: Option<u64>,
    verify: bool,
) -> Result<(), Failure> {
    home.require_account()?;
    let log = home.security_log(&source.existing()?)?;
    let entries = log.verify()?.map_err(|broken| {
        Failure::Other(anyhow::anyhow!(
            "the security log was changed or damaged at {broken}; `safemeet audit verify` checks it"
        ))
    })?;
    if verify {
        if json {
            return crate::messenger::print_json(&serde_json::json!({
                "ok": true,
                "entries": entries.len(),
            }));
        }
        println!(
            "the security log holds {} entries, each sealed and chained to the one before: unchanged",
            entries.len()
        );
        return Ok(());
    }
    let mut shown: Vec<Shown> = entries
        .into_iter()
        .map(|e| Shown {
            seq: Some(e.seq),
            at: e.at,
            event: e.event,
            subject: e.subject,
        })
        .collect();
    shown.extend(
        SecurityLog::pending(home.dir())
            .into_iter()
            .map(|at| Shown {
                seq: None,
                at,
                event: "unlock_failed".into(),
                subject: None,
            }),
    );
    shown.retain(|s| since.is_none_or(|t| s.at >= t));
    if json {
        return crate::messenger::print_json(&shown);
    }
    for s in &shown {
        let seq = s.seq.map_or_else(|| "-".to_owned(), |n| n.to_string());
        println!(
            "{seq:>5}  {}  {}{}",
            crate::messenger::utc(s.at),
            s.event,
            s.subject
                .as_ref()
                .map(|x| format!("  {x}"))
                .unwrap_or_default()
        );
    }
    Ok(())
}
