//! The header keys this device opens room frames with (see
//! [`safemeet_proto::header`]).
//!
//! - **Known keys** derive from what the device holds: each group room it is
//!   in (its current secret and the previous ones still kept after a
//!   rotation) and each contact's DM. They are worked out again whenever
//!   rooms or contacts change.
//! - **Pending keys** came with room key shares, for a room this device is
//!   joining (it has no secret yet) or whose secret rotated before its new
//!   state arrived. They are kept in the store, at most
//!   [`MAX_PENDING_HEADERS`] (oldest dropped first), and dropped once they
//!   are known keys.
//!
//! A frame names its key by a hint (one small keyed hash per key), so
//! finding the key costs a hash per room and contact, not a decryption.
//! A frame no key opens may belong to a room whose key share has not
//! arrived yet, or be the first message of someone who is not a contact
//! yet (whose DM key this device cannot know): it is answered "later", so
//! its sender retries (a mailbox keeps it for the next drain). Junk gets
//! the same answer, since it cannot be told apart, and is never
//! forwarded. A few such frames are held in memory: when a room key share
//! brings the key that opens one, it is stored at once rather than at its
//! sender's next try. Only frames from known senders are held, each
//! charged to its holder (see `admission`), at most
//! [`MAX_HELD_SEALED_PER_HOLDER`] each.

use std::collections::VecDeque;

use safemeet_crypto::header;
use safemeet_crypto::machine::Holder;
use safemeet_proto::envelope::{RoomEnvelope, SealedRoomEnvelope};
use safemeet_proto::header::{HeaderKey, HeaderRoot};
use safemeet_proto::room::{RoomTopic, dm_room};
use safemeet_proto::{EventId, RoomId, codec};
use safemeet_store::{Keyspace, Store};
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::admission::HolderQueue;
use crate::core::Core;
use crate::records::{MAX_RECORD_BYTES, RoomRecord, VERSION};

/// Most pending header keys kept. A contact could send room keys naming
/// made-up header keys; past this the oldest go, which at worst makes a
/// device wait for a room's state to be sent again.
pub(crate) const MAX_PENDING_HEADERS: usize = 256;

/// Most sealed frames held for a key (a frame is at least 2 KiB and at
/// most 64 KiB, so between a quarter of a MiB and 8 MiB of memory). When
/// full, the holder holding the most frames loses its oldest.
pub(crate) const MAX_HELD_SEALED: usize = 128;
/// Most sealed frames held for one holder: 16, an eighth of the whole, so
/// one sender's junk cannot push out the frames of seven others. An
/// honest sender rarely has more frames out before the key share that
/// opens them (which it sends first).
pub(crate) const MAX_HELD_SEALED_PER_HOLDER: usize = 16;

/// Where the pending keys are stored.
const PENDING_NAME: &[u8] = b"header-keys-pending";

/// The header key a room's messages are sealed under now.
pub(crate) fn key_of(room: &RoomRecord) -> HeaderKey {
    match &room.secret {
        Some(secret) => HeaderKey::for_room(secret),
        None => HeaderKey::for_dm(&room.topic),
    }
}

/// The keys this device opens room frames with.
pub(crate) struct HeaderKeys {
    known: Vec<HeaderKey>,
    pending: VecDeque<(RoomId, HeaderKey)>,
    /// Frames no key opened yet, with the gossip topic they came on: a
    /// head start for when their key comes with a room key share (their
    /// senders retry anyway). At most [`MAX_HELD_SEALED`], and
    /// [`MAX_HELD_SEALED_PER_HOLDER`] per holder.
    held: HolderQueue<(Option<RoomTopic>, SealedRoomEnvelope)>,
    /// Rooms or contacts changed since `known` was worked out.
    pub(crate) stale: bool,
    /// The pending keys were read from the store.
    loaded: bool,
}

impl Default for HeaderKeys {
    fn default() -> Self {
        Self {
            known: Vec::new(),
            pending: VecDeque::new(),
            held: HolderQueue::new(MAX_HELD_SEALED, MAX_HELD_SEALED_PER_HOLDER),
            stale: false,
            loaded: false,
        }
    }
}

#[derive(Serialize, Deserialize)]
pub(crate) struct PendingRecord {
    version: u8,
    keys: Vec<(RoomId, HeaderRoot)>,
}

impl<S: Store + Clone> Core<S> {
    /// Opens a sealed room frame with the key it names, if this device
    /// holds it.
    pub(crate) fn open_header(&mut self, sealed: &SealedRoomEnvelope) -> Option<RoomEnvelope> {
        if let Err(e) = self.refresh_header_keys() {
            tracing::warn!(error = %e, "could not work out the room header keys");
        }
        let keys = &self.headers;
        keys.known
            .iter()
            .chain(keys.pending.iter().map(|(_, k)| k))
            .filter(|k| header::names(k, sealed))
            .find_map(|k| header::open(k, sealed).ok())
    }

