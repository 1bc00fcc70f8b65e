//! The in-memory store, for tests and simulations.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, RwLock};

use crate::{Batch, Entry, Error, Keyspace, Op, Result, Store};

/// One ordered map per keyspace, so lookups borrow the key instead of
/// building a compound one.
type Map = BTreeMap<u8, BTreeMap<Vec<u8>, Vec<u8>>>;

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

    fn poisoned() -> Error {
        Error::Backend("memory store lock poisoned".into())
    }
}

impl Store for MemoryStore {
    fn get(&self, keyspace: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let map = self.map.read().map_err(|_| Self::poisoned())?;
        Ok(map.get(&keyspace.id()).and_then(|m| m.get(key)).cloned())
    }

    fn scan(
        &self,
        keyspace: Keyspace,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>> {
        let map = self.map.read().map_err(|_| Self::poisoned())?;
        let Some(entries) = map.get(&keyspace.id()) else {
            return Ok(Vec::new());
        };
        let start = match after {
            Some(a) if a >= prefix => Bound::Excluded(a),
            _ => Bound::Included(prefix),
        };
        Ok(entries
            .range::<[u8], _>((start, Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix))
            .take(limit)
            .map(|(key, v)| (key.clone(), v.clone()))
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
                    map.entry(keyspace.id()).or_default().insert(key, value);
                }
                Op::Delete { keyspace, key } => {
                    if let Some(m) = map.get_mut(&keyspace.id()) {
                        m.remove(&key);
                    }
                }
            }
        }
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }
}
