//! Two engines in one process, each with its own store and a real libp2p
//! node on 127.0.0.1: invites, DMs both ways, delivery states, a recipient
//! that is down when a message is sent, group sends, and room messages
//! over gossip with acknowledgements.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::time::Duration;

use safemeet_crypto::machine::CryptoMachine;
use safemeet_engine::{LogEntry, MessageState};
use safemeet_net::Config as NetConfig;
use safemeet_proto::UserId;
use safemeet_proto::clock::{Clock, SystemClock};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(30);

/// A device from the shared fixtures, with this file's engine settings.
struct Device(safemeet_test_utils::Device);

impl Device {
    fn new(name: &str) -> Self {
        Self(safemeet_test_utils::Device::new(name, SystemClock.now()))
    }

    fn start(&self, listen: &str) -> safemeet_engine::Handle {
        self.start_with_grace(listen, Duration::from_millis(500))
    }

    fn start_with_grace(&self, listen: &str, gossip_grace: Duration) -> safemeet_engine::Handle {
        self.start_with(listen, |c| c.gossip_grace = gossip_grace)
    }

    /// Starts with the test settings as `adjust` changes them.
    fn start_with(
        &self,
        listen: &str,
        adjust: impl FnOnce(&mut safemeet_engine::Config),
    ) -> safemeet_engine::Handle {
        let machine = self.0.machine();
        let mut config = safemeet_engine::Config {
            net: NetConfig {
                listen: vec![listen.parse().unwrap()],
                ..NetConfig::loopback()
            },
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_millis(500),
            gossip_grace: Duration::from_millis(500),
            auto_join_rooms: true,
            ..safemeet_engine::Config::default()
        };
        adjust(&mut config);
        safemeet_engine::start(machine, config).unwrap()
    }
}

