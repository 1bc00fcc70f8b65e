//! Answers mailbox requests: decodes and checks them, hands out and spends
//! nonces, signs receipts. No network here (see [`crate::node`]), so the
//! rules can be tested on their own.

use std::collections::HashMap;
use std::time::Duration;

use libp2p::identity::Keypair;
use safemeet_proto::mailbox::{
    Authorized, MAX_ACK_IDS, MAX_FETCH_ITEMS, MAX_REQUEST_BYTES, MailboxError, MailboxRequest,
    MailboxResponse, Receipt, SignedParams, VERSION,
};
use safemeet_proto::{Timestamp, codec};
use safemeet_store::Store;

use crate::store::{self, MailboxStore};

/// How long a nonce may be used after it was handed out.
pub const NONCE_TTL: Duration = Duration::from_secs(60);
/// Most nonces outstanding at once; more requests for one are refused
/// until some are spent or expire.
pub const MAX_NONCES: usize = 65_536;

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
    nonces: HashMap<[u8; 32], Timestamp>,
}

impl<S: Store> std::fmt::Debug for MailboxService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailboxService")
            .field("nonces", &self.nonces.len())
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
        Self {
            store,
            key,
            nonces: HashMap::new(),
        }
    }

    /// The mailboxes.
    pub fn store(&self) -> &MailboxStore<S> {
        &self.store
    }

    /// Answers one encoded request at time `now`.
    pub fn handle(&mut self, request: &[u8], now: Timestamp) -> Handled {
        let request: MailboxRequest = match codec::decode(request, MAX_REQUEST_BYTES) {
            Ok(r) => r,
            Err(e) => return error(MailboxError::Malformed, format!("undecodable request: {e}")),
        };
        match request {
            MailboxRequest::Deposit {
                version,
                mailbox,
                envelope,
            } => {
                if version != VERSION {
                    return error(MailboxError::Malformed, "unknown version");
                }
                match self.store.deposit(&mailbox, &envelope, now) {
                    Ok((id, stored_until)) => {
                        let digest = *blake3::hash(&envelope).as_bytes();
                        let signed = Receipt::signed_bytes(&mailbox, id, stored_until, &digest);
                        match self.key.sign(&signed) {
                            Ok(signature) => Handled {
                                response: MailboxResponse::Receipt(Receipt {
                                    version: VERSION,
                                    mailbox,
                                    id,
                                    stored_until,
                                    digest,
                                    signature,
                                }),
                                wrote: true,
                            },
                            Err(e) => {
                                tracing::error!(error = %e, "could not sign a receipt");
                                error(MailboxError::Internal, "the relay could not sign")
                            }
                        }
                    }
                    Err(e) => store_error(e),
                }
            }
            MailboxRequest::Challenge { version } => {
                if version != VERSION {
                    return error(MailboxError::Malformed, "unknown version");
                }
                self.nonces.retain(|_, until| *until > now);
                if self.nonces.len() >= MAX_NONCES {
                    return error(MailboxError::RateLimited, "too many nonces outstanding");
                }
                let nonce: [u8; 32] = rand::random();
                self.nonces.insert(nonce, now.saturating_add(NONCE_TTL));
                Handled {
                    response: MailboxResponse::Nonce(nonce),
                    wrote: false,
                }
            }
            MailboxRequest::Fetch(request) => {
                if let Err(refused) = self.authorize(&request, now) {
                    return refused;
                }
                let p = &request.params;
                let limit = usize::from(p.limit.clamp(1, MAX_FETCH_ITEMS));
                match self.store.fetch(&p.mailbox, p.after, limit, now) {
                    Ok((items, more)) => Handled {
                        response: MailboxResponse::Envelopes { items, more },
                        wrote: false,
                    },
                    Err(e) => store_error(e),
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

    /// Spends the request's nonce and checks its signature. The nonce is
    /// spent even when the signature fails, so each can be tried once.
    fn authorize<P: SignedParams>(
        &mut self,
        request: &Authorized<P>,
        now: Timestamp,
    ) -> Result<(), Handled> {
        match self.nonces.remove(&request.nonce) {
            Some(until) if until > now => {}
            _ => {
                return Err(error(
                    MailboxError::BadNonce,
                    "unknown, used or expired nonce: ask for a new one",
                ));
            }
        }
        safemeet_crypto::mailbox::check(request).map_err(|_| {
            error(
                MailboxError::BadSignature,
                "not signed by the key of this mailbox",
            )
        })
    }
}

fn store_error(e: store::Error) -> Handled {
    match e {
        store::Error::Refused { code, message } => error(code, message),
        other => {
            tracing::error!(error = %other, "mailbox store failed");
            error(MailboxError::Internal, "the relay's store failed")
        }
    }
}
