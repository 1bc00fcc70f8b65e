//! Message requests: first messages from people who hold this user's
//! invite but are not contacts.
//!
//! Adding a contact sends them an introduction (the adder's signed device
//! list, certificates and profile) over the Olm session the invite's
//! fallback key starts. A device that has not added the sender checks the
//! introduction (`CryptoMachine::open_introduction`, which stores nothing)
//! and keeps it as a **message request**, together with the sender's next
//! frames (its DM's room key and messages, as they came: this device
//! cannot read them yet). Each kept frame is acknowledged, so the sender
//! sees "delivered" and stops retrying; nothing is decrypted and nothing
//! enters a timeline.
//!
//! - `request accept` makes the sender a contact from the introduction and
//!   takes the kept frames as if they had just arrived: the first messages
//!   show at once.
//! - `request decline` deletes the request and its frames.
//!
//! Bounds: at most `Config::max_requests` (32) requests, and at most
//! `Config::requests_per_hour` (10) new ones per hour (counted in memory:
//! a restart forgets the count, not the requests); past either, a new
//! introduction is refused (its sender sees the refusal). Each request
//! keeps at most [`MAX_REQUEST_FRAMES`] frames and one stored record's
//! worth of bytes (256 KiB); past that, frames are answered "later" (their
//! sender keeps them and retries, so they arrive once accepted). A blocked
//! user's introduction is refused like everything else of theirs.

use std::collections::VecDeque;

use safemeet_crypto::machine::Introduced;
use safemeet_proto::deliver::DeliverAnswer as Answer;
use safemeet_proto::envelope::{SealedRoomEnvelope, ToDeviceEnvelope};
use safemeet_proto::event::Introduction;
use safemeet_proto::header::HeaderKey;
use safemeet_proto::room::dm_room;
use safemeet_proto::{DeviceId, Timestamp, UserId, codec};
use safemeet_store::{Keyspace, Store};
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::core::Core;
use crate::receive::Source;
use crate::records::{ContactIndex, ContactRecord, MAX_RECORD_BYTES, VERSION};

/// Most frames kept with one request: 8, room for an introduction, a room
/// key and a few first messages.
pub const MAX_REQUEST_FRAMES: usize = 8;

/// One hour in milliseconds: the window `requests_per_hour` counts in.
const HOUR_MS: u64 = 3600 * 1000;

/// Where the list of requesters is stored.
const REQUESTS_NAME: &[u8] = b"requests";

fn request_name(user: &UserId) -> Vec<u8> {
    let mut v = b"request/".to_vec();
    v.extend_from_slice(user.as_bytes());
    v
}

/// A message request as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct MessageRequest {
    /// Who asks.
    pub user_id: UserId,
    /// Their username (signed by them).
    pub username: String,
    /// Their display name (signed by them).
    pub display_name: String,
    /// When their introduction arrived (this device's clock).
    pub received_at: Timestamp,
    /// Frames kept with it (the introduction, room keys, messages).
    pub frames: usize,
}

/// A kept request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RequestRecord {
    version: u8,
    user: UserId,
    device: DeviceId,
    peer: Vec<u8>,
    username: String,
    display_name: String,
    introduction: Introduction,
    received_at: Timestamp,
    frames: Vec<Vec<u8>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct RequestIndex {
    version: u8,
    users: Vec<UserId>,
}

/// The requests' state in memory.
#[derive(Debug, Default)]
pub(crate) struct Requests {
    /// When recent requests were made (monotonic ms), oldest first.
    recent: VecDeque<u64>,
}

impl<S: Store + Clone> Core<S> {
    fn request_index(&self) -> Result<RequestIndex, Error> {
        Ok(match self.store.get(Keyspace::Contacts, REQUESTS_NAME)? {
            Some(b) => codec::decode(&b, MAX_RECORD_BYTES)?,
            None => RequestIndex::default(),
        })
    }

    fn request(&self, user: &UserId) -> Result<Option<RequestRecord>, Error> {
        Ok(
            match self.store.get(Keyspace::Contacts, &request_name(user))? {
                Some(b) => Some(codec::decode(&b, MAX_RECORD_BYTES)?),
                None => None,
            },
        )
    }

