//! The relay mailbox protocol, as this device speaks it: deposits for
//! other devices and drains of its own mailboxes. This is the actor's I/O;
//! when to deposit and drain, and what to keep, is the core's
//! (`relays.rs`, `mailbox.rs`).
//!
//! A deposit carries the sealed frame the core made; the relay's receipt
//! is checked (its signature under the relay's peer id, the mailbox, the
//! digest of the sealed bytes, and an expiry still ahead) before the
//! message counts as "stored at relay". A deposit is tagged, for each
//! relay, with the epoch's deposit check key (derived from the recipient's
//! mailbox key: the credential). A drain first opens the current and the
//! next epochs' mailboxes on each relay, then fetches each epoch's
//! mailbox page by page, hands every page to the core, and deletes from
//! the relay only what the core has made durable.

use libp2p::PeerId;
use safemeet_crypto::mailbox::{EpochKey, authorize, deposit_tag_of_digest};
use std::sync::Arc;

use safemeet_net::{Error as NetError, Handle as Network};
use safemeet_proto::mailbox::{
    AckParams, FetchParams, MAX_ACK_IDS, MAX_FETCH_ITEMS, MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES,
    MailboxError, MailboxRequest, MailboxResponse, OpenParams, PurgeParams, PurgeReceipt, Receipt,
    StoredEnvelope, VERSION,
};
use safemeet_proto::{MailboxId, Timestamp, codec};
use tokio::sync::{mpsc, oneshot};

use crate::mailbox::Relay;

/// Why a mailbox request failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MailboxFailure {
    #[error(transparent)]
    Net(#[from] NetError),
    #[error("the relay refused ({code:?}): {message}")]
    Refused { code: MailboxError, message: String },
    #[error("the relay's answer was malformed: {0}")]
    Malformed(String),
    #[error("could not sign a mailbox request: {0}")]
    Sign(#[from] safemeet_crypto::Error),
    #[error("the engine stopped")]
    Stopped,
}

async fn request(
    net: &Network,
    relay: &Relay,
    request: &MailboxRequest,
) -> Result<MailboxResponse, MailboxFailure> {
    let bytes = codec::encode_limited(request, MAX_REQUEST_BYTES)
        .map_err(|e| MailboxFailure::Malformed(e.to_string()))?;
    let answer = net
        .mailbox(relay.peer, vec![relay.addr.clone()], bytes)
        .await?;
    match codec::decode(&answer, MAX_RESPONSE_BYTES) {
        Ok(MailboxResponse::Error { code, message }) => Err(MailboxFailure::Refused {
            code,
            // Shown in a log line: bounded, whatever the relay sent.
            message: message.chars().take(200).collect(),
        }),
        Ok(response) => Ok(response),
        Err(e) => Err(MailboxFailure::Malformed(e.to_string())),
    }
}

/// Leaves `frame` in `mailbox` on each of `relays` at once; returns the
/// latest "stored until" among the valid receipts (a promise already past
/// `now` is none), or `None` when no relay kept it.
pub(crate) async fn deposit(
    net: Network,
    mailbox: MailboxId,
    relays: Vec<Relay>,
    frame: Vec<u8>,
    check: [u8; 32],
    now: Timestamp,
) -> Option<Timestamp> {
    let digest = *blake3::hash(&frame).as_bytes();
    let frame = &frame;
    let tries = relays.iter().map(|relay| {
        let net = &net;
        async move {
            let tag = deposit_tag_of_digest(&check, &relay.peer.to_bytes(), &mailbox, &digest);
            let deposit = MailboxRequest::Deposit {
                version: VERSION,
                mailbox,
                envelope: frame.clone(),
                tag,
            };
            match request(net, relay, &deposit).await {
                Ok(MailboxResponse::Receipt(receipt))
                    if receipt.stored_until > now
                        && receipt_is_valid(&receipt, &relay.peer, &mailbox, &digest) =>
                {
                    Some(receipt.stored_until)
                }
                Ok(_) => {
                    tracing::debug!("a relay answered a deposit without a valid receipt");
                    None
                }
                Err(e) => {
                    tracing::debug!(error = %e, "a relay did not keep a deposit");
                    None
                }
            }
        }
    });
    futures::future::join_all(tries)
        .await
        .into_iter()
        .flatten()
        .max()
}

/// A receipt counts when it is for these bytes in this mailbox and signed
/// by the relay's own key (its peer id holds it inline).
fn receipt_is_valid(
    receipt: &Receipt,
    relay: &PeerId,
    mailbox: &MailboxId,
    digest: &[u8; 32],
) -> bool {
    let Some(key) = relay_key(relay) else {
        return false;
    };
    receipt.version == VERSION
        && receipt.mailbox == *mailbox
        && receipt.digest == *digest
        && key.verify(
            &Receipt::signed_bytes(
                &receipt.mailbox,
                receipt.id,
                receipt.stored_until,
                &receipt.digest,
            ),
            &receipt.signature,
        )
}

/// A relay's public key, from its peer id: only identity multihashes
/// carry the key (Ed25519 peer ids do).
pub(crate) fn relay_key(relay: &PeerId) -> Option<libp2p::identity::PublicKey> {
    let hash: &libp2p::multihash::Multihash<64> = relay.as_ref();
    if hash.code() != 0 {
        return None;
    }
    libp2p::identity::PublicKey::try_decode_protobuf(hash.digest()).ok()
}

/// What a purge of one mailbox on one relay came to.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PurgeOutcome {
    /// The relay.
    pub relay: PeerId,
    /// Its address.
    pub addr: libp2p::Multiaddr,
    /// Its signed receipt (checked), or why there is none.
    pub result: Result<PurgeReceipt, String>,
}

