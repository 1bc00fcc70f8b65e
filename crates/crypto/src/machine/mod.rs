//! The end-to-end encryption machine: Olm sessions between devices, Megolm
//! sessions for rooms, rotation, replay protection and sender checks.
//!
//! [`CryptoMachine`] is sans-I/O: it never touches a socket or the clock.
//! Time comes in as a [`Timestamp`]; state goes out through the store
//! traits, sealed by an [`EncryptedStore`]. The network layer pads the
//! envelopes it produces into frames, moves them, and hands back the
//! envelopes that arrive.
//!
//! # Rules it keeps
//! - **Commit before release.** Every call that produces ciphertext
//!   ([`CryptoMachine::encrypt_room_event`], [`CryptoMachine::encrypt_to_device`])
//!   writes the advanced ratchet *and* the outgoing envelopes (into the
//!   outbox) in one atomic batch and flushes it before it returns; the
//!   envelopes are only reachable through the returned values. There is no
//!   call that hands out ciphertext without that commit.
//!   [`CryptoMachine::encrypt_room_event_deferred`] commits without the
//!   flush and wraps its result in [`Unflushed`], whose contents only
//!   [`CryptoMachine::release`] hands out, after one flush for the group. If the commit fails the machine is
//!   poisoned and refuses further work, so in-memory state that ran ahead of
//!   the store is never used.
//! - **No index twice.** After an unclean shutdown (the machine was not
//!   [`closed`](CryptoMachine::close)) every outbound Megolm session is
//!   discarded and no Olm session from before is used for sending, because a
//!   store that lost the last writes could otherwise restore a ratchet that
//!   already encrypted a released message. Devices that lose their Olm
//!   session this way are reported in [`RoomSend::no_session`] and owed the
//!   room key from that message on.
//! - **Rotation.** A room's outbound session is replaced after
//!   [`ROTATION_MESSAGES`] messages, after [`ROTATION_PERIOD_MS`], and when a
//!   device it was shared with is no longer a recipient (a member left, a
//!   device was revoked). A joiner gets the current session at the current
//!   index: nothing earlier.
//! - **Replay.** Every decrypted (session, index) is recorded; a second
//!   decryption is [`Error::Replay`]. Every decrypted Olm message is
//!   recorded by hash; a second one is [`Error::DuplicateOlmMessage`].
//! - **Sealed sender.** The sender's signed device certificate is inside
//!   the ciphertext. The machine checks it against the master key it names
//!   and against that user's device list, which must be known (strangers,
//!   revoked and unlisted devices are refused, and leave no state behind),
//!   and that the key which decrypted the message belongs to that
//!   certificate: the Olm identity key for to-device messages, a device that
//!   shared the room key for room messages. Whether the sender may write in
//!   a room (membership) is the caller's check.
//! - **Signed one-time keys.** An outbound Olm session starts only from a
//!   one-time or fallback key signed by the device's certified key.
//! - **Late keys.** A room message whose key has not arrived is held in the
//!   store and decrypted when the key arrives: at most
//!   [`MAX_HELD_PER_SESSION`] messages and [`MAX_HELD_BYTES_PER_SESSION`]
//!   per session, [`MAX_HELD_BYTES`] in all, for at most [`HELD_TTL_MS`].
//!   Each held message is charged to a [`Holder`] (the caller names who
//!   handed it over: a peer, a room's gossip, a mailbox), which may hold at
//!   most [`MAX_HELD_SESSIONS_PER_HOLDER`] sessions and
//!   [`MAX_HELD_BYTES_PER_HOLDER`]; a holder over its quota makes room from
//!   its own oldest sessions, and when the whole store is full the holder
//!   holding the most gives way, so junk from one sender cannot push out
//!   another's messages.
//! - **Refused senders.** Users the caller refuses (blocked, removed) are
//!   refused as senders of to-device and room messages
//!   ([`Error::RefusedSender`]): nothing they send is decrypted into the
//!   store.
//! - **Canonical bytes.** Only the one encoding vodozemac would produce is
//!   accepted for an Olm or Megolm message, so a relay cannot alter a valid
//!   message's bytes (its [`event_id`], its replay record).
//!
//! Incoming work (decryption) is applied to the store but not flushed: the
//! caller flushes before it acknowledges a message to its sender, so one
//! flush can cover many messages. A crash before that flush loses only work
//! the sender will repeat.

