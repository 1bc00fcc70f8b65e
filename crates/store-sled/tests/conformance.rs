//! The sled backend passes the store's conformance suite and its
//! model-based check, keeps what was flushed across a reopen, and refuses a
//! second process.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use safemeet_store::conformance::{self, model};
use safemeet_store::{Error, Keyspace, Store};
use safemeet_store_sled::{Config, SledStore};

#[test]
fn sled_store_conforms() {
    let dirs = std::cell::RefCell::new(Vec::new());
    conformance::run_all(&|| {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), &Config::default()).unwrap();
        dirs.borrow_mut().push(dir);
        Box::new(store)
    });
}

proptest::proptest! {
    // Each case opens a database on disk: fewer cases than in memory.
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
    #[test]
    fn sled_store_matches_model(actions in model::actions(60)) {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), &Config::default()).unwrap();
        model::check(&store, actions);
    }
}

#[test]
fn sled_data_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = SledStore::open(dir.path(), &Config::default()).unwrap();
        s.put(Keyspace::Account, b"k", b"v").unwrap();
        s.flush().unwrap();
    }
    let s = SledStore::open(dir.path(), &Config::default()).unwrap();
    assert_eq!(
        s.get(Keyspace::Account, b"k").unwrap().as_deref(),
        Some(&b"v"[..])
    );
}

#[test]
fn second_open_in_another_process_is_locked() {
    // sled locks the database file with an OS lock, which is per process;
    // a child process shows the error a second daemon would get.
    if std::env::var_os("SAFEMEET_LOCK_CHILD").is_some() {
        let path = std::env::var("SAFEMEET_LOCK_PATH").unwrap();
        match SledStore::open(&path, &Config::default()) {
            Err(Error::Locked { .. }) => println!("LOCKED"),
            other => println!("NOT LOCKED: {other:?}"),
        }
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let _held = SledStore::open(dir.path(), &Config::default()).unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "second_open_in_another_process_is_locked",
            "--exact",
            "--nocapture",
        ])
        .env("SAFEMEET_LOCK_CHILD", "1")
        .env("SAFEMEET_LOCK_PATH", dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("LOCKED") && !stdout.contains("NOT LOCKED"),
        "{stdout}"
    );
}
