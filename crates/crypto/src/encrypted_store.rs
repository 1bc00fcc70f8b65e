//! A [`Store`] front that seals every value and hides every key name.
//!
//! Callers name records by an *identifier* (a user id, a room id, a session
//! id: anything that would reveal something), never by a raw key. Two
//! shapes of record exist:
//!
//! - **point** records: stored key = keyed hash of (keyspace, identifier);
//! - **ordered** records (timeline, outbox, event log): stored key = the
//!   first 16 bytes of the keyed hash of the identifier, then a big-endian
//!   sequence number, so records of one identifier scan in order while the
//!   identifier stays hidden.
//!
//! What the backend still learns: which keyspace a record is in, how many
//! records share one (hidden) identifier and their order, value lengths, and
//! when records are written and deleted. Point and ordered names are hashed
//! with different domains, so they never collide.
//!
//! Values are sealed with [`StoreCipher`] bound to the stored key, so the
//! backend sees neither names nor contents. [`Keyspace::Meta`] is not
//! available here: it holds only the backend's own bookkeeping, in clear.

use std::sync::Arc;

use safemeet_store::{Batch, Keyspace, Store};
use zeroize::Zeroizing;

use crate::Error;
use crate::at_rest::{NameKind, StoreCipher};

/// Bytes of the identifier hash in front of an ordered record's sequence number.
const ORDERED_PREFIX_LEN: usize = 16;

/// An ordered record: its sequence number and its opened value.
pub type OrderedRecord = (u64, Zeroizing<Vec<u8>>);

/// A point record's name, hashed once so a caller that writes the same
/// record often need not hash it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PointName {
    keyspace: Keyspace,
    key: Vec<u8>,
}

/// The hashed prefix of an ordered record name (see [`PointName`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderedName {
    keyspace: Keyspace,
    prefix: Vec<u8>,
}

/// An encrypting front for a [`Store`]. Cloning shares the store and keys.
#[derive(Debug)]
pub struct EncryptedStore<S> {
    inner: S,
    cipher: Arc<StoreCipher>,
}

impl<S: Clone> Clone for EncryptedStore<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            cipher: self.cipher.clone(),
        }
    }
}

/// Writes for an [`EncryptedStore`], sealed as they are added and applied
/// atomically by [`EncryptedStore::apply`].
#[derive(Debug, Default)]
pub struct EncryptedBatch {
    batch: Batch,
}

impl EncryptedBatch {
    /// Number of writes.
    pub fn len(&self) -> usize {
        self.batch.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.batch.is_empty()
    }

    /// Appends the writes of `other` (applied after this batch's own).
    pub fn extend(&mut self, other: EncryptedBatch) {
        self.batch.extend(other.batch);
    }
}

fn check_keyspace(keyspace: Keyspace) -> Result<(), Error> {
    if keyspace == Keyspace::Meta {
        return Err(Error::InvalidRecord {
            what: "encrypted record",
            reason: "the meta keyspace is not encrypted",
        });
    }
    Ok(())
}

/// One record of [`EncryptedStore::dump`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpedRecord {
    /// Its keyspace.
    pub keyspace: Keyspace,
    /// Its stored key (hashed names, as on disk).
    pub key: Vec<u8>,
    /// Its value, opened.
    pub value: Zeroizing<Vec<u8>>,
}

impl<S: Store> EncryptedStore<S> {
    /// Wraps `inner`; everything written through this front is sealed by `cipher`.
    pub fn new(inner: S, cipher: StoreCipher) -> Self {
        Self {
            inner,
            cipher: Arc::new(cipher),
        }
    }

    /// The backend (for flushing, metadata and migrations).
    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn point_key(&self, keyspace: Keyspace, id: &[u8]) -> Vec<u8> {
        self.cipher
            .hash_name(keyspace, NameKind::Point, id)
            .to_vec()
    }

    fn ordered_prefix(&self, keyspace: Keyspace, id: &[u8]) -> Vec<u8> {
        self.cipher.hash_name(keyspace, NameKind::Ordered, id)[..ORDERED_PREFIX_LEN].to_vec()
    }

