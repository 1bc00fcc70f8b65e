//! Changing what was said: edits, redactions, and room settings.
//!
//! A message's text lives in one place, its timeline entry; the event log
//! names the entry by position (see [`LogRecord`]). An edit rewrites the
//! entry, a redaction empties it and marks it redacted, an expiry (see
//! `expiry`) deletes it, and nothing else holds the text.
//!
//! Who may change what, checked on every device that applies a change:
//! - an edit: the message's sender (any of its devices), never after a
//!   redaction; the edit with the highest Lamport clock wins;
//! - a redaction: the sender, or an admin of the group room;
//! - a room's settings: an admin of a group room, or either user of a DM;
//!   the setting with the highest (Lamport clock, sender) wins.
//!
//! A redaction can arrive before its message (they travel separately, and
//! copies of the message may still wait on relays): it is kept, bounded,
//! and the message is stored already redacted when it comes.

use safemeet_crypto::{EncryptedBatch, EncryptedStore};
use safemeet_proto::event::EventContent;
use safemeet_proto::{EventId, RoomId, UserId, codec};

use safemeet_store::{Keyspace, Store};
use serde::{Deserialize, Serialize};

use crate::records::{
    LogRecord, MAX_RECORD_BYTES, Removal, Revision, RoomRecord, TimelineEntry, VERSION, name,
};
use crate::timeline::stage_log_at;

/// How many early redactions a device keeps (the oldest go first).
pub(crate) const MAX_EARLY_REDACTIONS: usize = 1024;
/// Why a change of a message was not made.
pub(crate) const NOT_YOURS: &str =
    "only its sender may edit a message, and only its sender or a room admin may redact it";

/// A room's settings as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SettingsRecord {
    pub(crate) version: u8,
    pub(crate) expire_after_ms: Option<u64>,
    /// The Lamport clock and sender of the setting: a later one wins.
    pub(crate) lamport: u64,
    pub(crate) by: UserId,
}

/// A redaction whose message has not arrived.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct EarlyRedaction {
    pub(crate) version: u8,
    pub(crate) room_id: RoomId,
    pub(crate) by: UserId,
    /// The redactor was an admin of the room when it came.
    pub(crate) admin: bool,
}

/// A change worked out from a received or sent event.
#[derive(Debug, Clone)]
pub(crate) enum Change {
    /// Timeline entry `seq` of `room_id` becomes `entry`, logged as `log`.
    Rewrite {
        room_id: RoomId,
        seq: u64,
        /// Boxed: the largest variant by far.
        entry: Box<TimelineEntry>,
        log: LogRecord,
    },
    /// A redaction of a message not here (yet).
    Early {
        target: EventId,
        record: EarlyRedaction,
    },
    /// The room's settings change.
    Settings {
        room_id: RoomId,
        record: SettingsRecord,
    },
}

impl Change {
    /// How many event-log entries staging it uses.
    pub(crate) fn log_entries(&self) -> u64 {
        match self {
            Change::Rewrite { .. } | Change::Settings { .. } => 1,
            Change::Early { .. } => 0,
        }
    }
}

/// Where a message is: its room, position and entry, if this device has it.
pub(crate) fn locate<S: Store>(
    store: &EncryptedStore<S>,
    event: &EventId,
) -> Result<Option<(RoomId, u64, TimelineEntry)>, safemeet_crypto::Error> {
    let Some(bytes) = store.get(Keyspace::Rooms, &name::message(event))? else {
        return Ok(None);
    };
    let (room_id, seq): (RoomId, u64) = codec::decode(&bytes, 64)?;
    let Some(bytes) = store.get_ordered(Keyspace::Timeline, &name::timeline(&room_id), seq)? else {
        return Ok(None);
    };
    Ok(Some((room_id, seq, TimelineEntry::decode(&bytes)?)))
}

/// Stages where a message is.
pub(crate) fn stage_location<S: Store>(
    store: &EncryptedStore<S>,
    batch: &mut EncryptedBatch,
    room_id: RoomId,
    seq: u64,
    event: &EventId,
) -> Result<(), safemeet_crypto::Error> {
    store.batch_put_value(
        batch,
        Keyspace::Rooms,
        &name::message(event),
        &(room_id, seq),
        64,
    )
}

/// Whether `actor` may redact `entry` in `room`.
pub(crate) fn may_redact(room: &RoomRecord, actor: UserId, entry: &TimelineEntry) -> bool {
    entry.sender == actor || (room.dm_with.is_none() && room.admins.contains(&actor))
}

/// The stored settings of a room.
pub(crate) fn settings<S: Store>(
    store: &EncryptedStore<S>,
    room: &RoomId,
) -> Result<Option<SettingsRecord>, safemeet_crypto::Error> {
    Ok(match store.get(Keyspace::Rooms, &name::settings(room))? {
        Some(bytes) => Some(codec::decode(&bytes, MAX_RECORD_BYTES)?),
        None => None,
    })
}

