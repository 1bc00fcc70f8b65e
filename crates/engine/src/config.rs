//! The engine's settings, with documented defaults and a check that
//! refuses values the engine cannot run with (a zero window or poll would
//! stall it or spin it).

use std::time::Duration;

use crate::Error;

/// Engine settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// The network layer's settings.
    pub net: safemeet_net::Config,
    /// First retry delay of an undelivered item. Default 1 s.
    pub retry_initial: Duration,
    /// Longest retry delay. Default 5 minutes.
    pub retry_max: Duration,
    /// How long a room message published over gossip waits for the
    /// members' acknowledgements before it is delivered directly. Default 1 s.
    pub gossip_grace: Duration,
    /// Most room messages published over gossip and not yet acknowledged
    /// by anyone; more wait to be published. A sender that outpaces its
    /// readers would only overflow their queues (gossip drops what does not
    /// fit) and leave the rest to the slower direct fallback. Default 256,
    /// well under a reader's network event queue (1 024 by default).
    pub gossip_window: usize,
    /// The largest group room, in member devices (this one included),
    /// delivered by direct fan-out with no gossip subscription at all;
    /// larger rooms go by gossip among their members. Default
    /// [`DIRECT_ROOM_MAX_DEVICES`](crate::DIRECT_ROOM_MAX_DEVICES) (32);
    /// 0 puts every group room on gossip (tests of the gossip path).
    pub direct_room_max_devices: usize,
    /// How often this device drains its relay mailboxes (it also does on
    /// start). Default 60 s.
    pub mailbox_poll: Duration,
    /// Most relays a delivery for an unreachable device is left on (of
    /// the relays that device lists). Default 3.
    pub mailbox_copies: usize,
    /// How many past epochs (days) of mailboxes are drained at most,
    /// besides the current one: as long as relays keep mail (14 days by
    /// default). A drain starts at the oldest epoch the last complete
    /// drain left something in, and never after the previous epoch.
    pub mailbox_catch_up_epochs: u64,
    /// How many "later" answers in a row a device may give one item before
    /// the item stops being retried on a timer for that device; it is then
    /// tried again only when the device connects. Default 12 (with the
    /// default backoff, about 45 minutes of retries). A device answers
    /// "later" when it cannot place a message yet (its room key, its room,
    /// or its sender is not known to it yet); one that never will (it left
    /// the room, it never adds the sender) must not be retried forever.
    pub later_retries: u32,
    /// How often a parked device (one that kept answering "later") is
    /// tried again when it neither connects nor delivers anything. Default
    /// 6 hours.
    pub parked_retry: Duration,
    /// How long a device may stay parked for an item before the item is
    /// given up for it. Default 7 days: longer than a room key waits to be
    /// shared (held messages are kept 3 days).
    pub give_up_after: Duration,
    /// How many times an acknowledgement that could not be delivered is
    /// tried again. Default 4: a lost acknowledgement only costs the
    /// sender a direct delivery, which is answered too.
    pub ack_retries: u32,
    /// How long a caller waits for the engine to answer one request.
    /// Default 60 s.
    pub request_timeout: Duration,
    /// The seed of the engine's random numbers (retry jitter, room ids
    /// and secrets). `None` (the default): drawn from the OS. Only tests
    /// and simulations set it.
    pub seed: Option<u64>,
    /// Join every room a contact invites this device to without asking.
    /// Default `false`: an invitation waits for `room join` unless its
    /// sender is a contact set to auto-accept. Simulations and tests that
    /// are not about consent turn it on.
    pub auto_join_rooms: bool,
    /// Most message requests kept (see `requests`). Default 32: a screen
    /// of people to decide on; past it new introductions are refused.
    pub max_requests: usize,
    /// Most new message requests per hour. Default 10: a person rarely
    /// meets more in an hour, and a flood of fresh identities fills the
    /// list no faster than that; past it new introductions are refused.
    pub requests_per_hour: u32,
    /// Where security events go (device linked or revoked, a contact
    /// verified, a contact's devices changed, …): the node's security log.
    /// None: nowhere.
    pub security: Option<SecuritySink>,
    /// Reads the node's security log back (for the readable export).
    /// None: there is none to read.
    pub security_reader: Option<SecurityReader>,
    /// Where sealed files are kept (`None`: this node neither sends nor
    /// fetches files).
    pub blobs: Option<Blobs>,
    /// The largest file this node sends or fetches (100 MiB).
    pub max_file_bytes: u64,
    /// The most bytes per second this node serves files at, to all
    /// devices together (`None`: as fast as they read).
    pub file_rate: Option<u64>,
}

