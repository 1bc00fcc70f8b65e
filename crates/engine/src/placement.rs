//! Placing a received room event: what it does to its room (a message
//! on the timeline, a state or membership change on the chain, or an
//! invitation that waits for consent), worked out inside the commit that
//! stores it.

use std::collections::HashMap;

use safemeet_crypto::EncryptedStore;
use safemeet_crypto::machine::DecryptedRoomEvent;
use safemeet_proto::event::EventContent;
use safemeet_proto::{RoomId, UserId};
use safemeet_store::{Keyspace, Store};

use crate::Error;
use crate::chain::{Refusal, apply_event};
use crate::invitations::{JoinPolicy, PendingInvitation};
use crate::records::{LogRecord, MessageState, Revision, RoomRecord, TimelineEntry, name};
use crate::revisions::{Change, plan, redact_entry, redacted_early, stage_change};
use crate::rooms::{dm_room, stage_room};
use crate::timeline::{stage_log_at, stage_message};

/// Why a received room event cannot be placed yet.
pub(crate) const UNKNOWN_ROOM: &str = "the room is not known yet";
/// Why a received room event cannot be placed (yet): the state that adds
/// its sender may still be on its way.
pub(crate) const NOT_A_MEMBER: &str = "the sender is not a member of the room";
/// Why a received room state cannot be applied yet: the states before it
/// may still be on their way.
pub(crate) const STATE_AHEAD: &str = "the room state is ahead of this device's chain";
/// How far a received Lamport time may run ahead of the room's: a larger
/// jump is refused, so no sender can push a room's clock to its end.
const MAX_LAMPORT_JUMP: u64 = 1 << 32;

/// Where a received room event goes: into its room, or into the pending
/// invitations.
pub(crate) enum Placed {
    Room(Box<Received>),
    Invitation(PendingInvitation),
}

/// What a received event does: the room (as it is after the event), and
/// the timeline entry or the log entry it adds.
pub(crate) struct Received {
    pub(crate) room: RoomRecord,
    pub(crate) message: Option<(TimelineEntry, u64)>,
    pub(crate) log: Option<LogRecord>,
    /// A message or the room's settings it changes.
    pub(crate) change: Option<Change>,
    /// This device issues the room's next state (a member left).
    pub(crate) rotate: bool,
}

/// Whether a room frame that decrypted could not be placed only because
/// the state that places it has not come yet.
pub(crate) fn waits_for_state(e: &Error) -> bool {
    matches!(
        e,
        Error::Crypto(safemeet_crypto::Error::InvalidRecord {
            reason: UNKNOWN_ROOM | NOT_A_MEMBER | STATE_AHEAD,
            ..
        })
    )
}

