//! What the engine keeps in the store. Every record is sealed by the
//! `EncryptedStore` and named by a hashed identifier.

use safemeet_proto::room::{RoomSecret, RoomTopic, StateHash};
use safemeet_proto::{DeviceId, EventId, RoomId, Timestamp, UserId, codec};
use serde::{Deserialize, Serialize};

/// Format version of the engine's records.
pub(crate) const VERSION: u8 = 1;
/// Largest engine record.
pub(crate) const MAX_RECORD_BYTES: usize = 256 * 1024;

pub(crate) mod name {
    use safemeet_proto::{DeviceId, EventId, RoomId, UserId};

    pub(crate) const CONTACT_INDEX: &[u8] = b"contacts";
    pub(crate) const ROOM_INDEX: &[u8] = b"rooms";
    pub(crate) const EVENT_LOG: &[u8] = b"log";
    pub(crate) const EVENT_LOG_NEXT: &[u8] = b"log-next";
    /// The oldest epoch whose mailboxes may still hold mail.
    pub(crate) const DRAIN_FROM: &[u8] = b"drain-from";
    /// Relays this device no longer lists, and until when they may hold
    /// mail for it.
    pub(crate) const FORMER_RELAYS: &[u8] = b"former-relays";
    /// The relays this device last told its contacts about.
    pub(crate) const OWN_RELAYS: &[u8] = b"own-relays";
    /// A freshly linked device's first dials (see `link`).
    pub(crate) const FIRST_DIALS: &[u8] = b"first-dials";
    /// The names of this user's devices, and when each was last seen (see
    /// `own_devices`).
    pub(crate) const OWN_DEVICES: &[u8] = b"own-devices";

    pub(crate) fn contact(user: &UserId) -> Vec<u8> {
        let mut v = b"contact/".to_vec();
        v.extend_from_slice(user.as_bytes());
        v
    }
    /// A user's newest signed avatar (this user's own too).
    pub(crate) fn avatar(user: &UserId) -> Vec<u8> {
        let mut v = b"avatar/".to_vec();
        v.extend_from_slice(user.as_bytes());
        v
    }
    /// A contact's newest signed profile.
    pub(crate) fn profile(user: &UserId) -> Vec<u8> {
        let mut v = b"profile/".to_vec();
        v.extend_from_slice(user.as_bytes());
        v
    }
    /// A contact device's signed relay list, as last received.
    pub(crate) fn relay_list(device: &DeviceId) -> Vec<u8> {
        let mut v = b"relays/".to_vec();
        v.extend_from_slice(device.as_bytes());
        v
    }
    /// Where the timeline entry of a message left on relays is.
    pub(crate) fn relayed(event: &EventId) -> Vec<u8> {
        let mut v = b"relayed/".to_vec();
        v.extend_from_slice(event.as_bytes());
        v
    }
    pub(crate) fn room(room: &RoomId) -> Vec<u8> {
        let mut v = b"room/".to_vec();
        v.extend_from_slice(room.as_bytes());
        v
    }
    /// Where a message's timeline entry is: its room and position.
    pub(crate) fn message(event: &EventId) -> Vec<u8> {
        let mut v = b"message/".to_vec();
        v.extend_from_slice(event.as_bytes());
        v
    }
    /// A room's settings (see `revisions`).
    pub(crate) fn settings(room: &RoomId) -> Vec<u8> {
        let mut v = b"settings/".to_vec();
        v.extend_from_slice(room.as_bytes());
        v
    }
    /// A redaction that came before its message.
    pub(crate) fn early_redaction(event: &EventId) -> Vec<u8> {
        let mut v = b"early-redaction/".to_vec();
        v.extend_from_slice(event.as_bytes());
        v
    }
    /// The devices this device owes its device list (see `archive`).
    pub(crate) const OWED_LISTS: &[u8] = b"owed-lists";
    /// The early redactions kept, oldest first.
    pub(crate) const EARLY_REDACTIONS: &[u8] = b"early-redactions";
    /// This device's own limits (retention).
    pub(crate) const LOCAL_SETTINGS: &[u8] = b"local-settings";
    /// Which signals this user shares (see `signals`).
    pub(crate) const SIGNAL_SETTINGS: &[u8] = b"signal-settings";
    /// The conversations muted on this device.
    pub(crate) const MUTED: &[u8] = b"muted";
    /// Set once the event log names messages by position instead of
    /// holding a copy of them, and every message has its location record.
    pub(crate) const MESSAGES_IN_ONE_PLACE: &[u8] = b"messages-in-one-place";
    pub(crate) fn timeline(room: &RoomId) -> Vec<u8> {
        let mut v = b"timeline/".to_vec();
        v.extend_from_slice(room.as_bytes());
        v
    }
}

