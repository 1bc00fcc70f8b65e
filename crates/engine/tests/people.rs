//! Whom an engine hears from, over real TCP on 127.0.0.1: blocked users,
//! removed contacts, room invitations that wait for consent, and junk in
//! the held queue.
//!
//! The other side is a puppet (`safemeet_test_utils::puppet`): a real,
//! certified device whose frames the test makes one at a time and sends
//! from a bare `safemeet_net` node with the device's own key, so every
//! answer (`ok`, `later`, `refused`) is seen; an engine would keep them
//! to itself. An answer is the acknowledgement: `refused` means the
//! sender gets no delivery receipt.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::time::Duration;

use libp2p::Multiaddr;
use safemeet_net::Config as NetConfig;
use safemeet_proto::clock::{Clock, SystemClock};
use safemeet_test_utils::puppet::Puppet;
use safemeet_test_utils::{Device, wait_until};

fn start(
    device: &Device,
    adjust: impl FnOnce(&mut safemeet_engine::Config),
) -> safemeet_engine::Handle {
    let mut config = safemeet_engine::Config {
        net: NetConfig::loopback(),
        retry_initial: Duration::from_millis(100),
        retry_max: Duration::from_millis(500),
        ..safemeet_engine::Config::default()
    };
    adjust(&mut config);
    safemeet_engine::start(device.machine(), config).unwrap()
}

async fn listen_addr(engine: &safemeet_engine::Handle) -> Multiaddr {
    let addrs = wait_until(
        "the engine to listen",
        || async { engine.listen_addrs().await.unwrap() },
        |a| !a.is_empty(),
    )
    .await;
    safemeet_net::dialable(&addrs[0], engine.peer_id())
}

/// Bob's engine, and a puppet each has as a contact.
async fn bob_and_puppet(name: &str) -> (Device, safemeet_engine::Handle, Multiaddr, Puppet) {
    let device = Device::new("bob", SystemClock.now());
    let bob = start(&device, |_| {});
    let addr = listen_addr(&bob).await;
    let mut puppet = Puppet::spawn(name).await;
    puppet.add(&bob.invite().await.unwrap());
    bob.add_contact(&puppet.invite(), Some(name.into()))
        .await
        .unwrap();
    (device, bob, addr, puppet)
}

/// Delivers every frame; the answers.
async fn deliver_all(
    puppet: &Puppet,
    to: &safemeet_engine::Handle,
    addr: &Multiaddr,
    frames: &[Vec<u8>],
) -> Vec<String> {
    let mut answers = Vec::new();
    for frame in frames {
        answers.push(puppet.deliver(to.peer_id(), addr, frame.clone()).await);
    }
    answers
}

async fn dm_texts(bob: &safemeet_engine::Handle, with: &Puppet) -> Vec<String> {
    bob.dm_messages(with.user_id(), 100)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.text)
        .collect()
}

#[tokio::test]
async fn a_blocked_users_dms_are_refused_unstored_across_a_restart_until_unblocked() {
    let (device, bob, addr, mut alice) = bob_and_puppet("alice").await;
    bob.block(alice.user_id()).await.unwrap();
    assert_eq!(bob.blocked().await.unwrap(), vec![alice.user_id()]);
    let frames = alice.dm(bob.user_id(), "while blocked");
    assert_eq!(frames.len(), 2, "a key share, then the message");
    assert_eq!(
        deliver_all(&alice, &bob, &addr, &frames).await,
        ["refused", "refused"],
        "no acknowledgement for a blocked user"
    );
    assert!(dm_texts(&bob, &alice).await.is_empty());

    // The block survives a restart.
    bob.shutdown().await.unwrap();
    let bob = start(&device, |_| {});
    let addr = listen_addr(&bob).await;
    assert_eq!(bob.blocked().await.unwrap(), vec![alice.user_id()]);
    assert_eq!(
        deliver_all(&alice, &bob, &addr, &frames).await,
        ["refused", "refused"]
    );
    assert!(dm_texts(&bob, &alice).await.is_empty(), "nothing stored");

    // Unblocked: the same frames, sent again, are taken and shown.
    bob.unblock(alice.user_id()).await.unwrap();
    assert!(bob.blocked().await.unwrap().is_empty());
    assert_eq!(
        deliver_all(&alice, &bob, &addr, &frames).await,
        ["ok", "ok"]
    );
    assert_eq!(dm_texts(&bob, &alice).await, ["while blocked"]);
    assert!(
        bob.unblock(alice.user_id()).await.is_err(),
        "unblocking someone not blocked is an error"
    );
}

