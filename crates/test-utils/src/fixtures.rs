//! Devices: an account and its encrypted store, in memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use safemeet_crypto::EncryptedStore;
use safemeet_crypto::account::Account;
use safemeet_crypto::at_rest::{DataKey, StoreCipher};
use safemeet_crypto::machine::CryptoMachine;
use safemeet_proto::{DisplayName, Timestamp, Username};
use safemeet_store::{Batch, Entry, Keyspace, MemoryStore, Store};

/// A [`MemoryStore`] whose flushes fail while [`fail_flushes`] is set:
/// the disk trouble a real store can have, on demand.
///
/// [`fail_flushes`]: FaultyStore::fail_flushes
#[derive(Debug, Clone, Default)]
pub struct FaultyStore {
    inner: MemoryStore,
    failing: Arc<AtomicBool>,
    flushes: Arc<AtomicU64>,
}

impl FaultyStore {
    /// Makes flushes fail (`true`) or succeed again.
    pub fn fail_flushes(&self, fail: bool) {
        self.failing.store(fail, Ordering::SeqCst);
    }

    /// How many flushes were asked for so far (failed ones included).
    pub fn flushes(&self) -> u64 {
        self.flushes.load(Ordering::SeqCst)
    }
}

impl Store for FaultyStore {
    fn get(&self, keyspace: Keyspace, key: &[u8]) -> safemeet_store::Result<Option<Vec<u8>>> {
        self.inner.get(keyspace, key)
    }

    fn scan(
        &self,
        keyspace: Keyspace,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> safemeet_store::Result<Vec<Entry>> {
        self.inner.scan(keyspace, prefix, after, limit)
    }

    fn apply(&self, batch: Batch) -> safemeet_store::Result<()> {
        self.inner.apply(batch)
    }

    fn flush(&self) -> safemeet_store::Result<()> {
        self.flushes.fetch_add(1, Ordering::SeqCst);
        if self.failing.load(Ordering::SeqCst) {
            return Err(safemeet_store::Error::Backend(
                "injected flush failure".into(),
            ));
        }
        self.inner.flush()
    }
}

/// One device: an account in an encrypted in-memory store.
pub struct Device {
    /// Its name (username and display name).
    pub name: String,
    backend: FaultyStore,
    key: DataKey,
    libp2p: libp2p::identity::Keypair,
}

impl Device {
    /// A new account called `name`, created at `now`.
    pub fn new(name: &str, now: Timestamp) -> Self {
        let account = Account::create(
            Username::new(name).unwrap(),
            DisplayName::new(name).unwrap(),
            vec![],
            now,
        )
        .unwrap();
        let device = Self {
            name: name.to_owned(),
            backend: FaultyStore::default(),
            key: DataKey::generate(),
            libp2p: account.libp2p_keypair().clone(),
        };
        CryptoMachine::store_account(&device.store(), &account).unwrap();
        device
    }

    /// A device of an existing account (say, one a link brought).
    pub fn from_account(name: &str, account: &Account) -> Self {
        let device = Self {
            name: name.to_owned(),
            backend: FaultyStore::default(),
            key: DataKey::generate(),
            libp2p: account.libp2p_keypair().clone(),
        };
        CryptoMachine::store_account(&device.store(), account).unwrap();
        device
    }

    /// Its store (every call shares the same data).
    pub fn store(&self) -> EncryptedStore<FaultyStore> {
        EncryptedStore::new(self.backend.clone(), StoreCipher::new(&self.key))
    }

    /// The raw store under the encryption, to inject faults.
    pub fn backend(&self) -> &FaultyStore {
        &self.backend
    }

    /// Its libp2p keypair, the one its engine's network runs with: a bare
    /// swarm with it is this device to every peer (Noise proves the key).
    pub fn libp2p_keypair(&self) -> libp2p::identity::Keypair {
        self.libp2p.clone()
    }

    /// Opens its crypto machine.
    pub fn machine(&self) -> CryptoMachine<FaultyStore> {
        CryptoMachine::open(self.store()).unwrap()
    }
}
