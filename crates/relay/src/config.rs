//! What an operator sets: addresses and limits.

use std::time::Duration;

/// Limits on what a relay stores. Defaults suit a relay for friends on a
/// small machine; a public relay sets its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest envelope accepted, in bytes. Default: the protocol's largest
    /// (64 KiB).
    pub max_envelope_bytes: usize,
    /// How long an envelope is kept unless fetched and acknowledged sooner
    /// (the operator's maximum retention). Default 14 days.
    pub retention: Duration,
    /// Most envelopes one mailbox holds. Default 10 000.
    pub mailbox_max_envelopes: u64,
    /// Most bytes one mailbox holds, counted as on disk (see
    /// [`crate::store::disk_cost`]). Default 64 MiB.
    pub mailbox_max_bytes: u64,
    /// Most envelopes the relay holds. Default 2 000 000.
    pub max_envelopes: u64,
    /// Most bytes the relay holds, counted as on disk (see
    /// [`crate::store::disk_cost`]). Default 8 GiB.
    pub max_bytes: u64,
    /// Whether deposits may open mailboxes the relay does not hold yet.
    /// Default yes; an operator winding a relay down turns it off.
    pub accept_new_mailboxes: bool,
    /// Most bytes (as on disk) one mailbox takes per UTC day. Default
    /// 32 MiB: half of what it may hold, so one day of junk from a holder
    /// of the credential cannot fill it, while a day of honest mail (a
    /// few thousand 3 KiB envelopes) fits many times over.
    pub mailbox_daily_bytes: u64,
    /// A mailbox opened but never fetched is forgotten, with what it
    /// holds, this long after it was last opened. Default 8 days: owners
    /// open the next 7 days' mailboxes ahead and re-open them whenever they
    /// drain, so an owner offline for up to a week still finds its mail,
    /// while junk left in mailboxes nobody fetches lives about half the
    /// retention.
    pub unfetched_retention: Duration,
    /// Most mailboxes the relay holds. Default 1 000 000 (a record is a
    /// few hundred bytes on disk: about 300 MB at most).
    pub max_mailboxes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            // A padded frame, sealed to the mailbox's key.
            max_envelope_bytes: safemeet_proto::mailbox::MAX_SEALED_BYTES,
            retention: Duration::from_secs(14 * 24 * 3600),
            mailbox_max_envelopes: 10_000,
            mailbox_max_bytes: 64 * 1024 * 1024,
            max_envelopes: 2_000_000,
            max_bytes: 8 * 1024 * 1024 * 1024,
            accept_new_mailboxes: true,
            mailbox_daily_bytes: 32 * 1024 * 1024,
            unfetched_retention: Duration::from_secs(8 * 24 * 3600),
            max_mailboxes: 1_000_000,
        }
    }
}