#[tokio::test]
async fn a_blocked_users_room_messages_are_refused_and_unblock_restores() {
    let (_device, bob, addr, mut alice) = bob_and_puppet("alice").await;
    // Auto-accept: Alice's invitation joins at once.
    bob.set_auto_accept(alice.user_id(), true).await.unwrap();
    let (room, frames) = alice.create_room("club", &[bob.user_id()], bob.user_id(), 1);
    assert_eq!(
        deliver_all(&alice, &bob, &addr, &frames).await,
        ["ok", "ok"]
    );
    assert!(bob.invitations().await.unwrap().is_empty());
    assert_eq!(bob.rooms().await.unwrap()[0].room_id, room);

    bob.block(alice.user_id()).await.unwrap();
    let frames = alice.room_message(room, bob.user_id(), "blocked words");
    assert_eq!(
        deliver_all(&alice, &bob, &addr, &frames).await,
        vec!["refused"; frames.len()]
    );
    let texts = |bob: &safemeet_engine::Handle| {
        let bob = bob.clone();
        async move {
            bob.room_messages(room, 100)
                .await
                .unwrap()
                .into_iter()
                .map(|m| m.text)
                .collect::<Vec<_>>()
        }
    };
    assert!(texts(&bob).await.is_empty(), "nothing stored");

    bob.unblock(alice.user_id()).await.unwrap();
    assert_eq!(
        deliver_all(&alice, &bob, &addr, &frames).await,
        vec!["ok"; frames.len()]
    );
    assert_eq!(texts(&bob).await, ["blocked words"]);
}

#[tokio::test]
async fn a_removed_contact_is_refused_until_added_again() {
    let (_device, bob, addr, mut alice) = bob_and_puppet("alice").await;
    let first = alice.dm(bob.user_id(), "hello");
    assert_eq!(deliver_all(&alice, &bob, &addr, &first).await, ["ok", "ok"]);
    bob.remove_contact(alice.user_id()).await.unwrap();
    let after = alice.dm(bob.user_id(), "still here?");
    assert_eq!(after.len(), 1, "the session is shared already");
    assert_eq!(deliver_all(&alice, &bob, &addr, &after).await, ["refused"]);
    // Added again: taken.
    bob.add_contact(&alice.invite(), None).await.unwrap();
    assert_eq!(deliver_all(&alice, &bob, &addr, &after).await, ["ok"]);
    assert_eq!(dm_texts(&bob, &alice).await, ["hello", "still here?"]);
}

