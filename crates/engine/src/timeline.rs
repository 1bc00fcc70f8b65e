//! Timelines and the event log: what this device shows and what API
//! clients replay.
//!
//! A room's timeline is an ordered keyspace of [`TimelineEntry`]s by
//! arrival; a message's delivery state changes in place ("sent" →
//! "stored at relay until T" → "delivered") and each change is also an
//! entry of the durable, numbered event log.

use safemeet_crypto::{EncryptedBatch, EncryptedStore};
use safemeet_proto::{RoomId, codec};
use safemeet_store::{Keyspace, Store};

use crate::Error;
use crate::core::Core;
use crate::records::{
    LogEntry, LogRecord, MAX_RECORD_BYTES, MessageState, OutboxMeta, RoomRecord, TimelineEntry,
    name,
};
use crate::rooms::put_room;

impl<S: Store + Clone> Core<S> {
    /// The `limit` latest messages of a room (by arrival), oldest first in
    /// Lamport order.
    pub(crate) fn timeline(
        &self,
        room: &RoomRecord,
        limit: usize,
    ) -> Result<Vec<TimelineEntry>, Error> {
        let start = room.next_seq.saturating_sub(limit as u64);
        let after = start.checked_sub(1);
        let rows = self.store.scan_ordered(
            Keyspace::Timeline,
            &name::timeline(&room.room_id),
            after,
            limit,
        )?;
        let mut out: Vec<TimelineEntry> = Vec::with_capacity(rows.len());
        for (_, bytes) in rows {
            out.push(TimelineEntry::decode(&bytes)?);
        }
        // Shown in Lamport order, ties broken by sender and event id, so
        // every member sees the same order whatever the arrival order was.
        out.sort_by(|a, b| {
            (a.lamport, a.sender, a.event_id).cmp(&(b.lamport, b.sender, b.event_id))
        });
        Ok(out)
    }

    /// Up to `limit` timeline entries after stored position `after` (from
    /// the start when `None`), in stored order, with their positions.
    pub(crate) fn timeline_page(
        &self,
        room: &RoomRecord,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, TimelineEntry)>, Error> {
        self.store
            .scan_ordered(
                Keyspace::Timeline,
                &name::timeline(&room.room_id),
                after,
                limit,
            )?
            .into_iter()
            .map(|(seq, bytes)| Ok((seq, TimelineEntry::decode(&bytes)?)))
            .collect()
    }

    /// Event-log entries after `cursor` (0: from the start), at most
    /// `limit`, with messages as they are now: a message that expired
    /// since is left out, a redacted one comes empty.
    pub(crate) fn events(&self, cursor: u64, limit: usize) -> Result<Vec<(u64, LogEntry)>, Error> {
        let after = if cursor == 0 { None } else { Some(cursor) };
        let mut out = Vec::new();
        for (seq, bytes) in
            self.store
                .scan_ordered(Keyspace::EventLog, name::EVENT_LOG, after, limit)?
        {
            let record: LogRecord = codec::decode(&bytes, MAX_RECORD_BYTES)?;
            if let Some(entry) = self.resolve(record)? {
                out.push((seq, entry));
            }
        }
        Ok(out)
    }

    /// What a stored event-log record says now.
    fn resolve(&self, record: LogRecord) -> Result<Option<LogEntry>, Error> {
        let entry_at = |room_id: &RoomId, seq: u64| -> Result<Option<TimelineEntry>, Error> {
            Ok(
                match self
                    .store
                    .get_ordered(Keyspace::Timeline, &name::timeline(room_id), seq)?
                {
                    Some(bytes) => Some(TimelineEntry::decode(&bytes)?),
                    None => None,
                },
            )
        };
        Ok(match record {
            LogRecord::LegacyMessage { room_id, entry } => Some(LogEntry::Message {
                room_id,
                entry: entry.into(),
            }),
            LogRecord::Message { room_id, seq } => {
                entry_at(&room_id, seq)?.map(|entry| LogEntry::Message { room_id, entry })
            }
            LogRecord::Edited { room_id, seq } => entry_at(&room_id, seq)?
                .filter(|e| e.revision != crate::records::Revision::Redacted)
                .map(|entry| LogEntry::Edited { room_id, entry }),
            LogRecord::Room {
                room_id,
                name,
                members,
            } => Some(LogEntry::Room {
                room_id,
                name,
                members,
            }),
            LogRecord::Delivered { room_id, event_id } => {
                Some(LogEntry::Delivered { room_id, event_id })
            }
            LogRecord::StoredAtRelay {
                room_id,
                event_id,
                until,
            } => Some(LogEntry::StoredAtRelay {
                room_id,
                event_id,
                until,
            }),
            LogRecord::Removed {
                room_id,
                event_id,
                reason,
            } => Some(LogEntry::Removed {
                room_id,
                event_id,
                reason,
            }),
            LogRecord::Settings {
                room_id,
                expire_after_ms,
                by,
            } => Some(LogEntry::Settings {
                room_id,
                expire_after_ms,
                by,
            }),
            LogRecord::Call(record) => Some(LogEntry::Call(record)),
            LogRecord::Meeting(record) => Some(LogEntry::Meeting(record)),
        })
    }

    /// Records a new delivery state of pending items (applied; flushed
    /// with the next flush).
    pub(crate) fn record_state(&mut self, seqs: &[u64], state: MessageState) {
        if seqs.is_empty() {
            return;
        }
        let mut batch = self.store.batch();
        let staged = seqs
            .iter()
            .try_for_each(|seq| self.stage_state(&mut batch, *seq, state))
            .and_then(|()| Ok(self.store.apply(batch)?));
        if let Err(e) = staged {
            tracing::warn!(error = %e, "could not record a delivery state");
        }
    }

