//! Encryption at rest.
//!
//! Key hierarchy:
//! - a random 32-byte **data key**, made once per profile;
//! - wrapped (XChaCha20-Poly1305) by a key from **Argon2id(passphrase, salt)**;
//!   the wrapped key, salt and KDF parameters form the [`KeyFile`], which
//!   holds no identifier and nothing else secret;
//! - from the data key, BLAKE3 `derive_key` gives a **value key** (sealing
//!   values) and a **name key** (keyed hashes of key names), with distinct
//!   contexts.
//!
//! A sealed value is `version (1) ‖ nonce (24) ‖ ciphertext ‖ tag (16)` with
//! AAD = `"safemeet/store/v1" ‖ keyspace id ‖ key length (u32 BE) ‖ key`, so a
//! value moved to another key or keyspace fails to open. Nonces are random:
//! 192 bits make collisions negligible at any volume a device will write.
//!
//! Destroying the key file (or the data key inside it) makes everything in
//! the store unreadable: sled does not overwrite deleted values, so this
//! crypto-shredding is how account deletion removes data.

use std::fmt;

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::{Aead, AeadInPlace, KeyInit, Payload};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use rand::RngCore;
use rand::rngs::OsRng;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::Error;
use safemeet_proto::codec;
use safemeet_store::Keyspace;

/// Context for the value-sealing key.
const VALUE_KEY_CONTEXT: &str = "safemeet v1 store value key";
/// Context for the key-name hashing key.
const NAME_KEY_CONTEXT: &str = "safemeet v1 store key-name key";
/// AAD prefix of sealed values.
const VALUE_AAD: &[u8] = b"safemeet/store/v1";
/// AAD prefix of the wrapped data key.
const KEYFILE_AAD: &[u8] = b"safemeet/keyfile/v1";
/// Sealed-value format version.
const SEALED_VERSION: u8 = 1;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// Values at least this long are sealed and opened with the vector
/// Poly1305: its per-call setup (≈1.2 µs) pays off only on long inputs.
const WIDE_FROM: usize = 2048;

/// A passphrase. Zeroized on drop; `Debug` does not print it.
pub struct Passphrase(Zeroizing<String>);

impl Passphrase {
    /// Wraps a passphrase.
    pub fn new(p: impl Into<String>) -> Self {
        Self(Zeroizing::new(p.into()))
    }

    /// The passphrase text.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Passphrase([scrubbed])")
    }
}

/// Least Argon2id memory accepted from a key file: OWASP's minimum, 19 MiB,
/// the default of key files written before [`KdfParams::default`] rose.
/// Such a key file still opens, and is then wrapped again under the
/// default ([`KdfParams::is_below_default`]).
const MIN_KDF_MEMORY_KIB: u32 = 19 * 1024;
/// Argon2id memory for new key files: 64 MiB, RFC 9106's second
/// recommended option and four times what a guesser's GPU core must hold
/// per guess under OWASP's minimum.
const DEFAULT_KDF_MEMORY_KIB: u32 = 64 * 1024;
/// Argon2id passes for new key files (RFC 9106's option for 64 MiB).
const DEFAULT_KDF_PASSES: u32 = 3;
/// Most Argon2id memory accepted from a key file: 1 GiB.
const MAX_KDF_MEMORY_KIB: u32 = 1024 * 1024;

/// Argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_cost_kib: u32,
    /// Iterations.
    pub t_cost: u32,
    /// Parallelism.
    pub p_cost: u32,
}

impl Default for KdfParams {
    /// 64 MiB, 3 passes, 1 lane (RFC 9106, section 4, second option). About
    /// 0.2 s on one core of a small server (docs/perf.md, "Unlock"): slow
    /// for a guesser, and an unlock a person waits for only when the daemon
    /// starts or a command runs without it.
    fn default() -> Self {
        Self {
            m_cost_kib: DEFAULT_KDF_MEMORY_KIB,
            t_cost: DEFAULT_KDF_PASSES,
            p_cost: 1,
        }
    }
}

impl KdfParams {
    /// Whether these parameters cost a guesser less than the default: a
    /// key file written under them is wrapped again once it is opened.
    pub fn is_below_default(&self) -> bool {
        let d = Self::default();
        self.m_cost_kib < d.m_cost_kib || self.t_cost < d.t_cost
    }

