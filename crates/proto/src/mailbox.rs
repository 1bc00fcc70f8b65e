//! The relay mailbox protocol (`/safemeet/mailbox/1`): what a device that is
//! offline leaves with a relay, and how its owner fetches and deletes it.
//!
//! A mailbox exists on a relay only once its owner has *opened* it
//! ([`MailboxRequest::Open`], signed like a fetch), handing the relay the
//! epoch's *deposit check key*. A *deposit* names only a [`MailboxId`],
//! carries an opaque, padded envelope and a tag keyed with that check key
//! (which every contact of the owner derives alike): nothing about its
//! sender. The relay answers with a signed [`Receipt`] ("stored until T"),
//! or, to a deposit into a mailbox that is not open or with a wrong tag,
//! the same [`MailboxError::Refused`]. *Open*, *fetch* and *ack* (delete) are
//! [`Authorized`]: signed by the mailbox's key over a single-use nonce the
//! relay handed out just before ([`MailboxRequest::Challenge`]), so a
//! recorded request cannot be replayed and nobody without the key can read
//! or empty a mailbox. A mailbox id is derived from its key (see
//! `safemeet_crypto::mailbox`), so the relay checks that the key owns the
//! mailbox without having been told before.
//!
//! Every message here is decoded from untrusted bytes with
//! [`codec::decode`](crate::codec::decode) and a size limit.

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::{MailboxId, Timestamp};

/// Format version of the mailbox messages. 2: mailboxes are opened by
/// their owner, and deposits carry a tag (version 1 is refused).
pub const VERSION: u8 = 2;
/// What sealing a frame to a mailbox's key adds (an ephemeral key and an
/// AEAD tag; see `safemeet_crypto::mailbox::seal`).
pub const SEAL_OVERHEAD: usize = 32 + 16;
/// Largest deposited envelope: the largest padded frame, sealed.
pub const MAX_SEALED_BYTES: usize = crate::limits::MAX_ENVELOPE_BYTES + SEAL_OVERHEAD;
/// Largest request: a deposit of the largest envelope, with its header.
pub const MAX_REQUEST_BYTES: usize = MAX_SEALED_BYTES + 1024;
/// Largest answer: a page of fetched envelopes.
pub const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;
/// Most envelopes one fetch returns.
pub const MAX_FETCH_ITEMS: u16 = 64;
/// Most envelopes one ack deletes.
pub const MAX_ACK_IDS: usize = 1024;
/// Most envelopes in one [`MailboxRequest::DepositMany`] (their bytes
/// together also fit in [`MAX_REQUEST_BYTES`]).
pub const MAX_DEPOSIT_ITEMS: usize = 64;

/// Domain separation of what a mailbox key signs.
const FETCH_CONTEXT: &[u8] = b"safemeet/v1/mailbox/fetch";
const OPEN_CONTEXT: &[u8] = b"safemeet/v2/mailbox/open";
const ACK_CONTEXT: &[u8] = b"safemeet/v1/mailbox/ack";
const RECEIPT_CONTEXT: &[u8] = b"safemeet/v1/mailbox/receipt";
const PURGE_CONTEXT: &[u8] = b"safemeet/v1/mailbox/purge";
const PURGE_RECEIPT_CONTEXT: &[u8] = b"safemeet/v1/mailbox/purge-receipt";

/// A request to a relay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MailboxRequest {
    /// Leave an envelope in a mailbox.
    Deposit {
        /// Format version.
        version: u8,
        /// Where.
        mailbox: MailboxId,
        /// The padded, end-to-end encrypted envelope (opaque to the relay).
        #[serde(with = "codec::bytes")]
        envelope: Vec<u8>,
        /// Keyed with the mailbox's deposit check key: shows the depositor
        /// holds it (see `safemeet_crypto::mailbox::deposit_tag`).
        tag: [u8; 32],
    },
    /// Ask for a nonce to sign an open, a fetch or an ack with.
    Challenge {
        /// Format version.
        version: u8,
    },
    /// Read a mailbox.
    Fetch(Authorized<FetchParams>),
    /// Delete envelopes from a mailbox.
    Ack(Authorized<AckParams>),
    /// Leave several envelopes at once (at most [`MAX_DEPOSIT_ITEMS`]),
    /// each in its own mailbox; answered with one outcome per envelope.
    DepositMany {
        /// Format version.
        version: u8,
        /// The envelopes.
        items: Vec<Deposit>,
    },
    /// Open a mailbox (or refresh it), so that it takes deposits tagged
    /// with the check key given; answered with [`MailboxResponse::Opened`].
    Open(Authorized<OpenParams>),
    /// Delete a mailbox and everything in it (its owner's account is
    /// deleted); answered with [`MailboxResponse::Purged`].
    Purge(Authorized<PurgeParams>),
}

/// What a purge deletes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeParams {
    /// The mailbox.
    pub mailbox: MailboxId,
}

impl SignedParams for PurgeParams {
    const CONTEXT: &'static [u8] = PURGE_CONTEXT;
    fn mailbox(&self) -> MailboxId {
        self.mailbox
    }
}

