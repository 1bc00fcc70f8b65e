//! What the machine keeps in the store, and under which names.
//!
//! Every record is encoded with the project codec into a zeroizing buffer and
//! sealed by the [`EncryptedStore`](crate::EncryptedStore); names are hashed
//! there, so the identifiers below never reach the disk in clear. Each record
//! starts with a format version.

use safemeet_proto::identity::{OneTimeKey, Signed};
use safemeet_proto::{DeviceId, RoomId, Timestamp, UserId, codec};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::Error;

/// Format version of every machine record.
pub(super) const RECORD_VERSION: u8 = 1;

/// Largest machine record read back from the store. An Olm account pickle
/// with its stored one-time keys is the largest thing kept (well under this).
pub(super) const MAX_RECORD_BYTES: usize = 1024 * 1024;

/// Record names inside their keyspaces.
pub(super) mod name {
    use safemeet_proto::{DeviceId, RoomId, UserId};

    /// The account record (shared with the node's `init`).
    pub(crate) const ACCOUNT: &[u8] = b"account";
    /// Run marker: clean-shutdown flag, outbound generation, outbox counter.
    pub(crate) const RUN: &[u8] = b"machine/run";
    /// The one-time key pool and the fallback key.
    pub(crate) const KEYS: &[u8] = b"machine/keys";
    /// Index of held room messages.
    pub(crate) const HELD_INDEX: &[u8] = b"machine/held";
    /// Ordered name of the outbox.
    pub(crate) const OUTBOX: &[u8] = b"outbox";

    fn join(prefix: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        let mut v = prefix.to_vec();
        for p in parts {
            v.extend_from_slice(p);
        }
        v
    }

    pub(crate) fn device(id: &DeviceId) -> Vec<u8> {
        join(b"device/", &[id.as_bytes()])
    }
    pub(crate) fn device_list(user: &UserId) -> Vec<u8> {
        join(b"device-list/", &[user.as_bytes()])
    }
    pub(crate) fn olm_session(id: &[u8; 32]) -> Vec<u8> {
        join(b"olm/", &[id])
    }
    pub(crate) fn olm_index(device: &DeviceId) -> Vec<u8> {
        join(b"olm-device/", &[device.as_bytes()])
    }
    pub(crate) fn outbound(room: &RoomId) -> Vec<u8> {
        join(b"megolm-out/", &[room.as_bytes()])
    }
    pub(crate) fn shares(room: &RoomId) -> Vec<u8> {
        join(b"megolm-shares/", &[room.as_bytes()])
    }
    pub(crate) fn inbound(session: &[u8; 32]) -> Vec<u8> {
        join(b"megolm-in/", &[session])
    }
    pub(crate) fn held(session: &[u8; 32]) -> Vec<u8> {
        join(b"held/", &[session])
    }
    pub(crate) fn seen_megolm(session: &[u8; 32], index: u32) -> Vec<u8> {
        join(b"m/", &[session, &index.to_be_bytes()])
    }
    pub(crate) fn seen_olm(hash: &[u8; 32]) -> Vec<u8> {
        join(b"o/", &[hash])
    }
}

/// Encodes a record that holds secrets into a zeroizing buffer.
pub(super) fn encode<T: Serialize>(record: &T) -> Result<Zeroizing<Vec<u8>>, Error> {
    Ok(codec::encode_secret(record, MAX_RECORD_BYTES)?)
}

/// Encodes a record without secrets (ciphertext, counters, indexes).
pub(super) fn encode_plain<T: Serialize>(record: &T) -> Result<Vec<u8>, Error> {
    Ok(codec::encode_limited(record, MAX_RECORD_BYTES)?)
}

/// Decodes a record read from the store and checks its version.
pub(super) fn decode<T: Serialize + DeserializeOwned + Versioned>(
    bytes: &[u8],
    what: &'static str,
) -> Result<T, Error> {
    let record: T = codec::decode(bytes, MAX_RECORD_BYTES)?;
    if record.version() != RECORD_VERSION {
        return Err(Error::UnsupportedVersion {
            what,
            version: record.version(),
        });
    }
    Ok(record)
}

/// A record with a format version.
pub(super) trait Versioned {
    fn version(&self) -> u8;
}

macro_rules! versioned {
    ($($t:ty),*) => {$(
        impl Versioned for $t {
            fn version(&self) -> u8 {
                self.version
            }
        }
    )*};
}
versioned!(
    RunRecord,
    KeysRecord,
    DeviceRecord,
    OlmSessionRecord,
    OlmIndexRecord,
    OutboundRecord,
    SharesRecord,
    InboundRecord,
    HeldIndexRecord,
    crate::machine::OutboxItem
);