    /// Stages a message's new delivery state: its timeline entry changes
    /// and the event log says so. "Delivered" is final; "stored at relay"
    /// only replaces "sent" or an earlier "stored at relay".
    fn stage_state(
        &mut self,
        batch: &mut EncryptedBatch,
        seq: u64,
        state: MessageState,
    ) -> Result<(), Error> {
        let Some(pending) = self.outbox.pending.get(&seq) else {
            return Ok(());
        };
        let meta: OutboxMeta = codec::decode(&pending.item.meta, 64)?;
        let Some((room_id, tseq)) = meta.timeline else {
            return Ok(());
        };
        // A message left on relays turns "delivered" when a recipient
        // acknowledges it later, after the outbox item is gone: remember
        // where its timeline entry is.
        if let (MessageState::StoredAtRelay { .. }, Some(id)) = (state, pending.event_id) {
            self.store.batch_put_value(
                batch,
                Keyspace::Rooms,
                &name::relayed(&id),
                &(room_id, tseq),
                64,
            )?;
        }
        self.stage_entry_state(batch, room_id, tseq, state)
    }

    /// Stages the new state of the timeline entry `tseq` of `room_id`.
    fn stage_entry_state(
        &mut self,
        batch: &mut EncryptedBatch,
        room_id: RoomId,
        tseq: u64,
        state: MessageState,
    ) -> Result<(), Error> {
        let tl = name::timeline(&room_id);
        let Some(bytes) = self.store.get_ordered(Keyspace::Timeline, &tl, tseq)? else {
            return Ok(());
        };
        let mut entry = TimelineEntry::decode(&bytes)?;
        let log = match (entry.state, state) {
            (MessageState::Delivered, _) => return Ok(()),
            (MessageState::StoredAtRelay { until: old }, MessageState::StoredAtRelay { until })
                if until <= old =>
            {
                return Ok(());
            }
            (_, MessageState::StoredAtRelay { until }) => LogRecord::StoredAtRelay {
                room_id,
                event_id: entry.event_id,
                until,
            },
            _ => LogRecord::Delivered {
                room_id,
                event_id: entry.event_id,
            },
        };
        entry.state = state;
        self.store.batch_put_ordered_value(
            batch,
            Keyspace::Timeline,
            &tl,
            tseq,
            &entry,
            MAX_RECORD_BYTES,
        )?;
        stage_log_at(&self.store, batch, self.log_next, &log)?;
        self.log_next += 1;
        Ok(())
    }

    /// Acknowledgements of messages no longer in the outbox because relays
    /// keep them: the recipient drained its mailbox; they are delivered.
    pub(crate) fn acked_after_relay(
        &mut self,
        ids: &[safemeet_proto::EventId],
    ) -> Result<(), Error> {
        let mut batch = self.store.batch();
        for id in ids {
            let key = name::relayed(id);
            let Some(bytes) = self.store.get(Keyspace::Rooms, &key)? else {
                continue;
            };
            let (room_id, tseq): (RoomId, u64) = codec::decode(&bytes, 64)?;
            self.stage_entry_state(&mut batch, room_id, tseq, MessageState::Delivered)?;
            self.store.batch_delete(&mut batch, Keyspace::Rooms, &key)?;
        }
        if !batch.is_empty() {
            self.store.apply(batch)?;
        }
        Ok(())
    }
}

/// Stages `entry` as event-log entry `log_seq`, and the next cursor.
pub(crate) fn stage_log_at<S: Store>(
    store: &EncryptedStore<S>,
    batch: &mut EncryptedBatch,
    log_seq: u64,
    entry: &LogRecord,
) -> Result<(), safemeet_crypto::Error> {
    store.batch_put_ordered_value(
        batch,
        Keyspace::EventLog,
        name::EVENT_LOG,
        log_seq,
        entry,
        MAX_RECORD_BYTES,
    )?;
    store.batch_put_value(
        batch,
        Keyspace::EventLog,
        name::EVENT_LOG_NEXT,
        &(log_seq + 1),
        16,
    )
}

/// Stages a message's timeline entry, where it is, its room record and
/// its event-log entry at `log_seq`.
pub(crate) fn stage_message<S: Store>(
    store: &EncryptedStore<S>,
    batch: &mut EncryptedBatch,
    room: &RoomRecord,
    seq: u64,
    entry: &TimelineEntry,
    log_seq: u64,
) -> Result<(), safemeet_crypto::Error> {
    store.batch_put_ordered_value(
        batch,
        Keyspace::Timeline,
        &name::timeline(&room.room_id),
        seq,
        entry,
        MAX_RECORD_BYTES,
    )?;
    crate::revisions::stage_location(store, batch, room.room_id, seq, &entry.event_id)?;
    // A message's room exists already (its state came first): the index
    // stays as it is.
    put_room(store, batch, room)?;
    stage_log_at(
        store,
        batch,
        log_seq,
        &LogRecord::Message {
            room_id: room.room_id,
            seq,
        },
    )
}

impl<S: Store + Clone> Core<S> {
    /// Tells watchers how far the event log goes, once that part is
    /// durable: a cursor a client has seen is never reused after a crash.
    pub(crate) fn publish_log_cursor(&mut self) {
        if self.log_next != self.log_durable {
            if let Err(e) = self.machine.flush() {
                tracing::error!(error = %e, "flush failed; new events not announced");
                return;
            }
            self.log_durable = self.log_next;
        }
        if self.announced != self.log_next {
            self.announced = self.log_next;
            self.out
                .push(crate::events::Output::LogCursor(self.log_next));
        }
    }
}
