//! Answers mailbox requests: decodes and checks them, hands out and spends
//! nonces, checks deposit tags, signs receipts. No network here (see
//! [`crate::node`]), so the rules can be tested on their own.
//!
//! Spent nonces are kept per mailbox, at most [`MAX_SPENT_PER_MAILBOX`]
//! each: a mailbox that uses more in a minute is refused for the rest of
//! it, and no other mailbox is. When the relay remembers nonces for too
//! many mailboxes ([`MAX_SPENT_MAILBOXES`]) or too many in all
//! ([`MAX_SPENT_NONCES`]), it forgets another mailbox's, never refuses: a replay of an open, a fetch
//! or an ack is harmless anyway (each is idempotent, ids are never reused,
//! and only the relay and the owner ever see the signed bytes, under Noise).

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use libp2p::identity::Keypair;
use safemeet_proto::mailbox::{
    Authorized, Deposit, DepositOutcome, MAX_ACK_IDS, MAX_DEPOSIT_ITEMS, MAX_FETCH_ITEMS,
    MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES, MailboxError, MailboxRequest, MailboxResponse,
    PurgeReceipt, Receipt, SignedParams, VERSION,
};
use safemeet_proto::{MailboxId, Timestamp, codec};
use safemeet_store::Store;

use crate::Error;
use crate::store::{DepositGroup, MailboxStore};

/// A mailbox's spent nonces (each with its expiry, in ms), oldest first.
#[derive(Debug, Default)]
struct Spent {
    nonces: VecDeque<(u64, [u8; 32])>,
}

/// How long a nonce may be used after it was handed out.
pub const NONCE_TTL: Duration = Duration::from_secs(60);
/// Most spent nonces remembered per mailbox (each until it expires, a
/// minute). An owner's drain uses two per page (fetch, ack), at most 256
/// pages per mailbox (engine `relay_client::MAX_PAGES`), and one per open:
/// 1 024 lets a whole drain of a full mailbox run within a minute, twice.
pub const MAX_SPENT_PER_MAILBOX: usize = 1024;
/// Most mailboxes whose spent nonces are remembered at once. Past that,
/// another mailbox's nonces are forgotten.
pub const MAX_SPENT_MAILBOXES: usize = 65_536;
/// Most spent nonces remembered in all (about 40 MB at 40 B each). Past
/// that, another mailbox's nonces are forgotten: memory stays bounded
/// however many mailboxes spend nonces, and no request is refused for it.
pub const MAX_SPENT_NONCES: usize = 1_000_000;

/// The answer to one request, and whether it changed the store (then it
/// may be sent only after a flush).
#[derive(Debug)]
pub struct Handled {
    /// For the client.
    pub response: MailboxResponse,
    /// The store was changed; flush before answering.
    pub wrote: bool,
}

/// The mailbox service of a relay.
pub struct MailboxService<S: Store> {
    store: MailboxStore<S>,
    key: Keypair,
    /// Nonces handed out, and until when they may be used.
    /// Keys the nonces this relay hands out (new at each start: a nonce is
    /// good for [`NONCE_TTL`] only). A nonce is `until ‖ random ‖ tag`, the
    /// tag a keyed hash of the rest: handing one out keeps no state.
    nonce_key: [u8; 32],
    /// Nonces used by a valid request, per mailbox, until they expire.
    spent: HashMap<MailboxId, Spent>,
    /// How many `spent` holds in all.
    spent_total: usize,
    /// This relay's peer id, which fetches and acks must be signed for.
    relay_id: Vec<u8>,
}

impl<S: Store> std::fmt::Debug for MailboxService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailboxService")
            .field("spent_mailboxes", &self.spent.len())
            .finish_non_exhaustive()
    }
}

fn error(code: MailboxError, message: impl Into<String>) -> Handled {
    Handled {
        response: MailboxResponse::Error {
            code,
            message: message.into(),
        },
        wrote: false,
    }
}

