//! Messages that expire: a room's expiry, which every member's node
//! applies (a room setting, see `revisions`), and this device's retention
//! limit, which applies to every conversation on this device only.
//!
//! A message expires that long after it was sent: the sender's clock,
//! but never later than the message arrived here, so a sender's clock
//! cannot keep a message longer than the room allows, and a message that
//! arrives after its time (a member caught up late) is deleted as soon as
//! it is stored, before any client is told of it. An expiry applies to
//! every message of the room, the ones before it was set included.
//!
//! Expired messages are deleted from the timeline with their location
//! records; the event log names messages by position only, so no copy of
//! the text is left (see `docs/privacy.md` for what the sled log keeps
//! until it is rewritten). The core sweeps when the next known expiry is
//! due: it works that out from every sweep and every stored message.

use std::collections::HashMap;

use safemeet_proto::{EventId, RoomId, codec};
use safemeet_store::{Keyspace, Store};
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::core::Core;
use crate::placement::FollowUp;
use crate::records::{LogRecord, Removal, Revision, TimelineEntry, VERSION, name};
use crate::revisions::{Change, EarlyRedaction, locate, may_redact, redact_entry, stage_change};
use crate::rooms::dm_room;
use crate::timeline::stage_log_at;

/// Timeline entries read per page while sweeping.
const SWEEP_PAGE: usize = 256;
/// Redactions kept to try again after a commit (see [`Expiry::early`]).
const MAX_EARLY_RECHECKS: usize = 256;

/// This device's own limits, as stored.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct LocalSettings {
    pub(crate) version: u8,
    /// Messages of every conversation are deleted this long after they
    /// were sent (ms).
    pub(crate) retention_ms: Option<u64>,
}

/// What the core knows about expiries.
#[derive(Debug)]
pub(crate) struct Expiry {
    /// Rooms' expiries as stored (`None`: none), read as needed.
    rooms: HashMap<RoomId, Option<u64>>,
    /// This device's retention limit, once read.
    retention: Option<Option<u64>>,
    /// When (wall ms) the next message is due to expire, as far as known;
    /// 0 at start, so the first input sweeps.
    next: Option<u64>,
    /// Redactions that came before their message, to try again once the
    /// commit they came in is applied: a message released in the same
    /// commit (its room key came after both) is there by then.
    early: Vec<EventId>,
    /// When (wall ms) the last sweep ran.
    last_sweep: u64,
    /// How long sweeps wait after the one before (a quarter of the
    /// shortest limit, from 250 ms to a minute): a sweep reads whole
    /// timelines, so a long retention over a long history does not read
    /// them once per expiring message.
    spacing: u64,
    /// A sweep is due whatever the spacing: a limit changed, or a message
    /// arrived expired (it must go before any client hears of it).
    urgent: bool,
}

impl Default for Expiry {
    fn default() -> Self {
        Self {
            rooms: HashMap::new(),
            retention: None,
            next: Some(0),
            early: Vec::new(),
            last_sweep: 0,
            spacing: 0,
            urgent: true,
        }
    }
}

impl Expiry {
    fn due(&mut self, at: u64) {
        self.next = Some(self.next.map_or(at, |n| n.min(at)));
    }

    /// Due now, whatever the spacing.
    fn due_now(&mut self) {
        self.due(0);
        self.urgent = true;
    }

    /// When the next sweep runs (wall ms), if one is due at all.
    fn sweep_at(&self) -> Option<u64> {
        let next = self.next?;
        if self.urgent {
            return Some(next);
        }
        Some(next.max(self.last_sweep.saturating_add(self.spacing)))
    }
}

impl<S: Store + Clone> Core<S> {
    /// Follows up on stored events (see [`FollowUp`]).
    pub(crate) fn follow_up(&mut self, items: impl IntoIterator<Item = FollowUp>) {
        for item in items {
            match item {
                FollowUp::Message(room, sent) => {
                    if let Some(ms) = self.expiry_of(&room) {
                        let at = sent.saturating_add(ms);
                        if at <= self.now.wall.as_millis() {
                            self.expiry.due_now();
                        } else {
                            self.expiry.due(at);
                        }
                    }
                }
                FollowUp::Expiry(room, ms) => {
                    self.expiry.rooms.insert(room, ms);
                    self.expiry.due_now();
                }
                FollowUp::Early(target) => {
                    if self.expiry.early.len() < MAX_EARLY_RECHECKS {
                        self.expiry.early.push(target);
                    }
                }
            }
        }
    }