/// A serialized vodozemac Olm session pickle (JSON: the pickle has an
/// internally tagged enum the project codec cannot read); wiped when
/// dropped. Megolm pickles are stored as typed fields in the project codec.
#[derive(Serialize, Deserialize, Default)]
#[serde(transparent)]
pub(super) struct Pickle(#[serde(with = "codec::bytes")] Vec<u8>);

impl Pickle {
    /// For pickles that need a self-describing format (vodozemac's Olm
    /// session pickle has an internally tagged enum): JSON.
    pub(super) fn json_of<T: Serialize>(pickle: &T) -> Result<Self, Error> {
        serde_json::to_vec(pickle)
            .map(Self)
            .map_err(|e| safemeet_proto::EncodeError::Serialize(e.to_string()).into())
    }

    /// Reads a pickle written by [`Pickle::json_of`].
    pub(super) fn json_load<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.0)
            .map_err(|e| safemeet_proto::DecodeError::Malformed(e.to_string()).into())
    }
}

impl Drop for Pickle {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// Clean-shutdown marker and counters.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct RunRecord {
    pub(super) version: u8,
    /// False while a machine has the store open.
    pub(super) clean: bool,
    /// Bumped after every unclean shutdown; outbound sessions of an older
    /// generation are discarded.
    pub(super) generation: u64,
    /// Outbox sequence numbers below this may have been used; a machine
    /// that opens starts here and reserves a block above it.
    pub(super) outbox_reserved: u64,
}

/// Published one-time keys not yet handed out, and the fallback key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct KeysRecord {
    pub(super) version: u8,
    pub(super) pool: Vec<Signed<OneTimeKey>>,
    pub(super) fallback: Option<Signed<OneTimeKey>>,
    pub(super) fallback_created: Option<Timestamp>,
}

/// A known device of some user.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct DeviceRecord {
    pub(super) version: u8,
    /// The signed certificate bytes.
    #[serde(with = "codec::bytes")]
    pub(super) certificate: Vec<u8>,
    /// When the device was verified by SAS, if it was.
    pub(super) verified_at: Option<Timestamp>,
}

/// One Olm session with one device.
#[derive(Serialize, Deserialize)]
pub(super) struct OlmSessionRecord {
    pub(super) version: u8,
    pub(super) peer_device: DeviceId,
    pub(super) peer_curve25519: [u8; 32],
    pub(super) created_at: Timestamp,
    /// The machine generation that created it. After an unclean shutdown
    /// sessions of older generations are not used for sending.
    pub(super) generation: u64,
    /// Set when a message on this session failed to decrypt: a newer
    /// session is preferred for sending.
    pub(super) wedged_at: Option<Timestamp>,
    pub(super) pickle: Pickle,
}

/// The Olm sessions of one device, oldest first.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct OlmIndexRecord {
    pub(super) version: u8,
    pub(super) sessions: Vec<[u8; 32]>,
}

/// One device a Megolm session was shared with.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(super) struct Share {
    pub(super) device: DeviceId,
    /// The first message index the device is entitled to: where it became
    /// a recipient.
    pub(super) index: u32,
    /// The Olm session the key went over; `None` while it is owed (the
    /// device was a recipient but had no Olm session yet).
    pub(super) olm_session: Option<[u8; 32]>,
}

/// This device's outbound Megolm session of one room.
#[derive(Serialize, Deserialize)]
pub(super) struct OutboundRecord {
    pub(super) version: u8,
    pub(super) generation: u64,
    pub(super) room_id: RoomId,
    pub(super) created_at: Timestamp,
    pub(super) messages: u64,
    pub(super) pickle: vodozemac::megolm::GroupSessionPickle,
}

/// Who an outbound Megolm session was shared with; written only when it
/// changes (not with every message).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct SharesRecord {
    pub(super) version: u8,
    /// The outbound session these shares belong to.
    pub(super) session_id: [u8; 32],
    pub(super) shared_with: Vec<Share>,
}

/// An inbound Megolm session, bound to its room and to the devices that
/// shared its key. Only the session's creator can sign messages on it, so a
/// message is accepted from any of these devices: a member who forwards a
/// key it holds cannot claim the session's messages as its own.
#[derive(Serialize, Deserialize)]
pub(super) struct InboundRecord {
    pub(super) version: u8,
    pub(super) room_id: RoomId,
    pub(super) senders: Vec<(UserId, DeviceId)>,
    pub(super) first_index: u32,
    /// Made from a key signed by the session itself (not an export).
    pub(super) verified: bool,
    pub(super) pickle: vodozemac::megolm::InboundGroupSessionPickle,
}

/// Messages held for one Megolm session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct HeldSession {
    pub(super) session: [u8; 32],
    /// Sequence numbers in use: `first..next`.
    pub(super) first: u64,
    pub(super) next: u64,
    /// Bytes held.
    pub(super) bytes: u64,
    /// When the first of them was held.
    pub(super) since: Timestamp,
    /// Who they are charged to.
    pub(super) holder: super::Holder,
}

/// Sessions with held messages, oldest first.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct HeldIndexRecord {
    pub(super) version: u8,
    pub(super) sessions: Vec<HeldSession>,
}
