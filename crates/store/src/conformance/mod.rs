//! The conformance suite every [`Store`] backend must pass.
//!
//! Backends call [`run_all`] from their tests with a factory for fresh,
//! empty stores, and run the [`model`] check. Each check panics with a
//! message naming the property that failed. The suite lives in the library
//! (not under `tests/`) so that backends in other crates
//! (`safemeet-store-sled`) run exactly the same checks.

// A test suite: a panic here is a failed check, so unwrap is the point.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

pub mod model;

use crate::migrate::{self, Migration};
use crate::{Batch, Error, Keyspace, Store};

/// One named check.
type Check = (&'static str, fn(&dyn Store));

/// Runs every check, each on a fresh store from `fresh`.
pub fn run_all(fresh: &dyn Fn() -> Box<dyn Store>) {
    let checks: &[Check] = &[
        ("get_missing_is_none", get_missing_is_none),
        ("put_then_get", put_then_get),
        ("overwrite_and_delete", overwrite_and_delete),
        ("keyspaces_are_isolated", keyspaces_are_isolated),
        ("empty_and_large_values", empty_and_large_values),
        ("batch_applies_all_in_order", batch_applies_all_in_order),
        ("scan_is_ordered_and_bounded", scan_is_ordered_and_bounded),
        ("scan_after_pages_through", scan_after_pages_through),
        ("flush_succeeds", flush_succeeds),
        ("migrations_run_in_order", migrations_run_in_order),
        ("newer_schema_is_refused", newer_schema_is_refused),
        ("unversioned_data_is_refused", unversioned_data_is_refused),
    ];
    for (name, check) in checks {
        let store = fresh();
        tracing::debug!(check = name, "store conformance");
        check(store.as_ref());
    }
}

/// A missing key reads as `None`, in every keyspace.
pub fn get_missing_is_none(s: &dyn Store) {
    for ks in Keyspace::ALL {
        assert_eq!(s.get(ks, b"nope").unwrap(), None, "missing key in {ks:?}");
    }
}

/// A put is visible to the next get.
pub fn put_then_get(s: &dyn Store) {
    s.put(Keyspace::Contacts, b"k", b"v").unwrap();
    assert_eq!(
        s.get(Keyspace::Contacts, b"k").unwrap().as_deref(),
        Some(&b"v"[..])
    );
}

/// A second put replaces the value; delete removes it; deleting again is fine.
pub fn overwrite_and_delete(s: &dyn Store) {
    s.put(Keyspace::Rooms, b"k", b"one").unwrap();
    s.put(Keyspace::Rooms, b"k", b"two").unwrap();
    assert_eq!(
        s.get(Keyspace::Rooms, b"k").unwrap().as_deref(),
        Some(&b"two"[..])
    );
    s.delete(Keyspace::Rooms, b"k").unwrap();
    assert_eq!(s.get(Keyspace::Rooms, b"k").unwrap(), None);
    s.delete(Keyspace::Rooms, b"k").unwrap();
}

/// The same key in two keyspaces holds two values; scans stay in their keyspace.
pub fn keyspaces_are_isolated(s: &dyn Store) {
    for ks in Keyspace::ALL {
        s.put(ks, b"same", ks.name().as_bytes()).unwrap();
    }
    for ks in Keyspace::ALL {
        assert_eq!(
            s.get(ks, b"same").unwrap().as_deref(),
            Some(ks.name().as_bytes())
        );
        let all = s.scan(ks, b"", None, 100).unwrap();
        let own: Vec<_> = all.iter().filter(|(k, _)| k == b"same").collect();
        assert_eq!(own.len(), 1, "scan of {ks:?} left its keyspace");
    }
    s.delete(Keyspace::Timeline, b"same").unwrap();
    assert_eq!(s.get(Keyspace::Timeline, b"same").unwrap(), None);
    assert!(s.get(Keyspace::Outbox, b"same").unwrap().is_some());
}

/// Empty keys and values and 60 KiB values are stored exactly.
pub fn empty_and_large_values(s: &dyn Store) {
    s.put(Keyspace::Outbox, b"", b"empty key").unwrap();
    s.put(Keyspace::Outbox, b"e", b"").unwrap();
    let big: Vec<u8> = (0..60 * 1024).map(|i| (i % 251) as u8).collect();
    s.put(Keyspace::Outbox, b"big", &big).unwrap();
    assert_eq!(
        s.get(Keyspace::Outbox, b"").unwrap().as_deref(),
        Some(&b"empty key"[..])
    );
    assert_eq!(
        s.get(Keyspace::Outbox, b"e").unwrap().as_deref(),
        Some(&b""[..])
    );
    assert_eq!(s.get(Keyspace::Outbox, b"big").unwrap(), Some(big));
}

/// A batch across keyspaces applies every op, later ops winning.
pub fn batch_applies_all_in_order(s: &dyn Store) {
    s.put(Keyspace::Outbox, b"gone", b"x").unwrap();
    let mut b = Batch::new();
    b.put(Keyspace::Outbox, b"a", b"1")
        .put(Keyspace::CryptoSessions, b"ratchet", b"2")
        .put(Keyspace::Outbox, b"a", b"3")
        .delete(Keyspace::Outbox, b"gone")
        .put(Keyspace::SeenMegolmIndexes, b"s1", b"")
        .delete(Keyspace::EventLog, b"never-there");
    s.apply(b).unwrap();
    assert_eq!(
        s.get(Keyspace::Outbox, b"a").unwrap().as_deref(),
        Some(&b"3"[..])
    );
    assert_eq!(
        s.get(Keyspace::CryptoSessions, b"ratchet")
            .unwrap()
            .as_deref(),
        Some(&b"2"[..])
    );
    assert_eq!(s.get(Keyspace::Outbox, b"gone").unwrap(), None);
    assert_eq!(
        s.get(Keyspace::SeenMegolmIndexes, b"s1")
            .unwrap()
            .as_deref(),
        Some(&b""[..])
    );
    s.apply(Batch::new()).unwrap();
}

/// Scans return only the prefix, in byte order, at most `limit` entries.
pub fn scan_is_ordered_and_bounded(s: &dyn Store) {
    for k in [
        &b"room1/003"[..],
        b"room1/001",
        b"room2/001",
        b"room1/002",
        b"room",
        b"room1",
    ] {
        s.put(Keyspace::Timeline, k, k).unwrap();
    }
    let got: Vec<Vec<u8>> = s
        .scan(Keyspace::Timeline, b"room1/", None, 10)
        .unwrap()
        .into_iter()
        .map(|(k, v)| {
            assert_eq!(k, v);
            k
        })
        .collect();
    assert_eq!(
        got,
        vec![
            b"room1/001".to_vec(),
            b"room1/002".to_vec(),
            b"room1/003".to_vec()
        ]
    );
    assert_eq!(
        s.scan(Keyspace::Timeline, b"room1/", None, 2)
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        s.scan(Keyspace::Timeline, b"room1/", None, 0)
            .unwrap()
            .len(),
        0
    );
    assert_eq!(s.scan(Keyspace::Timeline, b"", None, 100).unwrap().len(), 6);
    assert!(
        s.scan(Keyspace::Timeline, b"zzz", None, 10)
            .unwrap()
            .is_empty()
    );
    // 0xff bytes in keys sort last and still match their prefix.
    s.put(Keyspace::Timeline, &[0xff, 0xff], b"x").unwrap();
    assert_eq!(
        s.scan(Keyspace::Timeline, &[0xff], None, 10).unwrap().len(),
        1
    );
}

/// `after` resumes a scan strictly after a key, so pages never repeat.
pub fn scan_after_pages_through(s: &dyn Store) {
    for i in 0u32..25 {
        s.put(Keyspace::EventLog, &i.to_be_bytes(), b"e").unwrap();
    }
    let mut seen = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = s
            .scan(Keyspace::EventLog, b"", after.as_deref(), 7)
            .unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().map(|(k, _)| k.clone());
        seen.extend(page.into_iter().map(|(k, _)| k));
    }
    let want: Vec<Vec<u8>> = (0u32..25).map(|i| i.to_be_bytes().to_vec()).collect();
    assert_eq!(seen, want);
}

