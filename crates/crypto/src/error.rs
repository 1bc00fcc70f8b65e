//! The crypto crate's error type.

use safemeet_proto::{DecodeError, DeviceId, EncodeError, UserId};
use safemeet_store::StoreError;

/// What went wrong. Each verification failure has its own variant so callers
/// (and tests) can tell a forgery from a stale record from a mix-up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A signature does not verify under the key it claims.
    #[error("bad signature on {what}")]
    BadSignature {
        /// Which record.
        what: &'static str,
    },
    /// The record belongs to a different user than expected.
    #[error("{what} is for user {found}, expected {expected}")]
    UserMismatch {
        /// Which record.
        what: &'static str,
        /// The user the caller asked about.
        expected: UserId,
        /// The user the record names.
        found: UserId,
    },
    /// A device id does not match the key it must be derived from.
    #[error("device id {found} does not match its Ed25519 key (expected {expected})")]
    DeviceIdMismatch {
        /// Derived from the key.
        expected: DeviceId,
        /// Claimed by the certificate.
        found: DeviceId,
    },
    /// A record names a peer id that is not a valid libp2p peer id.
    #[error("device certificate carries an invalid peer id")]
    InvalidPeerId,
    /// A public key is not a valid point.
    #[error("invalid {what} key")]
    InvalidKey {
        /// Which key.
        what: &'static str,
    },
    /// A record in a format version this build does not know.
    #[error("{what} has unsupported version {version}")]
    UnsupportedVersion {
        /// Which record.
        what: &'static str,
        /// The version found.
        version: u8,
    },
    /// Older than a version already accepted.
    #[error("{what} version {got} is older than the accepted version {seen}")]
    StaleVersion {
        /// Which record.
        what: &'static str,
        /// Counter already accepted.
        seen: u64,
        /// Counter offered.
        got: u64,
    },
    /// Same counter as the accepted version but different content.
    #[error("{what} version {counter} conflicts with the accepted record of the same version")]
    ConflictingVersion {
        /// Which record.
        what: &'static str,
        /// The counter both carry.
        counter: u64,
    },
    /// A record is internally inconsistent (duplicate entries, missing self).
    #[error("invalid {what}: {reason}")]
    InvalidRecord {
        /// Which record.
        what: &'static str,
        /// Why.
        reason: &'static str,
    },
    /// The passphrase does not unlock the key file.
    #[error("wrong passphrase")]
    WrongPassphrase,
    /// The key file is malformed or uses parameters out of bounds.
    #[error("invalid key file: {0}")]
    InvalidKeyFile(&'static str),
    /// A stored value failed authentication: corrupted, or moved from another key.
    #[error("stored value in {keyspace} failed authentication")]
    SealedValue {
        /// Keyspace name.
        keyspace: &'static str,
    },
    /// Key derivation failed.
    #[error("key derivation failed: {0}")]
    Kdf(String),
    /// Bytes could not be decoded.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A value could not be encoded.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The underlying store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}
