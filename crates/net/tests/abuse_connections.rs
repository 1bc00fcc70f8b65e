//! Connection slots: one host cannot take every slot, and a node whose
//! inbound slots are full can still dial out.
//!
//! A node on 127.0.0.1 with small limits; bare peers that only hold
//! connections, dialling from 127.0.0.1 or from other loopback addresses
//! (their sockets bound there: Linux treats all of 127.0.0.0/8 as local).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

mod hostile;

use std::time::Duration;

use libp2p::Swarm;
use libp2p::identity::Keypair;
use libp2p::swarm::dummy;
use safemeet_net::{Config, ConnectionLimits, Event, Refusal};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(20);
/// How long an admitted connection is watched for a late refusal.
const SETTLE: Duration = Duration::from_millis(500);
const PER_IP: u32 = 4;
const INBOUND: u32 = 8;

/// A holder whose connections come from `ip`.
fn holder_on(ip: &str) -> Swarm<dummy::Behaviour> {
    hostile::holder_from(ip.parse().unwrap())
}

#[tokio::test]
async fn one_address_cannot_take_every_slot_and_dials_keep_a_share() {
    let config = Config {
        connections: ConnectionLimits {
            max_connections: INBOUND + 4,
            reserved_outbound: 4,
            max_per_ip: PER_IP,
            // 127.0.0.1 and 127.0.0.2 share a /24: the per-prefix cap is
            // tested on its own (ip_limits' unit tests).
            max_per_prefix: 1000,
        },
        ..Config::loopback()
    };
    let (net, mut events) = safemeet_net::spawn(Keypair::generate_ed25519(), config).unwrap();
    let addr = timeout(WAIT, async {
        loop {
            if let Some(Event::Listening(a)) = events.recv().await {
                return a;
            }
        }
    })
    .await
    .unwrap();
    let addr = safemeet_net::dialable(&addr, net.peer_id());

    // Ten peer ids from 127.0.0.1: four get in, six are refused.
    let mut admitted = Vec::new();
    let mut refused = 0;
    for _ in 0..10 {
        let mut swarm = hostile::holder();
        if hostile::connect(&mut swarm, addr.clone(), WAIT).await
            && hostile::stays_open(&mut swarm, SETTLE).await
        {
            admitted.push(swarm);
        } else {
            refused += 1;
        }
    }
    assert_eq!(admitted.len(), PER_IP as usize, "{refused} refused");
    let counts = net.refusals().await.unwrap();
    assert_eq!(counts.get(Refusal::ConnectionPerAddress), 6);

    // Another address still gets in, up to its own cap.
    let mut others = Vec::new();
    for _ in 0..PER_IP {
        let mut swarm = holder_on("127.0.0.2");
        assert!(hostile::connect(&mut swarm, addr.clone(), WAIT).await);
        assert!(hostile::stays_open(&mut swarm, SETTLE).await);
        others.push(swarm);
    }
    // Inbound is now full (8 of 12): a third address is refused...
    let mut late = holder_on("127.0.0.3");
    let late_in = hostile::connect(&mut late, addr.clone(), WAIT).await
        && hostile::stays_open(&mut late, SETTLE).await;
    assert!(!late_in, "inbound is full");
    // ...while the node's own dial goes out, to a peer it wants.
    let mut wanted = hostile::holder();
    wanted
        .listen_on("/ip4/127.0.0.4/tcp/0".parse().unwrap())
        .unwrap();
    let wanted_peer = *wanted.local_peer_id();
    let wanted_addr = timeout(WAIT, async {
        loop {
            if let libp2p::swarm::SwarmEvent::NewListenAddr { address, .. } =
                futures::StreamExt::select_next_some(&mut wanted).await
            {
                return address;
            }
        }
    })
    .await
    .unwrap();
    for swarm in admitted.into_iter().chain(others) {
        hostile::run(swarm);
    }
    hostile::run(wanted);
    net.dial(safemeet_net::dialable(&wanted_addr, wanted_peer))
        .await
        .unwrap();
    timeout(WAIT, async {
        loop {
            if let Some(Event::Connected(p)) = events.recv().await
                && p == wanted_peer
            {
                return;
            }
        }
    })
    .await
    .expect("the node's own dial succeeds while inbound is full");
    let peers = net.connected_peers().await.unwrap();
    assert_eq!(peers.len(), (INBOUND + 1) as usize);
    net.shutdown().await.unwrap();
}