/// A contact.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ContactRecord {
    pub(crate) version: u8,
    pub(crate) user_id: UserId,
    pub(crate) pet_name: Option<String>,
    pub(crate) username: String,
    pub(crate) display_name: String,
    /// Listen addresses per device (multiaddr text), from invites.
    pub(crate) addrs: Vec<(DeviceId, Vec<String>)>,
}

/// The group rooms this device knows.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct RoomIndex {
    pub(crate) version: u8,
    pub(crate) rooms: Vec<RoomId>,
}

/// The users this device has as contacts.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct ContactIndex {
    pub(crate) version: u8,
    pub(crate) users: Vec<UserId>,
}

/// A room (a DM is a room of two users).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RoomRecord {
    pub(crate) version: u8,
    pub(crate) room_id: RoomId,
    /// For a DM, the other user.
    pub(crate) dm_with: Option<UserId>,
    /// A group room's name.
    pub(crate) name: Option<String>,
    pub(crate) members: Vec<UserId>,
    /// Who may change a group room's state.
    pub(crate) admins: Vec<UserId>,
    /// A group room's secret (its topic derives from it).
    pub(crate) secret: Option<RoomSecret>,
    /// This user left the room.
    pub(crate) left: bool,
    /// Opaque gossip topic.
    pub(crate) topic: RoomTopic,
    /// Highest Lamport clock seen or used.
    pub(crate) lamport: u64,
    /// Next timeline sequence number.
    pub(crate) next_seq: u64,
    /// Lamport time of the room state applied last (informational: the
    /// chain's epoch orders states).
    pub(crate) state_lamport: u64,
    /// Where a group room stands on its chain of states (see `chain`);
    /// `None` for a DM, and for a group room stored before states formed
    /// a chain (its timeline stays readable; it takes no new state).
    pub(crate) chain: Option<Chain>,
    /// For each member a state brought (back) in, the Lamport time of that
    /// state: a leave that member sent before it is stale (see `chain`).
    /// Members since the room's first state, or since before this was
    /// kept, are not listed (time 0).
    pub(crate) added_at: Vec<(UserId, u64)>,
}

/// A group room's place on its chain of states: what the next state must
/// name and who may issue it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Chain {
    /// The room's creator (the room id derives from it and `nonce`).
    pub(crate) creator: UserId,
    /// The creator's nonce.
    pub(crate) nonce: [u8; 16],
    /// The epoch of the state applied last.
    pub(crate) epoch: u64,
    /// The hash of the state applied last: the next one names it.
    pub(crate) head: StateHash,
    /// The admins of the state applied last: only they may issue the next.
    pub(crate) admins: Vec<UserId>,
    /// Users barred from the room.
    pub(crate) banned: Vec<UserId>,
    /// The room's secrets before the current one, newest first (at most
    /// `chain::MAX_PREVIOUS_SECRETS`), so frames sent under a recent one
    /// can still be opened; see [`RoomRecord::secrets`].
    pub(crate) previous_secrets: Vec<RoomSecret>,
}

