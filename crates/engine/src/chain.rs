//! The chain of a group room's states, and what received state and
//! membership events may do to a room.
//!
//! # The scheme
//! - **The room id commits to its creator.** A room id is
//!   [`room_id_for`]`(creator, nonce)` with a random nonce, and every state
//!   names both, so anyone holding a state can check who made the room.
//! - **Joining follows the creator.** A device that does not know a room
//!   takes its first state only when that state derives the room id from
//!   the creator it names, the state comes from that creator (the sealed
//!   sender authenticates the sending user and device), and it lists this
//!   user as a member. The state is the invitation: an authenticated
//!   event from the inviter that names the room, its creator and (through
//!   its hash) the state it stands for. A contact who forges a first
//!   state for someone else's room is refused, and the real state is then
//!   taken as if the forgery never came.
//!   A member who left or was removed and is invited again joins the same
//!   way (the states in between never reached it), from a newer epoch than
//!   the last state it had, and only from a state that *adds* it
//!   (`RoomState::added`): a state the admin issued before it saw the
//!   leave (a rotation for another member's leave) still lists the leaver
//!   as a member, and must not take it back in.
//! - **Every later state extends the head.** Each state names the
//!   [`StateHash`] of the state it replaces (`prev`) and its epoch (one
//!   more). A device that knows the room takes a state only when `prev` is
//!   the hash of the state it applied last, the epoch is the next one, and
//!   the sender is an admin *of that previous state*. So a replayed old
//!   state, a state on another branch, and a state from a non-admin are
//!   refused. A state up to [`MAX_STATE_GAP`] epochs ahead is answered
//!   "later" (its sender keeps it and tries again: the missing states are
//!   on their way); one further ahead is refused, so no sender can make a
//!   device hold on to an unbounded chain.
//! - **A leave is about the membership it ends.** A member's leave
//!   travels apart from the states, and its sender keeps trying devices
//!   that cannot place it yet, so it may arrive after the creator has
//!   already brought that member back in. The creator re-adds only a user
//!   who is not a member in its view, so it saw the leave first, and its
//!   state carries a later Lamport time. The room keeps, per member, the
//!   Lamport time of the state that last added them
//!   ([`RoomRecord::added_at`]); a leave from before it changes nothing.
//!   A device that joins (or comes back) counts every member of the state
//!   it joins from as added then: a leave older than that state is about a
//!   membership before it. (A leave sent concurrently with that state by
//!   a member who never left is then missed here, but not for long: the
//!   admin rotates when it sees the leave, and the new state says it.)
//! - **Rotation.** Every membership change that removes someone (a leave,
//!   a removal, a ban) is followed by a state with a new room secret, hence
//!   a new gossip topic, sent to the remaining members only. The removed
//!   user never gets it. The previous [`MAX_PREVIOUS_SECRETS`] secrets are
//!   kept in the room record ([`RoomRecord::secrets`]) for frames still in
//!   flight. On a leave, the first admin of the head state who is still a
//!   member issues the new state; on a removal or ban, the admin who made
//!   it. The Megolm session rotates too, since a device it was shared with
//!   is no longer a recipient.
//!
//! # Limits
//! - Only the creator can bring in new members: an invitee checks the
//!   inviter against the room id, and there is no transferable proof yet
//!   that another admin holds its standing (states are authenticated by
//!   the sealed sender, which only the receiving device can check). A
//!   bounded chain of admin grants signed by device keys would lift this;
//!   until then the engine refuses invitations from other admins. Since
//!   no command makes another admin, every admin today is the creator.
//! - Two admins (or two devices of one admin) that issue states at once
//!   fork the chain: each member keeps the branch it saw first. With one
//!   admin device there is no fork.
//! - A member that misses a state for good (its sender gave up) takes no
//!   later state; fetching missing states from other members is future
//!   work (catch-up).
//! - If the only admin leaves, no one rotates the room any more.
//! - A revoked device of a member is dropped from the Megolm recipients
//!   (the crypto machine rotates the session) but the room's secret is
//!   not changed: the engine has no hook on device revocation yet.

use safemeet_proto::UserId;
use safemeet_proto::event::{EventContent, Membership, MembershipChange, RoomState};
use safemeet_proto::room::{StateHash, room_id_for};

