//! SafeMeet cryptography: identities, device certificates, device lists,
//! end-to-end encryption and encryption at rest.
//!
//! - [`identity`]: a user's master key (its public half *is* the
//!   [`UserId`](safemeet_proto::UserId)) and a device's keys: an Olm account
//!   (vodozemac), a libp2p keypair and a mailbox key.
//! - [`certificate`]: signing and verifying device certificates, device lists
//!   and profiles. Verification returns [`Verified`] records only; every
//!   failure has its own [`Error`] variant.
//! - [`account`]: the bundle a device keeps about its own user.
//! - [`at_rest`]: a random data key wrapped by Argon2id(passphrase); values
//!   sealed with XChaCha20-Poly1305 bound to their keyspace and key; key
//!   names as keyed hashes. [`EncryptedStore`] puts this in front of any
//!   [`Store`](safemeet_store::Store).
//! - [`machine`]: the end-to-end encryption machine: Olm sessions between
//!   devices, Megolm sessions for rooms, rotation, replay protection, sealed
//!   sender checks, committed-before-released ciphertext.
//! - [`verification`]: interactive device verification with a short
//!   authentication string (emoji or numbers two users compare), as a
//!   sans-I/O state machine per side.
//!
//! This crate does no I/O of its own and never reads the clock: time is
//! passed in as a [`Timestamp`](safemeet_proto::Timestamp). Secrets are held
//! in zeroizing types (ours, vodozemac's and the dalek crates'), encoded into
//! exactly-sized zeroizing buffers, and never printed by `Debug`. Copies made
//! by third-party code (a serde_json pickle string, protobuf key bytes) are
//! wiped where we own them; beyond that Rust gives no guarantee.
//!
//! ```
//! use safemeet_crypto::{account::Account, certificate};
//! use safemeet_proto::{DisplayName, Timestamp, Username};
//!
//! let now = Timestamp::from_millis(1_700_000_000_000).unwrap();
//! let alice = Account::create(
//!     Username::new("alice").unwrap(),
//!     DisplayName::new("Alice").unwrap(),
//!     vec![],
//!     now,
//! ).unwrap();
//! let cert = certificate::verify_device_certificate(alice.certificate(), &alice.user_id()).unwrap();
//! assert_eq!(cert.device_id, alice.device_id());
//! ```

pub mod account;
pub mod archive;
pub mod at_rest;
pub mod attachment;
pub mod certificate;
mod encrypted_store;
mod error;
pub mod header;
pub mod identity;
pub mod link;
pub mod machine;
pub mod mailbox;
pub mod security_log;
pub mod verification;

pub use certificate::Verified;
pub use encrypted_store::{
    DumpedRecord, EncryptedBatch, EncryptedStore, OrderedName, OrderedRecord, PointName,
};
pub use error::Error;
