//! The in-memory store passes the conformance suite (the sled backend runs
//! the same suite in `safemeet-store-sled`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use safemeet_store::{MemoryStore, conformance};

#[test]
fn memory_store_conforms() {
    conformance::run_all(&|| Box::new(MemoryStore::new()));
}
