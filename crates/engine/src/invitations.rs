//! Room invitations wait for consent.
//!
//! A room state that would make this device join a room (one it does not
//! know, or one it left) is checked as it would be to join (see `chain`),
//! then kept as a pending invitation instead of being applied, unless its
//! sender is a contact set to auto-accept (`contact set --auto-accept-invites`)
//! or the engine is configured to join every invitation
//! (`Config::auto_join_rooms`, for simulations). `room join` applies the
//! kept state (joining then proceeds as it always did: the room's later
//! states and messages, answered "later" meanwhile, come with their
//! senders' next tries); `room decline` drops it.
//!
//! The list is bounded: at most [`MAX_INVITATIONS`] pending, and at most
//! [`MAX_INVITATIONS_PER_INVITER`] from one inviter. An invitation past
//! either bound is refused (its sender sees the refusal); a newer state of
//! a room already pending replaces the older one. The list is kept in the
//! encrypted store, written in the same commit as the state's replay
//! record.

use safemeet_crypto::EncryptedStore;
use safemeet_proto::event::EventContent;
use safemeet_proto::{RoomId, Timestamp, UserId, codec};
use safemeet_store::{Keyspace, Store};
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::chain::apply_event;
use crate::core::Core;
use crate::records::{MAX_RECORD_BYTES, RoomRecord, VERSION};
use crate::rooms::stage_room;
use crate::timeline::stage_log_at;

/// Most pending invitations: 64. Each holds a room state (up to a few
/// KiB with a large member list), so the list stays one small record;
/// a person rarely has more rooms to decide on at once.
pub const MAX_INVITATIONS: usize = 64;
/// Most pending invitations from one inviter: 8, so one contact cannot
/// fill the list and crowd out everyone else's.
pub const MAX_INVITATIONS_PER_INVITER: usize = 8;

/// Whom a room invitation is joined from without asking.
#[derive(Debug, Clone, Default)]
pub(crate) struct JoinPolicy {
    /// Every invitation (`Config::auto_join_rooms`).
    pub(crate) all: bool,
    /// Contacts set to auto-accept.
    pub(crate) from: Vec<UserId>,
    /// This device: its own messages arrive through its outbox, those of
    /// this user's other devices are received like anyone's.
    pub(crate) own_device: Option<safemeet_proto::DeviceId>,
    /// The contacts, to find the conversation a message from another of
    /// this user's devices belongs to.
    pub(crate) contacts: std::sync::Arc<Vec<crate::records::ContactRecord>>,
}

impl JoinPolicy {
    pub(crate) fn joins(&self, inviter: &UserId) -> bool {
        self.all || self.from.contains(inviter)
    }
}

/// Where the list is stored.
const INVITATIONS_NAME: &[u8] = b"invitations";

/// A room invitation as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Invitation {
    /// The room.
    pub room_id: RoomId,
    /// Its name.
    pub name: String,
    /// Who invited (the room's creator).
    pub from: UserId,
    /// Its members, as the invitation lists them.
    pub members: Vec<UserId>,
    /// When the inviter sent it (their clock).
    pub sent_at: Timestamp,
}

/// A kept invitation: the state that would join the room.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PendingInvitation {
    pub(crate) room_id: RoomId,
    pub(crate) from: UserId,
    pub(crate) lamport: u64,
    pub(crate) ts: Timestamp,
    pub(crate) content: EventContent,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct InvitationsRecord {
    version: u8,
    pub(crate) pending: Vec<PendingInvitation>,
}

/// Reads the pending invitations.
pub(crate) fn read_invitations<S: Store>(
    store: &EncryptedStore<S>,
) -> Result<InvitationsRecord, safemeet_crypto::Error> {
    Ok(match store.get(Keyspace::Rooms, INVITATIONS_NAME)? {
        Some(b) => codec::decode(&b, MAX_RECORD_BYTES)?,
        None => InvitationsRecord {
            version: VERSION,
            pending: Vec::new(),
        },
    })
}

/// Stages `invitation` into the stored list (replacing a pending one of
/// the same room); refused past the bounds.
pub(crate) fn stage_invitation<S: Store>(
    store: &EncryptedStore<S>,
    batch: &mut safemeet_crypto::EncryptedBatch,
    invitation: PendingInvitation,
) -> Result<(), safemeet_crypto::Error> {
    let refused = |reason| safemeet_crypto::Error::InvalidRecord {
        what: "room invitation",
        reason,
    };
    let mut record = read_invitations(store)?;
    record.pending.retain(|p| p.room_id != invitation.room_id);
    if record.pending.len() >= MAX_INVITATIONS {
        return Err(refused("the invitation list is full"));
    }
    let from_inviter = record
        .pending
        .iter()
        .filter(|p| p.from == invitation.from)
        .count();
    if from_inviter >= MAX_INVITATIONS_PER_INVITER {
        return Err(refused("too many pending invitations from this inviter"));
    }
    record.pending.push(invitation);
    put_invitations(store, batch, &mut record)
}