#[tokio::test]
async fn an_invitation_waits_for_consent_and_join_or_decline_settle_it() {
    let (_device, bob, addr, mut alice) = bob_and_puppet("alice").await;
    let (club, frames) = alice.create_room("club", &[bob.user_id()], bob.user_id(), 1);
    assert_eq!(
        deliver_all(&alice, &bob, &addr, &frames).await,
        ["ok", "ok"]
    );
    assert!(bob.rooms().await.unwrap().is_empty(), "not joined yet");
    let invitations = bob.invitations().await.unwrap();
    assert_eq!(invitations.len(), 1);
    assert_eq!(invitations[0].room_id, club);
    assert_eq!(invitations[0].name, "club");
    assert_eq!(invitations[0].from, alice.user_id());
    // The room's messages wait (their sender keeps them).
    let hello = alice.room_message(club, bob.user_id(), "welcome");
    assert_eq!(deliver_all(&alice, &bob, &addr, &hello).await, ["later"]);

    bob.room_join(club).await.unwrap();
    assert!(bob.invitations().await.unwrap().is_empty());
    assert_eq!(bob.rooms().await.unwrap()[0].room_id, club);
    assert_eq!(deliver_all(&alice, &bob, &addr, &hello).await, ["ok"]);
    let texts: Vec<String> = bob
        .room_messages(club, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert_eq!(texts, ["welcome"]);

    // Declined: dropped, not joined.
    let (other, frames) = alice.create_room("other", &[bob.user_id()], bob.user_id(), 2);
    assert_eq!(
        deliver_all(&alice, &bob, &addr, &frames).await,
        ["ok", "ok"]
    );
    assert_eq!(bob.invitations().await.unwrap().len(), 1);
    bob.room_decline(other).await.unwrap();
    assert!(bob.invitations().await.unwrap().is_empty());
    assert_eq!(bob.rooms().await.unwrap().len(), 1);
    assert!(bob.room_join(other).await.is_err(), "nothing left to join");
}

#[tokio::test]
async fn one_inviter_cannot_fill_the_invitation_list() {
    let (_device, bob, addr, mut alice) = bob_and_puppet("alice").await;
    let mut answers = Vec::new();
    for n in 0..safemeet_engine::MAX_INVITATIONS_PER_INVITER as u8 + 3 {
        let (_, frames) = alice.create_room("spam", &[bob.user_id()], bob.user_id(), n + 1);
        let got = deliver_all(&alice, &bob, &addr, &frames).await;
        answers.push(got.last().unwrap().clone());
    }
    let max = safemeet_engine::MAX_INVITATIONS_PER_INVITER;
    assert!(answers[..max].iter().all(|a| a == "ok"), "{answers:?}");
    assert!(answers[max..].iter().all(|a| a == "refused"), "{answers:?}");
    assert_eq!(bob.invitations().await.unwrap().len(), max);
    assert!(bob.rooms().await.unwrap().is_empty());
}

#[tokio::test]
async fn held_queue_junk_is_refused_from_strangers_and_bounded_per_contact() {
    let (_device, bob, addr, mut alice) = bob_and_puppet("alice").await;
    // Carol, another contact, floods made-up sessions under her own DM
    // key: each is "later", held within her quota.
    let mut carol = Puppet::spawn("carol").await;
    carol.add(&bob.invite().await.unwrap());
    bob.add_contact(&carol.invite(), Some("carol".into()))
        .await
        .unwrap();
    // Alice's message comes before its key (the key share is sent last):
    // held, waiting for the key.
    let frames = alice.dm(bob.user_id(), "held for its key");
    assert_eq!(frames.len(), 2);
    let (share, message) = (frames[0].clone(), frames[1].clone());
    assert_eq!(alice.deliver(bob.peer_id(), &addr, message).await, "later");

    // A stranger who knows both user ids seals junk under Alice and Bob's
    // DM key: refused, never held (a few, under the count that cuts a
    // peer off; see the next test).
    let mut mallory = Puppet::spawn("mallory").await;
    for n in 0..safemeet_net::junk::JUNK_BEFORE_BLOCK - 1 {
        let junk = mallory.junk_for_dm(alice.user_id(), bob.user_id(), n);
        assert_eq!(mallory.deliver(bob.peer_id(), &addr, junk).await, "refused");
    }
    // Carol, a contact, sends more made-up sessions than the whole held
    // queue has room for (256): "later", but only her own make room.
    for n in 0..300 {
        let junk = carol.junk_for_dm(carol.user_id(), bob.user_id(), n);
        let answer = carol.deliver(bob.peer_id(), &addr, junk).await;
        assert_eq!(answer, "later");
    }
    // The key share releases Alice's held message: stored without her
    // sending it again.
    assert_eq!(alice.deliver(bob.peer_id(), &addr, share).await, "ok");
    assert_eq!(dm_texts(&bob, &alice).await, ["held for its key"]);
    assert!(dm_texts(&bob, &carol).await.is_empty());
}

/// Bob's engine, and a puppet that took Bob's invite (Bob did not take
/// the puppet's).
async fn bob_and_stranger(
    adjust: impl FnOnce(&mut safemeet_engine::Config),
) -> (Device, safemeet_engine::Handle, Multiaddr) {
    let device = Device::new("bob", SystemClock.now());
    let bob = start(&device, adjust);
    let addr = listen_addr(&bob).await;
    (device, bob, addr)
}

async fn stranger(name: &str, bob: &safemeet_engine::Handle) -> Puppet {
    let mut puppet = Puppet::spawn(name).await;
    puppet.add(&bob.invite().await.unwrap());
    puppet
}

#[tokio::test]
async fn a_strangers_first_message_is_a_request_until_accepted_or_declined() {
    let (_device, bob, addr) = bob_and_stranger(|_| {}).await;
    let mut sam = stranger("sam", &bob).await;
    let intro = sam.introduce(bob.user_id());
    assert_eq!(sam.deliver(bob.peer_id(), &addr, intro).await, "ok");
    let dm = sam.dm(bob.user_id(), "hi bob, we met at the fair");
    assert_eq!(deliver_all(&sam, &bob, &addr, &dm).await, ["ok", "ok"]);
    let requests = bob.requests().await.unwrap();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].user_id, sam.user_id());
    assert_eq!(requests[0].username, "sam");
    assert_eq!(
        requests[0].frames, 3,
        "the introduction, the room key, the message"
    );
    assert!(
        bob.contacts().await.unwrap().is_empty(),
        "not a contact yet"
    );
    assert!(
        bob.dm_messages(sam.user_id(), 10).await.is_err(),
        "nothing shown yet"
    );

    bob.accept_request(sam.user_id()).await.unwrap();
    assert!(bob.requests().await.unwrap().is_empty());
    assert_eq!(bob.contacts().await.unwrap()[0].user_id, sam.user_id());
    assert_eq!(dm_texts(&bob, &sam).await, ["hi bob, we met at the fair"]);
    // A contact now: the next message goes straight in.
    let next = sam.dm(bob.user_id(), "thanks");
    assert_eq!(deliver_all(&sam, &bob, &addr, &next).await, ["ok"]);
    assert_eq!(dm_texts(&bob, &sam).await.len(), 2);

    // Declined: deleted, and what follows is not kept.
    let mut eve = stranger("eve", &bob).await;
    let intro = eve.introduce(bob.user_id());
    assert_eq!(eve.deliver(bob.peer_id(), &addr, intro).await, "ok");
    bob.decline_request(eve.user_id()).await.unwrap();
    assert!(bob.requests().await.unwrap().is_empty());
    let dm = eve.dm(bob.user_id(), "please?");
    assert_eq!(
        deliver_all(&eve, &bob, &addr, &dm).await,
        ["later", "later"]
    );
    assert!(bob.requests().await.unwrap().is_empty());
    assert_eq!(bob.contacts().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_flood_of_requests_stays_bounded_and_rate_limited() {
    let (_device, bob, addr) = bob_and_stranger(|c| {
        c.max_requests = 3;
        c.requests_per_hour = 5;
    })
    .await;
    let mut strangers = Vec::new();
    for i in 0..7 {
        strangers.push(stranger(&format!("s{i}"), &bob).await);
    }
    let users: Vec<_> = strangers.iter().map(Puppet::user_id).collect();
    let mut ask = async |i: usize| {
        let s = &mut strangers[i];
        let intro = s.introduce(bob.user_id());
        s.deliver(bob.peer_id(), &addr, intro).await
    };
    // Three fit; the fourth finds the list full.
    for i in 0..3 {
        assert_eq!(ask(i).await, "ok", "request {i}");
    }
    assert_eq!(ask(3).await, "refused", "the list is full");
    assert_eq!(bob.requests().await.unwrap().len(), 3);
    // Room again, but only five new requests an hour.
    let (u0, u1, u2) = (users[0], users[1], users[2]);
    bob.decline_request(u0).await.unwrap();
    assert_eq!(ask(3).await, "ok");
    bob.decline_request(u1).await.unwrap();
    assert_eq!(ask(4).await, "ok");
    bob.decline_request(u2).await.unwrap();
    assert_eq!(ask(5).await, "refused", "past five an hour");
    assert_eq!(bob.requests().await.unwrap().len(), 2);
    // A blocked user's request is refused whatever the room.
    bob.block(users[6]).await.unwrap();
    assert_eq!(ask(6).await, "refused");
}

#[tokio::test]
async fn blocking_deletes_a_pending_request_and_invitations() {
    let (_device, bob, addr, mut alice) = bob_and_puppet("alice").await;
    let (_, frames) = alice.create_room("club", &[bob.user_id()], bob.user_id(), 1);
    assert_eq!(
        deliver_all(&alice, &bob, &addr, &frames).await,
        ["ok", "ok"]
    );
    let mut sam = stranger("sam", &bob).await;
    let intro = sam.introduce(bob.user_id());
    assert_eq!(sam.deliver(bob.peer_id(), &addr, intro).await, "ok");
    assert_eq!(bob.invitations().await.unwrap().len(), 1);
    assert_eq!(bob.requests().await.unwrap().len(), 1);
    bob.block(alice.user_id()).await.unwrap();
    bob.block(sam.user_id()).await.unwrap();
    assert!(bob.invitations().await.unwrap().is_empty());
    assert!(bob.requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_peer_that_delivers_junk_is_cut_off_and_an_honest_one_served() {
    let (_device, bob, addr, mut alice) = bob_and_puppet("alice").await;
    let mut mallory = Puppet::spawn("mallory").await;
    let limit = safemeet_net::junk::JUNK_BEFORE_BLOCK;
    // Frames that do not decode, and frames under a DM key its sender
    // cannot hold: each refused, and each counted.
    for n in 0..limit - 1 {
        let junk = if n % 2 == 0 {
            vec![0xff; 2048]
        } else {
            mallory.junk_for_dm(alice.user_id(), bob.user_id(), n)
        };
        let answer = mallory.try_deliver(bob.peer_id(), &addr, junk).await;
        // (A frame that does not decode is dropped unanswered.)
        let want = if n % 2 == 0 { None } else { Some("refused") };
        assert_eq!(answer.as_deref().ok(), want, "junk {n}: {answer:?}");
    }
    // The next one (or the one after: the answer races the cut) closes
    // Mallory's connection, and a new one is refused.
    let more = mallory.junk_for_dm(alice.user_id(), bob.user_id(), 999);
    let cut_off = wait_until(
        "Mallory to be cut off",
        || mallory.try_deliver(bob.peer_id(), &addr, more.clone()),
        |answer| answer.is_err(),
    )
    .await;
    assert!(cut_off.is_err());
    // Alice, sending what an honest device sends, is served throughout.
    let frames = alice.dm(bob.user_id(), "still here");
    assert_eq!(
        deliver_all(&alice, &bob, &addr, &frames).await,
        ["ok", "ok"]
    );
    assert_eq!(dm_texts(&bob, &alice).await, ["still here"]);
}
