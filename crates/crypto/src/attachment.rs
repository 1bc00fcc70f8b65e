//! Attachments: a file sealed once, for everyone it is sent to.
//!
//! - Each file gets a fresh random 32-byte [`FileKey`]. The key, the
//!   BLAKE3 hash of the whole file, its size, name and type form the
//!   [`Manifest`], which travels inside the (Megolm- or Olm-encrypted)
//!   message; the sealed chunks travel apart and say nothing without it.
//! - The file is cut into chunks of [`CHUNK_BYTES`] (the last may be
//!   shorter; an empty file is one empty chunk). Chunk `i` of `n` is sealed
//!   with ChaCha20-Poly1305 under the file's key, with the nonce
//!   `i (u64 BE) ‖ last (1 byte) ‖ 0 0 0` and the AAD
//!   `"safemeet/attachment/v1" ‖ i (u64 BE) ‖ n (u64 BE)`. A key is used for
//!   one file only, so counter nonces never repeat; a chunk moved to
//!   another place, a file cut short or grown, or a chunk of another file
//!   fails to open.
//! - A receiver opens chunks as they come (each is checked on its own, so
//!   a tampered one is refused at once, and a transfer can resume from the
//!   last good chunk), and checks the whole file's hash and size at the
//!   end ([`Assembler`]).

// The AEAD of chacha20poly1305 0.11, whose Poly1305 keeps its runtime AVX2
// detection (0.10's is forced to the portable one for short values: see
// .cargo/config.toml); a chunk is 64 KiB, where the vector one is several
// times faster. The same AEAD: the same bytes.
use chacha20poly1305_wide::aead::AeadInOut;
use chacha20poly1305_wide::{ChaCha20Poly1305, KeyInit, Nonce, Tag};
use rand::RngCore;
use rand::rngs::OsRng;
use safemeet_proto::file::{BadFileRef, FileKey, FileRef};
use zeroize::Zeroizing;

/// Plaintext bytes per chunk (all but the last).
pub const CHUNK_BYTES: usize = 64 * 1024;
/// What sealing adds to a chunk (the Poly1305 tag).
pub const CHUNK_OVERHEAD: usize = 16;
pub use safemeet_proto::file::MAX_DESCRIBED_FILE_BYTES as MAX_FILE_BYTES;
const AAD_PREFIX: &[u8] = b"safemeet/attachment/v1";

/// Why an attachment or one of its chunks was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttachmentError {
    /// A chunk failed authentication: damaged, from another file, or out of
    /// place.
    #[error("chunk {index} is damaged or not part of this file")]
    BadChunk {
        /// Its index.
        index: u64,
    },
    /// A chunk index past the file's last.
    #[error("chunk {index} is past the end of a file of {count} chunks")]
    NoSuchChunk {
        /// The index given.
        index: u64,
        /// The file's chunk count.
        count: u64,
    },
    /// A chunk of the wrong size for its place.
    #[error("chunk {index} holds {got} bytes where {expected} belong")]
    ChunkSize {
        /// Its index.
        index: u64,
        /// Its plaintext size.
        got: usize,
        /// The size its place calls for.
        expected: usize,
    },
    /// The whole file does not match the hash or size the sender gave.
    #[error("the file does not match what its sender described (hash or size)")]
    WrongFile,
    /// Chunks are missing at the end.
    #[error("{missing} of {count} chunks have not arrived")]
    Incomplete {
        /// How many.
        missing: u64,
        /// Of how many.
        count: u64,
    },
    /// A manifest that cannot be right (size, name, type).
    #[error("invalid attachment manifest: {0}")]
    InvalidManifest(#[from] BadFileRef),
}

/// What a message says of its attachment: the proto's [`FileRef`].
pub type Manifest = FileRef;

fn cipher(key: &FileKey) -> ChaCha20Poly1305 {
    ChaCha20Poly1305::new(&chacha20poly1305_wide::Key::from(*key.expose()))
}

/// A fresh random file key.
pub fn generate_key() -> FileKey {
    let mut key = Zeroizing::new([0u8; 32]);
    OsRng.fill_bytes(key.as_mut());
    FileKey::from_bytes(*key)
}

