//! The attack machinery end to end, small: a few production nodes and a
//! relay, a few sybil attackers flooding them (subscriptions, raw GRAFT
//! frames, junk deliveries, mailbox deposits). Honest delivery holds, and
//! the attackers' traffic was really sent and really refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use safemeet_netsim::Mode;
use safemeet_netsim::scenario::Scenario;

fn scenario(attackers: usize) -> Scenario {
    Scenario::parse(&format!(
        r#"
name = "tiny-sybil"
seed = 9
[nodes]
count = 6
relays = 1
[topology]
kind = "random-k"
k = 2
[links.default]
latency_ms = 10
jitter_ms = 2
[rooms]
count = 1
members = 4
[workload]
rate = 3
duration_s = 4
drain_s = 8
dm_share = 0.3
[node]
heartbeat_ms = 300
setup_timeout_s = 60
# The room on gossip: its topic is real, and the attackers know it.
direct_room_max_devices = 0
[attack]
count = {attackers}
targets = 3
topics = 50
gossip_frames_per_s = 4
subscriptions_per_frame = 64
grafts_per_frame = 32
deliveries_per_s = 8
deposits_per_s = 8
resubscribe_s = 0.5
heartbeat_ms = 300
[assert]
delivery_min = 1.0
valid = false
"#
    ))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn honest_delivery_holds_while_sybils_flood_and_are_refused() {
    let report = safemeet_netsim::simulate(scenario(3), Mode::Engine, &|_, _, _| {})
        .await
        .unwrap();
    let f = &report.run;
    assert!(report.passed, "{}", report.summary());
    assert_eq!(f.delivery_ratio, 1.0, "{}", report.summary());
    let a = f.attack.as_ref().expect("attack figures");
    assert!(!a.idle);
    eprintln!("{}", report.summary());

    // They connected, to the honest nodes and the relay.
    assert!(a.connections_opened >= 3 * 4, "{a:?}");
    // Gossip: announced and framed, and refused at negotiation by the
    // gate (strangers get no gossipsub handler); nothing got through.
    assert!(a.topics_announced >= 3 * 50, "{a:?}");
    assert!(a.gossip_refused > 0, "{a:?}");
    assert!(
        a.gossip_frames_sent > 20 && a.grafts_sent > 20 * 32,
        "{a:?}"
    );
    assert!(a.gossip_frames_refused > 0, "{a:?}");
    assert_eq!(a.gossip_frames_accepted, 0, "{a:?}");
    // Junk deliveries: many sent, answered, none stored.
    assert!(a.deliveries_sent > 50, "{a:?}");
    assert!(
        a.deliveries_refused > 0 && a.deliveries_later > 0 && a.deliveries_dropped > 0,
        "{a:?}"
    );
    assert_eq!(a.deliveries_acked, 0, "{a:?}");
    // Mailbox flood: refused, nothing stored on the relay for it.
    assert!(a.mailbox_sent > 50, "{a:?}");
    assert!(a.deposits_refused > 0 && a.nonces > 0, "{a:?}");
    assert_eq!(a.deposits_stored, 0, "{a:?}");
    assert!(
        f.relay_peak_connections >= 3,
        "{}",
        f.relay_peak_connections
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_attackers_connect_and_send_nothing_and_the_report_compares() {
    let mut s = scenario(2);
    s.assert.p99_vs_idle_max = Some(1000.0);
    s.assert.attack_rss_growth_mib_max = Some(4096.0);
    let report = safemeet_netsim::simulate(s, Mode::CompareIdle, &|_, _, _| {})
        .await
        .unwrap();
    assert!(report.passed, "{}", report.summary());
    let idle = report.idle.as_ref().expect("the idle run");
    let a = idle.attack.as_ref().unwrap();
    assert!(a.idle && a.connections_opened > 0, "{a:?}");
    assert_eq!(
        a.deliveries_sent + a.gossip_frames_sent + a.mailbox_sent + a.topics_announced,
        0,
        "{a:?}"
    );
    assert!(report.run.attack.as_ref().unwrap().deliveries_sent > 0);
    assert!(report.vs_idle.as_ref().unwrap().contains_key("p99"));
    assert!(report.attack_rss_growth_mib.is_some());
    assert!(report.summary().contains("vs idle"));
}
