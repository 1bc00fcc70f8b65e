//! The gossip gate seen from the other end of the connection: a node on
//! 127.0.0.1 and bare rust-libp2p peers (identify and stock gossipsub)
//! that count every connection opened and closed with it.
//!
//! A peer allowed, disallowed and allowed again ends with one working
//! gossip connection (gossip flows both ways on it) after exactly the
//! reconnections the gate owes it, and then nothing more happens for a
//! while (no close/redial loop). A hostile peer that reconnects in a
//! tight loop while not allowed never gets a gossipsub stream and is
//! never dialled by the node, however the allow-set changes meanwhile.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::time::Duration;

use data_encoding::HEXLOWER;
use futures::StreamExt;
use libp2p::gossipsub::{self, IdentTopic, MessageAuthenticity, ValidationMode};
use libp2p::identity::Keypair;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, identify};
use safemeet_net::{Config, Event, Handle, RoomTopic};
use safemeet_proto::Envelope;
use safemeet_proto::envelope::SealedRoomEnvelope;
use tokio::sync::mpsc;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(20);
/// How long a settled connection is watched for a close or an open that
/// should not happen: many gossip heartbeats (100 ms) and identify rounds.
const QUIET: Duration = Duration::from_secs(2);
const TOPIC: [u8; 32] = [0x5a; 32];

fn frame(tag: u8) -> Vec<u8> {
    Envelope::Room(SealedRoomEnvelope {
        nonce: [1; 24],
        hint: [2; 8],
        sealed: vec![tag; 100],
    })
    .to_frame()
    .unwrap()
}

fn topic_name() -> String {
    HEXLOWER.encode(&TOPIC)
}

/// The node under test, subscribed to [`TOPIC`].
async fn node() -> (Handle, mpsc::Receiver<Event>, Multiaddr) {
    let (net, mut events) =
        safemeet_net::spawn(Keypair::generate_ed25519(), Config::loopback()).unwrap();
    let addr = timeout(WAIT, async {
        loop {
            if let Some(Event::Listening(addr)) = events.recv().await {
                return addr;
            }
        }
    })
    .await
    .expect("the node listens");
    net.subscribe(RoomTopic::from_bytes(TOPIC)).await.unwrap();
    let addr = safemeet_net::dialable(&addr, net.peer_id());
    (net, events, addr)
}

/// What a bare peer saw of the node.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Note {
    /// A connection opened; `dialer`: this peer dialled it.
    Opened {
        dialer: bool,
    },
    Closed,
    /// The node refused this peer's gossipsub stream.
    Refused,
    /// The node announced a topic.
    Subscribed,
    /// A gossip message from the node.
    Message(Vec<u8>),
    /// The node's identify info, which lists gossipsub.
    OffersGossip,
}

#[derive(NetworkBehaviour)]
struct PeerBehaviour {
    identify: identify::Behaviour,
    gossipsub: gossipsub::Behaviour,
}

enum Command {
    Dial(Multiaddr),
    Publish(Vec<u8>),
}

/// A bare peer on a task: what it sees of `node` comes out as [`Note`]s.
struct Peer {
    id: PeerId,
    /// Where it listens (with its peer id).
    addr: Multiaddr,
    commands: mpsc::Sender<Command>,
    notes: mpsc::Receiver<Note>,
}

/// `hostile`: after each connection to the node is refused gossip, hang up
/// and dial again at once, `hostile` times.
async fn peer(node: PeerId, hostile: usize) -> Peer {
    let mut swarm = bare_swarm();
    let id = *swarm.local_peer_id();
    swarm
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .unwrap();
    let addr = timeout(WAIT, async {
        loop {
            if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                return safemeet_net::dialable(&address, id);
            }
        }
    })
    .await
    .expect("the peer listens");
    swarm
        .behaviour_mut()
        .gossipsub
        .subscribe(&IdentTopic::new(topic_name()))
        .unwrap();
    let (commands, mut rx) = mpsc::channel(16);
    let (tx, notes) = mpsc::channel(10_000);
    tokio::spawn(async move {
        let mut node_addr = None;
        let mut redials = hostile;
        loop {
            let event = tokio::select! {
                command = rx.recv() => {
                    match command {
                        Some(Command::Dial(addr)) => {
                            node_addr = Some(addr.clone());
                            swarm.dial(addr).unwrap();
                        }
                        Some(Command::Publish(data)) => {
                            let _ = swarm
                                .behaviour_mut()
                                .gossipsub
                                .publish(IdentTopic::new(topic_name()), data);
                        }
                        None => return,
                    }
                    continue;
                }
                event = swarm.select_next_some() => event,
            };
            let note = match event {
                SwarmEvent::ConnectionEstablished {
                    peer_id, endpoint, ..
                } if peer_id == node => Note::Opened {
                    dialer: endpoint.is_dialer(),
                },
                SwarmEvent::ConnectionClosed { peer_id, .. } if peer_id == node => {
                    if redials > 0 {
                        redials -= 1;
                        if let Some(addr) = node_addr.clone() {
                            let _ = swarm.dial(addr);
                        }
                    }
                    Note::Closed
                }
                SwarmEvent::Behaviour(PeerBehaviourEvent::Gossipsub(event)) => match event {
                    gossipsub::Event::GossipsubNotSupported { peer_id } if peer_id == node => {
                        if hostile > 0 {
                            let _ = swarm.disconnect_peer_id(node);
                        }
                        Note::Refused
                    }
                    gossipsub::Event::Subscribed { peer_id, .. } if peer_id == node => {
                        Note::Subscribed
                    }
                    gossipsub::Event::Message { message, .. } => Note::Message(message.data),
                    _ => continue,
                },
                SwarmEvent::Behaviour(PeerBehaviourEvent::Identify(event)) => match event {
                    identify::Event::Received { peer_id, info, .. }
                        if peer_id == node
                            && info
                                .protocols
                                .iter()
                                .any(|p| p.as_ref().contains("meshsub")) =>
                    {
                        Note::OffersGossip
                    }
                    _ => continue,
                },
                _ => continue,
            };
            let _ = tx.try_send(note);
        }
    });
    Peer {
        id,
        addr,
        commands,
        notes,
    }
}

