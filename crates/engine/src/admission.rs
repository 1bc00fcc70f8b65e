//! Which received room frames may wait on this device for their key, and
//! whose account they are held on.
//!
//! A room frame whose header no key opens, or whose Megolm key has not
//! arrived, is answered "later" (its sender retries). Holding a copy is
//! only a head start, so it is given only to frames that come from
//! someone this device already knows: a direct delivery from a known
//! device of this user, of a contact or of a member of one of its rooms;
//! gossip on a topic it is subscribed to (the network lets only member
//! devices gossip with it); or this device's own mailbox. Each is charged
//! to a [`Holder`] (the peer, the topic, or the mailbox), with a quota per
//! holder both here (frames no header key opens, held in memory) and in
//! the crypto machine (frames waiting for a Megolm key, held in the
//! store): junk from one sender pushes out only its own frames.
//!
//! Junk that can be told for what it is gets a refusal rather than
//! "later": a direct delivery whose header opens under a contact's DM key
//! but that comes from a peer which is none of that contact's (or this
//! user's) devices, with a Megolm session this device was never given.
//! A frame from an unknown peer that opens under a group room's key is
//! answered "later" and not held: it may be a member whose device list
//! this device has not learnt yet.

use std::collections::HashSet;

use libp2p::PeerId;
use safemeet_crypto::machine::Holder;
use safemeet_proto::UserId;
use safemeet_proto::envelope::RoomEnvelope;
use safemeet_proto::room::dm_room;
use safemeet_store::Store;

use crate::Error;
use crate::core::Core;
use crate::receive::Source;

/// The peers whose frames may be held, worked out when contacts, rooms or
/// devices change.
#[derive(Debug, Default)]
pub(crate) struct Admission {
    known: HashSet<PeerId>,
    /// `known` needs working out.
    pub(crate) stale: bool,
    /// Worked out at least once.
    loaded: bool,
}

/// The holder a frame from `from` is charged to.
fn holder_of(from: &Source) -> Holder {
    let hash = match from {
        Source::Peer(peer) => blake3::keyed_hash(&context(b"peer"), &peer.to_bytes()),
        Source::Gossip(topic) => blake3::keyed_hash(&context(b"topic"), topic.as_bytes()),
        Source::Mailbox => blake3::keyed_hash(&context(b"mailbox"), &[]),
    };
    Holder(hash.into())
}

/// A 32-byte key naming a kind of holder, so a peer's hash never equals a
/// topic's.
fn context(kind: &[u8]) -> [u8; 32] {
    let mut key = [0u8; 32];
    let prefix = b"safemeet held frames ";
    key[..prefix.len()].copy_from_slice(prefix);
    let end = (prefix.len() + kind.len()).min(32);
    key[prefix.len()..end].copy_from_slice(&kind[..end - prefix.len()]);
    key
}

impl<S: Store + Clone> Core<S> {
    /// Whom a frame from `from` is held for, or `None` if nothing of its
    /// may be held (a peer this device does not know).
    pub(crate) fn holder(&mut self, from: &Source) -> Option<Holder> {
        match from {
            Source::Peer(peer) => self.known_peer(peer).then(|| holder_of(from)),
            Source::Gossip(_) | Source::Mailbox => Some(holder_of(from)),
        }
    }

    /// Whether `peer` is a known device of this user, a contact or a
    /// member of one of this device's rooms.
    pub(crate) fn known_peer(&mut self, peer: &PeerId) -> bool {
        if self.admission.stale || !self.admission.loaded {
            match self.known_peers() {
                Ok(known) => {
                    self.admission.known = known;
                    self.admission.stale = false;
                    self.admission.loaded = true;
                }
                Err(e) => tracing::warn!(error = %e, "could not work out the known devices"),
            }
        }
        self.admission.known.contains(peer)
    }

    fn known_peers(&mut self) -> Result<HashSet<PeerId>, Error> {
        let mut users: HashSet<UserId> = HashSet::new();
        users.insert(self.user_id());
        users.extend(self.contact_records()?.iter().map(|c| c.user_id));
        for id in self.room_index()?.rooms {
            if let Some(room) = self.room(&id)?
                && !room.left
            {
                users.extend(room.members.iter().copied());
            }
        }
        let mut known = HashSet::new();
        for user in users {
            if self.refuses(&user) {
                continue;
            }
            known.extend(self.user_peers(&user)?);
        }
        Ok(known)
    }

    /// Whether a frame a peer delivered directly is junk: it opened under
    /// the DM key of a contact but the peer is none of that contact's
    /// devices (nor this user's).
    pub(crate) fn foreign_dm_frame(&mut self, peer: &PeerId, env: &RoomEnvelope) -> bool {
        let me = self.user_id();
        let contacts = match self.contact_records() {
            Ok(c) => c,
            Err(_) => return false,
        };
        let Some(contact) = contacts
            .iter()
            .find(|c| dm_room(&me, &c.user_id).1 == env.topic)
        else {
            return false;
        };
        let user = contact.user_id;
        let theirs = self.user_peers(&user).unwrap_or_default();
        let mine = self.user_peers(&me).unwrap_or_default();
        !theirs.contains(peer) && !mine.contains(peer)
    }
}

/// Frames kept in memory, each charged to a [`Holder`]: at most `total`
/// in all and `per_holder` for one holder. Past a holder's share its own
/// oldest frame goes; when the whole is full, the oldest frame of whoever
/// keeps the most. So junk from one sender pushes out only its own.
#[derive(Debug)]
pub(crate) struct HolderQueue<T> {
    items: std::collections::VecDeque<(Holder, T)>,
    total: usize,
    per_holder: usize,
}

impl<T: PartialEq> HolderQueue<T> {
    pub(crate) fn new(total: usize, per_holder: usize) -> Self {
        Self {
            items: Default::default(),
            total,
            per_holder,
        }
    }

    /// Keeps `item` for `holder` (once: a repeat is not kept again).
    pub(crate) fn push(&mut self, holder: Holder, item: T) {
        let items = &mut self.items;
        if items.iter().any(|(_, i)| *i == item) {
            return;
        }
        let mine = items.iter().filter(|(h, _)| *h == holder).count();
        let evict = if mine >= self.per_holder {
            Some(holder)
        } else if items.len() >= self.total {
            let mut counts: std::collections::HashMap<Holder, usize> = Default::default();
            for (h, _) in items.iter() {
                *counts.entry(*h).or_default() += 1;
            }
            counts.into_iter().max_by_key(|(_, n)| *n).map(|(h, _)| h)
        } else {
            None
        };
        if let Some(evict) = evict
            && let Some(pos) = items.iter().position(|(h, _)| *h == evict)
        {
            items.remove(pos);
        }
        items.push_back((holder, item));
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Keeps only the items `keep` says to.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        self.items.retain(|(_, i)| keep(i));
    }

    /// Takes every item out, oldest first.
    pub(crate) fn take(&mut self) -> Vec<(Holder, T)> {
        self.items.drain(..).collect()
    }

    #[cfg(test)]
    pub(crate) fn len_for(&self, holder: Holder) -> usize {
        self.items.iter().filter(|(h, _)| *h == holder).count()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }
}