    /// The event id of this device's own sealed message in `room`.
    pub(crate) fn own_event_id(
        &mut self,
        room: &RoomId,
        sealed: &SealedRoomEnvelope,
    ) -> Option<EventId> {
        let keys: Vec<HeaderKey> = match self.room(room) {
            Ok(Some(r)) if r.secret.is_some() => r.secrets().map(HeaderKey::for_room).collect(),
            Ok(Some(r)) => vec![key_of(&r)],
            _ => Vec::new(),
        };
        let env = keys
            .iter()
            .filter(|k| header::names(k, sealed))
            .find_map(|k| header::open(k, sealed).ok())
            .or_else(|| self.open_header(sealed))?;
        safemeet_crypto::machine::event_id(&env).ok()
    }

    /// Holds a frame no key opens, for [`Self::release_sealed`], charged
    /// to `holder`: past its quota its own oldest frame goes; when the
    /// hold is full, the oldest frame of whoever holds the most.
    pub(crate) fn hold_sealed(
        &mut self,
        holder: Holder,
        topic: Option<RoomTopic>,
        sealed: SealedRoomEnvelope,
    ) {
        self.headers.held.push(holder, (topic, sealed));
    }

    /// The held frames `root`'s key opens, taken out of the hold.
    pub(crate) fn release_sealed(
        &mut self,
        root: &HeaderRoot,
    ) -> Vec<(Option<RoomTopic>, RoomEnvelope)> {
        let key = HeaderKey::from_root(root);
        let mut opened = Vec::new();
        self.headers.held.retain(|(topic, sealed)| {
            if !header::names(&key, sealed) {
                return true;
            }
            match header::open(&key, sealed) {
                Ok(env) => {
                    opened.push((topic.clone(), env));
                    false
                }
                Err(_) => true,
            }
        });
        opened
    }

    /// Keeps the header key a room key share carried, unless it is known.
    pub(crate) fn keep_pending_header(&mut self, room: RoomId, root: &HeaderRoot) {
        let key = HeaderKey::from_root(root);
        if let Err(e) = self.refresh_header_keys() {
            tracing::warn!(error = %e, "could not work out the room header keys");
        }
        let h = &mut self.headers;
        if h.known.contains(&key) || h.pending.iter().any(|(_, k)| *k == key) {
            return;
        }
        if h.pending.len() >= MAX_PENDING_HEADERS {
            h.pending.pop_front();
        }
        h.pending.push_back((room, key));
        if let Err(e) = self.store_pending_headers() {
            tracing::warn!(error = %e, "could not keep a room header key");
        }
    }

    /// Works out the known keys again if rooms or contacts changed, and
    /// drops the pending keys that became known.
    fn refresh_header_keys(&mut self) -> Result<(), Error> {
        if !self.headers.loaded {
            self.headers.loaded = true;
            if let Some(bytes) = self.store.get(Keyspace::Rooms, PENDING_NAME)? {
                let record: PendingRecord = codec::decode(&bytes, MAX_RECORD_BYTES)?;
                self.headers.pending = record
                    .keys
                    .iter()
                    .take(MAX_PENDING_HEADERS)
                    .map(|(room, root)| (*room, HeaderKey::from_root(root)))
                    .collect();
            }
            self.headers.stale = true;
        }
        if !self.headers.stale {
            return Ok(());
        }
        let mut known = Vec::new();
        for id in self.room_index()?.rooms {
            if let Some(room) = self.room(&id)?
                && !room.left
            {
                known.extend(room.secrets().map(HeaderKey::for_room));
            }
        }
        let me = self.machine.account().user_id();
        for contact in self.contact_records()?.iter() {
            let (_, topic) = dm_room(&me, &contact.user_id);
            known.push(HeaderKey::for_dm(&topic));
        }
        self.headers.known = known;
        self.headers.stale = false;
        let before = self.headers.pending.len();
        let h = &mut self.headers;
        h.pending.retain(|(_, k)| !h.known.contains(k));
        if h.pending.len() != before {
            self.store_pending_headers()?;
        }
        Ok(())
    }

    fn store_pending_headers(&mut self) -> Result<(), Error> {
        let record = PendingRecord {
            version: VERSION,
            keys: self
                .headers
                .pending
                .iter()
                .map(|(room, key)| (*room, key.root()))
                .collect(),
        };
        let mut batch = self.store.batch();
        self.store.batch_put_value(
            &mut batch,
            Keyspace::Rooms,
            PENDING_NAME,
            &record,
            MAX_RECORD_BYTES,
        )?;
        self.store.apply(batch)?;
        Ok(())
    }
}
