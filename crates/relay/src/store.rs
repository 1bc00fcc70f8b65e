//! Mailboxes on disk, through the store traits (sled in a relay).
//!
//! What is kept: per mailbox its counters, the hour it was last used and
//! last opened, whether it was ever fetched, its deposit check key, and the
//! bytes it took today; per envelope its bytes and when it expires,
//! rounded up to the hour; the relay's totals. Nothing about who
//! deposited: no peer id, no address, no time of arrival finer than the
//! hour. Bytes are counted as they weigh on disk ([`disk_cost`]), not as
//! the envelopes' lengths. Every change is one
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

mod purge;

const TOTALS: &[u8] = b"totals";
/// How errors name a mailbox's counters.
pub(crate) const META: &str = "mailbox record";
/// How errors name the relay's totals.
pub(crate) const TOTALS_RECORD: &str = "totals record";
/// How errors name a stored envelope.
pub(crate) const ENVELOPE: &str = "envelope";
/// Largest stored record (an envelope and its header).
const MAX_RECORD: usize = safemeet_proto::mailbox::MAX_REQUEST_BYTES + 256;

/// What one envelope's records weigh besides the envelope: its key
/// (40 B), its record's header (id, expiry, length: about 20 B), its
/// expiry index key (48 B), and sled's per-entry headers.
const RECORD_OVERHEAD: u64 = 256;
/// What sled's files hold per byte of records, in percent: its log keeps
/// whole segments, rewrites pages as they change and reclaims space late.
/// Measured by `disk_cost_covers_what_sled_writes` (`tests/admission.rs`)
/// with 2 KiB envelopes stored in groups of 256 with a flush each, as the
/// node stores them: 2.31× to 2.34× the envelope bytes for 4 000 of them
/// (it varies with sled's background flushes), 2.11× for 30 000. With the
/// record overhead, 225 % counts 2.52× for a 2 KiB envelope: above every
/// reading, with a margin for that variation.
const DISK_PERCENT: u64 = 225;
/// What a mailbox record weighs on disk, counted against the source that
/// opens one (see [`open_cost`]).
const MAILBOX_RECORD_BYTES: u64 = 256;
const DAY_MS: u64 = 24 * HOUR_MS;

/// What an envelope of `len` bytes weighs on the relay's disk, as quotas
/// count it.
pub fn disk_cost(len: usize) -> u64 {
    (len as u64).saturating_add(RECORD_OVERHEAD) * DISK_PERCENT / 100
}

/// What opening a mailbox weighs on disk.
pub fn open_cost() -> u64 {
    MAILBOX_RECORD_BYTES * DISK_PERCENT / 100
}

/// A mailbox's counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MailboxMeta {
    /// The last id handed out (ids start at 1 and only grow).
    pub(crate) last_id: u64,
    /// Envelopes held.
    pub(crate) count: u64,
    /// Their bytes, as on disk.
    pub(crate) bytes: u64,
    /// Last deposit, open or ack; an empty mailbox is forgotten a
    /// retention period after it.
    pub(crate) touched: Timestamp,
    /// The key deposits are tagged with; `None`: closed (its mail can be
    /// fetched, nothing more is taken).
    pub(crate) check: Option<[u8; 32]>,
    /// Last opened, rounded down to the hour.
    pub(crate) opened: Timestamp,
    /// Fetched at least once. A mailbox never fetched is forgotten
    /// [`Limits::unfetched_retention`] after it was last opened.
    pub(crate) fetched: bool,
    /// The UTC day of `intake`.
    pub(crate) intake_day: u64,
    /// Bytes (as on disk) deposited on `intake_day`.
    pub(crate) intake: u64,
}

/// A mailbox record as a relay of protocol version 1 wrote it: read as a
/// closed mailbox, fetched, so its mail is still served and expires as it
/// would have.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct MailboxMetaV1 {
    last_id: u64,
    count: u64,
    bytes: u64,
    touched: Timestamp,
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