    /// Writes (applies, not flushes) a request and the index.
    fn put_request(&self, record: &RequestRecord, index: &RequestIndex) -> Result<(), Error> {
        let mut batch = self.store.batch();
        self.store.batch_put_value(
            &mut batch,
            Keyspace::Contacts,
            &request_name(&record.user),
            record,
            MAX_RECORD_BYTES,
        )?;
        self.store.batch_put_value(
            &mut batch,
            Keyspace::Contacts,
            REQUESTS_NAME,
            index,
            MAX_RECORD_BYTES,
        )?;
        self.store.apply(batch)?;
        Ok(())
    }

    /// Deletes a request (applied and flushed); its record, if it was there.
    pub(crate) fn take_request(&mut self, user: &UserId) -> Result<Option<RequestRecord>, Error> {
        let mut index = self.request_index()?;
        if !index.users.contains(user) {
            return Ok(None);
        }
        let record = self.request(user)?;
        index.users.retain(|u| u != user);
        index.version = VERSION;
        let mut batch = self.store.batch();
        self.store
            .batch_delete(&mut batch, Keyspace::Contacts, &request_name(user))?;
        self.store.batch_put_value(
            &mut batch,
            Keyspace::Contacts,
            REQUESTS_NAME,
            &index,
            MAX_RECORD_BYTES,
        )?;
        self.store.apply(batch)?;
        self.store.flush()?;
        Ok(record)
    }

    /// The pending requests, oldest first.
    pub(crate) fn requests(&self) -> Result<Vec<MessageRequest>, Error> {
        let mut out = Vec::new();
        for user in self.request_index()?.users {
            if let Some(r) = self.request(&user)? {
                out.push(MessageRequest {
                    user_id: r.user,
                    username: r.username,
                    display_name: r.display_name,
                    received_at: r.received_at,
                    frames: r.frames.len(),
                });
            }
        }
        Ok(out)
    }

