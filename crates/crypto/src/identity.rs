//! Master keys and device keys.

use std::fmt;

use libp2p_identity::{Keypair, PeerId};
use safemeet_proto::{DeviceId, UserId};
use vodozemac::olm::Account as OlmAccount;
use vodozemac::{Ed25519PublicKey, Ed25519SecretKey, Ed25519Signature};
use zeroize::Zeroizing;

use crate::Error;

/// Context for deriving a device id from a device's Ed25519 key.
const DEVICE_ID_CONTEXT: &str = "safemeet v1 device id from ed25519 key";

/// A user's master key. Its public half is the [`UserId`]. It signs device
/// certificates, device lists and profiles, nothing else.
pub struct MasterKey {
    secret: Ed25519SecretKey,
}

impl MasterKey {
    /// A fresh random master key.
    pub fn generate() -> Self {
        Self {
            secret: Ed25519SecretKey::new(),
        }
    }

    /// Restores a master key from its secret bytes.
    pub fn from_secret_bytes(bytes: &[u8; 32]) -> Self {
        Self {
            secret: Ed25519SecretKey::from_slice(bytes),
        }
    }

    /// The secret bytes, for sealed storage only.
    pub fn secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(*self.secret.to_bytes())
    }

    /// The user this key defines.
    pub fn user_id(&self) -> UserId {
        UserId::from_bytes(*self.secret.public_key().as_bytes())
    }

    /// Signs `context ‖ 0 ‖ message`.
    pub(crate) fn sign(&self, context: &[u8], message: &[u8]) -> [u8; 64] {
        self.secret
            .sign(&domain_message(context, message))
            .to_bytes()
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey")
            .field("user_id", &self.user_id())
            .finish_non_exhaustive()
    }
}

/// Prefixes a message with a domain-separation context, so a signature made
/// for one kind of record can never be valid for another.
pub(crate) fn domain_message(context: &[u8], message: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(context.len() + 1 + message.len());
    m.extend_from_slice(context);
    m.push(0);
    m.extend_from_slice(message);
    m
}

/// Checks `signature` over `context ‖ 0 ‖ message` under `key`.
pub(crate) fn verify(
    key: &[u8; 32],
    context: &[u8],
    message: &[u8],
    signature: &[u8; 64],
    what: &'static str,
    key_name: &'static str,
) -> Result<(), Error> {
    let key =
        Ed25519PublicKey::from_slice(key).map_err(|_| Error::InvalidKey { what: key_name })?;
    let sig = Ed25519Signature::from_slice(signature).map_err(|_| Error::BadSignature { what })?;
    key.verify(&domain_message(context, message), &sig)
        .map_err(|_| Error::BadSignature { what })
}

/// The device id that belongs to a device Ed25519 key.
pub fn device_id_for(ed25519_key: &[u8; 32]) -> DeviceId {
    let hash = blake3::derive_key(DEVICE_ID_CONTEXT, ed25519_key);
    let mut id = [0u8; DeviceId::LEN];
    id.copy_from_slice(&hash[..DeviceId::LEN]);
    DeviceId::from_bytes(id)
}

/// The keys of one device.
pub struct DeviceKeys {
    /// The Olm account: Curve25519 + Ed25519 identity keys, one-time keys.
    pub olm: OlmAccount,
    /// The libp2p identity of this device's node.
    pub libp2p: Keypair,
    /// Authorises fetching and deleting this device's relay mailbox.
    pub mailbox: Ed25519SecretKey,
}

impl DeviceKeys {
    /// Fresh random keys.
    pub fn generate() -> Self {
        Self {
            olm: OlmAccount::new(),
            libp2p: Keypair::generate_ed25519(),
            mailbox: Ed25519SecretKey::new(),
        }
    }

    /// The device id, derived from the Olm Ed25519 key.
    pub fn device_id(&self) -> DeviceId {
        device_id_for(self.olm.ed25519_key().as_bytes())
    }

    /// The libp2p peer id.
    pub fn peer_id(&self) -> PeerId {
        self.libp2p.public().to_peer_id()
    }
}

impl fmt::Debug for DeviceKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceKeys")
            .field("device_id", &self.device_id())
            .finish_non_exhaustive()
    }
}