use crate::records::LogRecord;
use crate::records::{Chain, RoomRecord};

/// Previous room secrets kept after a rotation: two, so frames sent just
/// before two quick changes in a row can still be opened.
pub(crate) const MAX_PREVIOUS_SECRETS: usize = 2;
/// How many epochs ahead of the head a state may be and still be waited
/// for: enough for a burst of changes delivered out of order, small
/// enough that a peer cannot make a device wait on a long invented chain.
pub(crate) const MAX_STATE_GAP: u64 = 16;

/// Why a received state or membership event was not applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// A state ahead of the head: the states before it may still come.
    Ahead,
    /// Never acceptable.
    Refused(&'static str),
}

/// What an accepted event did.
#[derive(Debug, Default)]
pub(crate) struct Applied {
    /// The log entry to record, if the room changed.
    pub(crate) log: Option<LogRecord>,
    /// This device should issue a new state with a new secret.
    pub(crate) rotate: bool,
}

/// Applies a received state or membership event from `sender` (checked by
/// the sealed sender) to a group room `room` (known, or being joined: no
/// members yet). See the module docs for the rules.
pub(crate) fn apply_event(
    room: &mut RoomRecord,
    me: UserId,
    sender: UserId,
    lamport: u64,
    content: &EventContent,
) -> Result<Applied, Refusal> {
    match content {
        EventContent::RoomState(state) => {
            check_state(room, me, sender, state)?;
            let hash = state
                .hash()
                .map_err(|_| Refusal::Refused("the state cannot be encoded"))?;
            apply_state(room, me, lamport, state, hash);
            Ok(Applied {
                log: Some(room_log(room)),
                rotate: false,
            })
        }
        EventContent::Membership(m) => apply_membership(room, me, sender, lamport, m),
        _ => Ok(Applied::default()),
    }
}

/// Checks a state against the room's chain.
fn check_state(
    room: &RoomRecord,
    me: UserId,
    sender: UserId,
    state: &RoomState,
) -> Result<(), Refusal> {
    let refused = |reason| Err(Refusal::Refused(reason));
    let joining = |epoch_floor: Option<u64>| {
        // The creator vouches, and the room id proves who that is.
        if room_id_for(&state.creator, &state.nonce) != room.room_id {
            return refused("the room id does not derive from the creator the state names");
        }
        if sender != state.creator {
            return refused("a room is joined only from its creator's state");
        }
        if !state.members.contains(&me) {
            return refused("the state does not list this user");
        }
        if epoch_floor.is_some_and(|floor| state.epoch <= floor) {
            return refused("an old or replayed room state");
        }
        Ok(())
    };
    let Some(chain) = &room.chain else {
        if !room.members.is_empty() {
            return refused("the room was made before room states formed a chain");
        }
        return joining(None);
    };
    if state.creator != chain.creator || state.nonce != chain.nonce {
        return refused("the state names another creator");
    }
    if room.left {
        // Back after leaving or a removal: the states in between never
        // came here, so the creator vouches again, for a newer state that
        // brings this user in. A state issued before the leave was seen
        // still lists this user, but does not add them.
        if !state.added.contains(&me) {
            // Either a state issued before the leave was seen (it must
            // never take this user back), or one issued after an
            // invitation that is still on its way (the two travel apart).
            // Only a newer state from the creator that lists this user can
            // be the latter: "later" (its sender tries again, and once the
            // invitation is in, it extends the chain; a stale one is then
            // old and refused). Anything else is refused now.
            let maybe_after_invite = sender == state.creator
                && state.members.contains(&me)
                && state.epoch > chain.epoch
                && state.epoch - chain.epoch <= MAX_STATE_GAP;
            if maybe_after_invite {
                return Err(Refusal::Ahead);
            }
            return refused("the state does not bring this user back in");
        }
        return joining(Some(chain.epoch));
    }
    if state.epoch <= chain.epoch {
        return refused("an old or replayed room state");
    }
    if state.epoch - chain.epoch > 1 {
        if state.epoch - chain.epoch > MAX_STATE_GAP {
            return refused("the state is too far ahead of the chain");
        }
        return Err(Refusal::Ahead);
    }
    if state.prev != Some(chain.head) {
        return refused("the state names a wrong previous state");
    }
    if !chain.admins.contains(&sender) {
        return refused("the state is not from an admin of the previous state");
    }
    Ok(())
}

