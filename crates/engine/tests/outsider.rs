//! What an outsider learns about a room: two engines on 127.0.0.1 (real
//! TCP, Noise, yamux) share a room while a bare rust-libp2p observer
//! (`safemeet_test_utils::observer`: identify, Kademlia, gossipsub that
//! joins every topic it hears of) is connected to both. It must learn no
//! topic, never be grafted and get no frame, whether the room goes by
//! direct fan-out (small) or by gossip (forced with the config override),
//! and a stranger that floods gossip at the members disturbs nothing.
//!
//! The observer dials the engines directly. mDNS would only be another way
//! for it to find and dial them: a LAN peer gets the same connection and
//! the same gate. `lan_stranger.rs` has a stranger that finds the members
//! by mDNS itself.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::time::Duration;

use safemeet_engine::LogEntry;
use safemeet_net::Config as NetConfig;
use safemeet_proto::RoomId;
use safemeet_proto::clock::{Clock, SystemClock};
use safemeet_test_utils::observer::Observer;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(30);
/// Messages exchanged while the observer watches.
const MESSAGES: usize = 20;

fn start(
    device: &safemeet_test_utils::Device,
    adjust: impl FnOnce(&mut safemeet_engine::Config),
) -> safemeet_engine::Handle {
    let mut config = safemeet_engine::Config {
        net: NetConfig::loopback(),
        retry_initial: Duration::from_millis(100),
        retry_max: Duration::from_millis(500),
        gossip_grace: Duration::from_millis(500),
        auto_join_rooms: true,
        ..safemeet_engine::Config::default()
    };
    adjust(&mut config);
    safemeet_engine::start(device.machine(), config).unwrap()
}

async fn listen_addr(engine: &safemeet_engine::Handle) -> libp2p::Multiaddr {
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    timeout(WAIT, async {
        loop {
            if let Some(a) = engine.listen_addrs().await.unwrap().into_iter().next() {
                return safemeet_net::dialable(&a, engine.peer_id());
            }
            tick.tick().await;
        }
    })
    .await
    .expect("the engine listens")
}

/// The texts in `engine`'s event log that start with `prefix`.
async fn texts(engine: &safemeet_engine::Handle, prefix: &str) -> Vec<String> {
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

/// Alice and Bob, contacts, in a room; an observer connected to both
/// before the room exists. `gossip`: every room goes by gossip.
struct Scene {
    alice: safemeet_engine::Handle,
    bob: safemeet_engine::Handle,
    room: RoomId,
    observer: Observer,
    _devices: [safemeet_test_utils::Device; 2],
}

async fn scene(gossip: bool) -> Scene {
    let now = SystemClock.now();
    let devices = [
        safemeet_test_utils::Device::new("alice", now),
        safemeet_test_utils::Device::new("bob", now),
    ];
    let adjust = |c: &mut safemeet_engine::Config| {
        if gossip {
            c.direct_room_max_devices = 0;
        }
    };
    let alice = start(&devices[0], adjust);
    let bob = start(&devices[1], adjust);
    let observer = Observer::spawn();
    for engine in [&alice, &bob] {
        observer.dial(listen_addr(engine).await).await;
    }
    let (a, b) = (alice.peer_id(), bob.peer_id());
    assert!(
        observer
            .wait_for(WAIT, |s| s.protocols.contains_key(&a)
                && s.protocols.contains_key(&b))
            .await,
        "the observer is connected to both and identified them"
    );
    safemeet_test_utils::befriend(&alice, &bob).await;
    let room = alice
        .create_room("secret club", vec![bob.user_id()])
        .await
        .unwrap();
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    timeout(WAIT, async {
        while bob.rooms().await.unwrap().is_empty() {
            tick.tick().await;
        }
    })
    .await
    .expect("bob joined");
    Scene {
        alice,
        bob,
        room,
        observer,
        _devices: devices,
    }
}

/// Alice and Bob send [`MESSAGES`] between them; waits until each has the
/// other's.
async fn talk(s: &Scene, tag: &str) {
    for i in 0..MESSAGES {
        let (from, prefix) = if i % 2 == 0 {
            (&s.alice, "a")
        } else {
            (&s.bob, "b")
        };
        from.send_room(s.room, &format!("{tag} {prefix}{i}"))
            .await
            .unwrap();
    }
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    timeout(WAIT, async {
        loop {
            let at_bob = texts(&s.bob, &format!("{tag} a")).await.len();
            let at_alice = texts(&s.alice, &format!("{tag} b")).await.len();
            if at_bob == MESSAGES / 2 && at_alice == MESSAGES / 2 {
                return;
            }
            tick.tick().await;
        }
    })
    .await
    .expect("every message reached the other member");
}

/// The observer learned nothing about the room, and was connected to both
/// members all along (it was not simply cut off).
fn learned_nothing(s: &Scene) {
    let seen = s.observer.seen();
    assert!(seen.topics.is_empty(), "topics leaked: {:?}", seen.topics);
    assert_eq!(seen.messages, 0, "the observer got room frames");
    assert!(!seen.grafted, "the observer was grafted");
    for peer in [s.alice.peer_id(), s.bob.peer_id()] {
        assert!(seen.connected.contains(&peer), "still connected to both");
        assert!(
            !seen.protocols[&peer].iter().any(|p| p.contains("meshsub")),
            "gossipsub is not even offered to a stranger: {:?}",
            seen.protocols[&peer]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outsider_learns_nothing_of_a_small_room_sent_by_direct_fan_out() {
    let s = scene(false).await;
    talk(&s, "fan-out").await;
    learned_nothing(&s);
    assert_eq!(
        s.alice.room_mesh_peers(s.room).await.unwrap(),
        0,
        "a small room has no gossip mesh"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outsider_learns_nothing_of_a_room_on_gossip() {
    let s = scene(true).await;
    // The members gossip with each other (the gate lets them).
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    timeout(WAIT, async {
        while s.alice.room_mesh_peers(s.room).await.unwrap() == 0 {
            tick.tick().await;
        }
    })
    .await
    .expect("alice and bob form a gossip mesh");
    talk(&s, "gossip").await;
    learned_nothing(&s);
    assert_eq!(s.alice.room_mesh_peers(s.room).await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_flooding_gossip_gets_nothing_and_disturbs_no_member() {
    let s = scene(true).await;
    // The stranger subscribes to thousands of topics and publishes on
    // them, over and over: its gossipsub streams are refused outright.
    for i in 0..2000u32 {
        let topic = format!("{i:064x}");
        s.observer.subscribe(topic.clone()).await;
        if i % 10 == 0 {
            s.observer.publish(topic, vec![7; 600]).await;
        }
    }
    let (a, b) = (s.alice.peer_id(), s.bob.peer_id());
    assert!(
        s.observer
            .wait_for(WAIT, |seen| seen.gossip_refused.contains(&a)
                && seen.gossip_refused.contains(&b))
            .await,
        "both members refused the stranger's gossipsub streams"
    );
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    timeout(WAIT, async {
        while s.alice.room_mesh_peers(s.room).await.unwrap() == 0 {
            tick.tick().await;
        }
    })
    .await
    .expect("alice and bob form a gossip mesh");
    talk(&s, "flooded").await;
    learned_nothing(&s);
    assert_eq!(s.alice.room_mesh_peers(s.room).await.unwrap(), 1);
    assert_eq!(s.bob.room_mesh_peers(s.room).await.unwrap(), 1);
}
