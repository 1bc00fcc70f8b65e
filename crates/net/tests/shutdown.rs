//! How a node stops: on `Handle::shutdown`, and when every handle is
//! dropped (the same clean path). Real nodes on 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::time::Duration;

use libp2p::Multiaddr;
use libp2p::identity::Keypair;
use safemeet_net::{Config, Error, ErrorKind, Event, Handle, ReplySlot};
use safemeet_proto::Envelope;
use safemeet_proto::envelope::SealedRoomEnvelope;
use tokio::sync::mpsc;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(20);

fn frame() -> Vec<u8> {
    Envelope::Room(SealedRoomEnvelope {
        nonce: [1; 24],
        hint: [2; 8],
        sealed: vec![3; 100],
    })
    .to_frame()
    .unwrap()
}

async fn node() -> (Handle, mpsc::Receiver<Event>, Multiaddr) {
    let (net, mut events) =
        safemeet_net::spawn(Keypair::generate_ed25519(), Config::loopback()).unwrap();
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

/// Waits for B's application to be handed a delivery, and keeps its slot.
async fn held_slot(events: &mut mpsc::Receiver<Event>) -> ReplySlot {
    timeout(WAIT, async {
        loop {
            if let Some(Event::Delivery { reply, .. }) = events.recv().await {
                return reply;
            }
        }
    })
    .await
    .expect("a delivery arrives")
}

/// The events receiver ends: the loop dropped its sender.
async fn events_end(events: &mut mpsc::Receiver<Event>) {
    timeout(WAIT, async { while events.recv().await.is_some() {} })
        .await
        .expect("the event stream ends");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_fails_what_is_in_flight_and_closes_everything() {
    let (a, mut a_events, _) = node().await;
    let (b, mut b_events, b_addr) = node().await;
    // A delivery B's application never answers: in flight on A, held on B.
    let in_flight = tokio::spawn({
        let a = a.clone();
        let to = b.peer_id();
        async move { a.deliver(to, vec![b_addr], frame()).await }
    });
    let slot = held_slot(&mut b_events).await;

    a.shutdown().await.unwrap();
    assert!(a.is_stopped());
    let err = in_flight.await.unwrap().unwrap_err();
    assert!(matches!(err, Error::Stopped), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::Stopped);
    assert!(matches!(a.listen_addrs().await, Err(Error::Stopped)));
    events_end(&mut a_events).await;
    // Again: returns at once.
    timeout(WAIT, a.shutdown()).await.unwrap().unwrap();

    b.shutdown().await.unwrap();
    assert!(slot.is_expired(), "B's open slot closed with its loop");
    assert!(matches!(
        slot.send(b"ok".to_vec()),
        Err(Error::ReplyExpired)
    ));
    events_end(&mut b_events).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_every_handle_stops_the_node_the_same_way() {
    let (a, _a_events, _) = node().await;
    let (b, mut b_events, b_addr) = node().await;
    let other = b.clone();
    let _in_flight = tokio::spawn({
        let to = b.peer_id();
        async move { a.deliver(to, vec![b_addr], frame()).await }
    });
    let slot = held_slot(&mut b_events).await;
    drop(b);
    // One handle is left: the loop still serves it.
    assert!(other.listen_addrs().await.is_ok());
    assert!(!slot.is_expired());
    // The last one goes: the inbox closes and the loop stops, closing the
    // open slot and the event stream as a shutdown does.
    drop(other);
    events_end(&mut b_events).await;
    assert!(slot.is_expired(), "the open slot closed with the loop");
}