/// A relay's signed word that a mailbox is gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeReceipt {
    /// Format version.
    pub version: u8,
    /// The mailbox.
    pub mailbox: MailboxId,
    /// How many envelopes were deleted with it.
    pub removed: u32,
    /// When.
    pub purged_at: Timestamp,
    /// The relay's libp2p identity signature over
    /// [`PurgeReceipt::signed_bytes`].
    #[serde(with = "codec::bytes")]
    pub signature: Vec<u8>,
}

impl PurgeReceipt {
    /// The bytes the relay signs.
    pub fn signed_bytes(mailbox: &MailboxId, removed: u32, purged_at: Timestamp) -> Vec<u8> {
        let mut out = Vec::with_capacity(PURGE_RECEIPT_CONTEXT.len() + 32 + 12);
        out.extend_from_slice(PURGE_RECEIPT_CONTEXT);
        out.extend_from_slice(mailbox.as_bytes());
        out.extend_from_slice(&removed.to_be_bytes());
        out.extend_from_slice(&purged_at.as_millis().to_be_bytes());
        out
    }
}

/// One envelope of a [`MailboxRequest::DepositMany`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deposit {
    /// Where.
    pub mailbox: MailboxId,
    /// The padded, end-to-end encrypted envelope (opaque to the relay).
    #[serde(with = "codec::bytes")]
    pub envelope: Vec<u8>,
    /// As [`MailboxRequest::Deposit`]'s.
    pub tag: [u8; 32],
}

/// What an open asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenParams {
    /// The mailbox.
    pub mailbox: MailboxId,
    /// The key deposits into it are tagged with (the epoch's deposit check
    /// key, which the owner's contacts derive too).
    pub check: [u8; 32],
}

/// What a fetch asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchParams {
    /// The mailbox.
    pub mailbox: MailboxId,
    /// Envelopes with ids after this one (0: from the start).
    pub after: u64,
    /// At most this many (capped at [`MAX_FETCH_ITEMS`]).
    pub limit: u16,
}

/// What an ack deletes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckParams {
    /// The mailbox.
    pub mailbox: MailboxId,
    /// Ids of the envelopes to delete (at most [`MAX_ACK_IDS`]).
    pub ids: Vec<u64>,
}

/// Parameters signed by a mailbox key over a relay's nonce.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Authorized<P> {
    /// Format version.
    pub version: u8,
    /// The mailbox's Ed25519 public key; the mailbox id derives from it.
    pub key: [u8; 32],
    /// The nonce the relay handed out.
    pub nonce: [u8; 32],
    /// What is asked.
    pub params: P,
    /// Ed25519 signature by `key` over [`Authorized::signed_bytes`].
    #[serde(with = "codec::sig64")]
    pub signature: [u8; 64],
}

/// The mailbox a request is about, and what it signs.
pub trait SignedParams: Serialize {
    /// Domain separation for this kind of request.
    const CONTEXT: &'static [u8];
    /// The mailbox.
    fn mailbox(&self) -> MailboxId;
}

impl SignedParams for FetchParams {
    const CONTEXT: &'static [u8] = FETCH_CONTEXT;
    fn mailbox(&self) -> MailboxId {
        self.mailbox
    }
}

impl SignedParams for OpenParams {
    const CONTEXT: &'static [u8] = OPEN_CONTEXT;
    fn mailbox(&self) -> MailboxId {
        self.mailbox
    }
}

impl SignedParams for AckParams {
    const CONTEXT: &'static [u8] = ACK_CONTEXT;
    fn mailbox(&self) -> MailboxId {
        self.mailbox
    }
}

impl<P: SignedParams> Authorized<P> {
    /// The bytes the mailbox key signs: the request kind, the relay it is
    /// for (its peer id, so one relay cannot replay it at another), the
    /// nonce, the key and the encoded parameters.
    pub fn signed_bytes(
        key: &[u8; 32],
        relay: &[u8],
        nonce: &[u8; 32],
        params: &P,
    ) -> Result<Vec<u8>, codec::EncodeError> {
        let encoded = codec::encode(params)?;
        let relay_len = u16::try_from(relay.len()).map_err(|_| codec::EncodeError::TooLarge {
            len: relay.len(),
            max: usize::from(u16::MAX),
        })?;
        let mut out = Vec::with_capacity(P::CONTEXT.len() + 66 + relay.len() + encoded.len());
        out.extend_from_slice(P::CONTEXT);
        out.extend_from_slice(&relay_len.to_be_bytes());
        out.extend_from_slice(relay);
        out.extend_from_slice(nonce);
        out.extend_from_slice(key);
        out.extend_from_slice(&encoded);
        Ok(out)
    }
}

/// A relay's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MailboxResponse {
    /// The envelope is stored.
    Receipt(Receipt),
    /// A nonce to sign one fetch or ack with, valid for a short while.
    Nonce([u8; 32]),
    /// Envelopes from a mailbox, in id order.
    Envelopes {
        /// The envelopes.
        items: Vec<StoredEnvelope>,
        /// More follow the last one.
        more: bool,
    },
    /// How many of the acknowledged envelopes were deleted.
    Acked {
        /// Deleted now (ids already gone do not count).
        removed: u32,
    },
    /// The request was refused.
    Error {
        /// Why, for programs.
        code: MailboxError,
        /// Why, for people.
        message: String,
    },
    /// The outcome of each envelope of a [`MailboxRequest::DepositMany`],
    /// in order.
    Receipts(Vec<DepositOutcome>),
    /// The mailbox is open and takes deposits.
    Opened,
    /// The mailbox is gone.
    Purged(PurgeReceipt),
}

