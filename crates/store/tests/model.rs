//! Model-based test: random operation sequences applied to a backend and to
//! a `BTreeMap` must give the same answers.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::collections::BTreeMap;

use proptest::prelude::*;
use safemeet_store::{Batch, Keyspace, MemoryStore, SledConfig, SledStore, Store};

#[derive(Debug, Clone)]
enum Action {
    Put(usize, Vec<u8>, Vec<u8>),
    Delete(usize, Vec<u8>),
    Batch(Vec<(usize, Vec<u8>, Option<Vec<u8>>)>),
    Get(usize, Vec<u8>),
    Scan(usize, Vec<u8>, Option<Vec<u8>>, usize),
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    // Few distinct bytes so that keys collide and share prefixes often.
    proptest::collection::vec(0u8..4, 0..4)
}

fn ks() -> impl Strategy<Value = usize> {
    0..3usize
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        (ks(), key(), proptest::collection::vec(any::<u8>(), 0..8))
            .prop_map(|(s, k, v)| Action::Put(s, k, v)),
        (ks(), key()).prop_map(|(s, k)| Action::Delete(s, k)),
        proptest::collection::vec(
            (
                ks(),
                key(),
                proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8))
            ),
            0..6
        )
        .prop_map(Action::Batch),
        (ks(), key()).prop_map(|(s, k)| Action::Get(s, k)),
        (ks(), key(), proptest::option::of(key()), 0..6usize)
            .prop_map(|(s, p, a, l)| Action::Scan(s, p, a, l)),
    ]
}

const SPACES: [Keyspace; 3] = [Keyspace::Timeline, Keyspace::Outbox, Keyspace::EventLog];

fn check(store: &dyn Store, actions: Vec<Action>) -> Result<(), TestCaseError> {
    let mut model: BTreeMap<(usize, Vec<u8>), Vec<u8>> = BTreeMap::new();
    for a in actions {
        match a {
            Action::Put(s, k, v) => {
                store.put(SPACES[s], &k, &v).unwrap();
                model.insert((s, k), v);
            }
            Action::Delete(s, k) => {
                store.delete(SPACES[s], &k).unwrap();
                model.remove(&(s, k));
            }
            Action::Batch(ops) => {
                let mut b = Batch::new();
                for (s, k, v) in ops {
                    match v {
                        Some(v) => {
                            b.put(SPACES[s], &k, &v);
                            model.insert((s, k), v);
                        }
                        None => {
                            b.delete(SPACES[s], &k);
                            model.remove(&(s, k));
                        }
                    }
                }
                store.apply(b).unwrap();
            }
            Action::Get(s, k) => {
                prop_assert_eq!(
                    store.get(SPACES[s], &k).unwrap(),
                    model.get(&(s, k)).cloned()
                );
            }
            Action::Scan(s, prefix, after, limit) => {
                let got = store
                    .scan(SPACES[s], &prefix, after.as_deref(), limit)
                    .unwrap();
                let want: Vec<(Vec<u8>, Vec<u8>)> = model
                    .iter()
                    .filter(|((ms, k), _)| {
                        *ms == s && k.starts_with(&prefix) && after.as_ref().is_none_or(|a| k > a)
                    })
                    .take(limit)
                    .map(|((_, k), v)| (k.clone(), v.clone()))
                    .collect();
                prop_assert_eq!(got, want);
            }
        }
    }
    // Final state matches in full.
    for (s, space) in SPACES.iter().enumerate() {
        let got = store.scan(*space, b"", None, usize::MAX).unwrap();
        let want: Vec<_> = model
            .iter()
            .filter(|((ms, _), _)| *ms == s)
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect();
        prop_assert_eq!(got, want);
    }
    Ok(())
}

proptest! {
    #[test]
    fn memory_store_matches_model(actions in proptest::collection::vec(action(), 0..60)) {
        check(&MemoryStore::new(), actions)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn sled_store_matches_model(actions in proptest::collection::vec(action(), 0..60)) {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), &SledConfig::default()).unwrap();
        check(&store, actions)?;
    }
}