    /// How long a room's messages are kept here: the shorter of its
    /// expiry and this device's retention limit. A store that cannot be
    /// read counts as no limit, and says so.
    pub(crate) fn expiry_of(&mut self, room: &RoomId) -> Option<u64> {
        let retention = self.retention();
        let own = match self.expiry.rooms.get(room) {
            Some(ms) => *ms,
            None => {
                let ms = match crate::revisions::settings(&self.store, room) {
                    Ok(s) => s.and_then(|s| s.expire_after_ms),
                    Err(e) => {
                        tracing::warn!(error = %e, "could not read a room's settings");
                        None
                    }
                };
                self.expiry.rooms.insert(*room, ms);
                ms
            }
        };
        match (own, retention) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// This device's retention limit (ms).
    pub(crate) fn retention(&mut self) -> Option<u64> {
        if let Some(r) = self.expiry.retention {
            return r;
        }
        let r = match self.local_settings() {
            Ok(s) => s.retention_ms,
            Err(e) => {
                tracing::warn!(error = %e, "could not read this device's settings");
                None
            }
        };
        self.expiry.retention = Some(r);
        r
    }

    pub(crate) fn local_settings(&self) -> Result<LocalSettings, Error> {
        Ok(
            match self.store.get(Keyspace::Rooms, name::LOCAL_SETTINGS)? {
                Some(bytes) => codec::decode(&bytes, 256)?,
                None => LocalSettings::default(),
            },
        )
    }

    /// Sets this device's retention limit (ms; `None`: none) and sweeps.
    pub(crate) fn set_retention(&mut self, ms: Option<u64>) -> Result<LocalSettings, Error> {
        if let Some(ms) = ms
            && !(safemeet_proto::event::MIN_EXPIRY_MS..=safemeet_proto::event::MAX_EXPIRY_MS)
                .contains(&ms)
        {
            return Err(Error::InvalidInput(
                "a retention limit is between 1 second and 10 years".into(),
            ));
        }
        let settings = LocalSettings {
            version: VERSION,
            retention_ms: ms,
        };
        self.store.put(
            Keyspace::Rooms,
            name::LOCAL_SETTINGS,
            &codec::encode(&settings)?,
        )?;
        self.machine.flush()?;
        self.expiry.retention = Some(ms);
        self.expiry.due_now();
        Ok(settings)
    }

    /// When the core next wants to sweep (monotonic ms).
    pub(crate) fn expiry_due_ms(&self) -> Option<u64> {
        let next = self.expiry.sweep_at()?;
        let wait = next.saturating_sub(self.now.wall.as_millis());
        Some(self.now.mono_ms().saturating_add(wait))
    }

    /// Redacts what came before its redaction, then deletes what expired
    /// if a message is due. Failures are logged; the next input tries again.
    pub(crate) fn expire_due(&mut self) {
        if !self.expiry.early.is_empty()
            && let Err(e) = self.recheck_early()
        {
            tracing::warn!(error = %e, "could not apply an early redaction");
        }
        let now = self.now.wall.as_millis();
        if self.expiry.sweep_at().is_some_and(|at| at <= now) {
            self.expiry.next = None;
            self.expiry.urgent = false;
            self.expiry.last_sweep = now;
            if let Err(e) = self.sweep() {
                tracing::warn!(error = %e, "could not delete expired messages");
                // Try again in a minute rather than at every input.
                let retry = self.now.wall.as_millis().saturating_add(60_000);
                self.expiry.due(retry);
            }
        }
    }

    fn recheck_early(&mut self) -> Result<(), Error> {
        for target in std::mem::take(&mut self.expiry.early) {
            let Some((room_id, seq, mut entry)) = locate(&self.store, &target)? else {
                continue;
            };
            let Some(bytes) = self
                .store
                .get(Keyspace::Rooms, &name::early_redaction(&target))?
            else {
                continue;
            };
            let early: EarlyRedaction = codec::decode(&bytes, 256)?;
            let Some(room) = self.room(&room_id)? else {
                continue;
            };
            let allowed =
                early.room_id == room_id && (early.admin || may_redact(&room, early.by, &entry));
            if !allowed || entry.revision == Revision::Redacted {
                continue;
            }
            redact_entry(&mut entry);
            let change = Change::Rewrite {
                room_id,
                seq,
                entry: Box::new(entry),
                log: LogRecord::Removed {
                    room_id,
                    event_id: target,
                    reason: Removal::Redacted,
                },
            };
            let mut batch = self.store.batch();
            stage_change(&self.store, &mut batch, &change, self.log_next)?;
            self.store.apply(batch)?;
            self.log_next += 1;
        }
        Ok(())
    }

    /// Every conversation this device has: its group rooms and the DMs
    /// with its contacts.
    pub(crate) fn conversations(&self) -> Result<Vec<RoomId>, Error> {
        let me = self.user_id();
        let mut rooms = self.room_index()?.rooms;
        for c in self.contact_records()?.iter() {
            rooms.push(dm_room(&me, &c.user_id).0);
        }
        Ok(rooms)
    }

    /// Deletes every expired message of every conversation with a limit,
    /// and works out when the next one is due.
    fn sweep(&mut self) -> Result<(), Error> {
        let mut next: Option<u64> = None;
        let mut shortest: Option<u64> = None;
        for room in self.conversations()? {
            let Some(ms) = self.expiry_of(&room) else {
                continue;
            };
            shortest = Some(shortest.map_or(ms, |s| s.min(ms)));
            if let Some(due) = self.sweep_room(room, ms)? {
                next = Some(next.map_or(due, |n| n.min(due)));
            }
        }
        self.expiry.spacing = shortest.map_or(0, |ms| (ms / 4).clamp(250, 60_000));
        if let Some(due) = next {
            self.expiry.due(due);
        }
        Ok(())
    }

    /// Deletes the messages of `room_id` older than `ms`; returns when the
    /// next one expires.
    fn sweep_room(&mut self, room_id: RoomId, ms: u64) -> Result<Option<u64>, Error> {
        let now = self.now.wall.as_millis();
        let tl = name::timeline(&room_id);
        let mut next = None;
        let mut after = None;
        let mut expired = Vec::new();
        loop {
            let page = self
                .store
                .scan_ordered(Keyspace::Timeline, &tl, after, SWEEP_PAGE)?;
            let Some((last, _)) = page.last() else {
                break;
            };
            after = Some(*last);
            let full = page.len() == SWEEP_PAGE;
            let mut batch = self.store.batch();
            for (seq, bytes) in page {
                let entry = TimelineEntry::decode(&bytes)?;
                let due = entry.expires_at(ms);
                if due > now {
                    next = Some(next.map_or(due, |n: u64| n.min(due)));
                    continue;
                }
                self.store
                    .batch_delete_ordered(&mut batch, Keyspace::Timeline, &tl, seq)?;
                self.store.batch_delete(
                    &mut batch,
                    Keyspace::Rooms,
                    &name::message(&entry.event_id),
                )?;
                stage_log_at(
                    &self.store,
                    &mut batch,
                    self.log_next,
                    &LogRecord::Removed {
                        room_id,
                        event_id: entry.event_id,
                        reason: Removal::Expired,
                    },
                )?;
                self.log_next += 1;
                expired.push(entry.event_id);
            }
            if !batch.is_empty() {
                self.store.apply(batch)?;
            }
            if !full {
                break;
            }
        }
        for id in &expired {
            self.stop_sending(id);
        }
        Ok(next)
    }

    /// Stops delivering one of this device's messages that was deleted
    /// (expired or redacted) before every recipient had it: a device
    /// that has not got it by then would delete it on arrival, and the
    /// outbox's copy is one copy fewer kept. A copy already left on a
    /// relay is deleted by its recipient when drained.
    pub(crate) fn stop_sending(&mut self, event: &EventId) {
        if let Some(&seq) = self.outbox.by_event.get(event) {
            self.finish(&[seq]);
        }
    }
}
