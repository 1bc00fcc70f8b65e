//! The SafeMeet wire and identifier vocabulary.
//!
//! This crate defines what crosses a boundary: identifiers ([`UserId`],
//! [`DeviceId`], [`RoomId`], [`EventId`], [`MailboxId`], [`Timestamp`]), the
//! outer [`Envelope`] that travels between nodes, the typed plaintext
//! [`event`]s that travel inside end-to-end encryption, the signed identity
//! records ([`identity`]), room secrets and the gossip topics derived from
//! them ([`room`]), the answer to a direct delivery ([`deliver`]), and the
//! one [`codec`] that turns all of them into bytes.
//!
//! It is **not** a place for cryptography, storage or networking: it never
//! touches a socket, a disk or the wall clock (the [`clock`] module only
//! *defines* how time enters; the edges of the system provide it).
//!
//! Every decoder here takes untrusted bytes: it checks sizes first, rejects
//! trailing and non-canonical bytes, and returns a [`DecodeError`] rather than
//! panicking.
//!
//! ```
//! use safemeet_proto::{codec, EventId};
//!
//! let id = EventId::from_bytes([7; 32]);
//! let text = id.to_string();
//! assert_eq!(text.parse::<EventId>().unwrap(), id);
//!
//! let bytes = codec::encode(&id).unwrap();
//! let back: EventId = codec::decode(&bytes, 64).unwrap();
//! assert_eq!(back, id);
//! ```

pub mod clock;
pub mod codec;
pub mod deliver;
pub mod envelope;
pub mod event;
pub mod file;
pub mod header;
mod id;
pub mod identity;
pub mod image;
pub mod invite;
pub mod limits;
pub mod link;
pub mod mailbox;
pub mod padding;
pub mod room;
mod room_state;
mod sensitive;
pub mod signal;
mod time;

pub use codec::{DecodeError, EncodeError};
pub use deliver::{DeliverAnswer, DeliverAnswerError};
pub use envelope::Envelope;
pub use id::{DeviceId, EventId, IdError, MailboxId, RoomId, UserId};
pub use identity::{DisplayName, Email, Username};
pub use room::{RoomSecret, RoomTopic};
pub use sensitive::Sensitive;
pub use time::Timestamp;
