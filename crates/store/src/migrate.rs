//! Schema versions and migrations.
//!
//! The schema version lives in [`Keyspace::Meta`] under
//! [`SCHEMA_VERSION_KEY`] as a big-endian `u32`. A fresh store has no version
//! and is stamped with the current one. An older store is brought forward
//! one step at a time; each step's writes and the new version number go in
//! one atomic batch, so a crash mid-migration leaves the store at a
//! consistent version and the next start resumes from there.
//!
//! Steps see the raw store: a step that must rewrite sealed values runs
//! above this layer, with the store cipher (`safemeet-crypto`), and records
//! its own progress in the same batch as its writes.

use crate::{Batch, Error, Keyspace, Result, Store};

/// Key of the schema version in [`Keyspace::Meta`].
pub const SCHEMA_VERSION_KEY: &[u8] = b"schema_version";

/// One migration step from `from` to `from + 1`.
pub struct Migration {
    /// The version this step starts from.
    pub from: u32,
    /// Adds the step's writes to the batch (reading the store as it is).
    pub run: fn(&dyn Store, &mut Batch) -> Result<()>,
}

impl std::fmt::Debug for Migration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Migration")
            .field("from", &self.from)
            .finish()
    }
}

/// The schema version stored, or `None` for a fresh store.
pub fn schema_version(store: &dyn Store) -> Result<Option<u32>> {
    match store.get(Keyspace::Meta, SCHEMA_VERSION_KEY)? {
        None => Ok(None),
        Some(v) => {
            let bytes: [u8; 4] = v
                .as_slice()
                .try_into()
                .map_err(|_| Error::Corrupt("schema version is not 4 bytes".into()))?;
            Ok(Some(u32::from_be_bytes(bytes)))
        }
    }
}

/// Brings `store` to version `current` using `migrations`, or stamps a fresh
/// store. Returns the version found before (None if fresh).
pub fn migrate(store: &dyn Store, current: u32, migrations: &[Migration]) -> Result<Option<u32>> {
    let found = schema_version(store)?;
    let Some(mut version) = found else {
        // Only an empty store may be stamped: data without a version would
        // silently skip every migration.
        for ks in Keyspace::ALL {
            if ks != Keyspace::Meta && !store.scan(ks, b"", None, 1)?.is_empty() {
                return Err(Error::Corrupt(format!(
                    "the store holds data in {} but no schema version",
                    ks.name()
                )));
            }
        }
        let mut b = Batch::new();
        b.put(Keyspace::Meta, SCHEMA_VERSION_KEY, &current.to_be_bytes());
        store.apply(b)?;
        store.flush()?;
        return Ok(None);
    };
    if version > current {
        return Err(Error::SchemaTooNew {
            found: version,
            supported: current,
        });
    }
    while version < current {
        let step = migrations
            .iter()
            .find(|m| m.from == version)
            .ok_or_else(|| Error::Migration {
                from: version,
                reason: "no migration step for this version".into(),
            })?;
        let mut b = Batch::new();
        (step.run)(store, &mut b).map_err(|e| Error::Migration {
            from: version,
            reason: e.to_string(),
        })?;
        b.put(
            Keyspace::Meta,
            SCHEMA_VERSION_KEY,
            &(version + 1).to_be_bytes(),
        );
        store.apply(b)?;
        store.flush()?;
        version += 1;
    }
    Ok(found)
}