fn bare_swarm() -> Swarm<PeerBehaviour> {
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            libp2p::tcp::Config::default(),
            libp2p::noise::Config::new,
            libp2p::yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|key| {
            let config = gossipsub::ConfigBuilder::default()
                .validation_mode(ValidationMode::Anonymous)
                .message_id_fn(|m: &gossipsub::Message| {
                    gossipsub::MessageId::from(blake3::hash(&m.data).as_bytes().to_vec())
                })
                .heartbeat_interval(Duration::from_millis(100))
                .heartbeat_initial_delay(Duration::from_millis(100))
                .max_transmit_size(1 << 20)
                .build()
                .unwrap();
            PeerBehaviour {
                identify: identify::Behaviour::new(identify::Config::new(
                    safemeet_net::IDENTIFY_PROTOCOL.to_owned(),
                    key.public(),
                )),
                gossipsub: gossipsub::Behaviour::new(MessageAuthenticity::Anonymous, config)
                    .unwrap(),
            }
        })
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
        .build()
}

impl Peer {
    async fn dial(&self, addr: &Multiaddr) {
        self.commands
            .send(Command::Dial(addr.clone()))
            .await
            .unwrap();
    }

    /// Waits for `want`, counting the opens and closes seen on the way.
    async fn until(&mut self, want: Note, tally: &mut Tally) {
        self.until_all(&[want], tally).await;
    }

    /// Waits until each of `want` is seen, in any order.
    async fn until_all(&mut self, want: &[Note], tally: &mut Tally) {
        let mut missing = want.to_vec();
        timeout(WAIT, async {
            while !missing.is_empty() {
                let note = self.notes.recv().await.expect("the peer runs");
                tally.add(&note);
                missing.retain(|m| *m != note);
            }
        })
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {want:?}; so far {tally:?}"));
    }

    /// Watches for `window`: the opens and closes in it.
    async fn quiet(&mut self, window: Duration) -> Tally {
        let mut tally = Tally::default();
        // Runs until the window ends (the peer's notes never end first).
        let _ = timeout(window, async {
            while let Some(note) = self.notes.recv().await {
                tally.add(&note);
            }
        })
        .await;
        tally
    }
}

/// Connections opened (by whom) and closed, refused gossipsub streams and
/// topic announcements.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Tally {
    dialled: usize,
    dialled_by_node: usize,
    closed: usize,
    refused: usize,
    subscribed: usize,
}

impl Tally {
    fn add(&mut self, note: &Note) {
        match note {
            Note::Opened { dialer: true } => self.dialled += 1,
            Note::Opened { dialer: false } => self.dialled_by_node += 1,
            Note::Closed => self.closed += 1,
            Note::Refused => self.refused += 1,
            Note::Subscribed => self.subscribed += 1,
            _ => {}
        }
    }
}