/// Works out what a received room event does. A DM's room derives from
/// the pair of users; a group room must be known, or be joined by this
/// very event (a room state from an admin that lists this user).
pub(crate) fn received_entry<S: Store>(
    store: &EncryptedStore<S>,
    rooms: &mut HashMap<RoomId, RoomRecord>,
    me: UserId,
    policy: &JoinPolicy,
    event: &DecryptedRoomEvent,
    now: safemeet_proto::Timestamp,
) -> Result<Placed, safemeet_crypto::Error> {
    let invalid = |reason| safemeet_crypto::Error::InvalidRecord {
        what: "received message",
        reason,
    };
    let sender = event.sender.user_id;
    // Another device of this user: its messages are this user's own.
    let own = sender == me;
    if own
        && policy
            .own_device
            .is_none_or(|d| d == event.sender.device_id)
    {
        return Err(invalid("own messages arrive through the outbox"));
    }
    let room_id = event.event.room_id;
    let stored = match rooms.get(&room_id) {
        Some(r) => Some(r.clone()),
        None => match store.get(Keyspace::Rooms, &name::room(&room_id))? {
            Some(b) => Some(RoomRecord::decode(&b)?),
            None => None,
        },
    };
    // The other user of a DM: the sender, or for this user's own message
    // the contact whose conversation the room is.
    let partner = if own {
        policy
            .contacts
            .iter()
            .map(|c| c.user_id)
            .find(|c| dm_room(&me, c).0 == room_id)
    } else {
        Some(sender)
    };
    let (dm_id, dm_topic) = match partner {
        Some(p) => dm_room(&me, &p),
        None => dm_room(&me, &me),
    };
    // The chain's rules for a state or membership event, on a room record.
    let apply = |room: &mut RoomRecord| {
        apply_event(room, me, sender, event.event.lamport, &event.event.content).map_err(
            |refusal| match refusal {
                Refusal::Ahead => invalid(STATE_AHEAD),
                Refusal::Refused(reason) => invalid(reason),
            },
        )
    };
    // A state that would join a room not known, or left: an invitation,
    // which waits for consent unless its sender is trusted to add this
    // user (checked first as a join would be).
    let joining = stored.as_ref().is_none_or(|r| r.left);
    if let EventContent::RoomState(state) = &event.event.content
        && joining
        && room_id != dm_id
        && state.members.contains(&me)
        && !own
        && !policy.joins(&sender)
    {
        let mut trial = match &stored {
            Some(r) => r.clone(),
            None => RoomRecord::fresh(room_id, None, Vec::new(), state.secret.topic()),
        };
        apply(&mut trial)?;
        if trial.members.is_empty() {
            return Err(invalid(UNKNOWN_ROOM));
        }
        return Ok(Placed::Invitation(PendingInvitation {
            room_id,
            from: sender,
            lamport: event.event.lamport,
            ts: event.event.ts,
            content: event.event.content.clone(),
        }));
    }
    let fresh = |dm_with, members, topic| RoomRecord::fresh(room_id, dm_with, members, topic);
    let mut room = match stored {
        Some(r) => r,
        None => match partner {
            Some(p) if room_id == dm_id && p != me => fresh(Some(p), vec![me, p], dm_topic),
            _ => match &event.event.content {
                EventContent::RoomState(state) if state.members.contains(&me) => {
                    fresh(None, Vec::new(), state.secret.topic())
                }
                _ => return Err(invalid(UNKNOWN_ROOM)),
            },
        },
    };
    let is_member = room.members.contains(&sender) || room.members.is_empty();
    if room.dm_with.is_none() && !is_member {
        return Err(invalid(NOT_A_MEMBER));
    }
    if !own && room.dm_with.is_some_and(|with| with != sender) {
        // A room key can name any room id; a DM takes only its two users.
        return Err(invalid("the sender is not in this conversation"));
    }
    if event.event.lamport > room.lamport.saturating_add(MAX_LAMPORT_JUMP) {
        return Err(invalid("implausible Lamport time"));
    }
    room.lamport = room.lamport.max(event.event.lamport);
    let message = match &event.event.content {
        EventContent::Message(m) => Some((m.body.as_str(), None)),
        EventContent::File(f) => Some((f.caption.as_str(), Some(f.file.clone()))),
        _ => None,
    };
    if let Some((text, file)) = message {
        if room.members.is_empty() {
            return Err(invalid(UNKNOWN_ROOM));
        }
        // A copy that came again (from a relay, say) changes nothing: the
        // message may have been edited or redacted since.
        if store
            .get(Keyspace::Rooms, &name::message(&event.event_id))?
            .is_some()
        {
            return Err(invalid("the message is stored already"));
        }
        let seq = room.next_seq;
        room.next_seq += 1;
        let mut entry = TimelineEntry {
            event_id: event.event_id,
            sender,
            sender_device: event.sender.device_id,
            lamport: event.event.lamport,
            ts: event.event.ts,
            text: text.to_owned(),
            state: MessageState::Received,
            revision: Revision::Original,
            received_at: now,
            file,
        };
        if redacted_early(store, &room_id, sender, &event.event_id)? {
            redact_entry(&mut entry);
        }
        return Ok(Placed::Room(Box::new(Received {
            room,
            message: Some((entry, seq)),
            log: None,
            change: None,
            rotate: false,
        })));
    }
    if matches!(
        event.event.content,
        EventContent::Redaction(_) | EventContent::Edit(_) | EventContent::Settings(_)
    ) {
        if room.members.is_empty() {
            return Err(invalid(UNKNOWN_ROOM));
        }
        let change = plan(
            store,
            &room,
            sender,
            event.event.lamport,
            &event.event.content,
        )?;
        return Ok(Placed::Room(Box::new(Received {
            room,
            message: None,
            log: None,
            change,
            rotate: false,
        })));
    }
    let applied = if room.dm_with.is_none() {
        apply(&mut room)?
    } else {
        Default::default()
    };
    if room.members.is_empty() {
        // A state this user was not allowed to join from.
        return Err(invalid(UNKNOWN_ROOM));
    }
    Ok(Placed::Room(Box::new(Received {
        room,
        message: None,
        log: applied.log,
        change: None,
        rotate: applied.rotate,
    })))
}

/// Stages what a received event does; returns how many log entries it used.
pub(crate) fn stage_received<S: Store>(
    store: &EncryptedStore<S>,
    batch: &mut safemeet_crypto::EncryptedBatch,
    received: &Received,
    log_seq: u64,
) -> Result<u64, safemeet_crypto::Error> {
    if let Some((entry, seq)) = &received.message {
        stage_message(store, batch, &received.room, *seq, entry, log_seq)?;
        return Ok(1);
    }
    stage_room(store, batch, &received.room)?;
    if let Some(change) = &received.change {
        return stage_change(store, batch, change, log_seq);
    }
    let Some(log) = &received.log else {
        return Ok(0);
    };
    stage_log_at(store, batch, log_seq, log)?;
    Ok(1)
}

/// What the core follows up on after a received event is stored: the
/// expiry of a new message, a room's new expiry, or a redaction that came
/// before its message (see `revisions`).
#[derive(Debug, Clone, Copy)]
pub(crate) enum FollowUp {
    /// A message was stored in the room, sent (as counted for expiry) then.
    Message(RoomId, u64),
    /// The room's expiry changed.
    Expiry(RoomId, Option<u64>),
    /// A redaction waits for its message.
    Early(safemeet_proto::EventId),
}

impl Received {
    /// What the core follows up on, if anything.
    pub(crate) fn follow_up(&self) -> Option<FollowUp> {
        if let Some((entry, _)) = &self.message {
            return Some(FollowUp::Message(self.room.room_id, entry.expires_at(0)));
        }
        match &self.change {
            Some(Change::Settings { room_id, record }) => {
                Some(FollowUp::Expiry(*room_id, record.expire_after_ms))
            }
            Some(Change::Early { target, .. }) => Some(FollowUp::Early(*target)),
            _ => None,
        }
    }
}
