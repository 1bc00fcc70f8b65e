//! Who this device refuses to hear from: blocked users and removed
//! contacts, and which contacts' room invitations are taken without
//! asking.
//!
//! - **Blocked** users (`contact block`; their pending message request and
//!   room invitations are deleted): their deliveries are answered
//!   `Refused` (no acknowledgement, so their device shows no delivery),
//!   their gossip frames are not forwarded, and nothing of theirs is
//!   decrypted into the store: the crypto machine refuses them as senders
//!   ([`safemeet_crypto::Error::RefusedSender`]), and a direct delivery
//!   from one of their devices is refused before it is even opened. A block
//!   outlives restarts and is undone only by `contact unblock`.
//! - **Removed** contacts (`contact remove`) are refused the same way, until
//!   their invite is accepted again (`contact add`).
//! - **Auto-accept**: contacts whose room invitations join at once (see
//!   `invitations`).
//!
//! All three lists live in one record in the encrypted store, bounded by
//! [`MAX_LISTED`] each. Messages stored before a block stay in the timeline.

use std::collections::HashSet;

use libp2p::PeerId;
use safemeet_proto::{UserId, codec};
use safemeet_store::{Keyspace, Store};
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::core::Core;
use crate::records::{MAX_RECORD_BYTES, VERSION};

/// Most users on each list: 4 096 (about 130 KiB of user ids per list,
/// within one stored record). Past it a new entry is refused with an
/// error, never silently dropped: an unblock the user did not ask for
/// would let someone back in.
pub const MAX_LISTED: usize = 4096;

/// Where the lists are stored.
const PEOPLE_NAME: &[u8] = b"people";
/// Most deleted accounts remembered (each with its devices' peer ids,
/// within one stored record); past it the oldest is forgotten (its devices
/// are gone from this device anyway, so nothing of theirs opens).
const MAX_DELETED: usize = 128;
/// Where the deleted accounts are stored.
const DELETED_NAME: &[u8] = b"deleted-users";

/// Accounts whose users deleted them, with the peer ids their devices
/// had: refused like blocked users, though their devices are forgotten.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct DeletedRecord {
    version: u8,
    users: Vec<(UserId, Vec<Vec<u8>>)>,
}

/// The stored lists.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct PeopleRecord {
    version: u8,
    blocked: Vec<UserId>,
    removed: Vec<UserId>,
    auto_accept: Vec<UserId>,
}

/// The lists, as the core keeps them.
#[derive(Debug, Default)]
pub(crate) struct People {
    record: PeopleRecord,
    deleted: DeletedRecord,
    /// The peers of the refused users' known devices, refused before a
    /// frame of theirs is opened. Worked out again when devices change.
    refused_peers: HashSet<PeerId>,
    /// `refused_peers` needs working out.
    peers_stale: bool,
}

impl<S: Store + Clone> Core<S> {
    /// Reads the lists and tells the crypto machine whom to refuse.
    pub(crate) fn load_people(&mut self) -> Result<(), Error> {
        if let Some(bytes) = self.store.get(Keyspace::Contacts, PEOPLE_NAME)? {
            self.people.record = codec::decode(&bytes, MAX_RECORD_BYTES)?;
        }
        if let Some(bytes) = self.store.get(Keyspace::Contacts, DELETED_NAME)? {
            self.people.deleted = codec::decode(&bytes, MAX_RECORD_BYTES)?;
        }
        self.people_changed();
        Ok(())
    }

    fn people_changed(&mut self) {
        let r = &self.people.record;
        let deleted = self.people.deleted.users.iter().map(|(u, _)| *u);
        self.machine
            .set_refused_senders(r.blocked.iter().chain(&r.removed).copied().chain(deleted));
        self.people.peers_stale = true;
    }

    /// Whether a contact's account was deleted.
    pub(crate) fn is_deleted(&self, user: &UserId) -> bool {
        self.people.deleted.users.iter().any(|(u, _)| u == user)
    }

    /// Records a deleted account and the peers its devices had (the
    /// oldest record goes past [`MAX_DELETED`]).
    pub(crate) fn mark_deleted(&mut self, user: UserId, peers: Vec<Vec<u8>>) -> Result<(), Error> {
        let users = &mut self.people.deleted.users;
        users.retain(|(u, _)| *u != user);
        if users.len() >= MAX_DELETED {
            users.remove(0);
        }
        users.push((user, peers));
        self.people.deleted.version = VERSION;
        self.store.put(
            Keyspace::Contacts,
            DELETED_NAME,
            &codec::encode_limited(&self.people.deleted, MAX_RECORD_BYTES)?,
        )?;
        self.store.flush()?;
        self.people_changed();
        Ok(())
    }

    fn store_people(&mut self) -> Result<(), Error> {
        self.people.record.version = VERSION;
        let mut batch = self.store.batch();
        self.store.batch_put_value(
            &mut batch,
            Keyspace::Contacts,
            PEOPLE_NAME,
            &self.people.record,
            MAX_RECORD_BYTES,
        )?;
        self.store.apply(batch)?;
        self.store.flush()?;
        self.people_changed();
        Ok(())
    }

