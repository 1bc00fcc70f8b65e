//! The account archive's envelope (`safemeet export FILE`): one file,
//! sealed under a passphrase. The layout is documented in
//! `docs/archive.md`:
//!
//! ```text
//! magic "SAFEMEET-ARCHIVE" (16) | version (1) | key-file length (u32 BE)
//! | key file (JSON, as beside a store) | nonce (24) | ciphertext
//! ```
//!
//! A random archive key is wrapped under the passphrase exactly as a
//! store's data key is (Argon2id, then XChaCha20-Poly1305; see
//! [`KeyFile`]); the body is sealed with XChaCha20-Poly1305 under a key
//! derived from it, with everything before the ciphertext as associated
//! data, so no byte of the file can change unnoticed.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use rand::rngs::OsRng;
use zeroize::Zeroizing;

use crate::Error;
use crate::at_rest::{DataKey, KdfParams, KeyFile, Passphrase};

/// The first bytes of every archive.
pub const MAGIC: &[u8; 16] = b"SAFEMEET-ARCHIVE";
/// The envelope's format version.
pub const VERSION: u8 = 1;
/// The largest archive opened (the body of a link bundle, and room for
/// its envelope).
pub const MAX_ARCHIVE_BYTES: usize = 257 * 1024 * 1024;
/// The largest key file in an archive.
const MAX_KEY_FILE_BYTES: usize = 4096;
/// BLAKE3 context of the body key.
const BODY_KEY_CONTEXT: &str = "safemeet archive body key v1";

fn body_cipher(key: &DataKey) -> XChaCha20Poly1305 {
    let derived = Zeroizing::new(blake3::derive_key(BODY_KEY_CONTEXT, key.expose()));
    XChaCha20Poly1305::new(derived.as_ref().into())
}

/// Seals `body` under `passphrase`.
pub fn seal(body: &[u8], passphrase: &Passphrase, kdf: KdfParams) -> Result<Vec<u8>, Error> {
    let key = DataKey::generate();
    let key_file = KeyFile::wrap(&key, passphrase, kdf)?.to_json()?;
    let key_len = u32::try_from(key_file.len())
        .map_err(|_| Error::InvalidKeyFile("the archive's key file is too large"))?;
    let mut nonce = [0u8; 24];
    OsRng.fill_bytes(&mut nonce);
    let mut out = Vec::with_capacity(body.len() + key_file.len() + 128);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&key_len.to_be_bytes());
    out.extend_from_slice(key_file.as_bytes());
    out.extend_from_slice(&nonce);
    let sealed = body_cipher(&key)
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: body,
                aad: &out,
            },
        )
        .map_err(|_| Error::Kdf("sealing the archive failed".into()))?;
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// Why an archive did not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ArchiveError {
    /// Not an archive at all.
    #[error("not a SafeMeet archive")]
    NotAnArchive,
    /// An archive of a format this version does not read.
    #[error("an archive of format {0}; this version reads format {VERSION}")]
    UnknownVersion(u8),
    /// Cut short, or larger than any archive.
    #[error("the archive is cut short or too large")]
    BadLength,
    /// The passphrase does not open it.
    #[error("the passphrase does not open this archive")]
    WrongPassphrase,
    /// It opened under the passphrase, but a byte of it was changed.
    #[error("the archive was changed or damaged")]
    Damaged,
}

/// Opens an archive: its body.
pub fn open(bytes: &[u8], passphrase: &Passphrase) -> Result<Zeroizing<Vec<u8>>, ArchiveError> {
    if bytes.len() > MAX_ARCHIVE_BYTES {
        return Err(ArchiveError::BadLength);
    }
    let rest = bytes
        .strip_prefix(MAGIC.as_slice())
        .ok_or(ArchiveError::NotAnArchive)?;
    let (&version, rest) = rest.split_first().ok_or(ArchiveError::BadLength)?;
    if version != VERSION {
        return Err(ArchiveError::UnknownVersion(version));
    }
    let (len, rest) = rest.split_at_checked(4).ok_or(ArchiveError::BadLength)?;
    let len = u32::from_be_bytes(len.try_into().map_err(|_| ArchiveError::BadLength)?) as usize;
    if len > MAX_KEY_FILE_BYTES {
        return Err(ArchiveError::BadLength);
    }
    let (key_file, rest) = rest.split_at_checked(len).ok_or(ArchiveError::BadLength)?;
    let (nonce, sealed) = rest.split_at_checked(24).ok_or(ArchiveError::BadLength)?;
    let key_file = std::str::from_utf8(key_file)
        .ok()
        .and_then(|t| KeyFile::from_json(t).ok())
        .ok_or(ArchiveError::Damaged)?;
    let key = key_file.unwrap_key(passphrase).map_err(|e| match e {
        Error::WrongPassphrase => ArchiveError::WrongPassphrase,
        _ => ArchiveError::Damaged,
    })?;
    let aad = &bytes[..bytes.len() - sealed.len()];
    body_cipher(&key)
        .decrypt(XNonce::from_slice(nonce), Payload { msg: sealed, aad })
        .map(Zeroizing::new)
        .map_err(|_| ArchiveError::Damaged)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

    use super::*;

    fn quick() -> KdfParams {
        KdfParams {
            m_cost_kib: 19 * 1024,
            t_cost: 2,
            p_cost: 1,
        }
    }

    #[test]
    fn an_archive_opens_under_its_passphrase_only_and_shows_any_change() {
        let pass = Passphrase::new("correct horse");
        let body = b"everything the account holds".repeat(100);
        let sealed = seal(&body, &pass, quick()).unwrap();
        assert!(sealed.starts_with(MAGIC));
        assert!(
            !sealed.windows(10).any(|w| w == b"everything"),
            "the body is not in the clear"
        );
        assert_eq!(open(&sealed, &pass).unwrap().as_slice(), body.as_slice());
        assert_eq!(
            open(&sealed, &Passphrase::new("wrong horse")),
            Err(ArchiveError::WrongPassphrase)
        );
        // Any byte changed, anywhere, is seen (the key file's KDF
        // parameters and salt, the nonce, the body).
        for at in [20, sealed.len() / 2, sealed.len() - 40, sealed.len() - 1] {
            let mut changed = sealed.clone();
            changed[at] ^= 1;
            assert!(open(&changed, &pass).is_err(), "byte {at}");
        }
        // Cut short, not an archive, another version.
        assert_eq!(
            open(&sealed[..sealed.len() / 3], &pass),
            Err(ArchiveError::Damaged)
        );
        assert_eq!(open(&sealed[..18], &pass), Err(ArchiveError::BadLength));
        assert_eq!(
            open(b"PK\x03\x04 a zip", &pass),
            Err(ArchiveError::NotAnArchive)
        );
        let mut future = sealed.clone();
        future[16] = 9;
        assert_eq!(open(&future, &pass), Err(ArchiveError::UnknownVersion(9)));
        let mut huge = sealed;
        huge[17..21].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(open(&huge, &pass), Err(ArchiveError::BadLength));
    }
}