/// How many chunks a file of `size` bytes is cut into (an empty file is
/// one empty chunk).
pub fn chunk_count(size: u64) -> u64 {
    size.div_ceil(CHUNK_BYTES as u64).max(1)
}

/// The plaintext size of chunk `index` of a file of `size` bytes.
fn chunk_len(size: u64, index: u64) -> usize {
    let count = chunk_count(size);
    if index + 1 < count {
        CHUNK_BYTES
    } else {
        // The last: what is left (at most CHUNK_BYTES).
        usize::try_from(size - index * CHUNK_BYTES as u64).unwrap_or(CHUNK_BYTES)
    }
}

fn nonce(index: u64, last: bool) -> Nonce {
    let mut n = [0u8; 12];
    n[..8].copy_from_slice(&index.to_be_bytes());
    n[8] = u8::from(last);
    Nonce::from(n)
}

fn aad(index: u64, count: u64) -> Vec<u8> {
    let mut aad = Vec::with_capacity(AAD_PREFIX.len() + 16);
    aad.extend_from_slice(AAD_PREFIX);
    aad.extend_from_slice(&index.to_be_bytes());
    aad.extend_from_slice(&count.to_be_bytes());
    aad
}

/// Seals chunk `index` of a file of `size` bytes; `plaintext` must be the
/// chunk's exact bytes.
pub fn seal_chunk(
    key: &FileKey,
    size: u64,
    index: u64,
    plaintext: &[u8],
) -> Result<Vec<u8>, AttachmentError> {
    let count = chunk_count(size);
    if index >= count {
        return Err(AttachmentError::NoSuchChunk { index, count });
    }
    let expected = chunk_len(size, index);
    if plaintext.len() != expected {
        return Err(AttachmentError::ChunkSize {
            index,
            got: plaintext.len(),
            expected,
        });
    }
    let mut sealed = Vec::with_capacity(plaintext.len() + CHUNK_OVERHEAD);
    sealed.extend_from_slice(plaintext);
    let tag = cipher(key)
        .encrypt_inout_detached(
            &nonce(index, index + 1 == count),
            &aad(index, count),
            sealed.as_mut_slice().into(),
        )
        .map_err(|_| AttachmentError::BadChunk { index })?;
    sealed.extend_from_slice(&tag);
    Ok(sealed)
}

