//! The SafeMeet relay: keeps end-to-end encrypted envelopes for devices
//! that are offline, in mailboxes only their owners can read or empty,
//! while learning as little as possible.
//!
//! - [`store`]: mailboxes on disk (sled through the store traits), with
//!   per-mailbox and global quotas counted in bytes as on disk, expiry,
//!   and early expiry of mailboxes never fetched; nothing about depositors.
//! - [`service`]: the `/safemeet/mailbox/1` rules (message version 2):
//!   mailboxes opened by their owner, deposits tagged with the mailbox's
//!   deposit check key and answered with signed receipts, opens, fetches
//!   and acks signed by the mailbox key over single-use nonces, spent
//!   nonces kept per mailbox.
//! - [`node`]: the relay's libp2p node (identify, ping, Kademlia server,
//!   circuit relay v2, AutoNAT v2 server, the mailbox protocol), which
//!   groups requests so one flush serves many, and limits each peer's
//!   requests and bytes.
//! - [`metrics`]: opt-in Prometheus metrics and a JSON `/status`, counters
//!   only, to an allowlist.
//! - [`config`]: the operator's limits.
//! - [`Error`]: one error type for all of it.

pub mod config;
pub mod config_file;
mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod metrics;
pub mod node;
mod quota;
pub mod service;
pub mod store;

pub use config::Limits;
pub use config_file::FileConfig;
pub use error::Error;
pub use service::MailboxService;
pub use store::MailboxStore;
