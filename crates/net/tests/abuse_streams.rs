//! Stalled requests: many connections, each opening many delivery streams
//! that announce the largest frame and then send nothing. Each connection
//! gets at most its cap of streams read, the stalled ones time out, memory
//! stays bounded, and an honest node's deliveries are answered throughout.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

mod hostile;

use std::time::Duration;

use libp2p::identity::Keypair;
use safemeet_net::{Config, DELIVER_PROTOCOL, Event, Handle, Refusal};
use safemeet_proto::Envelope;
use safemeet_proto::envelope::SealedRoomEnvelope;
use safemeet_proto::limits::MAX_ENVELOPE_BYTES;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(20);
/// Attacking connections, and the streams each opens.
const CONNS: usize = 16;
const STREAMS: usize = 100;
/// The node's cap of streams per connection (its default).
const CAP: usize = 16;
/// Short, so the test is: the default is 5 s.
const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// The most the attack may add to this process's resident memory. Before
/// the codecs read bodies as they arrive, the streams read at once
/// (libp2p's default cap, 100 per connection) each held a 64 KiB buffer:
/// 100 MiB for this attack.
const RSS_BOUND: u64 = 32 * 1024 * 1024;

fn frame(tag: u8) -> Vec<u8> {
    Envelope::Room(SealedRoomEnvelope {
        nonce: [1; 24],
        hint: [2; 8],
        sealed: vec![tag; 100],
    })
    .to_frame()
    .unwrap()
}

/// A node whose application answers every delivery with "ok".
async fn node(config: Config) -> (Handle, libp2p::Multiaddr) {
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
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            if let Event::Delivery { reply, .. } = event {
                let _ = reply.send(b"ok".to_vec());
            }
        }
    });
    let addr = safemeet_net::dialable(&addr, net.peer_id());
    (net, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_delivery_streams_are_capped_and_time_out() {
    let config = Config {
        inbound_read_timeout: READ_TIMEOUT,
        ..Config::loopback()
    };
    assert_eq!(config.max_streams_per_connection, CAP);
    let (victim, addr) = node(config).await;
    let (honest, _) = node(Config::loopback()).await;
    let deliver = |tag| {
        let honest = honest.clone();
        let addr = addr.clone();
        let peer = victim.peer_id();
        async move { honest.deliver(peer, vec![addr], frame(tag)).await }
    };
    assert_eq!(deliver(0).await.unwrap(), b"ok");
    let before = hostile::rss();

    // From addresses of their own: the per-address cap is not what is
    // tested here.
    for i in 0..CONNS {
        let source = std::net::Ipv4Addr::new(127, 0, 1, 10 + i as u8).into();
        let mut swarm = hostile::staller(DELIVER_PROTOCOL, source);
        assert!(hostile::connect(&mut swarm, addr.clone(), WAIT).await);
        let peer = victim.peer_id();
        for _ in 0..STREAMS {
            swarm
                .behaviour_mut()
                .send_request(&peer, MAX_ENVELOPE_BYTES as u32);
        }
        hostile::run(swarm);
    }
    // One stream announces more than a frame may be.
    let mut big = hostile::staller(DELIVER_PROTOCOL, [127, 0, 2, 1].into());
    assert!(hostile::connect(&mut big, addr.clone(), WAIT).await);
    big.behaviour_mut()
        .send_request(&victim.peer_id(), MAX_ENVELOPE_BYTES as u32 + 1);
    hostile::run(big);

    // While the streams stall, an honest delivery is answered.
    assert_eq!(deliver(1).await.unwrap(), b"ok");
    let during = hostile::rss();
    let grew = during.saturating_sub(before);
    eprintln!(
        "resident memory: {} MiB before, {} MiB during the attack (+{} KiB)",
        before >> 20,
        during >> 20,
        grew >> 10
    );

    // Each connection had at most its cap of streams read; they stall and
    // time out; nothing more is read from them.
    let stalled = (CONNS * CAP) as u64;
    hostile::until("the stalled streams time out", || async {
        let c = victim.refusals().await.unwrap();
        eprintln!("{c:?}");
        c.get(Refusal::StalledStream) >= stalled
    })
    .await;
    assert_eq!(deliver(2).await.unwrap(), b"ok");
    let counts = victim.refusals().await.unwrap();
    assert_eq!(counts.get(Refusal::StalledStream), stalled);
    assert_eq!(counts.get(Refusal::BadStream), 1);
    assert!(grew < RSS_BOUND, "the attack cost {grew} bytes");
    victim.shutdown().await.unwrap();
    honest.shutdown().await.unwrap();
}