mod devices;
#[doc(hidden)]
pub mod fuzzing;
mod held;
mod introduction;
mod megolm;
mod olm;
mod records;
mod verify;

use std::fmt;

use safemeet_proto::event::{RoomEvent, ToDeviceEvent, Verification};
use safemeet_proto::identity::{OneTimeKey, Signed};
use safemeet_proto::{DeviceId, Envelope, EventId, RoomId, Timestamp, UserId};
use safemeet_store::{Keyspace, Store};
use serde::{Deserialize, Serialize};

pub use self::devices::{DeviceInfo, DeviceListUpdate, DeviceTrust, Sender, SignedDeviceList};
pub use self::introduction::Introduced;
use self::records::{HeldIndexRecord, KeysRecord, RECORD_VERSION, RunRecord, name};
use crate::account::Account;
use crate::{EncryptedBatch, EncryptedStore, Error};

/// Messages after which a room's outbound session is replaced.
pub const ROTATION_MESSAGES: u64 = 100;
/// Age after which a room's outbound session is replaced: 7 days.
pub const ROTATION_PERIOD_MS: u64 = 7 * 24 * 3600 * 1000;
/// Age after which the fallback key is replaced: 7 days.
pub const FALLBACK_KEY_MAX_AGE_MS: u64 = 7 * 24 * 3600 * 1000;
/// One-time keys generated, signed and published at a time.
pub const ONE_TIME_KEY_BATCH: usize = 50;
/// Most one-time keys handed out by one call.
pub const MAX_KEYS_PER_CLAIM: usize = ONE_TIME_KEY_BATCH;
/// A device whose session broke is offered a new one at most this often: 1 hour.
pub const UNWEDGE_INTERVAL_MS: u64 = 3600 * 1000;
/// Most Megolm sessions with held messages.
pub const MAX_HELD_SESSIONS: usize = 256;
/// Most held messages per Megolm session.
pub const MAX_HELD_PER_SESSION: u64 = 128;
/// Most bytes held for one Megolm session: 1 MiB.
pub const MAX_HELD_BYTES_PER_SESSION: u64 = 1024 * 1024;
/// Most bytes held in all: 8 MiB. The holder holding the most makes room.
pub const MAX_HELD_BYTES: u64 = 8 * 1024 * 1024;
/// Most bytes held for one [`Holder`]: 1 MiB, an eighth of the whole, so
/// at least eight senders' messages fit side by side whatever one of
/// them sends.
pub const MAX_HELD_BYTES_PER_HOLDER: u64 = 1024 * 1024;
/// Most Megolm sessions held for one [`Holder`]: 32. An honest device
/// rarely waits for more than a few room keys at once (one per room it
/// shares with the sender); made-up session ids cost their holder its own
/// oldest sessions past this.
pub const MAX_HELD_SESSIONS_PER_HOLDER: usize = 32;
/// Held messages whose key has not come within 3 days are dropped.
pub const HELD_TTL_MS: u64 = 3 * 24 * 3600 * 1000;
/// Outbox sequence numbers reserved at a time, so the run record is not
/// rewritten with every send.
const OUTBOX_RESERVE: u64 = 4096;
/// Olm sessions kept per device (the oldest is dropped beyond this).
pub const MAX_OLM_SESSIONS_PER_DEVICE: usize = 8;

/// Where an outbox item goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Destination {
    /// To the members of a room (gossip and direct delivery).
    Room(RoomId),
    /// To one device.
    Device(UserId, DeviceId),
}

/// An encrypted envelope waiting in the outbox.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxItem {
    /// Format version; currently 1.
    pub version: u8,
    /// Where it goes.
    pub destination: Destination,
    /// The caller's own data about the send (event id, retry state, …).
    #[serde(with = "safemeet_proto::codec::bytes")]
    pub meta: Vec<u8>,
    /// The envelope (padding is deterministic, so it is added when the
    /// frame is made).
    pub envelope: Envelope,
}

/// The stored form of an [`OutboxItem`], borrowing its parts (the same
/// encoding).
#[derive(Serialize)]
struct OutboxItemRef<'a> {
    version: u8,
    destination: Destination,
    #[serde(with = "safemeet_proto::codec::bytes")]
    meta: &'a [u8],
    envelope: &'a Envelope,
}

impl OutboxItem {
    /// The padded wire frame.
    pub fn frame(&self) -> Result<Vec<u8>, Error> {
        Ok(self.envelope.to_frame()?)
    }
}

