//! The security log's entries: sealed one per line, and hash-chained.
//!
//! Each line is `base64url(nonce ‖ ciphertext)` (no padding): the entry as
//! JSON, sealed with XChaCha20-Poly1305 under a key derived from the
//! store's data key (BLAKE3 `derive_key`, context [`CONTEXT`]). Each entry
//! names its number and the BLAKE3 hash of the line before it (zeros for
//! the first), so a changed byte fails to open, and a removed, repeated or
//! reordered line breaks the chain. What the chain cannot show is lines
//! cut from the end; `docs/cli.md` says so.
//!
//! Entries hold an event name, a time and at most the id the event is
//! about: never message content or a contact's private data.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::Error;
use crate::at_rest::DataKey;

/// The key-derivation context, also the AEAD's associated data.
pub const CONTEXT: &str = "safemeet/v1/security-log";
/// The longest line read back.
pub const MAX_LINE: usize = 4096;
const NONCE_LEN: usize = 24;

/// The log's key, derived from the data key.
pub struct SecurityLogKey(Zeroizing<[u8; 32]>);

impl SecurityLogKey {
    /// Derives the key from a store's data key.
    pub fn derive(data_key: &DataKey) -> Self {
        Self(Zeroizing::new(blake3::derive_key(
            CONTEXT,
            data_key.expose(),
        )))
    }
}

/// One entry of the security log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityEntry {
    /// Its number, from 1.
    pub seq: u64,
    /// When (ms since the Unix epoch).
    pub at: u64,
    /// What happened (`account_created`, `device_linked`, …).
    pub event: String,
    /// The id it is about, if any (a device, a user).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The BLAKE3 hash of the line before, hex (64 zeros for the first).
    pub prev: String,
}

/// The `prev` of the first entry.
pub fn first_prev() -> String {
    "0".repeat(64)
}

/// The hash a line is chained by (hex).
pub fn line_hash(line: &str) -> String {
    blake3::hash(line.as_bytes()).to_hex().to_string()
}

fn bad(reason: &'static str) -> Error {
    Error::InvalidRecord {
        what: "security log line",
        reason,
    }
}

/// Seals an entry as one line (without its newline).
pub fn seal_line(key: &SecurityLogKey, entry: &SecurityEntry) -> Result<String, Error> {
    let plain = Zeroizing::new(
        serde_json::to_vec(entry).map_err(|_| bad("the entry could not be encoded"))?,
    );
    let mut nonce = [0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let cipher = XChaCha20Poly1305::new(key.0.as_ref().into());
    let sealed = cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: &plain,
                aad: CONTEXT.as_bytes(),
            },
        )
        .map_err(|_| bad("the entry could not be sealed"))?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&sealed);
    Ok(data_encoding::BASE64URL_NOPAD.encode(&out))
}

/// Opens one line.
pub fn open_line(key: &SecurityLogKey, line: &str) -> Result<SecurityEntry, Error> {
    if line.len() > MAX_LINE {
        return Err(bad("too long"));
    }
    let bytes = data_encoding::BASE64URL_NOPAD
        .decode(line.as_bytes())
        .map_err(|_| bad("not base64"))?;
    if bytes.len() < NONCE_LEN + 16 {
        return Err(bad("too short"));
    }
    let (nonce, sealed) = bytes.split_at(NONCE_LEN);
    let cipher = XChaCha20Poly1305::new(key.0.as_ref().into());
    let plain = Zeroizing::new(
        cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: CONTEXT.as_bytes(),
                },
            )
            .map_err(|_| bad("it does not open: changed, or sealed under another key"))?,
    );
    serde_json::from_slice(&plain).map_err(|_| bad("the entry does not decode"))
}

/// Where a log's chain breaks: the line (from 1) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct ChainBroken {
    /// The line, from 1.
    pub line: usize,
    /// Why.
    pub reason: String,
}

/// Opens every line and checks the chain: the entries, or where it breaks.
pub fn verify_lines<'a>(
    key: &SecurityLogKey,
    lines: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<SecurityEntry>, ChainBroken> {
    let mut prev = first_prev();
    let mut out: Vec<SecurityEntry> = Vec::new();
    for (i, line) in lines.into_iter().enumerate() {
        let broken = |reason: String| ChainBroken {
            line: i + 1,
            reason,
        };
        let entry = open_line(key, line).map_err(|e| broken(e.to_string()))?;
        let want = out.last().map_or(1, |e| e.seq + 1);
        if entry.seq != want {
            return Err(broken(format!(
                "entry {} where {want} belongs: a line was removed, repeated or moved",
                entry.seq
            )));
        }
        if entry.prev != prev {
            return Err(broken(
                "it does not follow the line before: a line was removed, changed or moved".into(),
            ));
        }
        prev = line_hash(line);
        out.push(entry);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

    use super::*;

    fn log(key: &SecurityLogKey, n: u64) -> Vec<String> {
        let mut prev = first_prev();
        let mut lines = Vec::new();
        for seq in 1..=n {
            let entry = SecurityEntry {
                seq,
                at: 1_000 * seq,
                event: "device_linked".into(),
                subject: Some(format!("d_{seq}")),
                prev: prev.clone(),
            };
            let line = seal_line(key, &entry).unwrap();
            prev = line_hash(&line);
            lines.push(line);
        }
        lines
    }

    #[test]
    fn a_whole_log_verifies_and_any_change_shows() {
        let key = SecurityLogKey::derive(&DataKey::generate());
        let lines = log(&key, 5);
        let ok = verify_lines(&key, lines.iter().map(String::as_str)).unwrap();
        assert_eq!(ok.len(), 5);
        assert_eq!(ok[4].subject.as_deref(), Some("d_5"));

        // One character changed anywhere in any line.
        for i in 0..lines.len() {
            for pos in [0, lines[i].len() / 2, lines[i].len() - 1] {
                let mut bad = lines.clone();
                let mut bytes = bad[i].clone().into_bytes();
                bytes[pos] = if bytes[pos] == b'A' { b'B' } else { b'A' };
                bad[i] = String::from_utf8(bytes).unwrap();
                let err = verify_lines(&key, bad.iter().map(String::as_str)).unwrap_err();
                assert_eq!(err.line, i + 1, "{err}");
            }
        }
        // A line removed, repeated or two swapped.
        let mut removed = lines.clone();
        removed.remove(2);
        assert_eq!(
            verify_lines(&key, removed.iter().map(String::as_str))
                .unwrap_err()
                .line,
            3
        );
        let mut repeated = lines.clone();
        repeated.insert(2, lines[1].clone());
        assert!(verify_lines(&key, repeated.iter().map(String::as_str)).is_err());
        let mut swapped = lines.clone();
        swapped.swap(1, 2);
        assert!(verify_lines(&key, swapped.iter().map(String::as_str)).is_err());
        // Another key opens nothing.
        let other = SecurityLogKey::derive(&DataKey::generate());
        assert_eq!(
            verify_lines(&other, lines.iter().map(String::as_str))
                .unwrap_err()
                .line,
            1
        );
    }
}
