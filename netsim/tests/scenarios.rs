//! End-to-end runs of small scenarios on the production nodes: a healthy
//! network passes its assertions, a broken link profile fails them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use safemeet_netsim::Mode;
use safemeet_netsim::scenario::Scenario;

fn scenario(link: &str, setup_timeout_s: u32) -> Scenario {
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
"#
    ))
    .unwrap()
}

async fn run(s: Scenario) -> safemeet_netsim::report::Report {
    safemeet_netsim::simulate(s, Mode::Engine, &|_, _, _| {})
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_network_passes() {
    let report = run(scenario("latency_ms = 10\njitter_ms = 2", 60)).await;
    assert!(report.passed, "{}", report.summary());
    assert_eq!(report.run.delivery_ratio, 1.0);
    assert!(report.run.latency.p50_ms.unwrap() >= 10.0);
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