fn apply_state(
    room: &mut RoomRecord,
    me: UserId,
    lamport: u64,
    state: &RoomState,
    hash: StateHash,
) {
    // A device joining (or back) takes the state as its start: to it,
    // every member came in then.
    let joining = room.left || room.chain.is_none();
    let mut previous_secrets = room
        .chain
        .take()
        .map(|c| c.previous_secrets)
        .unwrap_or_default();
    if let Some(old) = room.secret.take()
        && old.expose() != state.secret.expose()
    {
        previous_secrets.insert(0, old);
        previous_secrets.truncate(MAX_PREVIOUS_SECRETS);
    }
    room.name = Some(state.name.clone());
    let added = if joining {
        &state.members
    } else {
        &state.added
    };
    room.members = state.members.clone();
    room.added_at.retain(|(u, _)| state.members.contains(u));
    for user in added {
        if !state.members.contains(user) || *user == me {
            continue;
        }
        match room.added_at.iter_mut().find(|(u, _)| u == user) {
            Some(entry) => entry.1 = lamport,
            None => room.added_at.push((*user, lamport)),
        }
    }
    room.admins = state.admins.clone();
    room.topic = state.secret.topic();
    room.secret = Some(state.secret.clone());
    room.left = !room.members.contains(&me);
    room.state_lamport = lamport;
    room.chain = Some(Chain {
        creator: state.creator,
        nonce: state.nonce,
        epoch: state.epoch,
        head: hash,
        admins: state.admins.clone(),
        banned: state.banned.clone(),
        previous_secrets,
    });
}

fn apply_membership(
    room: &mut RoomRecord,
    me: UserId,
    sender: UserId,
    lamport: u64,
    m: &Membership,
) -> Result<Applied, Refusal> {
    let is_admin = room
        .chain
        .as_ref()
        .is_some_and(|c| c.admins.contains(&sender));
    if room.left {
        // Out of the room: what happens in it is no longer this device's
        // to follow (members who have not heard yet may still say it).
        return Ok(Applied::default());
    }
    match m.change {
        MembershipChange::Leave
            if m.user_id == sender && left_before_added(room, sender, lamport) =>
        {
            // Sent before the state that brought the sender back in: the
            // creator saw it before re-adding them (see the module docs).
            Ok(Applied::default())
        }
        MembershipChange::Leave if m.user_id == sender => {
            room.members.retain(|u| *u != sender);
            room.admins.retain(|u| *u != sender);
            Ok(Applied {
                log: Some(room_log(room)),
                rotate: rotates_after_leave(room, me),
            })
        }
        MembershipChange::Leave => Err(Refusal::Refused("a user leaves only for themself")),
        MembershipChange::Remove | MembershipChange::Ban if !is_admin => {
            Err(Refusal::Refused("only an admin removes or bans a member"))
        }
        MembershipChange::Remove | MembershipChange::Ban if m.user_id == me => {
            // The new state (and secret) goes to the others only.
            room.left = true;
            room.members.retain(|u| *u != me);
            room.admins.retain(|u| *u != me);
            Ok(Applied {
                log: Some(room_log(room)),
                rotate: false,
            })
        }
        // About someone else: the admin's next state says it all.
        _ => Ok(Applied::default()),
    }
}

/// Whether a leave `sender` sent at Lamport time `lamport` is older than
/// the state that last brought them into the room.
fn left_before_added(room: &RoomRecord, sender: UserId, lamport: u64) -> bool {
    room.added_at
        .iter()
        .any(|(user, at)| *user == sender && lamport < *at)
}

/// Whether this device issues the new state after a member left: it is
/// the first admin of the head state still in the room.
fn rotates_after_leave(room: &RoomRecord, me: UserId) -> bool {
    let Some(chain) = &room.chain else {
        return false;
    };
    !room.left && chain.admins.iter().find(|a| room.members.contains(a)) == Some(&me)
}

pub(crate) fn room_log(room: &RoomRecord) -> LogRecord {
    LogRecord::Room {
        room_id: room.room_id,
        name: room.name.clone().unwrap_or_default(),
        members: room.members.clone(),
    }
}

#[cfg(test)]
#[path = "chain_tests.rs"]
mod tests;