    fn validate(&self) -> Result<Params, Error> {
        // Bounds keep an edited key file from weakening the KDF below the
        // default, and from asking for absurd work: at most 1 GiB (a failed
        // allocation inside Argon2 would abort the process) and 8 passes,
        // a few seconds at worst.
        let ok = (MIN_KDF_MEMORY_KIB..=MAX_KDF_MEMORY_KIB).contains(&self.m_cost_kib)
            && (2..=8).contains(&self.t_cost)
            && (1..=4).contains(&self.p_cost);
        if !ok {
            return Err(Error::InvalidKeyFile("KDF parameters out of bounds"));
        }
        Params::new(self.m_cost_kib, self.t_cost, self.p_cost, Some(32))
            .map_err(|e| Error::Kdf(e.to_string()))
    }

    fn derive(&self, passphrase: &Passphrase, salt: &[u8]) -> Result<Zeroizing<[u8; 32]>, Error> {
        let params = self.validate()?;
        let mut out = Zeroizing::new([0u8; 32]);
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_into(passphrase.expose().as_bytes(), salt, out.as_mut())
            .map_err(|e| Error::Kdf(e.to_string()))?;
        Ok(out)
    }
}

/// The random key everything in a store is encrypted under.
pub struct DataKey(Zeroizing<[u8; 32]>);

impl DataKey {
    /// The key's bytes, for audits and tests that check where a key may
    /// not be (an export, a deleted home). Never log or send them.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    /// A fresh random key.
    pub fn generate() -> Self {
        let mut k = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(k.as_mut());
        Self(k)
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey([scrubbed])")
    }
}

/// The data key wrapped under a passphrase, as stored beside the database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyFile {
    /// Format version; currently 1.
    pub format: u8,
    /// Argon2id parameters.
    pub kdf: KdfParams,
    /// Argon2 salt.
    pub salt: [u8; 16],
    /// Nonce of the wrapping.
    pub nonce: [u8; 24],
    /// The data key sealed under the passphrase key (32 + 16 bytes).
    pub wrapped_key: Vec<u8>,
}

impl KeyFile {
    /// Wraps `key` under `passphrase`.
    pub fn wrap(key: &DataKey, passphrase: &Passphrase, kdf: KdfParams) -> Result<Self, Error> {
        let mut salt = [0u8; 16];
        let mut nonce = [0u8; 24];
        OsRng.fill_bytes(&mut salt);
        OsRng.fill_bytes(&mut nonce);
        let kek = kdf.derive(passphrase, &salt)?;
        let aad = keyfile_aad(&kdf, &salt);
        let wrapped_key = XChaCha20Poly1305::new(kek.as_ref().into())
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: key.0.as_ref(),
                    aad: &aad,
                },
            )
            .map_err(|_| Error::Kdf("wrapping failed".into()))?;
        Ok(Self {
            format: 1,
            kdf,
            salt,
            nonce,
            wrapped_key,
        })
    }

    /// Unwraps the data key; [`Error::WrongPassphrase`] if it does not open.
    pub fn unwrap_key(&self, passphrase: &Passphrase) -> Result<DataKey, Error> {
        if self.format != 1 {
            return Err(Error::InvalidKeyFile("unknown format version"));
        }
        if self.wrapped_key.len() != 32 + TAG_LEN {
            return Err(Error::InvalidKeyFile("wrapped key has the wrong length"));
        }
        let kek = self.kdf.derive(passphrase, &self.salt)?;
        let aad = keyfile_aad(&self.kdf, &self.salt);
        let mut plain = XChaCha20Poly1305::new(kek.as_ref().into())
            .decrypt(
                XNonce::from_slice(&self.nonce),
                Payload {
                    msg: &self.wrapped_key,
                    aad: &aad,
                },
            )
            .map_err(|_| Error::WrongPassphrase)?;
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(&plain);
        plain.zeroize();
        Ok(DataKey(key))
    }

    /// Whether this key file should be wrapped again under the default
    /// parameters (it was written under weaker ones).
    pub fn needs_rewrap(&self) -> bool {
        self.kdf.is_below_default()
    }

    /// Encodes the key file (JSON: it is read by people debugging a profile).
    pub fn to_json(&self) -> Result<String, Error> {
        serde_json::to_string_pretty(self).map_err(|_| Error::InvalidKeyFile("cannot encode"))
    }

    /// Decodes a key file.
    pub fn from_json(text: &str) -> Result<Self, Error> {
        if text.len() > 4096 {
            return Err(Error::InvalidKeyFile("too large"));
        }
        serde_json::from_str(text).map_err(|_| Error::InvalidKeyFile("not a SafeMeet key file"))
    }
}

