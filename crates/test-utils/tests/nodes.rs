//! The fixtures themselves: engines over the memory transport talk.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::time::Duration;

use safemeet_engine::MessageState;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_over_the_memory_transport_are_contacts_and_deliver() {
    let nodes = safemeet_test_utils::spawn_nodes(3).await;
    let (first, last) = (&nodes[0].1, &nodes[2].1);
    assert_eq!(first.contacts().await.unwrap().len(), 2);
    first.send_dm(last.user_id(), "over memory").await.unwrap();
    let mut log = first.log_watch();
    let delivered = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let done = first
                .dm_messages(last.user_id(), 10)
                .await
                .unwrap()
                .iter()
                .any(|m| m.text == "over memory" && m.state == MessageState::Delivered);
            if done {
                return;
            }
            log.changed().await.unwrap();
        }
    })
    .await;
    assert!(delivered.is_ok(), "the message was never delivered");
    for (_, engine) in &nodes {
        engine.shutdown().await.unwrap();
    }
}