impl<S: Store> MailboxService<S> {
    /// A service over `store` that signs receipts with the relay's `key`.
    pub fn new(store: MailboxStore<S>, key: Keypair) -> Self {
        let relay_id = key.public().to_peer_id().to_bytes();
        Self {
            store,
            key,
            nonce_key: rand::random(),
            spent: HashMap::new(),
            spent_total: 0,
            relay_id,
        }
    }

    /// The mailboxes.
    pub fn store(&self) -> &MailboxStore<S> {
        &self.store
    }

    /// Answers one encoded request at time `now`.
    pub fn handle(&mut self, request: &[u8], now: Timestamp) -> Handled {
        let (mut responses, wrote) = self.handle_many([request], now);
        let response = responses.pop().unwrap_or(MailboxResponse::Error {
            code: MailboxError::Internal,
            message: "no answer".into(),
        });
        Handled { response, wrote }
    }

    /// Answers encoded requests that arrived together, in order; returns
    /// the answers and whether the store was changed (then flush before
    /// sending them). Consecutive deposits are stored as one batch, with
    /// each mailbox's counters written once.
    pub fn handle_many<R: AsRef<[u8]>>(
        &mut self,
        requests: impl IntoIterator<Item = R>,
        now: Timestamp,
    ) -> (Vec<MailboxResponse>, bool) {
        let decoded = requests.into_iter().map(|b| decode_request(b.as_ref()));
        self.handle_decoded(decoded, now)
    }

    /// [`handle_many`](Self::handle_many) for requests already decoded
    /// with [`decode_request`] (the node decodes each once, to weigh it).
    pub fn handle_decoded(
        &mut self,
        requests: impl IntoIterator<Item = Decoded>,
        now: Timestamp,
    ) -> (Vec<MailboxResponse>, bool) {
        let mut out = Vec::new();
        let mut group = DepositGroup::default();
        let mut in_group = Vec::new();
        let mut wrote = false;
        for decoded in requests {
            let request = match decoded {
                Ok(r) => r,
                Err(reason) => {
                    out.push(error(MailboxError::Malformed, reason).response);
                    continue;
                }
            };
            match &request {
                MailboxRequest::Deposit {
                    version,
                    mailbox,
                    envelope,
                    tag,
                } => {
                    let handled =
                        self.stage_deposit(&mut group, *version, mailbox, envelope, tag, now);
                    if matches!(handled, MailboxResponse::Receipt(_)) {
                        in_group.push(out.len());
                    }
                    out.push(handled);
                    continue;
                }
                MailboxRequest::DepositMany { version, items } => {
                    let handled = self.stage_many(&mut group, *version, items, now);
                    if let MailboxResponse::Receipts(outcomes) = &handled
                        && outcomes
                            .iter()
                            .any(|o| matches!(o, DepositOutcome::Stored(_)))
                    {
                        in_group.push(out.len());
                    }
                    out.push(handled);
                    continue;
                }
                _ => {}
            }
            // Anything else reads the store: the deposits before it first.
            wrote |= self.commit(&mut group, &mut in_group, &mut out);
            let handled = self.handle_other(request, now);
            wrote |= handled.wrote;
            out.push(handled.response);
        }
        wrote |= self.commit(&mut group, &mut in_group, &mut out);
        (out, wrote)
    }