/// What `content`, sent by `actor` at `lamport` in `room`, changes; `None`
/// for content that changes no message or setting, and for a change that
/// is refused or already superseded (nothing happens, and nothing is
/// said to the sender: a refusal would tell a peer what this device holds).
pub(crate) fn plan<S: Store>(
    store: &EncryptedStore<S>,
    room: &RoomRecord,
    actor: UserId,
    lamport: u64,
    content: &EventContent,
) -> Result<Option<Change>, safemeet_crypto::Error> {
    match content {
        EventContent::Redaction(r) => plan_redaction(store, room, actor, r.target),
        EventContent::Edit(edit) => {
            let Some((room_id, seq, mut entry)) = locate(store, &edit.target)? else {
                return Ok(None);
            };
            let newer = match entry.revision {
                Revision::Original => true,
                Revision::Edited { lamport: shown } => lamport > shown,
                Revision::Redacted => false,
            };
            if room_id != room.room_id || entry.sender != actor || !newer {
                return Ok(None);
            }
            entry.text = edit.body.as_str().to_owned();
            entry.revision = Revision::Edited { lamport };
            Ok(Some(Change::Rewrite {
                room_id,
                seq,
                entry: Box::new(entry),
                log: LogRecord::Edited { room_id, seq },
            }))
        }
        EventContent::Settings(s) => {
            let allowed = match room.dm_with {
                Some(_) => room.members.contains(&actor),
                None => room.admins.contains(&actor),
            };
            let current = settings(store, &room.room_id)?;
            let newer = current.is_none_or(|c| (lamport, actor) > (c.lamport, c.by));
            if !allowed || !newer {
                return Ok(None);
            }
            Ok(Some(Change::Settings {
                room_id: room.room_id,
                record: SettingsRecord {
                    version: VERSION,
                    expire_after_ms: s.expire_after_ms,
                    lamport,
                    by: actor,
                },
            }))
        }
        _ => Ok(None),
    }
}

/// A redaction of `target` by `actor` in `room`.
fn plan_redaction<S: Store>(
    store: &EncryptedStore<S>,
    room: &RoomRecord,
    actor: UserId,
    target: EventId,
) -> Result<Option<Change>, safemeet_crypto::Error> {
    let Some((room_id, seq, mut entry)) = locate(store, &target)? else {
        return Ok(Some(Change::Early {
            target,
            record: EarlyRedaction {
                version: VERSION,
                room_id: room.room_id,
                by: actor,
                admin: room.dm_with.is_none() && room.admins.contains(&actor),
            },
        }));
    };
    if room_id != room.room_id
        || !may_redact(room, actor, &entry)
        || entry.revision == Revision::Redacted
    {
        return Ok(None);
    }
    redact_entry(&mut entry);
    Ok(Some(Change::Rewrite {
        room_id,
        seq,
        entry: Box::new(entry),
        log: LogRecord::Removed {
            room_id,
            event_id: target,
            reason: Removal::Redacted,
        },
    }))
}

/// Empties a message and marks it redacted.
pub(crate) fn redact_entry(entry: &mut TimelineEntry) {
    entry.text = String::new();
    entry.file = None;
    entry.revision = Revision::Redacted;
}

/// Stages a change with its event-log entry at `log_seq`; returns how
/// many log entries it used.
pub(crate) fn stage_change<S: Store>(
    store: &EncryptedStore<S>,
    batch: &mut EncryptedBatch,
    change: &Change,
    log_seq: u64,
) -> Result<u64, safemeet_crypto::Error> {
    match change {
        Change::Rewrite {
            room_id,
            seq,
            entry,
            log,
        } => {
            store.batch_put_ordered_value(
                batch,
                Keyspace::Timeline,
                &name::timeline(room_id),
                *seq,
                entry,
                MAX_RECORD_BYTES,
            )?;
            stage_log_at(store, batch, log_seq, log)?;
        }
        Change::Early { target, record } => {
            let mut order: Vec<EventId> =
                match store.get(Keyspace::Rooms, name::EARLY_REDACTIONS)? {
                    Some(bytes) => codec::decode(&bytes, MAX_RECORD_BYTES)?,
                    None => Vec::new(),
                };
            if !order.contains(target) {
                order.push(*target);
            }
            while order.len() > MAX_EARLY_REDACTIONS {
                let oldest = order.remove(0);
                store.batch_delete(batch, Keyspace::Rooms, &name::early_redaction(&oldest))?;
            }
            store.batch_put_value(
                batch,
                Keyspace::Rooms,
                name::EARLY_REDACTIONS,
                &order,
                MAX_RECORD_BYTES,
            )?;
            store.batch_put_value(
                batch,
                Keyspace::Rooms,
                &name::early_redaction(target),
                record,
                256,
            )?;
        }
        Change::Settings { room_id, record } => {
            store.batch_put_value(
                batch,
                Keyspace::Rooms,
                &name::settings(room_id),
                record,
                MAX_RECORD_BYTES,
            )?;
            stage_log_at(
                store,
                batch,
                log_seq,
                &LogRecord::Settings {
                    room_id: *room_id,
                    expire_after_ms: record.expire_after_ms,
                    by: record.by,
                },
            )?;
        }
    }
    Ok(change.log_entries())
}

