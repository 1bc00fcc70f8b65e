//! Relay mailboxes: a mailbox id is derived from the mailbox's Ed25519 key,
//! and fetches and acks are signed by that key over a relay's nonce (see
//! `safemeet_proto::mailbox`). A relay checks both without knowing who owns
//! the mailbox.
//!
//! **Epochs.** A device's certificate holds its long-term mailbox key `A`,
//! which only its contacts see. The mailbox of epoch `e` (a UTC day) has the
//! key `A_e = h_e·A` with `h_e = H(A, e)` reduced to a scalar, and its owner
//! signs with `a_e = h_e·a` (key blinding, as Tor v3 onion services do). A
//! contact derives `A_e`, and so the mailbox id, from `A` alone; it cannot
//! sign for it. A relay sees only `A_e`; without `A` it cannot tell that
//! two epochs' mailboxes belong to one device.
//!
//! **Deposit credential.** A relay keeps only what is deposited into a
//! mailbox its owner has opened, with a tag keyed by the epoch's *deposit
//! check key* `check_e = KDF(A, e)` ([`deposit_check_key`]). Whoever holds
//! `A` (the owner's contacts: it travels in the certificate, over Olm or in
//! an invite) derives it; the owner hands it to the relay when it opens the
//! mailbox. Every contact derives the same key, so a tag shows the relay
//! that a depositor holds it and nothing of which contact it is. The relay
//! holding `check_e` could tag deposits itself: it could always store junk,
//! and the owner drops what does not open (see [`EpochKey::open`]).

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use curve25519_dalek::Scalar;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use ed25519_dalek::VerifyingKey;
use ed25519_dalek::hazmat::{ExpandedSecretKey, raw_sign};
use rand::RngCore;
use rand::rngs::OsRng;
use safemeet_proto::mailbox::{Authorized, SignedParams, VERSION};
use safemeet_proto::{MailboxId, Timestamp};
use sha2::{Digest, Sha512};
use vodozemac::{Ed25519PublicKey, Ed25519SecretKey, Ed25519Signature};

use crate::Error;

const MAILBOX_ID_CONTEXT: &str = "safemeet/v1 mailbox id";
const BLINDING_CONTEXT: &str = "safemeet/v1 mailbox blinding";
const PREFIX_CONTEXT: &str = "safemeet/v1 mailbox blinded nonce prefix";
const SEAL_CONTEXT: &str = "safemeet/v1 mailbox seal";
const CHECK_CONTEXT: &str = "safemeet/v2 mailbox deposit check key";
const TAG_CONTEXT: &[u8] = b"safemeet/v2/mailbox/deposit-tag";

pub use safemeet_proto::mailbox::SEAL_OVERHEAD;

/// Length of a mailbox epoch: one UTC day.
pub const EPOCH_MILLIS: u64 = 24 * 60 * 60 * 1000;

/// The epoch `at` falls in.
pub fn epoch_of(at: Timestamp) -> u64 {
    at.as_millis() / EPOCH_MILLIS
}

/// The blinding factor of `epoch` for the long-term mailbox key `key`.
fn blinding(key: &[u8; 32], epoch: u64) -> Scalar {
    let mut hasher = blake3::Hasher::new_derive_key(BLINDING_CONTEXT);
    hasher.update(key);
    hasher.update(&epoch.to_be_bytes());
    let mut wide = [0u8; 64];
    hasher.finalize_xof().fill(&mut wide);
    Scalar::from_bytes_mod_order_wide(&wide)
}

/// The public key of the mailbox of `epoch`, from a device's long-term
/// mailbox key (as its certificate holds it): what a contact deposits to.
pub fn epoch_public_key(key: &[u8; 32], epoch: u64) -> Result<[u8; 32], Error> {
    Ok((blinding(key, epoch) * point(key)?).compress().to_bytes())
}

/// The mailbox id of `epoch` for a device's long-term mailbox key.
pub fn epoch_mailbox(key: &[u8; 32], epoch: u64) -> Result<MailboxId, Error> {
    Ok(mailbox_id(&epoch_public_key(key, epoch)?))
}

/// The deposit check key of `epoch` for a device's long-term mailbox key
/// (see the module docs): what a contact tags deposits with, and what the
/// owner gives a relay when it opens that epoch's mailbox. One-way: it
/// tells nothing of `key`, nor of another epoch's.
pub fn deposit_check_key(key: &[u8; 32], epoch: u64) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new_derive_key(CHECK_CONTEXT);
    hasher.update(key);
    hasher.update(&epoch.to_be_bytes());
    *hasher.finalize().as_bytes()
}

