//! The chain rules against honest and hostile states.

use safemeet_proto::RoomId;
use safemeet_proto::event::{EventContent, Membership, MembershipChange, ROOM_STATE_VERSION};
use safemeet_proto::room::RoomSecret;

use super::*;

const ALICE: u8 = 1;
const BOB: u8 = 2;
const MALLORY: u8 = 3;
const CAROL: u8 = 4;
const NONCE: [u8; 16] = [5; 16];

fn user(b: u8) -> UserId {
    UserId::from_bytes([b; 32])
}

fn room_id() -> RoomId {
    room_id_for(&user(ALICE), &NONCE)
}

/// A state of Alice's room: `members` (Alice, the admin, among them).
fn state(epoch: u64, prev: Option<StateHash>, members: &[u8], secret: u8) -> RoomState {
    RoomState {
        version: ROOM_STATE_VERSION,
        name: "r".into(),
        secret: RoomSecret::from_bytes([secret; 32]),
        members: members.iter().map(|b| user(*b)).collect(),
        admins: vec![user(ALICE)],
        banned: Vec::new(),
        creator: user(ALICE),
        nonce: NONCE,
        epoch,
        prev,
        // Everyone but the creator, as if each state invited them.
        added: members
            .iter()
            .filter(|b| **b != ALICE)
            .map(|b| user(*b))
            .collect(),
    }
}

fn next(prev: &RoomState, members: &[u8], secret: u8) -> RoomState {
    state(prev.epoch + 1, Some(prev.hash().unwrap()), members, secret)
}

/// A room Bob has not joined yet.
fn joining() -> RoomRecord {
    RoomRecord::fresh(
        room_id(),
        None,
        Vec::new(),
        safemeet_proto::room::RoomTopic::from_bytes([0; 32]),
    )
}

fn apply(room: &mut RoomRecord, sender: u8, s: &RoomState) -> Result<Applied, Refusal> {
    apply_event(
        room,
        user(BOB),
        user(sender),
        1,
        &EventContent::RoomState(Box::new(s.clone())),
    )
}

fn membership(
    room: &mut RoomRecord,
    sender: u8,
    who: u8,
    change: MembershipChange,
) -> Result<Applied, Refusal> {
    let content = EventContent::Membership(Membership {
        user_id: user(who),
        change,
    });
    apply_event(room, user(BOB), user(sender), 1, &content)
}

/// Bob, joined at the genesis state.
fn joined() -> (RoomRecord, RoomState) {
    let mut room = joining();
    let genesis = state(0, None, &[ALICE, BOB], 1);
    apply(&mut room, ALICE, &genesis).unwrap();
    (room, genesis)
}

#[test]
fn a_forged_first_state_from_a_contact_is_refused_and_the_real_one_then_taken() {
    let mut room = joining();
    // Mallory names herself creator and admin of Alice's room id.
    let mut forged = state(0, None, &[MALLORY, BOB], 9);
    forged.creator = user(MALLORY);
    forged.admins = vec![user(MALLORY)];
    assert!(matches!(
        apply(&mut room, MALLORY, &forged),
        Err(Refusal::Refused(_))
    ));
    // Or names Alice as creator, but sends it herself.
    let forged = state(0, None, &[ALICE, BOB], 9);
    assert!(matches!(
        apply(&mut room, MALLORY, &forged),
        Err(Refusal::Refused(_))
    ));
    // Or a later state (no first one to check it against).
    let forged = state(3, Some(StateHash::from_bytes([1; 32])), &[ALICE, BOB], 9);
    assert!(matches!(
        apply(&mut room, MALLORY, &forged),
        Err(Refusal::Refused(_))
    ));
    assert!(room.members.is_empty() && room.chain.is_none());

    let genesis = state(0, None, &[ALICE, BOB], 1);
    assert!(apply(&mut room, ALICE, &genesis).unwrap().log.is_some());
    assert_eq!(room.admins, vec![user(ALICE)]);
    // And the real admin's later states.
    let second = next(&genesis, &[ALICE, BOB, CAROL], 1);
    apply(&mut room, ALICE, &second).unwrap();
    assert_eq!(room.members.len(), 3);
    assert_eq!(room.chain.as_ref().map(|c| c.epoch), Some(1));
}

