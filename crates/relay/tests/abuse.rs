//! Stalled requests against a relay: many connections, each opening many
//! mailbox streams that announce the largest request and send nothing.
//! Each connection gets at most its cap of streams read, the stalled ones
//! time out and are counted in the operator's metrics, memory stays
//! bounded, and an honest device is answered throughout. And one address
//! cannot take every connection: past its cap it is refused (and counted)
//! while another address still gets in.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

#[path = "../../net/tests/hostile/mod.rs"]
mod hostile;

use std::time::Duration;

use libp2p::identity::Keypair;
use safemeet_net::{Config, ConnectionLimits, MAILBOX_PROTOCOL};
use safemeet_proto::codec;
use safemeet_proto::mailbox::{MAX_REQUEST_BYTES, MailboxRequest, MailboxResponse, VERSION};
use safemeet_relay::node::{MetricsConfig, RelayConfig, RelayEvent};
use safemeet_relay::{Limits, MailboxService, MailboxStore};
use safemeet_store::MemoryStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(30);
/// Attacking connections, and the streams each opens (the relay used to
/// read 256 at once on each).
const CONNS: usize = 16;
const STREAMS: usize = 256;
/// The relay's cap of streams per connection (its default).
const CAP: usize = 16;
/// Short, so the test is: the default is 5 s.
const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// The most the attack may add to this process's resident memory. Before
/// the codecs read bodies as they arrive and the cap came down from 256,
/// each stream read held a buffer of the announced length: 16 × 256 ×
/// 65 KiB, over 260 MiB, for this attack.
const RSS_BOUND: u64 = 32 * 1024 * 1024;

/// Asks the relay for a nonce, as a device does before a fetch.
async fn challenge(net: &safemeet_net::Handle, addr: &libp2p::Multiaddr) -> bool {
    let request = codec::encode(&MailboxRequest::Challenge { version: VERSION }).unwrap();
    let relay = hostile::peer_of(addr);
    let Ok(answer) = net.mailbox(relay, vec![addr.clone()], request).await else {
        return false;
    };
    matches!(
        codec::decode::<MailboxResponse>(&answer, 1 << 20),
        Ok(MailboxResponse::Nonce(_))
    )
}

