//! How each group room travels, and with whom this node gossips.
//!
//! A room with at most [`Config::direct_room_max_devices`] member devices
//! (default [`DIRECT_ROOM_MAX_DEVICES`]) is delivered by **direct
//! fan-out**: every message goes straight to each member device over the
//! delivery protocol (the path DMs take; a relay keeps it for a device that
//! is offline), and the node subscribes to no gossip topic for it, so no
//! peer (a stranger, a LAN peer, a relay, a member of another room) learns
//! that the room exists. A larger room is a **gossip room**: the node
//! subscribes to its topic, and gossips only with the member devices of its
//! gossip rooms, whose peer ids it hands the network layer (`Output::
//! GossipPeers`); every other connection gets no gossip at all (the
//! network layer's gate).
//!
//! A room's mode follows its size: one that grows past the limit is
//! subscribed to, one that shrinks back is unsubscribed from. Members
//! count devices from the device lists they hold, which may differ for a
//! moment; a member that fans out while another gossips is still served
//! (a gossip message nobody acknowledges is delivered directly after the
//! grace), so the modes need not agree.
//!
//! [`Config::direct_room_max_devices`]: crate::Config::direct_room_max_devices

use std::collections::{BTreeSet, HashSet};

use libp2p::PeerId;
use safemeet_proto::RoomId;
use safemeet_proto::room::RoomTopic;
use safemeet_store::Store;

use crate::Error;
use crate::core::Core;
use crate::events::Output;
use crate::records::RoomRecord;

/// The largest room (in member devices, this one included) delivered by
/// direct fan-out by default. At 32, one message's fan-out (31 deliveries)
/// fits in the outbox's 64 deliveries in flight with room for the next
/// message; it costs the sender about what sharing a new room key with the
/// same devices already costs (one Olm message each); and a padded message
/// of the smallest bucket sent 31 times is a few tens of KiB, fine even on
/// a phone. Past it, gossip's few copies per node (a mesh of 4 to 8) take
/// over.
pub const DIRECT_ROOM_MAX_DEVICES: usize = 32;

impl<S: Store + Clone> Core<S> {
    /// The peer ids of the member devices of a room, besides this device.
    fn room_peers(&mut self, room: &RoomRecord) -> Result<Vec<PeerId>, Error> {
        let mut peers = Vec::new();
        for user in &room.members {
            for device in self.machine.user_devices(user)? {
                let cert = device.certificate.decode_body()?;
                if let Ok(peer) = PeerId::from_bytes(&cert.peer_id) {
                    peers.push(peer);
                }
            }
        }
        Ok(peers)
    }

    /// Whether a group room has more member devices (this one included)
    /// than direct fan-out serves. Reads device lists: called when rooms or
    /// devices change, and for sends only until then (the answer is kept).
    pub(crate) fn uses_gossip(&mut self, room_id: &RoomId) -> bool {
        if let Some(known) = self.gossip_mode.get(room_id) {
            return *known;
        }
        let gossip = match self.room(room_id) {
            Ok(Some(room)) if room.dm_with.is_none() && !room.left && room.secret.is_some() => self
                .room_peers(&room)
                .map(|p| p.len() + 1 > self.config.direct_room_max_devices)
                .unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "could not count a room's devices");
                    false
                }),
            _ => false,
        };
        self.gossip_mode.insert(*room_id, gossip);
        gossip
    }

    /// Subscribes to the topics of the gossip rooms this user is in and
    /// unsubscribes from the others, and tells the network which peers to
    /// gossip with: the member devices of those rooms.
    pub(crate) fn sync_subscriptions(&mut self) {
        self.rooms_changed = false;
        self.gossip_mode.clear();
        let ids = match self.room_index() {
            Ok(index) => index.rooms,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the room index");
                return;
            }
        };
        let mut wanted = HashSet::new();
        let mut peers = BTreeSet::new();
        for id in ids {
            if !self.uses_gossip(&id) {
                continue;
            }
            let Ok(Some(room)) = self.room(&id) else {
                continue;
            };
            match self.room_peers(&room) {
                Ok(p) => peers.extend(p),
                Err(e) => tracing::warn!(error = %e, "could not list a room's devices"),
            }
            wanted.insert(room.topic);
        }
        let mut new: Vec<RoomTopic> = wanted.difference(&self.subscribed).cloned().collect();
        let mut stale: Vec<RoomTopic> = self.subscribed.difference(&wanted).cloned().collect();
        // In a fixed order, so a seeded run repeats exactly.
        new.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        stale.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        // The peers first: a subscription is announced only to them.
        peers.truncate_to(safemeet_net::MAX_GOSSIP_PEERS);
        if peers != self.gossip_peers {
            self.out
                .push(Output::GossipPeers(peers.iter().copied().collect()));
            self.gossip_peers = peers;
        }
        for topic in new {
            self.subscribed.insert(topic.clone());
            self.out.push(Output::Subscribe(topic));
        }
        for topic in stale {
            self.subscribed.remove(&topic);
            self.out.push(Output::Unsubscribe(topic));
        }
    }
}

/// Keeps the first `n` elements of an ordered set.
trait TruncateTo {
    fn truncate_to(&mut self, n: usize);
}

impl<T: Ord + Clone> TruncateTo for BTreeSet<T> {
    fn truncate_to(&mut self, n: usize) {
        if let Some(cut) = self.iter().nth(n).cloned() {
            self.split_off(&cut);
        }
    }
}
