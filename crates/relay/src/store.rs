//! Mailboxes on disk, through the store traits (sled in a relay).
//!
//! What is kept: per mailbox its counters and the hour it was last used;
//! per envelope its bytes and when it expires, rounded up to the hour; the
//! relay's totals. Nothing about who deposited: no peer id, no address, no
//! time of arrival finer than the hour. Every change is one
//! atomic batch; the caller flushes before it answers (see
//! [`crate::service`]).
//!
//! Keys: [`Keyspace::Mailboxes`] holds `mailbox id → MailboxMeta` and
//! `"totals" → Totals`; [`Keyspace::MailboxEnvelopes`] holds
//! `mailbox id ‖ id (big-endian) → StoredEnvelope`;
//! [`Keyspace::MailboxExpiry`] holds `stored until (big-endian ms) ‖ mailbox
//! id ‖ id → ()`, so expired envelopes are found in time order.

use safemeet_proto::mailbox::{MailboxError, StoredEnvelope};
use safemeet_proto::{MailboxId, Timestamp, codec};
use safemeet_store::{Batch, Keyspace, Store};
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::config::Limits;

const TOTALS: &[u8] = b"totals";
/// How errors name a mailbox's counters.
pub(crate) const META: &str = "mailbox record";
/// How errors name the relay's totals.
pub(crate) const TOTALS_RECORD: &str = "totals record";
/// How errors name a stored envelope.
pub(crate) const ENVELOPE: &str = "envelope";
/// Largest stored record (an envelope and its header).
const MAX_RECORD: usize = safemeet_proto::mailbox::MAX_REQUEST_BYTES + 256;

/// A mailbox's counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MailboxMeta {
    /// The last id handed out (ids start at 1 and only grow).
    pub(crate) last_id: u64,
    /// Envelopes held.
    pub(crate) count: u64,
    /// Their bytes.
    pub(crate) bytes: u64,
    /// Last deposit or ack; an empty mailbox is forgotten a retention
    /// period after it.
    pub(crate) touched: Timestamp,
}

/// The relay's totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Envelopes held.
    pub envelopes: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Mailboxes known (holding envelopes, or touched lately).
    pub mailboxes: u64,
}

pub(crate) fn decode<T: Serialize + serde::de::DeserializeOwned>(
    bytes: &[u8],
    what: &'static str,
) -> Result<T, Error> {
    codec::decode(bytes, MAX_RECORD).map_err(|source| Error::Damaged { what, source })
}

fn encode<T: Serialize>(value: &T, what: &'static str) -> Result<Vec<u8>, Error> {
    codec::encode(value).map_err(|source| Error::Encode { what, source })
}

fn envelope_key(mailbox: &MailboxId, id: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(40);
    k.extend_from_slice(mailbox.as_bytes());
    k.extend_from_slice(&id.to_be_bytes());
    k
}

fn expiry_key(until: Timestamp, mailbox: &MailboxId, id: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(48);
    k.extend_from_slice(&until.as_millis().to_be_bytes());
    k.extend_from_slice(mailbox.as_bytes());
    k.extend_from_slice(&id.to_be_bytes());
    k
}

const HOUR_MS: u64 = 3_600_000;

/// `t` rounded down to the hour: what is kept of when a mailbox was last
/// used, so a copy of the disk does not tell when mail came or went.
fn floor_hour(t: Timestamp) -> Timestamp {
    Timestamp::from_millis(t.as_millis() / HOUR_MS * HOUR_MS).unwrap_or(t)
}

/// `t` rounded up to the hour: when an envelope expires (so the expiry
/// does not give away its arrival to the millisecond either; an envelope is
/// kept until the end of the hour in which its retention ends).
fn ceil_hour(t: Timestamp) -> Timestamp {
    let ms = t.as_millis().div_ceil(HOUR_MS).saturating_mul(HOUR_MS);
    Timestamp::from_millis(ms).unwrap_or(t)
}

/// Stages a mailbox's counters and the relay's totals.
fn stage_counters(
    batch: &mut Batch,
    mailbox: &MailboxId,
    meta: &MailboxMeta,
    totals: &Totals,
) -> Result<(), Error> {
    batch.put_owned(
        Keyspace::Mailboxes,
        mailbox.as_bytes().to_vec(),
        encode(meta, META)?,
    );
    batch.put_owned(
        Keyspace::Mailboxes,
        TOTALS.to_vec(),
        encode(totals, TOTALS_RECORD)?,
    );
    Ok(())
}

/// Deposits staged together: their records, and the counters as they
/// stand after them. Stage only deposits into one group; anything else
/// reads the store, which holds none of this until it is committed.
#[derive(Debug, Default)]
pub struct DepositGroup {
    batch: Batch,
    metas: std::collections::HashMap<MailboxId, MailboxMeta>,
    totals: Option<Totals>,
}