/// A blob store shared with the file service.
#[derive(Clone)]
pub struct Blobs(pub std::sync::Arc<dyn safemeet_store::blob::BlobStore>);

impl std::fmt::Debug for Blobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Blobs")
    }
}

/// The default largest file: 100 MiB.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 100 * 1024 * 1024;

/// One entry of the node's security log, as read back.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SecurityRecord {
    /// Its number in the log.
    pub seq: u64,
    /// When (ms since the Unix epoch).
    pub at: u64,
    /// What happened.
    pub event: String,
    /// The id it is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
}

/// What reading the security log found: every entry, checked, or where
/// the chain breaks (a line changed or removed) and the entries before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityEntries {
    /// The entries that check.
    pub entries: Vec<SecurityRecord>,
    /// Where the chain breaks, if it does.
    pub broken: Option<String>,
}

/// Reads the security log; see [`Config::security_reader`]. It runs on
/// the engine's thread: one read of a local file.
#[derive(Clone)]
pub struct SecurityReader(pub std::sync::Arc<SecurityReadFn>);

/// What a [`SecurityReader`] calls.
pub type SecurityReadFn = dyn Fn() -> Result<SecurityEntries, String> + Send + Sync;

impl std::fmt::Debug for SecurityReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecurityReader")
    }
}

/// Receives security events: an event name and the id it is about. It
/// runs on the engine's thread, so it must be quick (one synced append).
#[derive(Clone)]
pub struct SecuritySink(pub std::sync::Arc<SecurityFn>);

/// What a [`SecuritySink`] calls.
pub type SecurityFn = dyn Fn(&str, Option<String>) + Send + Sync;

impl std::fmt::Debug for SecuritySink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecuritySink")
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            net: safemeet_net::Config::default(),
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
            gossip_grace: Duration::from_secs(1),
            gossip_window: 256,
            direct_room_max_devices: crate::DIRECT_ROOM_MAX_DEVICES,
            security_reader: None,
            mailbox_poll: Duration::from_secs(60),
            mailbox_copies: 3,
            mailbox_catch_up_epochs: 14,
            later_retries: 12,
            parked_retry: Duration::from_secs(6 * 3600),
            give_up_after: Duration::from_secs(7 * 24 * 3600),
            ack_retries: 4,
            request_timeout: Duration::from_secs(60),
            seed: None,
            auto_join_rooms: false,
            max_requests: 32,
            requests_per_hour: 10,
            security: None,
            blobs: None,
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            file_rate: None,
        }
    }
}

impl Config {
    /// Checks that the engine can run with these settings.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |what: &str| Err(Error::InvalidConfig(what.to_owned()));
        if self.retry_initial.is_zero() {
            return bad("retry_initial must be above zero");
        }
        if self.retry_max < self.retry_initial {
            return bad("retry_max must be at least retry_initial");
        }
        if self.gossip_window == 0 {
            return bad("gossip_window must be at least 1");
        }
        if self.mailbox_poll.is_zero() {
            return bad("mailbox_poll must be above zero");
        }
        if self.mailbox_copies == 0 {
            return bad("mailbox_copies must be at least 1");
        }
        if self.parked_retry.is_zero() || self.give_up_after.is_zero() {
            return bad("parked_retry and give_up_after must be above zero");
        }
        if self.request_timeout.is_zero() {
            return bad("request_timeout must be above zero");
        }
        self.net
            .validate()
            .map_err(|e| Error::InvalidConfig(e.to_string()))
    }

    /// The seed for this run: the configured one, or one from the OS.
    pub(crate) fn seed_or_random(&self) -> u64 {
        self.seed
            .unwrap_or_else(|| rand::RngCore::next_u64(&mut rand::rngs::OsRng))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_values_are_refused_not_run() {
        assert!(Config::default().validate().is_ok());
        let cases: [fn(&mut Config); 8] = [
            |c| c.retry_initial = Duration::ZERO,
            |c| c.retry_max = Duration::from_millis(1),
            |c| c.gossip_window = 0,
            |c| c.mailbox_poll = Duration::ZERO,
            |c| c.mailbox_copies = 0,
            |c| c.request_timeout = Duration::ZERO,
            |c| c.net.event_queue = 0,
            |c| c.net.command_queue = 0,
        ];
        for (i, change) in cases.iter().enumerate() {
            let mut c = Config::default();
            change(&mut c);
            assert!(
                matches!(c.validate(), Err(Error::InvalidConfig(_))),
                "case {i}"
            );
        }
    }
}