pub(crate) fn decode_meta(bytes: &[u8]) -> Result<MailboxMeta, Error> {
    decode::<MailboxMeta>(bytes, META).or_else(|e| match decode::<MailboxMetaV1>(bytes, META) {
        Ok(old) => Ok(MailboxMeta {
            last_id: old.last_id,
            count: old.count,
            bytes: old.bytes,
            touched: old.touched,
            check: None,
            opened: old.touched,
            fetched: true,
            intake_day: 0,
            intake: 0,
        }),
        Err(_) => Err(e),
    })
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
            Some(b) => decode_meta(&b).map(Some),
            None => Ok(None),
        }
    }

    /// Opens `mailbox` (creating it) so that it takes deposits tagged with
    /// `check`, or refreshes it; returns whether anything was written.
    pub fn open(
        &self,
        mailbox: &MailboxId,
        check: [u8; 32],
        now: Timestamp,
    ) -> Result<bool, Error> {
        let mut totals = self.totals()?;
        let hour = floor_hour(now);
        let mut meta = match self.meta(mailbox)? {
            Some(m) if m.check == Some(check) && m.opened == hour => return Ok(false),
            Some(m) => m,
            None => {
                if !self.limits.accept_new_mailboxes {
                    return Err(Error::refused(
                        MailboxError::NotAccepting,
                        "this relay takes no new mailboxes",
                    ));
                }
                if totals.mailboxes >= self.limits.max_mailboxes {
                    return Err(Error::refused(MailboxError::RelayFull, "the relay is full"));
                }
                totals.mailboxes += 1;
                MailboxMeta {
                    last_id: 0,
                    count: 0,
                    bytes: 0,
                    touched: hour,
                    check: None,
                    opened: hour,
                    fetched: false,
                    intake_day: 0,
                    intake: 0,
                }
            }
        };
        meta.check = Some(check);
        meta.opened = hour;
        meta.touched = hour;
        let mut batch = Batch::new();
        stage_counters(&mut batch, mailbox, &meta, &totals)?;
        self.store.apply(batch)?;
        Ok(true)
    }

    /// Records that `mailbox` was fetched (it is then kept the full
    /// retention); returns whether anything was written.
    pub fn fetched(&self, mailbox: &MailboxId) -> Result<bool, Error> {
        let Some(mut meta) = self.meta(mailbox)? else {
            return Ok(false);
        };
        if meta.fetched {
            return Ok(false);
        }
        meta.fetched = true;
        self.store.put(
            Keyspace::Mailboxes,
            mailbox.as_bytes(),
            &encode(&meta, META)?,
        )?;
        Ok(true)
    }

    /// Stages a deposit into `group` (see [`DepositGroup`]) if the mailbox
    /// is open and `authentic` accepts the tag for its check key; returns
    /// its id and expiry. Nothing is stored until [`commit`](Self::commit).
    pub fn stage_deposit(
        &self,
        group: &mut DepositGroup,
        mailbox: &MailboxId,
        envelope: &[u8],
        authentic: impl FnOnce(&[u8; 32]) -> bool,
        now: Timestamp,
    ) -> Result<(u64, Timestamp), Error> {
        let limits = &self.limits;
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
        let len = disk_cost(envelope.len());
        let mut meta = match group.metas.get(mailbox) {
            Some(m) => m.clone(),
            None => self.meta(mailbox)?.unwrap_or(MailboxMeta {
                last_id: 0,
                count: 0,
                bytes: 0,
                touched: now,
                check: None,
                opened: now,
                fetched: false,
                intake_day: 0,
                intake: 0,
            }),
        };
        // Not open, or not tagged with its key: one answer for both, so a
        // stranger learns nothing of which mailboxes are open.
        if !meta.check.as_ref().is_some_and(authentic) {
            return Err(Error::refused(
                MailboxError::Refused,
                "refused: deposit into a mailbox this relay does not hold for you",
            ));
        }
        let mut totals = match group.totals {
            Some(t) => t,
            None => self.totals()?,
        };
        let day = now.as_millis() / DAY_MS;
        if meta.intake_day != day {
            meta.intake_day = day;
            meta.intake = 0;
        }
        if meta.count + 1 > limits.mailbox_max_envelopes
            || meta.bytes + len > limits.mailbox_max_bytes
            || meta.intake + len > limits.mailbox_daily_bytes
        {
            return Err(Error::refused(
                MailboxError::MailboxFull,
                // Its limits, not its contents: depositors learn nothing of
                // how much mail the mailbox holds.
                format!(
                    "the mailbox is full (at most {} envelopes and {} bytes, {} bytes a day)",
                    limits.mailbox_max_envelopes,
                    limits.mailbox_max_bytes,
                    limits.mailbox_daily_bytes
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
        meta.intake += len;
        meta.touched = floor_hour(now);
        totals.envelopes += 1;
        totals.bytes += len;
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
            let len = disk_cost(stored.envelope.len());
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

    /// Makes what was applied durable.
    pub fn flush(&self) -> Result<(), Error> {
        Ok(self.store.flush()?)
    }
}