/// Deletes each of this device's mailboxes (one per key) on each relay;
/// one outcome per relay and mailbox. A receipt counts only when the
/// relay's own key signed it for that mailbox.
pub(crate) async fn purge(
    net: Network,
    relays: Vec<Relay>,
    keys: Vec<Arc<EpochKey>>,
) -> Vec<PurgeOutcome> {
    let mut out = Vec::new();
    for relay in &relays {
        for key in &keys {
            let result = purge_one(&net, relay, key).await;
            let unreachable = matches!(result, Err(MailboxFailure::Net(_)));
            out.push(PurgeOutcome {
                relay: relay.peer,
                addr: relay.addr.clone(),
                result: result.map_err(|e| e.to_string()),
            });
            // The relay is down: its other mailboxes are not tried now.
            if unreachable {
                break;
            }
        }
    }
    out
}

async fn purge_one(
    net: &Network,
    relay: &Relay,
    key: &EpochKey,
) -> Result<PurgeReceipt, MailboxFailure> {
    let mailbox = key.mailbox();
    let params = PurgeParams { mailbox };
    let purge = authorize(
        key,
        &relay.peer.to_bytes(),
        nonce(net, relay).await?,
        params,
    )?;
    match request(net, relay, &MailboxRequest::Purge(purge)).await? {
        MailboxResponse::Purged(receipt)
            if purge_receipt_is_valid(&receipt, &relay.peer, &mailbox) =>
        {
            Ok(receipt)
        }
        _ => Err(MailboxFailure::Malformed(
            "no valid receipt in answer to a purge".into(),
        )),
    }
}

/// A purge receipt counts when it is for this mailbox and signed by the
/// relay's own key.
fn purge_receipt_is_valid(receipt: &PurgeReceipt, relay: &PeerId, mailbox: &MailboxId) -> bool {
    let Some(key) = relay_key(relay) else {
        return false;
    };
    receipt.version == VERSION
        && receipt.mailbox == *mailbox
        && key.verify(
            &PurgeReceipt::signed_bytes(&receipt.mailbox, receipt.removed, receipt.purged_at),
            &receipt.signature,
        )
}

/// Most pages one drain fetches from one mailbox; the rest waits for the
/// next drain, so a relay that never stops sending holds up no other.
const MAX_PAGES: usize = 256;

/// A page fetched from one of this device's mailboxes. The engine stores
/// what it can and answers with the ids the relay may delete.
pub(crate) struct Page {
    /// The epoch of the mailbox.
    pub(crate) epoch: u64,
    pub(crate) envelopes: Vec<StoredEnvelope>,
    pub(crate) done: oneshot::Sender<Vec<u64>>,
}

/// What a drain did.
#[derive(Debug, Default)]
pub(crate) struct Drained {
    /// Envelopes fetched.
    pub(crate) fetched: usize,
    /// Some relay could not be asked (try again soon).
    pub(crate) failed: bool,
}