/// Opens chunk `index` of the file `manifest` describes.
pub fn open_chunk(
    manifest: &Manifest,
    index: u64,
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, AttachmentError> {
    let count = chunk_count(manifest.size);
    if index >= count {
        return Err(AttachmentError::NoSuchChunk { index, count });
    }
    let expected = chunk_len(manifest.size, index);
    if sealed.len() != expected + CHUNK_OVERHEAD {
        return Err(AttachmentError::ChunkSize {
            index,
            got: sealed.len().saturating_sub(CHUNK_OVERHEAD),
            expected,
        });
    }
    let (ciphertext, tag) = sealed.split_at(expected);
    let tag = Tag::try_from(tag).map_err(|_| AttachmentError::BadChunk { index })?;
    let mut plain = Zeroizing::new(ciphertext.to_vec());
    cipher(&manifest.key)
        .decrypt_inout_detached(
            &nonce(index, index + 1 == count),
            &aad(index, count),
            plain.as_mut_slice().into(),
            &tag,
        )
        .map_err(|_| AttachmentError::BadChunk { index })?;
    Ok(plain)
}

/// A file's manifest and its sealed chunks, from its bytes (for files
/// that fit in memory; a sender streaming a large file seals chunk by
/// chunk with [`seal_chunk`] and hashes as it reads).
pub fn seal_file(
    bytes: &[u8],
    name: &str,
    media_type: &str,
) -> Result<(Manifest, Vec<Vec<u8>>), AttachmentError> {
    let manifest = Manifest {
        key: generate_key(),
        hash: *blake3::hash(bytes).as_bytes(),
        size: bytes.len() as u64,
        name: name.to_owned(),
        media_type: media_type.to_owned(),
    };
    manifest.check()?;
    let mut sealed = Vec::new();
    for index in 0..chunk_count(manifest.size) {
        let start = usize::try_from(index).unwrap_or(usize::MAX) * CHUNK_BYTES;
        let end = (start + CHUNK_BYTES).min(bytes.len());
        sealed.push(seal_chunk(
            &manifest.key,
            manifest.size,
            index,
            &bytes[start..end],
        )?);
    }
    Ok((manifest, sealed))
}

/// A receiver's view of a file being assembled: chunks taken in order
/// (each checked as it comes), the whole file checked at the end.
#[derive(Debug)]
pub struct Assembler {
    manifest: Manifest,
    next: u64,
    hasher: blake3::Hasher,
}

impl Assembler {
    /// Starts on the file `manifest` describes (checked first).
    pub fn new(manifest: Manifest) -> Result<Self, AttachmentError> {
        manifest.check()?;
        Ok(Assembler {
            manifest,
            next: 0,
            hasher: blake3::Hasher::new(),
        })
    }

    /// The index of the next chunk wanted: a transfer resumes here.
    pub fn next_chunk(&self) -> u64 {
        self.next
    }

    /// The file's size.
    pub fn size(&self) -> u64 {
        self.manifest.size
    }

    /// Opens the next chunk; its plaintext, to be written out.
    pub fn take(&mut self, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, AttachmentError> {
        let plain = open_chunk(&self.manifest, self.next, sealed)?;
        self.hasher.update(&plain);
        self.next += 1;
        Ok(plain)
    }

    /// How many chunks the file has.
    pub fn count(&self) -> u64 {
        chunk_count(self.manifest.size)
    }

    /// Whether every chunk arrived and the file is the one described.
    pub fn check(&self) -> Result<(), AttachmentError> {
        let count = chunk_count(self.manifest.size);
        if self.next < count {
            return Err(AttachmentError::Incomplete {
                missing: count - self.next,
                count,
            });
        }
        if self.hasher.finalize().as_bytes() != &self.manifest.hash {
            return Err(AttachmentError::WrongFile);
        }
        Ok(())
    }

    /// Every chunk arrived, and the file is the one described.
    pub fn finish(self) -> Result<Manifest, AttachmentError> {
        self.check()?;
        Ok(self.manifest)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

    use super::*;

    #[test]
    fn chunks_are_the_same_bytes_as_with_the_portable_poly1305() {
        use chacha20poly1305::aead::{Aead, KeyInit as _, Payload};
        let key = FileKey::from_bytes([9; 32]);
        let size = 2 * CHUNK_BYTES as u64 + 1000;
        for index in 0..3u64 {
            let len = chunk_len(size, index);
            let plain: Vec<u8> = (0..len).map(|i| (i * 31 + index as usize) as u8).collect();
            let sealed = seal_chunk(&key, size, index, &plain).unwrap();
            let old = chacha20poly1305::ChaCha20Poly1305::new(key.expose().into())
                .encrypt(
                    (&<[u8; 12]>::from(nonce(index, index == 2))).into(),
                    Payload {
                        msg: &plain,
                        aad: &aad(index, 3),
                    },
                )
                .unwrap();
            assert_eq!(sealed, old, "chunk {index}");
        }
    }

    fn file(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    fn assemble(manifest: &Manifest, sealed: &[Vec<u8>]) -> Result<Vec<u8>, AttachmentError> {
        let mut a = Assembler::new(manifest.clone())?;
        let mut out = Vec::new();
        for chunk in sealed {
            out.extend_from_slice(&a.take(chunk)?);
        }
        a.finish()?;
        Ok(out)
    }

    #[test]
    fn files_of_every_shape_come_back_whole() {
        for len in [
            0,
            1,
            CHUNK_BYTES - 1,
            CHUNK_BYTES,
            CHUNK_BYTES + 1,
            3 * CHUNK_BYTES + 17,
        ] {
            let bytes = file(len);
            let (manifest, sealed) =
                seal_file(&bytes, "a.bin", "application/octet-stream").unwrap();
            assert_eq!(sealed.len() as u64, chunk_count(manifest.size), "{len}");
            assert!(
                sealed
                    .iter()
                    .all(|c| c.len() <= CHUNK_BYTES + CHUNK_OVERHEAD)
            );
            assert_eq!(assemble(&manifest, &sealed).unwrap(), bytes, "{len}");
        }
    }

    #[test]
    fn a_tampered_swapped_cut_or_foreign_chunk_is_refused() {
        let bytes = file(3 * CHUNK_BYTES + 5);
        let (manifest, sealed) = seal_file(&bytes, "a.bin", "application/octet-stream").unwrap();

        let mut tampered = sealed.clone();
        tampered[1][7] ^= 1;
        assert_eq!(
            assemble(&manifest, &tampered),
            Err(AttachmentError::BadChunk { index: 1 })
        );

        let mut swapped = sealed.clone();
        swapped.swap(0, 1);
        assert_eq!(
            assemble(&manifest, &swapped),
            Err(AttachmentError::BadChunk { index: 0 })
        );

        // Cut short: the file's last chunk is missing.
        assert_eq!(
            assemble(&manifest, &sealed[..3]),
            Err(AttachmentError::Incomplete {
                missing: 1,
                count: 4
            })
        );

        // Grown: under a manifest that claims more chunks, no chunk opens
        // (the count is in every chunk's AAD).
        let longer = Manifest {
            size: manifest.size + CHUNK_BYTES as u64,
            ..manifest.clone()
        };
        assert_eq!(
            assemble(&longer, &sealed),
            Err(AttachmentError::BadChunk { index: 0 })
        );

        // A chunk of another file under this manifest.
        let (_, other) = seal_file(&bytes, "a.bin", "application/octet-stream").unwrap();
        assert_eq!(
            assemble(&manifest, &other),
            Err(AttachmentError::BadChunk { index: 0 })
        );

        // The right chunks, but the sender described another file.
        let lying = Manifest {
            hash: *blake3::hash(b"something else").as_bytes(),
            ..manifest.clone()
        };
        assert_eq!(assemble(&lying, &sealed), Err(AttachmentError::WrongFile));

        // Past the end, and of the wrong size.
        assert!(matches!(
            open_chunk(&manifest, 4, &sealed[0]),
            Err(AttachmentError::NoSuchChunk { .. })
        ));
        assert!(matches!(
            open_chunk(&manifest, 0, &sealed[3]),
            Err(AttachmentError::ChunkSize { .. })
        ));
    }

    #[test]
    fn a_transfer_resumes_from_what_was_written() {
        let bytes = file(5 * CHUNK_BYTES + 100);
        let (manifest, sealed) = seal_file(&bytes, "a.bin", "application/octet-stream").unwrap();
        // Two chunks were kept before a crash: they are opened again.
        let mut a = Assembler::new(manifest).unwrap();
        for chunk in &sealed[..2] {
            a.take(chunk).unwrap();
        }
        assert_eq!(a.next_chunk(), 2);
        assert_eq!(a.count(), 6);
        for chunk in &sealed[2..] {
            a.take(chunk).unwrap();
        }
        a.finish().unwrap();
    }

    #[test]
    fn manifests_that_cannot_be_right_are_refused() {
        let (manifest, _) = seal_file(b"x", "a.txt", "text/plain").unwrap();
        for bad in [
            Manifest {
                name: "../etc/passwd".into(),
                ..manifest.clone()
            },
            Manifest {
                name: "a/b".into(),
                ..manifest.clone()
            },
            Manifest {
                name: String::new(),
                ..manifest.clone()
            },
            Manifest {
                name: "a\nb".into(),
                ..manifest.clone()
            },
            Manifest {
                name: "x".repeat(300),
                ..manifest.clone()
            },
            Manifest {
                media_type: "text".into(),
                ..manifest.clone()
            },
            Manifest {
                size: MAX_FILE_BYTES + 1,
                ..manifest.clone()
            },
        ] {
            assert!(Assembler::new(bad.clone()).is_err(), "{bad:?}");
        }
        assert!(format!("{:?}", manifest.key) == "FileKey(..)");
    }
}