fn keyfile_aad(kdf: &KdfParams, salt: &[u8; 16]) -> Vec<u8> {
    let mut aad = KEYFILE_AAD.to_vec();
    aad.extend_from_slice(&kdf.m_cost_kib.to_be_bytes());
    aad.extend_from_slice(&kdf.t_cost.to_be_bytes());
    aad.extend_from_slice(&kdf.p_cost.to_be_bytes());
    aad.extend_from_slice(salt);
    aad
}

/// What a hashed key name is used as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum NameKind {
    /// The whole key of a point record.
    Point = 0,
    /// The prefix of ordered records.
    Ordered = 1,
    /// The value of a tag: a marker that a record exists with a given
    /// content hash (see `EncryptedStore::batch_put_tag`).
    TagValue = 2,
}

/// Seals and opens stored values and hashes key names, under keys derived
/// from a [`DataKey`].
pub struct StoreCipher {
    value: XChaCha20Poly1305,
    /// The same AEAD with the vector Poly1305, for long values (see
    /// [`WIDE_FROM`]).
    value_wide: chacha20poly1305_wide::XChaCha20Poly1305,
    name_key: Zeroizing<[u8; 32]>,
}

impl fmt::Debug for StoreCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StoreCipher([scrubbed])")
    }
}

impl StoreCipher {
    /// Derives the value and name keys.
    pub fn new(key: &DataKey) -> Self {
        let value_key = Zeroizing::new(blake3::derive_key(VALUE_KEY_CONTEXT, key.0.as_ref()));
        let name_key = Zeroizing::new(blake3::derive_key(NAME_KEY_CONTEXT, key.0.as_ref()));
        let wide_key = chacha20poly1305_wide::Key::from(*value_key);
        Self {
            value_wide:
                <chacha20poly1305_wide::XChaCha20Poly1305 as chacha20poly1305_wide::KeyInit>::new(
                    &wide_key,
                ),
            value: XChaCha20Poly1305::new(value_key.as_ref().into()),
            name_key,
        }
    }

    /// The keyed hash that stands in for an identifying key name. `kind`
    /// separates point names from ordered-record prefixes, so the two shapes
    /// never collide in one keyspace.
    pub fn hash_name(&self, keyspace: Keyspace, kind: NameKind, name: &[u8]) -> [u8; 32] {
        let mut h = blake3::Hasher::new_keyed(&self.name_key);
        h.update(&[keyspace.id(), kind as u8]);
        h.update(&(name.len() as u64).to_be_bytes());
        h.update(name);
        *h.finalize().as_bytes()
    }