/// A [`RoomRecord`] as stored before `added_at` existed.
#[derive(Serialize, Deserialize)]
struct RoomRecordV3 {
    version: u8,
    room_id: RoomId,
    dm_with: Option<UserId>,
    name: Option<String>,
    members: Vec<UserId>,
    admins: Vec<UserId>,
    secret: Option<RoomSecret>,
    left: bool,
    topic: RoomTopic,
    lamport: u64,
    next_seq: u64,
    state_lamport: u64,
    chain: Option<Chain>,
}

/// A [`RoomRecord`] as stored before states formed a chain.
#[derive(Serialize, Deserialize)]
struct RoomRecordV2 {
    version: u8,
    room_id: RoomId,
    dm_with: Option<UserId>,
    name: Option<String>,
    members: Vec<UserId>,
    admins: Vec<UserId>,
    secret: Option<RoomSecret>,
    left: bool,
    topic: RoomTopic,
    lamport: u64,
    next_seq: u64,
    state_lamport: u64,
}

/// A [`RoomRecord`] as stored before `state_lamport` existed.
#[derive(Serialize, Deserialize)]
struct RoomRecordV1 {
    version: u8,
    room_id: RoomId,
    dm_with: Option<UserId>,
    name: Option<String>,
    members: Vec<UserId>,
    admins: Vec<UserId>,
    secret: Option<RoomSecret>,
    left: bool,
    topic: RoomTopic,
    lamport: u64,
    next_seq: u64,
}

impl RoomRecord {
    /// A room nothing has happened in yet: a DM (`dm_with`), or a group
    /// room being joined (no name, secret or admins until its state).
    pub(crate) fn fresh(
        room_id: RoomId,
        dm_with: Option<UserId>,
        members: Vec<UserId>,
        topic: RoomTopic,
    ) -> Self {
        Self {
            version: VERSION,
            room_id,
            dm_with,
            name: None,
            members,
            admins: Vec::new(),
            secret: None,
            left: false,
            topic,
            lamport: 0,
            next_seq: 0,
            state_lamport: 0,
            chain: None,
            added_at: Vec::new(),
        }
    }

    /// The room's secrets, current first, then the previous ones newest
    /// first (a bounded few, kept after a rotation for frames still in
    /// flight). Whatever derives from a room secret (its topic, a key for
    /// envelope headers) can try each. Empty for a DM.
    pub(crate) fn secrets(&self) -> impl Iterator<Item = &RoomSecret> {
        let previous = self.chain.iter().flat_map(|c| c.previous_secrets.iter());
        self.secret.iter().chain(previous)
    }

    /// Decodes a stored room, in this layout or an earlier one (whose
    /// states count as applied at Lamport time 0, and which has no chain).
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, codec::DecodeError> {
        let new = match codec::decode::<Self>(bytes, MAX_RECORD_BYTES) {
            Ok(r) => return Ok(r),
            Err(e) => e,
        };
        let old = codec::decode::<RoomRecordV3>(bytes, MAX_RECORD_BYTES)
            .or_else(|_| codec::decode::<RoomRecordV2>(bytes, MAX_RECORD_BYTES).map(Into::into))
            .or_else(|_| {
                codec::decode::<RoomRecordV1>(bytes, MAX_RECORD_BYTES)
                    .map(|v1| RoomRecordV3::from(RoomRecordV2::from(v1)))
            });
        old.map(Into::into).map_err(|_| new)
    }
}

impl From<RoomRecordV1> for RoomRecordV2 {
    fn from(old: RoomRecordV1) -> Self {
        Self {
            version: old.version,
            room_id: old.room_id,
            dm_with: old.dm_with,
            name: old.name,
            members: old.members,
            admins: old.admins,
            secret: old.secret,
            left: old.left,
            topic: old.topic,
            lamport: old.lamport,
            next_seq: old.next_seq,
            state_lamport: 0,
        }
    }
}

