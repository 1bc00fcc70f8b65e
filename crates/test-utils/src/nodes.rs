//! Engines over the in-process memory transport: real libp2p (Noise,
//! yamux, gossipsub, request-response) with no sockets.

use std::time::Duration;

use safemeet_proto::clock::{Clock, SystemClock};

use crate::Device;

/// How long set-up may take.
const SETUP: Duration = Duration::from_secs(30);

/// Starts `n` engines on the memory transport with test settings (short
/// retries), each a contact of every other (pet names `n0`, `n1`, …).
/// Returns each device with its running engine.
pub async fn spawn_nodes(n: usize) -> Vec<(Device, safemeet_engine::Handle)> {
    spawn_nodes_with(n, |_| {}).await
}

/// [`spawn_nodes`], with `adjust` applied to each engine's test settings
/// (say, a smaller `direct_room_max_devices`).
pub async fn spawn_nodes_with(
    n: usize,
    adjust: impl Fn(&mut safemeet_engine::Config),
) -> Vec<(Device, safemeet_engine::Handle)> {
    let mut nodes = Vec::with_capacity(n);
    for i in 0..n {
        let device = Device::new(&format!("n{i}"), SystemClock.now());
        let port = u64::from(rand_port());
        let mut config = safemeet_engine::Config {
            net: safemeet_net::Config {
                listen: vec![format!("/memory/{port}").parse().unwrap()],
                ..safemeet_net::Config::loopback()
            },
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_millis(500),
            gossip_grace: Duration::from_millis(500),
            auto_join_rooms: true,
            ..safemeet_engine::Config::default()
        };
        adjust(&mut config);
        let engine = safemeet_engine::start(device.machine(), config).unwrap();
        nodes.push((device, engine));
    }
    for i in 0..n {
        for j in i + 1..n {
            befriend(&nodes[i].1, &nodes[j].1).await;
        }
    }
    nodes
}

/// A memory-transport port no other test in this process uses.
fn rand_port() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Spread over the range so test binaries running at once rarely meet;
    // the memory transport is per process anyway.
    let base = std::process::id().wrapping_mul(7919) % 1_000_000;
    base + NEXT.fetch_add(1, Ordering::Relaxed) + 1
}

/// Makes `a` and `b` contacts of each other (pet names: their usernames),
/// once both listen.
pub async fn befriend(a: &safemeet_engine::Handle, b: &safemeet_engine::Handle) {
    for e in [a, b] {
        tokio::time::timeout(SETUP, async {
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            while e.listen_addrs().await.unwrap().is_empty() {
                tick.tick().await;
            }
        })
        .await
        .expect("the node listens");
    }
    let (ia, ib) = (a.invite().await.unwrap(), b.invite().await.unwrap());
    a.add_contact(&ib, None).await.unwrap();
    b.add_contact(&ia, None).await.unwrap();
}
