//! The media stream protocol (`/safemeet/media/1`) between two real
//! libp2p nodes on 127.0.0.1, over TCP and over QUIC: frames sent on a
//! 20 ms clock all arrive, in order; a receiver that stops reading costs
//! the sender nothing but its oldest frames (it never waits, and holds at
//! most 3); a dial stuck on a silent address does not hold up a stream;
//! and a hostile sender's bad lengths end its stream without the
//! receiver allocating for them.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::sync::Arc;
use std::time::Duration;

use futures::{AsyncWriteExt, StreamExt};
use libp2p::Multiaddr;
use libp2p::identity::Keypair;
use safemeet_media::transport::{MAX_QUEUED, MediaLink, SendQueue, pump, read_frame};
use safemeet_net::{Config, Event, Handle};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(20);

async fn node(listen: &str) -> (Handle, Multiaddr) {
    let config = Config {
        listen: vec![listen.parse().unwrap()],
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
    .expect("the node listens");
    // The rest of its events are not this test's.
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    (net, addr)
}

async fn frames_arrive_in_order_and_a_stalled_receiver_costs_only_old_frames(listen: &str) {
    let (a, _) = node(listen).await;
    let (b, b_addr) = node(listen).await;
    let mut incoming = b.media_streams().unwrap();

    // 250 frames on a call's 20 ms clock (the 3 frames queued are 60 ms
    // of slack for a busy machine): every one arrives, in order.
    let queue = Arc::new(SendQueue::new());
    let stream = a
        .open_media_stream(b.peer_id(), std::slice::from_ref(&b_addr))
        .await
        .unwrap();
    let pumping = {
        let queue = queue.clone();
        tokio::spawn(async move { pump(&queue, stream).await })
    };
    let (peer, mut inbound) = timeout(WAIT, incoming.next()).await.unwrap().unwrap();
    assert_eq!(peer, a.peer_id());
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        while let Some(frame) = read_frame(&mut inbound).await.unwrap() {
            got.push(u32::from_be_bytes(frame[..4].try_into().unwrap()));
        }
        got
    });
    let mut clock = tokio::time::interval(Duration::from_millis(20));
    for i in 0..250u32 {
        clock.tick().await;
        let mut frame = i.to_be_bytes().to_vec();
        frame.resize(120, 0xa5);
        queue.send(frame);
    }
    queue.close();
    timeout(WAIT, pumping).await.unwrap().unwrap().unwrap();
    let got = timeout(WAIT, reader).await.unwrap().unwrap();
    assert_eq!(got, (0..250).collect::<Vec<_>>());
    let stats = queue.stats();
    assert_eq!((stats.queued, stats.sent, stats.dropped), (250, 250, 0));

    // A receiver that stops reading: the sender goes on at once, holding
    // at most 3 frames; what it drops is the oldest.
    let queue = Arc::new(SendQueue::new());
    let stream = a.open_media_stream(b.peer_id(), &[b_addr]).await.unwrap();
    let pumping = {
        let queue = queue.clone();
        tokio::spawn(async move { pump(&queue, stream).await })
    };
    let (_, mut stalled) = timeout(WAIT, incoming.next()).await.unwrap().unwrap();
    let started = safemeet_proto::clock::Clock::instant(&safemeet_proto::clock::SystemClock);
    for i in 0..5000u32 {
        let mut frame = i.to_be_bytes().to_vec();
        frame.resize(1200, 0x5a);
        queue.send(frame);
        assert!(queue.len() <= MAX_QUEUED);
        if i % 100 == 0 {
            tokio::task::yield_now().await;
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the sender never waited: {:?}",
        started.elapsed()
    );
    let stats = queue.stats();
    assert!(stats.dropped > 0, "{stats:?}");
    assert_eq!(stats.queued, 5000);
    // The receiver reads again: the newest frame is among what comes.
    queue.close();
    let mut last = 0;
    while let Ok(Ok(Some(frame))) = timeout(WAIT, read_frame(&mut stalled)).await {
        last = u32::from_be_bytes(frame[..4].try_into().unwrap());
    }
    assert_eq!(last, 4999);
    let _ = timeout(WAIT, pumping).await;
    let stats = queue.stats();
    assert_eq!(stats.sent + stats.dropped, 5000, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_frames_over_tcp() {
    frames_arrive_in_order_and_a_stalled_receiver_costs_only_old_frames("/ip4/127.0.0.1/tcp/0")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_frames_over_quic() {
    frames_arrive_in_order_and_a_stalled_receiver_costs_only_old_frames(
        "/ip4/127.0.0.1/udp/0/quic-v1",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_sender_s_bad_lengths_end_its_stream() {
    let (a, _) = node("/ip4/127.0.0.1/tcp/0").await;
    let (b, b_addr) = node("/ip4/127.0.0.1/tcp/0").await;
    let mut incoming = b.media_streams().unwrap();
    for hostile in [vec![0xff, 0xff, 1, 2, 3], vec![0, 0, 9], vec![0, 50, 1, 2]] {
        let mut stream = a
            .open_media_stream(b.peer_id(), std::slice::from_ref(&b_addr))
            .await
            .unwrap();
        stream.write_all(&hostile).await.unwrap();
        stream.close().await.unwrap();
        let (_, mut inbound) = timeout(WAIT, incoming.next()).await.unwrap().unwrap();
        let read = timeout(WAIT, read_frame(&mut inbound)).await.unwrap();
        assert!(read.is_err(), "{hostile:?}: {read:?}");
    }
}

/// A dial to the peer stuck on an address that takes the connection and
/// never speaks does not hold up a stream opened with a good address: the
/// stream behaviour alone would wait for ever behind that dial.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dial_stuck_on_a_silent_address_does_not_hold_up_a_stream() {
    let (a, _) = node("/ip4/127.0.0.1/tcp/0").await;
    let (b, b_addr) = node("/ip4/127.0.0.1/tcp/0").await;
    let _incoming = b.media_streams().unwrap();
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let silent_addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}/p2p/{}", b.peer_id())
        .parse()
        .unwrap();
    a.dial(silent_addr).await.unwrap();
    let opened = timeout(
        Duration::from_secs(5),
        a.open_media_stream(b.peer_id(), &[b_addr]),
    )
    .await;
    assert!(matches!(opened, Ok(Ok(_))), "{opened:?}");
}

/// A node that listens on each of `listen`, and its addresses.
async fn node_on(listen: &[&str]) -> (Handle, Vec<Multiaddr>) {
    let config = Config {
        listen: listen.iter().map(|l| l.parse().unwrap()).collect(),
        ..Config::loopback()
    };
    let (net, mut events) = safemeet_net::spawn(Keypair::generate_ed25519(), config).unwrap();
    let mut addrs = Vec::new();
    timeout(WAIT, async {
        while addrs.len() < listen.len() {
            if let Some(Event::Listening(addr)) = events.recv().await {
                addrs.push(addr);
            }
        }
    })
    .await
    .expect("the node listens");
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    (net, addrs)
}

/// Between two nodes that both have QUIC and TCP, a media stream goes
/// over QUIC, whichever address comes first; and the path says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_media_stream_prefers_quic_when_both_ends_have_it() {
    let both = ["/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"];
    let (a, _) = node_on(&both).await;
    let (b, mut b_addrs) = node_on(&both).await;
    let _incoming = b.media_streams().unwrap();
    // TCP first in the list.
    b_addrs.sort_by_key(|addr| addr.to_string().contains("quic"));
    assert!(b_addrs[0].to_string().contains("/tcp/"), "{b_addrs:?}");
    timeout(WAIT, a.open_media_stream(b.peer_id(), &b_addrs))
        .await
        .unwrap()
        .unwrap();
    let paths = a.paths(b.peer_id()).await.unwrap();
    assert!(!paths.is_empty());
    assert!(
        paths.iter().all(|p| p.quic && p.relay.is_none()),
        "{paths:?}"
    );
}
