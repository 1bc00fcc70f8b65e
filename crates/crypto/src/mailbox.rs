//! Relay mailboxes: a mailbox id is derived from the mailbox's Ed25519 key,
//! and fetches and acks are signed by that key over a relay's nonce (see
//! `safemeet_proto::mailbox`). A relay checks both without knowing who owns
//! the mailbox; a device derives one key per epoch, so the ids of different
//! epochs cannot be linked by the relay.

use safemeet_proto::MailboxId;
use safemeet_proto::mailbox::{Authorized, SignedParams, VERSION};
use vodozemac::{Ed25519PublicKey, Ed25519SecretKey, Ed25519Signature};

use crate::Error;

const MAILBOX_ID_CONTEXT: &str = "safemeet/v1 mailbox id";

/// The mailbox id that belongs to a mailbox public key.
pub fn mailbox_id(key: &[u8; 32]) -> MailboxId {
    MailboxId::from_bytes(blake3::derive_key(MAILBOX_ID_CONTEXT, key))
}

/// Signs `params` for the relay `relay` (its peer id's bytes), which
/// handed out `nonce`.
pub fn authorize<P: SignedParams>(
    secret: &Ed25519SecretKey,
    relay: &[u8],
    nonce: [u8; 32],
    params: P,
) -> Result<Authorized<P>, Error> {
    let key = secret.public_key().as_bytes().to_owned();
    let message = Authorized::signed_bytes(&key, relay, &nonce, &params)?;
    let signature = secret.sign(&message).to_bytes();
    Ok(Authorized {
        version: VERSION,
        key,
        nonce,
        params,
        signature,
    })
}

/// Checks that `request` is signed, for the relay `relay` (its own peer
/// id's bytes), by the key its mailbox derives from. The nonce is the
/// relay's to check (that it issued it, once).
pub fn check<P: SignedParams>(request: &Authorized<P>, relay: &[u8]) -> Result<(), Error> {
    const WHAT: &str = "mailbox request";
    if request.version != VERSION {
        return Err(Error::InvalidRecord {
            what: WHAT,
            reason: "unknown version",
        });
    }
    if mailbox_id(&request.key) != request.params.mailbox() {
        return Err(Error::BadSignature { what: WHAT });
    }
    let key =
        Ed25519PublicKey::from_slice(&request.key).map_err(|_| Error::InvalidKey { what: WHAT })?;
    let signature = Ed25519Signature::from_slice(&request.signature)
        .map_err(|_| Error::BadSignature { what: WHAT })?;
    let message = Authorized::signed_bytes(&request.key, relay, &request.nonce, &request.params)?;
    key.verify(&message, &signature)
        .map_err(|_| Error::BadSignature { what: WHAT })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is a failure

    use safemeet_proto::mailbox::{AckParams, FetchParams};

    use super::*;

    #[test]
    fn only_the_mailbox_key_can_authorize_its_requests() {
        let owner = Ed25519SecretKey::new();
        let mailbox = mailbox_id(owner.public_key().as_bytes());
        let params = FetchParams {
            mailbox,
            after: 0,
            limit: 10,
        };
        let relay = b"relay one";
        let good = authorize(&owner, relay, [1; 32], params.clone()).unwrap();
        check(&good, relay).unwrap();
        // Meant for one relay, refused by another.
        assert!(check(&good, b"relay two").is_err());

        // Another key cannot read this mailbox, even with a valid signature.
        let other = authorize(&Ed25519SecretKey::new(), relay, [1; 32], params.clone()).unwrap();
        assert!(matches!(
            check(&other, relay),
            Err(Error::BadSignature { .. })
        ));
        // Nothing signed may change: nonce, parameters, kind.
        let mut moved = good.clone();
        moved.nonce = [2; 32];
        assert!(check(&moved, relay).is_err());
        let mut later = good.clone();
        later.params.after = 5;
        assert!(check(&later, relay).is_err());
        let as_ack = Authorized {
            version: good.version,
            key: good.key,
            nonce: good.nonce,
            params: AckParams {
                mailbox,
                ids: vec![],
            },
            signature: good.signature,
        };
        assert!(check(&as_ack, relay).is_err());
    }
}
