//! The encrypted store on the real sled backend: nothing readable on disk.
//!
//! A test of `safemeet-crypto`'s encrypted store, kept here so that the
//! crypto crate does not link sled, not even for its tests.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use safemeet_crypto::EncryptedStore;
use safemeet_crypto::account::Account;
use safemeet_crypto::at_rest::{DataKey, KdfParams, KeyFile, Passphrase, StoreCipher};
use safemeet_proto::{DisplayName, Email, Timestamp, Username};
use safemeet_store::Keyspace;
use safemeet_store_sled::{Config, SledStore};

fn files_contain(dir: &std::path::Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if std::fs::read(&p)
                .unwrap()
                .windows(needle.len())
                .any(|w| w == needle)
            {
                hits.push(p);
            }
        }
    }
    hits
}

#[test]
fn nothing_identifying_reaches_sled_files() {
    let dir = tempfile::tempdir().unwrap();
    let key = DataKey::generate();
    let kf = KeyFile::wrap(
        &key,
        &Passphrase::new("a long passphrase"),
        KdfParams::default(),
    )
    .unwrap();
    let account = Account::create(
        Username::new("wonderlandalice").unwrap(),
        DisplayName::new("Alice Pleasance Liddell").unwrap(),
        vec![Email::new("alice.liddell@example.org").unwrap()],
        Timestamp::from_millis(1_700_000_000_000).unwrap(),
    )
    .unwrap();
    let user_text = account.user_id().to_string();
    {
        let sled = SledStore::open(dir.path().join("db"), &Config::default()).unwrap();
        let store = EncryptedStore::new(sled, StoreCipher::new(&key));
        store
            .put(Keyspace::Account, b"account", &account.to_record().unwrap())
            .unwrap();
        store
            .put(
                Keyspace::Contacts,
                account.user_id().as_bytes(),
                b"wonderlandalice",
            )
            .unwrap();
        store.flush().unwrap();
        // Reads back through the front.
        let rec = store.get(Keyspace::Account, b"account").unwrap().unwrap();
        assert_eq!(
            Account::from_record(&rec).unwrap().user_id(),
            account.user_id()
        );
    }
    std::fs::write(dir.path().join("keyfile"), kf.to_json().unwrap()).unwrap();
    for needle in [
        &b"wonderlandalice"[..],
        b"Alice Pleasance Liddell",
        b"alice.liddell@example.org",
        user_text.as_bytes(),
        account.user_id().as_bytes(),
    ] {
        let hits = files_contain(dir.path(), needle);
        assert!(
            hits.is_empty(),
            "{:?} found in {hits:?}",
            String::from_utf8_lossy(needle)
        );
    }
    // And reopening with the unwrapped key reads it all again.
    let kf =
        KeyFile::from_json(&std::fs::read_to_string(dir.path().join("keyfile")).unwrap()).unwrap();
    let key = kf
        .unwrap_key(&Passphrase::new("a long passphrase"))
        .unwrap();
    let sled = SledStore::open(dir.path().join("db"), &Config::default()).unwrap();
    let store = EncryptedStore::new(sled, StoreCipher::new(&key));
    assert_eq!(
        store
            .get(Keyspace::Contacts, account.user_id().as_bytes())
            .unwrap()
            .unwrap()
            .as_slice(),
        b"wonderlandalice"
    );
}