    fn ordered_key(&self, keyspace: Keyspace, id: &[u8], seq: u64) -> Vec<u8> {
        let mut k = self.ordered_prefix(keyspace, id);
        k.extend_from_slice(&seq.to_be_bytes());
        k
    }

    fn open(
        &self,
        keyspace: Keyspace,
        key: &[u8],
        sealed: Option<Vec<u8>>,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, Error> {
        sealed
            .map(|v| self.cipher.open(keyspace, key, &v))
            .transpose()
    }

    /// Reads the point record `id`.
    pub fn get(&self, keyspace: Keyspace, id: &[u8]) -> Result<Option<Zeroizing<Vec<u8>>>, Error> {
        check_keyspace(keyspace)?;
        let key = self.point_key(keyspace, id);
        let sealed = self.inner.get(keyspace, &key)?;
        self.open(keyspace, &key, sealed)
    }

    /// The hashed name of point record `id`.
    pub fn point_name(&self, keyspace: Keyspace, id: &[u8]) -> Result<PointName, Error> {
        check_keyspace(keyspace)?;
        Ok(PointName {
            keyspace,
            key: self.point_key(keyspace, id),
        })
    }

    /// The hashed prefix of the ordered records of `id`.
    pub fn ordered_name(&self, keyspace: Keyspace, id: &[u8]) -> Result<OrderedName, Error> {
        check_keyspace(keyspace)?;
        Ok(OrderedName {
            keyspace,
            prefix: self.ordered_prefix(keyspace, id),
        })
    }

    /// [`batch_put_value`](Self::batch_put_value) under an already hashed name.
    pub fn batch_put_value_at<T: serde::Serialize + ?Sized>(
        &self,
        batch: &mut EncryptedBatch,
        name: &PointName,
        value: &T,
        max: usize,
    ) -> Result<(), Error> {
        let sealed = self
            .cipher
            .seal_value(name.keyspace, &name.key, value, max)?;
        batch
            .batch
            .put_owned(name.keyspace, name.key.clone(), sealed);
        Ok(())
    }

    /// [`batch_put_ordered_value`](Self::batch_put_ordered_value) under an
    /// already hashed name.
    pub fn batch_put_ordered_value_at<T: serde::Serialize + ?Sized>(
        &self,
        batch: &mut EncryptedBatch,
        name: &OrderedName,
        seq: u64,
        value: &T,
        max: usize,
    ) -> Result<(), Error> {
        let mut key = Vec::with_capacity(name.prefix.len() + 8);
        key.extend_from_slice(&name.prefix);
        key.extend_from_slice(&seq.to_be_bytes());
        let sealed = self.cipher.seal_value(name.keyspace, &key, value, max)?;
        batch.batch.put_owned(name.keyspace, key, sealed);
        Ok(())
    }

    /// Writes the point record `id` (a batch of one).
    pub fn put(&self, keyspace: Keyspace, id: &[u8], value: &[u8]) -> Result<(), Error> {
        check_keyspace(keyspace)?;
        let key = self.point_key(keyspace, id);
        let sealed = self.cipher.seal(keyspace, &key, value)?;
        Ok(self.inner.put(keyspace, &key, &sealed)?)
    }

    /// Deletes the point record `id`.
    pub fn delete(&self, keyspace: Keyspace, id: &[u8]) -> Result<(), Error> {
        check_keyspace(keyspace)?;
        Ok(self.inner.delete(keyspace, &self.point_key(keyspace, id))?)
    }

    /// Reads ordered record `seq` of `id`.
    pub fn get_ordered(
        &self,
        keyspace: Keyspace,
        id: &[u8],
        seq: u64,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, Error> {
        check_keyspace(keyspace)?;
        let key = self.ordered_key(keyspace, id, seq);
        let sealed = self.inner.get(keyspace, &key)?;
        self.open(keyspace, &key, sealed)
    }

    /// Up to `limit` ordered records of `id` with sequence numbers after
    /// `after` (from the start when `None`), in ascending order.
    pub fn scan_ordered(
        &self,
        keyspace: Keyspace,
        id: &[u8],
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<OrderedRecord>, Error> {
        check_keyspace(keyspace)?;
        let prefix = self.ordered_prefix(keyspace, id);
        let after_key = after.map(|a| self.ordered_key(keyspace, id, a));
        let entries = self
            .inner
            .scan(keyspace, &prefix, after_key.as_deref(), limit)?;
        entries
            .into_iter()
            .map(|(key, sealed)| {
                let seq_bytes: [u8; 8] = key
                    .get(ORDERED_PREFIX_LEN..)
                    .and_then(|s| s.try_into().ok())
                    .ok_or(Error::SealedValue {
                        keyspace: keyspace.name(),
                    })?;
                let value = self.cipher.open(keyspace, &key, &sealed)?;
                Ok((u64::from_be_bytes(seq_bytes), value))
            })
            .collect()
    }

    /// Every record of every encrypted keyspace, opened: keyspace, stored
    /// (hashed) key and plaintext (for the replay table, its tag), in
    /// keyspace and key order. For tests and
    /// audits that check what a store holds; it reads everything at once.
    pub fn dump(&self) -> Result<Vec<DumpedRecord>, Error> {
        const PAGE: usize = 1024;
        let mut out = Vec::new();
        for keyspace in Keyspace::ALL.iter().copied() {
            if keyspace == Keyspace::Meta {
                continue;
            }
            let mut after: Option<Vec<u8>> = None;
            loop {
                let page = self.inner.scan(keyspace, &[], after.as_deref(), PAGE)?;
                let done = page.len() < PAGE;
                for (key, sealed) in page {
                    // The replay table holds tags (keyed hashes), not
                    // sealed values: they are given as stored.
                    let value = if keyspace == Keyspace::SeenMegolmIndexes {
                        Zeroizing::new(sealed)
                    } else {
                        self.cipher.open(keyspace, &key, &sealed)?
                    };
                    after = Some(key.clone());
                    out.push(DumpedRecord {
                        keyspace,
                        key,
                        value,
                    });
                }
                if done {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// An empty batch.
    pub fn batch(&self) -> EncryptedBatch {
        EncryptedBatch::default()
    }

    /// Adds a sealed point write to `batch`.
    pub fn batch_put(
        &self,
        batch: &mut EncryptedBatch,
        keyspace: Keyspace,
        id: &[u8],
        value: &[u8],
    ) -> Result<(), Error> {
        check_keyspace(keyspace)?;
        let key = self.point_key(keyspace, id);
        let sealed = self.cipher.seal(keyspace, &key, value)?;
        batch.batch.put_owned(keyspace, key, sealed);
        Ok(())
    }

    /// Adds a sealed point write of `value`'s codec encoding to `batch`,
    /// encoded straight into the sealed buffer (see [`StoreCipher::seal_value`]).
    pub fn batch_put_value<T: serde::Serialize + ?Sized>(
        &self,
        batch: &mut EncryptedBatch,
        keyspace: Keyspace,
        id: &[u8],
        value: &T,
        max: usize,
    ) -> Result<(), Error> {
        check_keyspace(keyspace)?;
        let key = self.point_key(keyspace, id);
        let sealed = self.cipher.seal_value(keyspace, &key, value, max)?;
        batch.batch.put_owned(keyspace, key, sealed);
        Ok(())
    }

    /// [`batch_put_value`](Self::batch_put_value) for an ordered record.
    pub fn batch_put_ordered_value<T: serde::Serialize + ?Sized>(
        &self,
        batch: &mut EncryptedBatch,
        keyspace: Keyspace,
        id: &[u8],
        seq: u64,
        value: &T,
        max: usize,
    ) -> Result<(), Error> {
        check_keyspace(keyspace)?;
        let key = self.ordered_key(keyspace, id, seq);
        let sealed = self.cipher.seal_value(keyspace, &key, value, max)?;
        batch.batch.put_owned(keyspace, key, sealed);
        Ok(())
    }

    /// Adds a sealed ordered write to `batch`.
    pub fn batch_put_ordered(
        &self,
        batch: &mut EncryptedBatch,
        keyspace: Keyspace,
        id: &[u8],
        seq: u64,
        value: &[u8],
    ) -> Result<(), Error> {
        check_keyspace(keyspace)?;
        let key = self.ordered_key(keyspace, id, seq);
        let sealed = self.cipher.seal(keyspace, &key, value)?;
        batch.batch.put_owned(keyspace, key, sealed);
        Ok(())
    }

    /// Adds a *tag* to `batch`: a point record whose value is the keyed hash
    /// of `content` rather than a sealed copy of it. Tags mark that
    /// something was seen (the replay table): the stored bytes reveal
    /// nothing without the data key, and no encryption is needed to keep
    /// them so. Read them back with [`EncryptedStore::tag_matches`].
    pub fn batch_put_tag(
        &self,
        batch: &mut EncryptedBatch,
        keyspace: Keyspace,
        id: &[u8],
        content: &[u8],
    ) -> Result<(), Error> {
        check_keyspace(keyspace)?;
        let key = self.point_key(keyspace, id);
        let value = self.cipher.hash_name(keyspace, NameKind::TagValue, content);
        batch.batch.put_owned(keyspace, key, value.to_vec());
        Ok(())
    }

    /// Whether tag `id` exists, and if so whether it was made from `content`.
    pub fn tag_matches(
        &self,
        keyspace: Keyspace,
        id: &[u8],
        content: &[u8],
    ) -> Result<Option<bool>, Error> {
        self.tag_matches_at(&self.point_name(keyspace, id)?, content)
    }

    /// [`tag_matches`](Self::tag_matches) under an already hashed name.
    pub fn tag_matches_at(&self, name: &PointName, content: &[u8]) -> Result<Option<bool>, Error> {
        Ok(self.inner.get(name.keyspace, &name.key)?.map(|stored| {
            stored.as_slice()
                == self
                    .cipher
                    .hash_name(name.keyspace, NameKind::TagValue, content)
        }))
    }

    /// [`batch_put_tag`](Self::batch_put_tag) under an already hashed name.
    pub fn batch_put_tag_at(&self, batch: &mut EncryptedBatch, name: &PointName, content: &[u8]) {
        let value = self
            .cipher
            .hash_name(name.keyspace, NameKind::TagValue, content);
        batch
            .batch
            .put_owned(name.keyspace, name.key.clone(), value.to_vec());
    }

    /// Adds a point delete to `batch`.
    pub fn batch_delete(
        &self,
        batch: &mut EncryptedBatch,
        keyspace: Keyspace,
        id: &[u8],
    ) -> Result<(), Error> {
        check_keyspace(keyspace)?;
        batch.batch.delete(keyspace, &self.point_key(keyspace, id));
        Ok(())
    }

    /// Adds an ordered delete to `batch`.
    pub fn batch_delete_ordered(
        &self,
        batch: &mut EncryptedBatch,
        keyspace: Keyspace,
        id: &[u8],
        seq: u64,
    ) -> Result<(), Error> {
        check_keyspace(keyspace)?;
        batch
            .batch
            .delete(keyspace, &self.ordered_key(keyspace, id, seq));
        Ok(())
    }

    /// Applies `batch` atomically.
    pub fn apply(&self, batch: EncryptedBatch) -> Result<(), Error> {
        Ok(self.inner.apply(batch.batch)?)
    }

    /// Makes applied writes durable (see [`Store::flush`]).
    pub fn flush(&self) -> Result<(), Error> {
        Ok(self.inner.flush()?)
    }

    /// Makes applied writes durable against a crash of the machine (see
    /// [`Store::sync`]).
    pub fn sync(&self) -> Result<(), Error> {
        Ok(self.inner.sync()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::at_rest::DataKey;
    use safemeet_store::MemoryStore;

    fn store() -> (EncryptedStore<MemoryStore>, MemoryStore) {
        let raw = MemoryStore::new();
        (
            EncryptedStore::new(raw.clone(), StoreCipher::new(&DataKey::generate())),
            raw,
        )
    }

    #[test]
    fn point_records_round_trip_and_hide_names() {
        let (s, raw) = store();
        s.put(Keyspace::Contacts, b"alice", b"Alice Liddell")
            .unwrap();
        assert_eq!(
            s.get(Keyspace::Contacts, b"alice")
                .unwrap()
                .unwrap()
                .as_slice(),
            b"Alice Liddell"
        );
        assert!(s.get(Keyspace::Contacts, b"bob").unwrap().is_none());
        let all = raw.scan(Keyspace::Contacts, b"", None, 10).unwrap();
        assert_eq!(all.len(), 1);
        let (k, v) = &all[0];
        assert_eq!(k.len(), 32);
        for needle in [&b"alice"[..], b"Alice", b"Liddell"] {
            assert!(!k.windows(needle.len()).any(|w| w == needle));
            assert!(!v.windows(needle.len()).any(|w| w == needle));
        }
        s.delete(Keyspace::Contacts, b"alice").unwrap();
        assert!(s.get(Keyspace::Contacts, b"alice").unwrap().is_none());
    }

    #[test]
    fn ordered_records_scan_in_order_per_identifier() {
        let (s, _) = store();
        let mut b = s.batch();
        for seq in [5u64, 1, 300, 2] {
            s.batch_put_ordered(
                &mut b,
                Keyspace::Timeline,
                b"room-a",
                seq,
                &seq.to_be_bytes(),
            )
            .unwrap();
        }
        s.batch_put_ordered(&mut b, Keyspace::Timeline, b"room-b", 3, b"other")
            .unwrap();
        s.apply(b).unwrap();
        let got: Vec<u64> = s
            .scan_ordered(Keyspace::Timeline, b"room-a", None, 10)
            .unwrap()
            .into_iter()
            .map(|(q, _)| q)
            .collect();
        assert_eq!(got, vec![1, 2, 5, 300]);
        let page: Vec<u64> = s
            .scan_ordered(Keyspace::Timeline, b"room-a", Some(2), 2)
            .unwrap()
            .into_iter()
            .map(|(q, _)| q)
            .collect();
        assert_eq!(page, vec![5, 300]);
        assert_eq!(
            s.get_ordered(Keyspace::Timeline, b"room-b", 3)
                .unwrap()
                .unwrap()
                .as_slice(),
            b"other"
        );
        let mut b = s.batch();
        s.batch_delete_ordered(&mut b, Keyspace::Timeline, b"room-a", 5)
            .unwrap();
        s.apply(b).unwrap();
        assert!(
            s.get_ordered(Keyspace::Timeline, b"room-a", 5)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn point_and_ordered_records_of_one_id_do_not_mix() {
        let (s, _) = store();
        s.put(Keyspace::Timeline, b"room", b"settings").unwrap();
        let mut b = s.batch();
        s.batch_put_ordered(&mut b, Keyspace::Timeline, b"room", 1, b"event")
            .unwrap();
        s.apply(b).unwrap();
        let got = s
            .scan_ordered(Keyspace::Timeline, b"room", None, 10)
            .unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1.as_slice(), b"event");
        assert_eq!(
            s.get(Keyspace::Timeline, b"room")
                .unwrap()
                .unwrap()
                .as_slice(),
            b"settings"
        );
    }

    #[test]
    fn swapped_values_fail_to_open() {
        let (s, raw) = store();
        s.put(Keyspace::Contacts, b"a", b"1").unwrap();
        s.put(Keyspace::Contacts, b"b", b"2").unwrap();
        let ka = s.point_key(Keyspace::Contacts, b"a");
        let kb = s.point_key(Keyspace::Contacts, b"b");
        let va = raw.get(Keyspace::Contacts, &ka).unwrap().unwrap();
        raw.put(Keyspace::Contacts, &kb, &va).unwrap();
        assert!(matches!(
            s.get(Keyspace::Contacts, b"b"),
            Err(Error::SealedValue { .. })
        ));
    }

    #[test]
    fn meta_is_refused() {
        let (s, _) = store();
        assert!(s.put(Keyspace::Meta, b"x", b"y").is_err());
    }
}
