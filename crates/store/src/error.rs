//! Storage errors.

use std::path::PathBuf;

/// What went wrong in a store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Another process has the database open.
    #[error("the database at {path} is in use by another process (is a SafeMeet daemon running?)")]
    Locked {
        /// The database directory.
        path: PathBuf,
    },
    /// The backend failed (I/O or internal error); the backend's own error
    /// is the source.
    #[error("the storage backend failed")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
    /// Data on disk is not what this build wrote.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The database was written by a newer SafeMeet.
    #[error("the database has schema version {found}; this build supports up to {supported}")]
    SchemaTooNew {
        /// Version on disk.
        found: u32,
        /// Newest version this build knows.
        supported: u32,
    },
    /// A schema migration step failed; that step was not applied (earlier
    /// steps were, and the store stands at version `from`).
    #[error("migration from schema {from} failed: {reason}")]
    Migration {
        /// Version being migrated from.
        from: u32,
        /// Why.
        reason: String,
    },
}
