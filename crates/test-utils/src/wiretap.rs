//! A wiretap device: a bare rust-libp2p swarm that runs with the libp2p
//! keypair of a real, certified member device, and records every frame
//! that reaches it.
//!
//! To every peer it *is* that device (Noise proves the key): member
//! engines deliver to it over `/safemeet/deliver/1`, and their gossip gate
//! lets it gossip exactly as it would the device. It answers every
//! delivery `ok`, as a device that stored the frame would (so senders do
//! not retry for ever), and speaks gossipsub with SafeMeet's
//! configuration, in its most permissive form: anonymous, subscribed to
//! every topic any peer announces, and to every topic it is told of. It
//! never decrypts anything; tests read what it recorded, each frame with
//! its path: direct delivery, or gossip and the topic.
//!
//! It also speaks identify (so the engines learn where it listens) and
//! ping. Its swarm runs on a task that ends when the [`Wiretap`] is
//! dropped.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use libp2p::futures::StreamExt;
use libp2p::gossipsub::{self, IdentTopic, MessageAuthenticity, TopicHash};
use libp2p::identity::Keypair;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, identify, ping};
use safemeet_net::{DELIVER_PROTOCOL, FrameCodec};
use safemeet_proto::{DeliverAnswer, RoomTopic};
use tokio::sync::mpsc;

/// How a frame reached the wiretap.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Path {
    /// A `/safemeet/deliver/1` request.
    Direct,
    /// A gossip message on this topic.
    Gossip(TopicHash),
}

/// One frame the wiretap received.
#[derive(Debug, Clone)]
pub struct Heard {
    /// How it came.
    pub path: Path,
    /// The peer that handed it over (for gossip, the forwarding peer).
    pub from: PeerId,
    /// The frame, as received.
    pub frame: Vec<u8>,
}

/// What the wiretap recorded.
#[derive(Debug, Default, Clone)]
pub struct Tapped {
    /// Every frame received, in order.
    pub frames: Vec<Heard>,
    /// Topics any peer announced.
    pub topics: HashSet<TopicHash>,
    /// Peers it is connected to now.
    pub connected: HashSet<PeerId>,
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    gossipsub: gossipsub::Behaviour<
        gossipsub::IdentityTransform,
        gossipsub::MaxCountSubscriptionFilter<gossipsub::AllowAllSubscriptionFilter>,
    >,
    deliver: request_response::Behaviour<FrameCodec>,
}

enum Command {
    Dial(Multiaddr),
    Subscribe(String),
}

/// A running wiretap (its swarm runs on a task until dropped).
pub struct Wiretap {
    tapped: Arc<Mutex<Tapped>>,
    commands: mpsc::Sender<Command>,
    peer_id: PeerId,
}

/// How many topics it accepts from a peer (far more than a SafeMeet node
/// would ever announce).
const MAX_TOPICS: usize = 100_000;
/// Its gossip heartbeat: as fast as a loopback test engine's.
const HEARTBEAT: Duration = Duration::from_millis(100);
/// How long it keeps trying to listen on an address another process (a
/// stopped engine) may not have released yet.
const LISTEN_WAIT: Duration = Duration::from_secs(10);

impl Wiretap {
    /// Starts a wiretap with `keypair` listening on `listen` (say, the
    /// address the device's engine listened on, so peers that knew it
    /// reach the wiretap there), on the current tokio runtime.
    pub async fn spawn(keypair: Keypair, listen: Multiaddr) -> Self {
        let mut swarm = swarm(keypair);
        let peer_id = *swarm.local_peer_id();
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        tokio::time::timeout(LISTEN_WAIT, async {
            while swarm.listen_on(listen.clone()).is_err() {
                tick.tick().await;
            }
        })
        .await
        .expect("the wiretap listens");
        let tapped = Arc::new(Mutex::new(Tapped::default()));
        let (commands, mut rx) = mpsc::channel(64);
        let state = tapped.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    command = rx.recv() => match command {
                        Some(Command::Dial(addr)) => {
                            let _ = swarm.dial(addr);
                        }
                        Some(Command::Subscribe(topic)) => {
                            let _ = swarm
                                .behaviour_mut()
                                .gossipsub
                                .subscribe(&IdentTopic::new(topic));
                        }
                        None => break,
                    },
                    event = swarm.select_next_some() => on_event(&mut swarm, &state, event),
                }
            }
        });
        Self {
            tapped,
            commands,
            peer_id,
        }
    }

    /// Its peer id: the device's.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Dials an address.
    pub async fn dial(&self, addr: Multiaddr) {
        self.commands.send(Command::Dial(addr)).await.unwrap();
    }

    /// Subscribes to a room's topic: say, one the device knew, kept after
    /// it should have dropped it.
    pub async fn subscribe(&self, topic: &RoomTopic) {
        let name = topic_name(topic);
        self.commands.send(Command::Subscribe(name)).await.unwrap();
    }

    /// What it recorded so far.
    pub fn tapped(&self) -> Tapped {
        self.tapped.lock().unwrap().clone()
    }

    /// Waits (at most `wait`) until `check` holds for what it recorded.
    pub async fn wait_for(&self, wait: Duration, check: impl FnMut(&Tapped) -> bool) -> bool {
        crate::wait::wait_for_shared(&self.tapped, wait, check).await
    }
}

