//! Gossip abuse from peers the node lets gossip (a member's device gone
//! bad, or a stolen one): a subscription flood, malformed topics, and
//! junk messages. Bare gossipsub peers in gossipsub's most permissive form
//! against a node on 127.0.0.1; an honest bare peer beside them is served
//! throughout.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

mod hostile;

use std::time::Duration;

use data_encoding::HEXLOWER;
use hostile::{GossipPeer, Note};
use libp2p::identity::Keypair;
use safemeet_net::{Config, Event, GRAYLIST_THRESHOLD, Handle, Refusal, RoomTopic, Verdict};
use safemeet_proto::Envelope;
use safemeet_proto::envelope::SealedRoomEnvelope;
use tokio::sync::mpsc;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(20);
/// How long a peer is watched for something that should not come: many
/// gossip heartbeats (100 ms).
const QUIET: Duration = Duration::from_secs(2);
const TOPIC: [u8; 32] = [0x5a; 32];
/// The node's per-peer topic cap in these tests.
const MAX_TOPICS: usize = 32;

fn topic_name() -> String {
    HEXLOWER.encode(&TOPIC)
}

fn frame(tag: u8) -> Vec<u8> {
    Envelope::Room(SealedRoomEnvelope {
        nonce: [1; 24],
        hint: [2; 8],
        sealed: vec![tag; 100],
    })
    .to_frame()
    .unwrap()
}

/// The node under test, subscribed to [`TOPIC`], with an application that
/// accepts every gossip frame it is shown and passes them on.
async fn node() -> (Handle, libp2p::Multiaddr, mpsc::Receiver<Vec<u8>>) {
    let config = Config {
        max_topics: MAX_TOPICS,
        ..Config::loopback()
    };
    let (net, mut events) = safemeet_net::spawn(Keypair::generate_ed25519(), config).unwrap();
    let addr = timeout(WAIT, async {
        loop {
            if let Some(Event::Listening(addr)) = events.recv().await {
                return addr;
            }
        }
    })
    .await
    .unwrap();
    net.subscribe(RoomTopic::from_bytes(TOPIC)).await.unwrap();
    let (tx, frames) = mpsc::channel(1024);
    let app = net.clone();
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            if let Event::Gossip { frame, id, via, .. } = event {
                app.report(id, via, Verdict::Accept).await.unwrap();
                let _ = tx.try_send(frame);
            }
        }
    });
    let addr = safemeet_net::dialable(&addr, net.peer_id());
    (net, addr, frames)
}

/// Waits for `frame` among what the node's application was shown.
async fn node_gets(frames: &mut mpsc::Receiver<Vec<u8>>, frame: &[u8], wait: Duration) -> bool {
    timeout(wait, async {
        while let Some(f) = frames.recv().await {
            if f == frame {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false)
}

#[tokio::test]
async fn a_subscription_flood_is_refused_and_the_peer_dropped() {
    let (net, addr, mut frames) = node().await;
    let mut good = GossipPeer::spawn();
    let mut flooder = GossipPeer::spawn();
    let mut malformed = GossipPeer::spawn();
    net.allow_gossip(vec![good.id, flooder.id, malformed.id])
        .await
        .unwrap();
    good.subscribe(topic_name()).await;
    for peer in [&good, &flooder, &malformed] {
        peer.dial(addr.clone()).await;
    }
    for peer in [&mut good, &mut flooder, &mut malformed] {
        assert!(peer.wait_for(WAIT, |n| *n == Note::Opened).await);
    }

    // Ten times the cap in well-formed topics; a single malformed name.
    for i in 0..(MAX_TOPICS * 10) as u32 {
        let mut bytes = [0u8; 32];
        bytes[..4].copy_from_slice(&i.to_be_bytes());
        flooder.subscribe(HEXLOWER.encode(&bytes)).await;
    }
    malformed.subscribe("not-a-room".into()).await;

    assert!(
        flooder.wait_for(WAIT, |n| *n == Note::Closed).await,
        "the flooder is dropped"
    );
    assert!(
        malformed.wait_for(WAIT, |n| *n == Note::Closed).await,
        "the peer with a malformed topic is dropped"
    );
    let refused = net.refusals().await.unwrap().get(Refusal::Subscriptions);
    assert!(refused >= 2, "{refused} subscriptions refused");

    // The honest peer was served throughout, both ways.
    good.publish(topic_name(), frame(1)).await;
    assert!(node_gets(&mut frames, &frame(1), WAIT).await);
    assert!(!good.wait_for(QUIET, |n| *n == Note::Closed).await);
    net.publish(RoomTopic::from_bytes(TOPIC), frame(2))
        .await
        .unwrap();
    assert!(good.wait_for(WAIT, |n| *n == Note::Message(frame(2))).await);
    net.shutdown().await.unwrap();
}

#[tokio::test]
async fn junk_gossip_gets_its_peer_graylisted_and_an_honest_one_is_not() {
    let (net, addr, mut frames) = node().await;
    let mut good = GossipPeer::spawn();
    let mut junk = GossipPeer::spawn();
    net.allow_gossip(vec![good.id, junk.id]).await.unwrap();
    junk.subscribe(topic_name()).await;
    good.subscribe(topic_name()).await;
    good.dial(addr.clone()).await;
    junk.dial(addr.clone()).await;
    assert!(good.wait_for(WAIT, |n| *n == Note::Opened).await);
    assert!(junk.wait_for(WAIT, |n| *n == Note::Opened).await);
    // Both are in the node's mesh before either publishes.
    let room = RoomTopic::from_bytes(TOPIC);
    hostile::until("both peers in the mesh", || async {
        net.mesh_peers(room.clone()).await.unwrap() >= 2
    })
    .await;

    good.publish(topic_name(), frame(1)).await;
    assert!(node_gets(&mut frames, &frame(1), WAIT).await);
    for i in 0..5u8 {
        // Not an envelope: the node rejects it.
        junk.publish(topic_name(), vec![0xee, i]).await;
    }
    hostile::until("the junk peer is graylisted", || async {
        let score = net.peer_score(junk.id).await.unwrap();
        score.is_some_and(|s| s < GRAYLIST_THRESHOLD)
    })
    .await;
    let good_score = net.peer_score(good.id).await.unwrap().unwrap();
    assert!(good_score >= 0.0, "honest score {good_score}");
    let rejected = net.refusals().await.unwrap().get(Refusal::GossipRejected);
    assert!(rejected >= 3, "{rejected} rejected");

    // Graylisted: what it sends now is not heard, even when well formed;
    // the node's own messages reach the honest peer and not it.
    junk.publish(topic_name(), frame(3)).await;
    assert!(!node_gets(&mut frames, &frame(3), QUIET).await);
    net.publish(RoomTopic::from_bytes(TOPIC), frame(4))
        .await
        .unwrap();
    assert!(good.wait_for(WAIT, |n| *n == Note::Message(frame(4))).await);
    assert!(
        !junk
            .wait_for(QUIET, |n| *n == Note::Message(frame(4)))
            .await
    );
    net.shutdown().await.unwrap();
}