/// The tag of a deposit of `envelope` into `mailbox` on the relay `relay`
/// (its peer id's bytes), keyed with the mailbox's check key: bound to the
/// relay too, so one relay cannot pass a deposit on to another.
pub fn deposit_tag(
    check: &[u8; 32],
    relay: &[u8],
    mailbox: &MailboxId,
    envelope: &[u8],
) -> [u8; 32] {
    deposit_tag_of_digest(check, relay, mailbox, blake3::hash(envelope).as_bytes())
}

/// [`deposit_tag`] from the envelope's BLAKE3 digest (which a relay
/// computes anyway, for the receipt).
pub fn deposit_tag_of_digest(
    check: &[u8; 32],
    relay: &[u8],
    mailbox: &MailboxId,
    digest: &[u8; 32],
) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new_keyed(check);
    hasher.update(TAG_CONTEXT);
    hasher.update(&(relay.len() as u64).to_be_bytes());
    hasher.update(relay);
    hasher.update(mailbox.as_bytes());
    hasher.update(digest);
    *hasher.finalize().as_bytes()
}

/// Whether `tag` is [`deposit_tag_of_digest`]'s, compared in constant time.
pub fn deposit_tag_is_valid(
    check: &[u8; 32],
    relay: &[u8],
    mailbox: &MailboxId,
    digest: &[u8; 32],
    tag: &[u8; 32],
) -> bool {
    blake3::Hash::from(deposit_tag_of_digest(check, relay, mailbox, digest))
        == blake3::Hash::from(*tag)
}

fn point(key: &[u8; 32]) -> Result<EdwardsPoint, Error> {
    let invalid = Error::InvalidKey { what: "mailbox" };
    let point = CompressedEdwardsY(*key).decompress().ok_or(invalid)?;
    if point.is_small_order() {
        return Err(Error::InvalidKey { what: "mailbox" });
    }
    Ok(point)
}

fn seal_cipher(
    shared: &EdwardsPoint,
    ephemeral: &[u8; 32],
    recipient: &[u8; 32],
) -> ChaCha20Poly1305 {
    let mut hasher = blake3::Hasher::new_derive_key(SEAL_CONTEXT);
    hasher.update(shared.compress().as_bytes());
    hasher.update(ephemeral);
    hasher.update(recipient);
    let mut key = *hasher.finalize().as_bytes();
    let cipher = ChaCha20Poly1305::new(Key::from_slice(&key));
    zeroize::Zeroize::zeroize(&mut key);
    cipher
}