/// Gossip flows both ways between the node and the peer: the mesh forms,
/// a frame published by each reaches the other.
async fn gossip_works(net: &Handle, events: &mut mpsc::Receiver<Event>, peer: &mut Peer, tag: u8) {
    let topic = RoomTopic::from_bytes(TOPIC);
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    timeout(WAIT, async {
        while net.mesh_peers(topic.clone()).await.unwrap() == 0 {
            tick.tick().await;
        }
    })
    .await
    .expect("the node grafts the peer");
    net.publish(topic, frame(tag)).await.unwrap();
    peer.until(Note::Message(frame(tag)), &mut Tally::default())
        .await;
    peer.commands
        .send(Command::Publish(frame(tag + 1)))
        .await
        .unwrap();
    timeout(WAIT, async {
        loop {
            if let Some(Event::Gossip { frame: f, via, .. }) = events.recv().await
                && via == peer.id
                && f == frame(tag + 1)
            {
                return;
            }
        }
    })
    .await
    .expect("the node gets the peer's frame");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_allowed_disallowed_and_allowed_again_ends_with_one_gossip_connection() {
    let (net, mut events, addr) = node().await;
    let mut bob = peer(net.peer_id(), 0).await;

    // The node reaches Bob before he is allowed: a gated connection.
    net.dial(bob.addr.clone()).await.unwrap();
    let mut t = Tally::default();
    bob.until(Note::Refused, &mut t).await;
    assert_eq!(
        (t.dialled_by_node, t.closed, t.subscribed),
        (1, 0, 0),
        "{t:?}"
    );

    // Allowed while connected: the gated connection is closed once and the
    // node dials him back once, with gossip.
    net.allow_gossip(vec![bob.id]).await.unwrap();
    let mut t = Tally::default();
    // Bob may see the new connection before the old one's close: wait for
    // both.
    bob.until_all(&[Note::Subscribed, Note::Closed], &mut t)
        .await;
    assert_eq!(
        (t.closed, t.dialled_by_node, t.dialled),
        (1, 1, 0),
        "one close, one redial: {t:?}"
    );
    gossip_works(&net, &mut events, &mut bob, 1).await;
    // The same set again, and a larger one: the connection stays.
    net.allow_gossip(vec![bob.id]).await.unwrap();
    net.allow_gossip(vec![bob.id, PeerId::random()])
        .await
        .unwrap();
    let t = bob.quiet(QUIET).await;
    assert_eq!((t.closed, t.dialled_by_node), (0, 0), "{t:?}");

    // Disallowed: the gossip connection is closed, and not redialled.
    net.allow_gossip(vec![]).await.unwrap();
    let mut t = Tally::default();
    bob.until(Note::Closed, &mut t).await;
    let t = bob.quiet(QUIET).await;
    assert_eq!(t, Tally::default(), "no redial of a disallowed peer: {t:?}");

    // Allowed again with no connection: the next connection (his, here)
    // speaks gossip at once; nothing is closed.
    net.allow_gossip(vec![bob.id]).await.unwrap();
    bob.dial(&addr).await;
    let mut t = Tally::default();
    bob.until(Note::Subscribed, &mut t).await;
    assert_eq!((t.dialled, t.closed, t.refused), (1, 0, 0), "{t:?}");
    gossip_works(&net, &mut events, &mut bob, 3).await;

    // Settled: one connection, and it stays that way.
    let t = bob.quiet(QUIET).await;
    assert_eq!((t.closed, t.dialled, t.dialled_by_node), (0, 0, 0), "{t:?}");
    assert_eq!(net.connected_peers().await.unwrap(), vec![bob.id]);
    net.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_reconnecting_in_a_loop_gets_no_gossip_and_is_never_dialled() {
    const ROUNDS: usize = 40;
    let (net, _events, addr) = node().await;
    let mut eve = peer(net.peer_id(), ROUNDS).await;
    eve.dial(&addr).await;
    // Meanwhile the node's allow-set changes, over and over, without her.
    let churn = {
        let net = net.clone();
        tokio::spawn(async move {
            let others: Vec<PeerId> = (0..8).map(|_| PeerId::random()).collect();
            for i in 0..200 {
                net.allow_gossip(others[..i % others.len()].to_vec())
                    .await
                    .unwrap();
                tokio::task::yield_now().await;
            }
        })
    };
    let mut t = Tally::default();
    timeout(WAIT, async {
        while t.closed < ROUNDS + 1 {
            let note = eve.notes.recv().await.expect("eve runs");
            assert_ne!(note, Note::OffersGossip, "identify offered her gossipsub");
            assert!(!matches!(note, Note::Message(_)), "she got a frame");
            t.add(&note);
        }
    })
    .await
    .unwrap_or_else(|_| panic!("eve's rounds did not finish: {t:?}"));
    churn.await.unwrap();
    let later = eve.quiet(QUIET).await;
    assert_eq!(later, Tally::default(), "nothing after her last round");
    assert_eq!(t.dialled, ROUNDS + 1, "{t:?}");
    assert_eq!(t.dialled_by_node, 0, "the node never dialled her: {t:?}");
    assert_eq!(t.subscribed, 0, "she learned a topic: {t:?}");
    assert_eq!(
        t.refused,
        ROUNDS + 1,
        "every connection refused her gossipsub: {t:?}"
    );
    assert!(!net.gossip_peers().await.unwrap().contains(&eve.id));
    net.shutdown().await.unwrap();
}