/// The mailboxes of a relay.
#[derive(Debug, Clone)]
pub struct MailboxStore<S: Store> {
    store: S,
    limits: Limits,
    /// Where the next look for forgotten mailboxes goes on: each purge
    /// looks at the next `max` mailbox records, round and round.
    stale_cursor: std::sync::Arc<std::sync::Mutex<Option<Vec<u8>>>>,
}

impl<S: Store> MailboxStore<S> {
    /// Mailboxes in `store`, kept within `limits`.
    pub fn new(store: S, limits: Limits) -> Self {
        Self {
            store,
            limits,
            stale_cursor: Default::default(),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The relay's totals.
    pub fn totals(&self) -> Result<Totals, Error> {
        match self.store.get(Keyspace::Mailboxes, TOTALS)? {
            Some(b) => decode(&b, TOTALS_RECORD),
            None => Ok(Totals::default()),
        }
    }

    fn meta(&self, mailbox: &MailboxId) -> Result<Option<MailboxMeta>, Error> {
        match self.store.get(Keyspace::Mailboxes, mailbox.as_bytes())? {
            Some(b) => decode(&b, META).map(Some),
            None => Ok(None),
        }
    }

    /// Stages a deposit into `group` (see [`DepositGroup`]); returns its id
    /// and expiry. Nothing is stored until [`commit`](Self::commit).
    pub fn stage_deposit(
        &self,
        group: &mut DepositGroup,
        mailbox: &MailboxId,
        envelope: &[u8],
        now: Timestamp,
    ) -> Result<(u64, Timestamp), Error> {
        let limits = &self.limits;
        let len = envelope.len() as u64;
        if envelope.len() > limits.max_envelope_bytes {
            return Err(Error::refused(
                MailboxError::TooLarge,
                format!(
                    "an envelope of {} bytes is over this relay's limit of {}",
                    envelope.len(),
                    limits.max_envelope_bytes
                ),
            ));
        }
        let mut totals = match group.totals {
            Some(t) => t,
            None => self.totals()?,
        };
        let (mut meta, new) = match group.metas.get(mailbox) {
            Some(m) => (m.clone(), false),
            None => match self.meta(mailbox)? {
                Some(m) => (m, false),
                None if !limits.accept_new_mailboxes => {
                    return Err(Error::refused(
                        MailboxError::NotAccepting,
                        "this relay takes no new mailboxes",
                    ));
                }
                None => (
                    MailboxMeta {
                        last_id: 0,
                        count: 0,
                        bytes: 0,
                        touched: floor_hour(now),
                    },
                    true,
                ),
            },
        };
        if meta.count + 1 > limits.mailbox_max_envelopes
            || meta.bytes + len > limits.mailbox_max_bytes
        {
            return Err(Error::refused(
                MailboxError::MailboxFull,
                // Its limits, not its contents: depositors learn nothing of
                // how much mail the mailbox holds.
                format!(
                    "the mailbox is full (at most {} envelopes and {} bytes)",
                    limits.mailbox_max_envelopes, limits.mailbox_max_bytes
                ),
            ));
        }
        if totals.envelopes + 1 > limits.max_envelopes || totals.bytes + len > limits.max_bytes {
            return Err(Error::refused(MailboxError::RelayFull, "the relay is full"));
        }
        let id = meta.last_id + 1;
        let until = ceil_hour(now.saturating_add(limits.retention));
        meta.last_id = id;
        meta.count += 1;
        meta.bytes += len;
        meta.touched = floor_hour(now);
        totals.envelopes += 1;
        totals.bytes += len;
        if new {
            totals.mailboxes += 1;
        }
        let stored = StoredEnvelope {
            id,
            stored_until: until,
            envelope: envelope.to_vec(),
        };
        group.batch.put_owned(
            Keyspace::MailboxEnvelopes,
            envelope_key(mailbox, id),
            encode(&stored, ENVELOPE)?,
        );
        group.batch.put_owned(
            Keyspace::MailboxExpiry,
            expiry_key(until, mailbox, id),
            Vec::new(),
        );
        group.metas.insert(*mailbox, meta);
        group.totals = Some(totals);
        Ok((id, until))
    }

    /// Applies a group of deposits as one batch, with each mailbox's
    /// counters and the totals written once. Not flushed.
    pub fn commit(&self, group: DepositGroup) -> Result<(), Error> {
        let DepositGroup {
            mut batch,
            metas,
            totals,
        } = group;
        let Some(totals) = totals else {
            return Ok(());
        };
        for (mailbox, meta) in &metas {
            batch.put_owned(
                Keyspace::Mailboxes,
                mailbox.as_bytes().to_vec(),
                encode(meta, META)?,
            );
        }
        batch.put_owned(
            Keyspace::Mailboxes,
            TOTALS.to_vec(),
            encode(&totals, TOTALS_RECORD)?,
        );
        Ok(self.store.apply(batch)?)
    }

    /// Up to `limit` envelopes of `mailbox` with ids after `after` that have
    /// not expired by `now`, together at most `max_bytes` of envelope (but
    /// always at least one), and whether more follow.
    pub fn fetch(
        &self,
        mailbox: &MailboxId,
        after: u64,
        limit: usize,
        max_bytes: usize,
        now: Timestamp,
    ) -> Result<(Vec<StoredEnvelope>, bool), Error> {
        let mut items = Vec::new();
        let mut bytes = 0usize;
        let mut cursor = envelope_key(mailbox, after);
        // Bounded: expired envelopes are skipped, and the purge removes them.
        loop {
            let rows = self.store.scan(
                Keyspace::MailboxEnvelopes,
                mailbox.as_bytes(),
                Some(&cursor),
                limit + 1,
            )?;
            let done = rows.len() <= limit;
            for (key, value) in rows {
                cursor = key;
                let stored: StoredEnvelope = decode(&value, ENVELOPE)?;
                if stored.stored_until <= now {
                    continue;
                }
                // Room for each item's id, expiry and length prefix too.
                let size = stored.envelope.len() + 32;
                if items.len() == limit || (!items.is_empty() && bytes + size > max_bytes) {
                    return Ok((items, true));
                }
                bytes += size;
                items.push(stored);
            }
            if done {
                return Ok((items, false));
            }
        }
    }

    /// Deletes the envelopes `ids` of `mailbox`; returns how many there were.
    pub fn ack(&self, mailbox: &MailboxId, ids: &[u64], now: Timestamp) -> Result<u32, Error> {
        let Some(mut meta) = self.meta(mailbox)? else {
            return Ok(0);
        };
        let mut totals = self.totals()?;
        let mut batch = Batch::new();
        let mut removed = 0u32;
        let mut seen = std::collections::HashSet::new();
        for &id in ids {
            if !seen.insert(id) {
                continue;
            }
            let key = envelope_key(mailbox, id);
            let Some(value) = self.store.get(Keyspace::MailboxEnvelopes, &key)? else {
                continue;
            };
            let stored: StoredEnvelope = decode(&value, ENVELOPE)?;
            let len = stored.envelope.len() as u64;
            batch.delete(Keyspace::MailboxEnvelopes, &key);
            batch.delete(
                Keyspace::MailboxExpiry,
                &expiry_key(stored.stored_until, mailbox, id),
            );
            meta.count = meta.count.saturating_sub(1);
            meta.bytes = meta.bytes.saturating_sub(len);
            totals.envelopes = totals.envelopes.saturating_sub(1);
            totals.bytes = totals.bytes.saturating_sub(len);
            removed += 1;
        }
        if removed == 0 {
            return Ok(0);
        }
        meta.touched = floor_hour(now);
        stage_counters(&mut batch, mailbox, &meta, &totals)?;
        self.store.apply(batch)?;
        Ok(removed)
    }

    /// Deletes up to `max` envelopes that expired by `now`, and mailboxes
    /// left empty for a retention period; returns how many envelopes went.
    pub fn purge_expired(&self, now: Timestamp, max: usize) -> Result<usize, Error> {
        let rows = self.store.scan(Keyspace::MailboxExpiry, &[], None, max)?;
        let mut totals = self.totals()?;
        let mut metas: std::collections::HashMap<MailboxId, MailboxMeta> = Default::default();
        let mut batch = Batch::new();
        let mut removed = 0;
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
            batch.delete(Keyspace::MailboxExpiry, &key);
            let ekey = envelope_key(&mailbox, id);
            let Some(value) = self.store.get(Keyspace::MailboxEnvelopes, &ekey)? else {
                continue;
            };
            let len = decode::<StoredEnvelope>(&value, ENVELOPE)?.envelope.len() as u64;
            batch.delete(Keyspace::MailboxEnvelopes, &ekey);
            let meta = match metas.entry(mailbox) {
                std::collections::hash_map::Entry::Occupied(e) => Some(e.into_mut()),
                std::collections::hash_map::Entry::Vacant(e) => {
                    self.meta(&mailbox)?.map(|m| e.insert(m))
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
            totals.envelopes = totals.envelopes.saturating_sub(1);
            totals.bytes = totals.bytes.saturating_sub(len);
            removed += 1;
        }
        for (mailbox, meta) in &metas {
            batch.put_owned(
                Keyspace::Mailboxes,
                mailbox.as_bytes().to_vec(),
                encode(meta, META)?,
            );
        }
        // Empty mailboxes untouched for a retention period are forgotten.
        let stale = |m: &MailboxMeta| {
            m.count == 0 && now.saturating_since(m.touched) >= self.limits.retention
        };
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
            let meta = match metas.get(&mailbox) {
                Some(m) => m.clone(),
                None => decode(&value, META)?,
            };
            if stale(&meta) {
                batch.delete(Keyspace::Mailboxes, &key);
                totals.mailboxes = totals.mailboxes.saturating_sub(1);
            }
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

    /// Makes what was applied durable.
    pub fn flush(&self) -> Result<(), Error> {
        Ok(self.store.flush()?)
    }
}