/// Seals a frame for the owner of the mailbox whose epoch public key is
/// `epoch_key` (see [`epoch_public_key`]): a fresh key exchange with it
/// (ephemeral `r`, shared point `8·r·A_e`) and ChaCha20-Poly1305 under a
/// key derived from it. What a relay stores is then fresh random bytes per
/// copy: the same message left for two members of a room cannot be
/// matched, and nothing of the frame inside (its Olm or Megolm session
/// ids) can link one day's mailbox to another's.
pub fn seal(epoch_key: &[u8; 32], frame: &[u8]) -> Result<Vec<u8>, Error> {
    let recipient = point(epoch_key)?;
    let mut wide = [0u8; 64];
    OsRng.fill_bytes(&mut wide);
    let r = Scalar::from_bytes_mod_order_wide(&wide);
    zeroize::Zeroize::zeroize(&mut wide);
    let ephemeral = EdwardsPoint::mul_base(&r).compress().to_bytes();
    let shared = (r * recipient).mul_by_cofactor();
    let sealed = seal_cipher(&shared, &ephemeral, epoch_key)
        .encrypt(
            Nonce::from_slice(&[0; 12]),
            Payload {
                msg: frame,
                aad: &ephemeral,
            },
        )
        .map_err(|e| Error::Decryption {
            what: "mailbox seal",
            reason: e.to_string(),
        })?;
    let mut out = Vec::with_capacity(32 + sealed.len());
    out.extend_from_slice(&ephemeral);
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// The signing key of one epoch's mailbox, derived from the device's
/// long-term mailbox key. Zeroized on drop.
pub struct EpochKey {
    expanded: ExpandedSecretKey,
    public: VerifyingKey,
    epoch: u64,
    /// The epoch's deposit check key, handed to relays at open.
    check: [u8; 32],
}

impl std::fmt::Debug for EpochKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EpochKey")
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl EpochKey {
    /// Derives the key of `epoch` from the long-term secret.
    pub fn derive(secret: &Ed25519SecretKey, epoch: u64) -> Self {
        let mut seed = secret.to_bytes();
        let mut wide: [u8; 64] = Sha512::digest(seed.as_slice()).into();
        zeroize::Zeroize::zeroize(seed.as_mut_slice());
        let long_term = ExpandedSecretKey::from_bytes(&wide);
        zeroize::Zeroize::zeroize(&mut wide);
        let public_long_term = EdwardsPoint::mul_base(&long_term.scalar)
            .compress()
            .to_bytes();
        let factor = blinding(&public_long_term, epoch);
        let mut prefix = blake3::Hasher::new_derive_key(PREFIX_CONTEXT);
        prefix.update(&long_term.hash_prefix);
        prefix.update(&epoch.to_be_bytes());
        let expanded = ExpandedSecretKey {
            scalar: factor * long_term.scalar,
            hash_prefix: *prefix.finalize().as_bytes(),
        };
        let public = VerifyingKey::from(&expanded);
        let check = deposit_check_key(&public_long_term, epoch);
        Self {
            expanded,
            public,
            epoch,
            check,
        }
    }

    /// The epoch's deposit check key (see [`deposit_check_key`]), which the
    /// owner gives a relay when it opens the mailbox.
    pub fn deposit_check(&self) -> [u8; 32] {
        self.check
    }

    /// The epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The public key the relay sees.
    pub fn public_key(&self) -> [u8; 32] {
        self.public.to_bytes()
    }

    /// This epoch's mailbox id.
    pub fn mailbox(&self) -> MailboxId {
        mailbox_id(&self.public_key())
    }

    /// Opens what [`seal`] sealed for this epoch's mailbox.
    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, Error> {
        let failed = |reason: &str| Error::Decryption {
            what: "mailbox seal",
            reason: reason.to_owned(),
        };
        if sealed.len() < SEAL_OVERHEAD {
            return Err(failed("too short"));
        }
        let (ephemeral, body) = sealed.split_at(32);
        let ephemeral: [u8; 32] = ephemeral
            .try_into()
            .map_err(|_| failed("no ephemeral key"))?;
        let r = point(&ephemeral).map_err(|_| failed("a bad ephemeral key"))?;
        let shared = (self.expanded.scalar * r).mul_by_cofactor();
        seal_cipher(&shared, &ephemeral, &self.public_key())
            .decrypt(
                Nonce::from_slice(&[0; 12]),
                Payload {
                    msg: body,
                    aad: &ephemeral,
                },
            )
            .map_err(|_| failed("not sealed for this mailbox, or damaged"))
    }

    fn sign(&self, message: &[u8]) -> [u8; 64] {
        raw_sign::<Sha512>(&self.expanded, message, &self.public).to_bytes()
    }
}

/// The mailbox id that belongs to a mailbox public key.
pub fn mailbox_id(key: &[u8; 32]) -> MailboxId {
    MailboxId::from_bytes(blake3::derive_key(MAILBOX_ID_CONTEXT, key))
}

/// Signs `params` with an epoch's mailbox key for the relay `relay` (its
/// peer id's bytes), which handed out `nonce`.
pub fn authorize<P: SignedParams>(
    secret: &EpochKey,
    relay: &[u8],
    nonce: [u8; 32],
    params: P,
) -> Result<Authorized<P>, Error> {
    let key = secret.public_key();
    let message = Authorized::signed_bytes(&key, relay, &nonce, &params)?;
    let signature = secret.sign(&message);
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
        let owner = EpochKey::derive(&Ed25519SecretKey::new(), 7);
        let mailbox = owner.mailbox();
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
        let stranger = EpochKey::derive(&Ed25519SecretKey::new(), 7);
        let other = authorize(&stranger, relay, [1; 32], params.clone()).unwrap();
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

    #[test]
    fn contacts_derive_each_epochs_mailbox_and_only_the_owner_signs_for_it() {
        let secret = Ed25519SecretKey::new();
        let long_term = *secret.public_key().as_bytes();
        let relay = b"relay";
        let mut seen = std::collections::HashSet::new();
        for epoch in [0, 1, 2, 20_000] {
            let key = EpochKey::derive(&secret, epoch);
            // What a contact computes from the certificate's key alone.
            assert_eq!(
                epoch_public_key(&long_term, epoch).unwrap(),
                key.public_key()
            );
            assert_eq!(epoch_mailbox(&long_term, epoch).unwrap(), key.mailbox());
            // Neither the long-term key nor another epoch's shows up.
            assert_ne!(key.public_key(), long_term);
            assert!(seen.insert(key.public_key()));
            // The blinded key signs valid, checkable requests.
            let params = FetchParams {
                mailbox: key.mailbox(),
                after: 0,
                limit: 1,
            };
            check(
                &authorize(&key, relay, [3; 32], params.clone()).unwrap(),
                relay,
            )
            .unwrap();
            // Another epoch's key cannot sign for this mailbox.
            let other = EpochKey::derive(&secret, epoch + 1);
            assert!(check(&authorize(&other, relay, [3; 32], params).unwrap(), relay).is_err());
        }
        assert_eq!(
            epoch_of(Timestamp::from_millis(EPOCH_MILLIS * 3 + 5).unwrap()),
            3
        );
    }

    #[test]
    fn contacts_and_the_owner_derive_one_check_key_per_epoch_and_tags_bind_everything() {
        let secret = Ed25519SecretKey::new();
        let long_term = *secret.public_key().as_bytes();
        let owner = EpochKey::derive(&secret, 9);
        // What a contact derives from the certificate's key is what the
        // owner hands the relay; another epoch's differs.
        assert_eq!(deposit_check_key(&long_term, 9), owner.deposit_check());
        assert_ne!(deposit_check_key(&long_term, 10), owner.deposit_check());
        let check = owner.deposit_check();
        let (mailbox, envelope) = (owner.mailbox(), b"sealed".as_slice());
        let digest = *blake3::hash(envelope).as_bytes();
        let tag = deposit_tag(&check, b"relay", &mailbox, envelope);
        assert!(deposit_tag_is_valid(
            &check, b"relay", &mailbox, &digest, &tag
        ));
        // Another relay, mailbox, envelope or key: not valid.
        assert!(!deposit_tag_is_valid(
            &check, b"other", &mailbox, &digest, &tag
        ));
        let other_box = EpochKey::derive(&secret, 10).mailbox();
        assert!(!deposit_tag_is_valid(
            &check, b"relay", &other_box, &digest, &tag
        ));
        let other_digest = *blake3::hash(b"sealed!").as_bytes();
        assert!(!deposit_tag_is_valid(
            &check,
            b"relay",
            &mailbox,
            &other_digest,
            &tag
        ));
        let stranger = deposit_check_key(&[7; 32], 9);
        assert!(!deposit_tag_is_valid(
            &stranger, b"relay", &mailbox, &digest, &tag
        ));
    }

    #[test]
    fn a_key_of_small_order_or_no_point_is_refused() {
        // The identity point: of small order.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert!(epoch_public_key(&identity, 1).is_err());
        // y = 2 is on no point of the curve.
        let mut off_curve = [0u8; 32];
        off_curve[0] = 2;
        assert!(CompressedEdwardsY(off_curve).decompress().is_none());
        assert!(epoch_public_key(&off_curve, 1).is_err());
    }

    #[test]
    fn a_sealed_deposit_opens_only_for_its_epochs_owner_and_never_repeats() {
        let secret = Ed25519SecretKey::new();
        let long_term = *secret.public_key().as_bytes();
        let public = epoch_public_key(&long_term, 9).unwrap();
        let frame = b"a padded frame".to_vec();
        let (one, two) = (
            seal(&public, &frame).unwrap(),
            seal(&public, &frame).unwrap(),
        );
        assert_ne!(one, two, "each copy is fresh bytes");
        assert_eq!(one.len(), frame.len() + SEAL_OVERHEAD);
        let owner = EpochKey::derive(&secret, 9);
        assert_eq!(owner.open(&one).unwrap(), frame);
        assert_eq!(owner.open(&two).unwrap(), frame);
        // Another epoch's key, another device's, or a changed byte: refused.
        assert!(EpochKey::derive(&secret, 10).open(&one).is_err());
        assert!(
            EpochKey::derive(&Ed25519SecretKey::new(), 9)
                .open(&one)
                .is_err()
        );
        let mut damaged = one.clone();
        damaged[40] ^= 1;
        assert!(owner.open(&damaged).is_err());
        assert!(owner.open(&one[..SEAL_OVERHEAD - 1]).is_err());
    }
}
