//! The crypto crate's error type.

use safemeet_proto::{DecodeError, DeviceId, EncodeError, UserId};

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
    /// Only the device holding the user's master key can do this.
    #[error("this device does not hold the master key")]
    NoMasterKey,
    /// The device-link handshake or channel failed: a wrong secret, a
    /// damaged or reordered message, or a message too large.
    #[error("device link: {0}")]
    Link(&'static str),
    /// The store holds no account.
    #[error("the store holds no account")]
    NoAccount,
    /// An earlier store write failed; the machine must be reopened.
    #[error("an earlier store write failed; reopen the store")]
    Poisoned,
    /// The machine was closed.
    #[error("the crypto machine is closed")]
    Closed,
    /// No Olm session with the device: claim one of its one-time keys first.
    #[error("no Olm session with device {device}")]
    NoOlmSession {
        /// The device.
        device: DeviceId,
    },
    /// The device is not known.
    #[error("unknown device {device}")]
    UnknownDevice {
        /// The device.
        device: DeviceId,
    },
    /// The device was revoked by its user.
    #[error("device {device} is revoked")]
    RevokedDevice {
        /// The device.
        device: DeviceId,
    },
    /// No device list of the sender's user is known: add it (from a
    /// contact's invite, say) before accepting messages from that user.
    #[error("no device list is known for user {user}")]
    UnknownSender {
        /// The user the sender's certificate names.
        user: safemeet_proto::UserId,
    },
    /// The sender's user is on this device's refusal list (blocked, or a
    /// removed contact): nothing of theirs is decrypted into the store.
    #[error("the sender's user is refused")]
    RefusedSender,
    /// A pre-key message names a one-time key this device does not hold
    /// (used already, or never handed out).
    #[error("the one-time key of this pre-key message is unknown or used")]
    MissingOneTimeKey,
    /// The device is not in its user's device list.
    #[error("device {device} is not in its user's device list")]
    UnlistedDevice {
        /// The device.
        device: DeviceId,
    },
    /// The room key for this message has not arrived. When `held` is true
    /// the message was kept and is decrypted when the key arrives.
    #[error("the room key for this message has not arrived (held: {held})")]
    MissingRoomKey {
        /// Whether the message was kept for later.
        held: bool,
    },
    /// The message is older than the first index of the key held (for
    /// example sent before this device joined).
    #[error("message index {index} is before the first known index {first_known}")]
    UnknownMessageIndex {
        /// First index the key decrypts.
        first_known: u32,
        /// The message's index.
        index: u32,
    },
    /// This (session, index) was decrypted before.
    #[error("replayed room message at index {index}")]
    Replay {
        /// The message index.
        index: u32,
        /// True when the bytes are the same as the first time (a redelivery);
        /// false when different bytes claim a used index.
        same_ciphertext: bool,
    },
    /// This Olm message was decrypted before.
    #[error("duplicate Olm message")]
    DuplicateOlmMessage,
    /// No Olm session has the id a message names.
    #[error("unknown Olm session")]
    UnknownOlmSession,
    /// Decryption or authentication failed: tampered, truncated or foreign data.
    #[error("{what} decryption failed: {reason}")]
    Decryption {
        /// Which layer.
        what: &'static str,
        /// The library's reason.
        reason: String,
    },
    /// The sealed sender does not match the key that decrypted the message.
    #[error("sender check failed: {reason}")]
    SenderMismatch {
        /// What did not match.
        reason: &'static str,
    },
    /// A room key for a session already bound to another sender or room.
    #[error("a room key conflicts with a session already held")]
    SessionConflict,
    /// The decrypted payload is not of the kind this channel carries.
    #[error("unexpected payload kind for this channel")]
    UnexpectedPayload,
    /// A verification step failed.
    #[error(transparent)]
    Verification(#[from] crate::verification::VerificationError),
    /// The underlying store failed.
    #[error(transparent)]
    Store(#[from] safemeet_store::Error),
}