    /// A to-device frame from `user`, whom this device does not know: kept
    /// with their request, or the introduction that makes one.
    pub(crate) fn stranger_to_device(
        &mut self,
        from: &Source,
        user: UserId,
        env: &ToDeviceEnvelope,
        frame: &[u8],
    ) -> Answer {
        let result = match self.request(&user) {
            Ok(Some(record)) => self.keep_frame(from, record, frame),
            Ok(None) => match self.machine.open_introduction(env) {
                Ok(introduced) if introduced.user_id == user => {
                    self.new_request(from, introduced, frame)
                }
                Ok(_) => Ok(Answer::Refused),
                Err(safemeet_crypto::Error::RefusedSender) => Ok(Answer::Refused),
                // Not an introduction: perhaps a room key that came before
                // it. Its sender tries again.
                Err(_) => Ok(Answer::Later),
            },
            Err(e) => Err(e),
        };
        result.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "a message request could not be kept");
            Answer::Later
        })
    }

    /// A room frame no key opens: kept with a request if it is sealed
    /// under the DM key of a requester (and came from their device, when
    /// it came directly; never from gossip); `None` if it is no
    /// requester's.
    pub(crate) fn request_room_frame(
        &mut self,
        from: &Source,
        sealed: &SealedRoomEnvelope,
        frame: &[u8],
    ) -> Option<Answer> {
        // A requester is no member of any gossip mesh of this device's.
        if matches!(from, Source::Gossip(_)) {
            return None;
        }
        let me = self.user_id();
        let users = self.request_index().ok()?.users;
        let user = users.into_iter().find(|u| {
            let key = HeaderKey::for_dm(&dm_room(&me, u).1);
            safemeet_crypto::header::names(&key, sealed)
                && safemeet_crypto::header::open(&key, sealed).is_ok()
        })?;
        let record = self.request(&user).ok()??;
        Some(self.keep_frame(from, record, frame).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "a message request could not be kept");
            Answer::Later
        }))
    }

    fn keep_frame(
        &mut self,
        from: &Source,
        mut record: RequestRecord,
        frame: &[u8],
    ) -> Result<Answer, Error> {
        if let Source::Peer(peer) = from
            && peer.to_bytes() != record.peer
        {
            return Ok(Answer::Refused);
        }
        if record.frames.iter().any(|f| f == frame) {
            return Ok(Answer::Ack);
        }
        let size: usize = record.frames.iter().map(Vec::len).sum();
        // Room for the record's other fields (an introduction is a few KiB).
        let room = MAX_RECORD_BYTES.saturating_sub(32 * 1024);
        if record.frames.len() >= MAX_REQUEST_FRAMES || size + frame.len() > room {
            return Ok(Answer::Later);
        }
        record.frames.push(frame.to_vec());
        let index = self.request_index()?;
        self.put_request(&record, &index)?;
        Ok(Answer::Ack)
    }

    fn new_request(
        &mut self,
        from: &Source,
        introduced: Introduced,
        frame: &[u8],
    ) -> Result<Answer, Error> {
        if let Source::Peer(peer) = from
            && peer.to_bytes() != introduced.peer_id
        {
            return Ok(Answer::Refused);
        }
        let mut index = self.request_index()?;
        if index.users.len() >= self.config.max_requests {
            tracing::debug!("message request list full; an introduction was refused");
            return Ok(Answer::Refused);
        }
        let now = self.now.mono_ms();
        let recent = &mut self.requests.recent;
        while recent
            .front()
            .is_some_and(|t| now.saturating_sub(*t) >= HOUR_MS)
        {
            recent.pop_front();
        }
        if recent.len() >= self.config.requests_per_hour as usize {
            tracing::debug!("too many message requests this hour; an introduction was refused");
            return Ok(Answer::Refused);
        }
        recent.push_back(now);
        let record = RequestRecord {
            version: VERSION,
            user: introduced.user_id,
            device: introduced.device_id,
            peer: introduced.peer_id,
            username: introduced.username,
            display_name: introduced.display_name,
            introduction: introduced.introduction,
            received_at: self.now.wall,
            frames: vec![frame.to_vec()],
        };
        index.version = VERSION;
        index.users.push(record.user);
        self.put_request(&record, &index)?;
        Ok(Answer::Ack)
    }

    /// Accepts a request: its sender becomes a contact, and the frames
    /// kept with it are taken as if they had just arrived.
    pub(crate) fn accept_request(&mut self, user: &UserId) -> Result<(), Error> {
        let Some(record) = self.request(user)? else {
            return Err(Error::UnknownContact(*user));
        };
        let intro = &record.introduction;
        self.machine
            .add_device_list(&intro.device_list, &intro.certificates)?;
        let contact = ContactRecord {
            version: VERSION,
            user_id: record.user,
            pet_name: None,
            username: record.username.clone(),
            display_name: record.display_name.clone(),
            addrs: Vec::new(),
        };
        let mut index: ContactIndex = self.contact_index()?;
        if !index.users.contains(user) {
            index.users.push(*user);
        }
        self.put_contact(&contact, &index)?;
        self.mark_added(*user)?;
        self.headers.stale = true;
        self.admission.stale = true;
        self.devices_changed = true;
        self.replay_request(user)
    }

    /// Takes a request's kept frames as if they had just arrived (its
    /// sender is a contact now), and deletes it. Nothing if there is none.
    pub(crate) fn replay_request(&mut self, user: &UserId) -> Result<(), Error> {
        let Some(record) = self.take_request(user)? else {
            return Ok(());
        };
        for frame in &record.frames {
            let (answer, stored) = self.receive(Source::Mailbox, frame);
            if answer != Answer::Ack {
                tracing::debug!("a kept frame of an accepted request was not taken");
            }
            self.acks_due.extend(stored);
        }
        if !self.flush_received() {
            return Err(Error::InvalidInput(
                "the request's messages could not be stored; they come again".into(),
            ));
        }
        let acks = std::mem::take(&mut self.acks_due);
        self.queue_acks(acks);
        Ok(())
    }

    /// Declines a request: it and its frames are deleted.
    pub(crate) fn decline_request(&mut self, user: &UserId) -> Result<(), Error> {
        match self.take_request(user)? {
            Some(_) => Ok(()),
            None => Err(Error::UnknownContact(*user)),
        }
    }
}
