//! Profile updates between contacts, over real TCP on 127.0.0.1, against a
//! puppet contact (`safemeet_test_utils::puppet`) that signs versions of
//! its profile and sends them in the order the test chooses: the newest
//! version held wins, a late older one changes nothing, and a profile that
//! is not the sender's own is refused.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::time::Duration;

use libp2p::Multiaddr;
use safemeet_net::Config as NetConfig;
use safemeet_proto::clock::{Clock, SystemClock};
use safemeet_proto::event::ToDeviceEvent;
use safemeet_test_utils::puppet::Puppet;
use safemeet_test_utils::{Device, wait_until};

async fn bob_and_alice() -> (Device, safemeet_engine::Handle, Multiaddr, Puppet) {
    let device = Device::new("bob", SystemClock.now());
    let config = safemeet_engine::Config {
        net: NetConfig::loopback(),
        retry_initial: Duration::from_millis(100),
        retry_max: Duration::from_millis(500),
        ..safemeet_engine::Config::default()
    };
    let bob = safemeet_engine::start(device.machine(), config).unwrap();
    let addrs = wait_until(
        "the engine to listen",
        || async { bob.listen_addrs().await.unwrap() },
        |a| !a.is_empty(),
    )
    .await;
    let addr = safemeet_net::dialable(&addrs[0], bob.peer_id());
    let mut alice = Puppet::spawn("alice").await;
    alice.add(&bob.invite().await.unwrap());
    bob.add_contact(&alice.invite(), None).await.unwrap();
    (device, bob, addr, alice)
}

async fn display_name(bob: &safemeet_engine::Handle) -> String {
    bob.contacts().await.unwrap()[0].display_name.clone()
}

#[tokio::test]
async fn the_newest_profile_wins_and_a_late_older_one_changes_nothing() {
    let (_device, bob, addr, mut alice) = bob_and_alice().await;
    assert_eq!(display_name(&bob).await, "alice");

    // Versions 2 and 3 are signed; 3 arrives first.
    let v2 = alice.next_profile("Alice Two");
    let v3 = alice.next_profile("Alice Three");
    let late = alice.to_device(bob.user_id(), ToDeviceEvent::ProfileUpdate(v2));
    let first = alice.to_device(bob.user_id(), ToDeviceEvent::ProfileUpdate(v3.clone()));
    assert_eq!(alice.deliver(bob.peer_id(), &addr, first).await, "ok");
    assert_eq!(display_name(&bob).await, "Alice Three");
    // Version 2, late: it decrypts (the Olm message is genuine), and
    // changes nothing.
    alice.deliver(bob.peer_id(), &addr, late).await;
    assert_eq!(display_name(&bob).await, "Alice Three");
    // The same version again: nothing.
    let again = alice.to_device(bob.user_id(), ToDeviceEvent::ProfileUpdate(v3));
    alice.deliver(bob.peer_id(), &addr, again).await;
    assert_eq!(display_name(&bob).await, "Alice Three");

    // A flood of versions: the last one is what is held.
    for n in 4..40 {
        let next = alice.next_profile(&format!("Alice {n}"));
        let frame = alice.to_device(bob.user_id(), ToDeviceEvent::ProfileUpdate(next));
        assert_eq!(alice.deliver(bob.peer_id(), &addr, frame).await, "ok");
    }
    assert_eq!(display_name(&bob).await, "Alice 39");
}

#[tokio::test]
async fn a_profile_that_is_not_the_senders_own_is_refused() {
    let (_device, bob, addr, mut alice) = bob_and_alice().await;
    // Carol's genuine profile, signed by Carol, sent by Alice: whoever
    // sends it, a profile speaks only for its own user.
    let mut carol = Puppet::spawn("carol").await;
    bob.add_contact(&carol.invite(), None).await.unwrap();
    let carols = carol.next_profile("Carol, passed on");
    let lie = alice.to_device(bob.user_id(), ToDeviceEvent::ProfileUpdate(carols));
    assert_eq!(alice.deliver(bob.peer_id(), &addr, lie).await, "refused");
    let contacts = bob.contacts().await.unwrap();
    let names: Vec<&str> = contacts.iter().map(|c| c.display_name.as_str()).collect();
    assert_eq!(names, ["alice", "carol"]);
}
