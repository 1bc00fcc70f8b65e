//! Group rooms: creation, invitations, leaving, removing and banning
//! members, and the state events that carry a room's name, secret,
//! members, admins and bans.
//!
//! A room's state travels as a `RoomState` event in the room itself, so it
//! is end-to-end encrypted and authenticated like any message (sealed
//! sender). States form a chain rooted at the room's creator; which states
//! a device accepts, and when the room's secret (hence its gossip topic)
//! changes, is in the `chain` module. A member leaves with a `Leave`
//! membership event about themself; an admin removes or bans one with a
//! `Remove` or `Ban` event to the old members (so the removed member stops
//! taking part), then a new state with a new secret to the remaining ones.
//! Removing a member also changes the set of devices the room key goes
//! to, so the next message starts a new Megolm session the removed member
//! never gets.

use safemeet_crypto::EncryptedBatch;
use safemeet_crypto::EncryptedStore;
use safemeet_proto::event::{
    EventContent, Membership, MembershipChange, ROOM_STATE_VERSION, RoomState,
};
use safemeet_proto::limits::MAX_ROOM_BANNED;
use safemeet_proto::room::{RoomSecret, room_id_for};
use safemeet_proto::{EventId, RoomId, UserId, codec};
use safemeet_store::{Keyspace, Store};
use zeroize::Zeroize;

use crate::chain::MAX_PREVIOUS_SECRETS;
use crate::core::Core;
use crate::records::{Chain, MAX_RECORD_BYTES, RoomIndex, RoomRecord, VERSION, name};
use crate::{Error, RoomInfo};

/// Stages a room record (of a room already in the index, if a group room).
pub(crate) fn put_room<S: Store>(
    store: &EncryptedStore<S>,
    batch: &mut EncryptedBatch,
    room: &RoomRecord,
) -> Result<(), safemeet_crypto::Error> {
    store.batch_put_value(
        batch,
        Keyspace::Rooms,
        &name::room(&room.room_id),
        room,
        MAX_RECORD_BYTES,
    )
}

/// Stages a room record, and adds a group room to the room index (reads
/// the index: for state changes, not for every message).
pub(crate) fn stage_room<S: Store>(
    store: &EncryptedStore<S>,
    batch: &mut EncryptedBatch,
    room: &RoomRecord,
) -> Result<(), safemeet_crypto::Error> {
    put_room(store, batch, room)?;
    if room.dm_with.is_none() {
        let mut index: RoomIndex = match store.get(Keyspace::Rooms, name::ROOM_INDEX)? {
            Some(b) => codec::decode(&b, MAX_RECORD_BYTES)?,
            None => RoomIndex {
                version: VERSION,
                rooms: Vec::new(),
            },
        };
        if !index.rooms.contains(&room.room_id) {
            index.rooms.push(room.room_id);
            store.batch_put_value(
                batch,
                Keyspace::Rooms,
                name::ROOM_INDEX,
                &index,
                MAX_RECORD_BYTES,
            )?;
        }
    }
    Ok(())
}

/// The room id of the direct conversation between two users (the same
/// whichever of them asks).
pub fn dm_room_id(a: &UserId, b: &UserId) -> RoomId {
    dm_room(a, b).0
}

/// The id and topic of the DM room between two users: both sides derive
/// the same ones.
pub(crate) use safemeet_proto::room::dm_room;

impl<S: Store + Clone> Core<S> {
    pub(crate) fn room_index(&self) -> Result<RoomIndex, Error> {
        Ok(match self.store.get(Keyspace::Rooms, name::ROOM_INDEX)? {
            Some(b) => codec::decode(&b, MAX_RECORD_BYTES)?,
            None => RoomIndex {
                version: VERSION,
                rooms: Vec::new(),
            },
        })
    }

    /// A room record, from memory or the store.
    pub(crate) fn room(&mut self, room: &RoomId) -> Result<Option<RoomRecord>, Error> {
        if let Some(r) = self.rooms.get(room) {
            return Ok(Some(r.clone()));
        }
        let Some(bytes) = self.store.get(Keyspace::Rooms, &name::room(room))? else {
            return Ok(None);
        };
        let record = RoomRecord::decode(&bytes)?;
        self.rooms.insert(*room, record.clone());
        Ok(Some(record))
    }

