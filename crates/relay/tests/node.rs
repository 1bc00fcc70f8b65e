//! The relay node's event loop over a real TCP connection, with a store
//! whose flush the test holds: the receipt waits for the flush, the flush
//! runs off the runtime's threads while the swarm keeps being served, and
//! dropping the handle stops the node.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, identity::Keypair, noise, ping, tcp, yamux};
use safemeet_net::{MAILBOX_PROTOCOL, MailboxCodec};
use safemeet_proto::mailbox::{MailboxRequest, MailboxResponse, VERSION};
use safemeet_proto::{MailboxId, codec};
use safemeet_relay::node::{RelayConfig, RelayEvent, RelayHandle};
use safemeet_relay::{Limits, MailboxService, MailboxStore};
use safemeet_store::{Batch, Entry, Keyspace, MemoryStore, Store};
use tokio::sync::{mpsc, oneshot};

/// Every wait in these tests ends in a failure after this long.
const WAIT: Duration = Duration::from_secs(30);

/// What a [`GatedStore`] and its clones share; dropped with the last one.
struct Gate {
    inner: MemoryStore,
    /// Told when a flush starts (bounded: the test reads each).
    started: mpsc::Sender<()>,
    /// Each flush waits for one message here.
    release: Mutex<std::sync::mpsc::Receiver<()>>,
    /// Flushes that finished.
    flushed: AtomicUsize,
    /// Fired when the last clone of the store goes: the node let go of it.
    dropped: Mutex<Option<oneshot::Sender<()>>>,
}

impl Drop for Gate {
    fn drop(&mut self) {
        if let Some(tx) = self.dropped.lock().unwrap().take() {
            let _ = tx.send(());
        }
    }
}

/// A memory store whose `flush` blocks until the test releases it.
#[derive(Clone)]
struct GatedStore(Arc<Gate>);

struct Controls {
    started: mpsc::Receiver<()>,
    release: std::sync::mpsc::SyncSender<()>,
    dropped: oneshot::Receiver<()>,
}

fn gated() -> (GatedStore, Controls) {
    let (started_tx, started) = mpsc::channel(8);
    let (release, release_rx) = std::sync::mpsc::sync_channel(8);
    let (dropped_tx, dropped) = oneshot::channel();
    let gate = Gate {
        inner: MemoryStore::new(),
        started: started_tx,
        release: Mutex::new(release_rx),
        flushed: AtomicUsize::new(0),
        dropped: Mutex::new(Some(dropped_tx)),
    };
    (
        GatedStore(Arc::new(gate)),
        Controls {
            started,
            release,
            dropped,
        },
    )
}

impl Store for GatedStore {
    fn get(&self, ks: Keyspace, key: &[u8]) -> safemeet_store::Result<Option<Vec<u8>>> {
        self.0.inner.get(ks, key)
    }
    fn scan(
        &self,
        ks: Keyspace,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> safemeet_store::Result<Vec<Entry>> {
        self.0.inner.scan(ks, prefix, after, limit)
    }
    fn apply(&self, batch: Batch) -> safemeet_store::Result<()> {
        self.0.inner.apply(batch)
    }
    fn flush(&self) -> safemeet_store::Result<()> {
        self.0.started.try_send(()).unwrap();
        self.0
            .release
            .lock()
            .unwrap()
            .recv_timeout(WAIT)
            .expect("the test releases every flush");
        self.0.flushed.fetch_add(1, Ordering::SeqCst);
        self.0.inner.flush()
    }
}

async fn start_relay(store: GatedStore) -> (RelayHandle, Multiaddr) {
    let key = Keypair::generate_ed25519();
    let service = MailboxService::new(MailboxStore::new(store, Limits::default()), key.clone());
    let config = RelayConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        ..RelayConfig::default()
    };
    let mut relay = safemeet_relay::node::spawn(key, config, service).unwrap();
    let Some(RelayEvent::Listening(addr)) = tokio::time::timeout(WAIT, relay.events.recv())
        .await
        .unwrap()
    else {
        panic!("the relay did not listen")
    };
    (relay, addr)
}

