//! Two real libp2p nodes on 127.0.0.1 (TCP, Noise, yamux): direct delivery
//! with replies, gossip on a room topic, and malformed or oversized frames
//! refused while the node keeps serving; also over QUIC and over the
//! in-process memory transport.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};
use safemeet_net::{Config, DeliveryFailure, Error, ErrorKind, Event, Handle, RoomTopic, Verdict};
use safemeet_proto::Envelope;
use safemeet_proto::envelope::SealedRoomEnvelope;
use tokio::sync::mpsc;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(20);

fn frame(tag: u8) -> Vec<u8> {
    Envelope::Room(SealedRoomEnvelope {
        nonce: [1; 24],
        hint: [2; 8],
        sealed: vec![tag; 100],
    })
    .to_frame()
    .unwrap()
}

async fn node() -> (Handle, mpsc::Receiver<Event>, Multiaddr) {
    node_on(Config::loopback()).await
}

async fn node_on(config: Config) -> (Handle, mpsc::Receiver<Event>, Multiaddr) {
    let (net, mut events) = safemeet_net::spawn(Keypair::generate_ed25519(), config).unwrap();
    let addr = timeout(WAIT, async {
        loop {
            if let Some(Event::Listening(addr)) = events.recv().await {
                return addr;
            }
        }
    })
    .await
    .expect("the node listens");
    (net, events, addr)
}

fn with_peer(addr: &Multiaddr, peer: PeerId) -> Multiaddr {
    addr.clone().with(libp2p::multiaddr::Protocol::P2p(peer))
}

/// What [`serve`] saw.
#[derive(Debug)]
enum Seen {
    Delivery { peer: PeerId, frame: Vec<u8> },
    Gossip { topic: RoomTopic, frame: Vec<u8> },
}