    /// The DM room with a user (made up if nothing was said in it yet).
    pub(crate) fn dm(&mut self, with: UserId) -> Result<RoomRecord, Error> {
        let me = self.machine.account().user_id();
        let (room_id, topic) = dm_room(&me, &with);
        Ok(self
            .room(&room_id)?
            .unwrap_or_else(|| RoomRecord::fresh(room_id, Some(with), vec![me, with], topic)))
    }

    /// A group room this device knows.
    pub(crate) fn group_room(&mut self, room: &RoomId) -> Result<RoomRecord, Error> {
        match self.room(room)? {
            Some(r) if r.dm_with.is_none() && !r.members.is_empty() => Ok(r),
            _ => Err(Error::UnknownRoom(*room)),
        }
    }

    /// The group rooms this user is in.
    pub(crate) fn rooms_list(&mut self) -> Result<Vec<RoomInfo>, Error> {
        let mut out = Vec::new();
        for id in self.room_index()?.rooms {
            if let Some(r) = self.room(&id)?
                && !r.left
            {
                out.push(RoomInfo {
                    room_id: r.room_id,
                    name: r.name.clone().unwrap_or_default(),
                    members: r.members.clone(),
                    admins: r.admins.clone(),
                });
            }
        }
        Ok(out)
    }

    /// A fresh random room secret.
    fn new_secret(&mut self) -> RoomSecret {
        let mut bytes = [0u8; 32];
        rand::RngCore::fill_bytes(&mut self.rng, &mut bytes);
        let secret = RoomSecret::from_bytes(bytes);
        bytes.zeroize();
        secret
    }

    /// Issues the room's next state from its record (members, admins,
    /// name as they are now), with a new secret if `rotate`, bringing in
    /// `added`, and sends it to the members.
    fn issue_state(
        &mut self,
        mut room: RoomRecord,
        rotate: bool,
        added: Vec<UserId>,
    ) -> Result<EventId, Error> {
        let no_chain = || {
            Error::InvalidInput(
                "this room was made before room states formed a chain; create it again".into(),
            )
        };
        let chain = room.chain.clone().ok_or_else(no_chain)?;
        let current = room.secret.clone().ok_or_else(no_chain)?;
        let secret = if rotate {
            self.new_secret()
        } else {
            current.clone()
        };
        let state = RoomState {
            version: ROOM_STATE_VERSION,
            name: room.name.clone().unwrap_or_default(),
            secret: secret.clone(),
            members: room.members.clone(),
            admins: room.admins.clone(),
            banned: chain.banned.clone(),
            creator: chain.creator,
            nonce: chain.nonce,
            epoch: chain.epoch.checked_add(1).ok_or_else(no_chain)?,
            prev: Some(chain.head),
            added,
        };
        let head = checked_hash(&state)?;
        let mut previous_secrets = chain.previous_secrets;
        if rotate {
            previous_secrets.insert(0, current);
            previous_secrets.truncate(MAX_PREVIOUS_SECRETS);
        }
        room.topic = secret.topic();
        room.secret = Some(secret);
        room.chain = Some(Chain {
            epoch: state.epoch,
            head,
            admins: state.admins.clone(),
            previous_secrets,
            ..chain
        });
        self.rooms_changed = true;
        self.send_event(room, EventContent::RoomState(Box::new(state)))
    }