/// A room topic's gossipsub name, as SafeMeet nodes spell it: its bytes
/// in lowercase hex.
pub fn topic_name(topic: &RoomTopic) -> String {
    topic
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A room topic's gossipsub hash, as a [`Path::Gossip`] names it.
pub fn topic_hash(topic: &RoomTopic) -> TopicHash {
    IdentTopic::new(topic_name(topic)).hash()
}

fn swarm(keypair: Keypair) -> Swarm<Behaviour> {
    libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            libp2p::tcp::Config::default(),
            libp2p::noise::Config::new,
            libp2p::yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|key| {
            // SafeMeet's own gossip settings (same message ids), forwarding
            // at once: there is no application to validate.
            let config = safemeet_net::gossip_config(HEARTBEAT, false).unwrap();
            let filter = gossipsub::MaxCountSubscriptionFilter {
                filter: gossipsub::AllowAllSubscriptionFilter {},
                max_subscribed_topics: MAX_TOPICS,
                max_subscriptions_per_request: MAX_TOPICS,
            };
            Behaviour {
                identify: identify::Behaviour::new(identify::Config::new(
                    safemeet_net::IDENTIFY_PROTOCOL.to_owned(),
                    key.public(),
                )),
                ping: ping::Behaviour::default(),
                gossipsub: gossipsub::Behaviour::new_with_subscription_filter(
                    MessageAuthenticity::Anonymous,
                    config,
                    filter,
                )
                .unwrap(),
                deliver: request_response::Behaviour::with_codec(
                    FrameCodec::default(),
                    [(DELIVER_PROTOCOL, ProtocolSupport::Full)],
                    request_response::Config::default(),
                ),
            }
        })
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
        .build()
}

fn on_event(
    swarm: &mut Swarm<Behaviour>,
    tapped: &Mutex<Tapped>,
    event: SwarmEvent<BehaviourEvent>,
) {
    let mut tapped = tapped.lock().unwrap();
    match event {
        SwarmEvent::ConnectionEstablished { peer_id, .. } => {
            tapped.connected.insert(peer_id);
        }
        SwarmEvent::ConnectionClosed {
            peer_id,
            num_established: 0,
            ..
        } => {
            tapped.connected.remove(&peer_id);
        }
        SwarmEvent::Behaviour(BehaviourEvent::Deliver(request_response::Event::Message {
            peer,
            message:
                request_response::Message::Request {
                    request, channel, ..
                },
            ..
        })) => {
            tapped.frames.push(Heard {
                path: Path::Direct,
                from: peer,
                frame: request,
            });
            // Stored, as far as the sender can tell.
            let _ = swarm
                .behaviour_mut()
                .deliver
                .send_response(channel, DeliverAnswer::Ack.to_bytes().to_vec());
        }
        SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(event)) => match event {
            gossipsub::Event::Subscribed { topic, .. } => {
                // It joins whatever it hears of.
                let _ = swarm
                    .behaviour_mut()
                    .gossipsub
                    .subscribe(&IdentTopic::new(topic.as_str()));
                tapped.topics.insert(topic);
            }
            gossipsub::Event::Message {
                propagation_source,
                message,
                ..
            } => {
                tapped.frames.push(Heard {
                    path: Path::Gossip(message.topic),
                    from: propagation_source,
                    frame: message.data,
                });
            }
            _ => {}
        },
        _ => {}
    }
}
