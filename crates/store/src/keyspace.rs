//! The named keyspaces a node stores its state in.

/// A keyspace: a separate range of keys with one purpose.
///
/// Each has a fixed one-byte id used on disk; ids are never reused, so an old
/// database can always be read by a newer build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Keyspace {
    /// Store metadata: schema version, clean-shutdown marker.
    Meta,
    /// This user's keys, device and profile.
    Account,
    /// Known devices of contacts: certificates, device lists, verification state.
    Devices,
    /// Contacts and their pet names.
    Contacts,
    /// Rooms: membership, secrets, settings.
    Rooms,
    /// Timeline events per room, in order.
    Timeline,
    /// Envelopes waiting to be delivered.
    Outbox,
    /// Olm and Megolm session state.
    CryptoSessions,
    /// (Megolm session, message index) pairs already decrypted: the replay table.
    SeenMegolmIndexes,
    /// The durable, numbered event log that API clients replay from.
    EventLog,
    /// A relay's mailboxes: per-mailbox counters and the relay's totals.
    Mailboxes,
    /// A relay's stored envelopes, by mailbox and id.
    MailboxEnvelopes,
    /// A relay's expiry index: when each stored envelope goes.
    MailboxExpiry,
}

impl Keyspace {
    /// Every keyspace, in id order.
    pub const ALL: [Keyspace; 13] = [
        Keyspace::Meta,
        Keyspace::Account,
        Keyspace::Devices,
        Keyspace::Contacts,
        Keyspace::Rooms,
        Keyspace::Timeline,
        Keyspace::Outbox,
        Keyspace::CryptoSessions,
        Keyspace::SeenMegolmIndexes,
        Keyspace::EventLog,
        Keyspace::Mailboxes,
        Keyspace::MailboxEnvelopes,
        Keyspace::MailboxExpiry,
    ];

    /// The stable on-disk id.
    pub const fn id(self) -> u8 {
        match self {
            Keyspace::Meta => 0,
            Keyspace::Account => 1,
            Keyspace::Devices => 2,
            Keyspace::Contacts => 3,
            Keyspace::Rooms => 4,
            Keyspace::Timeline => 5,
            Keyspace::Outbox => 6,
            Keyspace::CryptoSessions => 7,
            Keyspace::SeenMegolmIndexes => 8,
            Keyspace::EventLog => 9,
            Keyspace::Mailboxes => 10,
            Keyspace::MailboxEnvelopes => 11,
            Keyspace::MailboxExpiry => 12,
        }
    }

    /// The keyspace with on-disk id `id`.
    pub fn from_id(id: u8) -> Option<Keyspace> {
        Self::ALL.into_iter().find(|k| k.id() == id)
    }

    /// A short lowercase name, for logs and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Keyspace::Meta => "meta",
            Keyspace::Account => "account",
            Keyspace::Devices => "devices",
            Keyspace::Contacts => "contacts",
            Keyspace::Rooms => "rooms",
            Keyspace::Timeline => "timeline",
            Keyspace::Outbox => "outbox",
            Keyspace::CryptoSessions => "crypto_sessions",
            Keyspace::SeenMegolmIndexes => "seen_megolm_indexes",
            Keyspace::EventLog => "event_log",
            Keyspace::Mailboxes => "mailboxes",
            Keyspace::MailboxEnvelopes => "mailbox_envelopes",
            Keyspace::MailboxExpiry => "mailbox_expiry",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_round_trip() {
        for (i, k) in Keyspace::ALL.into_iter().enumerate() {
            assert_eq!(usize::from(k.id()), i);
            assert_eq!(Keyspace::from_id(k.id()), Some(k));
        }
        assert_eq!(Keyspace::from_id(200), None);
    }
}