    /// Creates a group room with these contacts; this user is its admin.
    pub(crate) fn create_room(
        &mut self,
        room_name: &str,
        contacts: &[UserId],
    ) -> Result<RoomId, Error> {
        let name_ok = !room_name.trim().is_empty()
            && room_name.len() <= safemeet_proto::limits::MAX_DISPLAY_NAME_BYTES
            && !room_name.chars().any(char::is_control);
        if !name_ok {
            return Err(Error::InvalidInput(
                "a room name is 1-64 bytes of printable text".into(),
            ));
        }
        let me = self.machine.account().user_id();
        let mut members = vec![me];
        for user in contacts {
            if self.contact(user)?.is_none() {
                return Err(Error::UnknownContact(*user));
            }
            if !members.contains(user) {
                members.push(*user);
            }
        }
        let taken = self.rooms_list()?.iter().any(|r| r.name == room_name);
        if taken {
            return Err(Error::InvalidInput(format!(
                "a room called {room_name:?} exists"
            )));
        }
        let secret = self.new_secret();
        let mut nonce = [0u8; 16];
        rand::RngCore::fill_bytes(&mut self.rng, &mut nonce);
        let room_id = room_id_for(&me, &nonce);
        let state = RoomState {
            version: ROOM_STATE_VERSION,
            name: room_name.to_owned(),
            secret: secret.clone(),
            members: members.clone(),
            admins: vec![me],
            banned: Vec::new(),
            creator: me,
            nonce,
            epoch: 0,
            prev: None,
            added: members.iter().filter(|u| **u != me).copied().collect(),
        };
        let head = checked_hash(&state)?;
        let room = RoomRecord {
            version: VERSION,
            room_id,
            dm_with: None,
            name: Some(room_name.to_owned()),
            members,
            admins: vec![me],
            topic: secret.topic(),
            secret: Some(secret),
            left: false,
            lamport: 0,
            next_seq: 0,
            state_lamport: 0,
            chain: Some(Chain {
                creator: me,
                nonce,
                epoch: 0,
                head,
                admins: vec![me],
                banned: Vec::new(),
                previous_secrets: Vec::new(),
            }),
            added_at: Vec::new(),
        };
        self.send_event(room, EventContent::RoomState(Box::new(state)))?;
        Ok(room_id)
    }

    /// Adds a contact to a group room. Only the creator can: an invitee
    /// takes a room only from its creator (see the `chain` module).
    pub(crate) fn room_invite(&mut self, room: &RoomId, user: &UserId) -> Result<(), Error> {
        let me = self.machine.account().user_id();
        let room = self.group_room(room)?;
        if !room.admins.contains(&me) {
            return Err(Error::InvalidInput(
                "only the room's admins can invite".into(),
            ));
        }
        let chain = room.chain.as_ref().ok_or_else(|| {
            Error::InvalidInput(
                "this room was made before room states formed a chain; create it again".into(),
            )
        })?;
        if chain.creator != me {
            return Err(Error::InvalidInput(
                "only the room's creator can invite: invitees check the room against it".into(),
            ));
        }
        if chain.banned.contains(user) {
            return Err(Error::InvalidInput(format!(
                "{user} is banned from this room"
            )));
        }
        if self.contact(user)?.is_none() {
            return Err(Error::UnknownContact(*user));
        }
        if room.members.contains(user) {
            return Ok(());
        }
        let mut room = room;
        room.members.push(*user);
        self.issue_state(room, false, vec![*user])?;
        Ok(())
    }

    /// Removes a member from a group room (admins only), and bars them
    /// from it if `ban`: tells every member (the removed one too, so it
    /// stops taking part), then sends the remaining members a new state
    /// with a new secret.
    pub(crate) fn room_remove(
        &mut self,
        room: &RoomId,
        user: &UserId,
        ban: bool,
    ) -> Result<(), Error> {
        let me = self.machine.account().user_id();
        let room = self.group_room(room)?;
        if !room.admins.contains(&me) {
            return Err(Error::InvalidInput(
                "only the room's admins can remove or ban members".into(),
            ));
        }
        if *user == me {
            return Err(Error::InvalidInput(
                "you cannot remove yourself; leave the room instead".into(),
            ));
        }
        let Some(chain) = room.chain.clone() else {
            return Err(Error::InvalidInput(
                "this room was made before room states formed a chain; create it again".into(),
            ));
        };
        if !room.members.contains(user) {
            return Err(Error::UnknownMember {
                room: room.room_id,
                user: *user,
            });
        }
        if ban && chain.banned.len() >= MAX_ROOM_BANNED {
            return Err(Error::InvalidInput(format!(
                "a room bans at most {MAX_ROOM_BANNED} users"
            )));
        }
        let room_id = room.room_id;
        let change = if ban {
            MembershipChange::Ban
        } else {
            MembershipChange::Remove
        };
        self.send_event(
            room,
            EventContent::Membership(Membership {
                user_id: *user,
                change,
            }),
        )?;
        let mut room = self.group_room(&room_id)?;
        room.members.retain(|u| u != user);
        room.admins.retain(|u| u != user);
        if ban && let Some(chain) = room.chain.as_mut() {
            chain.banned.push(*user);
        }
        self.issue_state(room, true, Vec::new())?;
        Ok(())
    }