/// Whether a message arriving in `room` from `sender` was redacted before
/// it came (by its sender, or by an admin).
pub(crate) fn redacted_early<S: Store>(
    store: &EncryptedStore<S>,
    room: &RoomId,
    sender: UserId,
    event: &EventId,
) -> Result<bool, safemeet_crypto::Error> {
    let Some(bytes) = store.get(Keyspace::Rooms, &name::early_redaction(event))? else {
        return Ok(false);
    };
    let early: EarlyRedaction = codec::decode(&bytes, 256)?;
    Ok(early.room_id == *room && (early.by == sender || early.admin))
}

impl<S: Store + Clone> crate::core::Core<S> {
    /// The room of a conversation this device has.
    pub(crate) fn conversation_room(
        &mut self,
        conversation: crate::Conversation,
    ) -> Result<RoomRecord, crate::Error> {
        match conversation {
            crate::Conversation::Dm(with) => {
                if self.contact(&with)?.is_none() {
                    return Err(crate::Error::UnknownContact(with));
                }
                self.dm(with)
            }
            crate::Conversation::Room(room) => self.group_room(&room),
        }
    }

    /// A message this device has, with its room, for a change by this
    /// user: one it may make, or an error that says why not.
    fn own_change_target(
        &mut self,
        event: EventId,
        redact: bool,
    ) -> Result<(RoomRecord, u64, TimelineEntry), crate::Error> {
        let me = self.user_id();
        let (room_id, seq, entry) = locate(&self.store, &event)?
            .ok_or_else(|| crate::Error::InvalidInput(format!("no message {event}")))?;
        let room = self
            .room(&room_id)?
            .ok_or(crate::Error::UnknownRoom(room_id))?;
        let allowed = if redact {
            may_redact(&room, me, &entry)
        } else {
            entry.sender == me
        };
        if !allowed {
            return Err(crate::Error::InvalidInput(NOT_YOURS.into()));
        }
        if entry.revision == Revision::Redacted {
            return Err(crate::Error::InvalidInput(
                "that message was deleted already".into(),
            ));
        }
        Ok((room, seq, entry))
    }

    /// Deletes a message for everyone: a redaction to every member device,
    /// and the text gone from this device's timeline in the same commit.
    pub(crate) fn redact(&mut self, event: EventId) -> Result<EventId, crate::Error> {
        let (room, seq, mut entry) = self.own_change_target(event, true)?;
        redact_entry(&mut entry);
        let change = Change::Rewrite {
            room_id: room.room_id,
            seq,
            entry: Box::new(entry),
            log: LogRecord::Removed {
                room_id: room.room_id,
                event_id: event,
                reason: Removal::Redacted,
            },
        };
        let content = EventContent::Redaction(safemeet_proto::event::Redaction { target: event });
        let id = self.send_change(room, content, change)?;
        self.stop_sending(&event);
        Ok(id)
    }

    /// Replaces the text of one of this user's messages, everywhere.
    pub(crate) fn edit(&mut self, event: EventId, text: &str) -> Result<EventId, crate::Error> {
        if text.trim().is_empty() {
            return Err(crate::Error::InvalidInput(
                "a message cannot be empty: redact it instead".into(),
            ));
        }
        let body = safemeet_proto::event::MessageText::new(text)
            .map_err(|e| crate::Error::InvalidInput(e.to_string()))?;
        let (room, seq, mut entry) = self.own_change_target(event, false)?;
        entry.text = body.as_str().to_owned();
        // The edit goes out with the room's next Lamport clock.
        entry.revision = Revision::Edited {
            lamport: room.lamport.saturating_add(1),
        };
        let change = Change::Rewrite {
            room_id: room.room_id,
            seq,
            entry: Box::new(entry),
            log: LogRecord::Edited {
                room_id: room.room_id,
                seq,
            },
        };
        let content = EventContent::Edit(safemeet_proto::event::Edit {
            target: event,
            body,
        });
        self.send_change(room, content, change)
    }