/// The relay's Prometheus text.
async fn metrics(addr: std::net::SocketAddr) -> String {
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    socket
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: relay\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    socket.read_to_string(&mut text).await.unwrap();
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_mailbox_streams_are_capped_time_out_and_are_counted() {
    let key = Keypair::generate_ed25519();
    let store = MailboxStore::new(MemoryStore::new(), Limits::default());
    let config = RelayConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        inbound_read_timeout: READ_TIMEOUT,
        metrics: Some(MetricsConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            allow: vec!["127.0.0.1".parse().unwrap()],
        }),
        ..RelayConfig::default()
    };
    assert_eq!(config.max_streams_per_connection, CAP);
    let mut relay =
        safemeet_relay::node::spawn(key.clone(), config, MailboxService::new(store, key)).unwrap();
    let Some(RelayEvent::Listening(addr)) = timeout(WAIT, relay.events.recv()).await.unwrap()
    else {
        panic!("the relay did not listen")
    };
    let metrics_addr = relay.metrics_addr.unwrap();
    let (device, mut events) =
        safemeet_net::spawn(Keypair::generate_ed25519(), Config::loopback()).unwrap();
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    assert!(challenge(&device, &addr).await);
    let before = hostile::rss();

    // From addresses of their own: the per-address cap is not what is
    // tested here.
    for i in 0..CONNS {
        let source = std::net::Ipv4Addr::new(127, 0, 3, 10 + i as u8).into();
        let mut swarm = hostile::staller(MAILBOX_PROTOCOL, source);
        assert!(hostile::connect(&mut swarm, addr.clone(), WAIT).await);
        let relay = hostile::peer_of(&addr);
        for _ in 0..STREAMS {
            swarm
                .behaviour_mut()
                .send_request(&relay, MAX_REQUEST_BYTES as u32);
        }
        hostile::run(swarm);
    }
    let mut big = hostile::staller(MAILBOX_PROTOCOL, [127, 0, 4, 1].into());
    assert!(hostile::connect(&mut big, addr.clone(), WAIT).await);
    big.behaviour_mut()
        .send_request(&hostile::peer_of(&addr), MAX_REQUEST_BYTES as u32 + 1);
    hostile::run(big);

    // While the streams stall, an honest device is answered.
    assert!(challenge(&device, &addr).await);
    let during = hostile::rss();
    let grew = during.saturating_sub(before);
    eprintln!(
        "resident memory: {} MiB before, {} MiB during the attack (+{} KiB)",
        before >> 20,
        during >> 20,
        grew >> 10
    );

    // Each connection had at most its cap of streams read; they stalled,
    // timed out, and the operator's metrics say so.
    let stalled = format!(
        "safemeet_relay_network_refused_total{{reason=\"stalled_stream\"}} {}",
        CONNS * CAP
    );
    hostile::until("the stalled streams are counted", || async {
        metrics(metrics_addr).await.contains(&stalled)
    })
    .await;
    let text = metrics(metrics_addr).await;
    assert!(
        text.contains("safemeet_relay_network_refused_total{reason=\"bad_stream\"} 1"),
        "{text}"
    );
    assert!(challenge(&device, &addr).await);
    assert!(grew < RSS_BOUND, "the attack cost {grew} bytes");
    // Nothing more was read after the stalled ones: the count stays.
    assert!(metrics(metrics_addr).await.contains(&stalled));
    device.shutdown().await.unwrap();
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_take_every_connection_of_a_relay() {
    const PER_IP: u32 = 4;
    let key = Keypair::generate_ed25519();
    let store = MailboxStore::new(MemoryStore::new(), Limits::default());
    let config = RelayConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        connections: ConnectionLimits {
            max_per_ip: PER_IP,
            // 127.0.0.1 and 127.0.0.5 share a /24.
            max_per_prefix: 1000,
            ..ConnectionLimits::RELAY
        },
        metrics: Some(MetricsConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            allow: vec!["127.0.0.1".parse().unwrap()],
        }),
        ..RelayConfig::default()
    };
    let mut relay =
        safemeet_relay::node::spawn(key.clone(), config, MailboxService::new(store, key)).unwrap();
    let Some(RelayEvent::Listening(addr)) = timeout(WAIT, relay.events.recv()).await.unwrap()
    else {
        panic!("the relay did not listen")
    };
    let metrics_addr = relay.metrics_addr.unwrap();
    // An honest device, connected first.
    let (device, mut events) =
        safemeet_net::spawn(Keypair::generate_ed25519(), Config::loopback()).unwrap();
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    assert!(challenge(&device, &addr).await);

    // Ten more peer ids from the device's address: the rest of its share.
    let mut admitted = Vec::new();
    for _ in 0..10 {
        let mut swarm = hostile::holder();
        if hostile::connect(&mut swarm, addr.clone(), WAIT).await
            && hostile::stays_open(&mut swarm, Duration::from_millis(300)).await
        {
            admitted.push(swarm);
        }
    }
    assert_eq!(admitted.len(), PER_IP as usize - 1);
    // Another address gets in; the device is still answered.
    let mut other = hostile::holder_from([127, 0, 0, 5].into());
    assert!(hostile::connect(&mut other, addr.clone(), WAIT).await);
    assert!(hostile::stays_open(&mut other, Duration::from_millis(300)).await);
    assert!(challenge(&device, &addr).await);
    let refused = "safemeet_relay_network_refused_total{reason=\"connection_per_address\"} 7";
    hostile::until("the refusals are counted", || async {
        metrics(metrics_addr).await.contains(refused)
    })
    .await;
    device.shutdown().await.unwrap();
    relay.stop().await;
}
