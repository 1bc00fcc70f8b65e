//! Stalled requests against a real `safemeet relay` process: sixteen
//! connections, each opening 256 mailbox streams that announce the
//! largest request and send nothing (the attack that took a relay from
//! 143 to 697 MB). The relay's resident memory stays bounded, each
//! connection gets at most 16 streams read, they time out (5 s, the
//! default) and are counted in `/metrics`, and an honest device is
//! answered throughout.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

#[path = "../crates/net/tests/hostile/mod.rs"]
mod hostile;
mod support;

use std::io::{Read, Write};
use std::time::Duration;

use libp2p::identity::Keypair;
use safemeet_net::{Config, MAILBOX_PROTOCOL};
use safemeet_proto::codec;
use safemeet_proto::mailbox::{MAX_REQUEST_BYTES, MailboxRequest, MailboxResponse, VERSION};
use support::Relay;

const WAIT: Duration = Duration::from_secs(30);
const CONNS: usize = 16;
const STREAMS: usize = 256;
/// The relay's default cap of streams per connection.
const CAP: usize = 16;
/// The most the attack may add to the relay's resident memory. Before the
/// fix, each stream read held a buffer of the announced length, 256 at
/// once per connection: over 260 MiB for this attack.
const RSS_BOUND: u64 = 32 * 1024 * 1024;

fn metrics(addr: &str) -> String {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    write!(stream, "GET /metrics HTTP/1.1\r\nhost: relay\r\n\r\n").unwrap();
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    text
}

async fn challenge(net: &safemeet_net::Handle, relay: &Relay) -> bool {
    let request = codec::encode(&MailboxRequest::Challenge { version: VERSION }).unwrap();
    let Ok(answer) = net
        .mailbox(relay.peer, vec![relay.addr.clone()], request)
        .await
    else {
        return false;
    };
    matches!(
        codec::decode::<MailboxResponse>(&answer, 1 << 20),
        Ok(MailboxResponse::Nonce(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_streams_cost_a_relay_process_little_and_are_counted() {
    let home = tempfile::tempdir().unwrap();
    let relay = Relay::start(home.path(), &["--metrics", "127.0.0.1:0"]);
    let metrics_addr = relay.metrics.clone().expect("metrics are served");
    let (device, mut events) =
        safemeet_net::spawn(Keypair::generate_ed25519(), Config::loopback()).unwrap();
    tokio::spawn(async move { while events.recv().await.is_some() {} });
    assert!(challenge(&device, &relay).await);
    let before = relay.rss();

    for i in 0..CONNS {
        let source = std::net::Ipv4Addr::new(127, 0, 5, 10 + i as u8).into();
        let mut swarm = hostile::staller(MAILBOX_PROTOCOL, source);
        assert!(hostile::connect(&mut swarm, relay.addr.clone(), WAIT).await);
        for _ in 0..STREAMS {
            swarm
                .behaviour_mut()
                .send_request(&relay.peer, MAX_REQUEST_BYTES as u32);
        }
        hostile::run(swarm);
    }
    assert!(challenge(&device, &relay).await);
    // The streams are all open by now (the device's request came after
    // them on the relay's loop); measure at their peak, before they time
    // out.
    let during = relay.rss();
    let grew = during.saturating_sub(before);
    eprintln!(
        "relay resident memory: {} MiB before, {} MiB during the attack (+{} KiB)",
        before >> 20,
        during >> 20,
        grew >> 10
    );
    let stalled = format!(
        "safemeet_relay_network_refused_total{{reason=\"stalled_stream\"}} {}",
        CONNS * CAP
    );
    let addr = metrics_addr.clone();
    hostile::until("the stalled streams are counted", move || {
        let addr = addr.clone();
        let stalled = stalled.clone();
        async move {
            tokio::task::spawn_blocking(move || metrics(&addr).contains(&stalled))
                .await
                .unwrap()
        }
    })
    .await;
    assert!(challenge(&device, &relay).await);
    assert!(grew < RSS_BOUND, "the attack cost the relay {grew} bytes");
    device.shutdown().await.unwrap();
    relay.stop();
}
