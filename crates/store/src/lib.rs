//! SafeMeet storage: one set of traits, one conformance suite, any backend.
//!
//! A node keeps all its state in named [`Keyspace`]s of byte keys and byte
//! values. The [`Store`] trait is what every other crate programs against;
//! [`MemoryStore`] serves tests and simulations. The disk backend lives in
//! its own crate, `safemeet-store-sled` (`SledStore`), so that this crate —
//! and `safemeet-crypto` and the engine above it — do not link sled. Every
//! backend passes the same [`conformance`] suite, and a model-based check
//! ([`conformance::model`]) compares it with a `BTreeMap`.
//!
//! This crate stores bytes. It does **not** encrypt: values reach it already
//! sealed by `safemeet-crypto`'s encrypted store, so plaintext never reaches
//! a backend and never reaches sled's page cache or files.
//!
//! Writes go through [`Batch`]es, which apply atomically across keyspaces. A
//! write is *acknowledged* (durable against a process crash) once
//! [`Store::flush`] has returned after it; see `ARCHITECTURE.md` for what
//! that does and does not promise with sled.
//!
//! Features: `model` adds the `proptest` strategy of the model-based check
//! ([`conformance::model::actions`]), for backends' tests.
//!
//! ```
//! use safemeet_store::{Batch, Keyspace, MemoryStore, Store};
//!
//! let store = MemoryStore::new();
//! let mut batch = Batch::new();
//! batch.put(Keyspace::Outbox, b"0001", b"envelope");
//! batch.put(Keyspace::CryptoSessions, b"room", b"ratchet");
//! store.apply(batch).unwrap(); // both or neither
//! assert_eq!(store.get(Keyspace::Outbox, b"0001").unwrap().as_deref(), Some(&b"envelope"[..]));
//! ```

mod batch;
pub mod blob;
pub mod conformance;
mod error;
mod keyspace;
mod memory;
pub mod migrate;

pub use batch::{Batch, Op};
pub use error::Error;
pub use keyspace::Keyspace;
pub use memory::MemoryStore;

/// A result with an [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One key and its value.
pub type Entry = (Vec<u8>, Vec<u8>);

/// A key-value store with atomic multi-keyspace batches.
///
/// Implementations are cheap to share (`&self` methods, `Send + Sync`).
/// Reads see every batch applied before them. Scans return keys in
/// ascending byte order.
pub trait Store: Send + Sync {
    /// The value under `key`, if any.
    fn get(&self, keyspace: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Up to `limit` entries whose key starts with `prefix` and is strictly
    /// greater than `after` (when given), in ascending key order.
    fn scan(
        &self,
        keyspace: Keyspace,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>>;

    /// Applies every operation of `batch`, all or none.
    fn apply(&self, batch: Batch) -> Result<()>;

    /// Makes every applied batch durable against a crash of this process.
    fn flush(&self) -> Result<()>;

    /// Makes every applied batch durable against a crash of the machine
    /// (power loss, a kernel panic): [`Store::flush`], then an fsync of what
    /// the flush wrote. Slower than a flush; for the few writes that must
    /// never be lost, such as the crypto machine's run marker (a lost
    /// "unclean" mark would let a Megolm index be used twice). The default
    /// is a flush, for stores with nothing to fsync.
    fn sync(&self) -> Result<()> {
        self.flush()
    }

    /// Puts one value (a batch of one).
    fn put(&self, keyspace: Keyspace, key: &[u8], value: &[u8]) -> Result<()> {
        let mut b = Batch::new();
        b.put(keyspace, key, value);
        self.apply(b)
    }

    /// Deletes one key (a batch of one). Deleting a missing key is not an error.
    fn delete(&self, keyspace: Keyspace, key: &[u8]) -> Result<()> {
        let mut b = Batch::new();
        b.delete(keyspace, key);
        self.apply(b)
    }
}

impl<S: Store + ?Sized> Store for std::sync::Arc<S> {
    fn get(&self, keyspace: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>> {
        (**self).get(keyspace, key)
    }
    fn scan(
        &self,
        keyspace: Keyspace,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>> {
        (**self).scan(keyspace, prefix, after, limit)
    }
    fn apply(&self, batch: Batch) -> Result<()> {
        (**self).apply(batch)
    }
    fn flush(&self) -> Result<()> {
        (**self).flush()
    }
    fn sync(&self) -> Result<()> {
        (**self).sync()
    }
    fn put(&self, keyspace: Keyspace, key: &[u8], value: &[u8]) -> Result<()> {
        (**self).put(keyspace, key, value)
    }
    fn delete(&self, keyspace: Keyspace, key: &[u8]) -> Result<()> {
        (**self).delete(keyspace, key)
    }
}