impl From<RoomRecordV2> for RoomRecordV3 {
    fn from(old: RoomRecordV2) -> Self {
        Self {
            version: old.version,
            room_id: old.room_id,
            dm_with: old.dm_with,
            name: old.name,
            members: old.members,
            admins: old.admins,
            secret: old.secret,
            left: old.left,
            topic: old.topic,
            lamport: old.lamport,
            next_seq: old.next_seq,
            state_lamport: old.state_lamport,
            chain: None,
        }
    }
}

impl From<RoomRecordV3> for RoomRecord {
    fn from(old: RoomRecordV3) -> Self {
        Self {
            version: old.version,
            room_id: old.room_id,
            dm_with: old.dm_with,
            name: old.name,
            members: old.members,
            admins: old.admins,
            secret: old.secret,
            left: old.left,
            topic: old.topic,
            lamport: old.lamport,
            next_seq: old.next_seq,
            state_lamport: old.state_lamport,
            chain: old.chain,
            added_at: Vec::new(),
        }
    }
}

/// The delivery state of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageState {
    /// Received from another device.
    Received,
    /// Persisted in the outbox; not yet acknowledged.
    Sent,
    /// Acknowledged by at least one recipient device.
    Delivered,
    /// Not delivered yet (the recipients were unreachable), but kept for
    /// them by at least one relay, which promised to keep it until then.
    StoredAtRelay {
        /// The latest "stored until" of the relays' receipts.
        until: Timestamp,
    },
}

/// One message in a room's timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineEntry {
    /// The event.
    pub event_id: EventId,
    /// Who sent it.
    pub sender: UserId,
    /// From which device.
    pub sender_device: DeviceId,
    /// Its Lamport clock.
    pub lamport: u64,
    /// The sender's time.
    pub ts: Timestamp,
    /// The text (empty once redacted).
    pub text: String,
    /// Where it stands.
    pub state: MessageState,
    /// Whether it was edited or redacted.
    pub revision: Revision,
    /// When this device stored it (this device's clock).
    pub received_at: Timestamp,
    /// The file it carries, if it is a file message (`text` is then its
    /// caption); gone with the text when the message is redacted or
    /// expires.
    pub file: Option<safemeet_proto::file::FileRef>,
}

/// What happened to a message after it was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Revision {
    /// As sent.
    Original,
    /// Its sender replaced the text; the edit's Lamport clock (a later
    /// edit wins, whatever the order they arrive in). Earlier texts are
    /// not kept.
    Edited {
        /// The Lamport clock of the edit shown.
        lamport: u64,
    },
    /// Deleted for everyone by its sender or a room admin: the text is gone.
    Redacted,
}

impl TimelineEntry {
    /// When this message expires under an expiry of `after_ms`: that long
    /// after it was sent, counted from the sender's clock but never from
    /// later than it arrived here (a sender's clock cannot keep a message
    /// longer than the room allows).
    pub(crate) fn expires_at(&self, after_ms: u64) -> u64 {
        self.ts
            .as_millis()
            .min(self.received_at.as_millis())
            .saturating_add(after_ms)
    }

    /// Decodes a stored entry, in this layout, the one before files (no
    /// file) or the one before revisions (taken as original, received
    /// when sent).
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, codec::DecodeError> {
        match codec::decode::<Self>(bytes, MAX_RECORD_BYTES) {
            Ok(e) => Ok(e),
            Err(e) => {
                codec::decode::<crate::timeline_versions::TimelineEntryV2>(bytes, MAX_RECORD_BYTES)
                    .map(Into::into)
                    .or_else(|_| {
                        codec::decode::<crate::timeline_versions::TimelineEntryV1>(
                            bytes,
                            MAX_RECORD_BYTES,
                        )
                        .map(Into::into)
                    })
                    .map_err(|_| e)
            }
        }
    }
}

/// What an outbox item is for, kept in its `meta`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct OutboxMeta {
    pub(crate) version: u8,
    /// The timeline entry of the message, for room messages.
    pub(crate) timeline: Option<(RoomId, u64)>,
}

