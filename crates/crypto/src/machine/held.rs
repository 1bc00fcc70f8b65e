//! Held messages: room messages whose Megolm key has not arrived, kept in
//! the store until it does (see the [module docs](super), "Late keys"),
//! each charged to a [`Holder`] with a quota.

use std::collections::HashMap;

use safemeet_proto::codec;
use safemeet_proto::envelope::RoomEnvelope;
use safemeet_proto::{EventId, Timestamp};
use safemeet_store::{Keyspace, Store};

use super::megolm::elapsed;
use super::records::{self, HeldSession, name};
use super::{
    CryptoMachine, DecryptedRoomEvent, HELD_TTL_MS, Holder, MAX_HELD_BYTES,
    MAX_HELD_BYTES_PER_HOLDER, MAX_HELD_BYTES_PER_SESSION, MAX_HELD_PER_SESSION, MAX_HELD_SESSIONS,
    MAX_HELD_SESSIONS_PER_HOLDER,
};
use crate::{EncryptedBatch, Error};

impl<S: Store> CryptoMachine<S> {
    fn put_held_index(&self, batch: &mut EncryptedBatch) -> Result<(), Error> {
        self.store.batch_put(
            batch,
            Keyspace::CryptoSessions,
            name::HELD_INDEX,
            &records::encode(&self.held)?,
        )
    }

    /// Stages the deletion of every message held for the session at `pos`
    /// and removes it from the index.
    fn drop_held(&mut self, batch: &mut EncryptedBatch, pos: usize) -> Result<(), Error> {
        let entry = self.held.sessions.remove(pos);
        for seq in entry.first..entry.next {
            self.store.batch_delete_ordered(
                batch,
                Keyspace::CryptoSessions,
                &name::held(&entry.session),
                seq,
            )?;
        }
        Ok(())
    }

    /// Keeps a message whose key has not arrived, charged to `holder`.
    /// Entries older than [`HELD_TTL_MS`] are dropped first; a holder at
    /// its quota makes room from its own oldest sessions, and when the
    /// whole store is full the holder holding the most bytes gives way.
    /// Returns false when the message is not held (it alone exceeds what
    /// one session or one holder may hold).
    pub(super) fn hold(
        &mut self,
        envelope: &RoomEnvelope,
        holder: Holder,
        now: Timestamp,
    ) -> Result<bool, Error> {
        let id = envelope.session_id;
        let encoded = codec::encode(envelope)?;
        let size = encoded.len() as u64;
        let mut batch = self.store.batch();
        while let Some(pos) = self
            .held
            .sessions
            .iter()
            .position(|h| elapsed(now, h.since) >= HELD_TTL_MS)
        {
            self.drop_held(&mut batch, pos)?;
        }
        // A session is charged to whoever first handed over one of its
        // messages; another holder cannot add to it.
        let fits = match self.held.sessions.iter().find(|h| h.session == id) {
            Some(entry) => {
                entry.holder == holder
                    && entry.next - entry.first < MAX_HELD_PER_SESSION
                    && entry.bytes.saturating_add(size) <= MAX_HELD_BYTES_PER_SESSION
            }
            None => size <= MAX_HELD_BYTES_PER_SESSION,
        };
        let held = fits && size <= MAX_HELD_BYTES_PER_HOLDER;
        if held {
            self.make_room(&mut batch, id, holder, size)?;
            if !self.held.sessions.iter().any(|h| h.session == id) {
                self.held.sessions.push(HeldSession {
                    session: id,
                    first: 0,
                    next: 0,
                    bytes: 0,
                    since: now,
                    holder,
                });
            }
            let Some(entry) = self.held.sessions.iter_mut().find(|h| h.session == id) else {
                return Ok(false);
            };
            let seq = entry.next;
            entry.next += 1;
            entry.bytes += size;
            self.store.batch_put_ordered(
                &mut batch,
                Keyspace::CryptoSessions,
                &name::held(&id),
                seq,
                &encoded,
            )?;
        }
        self.put_held_index(&mut batch)?;
        self.commit(batch, false)?;
        Ok(held)
    }