/// What became of one envelope of a [`MailboxRequest::DepositMany`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DepositOutcome {
    /// Stored.
    Stored(Receipt),
    /// Refused.
    Refused {
        /// Why, for programs.
        code: MailboxError,
        /// Why, for people.
        message: String,
    },
}

/// Why a relay refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum MailboxError {
    /// The request could not be decoded or is not allowed as it is.
    Malformed,
    /// The envelope is larger than this relay accepts.
    TooLarge,
    /// The mailbox holds as many envelopes or bytes as it may.
    MailboxFull,
    /// The relay holds as much as it may.
    RelayFull,
    /// The relay takes no deposits to mailboxes it does not hold already.
    NotAccepting,
    /// The signature, key or mailbox do not match.
    BadSignature,
    /// The nonce is unknown, used or expired: ask for a new one.
    BadNonce,
    /// Too many requests from this peer; try again later.
    RateLimited,
    /// The relay failed; try again later.
    Internal,
    /// A deposit into a mailbox that is not open on this relay, or without
    /// the tag of its check key: the one answer, so a depositor without
    /// the credential learns nothing of which mailboxes are open.
    Refused,
}

/// A relay's signed promise to keep an envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// Format version.
    pub version: u8,
    /// The mailbox.
    pub mailbox: MailboxId,
    /// The envelope's id in the mailbox.
    pub id: u64,
    /// Kept until then, unless fetched and acknowledged sooner.
    pub stored_until: Timestamp,
    /// BLAKE3 of the envelope, so the receipt is for these bytes.
    pub digest: [u8; 32],
    /// The relay's libp2p identity signature over [`Receipt::signed_bytes`].
    #[serde(with = "codec::bytes")]
    pub signature: Vec<u8>,
}

impl Receipt {
    /// The bytes the relay signs.
    pub fn signed_bytes(
        mailbox: &MailboxId,
        id: u64,
        stored_until: Timestamp,
        digest: &[u8; 32],
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(RECEIPT_CONTEXT.len() + 32 + 16 + 32);
        out.extend_from_slice(RECEIPT_CONTEXT);
        out.extend_from_slice(mailbox.as_bytes());
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&stored_until.as_millis().to_be_bytes());
        out.extend_from_slice(digest);
        out
    }
}

/// An envelope as a mailbox holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEnvelope {
    /// Its id in the mailbox (increasing).
    pub id: u64,
    /// Kept until then.
    pub stored_until: Timestamp,
    /// The envelope.
    #[serde(with = "codec::bytes")]
    pub envelope: Vec<u8>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is a failure

    use super::*;

    #[test]
    fn requests_round_trip_and_refuse_oversized_input() {
        let request = MailboxRequest::Fetch(Authorized {
            version: VERSION,
            key: [1; 32],
            nonce: [2; 32],
            params: FetchParams {
                mailbox: MailboxId::from_bytes([3; 32]),
                after: 7,
                limit: 10,
            },
            signature: [4; 64],
        });
        let bytes = codec::encode(&request).unwrap();
        let back: MailboxRequest = codec::decode(&bytes, MAX_REQUEST_BYTES).unwrap();
        assert_eq!(back, request);
        assert!(codec::decode::<MailboxRequest>(&bytes, bytes.len() - 1).is_err());
        assert!(
            codec::decode::<MailboxRequest>(&bytes[..bytes.len() - 1], MAX_REQUEST_BYTES).is_err()
        );
    }

    #[test]
    fn what_is_signed_depends_on_kind_nonce_key_and_params() {
        let params = FetchParams {
            mailbox: MailboxId::from_bytes([3; 32]),
            after: 0,
            limit: 1,
        };
        let base = Authorized::signed_bytes(&[1; 32], b"r", &[2; 32], &params).unwrap();
        assert_ne!(
            base,
            Authorized::signed_bytes(&[1; 32], b"r", &[9; 32], &params).unwrap()
        );
        assert_ne!(
            base,
            Authorized::signed_bytes(&[9; 32], b"r", &[2; 32], &params).unwrap()
        );
        assert_ne!(
            base,
            Authorized::signed_bytes(&[1; 32], b"s", &[2; 32], &params).unwrap()
        );
        let later = FetchParams {
            after: 1,
            ..params.clone()
        };
        assert_ne!(
            base,
            Authorized::signed_bytes(&[1; 32], b"r", &[2; 32], &later).unwrap()
        );
        let ack = AckParams {
            mailbox: params.mailbox,
            ids: vec![],
        };
        let ack_bytes = Authorized::signed_bytes(&[1; 32], b"r", &[2; 32], &ack).unwrap();
        assert!(!ack_bytes.starts_with(FETCH_CONTEXT));
    }
}