fn put_invitations<S: Store>(
    store: &EncryptedStore<S>,
    batch: &mut safemeet_crypto::EncryptedBatch,
    record: &mut InvitationsRecord,
) -> Result<(), safemeet_crypto::Error> {
    record.version = VERSION;
    store.batch_put_value(
        batch,
        Keyspace::Rooms,
        INVITATIONS_NAME,
        record,
        MAX_RECORD_BYTES,
    )
}

impl<S: Store + Clone> Core<S> {
    /// The pending invitations, oldest first.
    pub(crate) fn invitations(&self) -> Result<Vec<Invitation>, Error> {
        Ok(read_invitations(&self.store)?
            .pending
            .iter()
            .filter_map(|p| match &p.content {
                EventContent::RoomState(state) => Some(Invitation {
                    room_id: p.room_id,
                    name: state.name.clone(),
                    from: p.from,
                    members: state.members.clone(),
                    sent_at: p.ts,
                }),
                _ => None,
            })
            .collect())
    }

    /// Joins a room from its pending invitation.
    pub(crate) fn room_join(&mut self, room_id: &RoomId) -> Result<(), Error> {
        let mut record = read_invitations(&self.store)?;
        let Some(pos) = record.pending.iter().position(|p| p.room_id == *room_id) else {
            return Err(Error::UnknownRoom(*room_id));
        };
        let invitation = record.pending.remove(pos);
        let EventContent::RoomState(state) = &invitation.content else {
            return Err(Error::UnknownRoom(*room_id));
        };
        let me = self.user_id();
        let mut room = match self.room(room_id)? {
            Some(r) => r,
            None => RoomRecord::fresh(*room_id, None, Vec::new(), state.secret.topic()),
        };
        room.lamport = room.lamport.max(invitation.lamport);
        let mut batch = self.store.batch();
        let applied = apply_event(
            &mut room,
            me,
            invitation.from,
            invitation.lamport,
            &invitation.content,
        );
        let joined = match applied {
            Ok(applied) if !room.members.is_empty() => Some(applied),
            // The room moved on since (this device joined or left it by
            // another state): the invitation is spent.
            _ => None,
        };
        let mut used = 0;
        if let Some(applied) = &joined {
            stage_room(&self.store, &mut batch, &room)?;
            if let Some(log) = &applied.log {
                stage_log_at(&self.store, &mut batch, self.log_next, log)?;
                used = 1;
            }
        }
        put_invitations(&self.store, &mut batch, &mut record)?;
        self.store.apply(batch)?;
        self.store.flush()?;
        // The flush made every log entry so far durable.
        self.log_next += used;
        self.log_durable = self.log_next;
        let Some(applied) = joined else {
            return Err(Error::InvalidInput(
                "the invitation can no longer be used".into(),
            ));
        };
        if applied.rotate {
            self.rotation_due(room.room_id);
        }
        self.rooms.insert(room.room_id, room);
        self.rooms_changed = true;
        self.devices_changed = true;
        Ok(())
    }

    /// Drops every pending invitation from `user` (who was blocked).
    pub(crate) fn drop_invitations_from(&mut self, user: &UserId) -> Result<(), Error> {
        let mut record = read_invitations(&self.store)?;
        let before = record.pending.len();
        record.pending.retain(|p| p.from != *user);
        if record.pending.len() == before {
            return Ok(());
        }
        let mut batch = self.store.batch();
        put_invitations(&self.store, &mut batch, &mut record)?;
        self.store.apply(batch)?;
        self.store.flush()?;
        Ok(())
    }

    /// Drops a pending invitation.
    pub(crate) fn room_decline(&mut self, room_id: &RoomId) -> Result<(), Error> {
        let mut record = read_invitations(&self.store)?;
        let before = record.pending.len();
        record.pending.retain(|p| p.room_id != *room_id);
        if record.pending.len() == before {
            return Err(Error::UnknownRoom(*room_id));
        }
        let mut batch = self.store.batch();
        put_invitations(&self.store, &mut batch, &mut record)?;
        self.store.apply(batch)?;
        self.store.flush()?;
        Ok(())
    }
}