/// Waits until `engine`'s event log holds a message with `text`.
async fn wait_for_message(engine: &safemeet_engine::Handle, text: &str) -> UserId {
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    timeout(WAIT, async {
        loop {
            tick.tick().await;
            for (_, entry) in engine.events(0, 1000).await.unwrap() {
                if let LogEntry::Message { entry, .. } = entry
                    && entry.text == text
                {
                    return entry.sender;
                }
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{text:?} never arrived"))
}

/// The texts of the messages in `engine`'s event log that start with
/// `prefix`, in log order.
async fn texts_in_log(engine: &safemeet_engine::Handle, prefix: &str) -> Vec<String> {
    engine
        .events(0, 10_000)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|(_, e)| match e {
            LogEntry::Message { entry, .. } if entry.text.starts_with(prefix) => Some(entry.text),
            _ => None,
        })
        .collect()
}

async fn wait_delivered(engine: &safemeet_engine::Handle, with: UserId, text: &str) {
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    timeout(WAIT, async {
        loop {
            tick.tick().await;
            let done = engine
                .dm_messages(with, 100)
                .await
                .unwrap()
                .iter()
                .any(|m| m.text == text && m.state == MessageState::Delivered);
            if done {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{text:?} was never marked delivered"));
}

async fn befriend(a: &safemeet_engine::Handle, b: &safemeet_engine::Handle) {
    // Wait until both listen, so the invites carry addresses.
    for e in [a, b] {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        timeout(WAIT, async {
            while e.listen_addrs().await.unwrap().is_empty() {
                tick.tick().await;
            }
        })
        .await
        .unwrap();
    }
    let ia = a.invite().await.unwrap();
    let ib = b.invite().await.unwrap();
    assert!(ia.starts_with("safemeet:"));
    assert_eq!(
        a.add_contact(&ib, Some("bob".into())).await.unwrap(),
        b.user_id()
    );
    assert_eq!(b.add_contact(&ia, None).await.unwrap(), a.user_id());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dm_both_ways_with_delivery_states() {
    let (alice_dev, bob_dev) = (Device::new("alice"), Device::new("bob"));
    let alice = alice_dev.start("/ip4/127.0.0.1/tcp/0");
    let bob = bob_dev.start("/ip4/127.0.0.1/tcp/0");
    befriend(&alice, &bob).await;

    alice.send_dm(bob.user_id(), "hello bob").await.unwrap();
    assert_eq!(wait_for_message(&bob, "hello bob").await, alice.user_id());
    wait_delivered(&alice, bob.user_id(), "hello bob").await;

    bob.send_dm(alice.user_id(), "hi alice").await.unwrap();
    assert_eq!(wait_for_message(&alice, "hi alice").await, bob.user_id());
    wait_delivered(&bob, alice.user_id(), "hi alice").await;

    // Both timelines hold both messages, each once.
    for (me, other) in [(&alice, bob.user_id()), (&bob, alice.user_id())] {
        let texts: Vec<String> = me
            .dm_messages(other, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.text)
            .collect();
        assert_eq!(texts, ["hello bob", "hi alice"], "{me:?}");
    }
    // Input checks.
    assert!(alice.send_dm(alice.user_id(), "to myself").await.is_err());
    assert!(alice.add_contact("not an invite", None).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_to_a_device_that_is_down_arrives_once_it_is_up() {
    let (alice_dev, bob_dev) = (Device::new("alice"), Device::new("bob"));
    let alice = alice_dev.start("/ip4/127.0.0.1/tcp/0");
    let bob = bob_dev.start("/ip4/127.0.0.1/tcp/0");
    befriend(&alice, &bob).await;
    let bob_addr = bob.listen_addrs().await.unwrap().remove(0);
    bob.shutdown().await.unwrap();

    alice
        .send_dm(bob.user_id(), "while you were away")
        .await
        .unwrap();
    // Bob comes back on the same address; Alice's retries reach him.
    let bob = bob_dev.start(&bob_addr.to_string());
    assert_eq!(
        wait_for_message(&bob, "while you were away").await,
        alice.user_id()
    );
    wait_delivered(&alice, bob.user_id(), "while you were away").await;
    let received: Vec<_> = bob
        .events(0, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|(_, e)| matches!(e, LogEntry::Message { entry, .. } if entry.text == "while you were away"))
        .collect();
    assert_eq!(received.len(), 1, "delivered exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_sends_at_once_share_flushes_and_each_arrives_once() {
    let (alice_dev, bob_dev) = (Device::new("alice"), Device::new("bob"));
    let alice = alice_dev.start("/ip4/127.0.0.1/tcp/0");
    let bob = bob_dev.start("/ip4/127.0.0.1/tcp/0");
    befriend(&alice, &bob).await;
    let room = alice
        .create_room("pair", vec![bob.user_id()])
        .await
        .unwrap();

    // 300 sends outstanding at once, to the DM and to the room.
    let mut sends = tokio::task::JoinSet::new();
    for i in 0..300 {
        let alice = alice.clone();
        let bob_id = bob.user_id();
        sends.spawn(async move {
            if i % 2 == 0 {
                alice.send_dm(bob_id, &format!("m{i}")).await
            } else {
                alice.send_room(room, &format!("m{i}")).await
            }
        });
    }
    let mut ids = std::collections::HashSet::new();
    while let Some(done) = sends.join_next().await {
        assert!(ids.insert(done.unwrap().unwrap()), "event ids are unique");
    }
    assert_eq!(ids.len(), 300);
    // Bad input in a group fails alone.
    assert!(
        alice
            .send_dm(UserId::from_bytes([9; 32]), "lost")
            .await
            .is_err()
    );

    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let texts = timeout(WAIT, async {
        loop {
            tick.tick().await;
            let texts = texts_in_log(&bob, "").await;
            if texts.len() >= 300 {
                return texts;
            }
        }
    })
    .await
    .expect("every message arrived");
    let distinct: std::collections::HashSet<&String> = texts.iter().collect();
    assert_eq!(distinct.len(), 300, "each message once");
    assert_eq!(texts.len(), 300, "no message twice");
    let dm = alice.dm_messages(bob.user_id(), 1000).await.unwrap();
    assert_eq!(dm.len(), 150);
}

/// Creates a room of Alice and Bob (both started with every room on
/// gossip) and waits until Alice's messages reach Bob over gossip (Bob joined, and his subscription reached Alice).
async fn gossip_room(
    alice: &safemeet_engine::Handle,
    bob: &safemeet_engine::Handle,
) -> safemeet_proto::RoomId {
    let room = alice
        .create_room("gossip", vec![bob.user_id()])
        .await
        .unwrap();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    timeout(WAIT, async {
        while bob.rooms().await.unwrap().is_empty() {
            tick.tick().await;
        }
    })
    .await
    .expect("bob joined");
    // Bob's subscription has to reach Alice before gossip flows: probe.
    let mut probes = 0;
    timeout(WAIT, async {
        loop {
            alice
                .send_room(room, &format!("probe {probes}"))
                .await
                .unwrap();
            probes += 1;
            tick.tick().await;
            let got = bob.events(0, 1000).await.unwrap().into_iter().any(|(_, e)| {
                matches!(e, LogEntry::Message { entry, .. } if entry.text.starts_with("probe"))
            });
            if got {
                return;
            }
        }
    })
    .await
    .expect("gossip reached bob");

    room
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_messages_travel_over_gossip_and_are_acknowledged() {
    // Alice delivers room messages directly only after 10 minutes: what
    // arrives sooner came over gossip, and "delivered" sooner means Bob's
    // acknowledgement came back.
    let (alice_dev, bob_dev) = (Device::new("alice"), Device::new("bob"));
    let alice = alice_dev.start_with("/ip4/127.0.0.1/tcp/0", |c| {
        c.gossip_grace = Duration::from_secs(600);
        c.direct_room_max_devices = 0;
    });
    let bob = bob_dev.start_with("/ip4/127.0.0.1/tcp/0", |c| c.direct_room_max_devices = 0);
    befriend(&alice, &bob).await;
    let room = gossip_room(&alice, &bob).await;

    let mut tick = tokio::time::interval(Duration::from_millis(100));
    alice.send_room(room, "over gossip").await.unwrap();
    assert_eq!(wait_for_message(&bob, "over gossip").await, alice.user_id());
    timeout(WAIT, async {
        loop {
            tick.tick().await;
            let done = alice
                .room_messages(room, 100)
                .await
                .unwrap()
                .iter()
                .any(|m| m.text == "over gossip" && m.state == MessageState::Delivered);
            if done {
                return;
            }
        }
    })
    .await
    .expect("bob's acknowledgement marked it delivered");
    let copies = bob
        .events(0, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(
            |(_, e)| matches!(e, LogEntry::Message { entry, .. } if entry.text == "over gossip"),
        )
        .count();
    assert_eq!(copies, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_room_messages_arrives_over_gossip_without_the_fallback() {
    const WINDOW: usize = 32;
    // Alice sends a burst, and Bob queues at most 64 network events (more
    // are dropped). Direct delivery would only start after 10 minutes, so
    // everything that arrives in time came over gossip: Alice's window of
    // 32 unacknowledged messages kept Bob's queue from overflowing.
    let (alice_dev, bob_dev) = (Device::new("alice"), Device::new("bob"));
    let alice = alice_dev.start_with("/ip4/127.0.0.1/tcp/0", |c| {
        c.gossip_grace = Duration::from_secs(600);
        c.gossip_window = WINDOW;
        c.direct_room_max_devices = 0;
    });
    let bob = bob_dev.start_with("/ip4/127.0.0.1/tcp/0", |c| {
        c.net.event_queue = 64;
        c.direct_room_max_devices = 0;
    });
    befriend(&alice, &bob).await;
    let room = gossip_room(&alice, &bob).await;

    const BURST: usize = 2000;
    let mut sends = tokio::task::JoinSet::new();
    let mut issued = 0;
    while issued < BURST || !sends.is_empty() {
        while issued < BURST && sends.len() < 512 {
            let alice = alice.clone();
            sends.spawn(async move { alice.send_room(room, &format!("burst {issued}")).await });
            issued += 1;
        }
        if let Some(done) = sends.join_next().await {
            done.unwrap().unwrap();
        }
    }
    // Counts the burst's messages in Bob's log: (all, distinct).
    let count = || async {
        let texts = texts_in_log(&bob, "burst").await;
        let distinct: std::collections::HashSet<&String> = texts.iter().collect();
        (texts.len(), distinct.len())
    };
    let mut log = bob.log_watch();
    timeout(WAIT, async {
        // The log holds at least the burst before it is worth counting.
        log.wait_for(|next| *next >= BURST as u64).await.unwrap();
        while count().await.1 < BURST {
            log.changed().await.unwrap();
        }
    })
    .await
    .expect("the whole burst arrived over gossip");
    assert_eq!(
        count().await,
        (BURST, BURST),
        "each message of the burst, once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_sides_show_one_order_whatever_the_arrival_order() {
    let (alice_dev, bob_dev) = (Device::new("alice"), Device::new("bob"));
    let alice = alice_dev.start("/ip4/127.0.0.1/tcp/0");
    let bob = bob_dev.start("/ip4/127.0.0.1/tcp/0");
    befriend(&alice, &bob).await;
    // Sent at the same time: each side has its own first, by arrival.
    let (a, b) = tokio::join!(
        alice.send_dm(bob.user_id(), "from alice"),
        bob.send_dm(alice.user_id(), "from bob")
    );
    a.unwrap();
    b.unwrap();
    wait_for_message(&alice, "from bob").await;
    wait_for_message(&bob, "from alice").await;
    // After both: a higher Lamport time, so last everywhere.
    alice.send_dm(bob.user_id(), "after both").await.unwrap();
    wait_for_message(&bob, "after both").await;

    let order = |entries: Vec<safemeet_engine::TimelineEntry>| -> Vec<String> {
        entries.into_iter().map(|m| m.text).collect()
    };
    let at_alice = order(alice.dm_messages(bob.user_id(), 10).await.unwrap());
    let at_bob = order(bob.dm_messages(alice.user_id(), 10).await.unwrap());
    assert_eq!(at_alice.len(), 3);
    assert_eq!(at_alice, at_bob, "one order on both sides");
    assert_eq!(at_alice[2], "after both");
}

/// A contact of Bob's driving a bare crypto machine and network node, so
/// it can send what the engine never would.
struct Mallory {
    machine: CryptoMachine<safemeet_test_utils::FaultyStore>,
    net: safemeet_net::Handle,
    _events: tokio::sync::mpsc::Receiver<safemeet_net::Event>,
    _device: Device,
}

impl Mallory {
    /// Mallory and Bob become contacts; Mallory opens an Olm session to Bob.
    async fn befriend(bob: &safemeet_engine::Handle) -> Self {
        use safemeet_engine::Invite;
        let device = Device::new("mallory");
        let mut machine = device.0.machine();
        let (net, events) = safemeet_net::spawn(
            machine.account().libp2p_keypair().clone(),
            NetConfig::loopback(),
        )
        .unwrap();
        let fallback_key = machine.fallback_key(SystemClock.now()).unwrap();
        let account = machine.account();
        let invite = Invite {
            version: safemeet_engine::INVITE_VERSION,
            device_list: account.device_list().signed().clone(),
            certificates: vec![account.certificate().clone()],
            fallback_key,
            profile: account.profile().signed().clone(),
            addrs: vec![],
            relays: None,
        };
        bob.add_contact(&invite.to_text().unwrap(), Some("mallory".into()))
            .await
            .unwrap();
        let bob_invite = Invite::from_text(&bob.invite().await.unwrap()).unwrap();
        machine
            .add_device_list(&bob_invite.device_list, &bob_invite.certificates)
            .unwrap();
        let bob_device = bob_invite.fallback_key.decode_body().unwrap().device_id;
        machine
            .create_outbound_session(&bob_device, &bob_invite.fallback_key, SystemClock.now())
            .unwrap();
        Self {
            machine,
            net,
            _events: events,
            _device: device,
        }
    }

    /// Sends `text` in `room` at Lamport time `lamport` straight to Bob;
    /// returns Bob's answers (key shares first, the message last).
    async fn send(
        &mut self,
        bob: &safemeet_engine::Handle,
        room: safemeet_proto::RoomId,
        lamport: u64,
        text: &str,
    ) -> Vec<Vec<u8>> {
        use safemeet_crypto::machine::RoomMessage;
        use safemeet_proto::event::{EventContent, Message, MessageText};
        let members = [self.machine.account().user_id(), bob.user_id()];
        let batch = self.machine.store().batch();
        // Sealed under the DM's header key, which Bob opens.
        let (_, dm_topic) = safemeet_proto::room::dm_room(&members[0], &members[1]);
        let header = safemeet_proto::header::HeaderKey::for_dm(&dm_topic);
        let sent = self
            .machine
            .encrypt_room_event(
                RoomMessage {
                    room_id: room,
                    topic: dm_topic.clone(),
                    header: &header,
                    members: &members,
                    content: EventContent::Message(Message {
                        body: MessageText::new(text).unwrap(),
                        reply_to: None,
                    }),
                    lamport,
                },
                SystemClock.now(),
                batch,
                b"",
            )
            .unwrap();
        let addrs = bob.listen_addrs().await.unwrap();
        let mut answers = Vec::new();
        for out in sent.key_shares.iter().chain([&sent.message]) {
            let frame = out.frame().unwrap();
            let answer = timeout(WAIT, self.net.deliver(bob.peer_id(), addrs.clone(), frame))
                .await
                .unwrap()
                .unwrap();
            answers.push(answer);
        }
        answers
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_cannot_write_into_a_dm_between_others() {
    let (alice_dev, bob_dev) = (Device::new("alice"), Device::new("bob"));
    let alice = alice_dev.start("/ip4/127.0.0.1/tcp/0");
    let bob = bob_dev.start("/ip4/127.0.0.1/tcp/0");
    befriend(&alice, &bob).await;
    alice.send_dm(bob.user_id(), "hello bob").await.unwrap();
    wait_for_message(&bob, "hello bob").await;

    // Mallory shares a room key naming the Alice–Bob DM, then writes in it.
    let mut mallory = Mallory::befriend(&bob).await;
    let dm = safemeet_engine::dm_room_id(&alice.user_id(), &bob.user_id());
    let answers = mallory.send(&bob, dm, 1, "from mallory").await;
    assert_eq!(
        answers.first().map(Vec::as_slice),
        Some(&b"ok"[..]),
        "the key share"
    );
    assert_eq!(
        answers.last().map(Vec::as_slice),
        Some(&b"refused"[..]),
        "the message"
    );
    let texts: Vec<String> = bob
        .dm_messages(alice.user_id(), 10)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert_eq!(
        texts,
        ["hello bob"],
        "nothing from mallory in the DM with alice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lamport_time_far_ahead_is_refused_and_sending_goes_on() {
    let bob_dev = Device::new("bob");
    let bob = bob_dev.start("/ip4/127.0.0.1/tcp/0");
    timeout(WAIT, async {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        while bob.listen_addrs().await.unwrap().is_empty() {
            tick.tick().await;
        }
    })
    .await
    .unwrap();
    let mut mallory = Mallory::befriend(&bob).await;
    let mallory_id = mallory.machine.account().user_id();
    let dm = safemeet_engine::dm_room_id(&mallory_id, &bob.user_id());
    let answers = mallory.send(&bob, dm, u64::MAX, "the end of time").await;
    assert_eq!(answers.last().map(Vec::as_slice), Some(&b"refused"[..]));
    let answers = mallory.send(&bob, dm, 2, "a fair time").await;
    assert_eq!(answers.last().map(Vec::as_slice), Some(&b"ok"[..]));
    // Bob's engine still runs and can answer.
    bob.send_dm(mallory_id, "still here").await.unwrap();
    let texts: Vec<String> = bob
        .dm_messages(mallory_id, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert_eq!(texts, ["a fair time", "still here"]);
}
