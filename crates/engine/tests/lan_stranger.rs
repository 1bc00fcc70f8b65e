//! A stranger on the same LAN: two engines with mDNS on (listening on
//! every interface) share a gossip room while a bare rust-libp2p peer
//! (`safemeet_test_utils::observer`, started with `spawn_on_lan`: mDNS,
//! identify, Kademlia, gossipsub that joins every topic it hears of)
//! finds both by mDNS and connects to them on its own. It must learn no
//! topic, never be grafted and get no frame.
//!
//! Multicast on this machine: libp2p-mdns skips loopback interfaces, so
//! this runs over the first non-loopback IPv4 interface, whose multicast
//! packets come back to the same host (the sockets set
//! `IP_MULTICAST_LOOP` and share port 5353 with `SO_REUSEPORT`). Tried in
//! the test sandbox (one `eth0` with the MULTICAST flag besides `lo`): two
//! nodes found each other within a second. A machine whose only interface
//! is loopback, or whose network drops multicast, finds nothing: the test
//! then fails on discovery, with that named, rather than passing
//! vacuously. Other mDNS nodes on the same network may be found and dialled
//! too; the assertions are about the two members only.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::time::Duration;

use safemeet_engine::LogEntry;
use safemeet_proto::clock::{Clock, SystemClock};
use safemeet_test_utils::observer::Observer;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(30);
/// Messages exchanged while the stranger watches.
const MESSAGES: usize = 20;

fn start(device: &safemeet_test_utils::Device) -> safemeet_engine::Handle {
    let config = safemeet_engine::Config {
        net: safemeet_net::Config {
            listen: vec!["/ip4/0.0.0.0/tcp/0".parse().unwrap()],
            mdns: true,
            ..safemeet_net::Config::loopback()
        },
        retry_initial: Duration::from_millis(100),
        retry_max: Duration::from_millis(500),
        gossip_grace: Duration::from_millis(500),
        // Every room goes by gossip: the case with a topic to leak.
        direct_room_max_devices: 0,
        auto_join_rooms: true,
        ..safemeet_engine::Config::default()
    };
    safemeet_engine::start(device.machine(), config).unwrap()
}

async fn texts(engine: &safemeet_engine::Handle, prefix: &str) -> usize {
    engine
        .events(0, 10_000)
        .await
        .unwrap()
        .into_iter()
        .filter(
            |(_, e)| matches!(e, LogEntry::Message { entry, .. } if entry.text.starts_with(prefix)),
        )
        .count()
}

async fn wait_until<F: std::future::Future<Output = bool>>(
    what: &str,
    mut check: impl FnMut() -> F,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    timeout(WAIT, async {
        while !check().await {
            tick.tick().await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting: {what}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_found_by_mdns_learns_nothing_of_a_gossip_room() {
    let now = SystemClock.now();
    let devices = [
        safemeet_test_utils::Device::new("alice", now),
        safemeet_test_utils::Device::new("bob", now),
    ];
    let alice = start(&devices[0]);
    let bob = start(&devices[1]);
    let stranger = Observer::spawn_on_lan();
    let (a, b) = (alice.peer_id(), bob.peer_id());
    assert!(
        stranger
            .wait_for(WAIT, |s| s.discovered.contains(&a)
                && s.discovered.contains(&b))
            .await,
        "mDNS: the stranger found neither or one member (is multicast working here?): {:?}",
        stranger.seen().discovered.len()
    );
    assert!(
        stranger
            .wait_for(WAIT, |s| s.protocols.contains_key(&a)
                && s.protocols.contains_key(&b))
            .await,
        "the stranger connected to both members and identified them"
    );

    safemeet_test_utils::befriend(&alice, &bob).await;
    let room = alice
        .create_room("lan party", vec![bob.user_id()])
        .await
        .unwrap();
    wait_until("bob joins", || async {
        !bob.rooms().await.unwrap().is_empty()
    })
    .await;
    wait_until("alice and bob form a gossip mesh", || async {
        alice.room_mesh_peers(room).await.unwrap() > 0
    })
    .await;
    for i in 0..MESSAGES {
        let (from, tag) = if i % 2 == 0 {
            (&alice, "a")
        } else {
            (&bob, "b")
        };
        from.send_room(room, &format!("lan {tag}{i}"))
            .await
            .unwrap();
    }
    wait_until("every message reaches the other member", || async {
        texts(&bob, "lan a").await == MESSAGES / 2 && texts(&alice, "lan b").await == MESSAGES / 2
    })
    .await;

    let seen = stranger.seen();
    assert!(seen.topics.is_empty(), "topics leaked: {:?}", seen.topics);
    assert_eq!(seen.messages, 0, "the stranger got room frames");
    assert!(!seen.grafted, "the stranger was grafted");
    for peer in [a, b] {
        assert!(seen.connected.contains(&peer), "still connected to both");
        assert!(
            !seen.protocols[&peer].iter().any(|p| p.contains("meshsub")),
            "gossipsub is not offered to a LAN stranger: {:?}",
            seen.protocols[&peer]
        );
    }
    assert_eq!(alice.room_mesh_peers(room).await.unwrap(), 1, "only bob");
    assert!(
        !alice
            .gossip_peers()
            .await
            .unwrap()
            .contains(&stranger.peer_id())
    );
}
