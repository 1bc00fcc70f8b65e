//! The in-memory store, for tests and simulations.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, RwLock};

use crate::{Batch, Entry, Keyspace, Op, Result, Store, StoreError};

type Map = BTreeMap<(u8, Vec<u8>), Vec<u8>>;

/// A [`Store`] in a `BTreeMap` behind a lock. Cloning shares the data.
/// `flush` is a no-op: nothing here survives the process.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    map: Arc<RwLock<Map>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn poisoned() -> StoreError {
        StoreError::Backend("memory store lock poisoned".into())
    }
}

impl Store for MemoryStore {
    fn get(&self, keyspace: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let map = self.map.read().map_err(|_| Self::poisoned())?;
        Ok(map.get(&(keyspace.id(), key.to_vec())).cloned())
    }

    fn scan(
        &self,
        keyspace: Keyspace,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>> {
        let map = self.map.read().map_err(|_| Self::poisoned())?;
        let ks = keyspace.id();
        let start = match after {
            Some(a) if a >= prefix => Bound::Excluded((ks, a.to_vec())),
            _ => Bound::Included((ks, prefix.to_vec())),
        };
        Ok(map
            .range((start, Bound::Unbounded))
            .take_while(|((k, key), _)| *k == ks && key.starts_with(prefix))
            .take(limit)
            .map(|((_, key), v)| (key.clone(), v.clone()))
            .collect())
    }

    fn apply(&self, batch: Batch) -> Result<()> {
        let mut map = self.map.write().map_err(|_| Self::poisoned())?;
        for op in batch.into_ops() {
            match op {
                Op::Put {
                    keyspace,
                    key,
                    value,
                } => {
                    map.insert((keyspace.id(), key), value);
                }
                Op::Delete { keyspace, key } => {
                    map.remove(&(keyspace.id(), key));
                }
            }
        }
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }
}