    /// Notes that this device issues the next state of a room a member
    /// left.
    pub(crate) fn rotation_due(&mut self, room: RoomId) {
        if !self.rotations_due.contains(&room) {
            self.rotations_due.push(room);
        }
    }

    /// Issues the new state of rooms a member left, where this device is
    /// the one to (see the `chain` module).
    pub(crate) fn rotate_due(&mut self) {
        let rotations = std::mem::take(&mut self.rotations_due);
        let restates: Vec<RoomId> = std::mem::take(&mut self.restates_due)
            .into_iter()
            .filter(|r| !rotations.contains(r))
            .collect();
        for room_id in restates {
            let me = self.machine.account().user_id();
            let result = self.group_room(&room_id).and_then(|room| {
                if room.left || room.admins.iter().min() != Some(&me) {
                    return Ok(());
                }
                self.issue_state(room, false, Vec::new()).map(|_| ())
            });
            if let Err(e) = result {
                tracing::warn!(kind = ?e.kind(), "a room's state could not be sent again");
            }
        }
        for room_id in rotations {
            let me = self.machine.account().user_id();
            let result = self.group_room(&room_id).and_then(|room| {
                if room.left || !room.admins.contains(&me) {
                    return Ok(());
                }
                self.issue_state(room, true, Vec::new()).map(|_| ())
            });
            if let Err(e) = result {
                // The error may name the room: only its kind is logged.
                tracing::warn!(kind = ?e.kind(), "a room's secret could not be rotated");
            }
        }
    }

    /// Leaves a group room: tells the members, then stops taking part.
    pub(crate) fn room_leave(&mut self, room: &RoomId) -> Result<(), Error> {
        let me = self.machine.account().user_id();
        let room = self.group_room(room)?;
        let room_id = room.room_id;
        self.send_event(
            room,
            EventContent::Membership(Membership {
                user_id: me,
                change: MembershipChange::Leave,
            }),
        )?;
        if let Some(mut room) = self.room(&room_id)? {
            room.left = true;
            room.members.retain(|u| *u != me);
            room.admins.retain(|u| *u != me);
            let mut batch = self.store.batch();
            stage_room(&self.store, &mut batch, &room)?;
            self.store.apply(batch)?;
            self.store.flush()?;
            self.rooms.insert(room_id, room);
        }
        Ok(())
    }
}

/// A state's hash, once it is known to decode as receivers will decode it.
fn checked_hash(state: &RoomState) -> Result<safemeet_proto::room::StateHash, Error> {
    let encoded = codec::encode(state)?;
    codec::decode::<RoomState>(&encoded, MAX_RECORD_BYTES)
        .map_err(|e| Error::InvalidInput(e.to_string()))?;
    Ok(state.hash()?)
}

impl<S: Store + Clone> Core<S> {
    /// A member linked a device, which may have missed a room state sent
    /// before its user's list reached the sender: the group rooms this
    /// user's first admin (by user id) shares with them get their state
    /// again, with nothing changed but the epoch.
    ///
    /// Every device of that admin that holds the room does this, whichever
    /// learns of the new device first: a state names no device and no
    /// time, so devices at the same chain head issue the same bytes, and
    /// the second copy is refused as a replay. (Leaving it to one device
    /// lost the state when that device learned of the new one before it
    /// had the room.)
    pub(crate) fn restate_rooms_of(&mut self, user: UserId) -> Result<(), Error> {
        let me = self.user_id();
        for id in self.room_index()?.rooms {
            let Some(room) = self.room(&id)? else {
                continue;
            };
            if !room.left
                && room.members.contains(&user)
                && room.admins.iter().min() == Some(&me)
                && !self.restates_due.contains(&id)
            {
                self.restates_due.push(id);
            }
        }
        Ok(())
    }
}