    /// Blocks a user (a contact or not).
    pub(crate) fn block(&mut self, user: UserId) -> Result<(), Error> {
        if user == self.user_id() {
            return Err(Error::InvalidInput("one cannot block oneself".into()));
        }
        if self.people.record.blocked.contains(&user) {
            return Ok(());
        }
        if self.people.record.blocked.len() >= MAX_LISTED {
            return Err(Error::InvalidInput(format!(
                "the block list is full ({MAX_LISTED} users)"
            )));
        }
        self.people.record.blocked.push(user);
        self.store_people()?;
        // Nothing of theirs is kept: a pending request or invitation goes.
        self.take_request(&user)?;
        self.drop_invitations_from(&user)
    }

    /// Unblocks a user; an error if they were not blocked.
    pub(crate) fn unblock(&mut self, user: UserId) -> Result<(), Error> {
        let before = self.people.record.blocked.len();
        self.people.record.blocked.retain(|u| *u != user);
        if self.people.record.blocked.len() == before {
            return Err(Error::InvalidInput(format!("{user} is not blocked")));
        }
        self.store_people()
    }

    /// The blocked users, in the order they were blocked.
    pub(crate) fn blocked(&self) -> Vec<UserId> {
        self.people.record.blocked.clone()
    }

    /// A contact was removed: refuse them until they are added again.
    pub(crate) fn mark_removed(&mut self, user: UserId) -> Result<(), Error> {
        if !self.people.record.removed.contains(&user) {
            if self.people.record.removed.len() >= MAX_LISTED {
                // The oldest removal is forgotten (it stays without a
                // contact record, so its DM is not opened either).
                self.people.record.removed.remove(0);
            }
            self.people.record.removed.push(user);
        }
        self.people.record.auto_accept.retain(|u| *u != user);
        self.store_people()
    }

    /// A contact was added (again): no longer refused as removed.
    pub(crate) fn mark_added(&mut self, user: UserId) -> Result<(), Error> {
        if !self.people.record.removed.contains(&user) {
            return Ok(());
        }
        self.people.record.removed.retain(|u| *u != user);
        self.store_people()
    }

    /// Sets whether a contact's room invitations are taken without asking.
    pub(crate) fn set_auto_accept(&mut self, user: UserId, on: bool) -> Result<(), Error> {
        if self.contact(&user)?.is_none() {
            return Err(Error::UnknownContact(user));
        }
        let list = &mut self.people.record.auto_accept;
        let listed = list.contains(&user);
        match (on, listed) {
            (true, false) => {
                if list.len() >= MAX_LISTED {
                    return Err(Error::InvalidInput(format!(
                        "the auto-accept list is full ({MAX_LISTED} users)"
                    )));
                }
                list.push(user);
            }
            (false, true) => list.retain(|u| *u != user),
            _ => return Ok(()),
        }
        self.store_people()
    }

    /// Whom room invitations are joined from without asking.
    pub(crate) fn join_policy(&self) -> crate::invitations::JoinPolicy {
        crate::invitations::JoinPolicy {
            all: self.config.auto_join_rooms,
            from: self.people.record.auto_accept.clone(),
            own_device: Some(self.machine.account().device_id()),
            contacts: self.contact_records().unwrap_or_default(),
        }
    }

    /// Whether a user is blocked or a removed contact.
    pub(crate) fn refuses(&self, user: &UserId) -> bool {
        let r = &self.people.record;
        r.blocked.contains(user) || r.removed.contains(user) || self.is_deleted(user)
    }

    /// Whether a direct delivery from `peer` is refused unopened: the peer
    /// is a known device of a refused user.
    pub(crate) fn refuses_peer(&mut self, peer: &PeerId) -> bool {
        if self.people.peers_stale || self.devices_changed {
            let r = &self.people.record;
            let users: Vec<UserId> = r.blocked.iter().chain(&r.removed).copied().collect();
            let mut peers = HashSet::new();
            for user in users {
                match self.user_peers(&user) {
                    Ok(p) => peers.extend(p),
                    Err(e) => tracing::warn!(error = %e, "could not read a refused user's devices"),
                }
            }
            for (_, known) in &self.people.deleted.users {
                peers.extend(known.iter().filter_map(|p| PeerId::from_bytes(p).ok()));
            }
            self.people.refused_peers = peers;
            self.people.peers_stale = false;
        }
        self.people.refused_peers.contains(peer)
    }

    /// The peer ids of a user's known devices.
    pub(crate) fn user_peers(&mut self, user: &UserId) -> Result<Vec<PeerId>, Error> {
        let mut peers = Vec::new();
        for device in self.machine.user_devices(user)? {
            let cert = device.certificate.decode_body()?;
            if let Ok(peer) = PeerId::from_bytes(&cert.peer_id) {
                peers.push(peer);
            }
        }
        Ok(peers)
    }
}