pub(crate) use crate::event_log::LogRecord;
pub use crate::event_log::{LogEntry, Removal};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_stored_before_state_ordering_still_load() {
        let user = UserId::from_bytes([1; 32]);
        let old = RoomRecordV1 {
            version: VERSION,
            room_id: RoomId::from_bytes([9; 16]),
            dm_with: None,
            name: Some("r".into()),
            members: vec![user],
            admins: vec![user],
            secret: Some(RoomSecret::from_bytes([7; 32])),
            left: false,
            topic: safemeet_proto::room::RoomTopic::from_bytes([3; 32]),
            lamport: 12,
            next_seq: 4,
        };
        let bytes = codec::encode(&old).unwrap();
        let loaded = RoomRecord::decode(&bytes).unwrap();
        assert_eq!(loaded.lamport, 12);
        assert_eq!(loaded.next_seq, 4);
        assert_eq!(loaded.state_lamport, 0);
        assert_eq!(loaded.members, vec![user]);
        // And the new layout round-trips.
        let bytes = codec::encode(&loaded).unwrap();
        assert_eq!(RoomRecord::decode(&bytes).unwrap().lamport, 12);
    }

    #[test]
    fn rooms_stored_before_state_chains_still_load_without_one() {
        let user = UserId::from_bytes([1; 32]);
        let old = RoomRecordV2 {
            version: VERSION,
            room_id: RoomId::from_bytes([9; 16]),
            dm_with: None,
            name: Some("r".into()),
            members: vec![user],
            admins: vec![user],
            secret: Some(RoomSecret::from_bytes([7; 32])),
            left: false,
            topic: safemeet_proto::room::RoomTopic::from_bytes([3; 32]),
            lamport: 12,
            next_seq: 4,
            state_lamport: 5,
        };
        let bytes = codec::encode(&old).unwrap();
        let loaded = RoomRecord::decode(&bytes).unwrap();
        assert_eq!(loaded.state_lamport, 5);
        assert!(loaded.chain.is_none());
        assert_eq!(loaded.secrets().count(), 1);
        let mut with_chain = loaded.clone();
        with_chain.chain = Some(Chain {
            creator: user,
            nonce: [1; 16],
            epoch: 3,
            head: StateHash::from_bytes([2; 32]),
            admins: vec![user],
            banned: Vec::new(),
            previous_secrets: vec![RoomSecret::from_bytes([8; 32])],
        });
        let bytes = codec::encode(&with_chain).unwrap();
        let back = RoomRecord::decode(&bytes).unwrap();
        assert_eq!(back.chain.map(|c| c.epoch), Some(3));
        let secrets: Vec<u8> = with_chain.secrets().map(|s| s.expose()[0]).collect();
        assert_eq!(secrets, vec![7, 8]);
    }

    #[test]
    fn rooms_stored_before_added_times_load_with_their_chain() {
        let user = UserId::from_bytes([1; 32]);
        let old = RoomRecordV3 {
            version: VERSION,
            room_id: RoomId::from_bytes([9; 16]),
            dm_with: None,
            name: Some("r".into()),
            members: vec![user],
            admins: vec![user],
            secret: Some(RoomSecret::from_bytes([7; 32])),
            left: false,
            topic: safemeet_proto::room::RoomTopic::from_bytes([3; 32]),
            lamport: 12,
            next_seq: 4,
            state_lamport: 5,
            chain: Some(Chain {
                creator: user,
                nonce: [1; 16],
                epoch: 3,
                head: StateHash::from_bytes([2; 32]),
                admins: vec![user],
                banned: Vec::new(),
                previous_secrets: Vec::new(),
            }),
        };
        let bytes = codec::encode(&old).unwrap();
        let loaded = RoomRecord::decode(&bytes).unwrap();
        assert_eq!(loaded.chain.as_ref().map(|c| c.epoch), Some(3));
        assert_eq!(loaded.state_lamport, 5);
        assert!(loaded.added_at.is_empty());
        // Garbage is still an error.
        assert!(RoomRecord::decode(&[0xff; 7]).is_err());
    }
}