/// Empties this device's mailboxes: for each relay, each epoch's key, the
/// oldest first (room state and keys come before what they unlock). The
/// `former` relays (no longer listed, maybe still holding mail) are asked
/// too, but a failure there does not count.
pub(crate) async fn drain(
    net: Network,
    relays: Vec<Relay>,
    former: Vec<Relay>,
    keys: Vec<Arc<EpochKey>>,
    open: Vec<Arc<EpochKey>>,
    pages: mpsc::Sender<Page>,
) -> Drained {
    let mut drained = Drained::default();
    // Former relays are only drained: contacts no longer deposit there.
    // An open that fails is tried again at the next drain; a relay that
    // cannot be reached fails the fetches below too, which count.
    for relay in &relays {
        for key in &open {
            if let Err(e) = open_one(&net, relay, key).await {
                tracing::debug!(error = %e, "could not open a mailbox");
                if matches!(e, MailboxFailure::Net(_) | MailboxFailure::Stopped) {
                    break;
                }
            }
        }
    }
    let all = relays.iter().map(|r| (r, true));
    for (relay, counts) in all.chain(former.iter().map(|r| (r, false))) {
        for key in &keys {
            match drain_one(&net, relay, key, &pages).await {
                Ok(n) => drained.fetched += n,
                Err(MailboxFailure::Stopped) => return drained,
                Err(e) => {
                    tracing::debug!(error = %e, "could not drain a mailbox");
                    drained.failed |= counts;
                    // The relay is likely down: its other epochs too.
                    if matches!(e, MailboxFailure::Net(_)) {
                        break;
                    }
                }
            }
        }
    }
    drained
}

async fn nonce(net: &Network, relay: &Relay) -> Result<[u8; 32], MailboxFailure> {
    match request(net, relay, &MailboxRequest::Challenge { version: VERSION }).await? {
        MailboxResponse::Nonce(nonce) => Ok(nonce),
        _ => Err(MailboxFailure::Malformed(
            "no nonce in answer to a challenge".into(),
        )),
    }
}

/// Opens (or keeps open) the mailbox of `key`'s epoch on `relay`, with
/// the epoch's deposit check key.
async fn open_one(net: &Network, relay: &Relay, key: &EpochKey) -> Result<(), MailboxFailure> {
    let params = OpenParams {
        mailbox: key.mailbox(),
        check: key.deposit_check(),
    };
    let open = authorize(
        key,
        &relay.peer.to_bytes(),
        nonce(net, relay).await?,
        params,
    )?;
    match request(net, relay, &MailboxRequest::Open(open)).await? {
        MailboxResponse::Opened => Ok(()),
        _ => Err(MailboxFailure::Malformed(
            "no confirmation in answer to an open".into(),
        )),
    }
}

async fn drain_one(
    net: &Network,
    relay: &Relay,
    key: &EpochKey,
    pages: &mpsc::Sender<Page>,
) -> Result<usize, MailboxFailure> {
    let relay_id = relay.peer.to_bytes();
    let mailbox = key.mailbox();
    let mut after = 0;
    let mut fetched = 0;
    for _ in 0..MAX_PAGES {
        let params = FetchParams {
            mailbox,
            after,
            limit: MAX_FETCH_ITEMS,
        };
        let fetch = authorize(key, &relay_id, nonce(net, relay).await?, params)?;
        let (mut items, more) = match request(net, relay, &MailboxRequest::Fetch(fetch)).await? {
            MailboxResponse::Envelopes { items, more } => (items, more),
            _ => {
                return Err(MailboxFailure::Malformed(
                    "no envelopes in answer to a fetch".into(),
                ));
            }
        };
        // No more than asked for; ids only go up (a relay that says
        // otherwise is not followed).
        items.truncate(usize::from(MAX_FETCH_ITEMS));
        let last = items.iter().map(|e| e.id).max().unwrap_or(after);
        if items.is_empty() || last <= after {
            return Ok(fetched);
        }
        after = last;
        fetched += items.len();
        let (done, taken) = oneshot::channel();
        pages
            .send(Page {
                epoch: key.epoch(),
                envelopes: items,
                done,
            })
            .await
            .map_err(|_| MailboxFailure::Stopped)?;
        let ids = taken.await.map_err(|_| MailboxFailure::Stopped)?;
        for chunk in ids.chunks(MAX_ACK_IDS) {
            let params = AckParams {
                mailbox,
                ids: chunk.to_vec(),
            };
            let ack = authorize(key, &relay_id, nonce(net, relay).await?, params)?;
            request(net, relay, &MailboxRequest::Ack(ack)).await?;
        }
        if !more {
            return Ok(fetched);
        }
    }
    Ok(fetched)
}