/// `flush` succeeds and leaves data readable.
pub fn flush_succeeds(s: &dyn Store) {
    s.put(Keyspace::Account, b"a", b"b").unwrap();
    s.flush().unwrap();
    assert_eq!(
        s.get(Keyspace::Account, b"a").unwrap().as_deref(),
        Some(&b"b"[..])
    );
}

fn step0(s: &dyn Store, b: &mut Batch) -> crate::Result<()> {
    assert!(s.get(Keyspace::Contacts, b"v1-done").unwrap().is_none());
    b.put(Keyspace::Contacts, b"v1-done", b"");
    Ok(())
}

fn step1(s: &dyn Store, b: &mut Batch) -> crate::Result<()> {
    assert!(s.get(Keyspace::Contacts, b"v1-done").unwrap().is_some());
    b.put(Keyspace::Contacts, b"v2-done", b"");
    Ok(())
}

/// A fresh store is stamped; an old one runs each step once, in order.
pub fn migrations_run_in_order(s: &dyn Store) {
    let steps = [
        Migration {
            from: 1,
            run: step1,
        },
        Migration {
            from: 0,
            run: step0,
        },
    ];
    assert_eq!(migrate::migrate(s, 0, &steps).unwrap(), None);
    assert_eq!(migrate::schema_version(s).unwrap(), Some(0));
    assert_eq!(migrate::migrate(s, 2, &steps).unwrap(), Some(0));
    assert_eq!(migrate::schema_version(s).unwrap(), Some(2));
    assert!(s.get(Keyspace::Contacts, b"v2-done").unwrap().is_some());
    // Already current: nothing runs (step0 would panic on a second run).
    assert_eq!(migrate::migrate(s, 2, &steps).unwrap(), Some(2));
    // A gap in the steps is an error, not a silent skip.
    assert!(matches!(
        migrate::migrate(s, 3, &steps),
        Err(Error::Migration { from: 2, .. })
    ));
}

/// A store written by a newer build is refused.
pub fn newer_schema_is_refused(s: &dyn Store) {
    migrate::migrate(s, 5, &[]).unwrap();
    assert!(matches!(
        migrate::migrate(s, 4, &[]),
        Err(Error::SchemaTooNew {
            found: 5,
            supported: 4
        })
    ));
}

/// A store with data but no schema version is not silently stamped.
pub fn unversioned_data_is_refused(s: &dyn Store) {
    s.put(Keyspace::Rooms, b"r", b"x").unwrap();
    assert!(matches!(
        migrate::migrate(s, 1, &[]),
        Err(Error::Corrupt(_))
    ));
    assert_eq!(migrate::schema_version(s).unwrap(), None);
}