impl fmt::Debug for OutboxItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutboxItem")
            .field("destination", &self.destination)
            .finish_non_exhaustive()
    }
}

/// An envelope that is committed to the outbox and may now be sent.
#[derive(Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Sequence number of its outbox item (to remove it once delivered).
    pub outbox_seq: u64,
    /// Where it goes.
    pub destination: Destination,
    /// The envelope.
    pub envelope: Envelope,
}

impl Outgoing {
    /// The padded wire frame.
    pub fn frame(&self) -> Result<Vec<u8>, Error> {
        Ok(self.envelope.to_frame()?)
    }
}

impl fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outgoing")
            .field("outbox_seq", &self.outbox_seq)
            .field("destination", &self.destination)
            .finish_non_exhaustive()
    }
}

/// Why a room's outbound session was replaced before this message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rotation {
    /// The room had no usable session (first message, or discarded after an
    /// unclean shutdown).
    New,
    /// [`ROTATION_MESSAGES`] messages were sent with the old one.
    MessageLimit,
    /// The old one was older than [`ROTATION_PERIOD_MS`].
    Age,
    /// A device that had the old key is no longer a recipient.
    RecipientRemoved,
}

/// What to encrypt for a room.
#[derive(Debug, Clone)]
pub struct RoomMessage<'a> {
    /// The room.
    pub room_id: RoomId,
    /// The room's opaque gossip topic.
    pub topic: safemeet_proto::room::RoomTopic,
    /// The room's header key: the message's envelope is sealed under it,
    /// and room key shares carry its root.
    pub header: &'a safemeet_proto::header::HeaderKey,
    /// The room's members (users); their listed devices receive the key.
    /// This user is always included.
    pub members: &'a [UserId],
    /// What to send.
    pub content: safemeet_proto::event::EventContent,
    /// The event's Lamport clock.
    pub lamport: u64,
}

/// The result of [`CryptoMachine::encrypt_room_event`]: committed envelopes.
#[derive(Debug)]
pub struct RoomSend {
    /// The event's id (see [`event_id`]).
    pub event_id: EventId,
    /// The room message.
    pub message: Outgoing,
    /// Room-key shares for devices that did not have the session yet; send
    /// them before (or with) the message.
    pub key_shares: Vec<Outgoing>,
    /// Listed devices that got no key because there is no usable Olm
    /// session with them: claim a one-time key and call
    /// [`CryptoMachine::create_outbound_session`]; the next message shares
    /// the key with them from this message's index on.
    pub no_session: Vec<(UserId, DeviceId)>,
    /// Members whose device list is unknown: they got nothing.
    pub unknown_members: Vec<UserId>,
    /// Set when a new session was started for this message.
    pub rotation: Option<Rotation>,
    /// The Megolm session and the message index used.
    pub session_id: [u8; 32],
    /// The message index used.
    pub message_index: u32,
}

/// Output committed to the store but not yet flushed. What it holds is
/// reachable only through [`CryptoMachine::release`], which flushes first,
/// so a group of messages can share one flush without any ciphertext
/// leaving before it is durable.
#[must_use = "the ciphertext is only reachable through CryptoMachine::release"]
pub struct Unflushed<T> {
    inner: T,
    instance: u64,
}

impl<T> fmt::Debug for Unflushed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Unflushed").finish_non_exhaustive()
    }
}

/// A decrypted room event.
#[derive(Debug, Clone)]
pub struct DecryptedRoomEvent {
    /// The event's id (see [`event_id`]).
    pub event_id: EventId,
    /// Who sent it, checked.
    pub sender: Sender,
    /// The event.
    pub event: RoomEvent,
    /// The Megolm session.
    pub session_id: [u8; 32],
    /// The message index.
    pub message_index: u32,
}