    /// Drops held sessions (never `keep`) until `size` more bytes for
    /// `holder` fit its quota and the whole store, and a new session of
    /// its fits its session count.
    fn make_room(
        &mut self,
        batch: &mut EncryptedBatch,
        keep: [u8; 32],
        holder: Holder,
        size: u64,
    ) -> Result<(), Error> {
        let new_session = !self.held.sessions.iter().any(|h| h.session == keep);
        loop {
            let mine = |h: &HeldSession| h.holder == holder && h.session != keep;
            let (count, bytes) = self
                .held
                .sessions
                .iter()
                .filter(|h| h.holder == holder)
                .fold((0usize, 0u64), |(c, b), h| (c + 1, b + h.bytes));
            let over_holder = bytes.saturating_add(size) > MAX_HELD_BYTES_PER_HOLDER
                || (new_session && count >= MAX_HELD_SESSIONS_PER_HOLDER);
            let total: u64 = self.held.sessions.iter().map(|h| h.bytes).sum();
            let over_total = total.saturating_add(size) > MAX_HELD_BYTES
                || (new_session && self.held.sessions.len() >= MAX_HELD_SESSIONS);
            let pos = if over_holder {
                // The holder's own oldest session.
                self.held.sessions.iter().position(mine)
            } else if over_total {
                // The oldest session of whoever holds the most.
                let mut totals: HashMap<Holder, u64> = HashMap::new();
                for h in &self.held.sessions {
                    *totals.entry(h.holder).or_default() += h.bytes;
                }
                let largest = totals
                    .into_iter()
                    .filter(|(h, _)| {
                        self.held
                            .sessions
                            .iter()
                            .any(|s| s.holder == *h && s.session != keep)
                    })
                    .max_by_key(|(_, b)| *b)
                    .map(|(h, _)| h);
                largest.and_then(|largest| {
                    self.held
                        .sessions
                        .iter()
                        .position(|h| h.holder == largest && h.session != keep)
                })
            } else {
                return Ok(());
            };
            match pos {
                Some(pos) => self.drop_held(batch, pos)?,
                None => return Ok(()),
            }
        }
    }

    /// Decrypts and drops the messages held for `session`; each one's
    /// replay record is committed with what `place` writes for it, or not
    /// at all when `place` refuses it.
    pub(super) fn release_held(
        &mut self,
        session: &[u8; 32],
        now: Timestamp,
        mut place: impl FnMut(&DecryptedRoomEvent) -> Result<EncryptedBatch, Error>,
    ) -> Result<Vec<Result<DecryptedRoomEvent, Error>>, Error> {
        let Some(pos) = self
            .held
            .sessions
            .iter()
            .position(|h| h.session == *session)
        else {
            return Ok(Vec::new());
        };
        let held = self.store.scan_ordered(
            Keyspace::CryptoSessions,
            &name::held(session),
            None,
            MAX_HELD_PER_SESSION as usize,
        )?;
        let mut results = Vec::with_capacity(held.len());
        let mut batch = self.store.batch();
        // The replay records of this release are staged, not yet in the
        // store: a message held twice is caught here.
        let mut opened: std::collections::HashMap<u32, EventId> = Default::default();
        for (_, bytes) in held {
            let decoded: Result<RoomEnvelope, _> =
                codec::decode(&bytes, safemeet_proto::padding::MAX_BODY_BYTES);
            results.push(match decoded {
                Ok(env) => self
                    .open_room(&env, now, None)
                    .and_then(|(event, writes)| match opened.get(&event.message_index) {
                        Some(first) => Err(Error::Replay {
                            index: event.message_index,
                            same_ciphertext: *first == event.event_id,
                        }),
                        None => {
                            let placed = place(&event)?;
                            opened.insert(event.message_index, event.event_id);
                            batch.extend(writes);
                            batch.extend(placed);
                            Ok(event)
                        }
                    }),
                Err(e) => Err(e.into()),
            });
        }
        self.drop_held(&mut batch, pos)?;
        self.put_held_index(&mut batch)?;
        self.commit(batch, false)?;
        Ok(results)
    }
}
