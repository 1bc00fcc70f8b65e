//! Atomic write batches.

use crate::Keyspace;

/// One write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Set `key` to `value`.
    Put {
        /// Where.
        keyspace: Keyspace,
        /// Key.
        key: Vec<u8>,
        /// Value.
        value: Vec<u8>,
    },
    /// Remove `key`.
    Delete {
        /// Where.
        keyspace: Keyspace,
        /// Key.
        key: Vec<u8>,
    },
}

/// Writes that a [`Store`](crate::Store) applies all together or not at all,
/// in order (a later op on the same key wins).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    ops: Vec<Op>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a put.
    pub fn put(&mut self, keyspace: Keyspace, key: &[u8], value: &[u8]) -> &mut Self {
        self.ops.push(Op::Put {
            keyspace,
            key: key.to_vec(),
            value: value.to_vec(),
        });
        self
    }

    /// Adds a put of owned buffers (no copy).
    pub fn put_owned(&mut self, keyspace: Keyspace, key: Vec<u8>, value: Vec<u8>) -> &mut Self {
        self.ops.push(Op::Put {
            keyspace,
            key,
            value,
        });
        self
    }

    /// Adds a delete.
    pub fn delete(&mut self, keyspace: Keyspace, key: &[u8]) -> &mut Self {
        self.ops.push(Op::Delete {
            keyspace,
            key: key.to_vec(),
        });
        self
    }

    /// Appends all ops of `other`.
    pub fn extend(&mut self, other: Batch) -> &mut Self {
        self.ops.extend(other.ops);
        self
    }

    /// Number of ops.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// True when there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The ops, in order.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// Consumes the batch into its ops.
    pub fn into_ops(self) -> Vec<Op> {
        self.ops
    }
}