/// What a to-device message carried.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ToDeviceContent {
    /// A room key, now stored.
    RoomKey {
        /// The room.
        room_id: RoomId,
        /// The Megolm session.
        session_id: [u8; 32],
        /// The first index the key decrypts.
        first_index: u32,
        /// The root of the header key the session's messages are sealed
        /// under.
        header: safemeet_proto::header::HeaderRoot,
    },
    /// A verification step, for the caller's [`SasFlow`](crate::verification::SasFlow).
    Verification(Verification),
    /// An empty message that opened a new Olm session.
    NewSession,
    /// The sender device's relay list, checked against its certificate
    /// and naming it.
    RelayList(Signed<safemeet_proto::identity::RelayList>),
    /// A contact's introduction (see [`CryptoMachine::open_introduction`]
    /// for a stranger's) with no newer device list: nothing to do.
    Introduction,
    /// From another device of this user: a contact's devices it verified
    /// (signed by the master key), or a request to sign that (to the
    /// device with the master key). Checked by
    /// [`CryptoMachine::accept_user_trust`] when signed.
    Trust(safemeet_proto::event::TrustNotice),
    /// From another device of this user: the names its devices were given
    /// (not yet checked: the caller merges what is acceptable).
    DeviceNames(safemeet_proto::event::DeviceNames),
    /// A new version of the sender user's profile, its signature checked
    /// (not yet against the version held: the caller keeps the newest).
    Profile(Signed<safemeet_proto::identity::Profile>),
    /// A new version of the sender user's avatar, its signature and image
    /// checked (not yet against the version held).
    Avatar(Signed<safemeet_proto::identity::Avatar>),
    /// The sender's account is deleted: its tombstone, signed by the
    /// sender's master key (checked).
    AccountDeleted(safemeet_proto::identity::AccountTombstone),
    /// The device list of the sender's user (a contact's, or this user's
    /// own from another of its devices): what changed, if it was newer
    /// than the one held, and the signed keys of its new devices (checked
    /// against their certificates), to start Olm sessions from.
    DeviceList {
        /// What changed (nothing when the list was not newer).
        update: DeviceListUpdate,
        /// Keys of listed active devices, checked.
        keys: Vec<Signed<safemeet_proto::identity::OneTimeKey>>,
    },
    /// Presence, typing or a read marker (not checked against rooms or
    /// contacts: the caller does).
    Signal(safemeet_proto::signal::Signal),
}

/// A decrypted to-device message.
#[derive(Debug)]
pub struct ReceivedToDevice {
    /// Who sent it, checked.
    pub sender: Sender,
    /// What it carried.
    pub content: ToDeviceContent,
    /// Held room messages this key released, each decrypted or with its error.
    pub released: Vec<Result<DecryptedRoomEvent, Error>>,
}

/// The id of a room event: a hash of its Megolm session id, message index
/// and the session's Ed25519 signature over the message. The signature
/// covers every byte of the (canonical) message, so two valid messages never
/// share an id; the topic is routing data and not part of it. Anyone holding
/// the envelope computes it without decrypting, so duplicates can be dropped
/// before any cryptography (record an id as seen only once its message
/// decrypted: an invalid message may carry a valid message's signature).
pub fn event_id(envelope: &safemeet_proto::envelope::RoomEnvelope) -> Result<EventId, Error> {
    let message =
        vodozemac::megolm::MegolmMessage::from_bytes(&envelope.ciphertext).map_err(|e| {
            Error::Decryption {
                what: "Megolm",
                reason: e.to_string(),
            }
        })?;
    Ok(event_id_of(&envelope.session_id, &message))
}

fn event_id_of(session_id: &[u8; 32], message: &vodozemac::megolm::MegolmMessage) -> EventId {
    static KEY: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
    let key = KEY.get_or_init(|| blake3::derive_key("safemeet/v1/event-id", b""));
    let mut hasher = blake3::Hasher::new_keyed(key);
    hasher.update(session_id);
    hasher.update(&message.message_index().to_be_bytes());
    hasher.update(&message.signature().to_bytes());
    EventId::from_bytes(hasher.finalize().into())
}

/// Who a held room message is charged to (see the [module docs](self)):
/// an opaque 32-byte name the caller chooses, such as a hash of the peer
/// that delivered it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub struct Holder(pub [u8; 32]);

/// The end-to-end encryption state of one device. See the [module docs](self).
pub struct CryptoMachine<S: Store> {
    store: EncryptedStore<S>,
    account: Account,
    run: RunRecord,
    outbox_next: u64,
    outbox_name: crate::OrderedName,
    /// Hash of this device's certificate, named by its room messages.
    own_cert_hash: [u8; 32],
    unclean_start: bool,
    poisoned: bool,
    closed: bool,
    /// Names this machine instance in the [`Unflushed`] values it makes.
    instance: u64,
    keys: KeysRecord,
    held: HeldIndexRecord,
    devices: devices::Cache,
    olm: olm::Cache,
    megolm: megolm::Cache,
    /// Users refused as senders (see [`CryptoMachine::set_refused_senders`]).
    refused: std::collections::HashSet<safemeet_proto::UserId>,
}