/// A device: mailbox requests, and pings every 50 ms to see the relay's
/// swarm answer.
#[derive(NetworkBehaviour)]
struct Device {
    mailbox: request_response::Behaviour<MailboxCodec>,
    ping: ping::Behaviour,
}

fn device() -> libp2p::Swarm<Device> {
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|_| Device {
            mailbox: request_response::Behaviour::with_codec(
                MailboxCodec::default(),
                [(MAILBOX_PROTOCOL, ProtocolSupport::Outbound)],
                request_response::Config::default().with_request_timeout(WAIT),
            ),
            ping: ping::Behaviour::new(
                ping::Config::new().with_interval(Duration::from_millis(50)),
            ),
        })
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(WAIT))
        .build()
}

fn relay_peer(addr: &Multiaddr) -> PeerId {
    match addr.iter().last() {
        Some(libp2p::multiaddr::Protocol::P2p(peer)) => peer,
        _ => panic!("{addr} names no peer"),
    }
}

#[tokio::test]
async fn a_receipt_waits_for_its_flush_which_leaves_the_runtime_free() {
    // One runtime thread for the relay and the device alike: a flush on it
    // would stop both, and the pings below would never come.
    let (store, mut controls) = gated();
    let gate = store.0.clone();
    // The mailbox is open (as its owner would have opened it).
    let (mailbox, check) = (MailboxId::from_bytes([7; 32]), [5; 32]);
    let now = safemeet_proto::Timestamp::from_millis(1_800_000_000_000).unwrap();
    MailboxStore::new(store.clone(), Limits::default())
        .open(&mailbox, check, now)
        .unwrap();
    let (relay, addr) = start_relay(store).await;
    let peer = relay_peer(&addr);
    let mut device = device();
    device.dial(addr).unwrap();
    let envelope = vec![1; 100];
    let deposit = MailboxRequest::Deposit {
        version: VERSION,
        mailbox,
        tag: safemeet_crypto::mailbox::deposit_tag(&check, &peer.to_bytes(), &mailbox, &envelope),
        envelope,
    };
    device
        .behaviour_mut()
        .mailbox
        .send_request(&peer, codec::encode(&deposit).unwrap());

    let mut started = false;
    let mut pings_while_held = 0;
    let answer = tokio::time::timeout(WAIT, async {
        loop {
            tokio::select! {
                Some(()) = controls.started.recv(), if !started => started = true,
                event = device.select_next_some() => match event {
                    SwarmEvent::Behaviour(DeviceEvent::Ping(ping::Event { result: Ok(_), .. }))
                        if started =>
                    {
                        // The relay's swarm answers while the flush is held.
                        pings_while_held += 1;
                        if pings_while_held == 3 {
                            controls.release.send(()).unwrap();
                        }
                    }
                    SwarmEvent::Behaviour(DeviceEvent::Mailbox(request_response::Event::Message {
                        message: request_response::Message::Response { response, .. },
                        ..
                    })) => break response,
                    SwarmEvent::Behaviour(DeviceEvent::Mailbox(
                        request_response::Event::OutboundFailure { error, .. },
                    )) => panic!("the deposit failed: {error}"),
                    _ => {}
                },
            }
        }
    })
    .await
    .expect("a receipt after the flush");
    assert!(started, "the deposit was flushed");
    assert!(
        pings_while_held >= 3,
        "the receipt came while its flush was still held"
    );
    assert_eq!(gate.flushed.load(Ordering::SeqCst), 1);
    let response: MailboxResponse =
        codec::decode(&answer, safemeet_proto::mailbox::MAX_RESPONSE_BYTES).unwrap();
    assert!(
        matches!(response, MailboxResponse::Receipt(_)),
        "{response:?}"
    );
    relay.stop().await;
}

#[tokio::test]
async fn dropping_the_handle_stops_the_node() {
    let (store, controls) = gated();
    let (relay, _addr) = start_relay(store).await;
    drop(relay);
    // The node's task ends and lets go of the store.
    tokio::time::timeout(WAIT, controls.dropped)
        .await
        .expect("the node stopped")
        .unwrap();
}