#[test]
fn a_state_from_a_non_admin_is_refused() {
    let (mut room, genesis) = joined();
    let s = next(&genesis, &[ALICE, BOB, MALLORY], 1);
    assert_eq!(
        apply(&mut room, BOB, &s).unwrap_err(),
        Refusal::Refused("the state is not from an admin of the previous state")
    );
    // Naming oneself admin in the new state changes nothing.
    let mut s = next(&genesis, &[ALICE, BOB], 1);
    s.admins = vec![user(ALICE), user(BOB)];
    assert!(apply(&mut room, BOB, &s).is_err());
    assert_eq!(room.members.len(), 2);
}

#[test]
fn a_state_naming_a_wrong_previous_state_is_refused() {
    let (mut room, _) = joined();
    let s = state(1, Some(StateHash::from_bytes([7; 32])), &[ALICE], 2);
    assert_eq!(
        apply(&mut room, ALICE, &s).unwrap_err(),
        Refusal::Refused("the state names a wrong previous state")
    );
    assert!(!room.left);
}

#[test]
fn a_replayed_old_state_is_refused() {
    let (mut room, genesis) = joined();
    let second = next(&genesis, &[ALICE, BOB, CAROL], 1);
    let third = next(&second, &[ALICE, BOB], 2);
    apply(&mut room, ALICE, &second).unwrap();
    apply(&mut room, ALICE, &third).unwrap();
    for old in [&genesis, &second, &third] {
        assert_eq!(
            apply(&mut room, ALICE, old).unwrap_err(),
            Refusal::Refused("an old or replayed room state")
        );
    }
    assert_eq!(room.members.len(), 2);
    assert_eq!(room.secret.as_ref().map(|s| s.expose()[0]), Some(2));
}

#[test]
fn a_state_far_ahead_is_refused_and_one_a_little_ahead_waits() {
    let (mut room, _) = joined();
    let near = state(2, Some(StateHash::from_bytes([7; 32])), &[ALICE, BOB], 2);
    assert_eq!(apply(&mut room, ALICE, &near).unwrap_err(), Refusal::Ahead);
    let far = state(
        MAX_STATE_GAP + 1,
        Some(StateHash::from_bytes([7; 32])),
        &[ALICE, BOB],
        2,
    );
    assert!(matches!(
        apply(&mut room, ALICE, &far),
        Err(Refusal::Refused(_))
    ));
    let end = state(
        u64::MAX,
        Some(StateHash::from_bytes([7; 32])),
        &[ALICE, BOB],
        2,
    );
    assert!(matches!(
        apply(&mut room, ALICE, &end),
        Err(Refusal::Refused(_))
    ));
    // The states in between, once they come, make the waiting one fit.
    let (mut room, genesis) = joined();
    let second = next(&genesis, &[ALICE, BOB], 3);
    let third = next(&second, &[ALICE, BOB], 4);
    assert_eq!(apply(&mut room, ALICE, &third).unwrap_err(), Refusal::Ahead);
    apply(&mut room, ALICE, &second).unwrap();
    apply(&mut room, ALICE, &third).unwrap();
}

#[test]
fn a_state_naming_another_creator_is_refused() {
    let (mut room, genesis) = joined();
    let mut s = next(&genesis, &[ALICE, BOB], 2);
    s.nonce = [6; 16];
    assert!(apply(&mut room, ALICE, &s).is_err());
}

#[test]
fn removal_or_ban_by_a_non_admin_is_refused_and_by_the_admin_taken() {
    let (mut room, _) = joined();
    for change in [MembershipChange::Remove, MembershipChange::Ban] {
        assert!(membership(&mut room, MALLORY, BOB, change).is_err());
        assert!(membership(&mut room, BOB, ALICE, change).is_err());
    }
    assert!(!room.left);
    // The admin removing someone else changes nothing until its state.
    membership(&mut room, ALICE, CAROL, MembershipChange::Remove).unwrap();
    assert!(!room.left);
    membership(&mut room, ALICE, BOB, MembershipChange::Ban).unwrap();
    assert!(room.left);
}

