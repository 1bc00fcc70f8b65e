//! The sled backend of the SafeMeet store (sled 0.34.7, pinned): a
//! [`Store`] on disk, for the daemon's profile and a relay's mailboxes.
//!
//! This crate is only the backend. The [`Store`] trait, the in-memory store,
//! batches, migrations and the conformance suite live in `safemeet-store`,
//! so that crates which program against the trait (`safemeet-crypto`, the
//! engine) do not link sled; only the binaries and the tests that want a
//! disk pick this crate.
//!
//! All keyspaces share one sled tree; each key is prefixed with its
//! keyspace's one-byte id. One tree makes every [`Batch`] a single
//! `apply_batch`, which sled applies atomically, instead of a multi-tree
//! transaction that may re-run and costs more.
//!
//! Durability: [`Store::flush`] calls `Db::flush`, which on Linux writes the
//! log with `sync_file_range`. That survives a crash of this process (the
//! data is in the kernel), but not necessarily a power cut: the drive cache
//! is not flushed. sled's background flusher additionally calls `sync_all`
//! every `flush_every_ms`. See `ARCHITECTURE.md`, "What acknowledged means".
//! `flush` blocks the calling thread until the write is done: async callers
//! run it on a blocking thread (`tokio::task::spawn_blocking`).
//!
//! ```
//! use safemeet_store::{Keyspace, Store};
//! use safemeet_store_sled::{Config, SledStore};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let store = SledStore::open(dir.path(), &Config::default()).unwrap();
//! store.put(Keyspace::Outbox, b"0001", b"envelope").unwrap();
//! store.flush().unwrap(); // acknowledged: survives a crash of this process
//! assert_eq!(store.get(Keyspace::Outbox, b"0001").unwrap().as_deref(), Some(&b"envelope"[..]));
//! ```

mod blob_dir;

pub use blob_dir::BlobDir;

use std::ops::Bound;
use std::path::{Path, PathBuf};

use safemeet_store::{Batch, Entry, Error, Keyspace, Op, Result, Store};

/// Tuning for [`SledStore`].
#[derive(Debug, Clone)]
pub struct Config {
    /// Page cache size in bytes. Default 64 MiB: sled's own default of 1 GiB
    /// is far more than a messenger needs and too much for small devices.
    pub cache_capacity: u64,
    /// Interval of the background `sync_all`, in milliseconds. Default 500,
    /// sled's default; bounds how much a power cut can lose.
    pub flush_every_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            cache_capacity: 64 * 1024 * 1024,
            flush_every_ms: 500,
        }
    }
}

/// A [`Store`] on sled. Cloning shares the same database.
#[derive(Debug, Clone)]
pub struct SledStore {
    db: sled::Db,
    tree: sled::Tree,
    path: PathBuf,
}

/// The file in a sled directory that holds its log (sled 0.34's layout):
/// every flushed write is in it.
const SLED_LOG_FILE: &str = "db";

/// How long [`SledStore::open`] waits for a lock that is being released:
/// sled lets go of its file lock from background threads, within
/// milliseconds of the last handle's drop or its process's exit, so a lock
/// still held after a second belongs to a process that is running.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

impl SledStore {
    /// Opens (creating if needed) the database in directory `path`.
    ///
    /// Fails with [`Error::Locked`] if another process has it open.
    ///
    /// sled releases its file lock from background threads, shortly after
    /// the last handle is dropped (or a process exits); a lock found held is
    /// therefore retried for up to [`LOCK_WAIT`] before `Locked` is reported.
    pub fn open(path: impl AsRef<Path>, config: &Config) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let mut pause = std::time::Duration::from_millis(5);
        let mut waited = std::time::Duration::ZERO;
        let db = loop {
            let opened = sled::Config::new()
                .path(&path)
                .cache_capacity(config.cache_capacity)
                .flush_every_ms(Some(config.flush_every_ms))
                .open()
                .map_err(|e| map_open_error(e, &path));
            match opened {
                Err(Error::Locked { .. }) if waited < LOCK_WAIT => {
                    // A bounded wait in a blocking call: open is synchronous.
                    std::thread::sleep(pause);
                    waited += pause;
                    pause = (pause * 2).min(std::time::Duration::from_millis(100));
                }
                other => break other?,
            }
        };
        // The default tree holds everything; see the module docs.
        let tree = (*db).clone();
        Ok(Self { db, tree, path })
    }

    /// The database directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes the database occupies on disk.
    pub fn size_on_disk(&self) -> Result<u64> {
        self.db.size_on_disk().map_err(backend)
    }
}

fn map_open_error(e: sled::Error, path: &Path) -> Error {
    match e {
        sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => Error::Locked {
            path: path.to_path_buf(),
        },
        sled::Error::Corruption { .. } => Error::Corrupt(e.to_string()),
        other => backend(other),
    }
}

fn backend(e: sled::Error) -> Error {
    match e {
        sled::Error::Corruption { .. } => Error::Corrupt(e.to_string()),
        other => Error::Backend(Box::new(other)),
    }
}

fn full_key(keyspace: Keyspace, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + key.len());
    k.push(keyspace.id());
    k.extend_from_slice(key);
    k
}

impl Store for SledStore {
    fn get(&self, keyspace: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self
            .tree
            .get(full_key(keyspace, key))
            .map_err(backend)?
            .map(|v| v.to_vec()))
    }

    fn scan(
        &self,
        keyspace: Keyspace,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>> {
        let full_prefix = full_key(keyspace, prefix);
        let start = match after {
            Some(a) if a >= prefix => Bound::Excluded(full_key(keyspace, a)),
            _ => Bound::Included(full_prefix.clone()),
        };
        let mut out = Vec::new();
        for item in self.tree.range::<Vec<u8>, _>((start, Bound::Unbounded)) {
            if out.len() >= limit {
                break;
            }
            let (k, v) = item.map_err(backend)?;
            if !k.starts_with(&full_prefix) {
                break;
            }
            out.push((k[1..].to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    fn apply(&self, batch: Batch) -> Result<()> {
        let mut b = sled::Batch::default();
        for op in batch.into_ops() {
            match op {
                Op::Put {
                    keyspace,
                    key,
                    value,
                } => b.insert(full_key(keyspace, &key), value),
                Op::Delete { keyspace, key } => b.remove(full_key(keyspace, &key)),
            }
        }
        self.tree.apply_batch(b).map_err(backend)
    }

    fn flush(&self) -> Result<()> {
        self.db.flush().map(|_| ()).map_err(backend)
    }

    fn sync(&self) -> Result<()> {
        self.flush()?;
        // sled's flush ends in `sync_file_range`, which writes the pages
        // but not the file's metadata and asks nothing of the disk's cache:
        // fsync its log file, which holds every flushed write.
        let log = self.path.join(SLED_LOG_FILE);
        std::fs::File::open(&log)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::Backend(Box::new(e)))
    }

    fn put(&self, keyspace: Keyspace, key: &[u8], value: &[u8]) -> Result<()> {
        // A single insert is atomic on its own and cheaper than a batch.
        self.tree
            .insert(full_key(keyspace, key), value)
            .map(|_| ())
            .map_err(backend)
    }

    fn delete(&self, keyspace: Keyspace, key: &[u8]) -> Result<()> {
        self.tree
            .remove(full_key(keyspace, key))
            .map(|_| ())
            .map_err(backend)
    }
}
