//! Group rooms: creation, invitations, leaving, and the state events that
//! carry a room's name, secret, members and admins.
//!
//! A room's state travels as a `RoomState` event in the room itself, so it
//! is end-to-end encrypted and authenticated like any message (sealed
//! sender). Receivers accept a state change only from a current admin; a
//! room they do not know yet they join only from an admin the state names,
//! when it lists them as a member. A member leaves with a `Leave`
//! membership event about themself. Removing a member changes the set of
//! devices the room key goes to, so the next message starts a new session
//! the removed member never gets.

use safemeet_crypto::EncryptedBatch;
use safemeet_crypto::EncryptedStore;
use safemeet_proto::event::{EventContent, Membership, MembershipChange, RoomState};
use safemeet_proto::room::RoomSecret;
use safemeet_proto::{EventId, RoomId, UserId, codec};
use safemeet_store::{Keyspace, Store};
use zeroize::Zeroize;

use crate::core::Core;
use crate::records::{MAX_RECORD_BYTES, RoomIndex, RoomRecord, VERSION, name};
use crate::{Error, LogEntry, RoomInfo};

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

/// Applies a received state or membership event (sent at Lamport time
/// `lamport`) to `room` (a group room known or being joined). Returns the
/// log entry to record, if the room changed. A state older than the one
/// applied last is ignored: states arrive in no fixed order.
pub(crate) fn update_room_from_event(
    room: &mut RoomRecord,
    me: UserId,
    sender: UserId,
    lamport: u64,
    content: &EventContent,
) -> Option<LogEntry> {
    match content {
        EventContent::RoomState(state) => {
            let creating = room.members.is_empty();
            if !creating && lamport < room.state_lamport {
                tracing::debug!("an older room state was ignored");
                return None;
            }
            let allowed = if creating {
                state.admins.contains(&sender)
            } else {
                room.admins.contains(&sender)
            };
            if !allowed {
                tracing::debug!("a room state from a non-admin was ignored");
                return None;
            }
            room.name = Some(state.name.clone());
            room.members = state.members.clone();
            room.admins = state.admins.clone();
            room.topic = state.secret.topic();
            room.secret = Some(state.secret.clone());
            room.left = !room.members.contains(&me);
            room.state_lamport = lamport;
            Some(room_log(room))
        }
        EventContent::Membership(Membership {
            user_id,
            change: MembershipChange::Leave,
        }) if *user_id == sender => {
            room.members.retain(|u| *u != sender);
            room.admins.retain(|u| *u != sender);
            Some(room_log(room))
        }
        _ => None,
    }
}

fn room_log(room: &RoomRecord) -> LogEntry {
    LogEntry::Room {
        room_id: room.room_id,
        name: room.name.clone().unwrap_or_default(),
        members: room.members.clone(),
    }
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

    fn send_state(&mut self, room: RoomRecord) -> Result<EventId, Error> {
        let secret = room.secret.clone().ok_or(Error::InvalidInput(
            "a direct conversation has no room state".into(),
        ))?;
        let state = RoomState {
            version: 1,
            name: room.name.clone().unwrap_or_default(),
            secret,
            members: room.members.clone(),
            admins: room.admins.clone(),
        };
        self.send_event(room, EventContent::RoomState(state))
    }

    /// Creates a group room with these contacts; this user is its admin.
    pub(crate) fn create_room(
        &mut self,
        room_name: &str,
        contacts: &[UserId],
    ) -> Result<RoomId, Error> {
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
        let mut bytes = [0u8; 32];
        rand::RngCore::fill_bytes(&mut self.rng, &mut bytes);
        let secret = RoomSecret::from_bytes(bytes);
        bytes.zeroize();
        let mut id = [0u8; 16];
        rand::RngCore::fill_bytes(&mut self.rng, &mut id);
        let room = RoomRecord {
            version: VERSION,
            room_id: RoomId::from_bytes(id),
            dm_with: None,
            name: Some(room_name.to_owned()),
            members,
            admins: vec![me],
            topic: secret.topic(),
            secret: Some(secret.clone()),
            left: false,
            lamport: 0,
            next_seq: 0,
            state_lamport: 0,
        };
        // Validate the state as receivers will.
        let probe = RoomState {
            version: 1,
            name: room_name.to_owned(),
            secret,
            members: room.members.clone(),
            admins: room.admins.clone(),
        };
        let encoded = codec::encode(&probe)?;
        codec::decode::<RoomState>(&encoded, MAX_RECORD_BYTES)
            .map_err(|e| Error::InvalidInput(e.to_string()))?;
        let room_id = room.room_id;
        self.send_state(room)?;
        Ok(room_id)
    }

    /// Adds a contact to a group room (admins only).
    pub(crate) fn room_invite(&mut self, room: &RoomId, user: &UserId) -> Result<(), Error> {
        let me = self.machine.account().user_id();
        let mut room = self.group_room(room)?;
        if !room.admins.contains(&me) {
            return Err(Error::InvalidInput(
                "only the room's admins can invite".into(),
            ));
        }
        if self.contact(user)?.is_none() {
            return Err(Error::UnknownContact(*user));
        }
        if room.members.contains(user) {
            return Ok(());
        }
        room.members.push(*user);
        self.send_state(room)?;
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn user(b: u8) -> UserId {
        UserId::from_bytes([b; 32])
    }

    fn state(members: &[u8]) -> EventContent {
        EventContent::RoomState(RoomState {
            version: 1,
            name: "r".into(),
            secret: RoomSecret::from_bytes([7; 32]),
            members: members.iter().map(|b| user(*b)).collect(),
            admins: vec![user(1)],
        })
    }

    fn room() -> RoomRecord {
        RoomRecord {
            version: VERSION,
            room_id: RoomId::from_bytes([9; 16]),
            dm_with: None,
            name: None,
            members: Vec::new(),
            admins: Vec::new(),
            secret: None,
            left: false,
            topic: safemeet_proto::room::RoomTopic::from_bytes([0; 32]),
            lamport: 0,
            next_seq: 0,
            state_lamport: 0,
        }
    }

    #[test]
    fn an_older_room_state_arriving_late_does_not_undo_a_newer_one() {
        let (admin, me) = (user(1), user(2));
        let mut r = room();
        assert!(update_room_from_event(&mut r, me, admin, 1, &state(&[1, 2])).is_some());
        // The newer state (adding 3) arrives before the older one (adding 4
        // alone was never sent: it stands for any earlier list).
        assert!(update_room_from_event(&mut r, me, admin, 5, &state(&[1, 2, 3, 4])).is_some());
        assert!(update_room_from_event(&mut r, me, admin, 4, &state(&[1, 2, 4])).is_none());
        assert_eq!(r.members.len(), 4);
        assert_eq!(r.state_lamport, 5);
        // A later state applies, and may remove this user.
        assert!(update_room_from_event(&mut r, me, admin, 6, &state(&[1, 3])).is_some());
        assert!(r.left);
    }
}
