//! Removing what a relay no longer keeps: envelopes past their expiry,
//! mailboxes left empty for a retention period, and mailboxes opened but
//! never fetched for [`Limits::unfetched_retention`](crate::Limits), with
//! their mail. Bounded per call; the next purge goes on.

use safemeet_proto::mailbox::StoredEnvelope;
use safemeet_proto::{MailboxId, Timestamp};
use safemeet_store::{Batch, Keyspace, Store};

use super::{
    ENVELOPE, META, MailboxMeta, MailboxStore, TOTALS, TOTALS_RECORD, Totals, decode, decode_meta,
    disk_cost, encode, envelope_key, expiry_key,
};
use crate::Error;

/// What one purge has staged so far.
pub(super) struct Purge {
    totals: Totals,
    metas: std::collections::HashMap<MailboxId, MailboxMeta>,
    batch: Batch,
    /// Envelope keys already staged for deletion.
    gone: std::collections::HashSet<Vec<u8>>,
    removed: usize,
}

impl<S: Store> MailboxStore<S> {
    /// Deletes up to `max` envelopes that expired by `now`, mailboxes left
    /// empty for a retention period, and mailboxes opened but never fetched
    /// for [`Limits::unfetched_retention`] with what they hold (up to `max`
    /// of their envelopes per call, the rest at the next); returns how many
    /// envelopes went.
    pub fn purge_expired(&self, now: Timestamp, max: usize) -> Result<usize, Error> {
        let rows = self.store.scan(Keyspace::MailboxExpiry, &[], None, max)?;
        let mut purge = Purge {
            totals: self.totals()?,
            metas: Default::default(),
            batch: Batch::new(),
            gone: Default::default(),
            removed: 0,
        };
        for (key, _) in rows {
            let (Some(until), Some(mailbox), Some(id)) = (
                key.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()),
                key.get(8..40).and_then(|b| <[u8; 32]>::try_from(b).ok()),
                key.get(40..48).and_then(|b| <[u8; 8]>::try_from(b).ok()),
            ) else {
                return Err(Error::DamagedKey { what: "expiry" });
            };
            if u64::from_be_bytes(until) > now.as_millis() {
                break;
            }
            let (mailbox, id) = (MailboxId::from_bytes(mailbox), u64::from_be_bytes(id));
            let ekey = envelope_key(&mailbox, id);
            let Some(value) = self.store.get(Keyspace::MailboxEnvelopes, &ekey)? else {
                purge.batch.delete(Keyspace::MailboxExpiry, &key);
                continue;
            };
            let stored = decode::<StoredEnvelope>(&value, ENVELOPE)?;
            self.remove(&mut purge, &mailbox, &stored)?;
        }
        // Mailboxes forgotten: empty ones untouched for a retention period,
        // and ones never fetched since they were opened long ago.
        let mut cursor = self.stale_cursor.lock().map_err(|_| Error::PurgePoisoned)?;
        let records = self
            .store
            .scan(Keyspace::Mailboxes, &[], cursor.as_deref(), max)?;
        // The end reached: the next purge starts from the first record.
        *cursor = if records.len() < max {
            None
        } else {
            records.last().map(|(k, _)| k.clone())
        };
        drop(cursor);
        for (key, value) in records {
            if key.len() != MailboxId::LEN {
                continue;
            }
            let mailbox = MailboxId::from_bytes(
                <[u8; 32]>::try_from(key.as_slice())
                    .map_err(|_| Error::DamagedKey { what: "mailbox" })?,
            );
            let mut meta = match purge.metas.get(&mailbox) {
                Some(m) => m.clone(),
                None => decode_meta(&value)?,
            };
            let unfetched = !meta.fetched
                && now.saturating_since(meta.opened) >= self.limits.unfetched_retention;
            if unfetched && meta.count > 0 && purge.removed < max {
                // Closed at once; its envelopes go as the budget allows.
                meta.check = None;
                purge.metas.insert(mailbox, meta.clone());
                let rows = self.store.scan(
                    Keyspace::MailboxEnvelopes,
                    mailbox.as_bytes(),
                    None,
                    max - purge.removed,
                )?;
                for (ekey, value) in rows {
                    if purge.gone.contains(&ekey) {
                        continue;
                    }
                    let stored = decode::<StoredEnvelope>(&value, ENVELOPE)?;
                    self.remove(&mut purge, &mailbox, &stored)?;
                }
                meta = purge.metas.get(&mailbox).cloned().unwrap_or(meta);
            }
            let stale = now.saturating_since(meta.touched) >= self.limits.retention;
            if meta.count == 0 && (stale || unfetched) {
                purge.metas.remove(&mailbox);
                purge.batch.delete(Keyspace::Mailboxes, &key);
                purge.totals.mailboxes = purge.totals.mailboxes.saturating_sub(1);
            }
        }
        let Purge {
            totals,
            metas,
            mut batch,
            removed,
            ..
        } = purge;
        for (mailbox, meta) in &metas {
            batch.put_owned(
                Keyspace::Mailboxes,
                mailbox.as_bytes().to_vec(),
                encode(meta, META)?,
            );
        }
        if batch.is_empty() {
            return Ok(0);
        }
        batch.put_owned(
            Keyspace::Mailboxes,
            TOTALS.to_vec(),
            encode(&totals, TOTALS_RECORD)?,
        );
        self.store.apply(batch)?;
        Ok(removed)
    }

    /// Deletes `mailbox` and everything in it, at its owner's request (the
    /// account is deleted); returns how many envelopes went with it. A
    /// mailbox holds at most a quota's worth, deleted a page at a time.
    pub fn delete_mailbox(&self, mailbox: &MailboxId) -> Result<u32, Error> {
        const PAGE: usize = 1024;
        let mut removed = 0u32;
        loop {
            let rows =
                self.store
                    .scan(Keyspace::MailboxEnvelopes, mailbox.as_bytes(), None, PAGE)?;
            let last = rows.len() < PAGE;
            let mut purge = Purge {
                totals: self.totals()?,
                metas: Default::default(),
                batch: Batch::new(),
                gone: Default::default(),
                removed: 0,
            };
            for (_, value) in &rows {
                let stored = decode::<StoredEnvelope>(value, ENVELOPE)?;
                self.remove(&mut purge, mailbox, &stored)?;
            }
            removed = removed.saturating_add(u32::try_from(purge.removed).unwrap_or(u32::MAX));
            let Purge {
                mut totals,
                metas,
                mut batch,
                ..
            } = purge;
            if last {
                // The mailbox itself goes too: it takes no more deposits.
                if self.meta(mailbox)?.is_some() {
                    batch.delete(Keyspace::Mailboxes, mailbox.as_bytes());
                    totals.mailboxes = totals.mailboxes.saturating_sub(1);
                }
            } else {
                for (m, meta) in &metas {
                    batch.put_owned(
                        Keyspace::Mailboxes,
                        m.as_bytes().to_vec(),
                        encode(meta, META)?,
                    );
                }
            }
            if !batch.is_empty() {
                batch.put_owned(
                    Keyspace::Mailboxes,
                    TOTALS.to_vec(),
                    encode(&totals, TOTALS_RECORD)?,
                );
                self.store.apply(batch)?;
            }
            if last {
                return Ok(removed);
            }
        }
    }

    /// Stages the removal of one envelope in a purge (once).
    fn remove(
        &self,
        purge: &mut Purge,
        mailbox: &MailboxId,
        stored: &StoredEnvelope,
    ) -> Result<(), Error> {
        let ekey = envelope_key(mailbox, stored.id);
        if !purge.gone.insert(ekey.clone()) {
            return Ok(());
        }
        let len = disk_cost(stored.envelope.len());
        purge.batch.delete(Keyspace::MailboxEnvelopes, &ekey);
        purge.batch.delete(
            Keyspace::MailboxExpiry,
            &expiry_key(stored.stored_until, mailbox, stored.id),
        );
        let meta = match purge.metas.entry(*mailbox) {
            std::collections::hash_map::Entry::Occupied(e) => Some(e.into_mut()),
            std::collections::hash_map::Entry::Vacant(e) => {
                self.meta(mailbox)?.map(|m| e.insert(m))
            }
        };
        match meta {
            Some(meta) => {
                meta.count = meta.count.saturating_sub(1);
                meta.bytes = meta.bytes.saturating_sub(len);
            }
            // Damage, not a path the protocol has: the envelope goes
            // anyway, so one bad record cannot stop every purge.
            None => tracing::warn!("an expired envelope had no mailbox record"),
        }
        purge.totals.envelopes = purge.totals.envelopes.saturating_sub(1);
        purge.totals.bytes = purge.totals.bytes.saturating_sub(len);
        purge.removed += 1;
        Ok(())
    }
}
