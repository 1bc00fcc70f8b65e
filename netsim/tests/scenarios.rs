//! End-to-end runs of small scenarios on the production nodes: a healthy
//! network passes its assertions, a broken link profile fails them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use safemeet_netsim::Mode;
use safemeet_netsim::scenario::Scenario;

fn scenario(link: &str, setup_timeout_s: u32) -> Scenario {
    scenario_with(link, setup_timeout_s, "")
}

fn scenario_with(link: &str, setup_timeout_s: u32, extra: &str) -> Scenario {
    Scenario::parse(&format!(
        r#"
name = "tiny"
seed = 5
[nodes]
count = 6
[topology]
kind = "random-k"
k = 2
[links.default]
{link}
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
setup_timeout_s = {setup_timeout_s}
[assert]
delivery_min = 1.0
p99_ms_max = 1500
valid = false
{extra}
"#
    ))
    .unwrap()
}

async fn run(s: Scenario) -> safemeet_netsim::report::Report {
    safemeet_netsim::simulate(s, Mode::Engine, &|_, _, _| {})
        .await
        .unwrap()
}

/// Every member but the room's creator leaves at 1 s; all are invited back
/// at 2 s.
const CHURN: &str = r#"
[[faults]]
kind = "leave"
at_s = 1
fraction = 1.0
[[faults]]
kind = "join"
at_s = 2
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_network_passes() {
    // The room (4 members) would go by direct fan-out: put it on gossip,
    // so the meshes are measured.
    let mut s = scenario("latency_ms = 10\njitter_ms = 2", 60);
    s.node.direct_room_max_devices = 0;
    let report = run(s).await;
    assert!(report.passed, "{}", report.summary());
    assert_eq!(report.run.delivery_ratio, 1.0);
    assert!(report.run.latency.p50_ms.unwrap() >= 10.0);
    let mesh = report.run.time_to_mesh_s.expect("meshes formed");
    assert!(mesh > 0.0 && mesh <= report.run.phases.workload_start_s + 4.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_leave_and_come_back_and_get_what_is_sent_while_they_are_in() {
    let s = scenario_with("latency_ms = 10\njitter_ms = 2", 60, CHURN);
    for mode in [Mode::Engine, Mode::Baseline] {
        let report = safemeet_netsim::simulate(s.clone(), mode, &|_, _, _| {})
            .await
            .unwrap();
        let f = &report.run;
        assert!(report.passed, "{mode:?}: {}", report.summary());
        assert_eq!(f.delivery_ratio, 1.0);
        assert!(!f.phases.leaves.is_empty(), "{mode:?}: nobody left");
        assert_eq!(f.phases.joins.len(), f.phases.leaves.len());
        assert_eq!(f.joins_unsettled, 0, "{mode:?}: {}", report.summary());
        assert_eq!(f.join_time_s.len(), f.phases.joins.len());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_link_profile_fails_the_run() {
    let report = run(scenario("latency_ms = 400\nloss = 0.3", 15)).await;
    assert!(!report.passed, "{}", report.summary());
    assert!(
        report.failures.iter().any(|f| f.starts_with("p99")),
        "{:?}",
        report.failures
    );
}
