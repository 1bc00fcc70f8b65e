//! The model-based check: random operation sequences applied to a backend
//! and to a `BTreeMap` must give the same answers.
//!
//! [`check`] runs one sequence and panics at the first difference, naming
//! the step; [`actions`] (feature `model`) is the `proptest` strategy that
//! makes the sequences, so that a failure shrinks to a short one. A backend
//! runs it as
//!
//! ```ignore
//! proptest::proptest! {
//!     #[test]
//!     fn my_store_matches_model(actions in safemeet_store::conformance::model::actions(60)) {
//!         safemeet_store::conformance::model::check(&MyStore::new(), actions);
//!     }
//! }
//! ```

// A test suite: a panic here is a failed check, so unwrap is the point.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use std::collections::BTreeMap;

use crate::{Batch, Entry, Keyspace, Store};

/// The keyspaces the model uses: three, so that isolation is exercised
/// without diluting the collisions within one.
pub const SPACES: [Keyspace; 3] = [Keyspace::Timeline, Keyspace::Outbox, Keyspace::EventLog];

/// One step. Keyspaces are indexes into [`SPACES`].
#[derive(Debug, Clone)]
pub enum Action {
    /// A single put.
    Put(usize, Vec<u8>, Vec<u8>),
    /// A single delete.
    Delete(usize, Vec<u8>),
    /// A batch: `Some(value)` puts, `None` deletes.
    Batch(Vec<(usize, Vec<u8>, Option<Vec<u8>>)>),
    /// A get, compared with the model.
    Get(usize, Vec<u8>),
    /// A scan (prefix, after, limit), compared with the model.
    Scan(usize, Vec<u8>, Option<Vec<u8>>, usize),
}

/// Applies `actions` to `store` (which must start empty) and to a
/// `BTreeMap`; panics when an answer or the final contents differ.
pub fn check(store: &dyn Store, actions: Vec<Action>) {
    let mut model: BTreeMap<(usize, Vec<u8>), Vec<u8>> = BTreeMap::new();
    for (step, a) in actions.into_iter().enumerate() {
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
                let want = model.get(&(s, k.clone())).cloned();
                assert_eq!(
                    store.get(SPACES[s], &k).unwrap(),
                    want,
                    "step {step}: get {k:?}"
                );
            }
            Action::Scan(s, prefix, after, limit) => {
                let got = store
                    .scan(SPACES[s], &prefix, after.as_deref(), limit)
                    .unwrap();
                let want: Vec<Entry> = model
                    .iter()
                    .filter(|((ms, k), _)| {
                        *ms == s && k.starts_with(&prefix) && after.as_ref().is_none_or(|a| k > a)
                    })
                    .take(limit)
                    .map(|((_, k), v)| (k.clone(), v.clone()))
                    .collect();
                assert_eq!(got, want, "step {step}: scan {prefix:?} after {after:?}");
            }
        }
    }
    // Final state matches in full.
    for (s, space) in SPACES.iter().enumerate() {
        let got = store.scan(*space, b"", None, usize::MAX).unwrap();
        let want: Vec<Entry> = model
            .iter()
            .filter(|((ms, _), _)| *ms == s)
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect();
        assert_eq!(got, want, "final contents of {space:?}");
    }
}

#[cfg(any(test, feature = "model"))]
mod strategy {
    use proptest::prelude::*;

    use super::{Action, SPACES};

    fn key() -> impl Strategy<Value = Vec<u8>> {
        // Few distinct bytes so that keys collide and share prefixes often.
        proptest::collection::vec(0u8..4, 0..4)
    }

    fn ks() -> impl Strategy<Value = usize> {
        0..SPACES.len()
    }

    fn value() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 0..8)
    }

    fn action() -> impl Strategy<Value = Action> {
        prop_oneof![
            (ks(), key(), value()).prop_map(|(s, k, v)| Action::Put(s, k, v)),
            (ks(), key()).prop_map(|(s, k)| Action::Delete(s, k)),
            proptest::collection::vec((ks(), key(), proptest::option::of(value())), 0..6)
                .prop_map(Action::Batch),
            (ks(), key()).prop_map(|(s, k)| Action::Get(s, k)),
            (ks(), key(), proptest::option::of(key()), 0..6usize)
                .prop_map(|(s, p, a, l)| Action::Scan(s, p, a, l)),
        ]
    }

    /// Sequences of up to `max` actions for [`check`](super::check).
    pub fn actions(max: usize) -> impl Strategy<Value = Vec<Action>> {
        proptest::collection::vec(action(), 0..max)
    }
}

#[cfg(any(test, feature = "model"))]
pub use strategy::actions;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryStore;

    proptest::proptest! {
        #[test]
        fn memory_store_matches_model(actions in actions(60)) {
            check(&MemoryStore::new(), actions);
        }
    }
}