    /// Applies the staged deposits; if that fails, their receipts become
    /// errors (nothing is promised that was not stored). Returns whether
    /// anything was written.
    fn commit(
        &self,
        group: &mut DepositGroup,
        in_group: &mut Vec<usize>,
        out: &mut [MailboxResponse],
    ) -> bool {
        if in_group.is_empty() {
            return false;
        }
        let result = self.store.commit(std::mem::take(group));
        let members = std::mem::take(in_group);
        match result {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(
                    error = &e as &dyn std::error::Error,
                    "storing deposits failed"
                );
                const FAILED: &str = "the relay's store failed";
                for i in members {
                    match out.get_mut(i) {
                        Some(MailboxResponse::Receipts(outcomes)) => {
                            for o in outcomes.iter_mut() {
                                *o = DepositOutcome::Refused {
                                    code: MailboxError::Internal,
                                    message: FAILED.into(),
                                };
                            }
                        }
                        Some(r) => *r = error(MailboxError::Internal, FAILED).response,
                        None => {}
                    }
                }
                false
            }
        }
    }

    fn stage_deposit(
        &self,
        group: &mut DepositGroup,
        version: u8,
        mailbox: &MailboxId,
        envelope: &[u8],
        tag: &[u8; 32],
        now: Timestamp,
    ) -> MailboxResponse {
        if version != VERSION {
            return error(MailboxError::Malformed, "unknown version").response;
        }
        let digest = *blake3::hash(envelope).as_bytes();
        let authentic = |check: &[u8; 32]| {
            safemeet_crypto::mailbox::deposit_tag_is_valid(
                check,
                &self.relay_id,
                mailbox,
                &digest,
                tag,
            )
        };
        let (id, stored_until) = match self
            .store
            .stage_deposit(group, mailbox, envelope, authentic, now)
        {
            Ok(stored) => stored,
            Err(e) => return store_error(e).response,
        };
        let signed = Receipt::signed_bytes(mailbox, id, stored_until, &digest);
        match self.key.sign(&signed) {
            Ok(signature) => MailboxResponse::Receipt(Receipt {
                version: VERSION,
                mailbox: *mailbox,
                id,
                stored_until,
                digest,
                signature,
            }),
            Err(e) => {
                tracing::error!(error = %e, "could not sign a receipt");
                error(MailboxError::Internal, "the relay could not sign").response
            }
        }
    }

    /// Stages the envelopes of a `DepositMany`; one outcome each.
    fn stage_many(
        &self,
        group: &mut DepositGroup,
        version: u8,
        items: &[Deposit],
        now: Timestamp,
    ) -> MailboxResponse {
        if items.len() > MAX_DEPOSIT_ITEMS {
            return error(
                MailboxError::Malformed,
                format!("at most {MAX_DEPOSIT_ITEMS} envelopes per request"),
            )
            .response;
        }
        let outcomes = items
            .iter()
            .map(|item| {
                let (mailbox, envelope) = (&item.mailbox, &item.envelope);
                match self.stage_deposit(group, version, mailbox, envelope, &item.tag, now) {
                    MailboxResponse::Receipt(r) => DepositOutcome::Stored(r),
                    MailboxResponse::Error { code, message } => {
                        DepositOutcome::Refused { code, message }
                    }
                    _ => DepositOutcome::Refused {
                        code: MailboxError::Internal,
                        message: "unexpected outcome".into(),
                    },
                }
            })
            .collect();
        MailboxResponse::Receipts(outcomes)
    }

    /// Answers a request other than a deposit.
    fn handle_other(&mut self, request: MailboxRequest, now: Timestamp) -> Handled {
        match request {
            MailboxRequest::Deposit { .. } | MailboxRequest::DepositMany { .. } => error(
                MailboxError::Internal,
                "deposits are staged, not handled here",
            ),
            MailboxRequest::Challenge { version } => {
                if version != VERSION {
                    return error(MailboxError::Malformed, "unknown version");
                }
                let until = now.saturating_add(NONCE_TTL);
                let random: [u8; 8] = rand::random();
                let mut nonce = [0u8; 32];
                nonce[..8].copy_from_slice(&until.as_millis().to_be_bytes());
                nonce[8..16].copy_from_slice(&random);
                let tag = self.nonce_tag(&nonce);
                nonce[16..].copy_from_slice(&tag);
                Handled {
                    response: MailboxResponse::Nonce(nonce),
                    wrote: false,
                }
            }
            MailboxRequest::Open(request) => {
                if let Err(refused) = self.authorize(&request, now) {
                    return refused;
                }
                let p = &request.params;
                match self.store.open(&p.mailbox, p.check, now) {
                    Ok(wrote) => Handled {
                        response: MailboxResponse::Opened,
                        wrote,
                    },
                    Err(e) => store_error(e),
                }
            }
            MailboxRequest::Fetch(request) => {
                if let Err(refused) = self.authorize(&request, now) {
                    return refused;
                }
                let p = &request.params;
                let limit = usize::from(p.limit.clamp(1, MAX_FETCH_ITEMS));
                // A page must fit in one answer, whatever the envelopes' sizes.
                let budget = MAX_RESPONSE_BYTES - 4096;
                let fetched = self
                    .store
                    .fetch(&p.mailbox, p.after, limit, budget, now)
                    .and_then(|page| Ok((page, self.store.fetched(&p.mailbox)?)));
                match fetched {
                    Ok(((items, more), wrote)) => Handled {
                        response: MailboxResponse::Envelopes { items, more },
                        wrote,
                    },
                    Err(e) => store_error(e),
                }
            }
            MailboxRequest::Purge(request) => {
                if let Err(refused) = self.authorize(&request, now) {
                    return refused;
                }
                let mailbox = request.params.mailbox;
                let removed = match self.store.delete_mailbox(&mailbox) {
                    Ok(n) => n,
                    Err(e) => return store_error(e),
                };
                let signed = PurgeReceipt::signed_bytes(&mailbox, removed, now);
                match self.key.sign(&signed) {
                    Ok(signature) => Handled {
                        response: MailboxResponse::Purged(PurgeReceipt {
                            version: VERSION,
                            mailbox,
                            removed,
                            purged_at: now,
                            signature,
                        }),
                        wrote: true,
                    },
                    Err(e) => {
                        tracing::error!(error = %e, "could not sign a purge receipt");
                        error(MailboxError::Internal, "the relay could not sign")
                    }
                }
            }
            MailboxRequest::Ack(request) => {
                if request.params.ids.len() > MAX_ACK_IDS {
                    return error(
                        MailboxError::Malformed,
                        format!("at most {MAX_ACK_IDS} ids per ack"),
                    );
                }
                if let Err(refused) = self.authorize(&request, now) {
                    return refused;
                }
                let p = &request.params;
                match self.store.ack(&p.mailbox, &p.ids, now) {
                    Ok(removed) => Handled {
                        response: MailboxResponse::Acked { removed },
                        wrote: removed > 0,
                    },
                    Err(e) => store_error(e),
                }
            }
        }
    }

    /// The tag of a nonce: a keyed hash of its first 16 bytes.
    fn nonce_tag(&self, nonce: &[u8; 32]) -> [u8; 16] {
        let hash = blake3::keyed_hash(&self.nonce_key, &nonce[..16]);
        let mut tag = [0u8; 16];
        tag.copy_from_slice(&hash.as_bytes()[..16]);
        tag
    }

    /// Checks that the request's nonce is one this relay handed out, not
    /// expired and not used before, and that the request is signed for
    /// this relay by the mailbox's key; then spends the nonce.
    fn authorize<P: SignedParams>(
        &mut self,
        request: &Authorized<P>,
        now: Timestamp,
    ) -> Result<(), Handled> {
        let bad_nonce = || {
            error(
                MailboxError::BadNonce,
                "unknown, used or expired nonce: ask for a new one",
            )
        };
        let nonce = &request.nonce;
        let tag = self.nonce_tag(nonce);
        // Constant time: the tag is what keeps nonces unforgeable.
        let differs = tag
            .iter()
            .zip(&nonce[16..])
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        let mut until = [0u8; 8];
        until.copy_from_slice(&nonce[..8]);
        let until = u64::from_be_bytes(until);
        if differs != 0 || until <= now.as_millis() {
            return Err(bad_nonce());
        }
        safemeet_crypto::mailbox::check(request, &self.relay_id).map_err(|_| {
            error(
                MailboxError::BadSignature,
                "not signed for this relay by the key of this mailbox",
            )
        })?;
        self.spend(request.params.mailbox(), *nonce, until, now)
    }

    /// Spends `nonce` (good until `until`, in ms) for `mailbox`: refused if
    /// that mailbox spent it already, or spent [`MAX_SPENT_PER_MAILBOX`]
    /// that have not expired yet. Another mailbox is never refused here.
    fn spend(
        &mut self,
        mailbox: MailboxId,
        nonce: [u8; 32],
        until: u64,
        now: Timestamp,
    ) -> Result<(), Handled> {
        let now_ms = now.as_millis();
        let (total, spent) = (&mut self.spent_total, &mut self.spent);
        if let Some(own) = spent.get_mut(&mailbox) {
            let before = own.nonces.len();
            own.nonces.retain(|(until, _)| *until > now_ms);
            *total -= before - own.nonces.len();
            if own.nonces.iter().any(|(_, n)| *n == nonce) {
                return Err(error(
                    MailboxError::BadNonce,
                    "unknown, used or expired nonce: ask for a new one",
                ));
            }
            if own.nonces.len() >= MAX_SPENT_PER_MAILBOX {
                return Err(error(
                    MailboxError::RateLimited,
                    "too many requests for this mailbox lately; try again in a minute",
                ));
            }
        }
        // Too much held: other mailboxes' nonces are forgotten (replays are
        // harmless: see the module docs), a constant amount of work per
        // request whatever the load; expired ones go at each purge
        // (`forget_spent`).
        while spent.len() >= MAX_SPENT_MAILBOXES || *total >= MAX_SPENT_NONCES {
            let Some(other) = spent.keys().find(|m| **m != mailbox).copied() else {
                break;
            };
            if let Some(gone) = spent.remove(&other) {
                *total -= gone.nonces.len();
            }
        }
        spent
            .entry(mailbox)
            .or_default()
            .nonces
            .push_back((until, nonce));
        *total += 1;
        Ok(())
    }

    /// Forgets spent nonces that have expired (the purge calls this).
    pub fn forget_spent(&mut self, now: Timestamp) {
        let now_ms = now.as_millis();
        self.spent.retain(|_, s| {
            s.nonces.retain(|(until, _)| *until > now_ms);
            !s.nonces.is_empty()
        });
        self.spent_total = self.spent_nonces();
    }

    /// How many spent nonces are remembered, for all mailboxes.
    pub fn spent_nonces(&self) -> usize {
        self.spent.values().map(|s| s.nonces.len()).sum()
    }
}

