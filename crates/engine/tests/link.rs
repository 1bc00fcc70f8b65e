//! Linking a device against a hostile network: real libp2p on the memory
//! transport. A stranger who knows where the linking device listens, but
//! not the link's secret, floods link streams with junk, announces a frame
//! larger than any, stalls a handshake, and tries a wrong secret; the
//! right link still works, once, and the new device takes in what it was
//! sent.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::{Multiaddr, PeerId};
use safemeet_crypto::account::Account;
use safemeet_engine::link::{bundle_account, import_bundle};
use safemeet_engine::link_io::receive_bundle;
use safemeet_proto::clock::{Clock, SystemClock};
use safemeet_proto::link::LinkOffer;
use safemeet_test_utils::{Device, spawn_nodes};

const WAIT: Duration = Duration::from_secs(30);

fn target(offer: &LinkOffer) -> (PeerId, Vec<Multiaddr>) {
    let peer = PeerId::from_bytes(&offer.peer_id).unwrap();
    let addrs = offer.addrs.iter().map(|a| a.parse().unwrap()).collect();
    (peer, addrs)
}

/// Whether the other side closes the stream (reads to its end) in time.
async fn closed_by_them(stream: &mut libp2p::Stream) -> bool {
    let mut buf = [0u8; 64];
    let read = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(WAIT, read).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_survives_junk_stalls_and_wrong_secrets_then_works_once() {
    let nodes = spawn_nodes(2).await;
    let (alice, bob) = (&nodes[0].1, &nodes[1].1);
    alice
        .send_dm(bob.user_id(), "before the link")
        .await
        .unwrap();
    let offer = LinkOffer::from_text(&alice.link_offer(false).await.unwrap().link).unwrap();
    let (peer, addrs) = target(&offer);

    // A frame announced larger than any: the stream is closed.
    let mut huge = safemeet_net::dial_link(peer, &addrs, WAIT, None)
        .await
        .unwrap();
    huge.stream
        .write_all(&u32::MAX.to_be_bytes())
        .await
        .unwrap();
    let _ = huge.stream.flush().await;
    assert!(closed_by_them(&mut huge.stream).await);

    // Junk where the handshake's first message goes: closed.
    let mut junk = safemeet_net::dial_link(peer, &addrs, WAIT, None)
        .await
        .unwrap();
    junk.stream.write_all(&40u32.to_be_bytes()).await.unwrap();
    junk.stream.write_all(&[7u8; 40]).await.unwrap();
    let _ = junk.stream.flush().await;
    assert!(closed_by_them(&mut junk.stream).await);

    // Stalls hold a slot each, not the link.
    let mut stalled = safemeet_net::dial_link(peer, &addrs, WAIT, None)
        .await
        .unwrap();
    let mut flood = Vec::new();
    for _ in 0..12 {
        flood.push(
            safemeet_net::dial_link(peer, &addrs, WAIT, None)
                .await
                .unwrap(),
        );
    }

    // A wrong secret is refused, and uses nothing up.
    let mut wrong = offer.clone();
    wrong.secret[5] ^= 0x40;
    let err = receive_bundle(&wrong, 30, SystemClock.now())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("refused the link"), "{err}");
    assert_eq!(alice.devices().await.unwrap().len(), 1);

    // The right one works, with the staller still there.
    let bundle = receive_bundle(&offer, 30, SystemClock.now()).await.unwrap();
    assert_eq!(alice.devices().await.unwrap().len(), 2);
    // ...once.
    let err = receive_bundle(&offer, 30, SystemClock.now())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("refused the link"), "{err}");
    assert!(closed_by_them(&mut stalled.stream).await);
    drop(flood);

    // The new device takes it in: Alice's contact and the history.
    let account = Account::from_record(&bundle_account(&bundle).unwrap()).unwrap();
    assert_eq!(account.user_id(), alice.user_id());
    assert!(!account.has_master_key());
    let new = Device::from_account("alice2", &account);
    let now = safemeet_engine::Now {
        wall: SystemClock.now(),
        mono: Duration::ZERO,
    };
    let summary = import_bundle(new.machine(), &bundle, &offer.addrs, now, None).unwrap();
    assert_eq!(summary.contacts, 1);
    assert_eq!(summary.messages, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_device_with_the_master_key_shows_links() {
    let nodes = spawn_nodes(1).await;
    let alice = &nodes[0].1;
    let offer = LinkOffer::from_text(&alice.link_offer(false).await.unwrap().link).unwrap();
    let bundle = receive_bundle(&offer, 0, SystemClock.now()).await.unwrap();
    let account = Account::from_record(&bundle_account(&bundle).unwrap()).unwrap();
    let new = Device::from_account("alice2", &account);
    let config = safemeet_engine::Config {
        net: safemeet_net::Config {
            listen: vec!["/memory/0".parse().unwrap()],
            ..safemeet_net::Config::loopback()
        },
        ..safemeet_engine::Config::default()
    };
    let second = safemeet_engine::start(new.machine(), config).unwrap();
    let err = second.link_offer(false).await.unwrap_err().to_string();
    assert!(err.contains("master key"), "{err}");
    second.shutdown().await.unwrap();
}
