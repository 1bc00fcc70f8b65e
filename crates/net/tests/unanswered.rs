//! An application that never answers direct deliveries, or drops them, or
//! holds them past the sender's patience: the node frees each reply slot
//! and keeps accepting deliveries, and the sender learns how its request
//! ended. Two real nodes on 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::time::Duration;

use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use safemeet_net::{Config, DeliveryFailure, Error, ErrorKind, Event, Handle};
use safemeet_proto::Envelope;
use safemeet_proto::envelope::SealedRoomEnvelope;
use tokio::sync::mpsc;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(60);

/// Deliveries in flight at once: under libp2p's 100 streams per connection.
const IN_FLIGHT: usize = 64;

fn frame(tag: u8) -> Vec<u8> {
    Envelope::Room(SealedRoomEnvelope {
        nonce: [1; 24],
        hint: [2; 8],
        sealed: vec![tag; 100],
    })
    .to_frame()
    .unwrap()
}

async fn node(config: Config) -> (Handle, mpsc::Receiver<Event>, Multiaddr) {
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

/// Sends `n` deliveries, `in_flight` at a time; how each ended.
async fn deliver_many(
    a: &Handle,
    to: PeerId,
    addr: &Multiaddr,
    n: usize,
    in_flight: usize,
) -> Vec<Result<Vec<u8>, Error>> {
    futures::stream::iter(0..n)
        .map(|i| a.deliver(to, vec![addr.clone()], frame(i as u8)))
        .buffer_unordered(in_flight)
        .collect()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_deliveries_expire_and_a_later_one_is_answered() {
    // More than the 1 024 reply slots a node has by default.
    const UNANSWERED: usize = 1100;
    let receiver = Config {
        // Slots expire this soon (they last as long as a request may).
        request_timeout: Duration::from_millis(250),
        ..Config::loopback()
    };
    assert!(UNANSWERED > receiver.max_pending_replies);
    let (a, _a_events, _) = node(Config::loopback()).await;
    let (b, mut b_events, b_addr) = node(receiver).await;

    // B's application holds on to every slot and never answers, until it
    // has seen UNANSWERED deliveries; then it answers.
    let (seen_tx, mut seen) = mpsc::channel(1);
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some(event) = b_events.recv().await {
            if let Event::Delivery { reply, .. } = event {
                if held.len() < UNANSWERED {
                    held.push(reply);
                    continue;
                }
                reply.send(b"ok".to_vec()).unwrap();
                let expired = held.iter().filter(|r| r.is_expired()).count();
                // The oldest slot expired seconds ago.
                let late = held.swap_remove(0).send(b"ok".to_vec());
                let _ = seen_tx.send((held.len() + 1, expired, late)).await;
            }
        }
    });

    let results = timeout(
        WAIT,
        deliver_many(&a, b.peer_id(), &b_addr, UNANSWERED, IN_FLIGHT),
    )
    .await
    .expect("every unanswered delivery ends");
    for result in &results {
        let err = result.as_ref().unwrap_err();
        // B's node closed each request unanswered when its slot expired;
        // A's own timeout (10 s) never came.
        assert_eq!(err.kind(), ErrorKind::Refused, "{err:?}");
    }

    let answer = timeout(WAIT, a.deliver(b.peer_id(), vec![b_addr], frame(0)))
        .await
        .unwrap()
        .expect("a delivery after the unanswered ones is accepted");
    assert_eq!(answer, b"ok");
    let (held, expired, late) = seen.recv().await.unwrap();
    assert_eq!(held, UNANSWERED, "B's application saw every delivery");
    // libp2p closes an unanswered stream a moment before its slot expires,
    // so the last few slots may still be open; every earlier one expired.
    assert!(expired >= UNANSWERED - IN_FLIGHT, "{expired} slots expired");
    assert!(matches!(late, Err(Error::ReplyExpired)), "{late:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_reply_slot_refuses_at_once_and_frees_the_slot() {
    const DROPPED: usize = 40;
    let receiver = Config {
        // Few slots, long-lived: only dropping can free them in time.
        max_pending_replies: 4,
        request_timeout: Duration::from_secs(600),
        ..Config::loopback()
    };
    let (a, _a_events, _) = node(Config::loopback()).await;
    let (b, mut b_events, b_addr) = node(receiver).await;
    let (seen_tx, mut seen) = mpsc::channel(DROPPED + 1);
    tokio::spawn(async move {
        let mut count = 0;
        while let Some(event) = b_events.recv().await {
            if let Event::Delivery { reply, .. } = event {
                count += 1;
                if count > DROPPED {
                    reply.send(b"ok".to_vec()).unwrap();
                } // else dropped here
                let _ = seen_tx.send(count).await;
            }
        }
    });

    // A's default timeout is 10 s: a refusal must come well before it.
    let results = timeout(
        Duration::from_secs(5),
        // One at a time: each finds a free slot only if the last was freed.
        deliver_many(&a, b.peer_id(), &b_addr, DROPPED, 1),
    )
    .await
    .expect("dropped deliveries are refused at once");
    for result in results {
        let err = result.unwrap_err();
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
    }
    let answer = timeout(WAIT, a.deliver(b.peer_id(), vec![b_addr], frame(0)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answer, b"ok");
    timeout(WAIT, async {
        while seen.recv().await.unwrap() < DROPPED + 1 {}
    })
    .await
    .expect("B's application saw every delivery");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_held_past_the_senders_timeout_is_a_timeout() {
    let sender = Config {
        request_timeout: Duration::from_millis(300),
        ..Config::loopback()
    };
    let (a, mut a_events, _) = node(sender).await;
    let (b, mut b_events, b_addr) = node(Config::loopback()).await;
    // Connected first, so the short timeout is spent waiting for B alone.
    a.dial(b_addr.clone().with(Protocol::P2p(b.peer_id())))
        .await
        .unwrap();
    timeout(WAIT, async {
        while !matches!(a_events.recv().await, Some(Event::Connected(_))) {}
    })
    .await
    .expect("A connects to B");
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some(event) = b_events.recv().await {
            if let Event::Delivery { reply, .. } = event {
                held.push(reply);
            }
        }
        held.len()
    });
    let err = timeout(WAIT, a.deliver(b.peer_id(), vec![b_addr], frame(0)))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err:?}");
    assert!(!err.is_unreachable());
    b.shutdown().await.unwrap();
    assert_eq!(holder.await.unwrap(), 1);
}
