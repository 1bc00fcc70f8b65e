//! Blobs: sealed files kept beside the store.
//!
//! An attachment's chunks are sealed under the file's own key before they
//! reach a [`BlobStore`], so a blob store holds ciphertext it cannot read,
//! like [`Store`](crate::Store). A blob is written by appending (a sender
//! sealing, a receiver fetching), and is *complete* once
//! [`complete`](BlobStore::complete) marks it so: only complete blobs are
//! served to others or opened. Blobs are named by 16 bytes (a `BlobId`).
//!
//! Every method blocks: async callers run them on a blocking thread.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use crate::{Error, Result};

/// A blob's name.
pub type BlobName = [u8; 16];

/// Where sealed files are kept.
pub trait BlobStore: Send + Sync + 'static {
    /// How many bytes of the blob are kept (complete or not); `None` when
    /// there is no such blob.
    fn len(&self, name: &BlobName) -> Result<Option<u64>>;
    /// Whether the blob is complete.
    fn is_complete(&self, name: &BlobName) -> Result<bool>;
    /// Appends to a blob being written, creating it if need be.
    fn append(&self, name: &BlobName, bytes: &[u8]) -> Result<()>;
    /// Cuts a blob being written to `len` bytes (what a crash left past
    /// its last whole chunk).
    fn truncate(&self, name: &BlobName, len: u64) -> Result<()>;
    /// Makes what was appended durable.
    fn sync(&self, name: &BlobName) -> Result<()>;
    /// Marks a blob being written complete (durably).
    fn complete(&self, name: &BlobName) -> Result<()>;
    /// Reads up to `buf.len()` bytes at `offset`; how many were read (0
    /// at the end).
    fn read_at(&self, name: &BlobName, offset: u64, buf: &mut [u8]) -> Result<usize>;
    /// Gives complete blob `from` the name `to` (replacing any blob of
    /// that name).
    fn rename(&self, from: &BlobName, to: &BlobName) -> Result<()>;
    /// Removes a blob, complete or not (nothing when there is none).
    fn remove(&self, name: &BlobName) -> Result<()>;
    /// Every blob kept, complete or not.
    fn list(&self) -> Result<Vec<BlobName>>;
}

fn missing() -> Error {
    Error::Corrupt("no such blob".into())
}

/// Blobs in memory, for tests and simulations.
#[derive(Debug, Default, Clone)]
pub struct MemoryBlobs {
    inner: Arc<Mutex<MemoryInner>>,
}

#[derive(Debug, Default)]
struct MemoryInner {
    blobs: BTreeMap<BlobName, Vec<u8>>,
    complete: BTreeSet<BlobName>,
}

impl MemoryBlobs {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut MemoryInner) -> Result<T>) -> Result<T> {
        let mut inner = self
            .inner
            .lock()
            .map_err(|_| Error::Corrupt("a blob writer panicked".into()))?;
        f(&mut inner)
    }
}

impl BlobStore for MemoryBlobs {
    fn len(&self, name: &BlobName) -> Result<Option<u64>> {
        self.with(|i| Ok(i.blobs.get(name).map(|b| b.len() as u64)))
    }

    fn is_complete(&self, name: &BlobName) -> Result<bool> {
        self.with(|i| Ok(i.complete.contains(name)))
    }

    fn append(&self, name: &BlobName, bytes: &[u8]) -> Result<()> {
        self.with(|i| {
            if i.complete.contains(name) {
                return Err(Error::Corrupt("the blob is complete".into()));
            }
            i.blobs.entry(*name).or_default().extend_from_slice(bytes);
            Ok(())
        })
    }

    fn truncate(&self, name: &BlobName, len: u64) -> Result<()> {
        self.with(|i| {
            let blob = i.blobs.get_mut(name).ok_or_else(missing)?;
            blob.truncate(usize::try_from(len).unwrap_or(usize::MAX));
            Ok(())
        })
    }

    fn sync(&self, _name: &BlobName) -> Result<()> {
        Ok(())
    }

    fn complete(&self, name: &BlobName) -> Result<()> {
        self.with(|i| {
            if !i.blobs.contains_key(name) {
                return Err(missing());
            }
            i.complete.insert(*name);
            Ok(())
        })
    }

    fn read_at(&self, name: &BlobName, offset: u64, buf: &mut [u8]) -> Result<usize> {
        self.with(|i| {
            let blob = i.blobs.get(name).ok_or_else(missing)?;
            let start = usize::try_from(offset)
                .unwrap_or(usize::MAX)
                .min(blob.len());
            let n = buf.len().min(blob.len() - start);
            buf[..n].copy_from_slice(&blob[start..start + n]);
            Ok(n)
        })
    }

    fn rename(&self, from: &BlobName, to: &BlobName) -> Result<()> {
        self.with(|i| {
            if !i.complete.remove(from) {
                return Err(missing());
            }
            let blob = i.blobs.remove(from).ok_or_else(missing)?;
            i.blobs.insert(*to, blob);
            i.complete.insert(*to);
            Ok(())
        })
    }

    fn remove(&self, name: &BlobName) -> Result<()> {
        self.with(|i| {
            i.blobs.remove(name);
            i.complete.remove(name);
            Ok(())
        })
    }

    fn list(&self) -> Result<Vec<BlobName>> {
        self.with(|i| Ok(i.blobs.keys().copied().collect()))
    }
}

/// The behaviour every [`BlobStore`] must show.
pub fn conformance(store: &dyn BlobStore) -> Result<()> {
    let a = [1u8; 16];
    let b = [2u8; 16];
    assert_eq!(store.len(&a)?, None);
    store.append(&a, b"hello ")?;
    store.append(&a, b"world")?;
    assert_eq!(store.len(&a)?, Some(11));
    assert!(!store.is_complete(&a)?);
    store.truncate(&a, 6)?;
    store.append(&a, b"there")?;
    store.sync(&a)?;
    store.complete(&a)?;
    assert!(store.is_complete(&a)?);
    assert!(
        store.append(&a, b"more").is_err(),
        "a complete blob is fixed"
    );
    let mut buf = [0u8; 64];
    let n = store.read_at(&a, 6, &mut buf)?;
    assert_eq!(&buf[..n], b"there");
    assert_eq!(store.read_at(&a, 11, &mut buf)?, 0);
    let c = [3u8; 16];
    store.rename(&a, &c)?;
    assert!(store.is_complete(&c)? && !store.is_complete(&a)?);
    assert_eq!(store.len(&a)?, None);
    store.rename(&c, &a)?;
    assert!(store.rename(&c, &a).is_err(), "nothing to rename");
    store.append(&b, b"x")?;
    let mut names = store.list()?;
    names.sort();
    assert_eq!(names, vec![a, b]);
    store.remove(&a)?;
    store.remove(&a)?;
    assert_eq!(store.len(&a)?, None);
    assert!(!store.is_complete(&a)?);
    assert_eq!(store.list()?, vec![b]);
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is a failure

    use super::*;

    #[test]
    fn memory_blobs_conform() {
        conformance(&MemoryBlobs::new()).unwrap();
    }
}