#[test]
fn a_leave_makes_the_first_remaining_admin_rotate() {
    // Alice's view: the admin rotates when Bob leaves.
    let genesis = state(0, None, &[ALICE, BOB], 1);
    let mut room = joining();
    room.members = vec![user(ALICE), user(BOB)];
    room.admins = vec![user(ALICE)];
    room.secret = Some(RoomSecret::from_bytes([1; 32]));
    room.chain = Some(Chain {
        creator: user(ALICE),
        nonce: NONCE,
        epoch: 0,
        head: genesis.hash().unwrap(),
        admins: vec![user(ALICE)],
        banned: Vec::new(),
        previous_secrets: Vec::new(),
    });
    let leave = EventContent::Membership(Membership {
        user_id: user(BOB),
        change: MembershipChange::Leave,
    });
    let applied = apply_event(&mut room, user(ALICE), user(BOB), 2, &leave).unwrap();
    assert!(applied.rotate);
    assert_eq!(room.members, vec![user(ALICE)]);
    // Bob's view of Carol leaving: not an admin, no rotation.
    let (mut room, genesis) = joined();
    apply(&mut room, ALICE, &next(&genesis, &[ALICE, BOB, CAROL], 1)).unwrap();
    assert!(
        !membership(&mut room, CAROL, CAROL, MembershipChange::Leave)
            .unwrap()
            .rotate
    );
    // Leaving for someone else is refused.
    assert!(membership(&mut room, MALLORY, ALICE, MembershipChange::Leave).is_err());
}

#[test]
fn rotations_keep_a_bounded_few_previous_secrets() {
    let (mut room, genesis) = joined();
    let mut prev = genesis;
    for secret in 2..6 {
        let s = next(&prev, &[ALICE, BOB], secret);
        apply(&mut room, ALICE, &s).unwrap();
        prev = s;
    }
    let secrets: Vec<u8> = room.secrets().map(|s| s.expose()[0]).collect();
    assert_eq!(secrets, vec![5, 4, 3]);
    assert_eq!(room.topic, RoomSecret::from_bytes([5; 32]).topic());
    // A state that keeps the secret keeps no copy of it.
    let s = next(&prev, &[ALICE, BOB, CAROL], 5);
    apply(&mut room, ALICE, &s).unwrap();
    assert_eq!(room.secrets().count(), 3);
}

#[test]
fn a_room_stored_before_chains_takes_no_state() {
    let mut room = joining();
    room.members = vec![user(ALICE), user(BOB)];
    room.admins = vec![user(ALICE)];
    let s = state(0, None, &[ALICE, BOB], 1);
    assert!(matches!(
        apply(&mut room, ALICE, &s),
        Err(Refusal::Refused(_))
    ));
}

#[test]
fn a_member_who_left_rejoins_from_a_newer_creator_state_only() {
    let (mut room, genesis) = joined();
    let second = next(&genesis, &[ALICE, BOB], 1);
    apply(&mut room, ALICE, &second).unwrap();
    membership(&mut room, ALICE, BOB, MembershipChange::Remove).unwrap();
    assert!(room.left);
    // Bob missed the rotation (epoch 2); the invitation is epoch 3.
    let rotated = next(&second, &[ALICE], 2);
    let back = next(&rotated, &[ALICE, BOB], 2);
    // Not from anyone but the creator, and not an old state.
    assert!(apply(&mut room, MALLORY, &back).is_err());
    assert!(apply(&mut room, ALICE, &genesis).is_err());
    assert!(room.left);
    apply(&mut room, ALICE, &back).unwrap();
    assert!(!room.left);
    assert_eq!(room.chain.as_ref().map(|c| c.epoch), Some(3));
    // And the chain goes on from there.
    apply(&mut room, ALICE, &next(&back, &[ALICE, BOB, CAROL], 2)).unwrap();
    assert_eq!(room.members.len(), 3);
}