impl<S: Store> fmt::Debug for CryptoMachine<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CryptoMachine")
            .field("account", &self.account)
            .field("generation", &self.run.generation)
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

impl<S: Store> CryptoMachine<S> {
    /// Stores a new account so a machine can open it (as `safemeet init` does).
    pub fn store_account(store: &EncryptedStore<S>, account: &Account) -> Result<(), Error> {
        store.put(Keyspace::Account, name::ACCOUNT, &account.to_record()?)?;
        store.flush()
    }

    /// Opens the machine over a store that holds an account. If the last
    /// machine on this store was not closed, every outbound Megolm session
    /// is discarded.
    pub fn open(store: EncryptedStore<S>) -> Result<Self, Error> {
        let record = store
            .get(Keyspace::Account, name::ACCOUNT)?
            .ok_or(Error::NoAccount)?;
        let account = Account::from_record(&record)?;
        let mut run = match store.get(Keyspace::CryptoSessions, name::RUN)? {
            Some(b) => records::decode::<RunRecord>(&b, "run marker")?,
            None => RunRecord {
                version: RECORD_VERSION,
                clean: true,
                generation: 0,
                outbox_reserved: 0,
            },
        };
        let unclean_start = !run.clean;
        if unclean_start {
            run.generation = run.generation.checked_add(1).ok_or(Error::InvalidRecord {
                what: "run marker",
                reason: "generation exhausted",
            })?;
            tracing::warn!(
                generation = run.generation,
                "unclean shutdown: outbound room sessions discarded"
            );
        }
        run.clean = false;
        let outbox_next = run.outbox_reserved;
        run.outbox_reserved =
            outbox_next
                .checked_add(OUTBOX_RESERVE)
                .ok_or(Error::InvalidRecord {
                    what: "outbox",
                    reason: "sequence exhausted",
                })?;
        store.put(
            Keyspace::CryptoSessions,
            name::RUN,
            &records::encode_plain(&run)?,
        )?;
        // Synced, not only flushed: sled's flush does not survive a power
        // loss, and a run marker lost with it would hide this start from
        // the next one, which would then reuse outbound Megolm indices.
        store.sync()?;
        let keys = match store.get(Keyspace::CryptoSessions, name::KEYS)? {
            Some(b) => records::decode(&b, "key pool")?,
            None => KeysRecord {
                version: RECORD_VERSION,
                pool: Vec::new(),
                fallback: None,
                fallback_created: None,
            },
        };
        // An index of an older layout starts afresh: held messages are only
        // a head start (their senders send them again).
        let held = store
            .get(Keyspace::CryptoSessions, name::HELD_INDEX)?
            .and_then(|b| records::decode(&b, "held index").ok())
            .unwrap_or(HeldIndexRecord {
                version: RECORD_VERSION,
                sessions: Vec::new(),
            });
        let outbox_name = store.ordered_name(Keyspace::Outbox, name::OUTBOX)?;
        let own_cert_hash = crate::certificate::certificate_hash(account.certificate())?;
        Ok(Self {
            store,
            account,
            run,
            outbox_next,
            outbox_name,
            own_cert_hash,
            unclean_start,
            poisoned: false,
            closed: false,
            instance: rand::random(),
            keys,
            held,
            devices: devices::Cache::default(),
            olm: olm::Cache::default(),
            megolm: megolm::Cache::default(),
            refused: Default::default(),
        })
    }

    /// Sets the users refused as senders: their to-device and room
    /// messages fail with [`Error::RefusedSender`], and nothing of theirs
    /// is stored. The caller keeps the list (it is not stored here).
    pub fn set_refused_senders(&mut self, users: impl IntoIterator<Item = safemeet_proto::UserId>) {
        self.refused = users.into_iter().collect();
    }

    /// Marks a clean shutdown and flushes. Outbound sessions survive a
    /// clean close.
    pub fn close(mut self) -> Result<(), Error> {
        self.close_in_place()
    }

    /// [`close`](Self::close) for an owner that cannot give the machine up
    /// (an actor holding it by value): marks a clean shutdown, flushes, and
    /// refuses every later call.
    pub fn close_in_place(&mut self) -> Result<(), Error> {
        self.check_usable()?;
        self.run.clean = true;
        self.store.put(
            Keyspace::CryptoSessions,
            name::RUN,
            &records::encode_plain(&self.run)?,
        )?;
        self.store.flush()?;
        self.closed = true;
        Ok(())
    }