    /// Seals `plaintext` for storage under `key` in `keyspace`.
    pub fn seal(&self, keyspace: Keyspace, key: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, Error> {
        let mut out = Vec::with_capacity(1 + NONCE_LEN + plaintext.len() + TAG_LEN);
        out.push(SEALED_VERSION);
        out.resize(1 + NONCE_LEN, 0);
        out.extend_from_slice(plaintext);
        self.seal_in_place(keyspace, key, out)
    }

    /// Seals the codec encoding of `value`, written straight into the
    /// sealed buffer and encrypted there: no plaintext copy is left behind
    /// and nothing is copied twice.
    pub fn seal_value<T: serde::Serialize + ?Sized>(
        &self,
        keyspace: Keyspace,
        key: &[u8],
        value: &T,
        max: usize,
    ) -> Result<Vec<u8>, Error> {
        let len = codec::encoded_len(value)?;
        if len > max {
            return Err(safemeet_proto::EncodeError::TooLarge { len, max }.into());
        }
        let mut out = Vec::with_capacity(1 + NONCE_LEN + len + TAG_LEN);
        out.push(SEALED_VERSION);
        out.resize(1 + NONCE_LEN + len, 0);
        codec::encode_into(value, &mut out[1 + NONCE_LEN..])?;
        self.seal_in_place(keyspace, key, out)
    }

    /// `out` holds the version byte, room for the nonce, and the plaintext;
    /// fills the nonce, encrypts in place and appends the tag.
    fn seal_in_place(
        &self,
        keyspace: Keyspace,
        key: &[u8],
        mut out: Vec<u8>,
    ) -> Result<Vec<u8>, Error> {
        rand::thread_rng().fill_bytes(&mut out[1..1 + NONCE_LEN]);
        let aad = ValueAad::new(keyspace, key);
        let aad = aad.as_slice();
        let (head, body) = out.split_at_mut(1 + NONCE_LEN);
        let err = || Error::SealedValue {
            keyspace: keyspace.name(),
        };
        let tag: [u8; TAG_LEN] = if body.len() >= WIDE_FROM {
            use chacha20poly1305_wide::aead::AeadInOut;
            let nonce = chacha20poly1305_wide::XNonce::try_from(&head[1..]).map_err(|_| err())?;
            self.value_wide
                .encrypt_inout_detached(&nonce, aad, body.into())
                .map_err(|_| err())?
                .into()
        } else {
            self.value
                .encrypt_in_place_detached(XNonce::from_slice(&head[1..]), aad, body)
                .map_err(|_| err())?
                .into()
        };
        out.extend_from_slice(&tag);
        Ok(out)
    }

    /// Opens a sealed value read from `key` in `keyspace`.
    pub fn open(
        &self,
        keyspace: Keyspace,
        key: &[u8],
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, Error> {
        let err = || Error::SealedValue {
            keyspace: keyspace.name(),
        };
        let (&version, rest) = sealed.split_first().ok_or_else(err)?;
        if version != SEALED_VERSION || rest.len() < NONCE_LEN + TAG_LEN {
            return Err(err());
        }
        let (nonce, rest) = rest.split_at(NONCE_LEN);
        let (ct, tag) = rest.split_at(rest.len() - TAG_LEN);
        let aad = value_aad(keyspace, key);
        let mut plain = Zeroizing::new(ct.to_vec());
        if plain.len() >= WIDE_FROM {
            use chacha20poly1305_wide::aead::AeadInOut;
            let nonce = chacha20poly1305_wide::XNonce::try_from(nonce).map_err(|_| err())?;
            let tag = chacha20poly1305_wide::Tag::try_from(tag).map_err(|_| err())?;
            self.value_wide
                .decrypt_inout_detached(&nonce, &aad, plain.as_mut_slice().into(), &tag)
                .map_err(|_| err())?;
        } else {
            self.value
                .decrypt_in_place_detached(
                    XNonce::from_slice(nonce),
                    &aad,
                    &mut plain,
                    Tag::from_slice(tag),
                )
                .map_err(|_| err())?;
        }
        Ok(plain)
    }
}

/// The AAD of a stored value, built on the stack for the usual key sizes.
struct ValueAad {
    buf: [u8; 96],
    len: usize,
    spill: Vec<u8>,
}

impl ValueAad {
    fn new(keyspace: Keyspace, key: &[u8]) -> Self {
        let len = VALUE_AAD.len() + 5 + key.len();
        let mut aad = Self {
            buf: [0; 96],
            len,
            spill: Vec::new(),
        };
        if len <= aad.buf.len() {
            let (head, rest) = aad.buf.split_at_mut(VALUE_AAD.len());
            head.copy_from_slice(VALUE_AAD);
            rest[0] = keyspace.id();
            rest[1..5].copy_from_slice(&(key.len() as u32).to_be_bytes());
            rest[5..5 + key.len()].copy_from_slice(key);
        } else {
            aad.spill = value_aad(keyspace, key);
        }
        aad
    }

    fn as_slice(&self) -> &[u8] {
        if self.spill.is_empty() {
            &self.buf[..self.len]
        } else {
            &self.spill
        }
    }
}

fn value_aad(keyspace: Keyspace, key: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(VALUE_AAD.len() + 5 + key.len());
    aad.extend_from_slice(VALUE_AAD);
    aad.push(keyspace.id());
    aad.extend_from_slice(&(key.len() as u32).to_be_bytes());
    aad.extend_from_slice(key);
    aad
}

#[cfg(test)]
#[path = "at_rest_tests.rs"]
mod tests;