/// Answers every delivery with `ok:` and the frame's length, accepts every
/// gossip message; forwards the frames it saw.
fn serve(net: Handle, mut events: mpsc::Receiver<Event>) -> mpsc::Receiver<Seen> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            let seen = match event {
                Event::Delivery { peer, frame, reply } => {
                    let answer = format!("ok:{}", frame.len()).into_bytes();
                    reply.send(answer).unwrap();
                    Seen::Delivery { peer, frame }
                }
                Event::Gossip {
                    topic,
                    frame,
                    id,
                    via,
                } => {
                    net.report(id, via, Verdict::Accept).await.unwrap();
                    Seen::Gossip { topic, frame }
                }
                _ => continue,
            };
            if tx.send(seen).await.is_err() {
                break;
            }
        }
    });
    rx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_delivery_is_answered() {
    let (a, _a_events, _) = node().await;
    let (b, b_events, b_addr) = node().await;
    let mut b_seen = serve(b.clone(), b_events);
    let reply = timeout(WAIT, a.deliver(b.peer_id(), vec![b_addr.clone()], frame(7)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply, b"ok:2048");
    let from = timeout(WAIT, async {
        loop {
            if let Some(Seen::Delivery { peer, frame: f }) = b_seen.recv().await {
                assert_eq!(f, frame(7));
                return peer;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(from, a.peer_id());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_frames_are_refused_and_the_node_keeps_serving() {
    let (a, _a_events, _) = node().await;
    let (b, b_events, b_addr) = node().await;
    let mut b_seen = serve(b.clone(), b_events);
    // Not a padded envelope: refused (the request fails), never shown to B's application.
    let err = timeout(
        WAIT,
        a.deliver(b.peer_id(), vec![b_addr.clone()], vec![0xff; 600]),
    )
    .await
    .unwrap()
    .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Delivery {
                failure: DeliveryFailure::Refused,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.kind(), ErrorKind::Refused);
    assert!(!err.is_unreachable());
    // Too large: refused before anything is sent.
    let err = a
        .deliver(b.peer_id(), vec![b_addr.clone()], vec![0; 70 * 1024])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }), "{err:?}");
    // A good frame still goes through, and it is the only one B's application saw.
    let reply = timeout(WAIT, a.deliver(b.peer_id(), vec![b_addr], frame(9)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply, b"ok:2048");
    let first = timeout(WAIT, async {
        loop {
            if let Some(Seen::Delivery { frame, .. }) = b_seen.recv().await {
                return frame;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(first, frame(9));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_cannot_be_reached_is_reported_unreachable() {
    let (a, _a_events, _) = node().await;
    // No address at all, and an address nobody listens on.
    let nowhere: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
    for addrs in [vec![], vec![nowhere]] {
        let err = timeout(WAIT, a.deliver(PeerId::random(), addrs, frame(1)))
            .await
            .unwrap()
            .unwrap_err();
        assert!(err.is_unreachable(), "{err:?}");
        assert!(
            matches!(
                err,
                Error::Delivery {
                    failure: DeliveryFailure::Unreachable,
                    ..
                }
            ),
            "{err:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gossip_reaches_a_subscribed_peer_and_garbage_does_not() {
    let (a, _a_events, _) = node().await;
    let (b, b_events, b_addr) = node().await;
    let mut b_seen = serve(b.clone(), b_events);
    let topic = RoomTopic::from_bytes([42; 32]);
    a.subscribe(topic.clone()).await.unwrap();
    b.subscribe(topic.clone()).await.unwrap();
    a.allow_gossip(vec![b.peer_id()]).await.unwrap();
    b.allow_gossip(vec![a.peer_id()]).await.unwrap();
    a.dial(with_peer(&b_addr, b.peer_id())).await.unwrap();

    // Garbage first: it is rejected by B's network layer.
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let garbage_sent = timeout(WAIT, async {
        let mut n = 0u8;
        loop {
            tick.tick().await;
            n = n.wrapping_add(1);
            match a.publish(topic.clone(), vec![n; 300]).await {
                Ok(()) => return,
                Err(Error::NoPeers) => continue,
                Err(e) => panic!("publish failed: {e}"),
            }
        }
    })
    .await;
    assert!(garbage_sent.is_ok(), "B never joined the topic");
    a.publish(topic.clone(), frame(5)).await.unwrap();
    let got = timeout(WAIT, async {
        loop {
            if let Some(Seen::Gossip { topic: t, frame }) = b_seen.recv().await {
                return (t, frame);
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(
        got,
        (topic, frame(5)),
        "the first gossip B's application sees is the good frame"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_delivery_over_quic() {
    let quic = || Config {
        listen: vec!["/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap()],
        ..Config::loopback()
    };
    let (a, _a_events) = safemeet_net::spawn(Keypair::generate_ed25519(), quic()).unwrap();
    let (b, mut b_events) = safemeet_net::spawn(Keypair::generate_ed25519(), quic()).unwrap();
    let b_addr = timeout(WAIT, async {
        loop {
            if let Some(Event::Listening(addr)) = b_events.recv().await {
                return addr;
            }
        }
    })
    .await
    .unwrap();
    assert!(b_addr.to_string().contains("quic-v1"), "{b_addr}");
    let _b_seen = serve(b.clone(), b_events);
    let reply = timeout(WAIT, a.deliver(b.peer_id(), vec![b_addr], frame(3)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply, b"ok:2048");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_and_gossip_over_the_memory_transport() {
    let memory = |port: u64| Config {
        listen: vec![format!("/memory/{port}").parse().unwrap()],
        ..Config::loopback()
    };
    // Ports unique to this process run.
    let base = u64::from(std::process::id()) * 1000 + 7;
    let (a, a_events, _) = node_on(memory(base)).await;
    let (b, b_events, b_addr) = node_on(memory(base + 1)).await;
    assert!(b_addr.to_string().starts_with("/memory/"), "{b_addr}");
    let mut b_seen = serve(b.clone(), b_events);
    let _a_seen = serve(a.clone(), a_events);
    let reply = timeout(WAIT, a.deliver(b.peer_id(), vec![b_addr.clone()], frame(5)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply, b"ok:2048");

    let topic = RoomTopic::from_bytes([3; 32]);
    a.subscribe(topic.clone()).await.unwrap();
    b.subscribe(topic.clone()).await.unwrap();
    // Allowed while connected (by the delivery): the gate reconnects.
    a.allow_gossip(vec![b.peer_id()]).await.unwrap();
    b.allow_gossip(vec![a.peer_id()]).await.unwrap();
    // Publish until B is known to be subscribed, then expect the frame.
    let got = timeout(WAIT, async {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let mut n = 0u8;
        loop {
            tick.tick().await;
            n = n.wrapping_add(1);
            let _ = a.publish(topic.clone(), frame(n)).await;
            while let Ok(event) = b_seen.try_recv() {
                if let Seen::Gossip { frame, .. } = event {
                    return frame;
                }
            }
        }
    })
    .await
    .expect("gossip over the memory transport");
    assert_eq!(got.len(), 2048);
}