    /// True when the previous machine on this store did not close cleanly.
    pub fn started_unclean(&self) -> bool {
        self.unclean_start
    }

    /// This device's account.
    pub fn account(&self) -> &Account {
        &self.account
    }

    /// The store, for the caller's own records and batches.
    pub fn store(&self) -> &EncryptedStore<S> {
        &self.store
    }

    /// Flushes applied writes (see the module docs on incoming work).
    /// Refused once the machine is poisoned: writes of a group whose
    /// release failed must not become durable later.
    pub fn flush(&self) -> Result<(), Error> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        self.store.flush()
    }

    /// Flushes the store once, then hands out what `items` hold. Items made
    /// by another machine are refused (their commits are not this store's).
    /// A failed flush poisons the machine, as a failed commit does.
    pub fn release<T>(&mut self, items: Vec<Unflushed<T>>) -> Result<Vec<T>, Error> {
        self.check_usable()?;
        if items.iter().any(|u| u.instance != self.instance) {
            return Err(Error::InvalidRecord {
                what: "unflushed output",
                reason: "made by another machine",
            });
        }
        if let Err(e) = self.store.flush() {
            tracing::error!(error = %e, "store flush failed; crypto machine stopped");
            self.poisoned = true;
            return Err(e);
        }
        Ok(items.into_iter().map(|u| u.inner).collect())
    }

    fn check_usable(&self) -> Result<(), Error> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        if self.closed {
            return Err(Error::Closed);
        }
        Ok(())
    }

    /// Applies a batch, poisoning the machine if that fails.
    fn commit(&mut self, batch: EncryptedBatch, flush: bool) -> Result<(), Error> {
        let result = self
            .store
            .apply(batch)
            .and_then(|()| if flush { self.store.flush() } else { Ok(()) });
        if let Err(e) = &result {
            tracing::error!(error = %e, "store commit failed; crypto machine stopped");
            self.poisoned = true;
        }
        result
    }

    /// Replaces the in-memory account with the stored one, undoing changes
    /// that were not committed.
    fn reload_account(&mut self) -> Result<(), Error> {
        let record = self
            .store
            .get(Keyspace::Account, name::ACCOUNT)?
            .ok_or(Error::NoAccount)?;
        self.account = Account::from_record(&record)?;
        Ok(())
    }

    fn put_account(&self, batch: &mut EncryptedBatch) -> Result<(), Error> {
        self.store.batch_put(
            batch,
            Keyspace::Account,
            name::ACCOUNT,
            &self.account.to_record()?,
        )
    }

    fn put_run(&self, batch: &mut EncryptedBatch) -> Result<(), Error> {
        self.store.batch_put(
            batch,
            Keyspace::CryptoSessions,
            name::RUN,
            &records::encode_plain(&self.run)?,
        )
    }

    fn put_keys(&self, batch: &mut EncryptedBatch) -> Result<(), Error> {
        self.store.batch_put(
            batch,
            Keyspace::CryptoSessions,
            name::KEYS,
            &records::encode(&self.keys)?,
        )
    }

    /// Adds an outbox item to `batch` and returns its committed form (valid
    /// once the batch is applied).
    fn queue(
        &mut self,
        batch: &mut EncryptedBatch,
        destination: Destination,
        meta: &[u8],
        envelope: Envelope,
    ) -> Result<Outgoing, Error> {
        let seq = self.outbox_next;
        self.outbox_next = seq.checked_add(1).ok_or(Error::InvalidRecord {
            what: "outbox",
            reason: "sequence exhausted",
        })?;
        if self.outbox_next > self.run.outbox_reserved {
            // The new block is applied at once, on its own, so the stored
            // reservation covers every number handed out even if the
            // caller's batch is never committed (sled keeps the order of
            // writes, so nothing after it can be durable without it).
            self.run.outbox_reserved = self.run.outbox_reserved.saturating_add(OUTBOX_RESERVE);
            let mut reserve = self.store.batch();
            self.put_run(&mut reserve)?;
            self.commit(reserve, false)?;
        }
        let item = OutboxItemRef {
            version: RECORD_VERSION,
            destination,
            meta,
            envelope: &envelope,
        };
        self.store.batch_put_ordered_value_at(
            batch,
            &self.outbox_name,
            seq,
            &item,
            records::MAX_RECORD_BYTES,
        )?;
        Ok(Outgoing {
            outbox_seq: seq,
            destination,
            envelope,
        })
    }

    /// Up to `limit` outbox items after `after`, oldest first.
    pub fn outbox(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, OutboxItem)>, Error> {
        self.store
            .scan_ordered(Keyspace::Outbox, name::OUTBOX, after, limit)?
            .into_iter()
            .map(|(seq, bytes)| Ok((seq, records::decode(&bytes, "outbox item")?)))
            .collect()
    }

    /// Removes delivered items from the outbox.
    pub fn remove_from_outbox(&mut self, seqs: &[u64]) -> Result<(), Error> {
        self.check_usable()?;
        let mut batch = self.store.batch();
        for seq in seqs {
            self.store
                .batch_delete_ordered(&mut batch, Keyspace::Outbox, name::OUTBOX, *seq)?;
        }
        self.commit(batch, false)
    }

    /// Hands out `count` signed one-time keys (at most [`MAX_KEYS_PER_CLAIM`])
    /// for other devices to start Olm sessions with, generating and signing
    /// a new batch of [`ONE_TIME_KEY_BATCH`] when the pool runs low. Each key
    /// is handed out once. The account is saved and flushed before the keys
    /// are returned, so a key never outlives its secret half.
    pub fn claim_one_time_keys(
        &mut self,
        count: usize,
        now: Timestamp,
    ) -> Result<Vec<Signed<OneTimeKey>>, Error> {
        self.check_usable()?;
        if count > MAX_KEYS_PER_CLAIM {
            return Err(Error::InvalidRecord {
                what: "one-time key claim",
                reason: "too many keys asked for",
            });
        }
        let mut account_changed = false;
        if self.keys.pool.len() < count.saturating_add(ONE_TIME_KEY_BATCH / 5) {
            self.generate_one_time_keys(now)?;
            account_changed = true;
        }
        let take = count.min(self.keys.pool.len());
        let keys: Vec<_> = self.keys.pool.drain(..take).collect();
        let mut batch = self.store.batch();
        if account_changed {
            self.put_account(&mut batch)?;
        }
        self.put_keys(&mut batch)?;
        self.commit(batch, true)?;
        Ok(keys)
    }

    fn generate_one_time_keys(&mut self, now: Timestamp) -> Result<(), Error> {
        let olm_account = &mut self.account.device_keys_mut().olm;
        olm_account.generate_one_time_keys(ONE_TIME_KEY_BATCH);
        let mut fresh: Vec<[u8; 32]> = olm_account
            .one_time_keys()
            .values()
            .map(|k| k.to_bytes())
            .collect();
        fresh.sort_unstable();
        olm_account.mark_keys_as_published();
        for key in fresh {
            let signed = self.sign_key(key, false, now)?;
            self.keys.pool.push(signed);
        }
        Ok(())
    }

    fn sign_key(
        &self,
        key: [u8; 32],
        fallback: bool,
        now: Timestamp,
    ) -> Result<Signed<OneTimeKey>, Error> {
        crate::certificate::sign_one_time_key(
            self.account.device_keys(),
            &OneTimeKey {
                version: RECORD_VERSION,
                device_id: self.account.device_id(),
                key,
                fallback,
                created_at: now,
            },
        )
    }

    /// The signed fallback key, replaced when older than
    /// [`FALLBACK_KEY_MAX_AGE_MS`]. Other devices use it when no one-time
    /// key can be had (for example from a relay that ran out).
    pub fn fallback_key(&mut self, now: Timestamp) -> Result<Signed<OneTimeKey>, Error> {
        self.check_usable()?;
        let fresh = match (&self.keys.fallback, self.keys.fallback_created) {
            (Some(key), Some(created))
                if now.as_millis().saturating_sub(created.as_millis())
                    < FALLBACK_KEY_MAX_AGE_MS =>
            {
                Some(key.clone())
            }
            _ => None,
        };
        if let Some(key) = fresh {
            return Ok(key);
        }
        let signed = self.account.new_fallback_key(now)?;
        self.keys.fallback = Some(signed.clone());
        self.keys.fallback_created = Some(now);
        let mut batch = self.store.batch();
        self.put_account(&mut batch)?;
        self.put_keys(&mut batch)?;
        self.commit(batch, true)?;
        Ok(signed)
    }

    /// Creates the keys of a new device of this user and a device list that
    /// holds it; the list is saved here too. Returns the new device's account.
    pub fn link_new_device(&mut self, now: Timestamp) -> Result<Account, Error> {
        self.check_usable()?;
        let new = self.account.link_new_device(now)?;
        let list = self.account.device_list().signed().clone();
        let mut batch = self.store.batch();
        self.put_account(&mut batch)?;
        self.stage_device_list(&mut batch, &list, std::slice::from_ref(new.certificate()))?;
        self.commit(batch, true)?;
        Ok(new)
    }

    /// Revokes another device of this user: a new device list is signed and
    /// saved, and every room's session is rotated before its next message
    /// because the device is no longer a recipient.
    pub fn revoke_device(&mut self, device: DeviceId, now: Timestamp) -> Result<(), Error> {
        self.check_usable()?;
        self.account.revoke_device(device, now)?;
        let list = self.account.device_list().signed().clone();
        let mut batch = self.store.batch();
        self.put_account(&mut batch)?;
        self.stage_device_list(&mut batch, &list, &[])?;
        self.commit(batch, true)
    }

    /// Signs and saves a new version of this user's profile (on the device
    /// with the master key).
    pub fn update_profile(
        &mut self,
        display_name: safemeet_proto::DisplayName,
        emails: Vec<safemeet_proto::Email>,
        now: Timestamp,
    ) -> Result<(), Error> {
        self.check_usable()?;
        self.account.update_profile(display_name, emails, now)?;
        let mut batch = self.store.batch();
        self.put_account(&mut batch)?;
        self.commit(batch, true)
    }

    /// Adopts and saves a newer profile of this user from another of its
    /// devices; whether it was newer.
    pub fn accept_own_profile(
        &mut self,
        signed: &Signed<safemeet_proto::identity::Profile>,
    ) -> Result<bool, Error> {
        self.check_usable()?;
        if !self.account.accept_profile(signed)? {
            return Ok(false);
        }
        let mut batch = self.store.batch();
        self.put_account(&mut batch)?;
        self.commit(batch, true)?;
        Ok(true)
    }

    /// The machine is usable and `device` is a known, active device of
    /// `user`.
    fn check_active_device(&mut self, user: UserId, device: DeviceId) -> Result<(), Error> {
        self.check_usable()?;
        let info = self
            .device(&device)?
            .ok_or(Error::UnknownDevice { device })?;
        if info.user_id != user {
            return Err(Error::UnknownDevice { device });
        }
        if info.status != Some(safemeet_proto::identity::DeviceStatus::Active) {
            return Err(Error::RevokedDevice { device });
        }
        Ok(())
    }

    /// Encrypts a signal for one device over Olm, for a delivery that is
    /// tried once: not in the outbox, so never retried and never left on
    /// relays. The session's new state is committed (flushed) first, so
    /// no message key is ever used twice.
    pub fn encrypt_signal(
        &mut self,
        user: UserId,
        device: DeviceId,
        signal: safemeet_proto::signal::Signal,
    ) -> Result<Envelope, Error> {
        self.check_active_device(user, device)?;
        let mut batch = self.store.batch();
        let (envelope, _) = self.olm_encrypt(&mut batch, device, ToDeviceEvent::Signal(signal))?;
        self.commit(batch, true)?;
        Ok(envelope)
    }

    /// Sends an event to one device over Olm, committed to the outbox. The
    /// device must be a known, active device of `user`. Room keys are not
    /// accepted here: the machine shares its own sessions itself, and never
    /// forwards others'.
    pub fn encrypt_to_device(
        &mut self,
        user: UserId,
        device: DeviceId,
        event: ToDeviceEvent,
        extra: EncryptedBatch,
        meta: &[u8],
    ) -> Result<Outgoing, Error> {
        if matches!(event, ToDeviceEvent::RoomKey(_)) {
            return Err(Error::UnexpectedPayload);
        }
        self.check_active_device(user, device)?;
        let mut batch = extra;
        let (envelope, _) = self.olm_encrypt(&mut batch, device, event)?;
        let out = self.queue(
            &mut batch,
            Destination::Device(user, device),
            meta,
            envelope,
        )?;
        self.commit(batch, true)?;
        Ok(out)
    }
}

/// Decodes a vodozemac base64 session id into its 32 bytes.
fn session_id_bytes(id: &str) -> Result<[u8; 32], Error> {
    let bytes = data_encoding::BASE64_NOPAD
        .decode(id.as_bytes())
        .map_err(|_| Error::InvalidRecord {
            what: "session id",
            reason: "not base64",
        })?;
    bytes.try_into().map_err(|_| Error::InvalidRecord {
        what: "session id",
        reason: "not 32 bytes",
    })
}