#[test]
fn a_state_issued_before_a_leave_was_seen_does_not_take_the_leaver_back() {
    let (mut room, genesis) = joined();
    let second = next(&genesis, &[ALICE, BOB, CAROL], 1);
    apply(&mut room, ALICE, &second).unwrap();
    // Bob is out (here removed; his own leave marks him out the same way).
    membership(&mut room, ALICE, BOB, MembershipChange::Remove).unwrap();
    assert!(room.left);
    // A state Alice issued before that (a rotation for Carol's leave)
    // still lists Bob, but does not bring him in.
    let mut stale = next(&second, &[ALICE, BOB], 2);
    stale.added.clear();
    // It could also be a state issued after an invitation still on its
    // way: "later", never applied.
    assert!(matches!(
        apply(&mut room, ALICE, &stale),
        Err(Refusal::Ahead)
    ));
    assert!(room.left, "Bob stays out");
    // Her invitation, later, does.
    let mut rotated = next(&stale, &[ALICE], 3);
    rotated.added.clear();
    let mut back = next(&rotated, &[ALICE, BOB], 3);
    back.added = vec![user(BOB)];
    // The state after the invitation comes first: "later"; then the
    // invitation, then it.
    let mut after = next(&back, &[ALICE, BOB, CAROL], 3);
    after.added = vec![user(CAROL)];
    assert!(matches!(
        apply(&mut room, ALICE, &after),
        Err(Refusal::Ahead)
    ));
    apply(&mut room, ALICE, &back).unwrap();
    assert!(!room.left);
    apply(&mut room, ALICE, &after).unwrap();
    assert_eq!(room.members.len(), 3);
    // Now the stale state is old.
    assert!(matches!(
        apply(&mut room, ALICE, &stale),
        Err(Refusal::Refused(_))
    ));
}

/// Applies `content`, sent by `sender` at Lamport time `lamport`, to
/// Bob's view of `room`.
fn at(room: &mut RoomRecord, sender: u8, lamport: u64, content: EventContent) -> Applied {
    apply_event(room, user(BOB), user(sender), lamport, &content).unwrap()
}

fn state_event(s: &RoomState) -> EventContent {
    EventContent::RoomState(Box::new(s.clone()))
}

fn leave(who: u8) -> EventContent {
    EventContent::Membership(Membership {
        user_id: user(who),
        change: MembershipChange::Leave,
    })
}

#[test]
fn a_leave_sent_before_the_member_was_brought_back_does_not_remove_them_again() {
    let mut room = joining();
    let genesis = state(0, None, &[ALICE, BOB, CAROL], 1);
    at(&mut room, ALICE, 1, state_event(&genesis));
    // Carol leaves at time 6. Alice sees it and rotates without her; then
    // invites her back at time 12. Bob gets both states before the leave,
    // which its sender kept trying while Bob could not place it.
    let rotated = next(&genesis, &[ALICE, BOB], 2);
    at(&mut room, ALICE, 8, state_event(&rotated));
    let mut back = next(&rotated, &[ALICE, BOB, CAROL], 3);
    back.added = vec![user(CAROL)];
    at(&mut room, ALICE, 12, state_event(&back));
    assert!(room.members.contains(&user(CAROL)));

    let applied = at(&mut room, CAROL, 6, leave(CAROL));
    assert!(applied.log.is_none(), "a stale leave changes nothing");
    assert!(room.members.contains(&user(CAROL)), "{:?}", room.members);

    // A leave she sends after coming back counts.
    let applied = at(&mut room, CAROL, 13, leave(CAROL));
    assert!(applied.log.is_some());
    assert!(!room.members.contains(&user(CAROL)));
}

#[test]
fn a_device_back_in_a_room_ignores_leaves_older_than_the_state_it_came_back_from() {
    let mut room = joining();
    let genesis = state(0, None, &[ALICE, BOB, CAROL], 1);
    at(&mut room, ALICE, 1, state_event(&genesis));
    // Bob leaves; then Carol leaves (time 6), which Bob, out of the room,
    // does not get yet. Alice brings Carol back, then Bob (time 11).
    // (Bob's own leave, as the engine records it.)
    room.left = true;
    room.members.retain(|u| *u != user(BOB));
    let rotated = next(&genesis, &[ALICE, CAROL], 2);
    let gone = next(&rotated, &[ALICE], 3);
    let carol_back = next(&gone, &[ALICE, CAROL], 4);
    let mut bob_back = next(&carol_back, &[ALICE, CAROL, BOB], 5);
    bob_back.added = vec![user(BOB)];
    at(&mut room, ALICE, 11, state_event(&bob_back));
    assert!(!room.left);
    // Carol's leave from time 6 reaches Bob only now.
    let applied = at(&mut room, CAROL, 6, leave(CAROL));
    assert!(applied.log.is_none());
    assert!(room.members.contains(&user(CAROL)), "{:?}", room.members);
}