/// A request as received: decoded, or why it could not be.
pub type Decoded = Result<MailboxRequest, String>;

/// Decodes a request (size-checked).
pub fn decode_request(bytes: &[u8]) -> Decoded {
    codec::decode(bytes, MAX_REQUEST_BYTES).map_err(|e| format!("undecodable request: {e}"))
}

/// What a request counts against its peer's rate: the number of envelopes
/// it deposits, otherwise one.
pub fn request_cost(request: &Decoded) -> u32 {
    match request {
        Ok(MailboxRequest::DepositMany { items, .. }) => {
            u32::try_from(items.len()).unwrap_or(u32::MAX).max(1)
        }
        _ => 1,
    }
}

/// What a request may add to the relay's disk, in KiB (rounded up), as
/// the per-source byte rate counts it: each envelope deposited as it
/// would weigh on disk ([`crate::store::disk_cost`]), a mailbox record for
/// an open, nothing otherwise. Counted before the request is checked, so a
/// source pays for what it tries, stored or not.
pub fn disk_cost_kib(request: &Decoded) -> u32 {
    let bytes = match request {
        Ok(MailboxRequest::Deposit { envelope, .. }) => crate::store::disk_cost(envelope.len()),
        Ok(MailboxRequest::DepositMany { items, .. }) => items
            .iter()
            .map(|d| crate::store::disk_cost(d.envelope.len()))
            .sum(),
        Ok(MailboxRequest::Open(_)) => crate::store::open_cost(),
        _ => 0,
    };
    u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX)
}

fn store_error(e: Error) -> Handled {
    match e {
        Error::Refused { code, message } => error(code, message),
        other => {
            tracing::error!(
                error = &other as &dyn std::error::Error,
                "mailbox store failed"
            );
            error(MailboxError::Internal, "the relay's store failed")
        }
    }
}