    /// Sets how long a conversation's messages are kept, for every member.
    pub(crate) fn set_expiry(
        &mut self,
        conversation: crate::Conversation,
        expire_after_ms: Option<u64>,
    ) -> Result<EventId, crate::Error> {
        let settings = safemeet_proto::event::RoomSettings::new(expire_after_ms)
            .map_err(|e| crate::Error::InvalidInput(e.to_string()))?;
        let room = self.conversation_room(conversation)?;
        let me = self.user_id();
        if room.dm_with.is_none() && !room.admins.contains(&me) {
            return Err(crate::Error::InvalidInput(
                "only a room admin may change how long its messages are kept".into(),
            ));
        }
        let change = Change::Settings {
            room_id: room.room_id,
            record: SettingsRecord {
                version: VERSION,
                expire_after_ms,
                lamport: room.lamport.saturating_add(1),
                by: me,
            },
        };
        let room_id = room.room_id;
        let id = self.send_change(room, EventContent::Settings(settings), change)?;
        self.follow_up([crate::placement::FollowUp::Expiry(room_id, expire_after_ms)]);
        Ok(id)
    }
}

/// Log records read per page while moving to messages in one place.
const MIGRATE_PAGE: usize = 512;

impl<S: Store + Clone> crate::core::Core<S> {
    /// Once per store: gives every stored message its location record and
    /// turns the event log's copies of messages (as logged before the log
    /// named them by position) into positions, so the timeline holds the
    /// only copy of each text. Each page commits on its own and the marker
    /// is set last: an interrupted run starts again and redoes what it
    /// did, which changes nothing.
    pub(crate) fn messages_in_one_place(&mut self) -> Result<(), crate::Error> {
        if self
            .store
            .get(Keyspace::EventLog, name::MESSAGES_IN_ONE_PLACE)?
            .is_some()
        {
            return Ok(());
        }
        let mut located = std::collections::HashSet::new();
        for room in self.conversations()? {
            self.locate_all(room)?;
            located.insert(room);
        }
        let mut after = None;
        loop {
            let page = self.store.scan_ordered(
                Keyspace::EventLog,
                name::EVENT_LOG,
                after,
                MIGRATE_PAGE,
            )?;
            let Some((last, _)) = page.last() else {
                break;
            };
            after = Some(*last);
            let full = page.len() == MIGRATE_PAGE;
            let mut batch = self.store.batch();
            for (seq, bytes) in page {
                let LogRecord::LegacyMessage { room_id, entry } =
                    codec::decode(&bytes, MAX_RECORD_BYTES)?
                else {
                    continue;
                };
                if located.insert(room_id) {
                    self.locate_all(room_id)?;
                }
                let event_id = TimelineEntry::from(entry).event_id;
                match self.store.get(Keyspace::Rooms, &name::message(&event_id))? {
                    Some(loc) => {
                        let (room_id, tseq): (RoomId, u64) = codec::decode(&loc, 64)?;
                        stage_log_at(
                            &self.store,
                            &mut batch,
                            seq,
                            &LogRecord::Message { room_id, seq: tseq },
                        )?;
                    }
                    // The message is no longer in its timeline: the log
                    // keeps no copy of it either.
                    None => self.store.batch_delete_ordered(
                        &mut batch,
                        Keyspace::EventLog,
                        name::EVENT_LOG,
                        seq,
                    )?,
                }
            }
            if !batch.is_empty() {
                // `stage_log_at` also wrote the log's end: put it back.
                self.store.batch_put_value(
                    &mut batch,
                    Keyspace::EventLog,
                    name::EVENT_LOG_NEXT,
                    &self.log_next,
                    16,
                )?;
                self.store.apply(batch)?;
            }
            if !full {
                break;
            }
        }
        self.store.put(
            Keyspace::EventLog,
            name::MESSAGES_IN_ONE_PLACE,
            &codec::encode(&VERSION)?,
        )?;
        self.machine.flush()?;
        Ok(())
    }

    /// Writes the location record of every message of a room.
    fn locate_all(&mut self, room: RoomId) -> Result<(), crate::Error> {
        let tl = name::timeline(&room);
        let mut after = None;
        loop {
            let page = self
                .store
                .scan_ordered(Keyspace::Timeline, &tl, after, MIGRATE_PAGE)?;
            let Some((last, _)) = page.last() else {
                return Ok(());
            };
            after = Some(*last);
            let full = page.len() == MIGRATE_PAGE;
            let mut batch = self.store.batch();
            for (seq, bytes) in page {
                let entry = TimelineEntry::decode(&bytes)?;
                stage_location(&self.store, &mut batch, room, seq, &entry.event_id)?;
            }
            self.store.apply(batch)?;
            if !full {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
#[path = "revisions_tests.rs"]
mod tests;
