//! An outside observer: a bare rust-libp2p node that tries to learn what a
//! stranger can about SafeMeet rooms.
//!
//! It speaks stock identify (with SafeMeet's protocol string), Kademlia on
//! SafeMeet's protocol, and gossipsub in its most permissive form
//! (anonymous, no signatures, no validation): it subscribes to every topic
//! it hears of, and records every topic, message and graft it sees, and
//! the protocols each peer's identify lists. Tests connect it to engines or
//! daemons and check what it learned. [`Observer::spawn_on_lan`] also runs
//! mDNS and dials every peer it finds on the local network, as a stranger
//! on the same Wi-Fi would.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use libp2p::futures::StreamExt;
use libp2p::gossipsub::{self, IdentTopic, MessageAuthenticity, TopicHash, ValidationMode};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, identify, kad, mdns};
use tokio::sync::mpsc;

/// What the observer learned.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    /// Topics any peer announced.
    pub topics: HashSet<TopicHash>,
    /// Gossip messages received (on any topic).
    pub messages: usize,
    /// Whether any peer was ever in one of its meshes.
    pub grafted: bool,
    /// The protocols each identified peer listed.
    pub protocols: HashMap<PeerId, Vec<String>>,
    /// Peers that refused its gossipsub streams.
    pub gossip_refused: HashSet<PeerId>,
    /// Peers it is connected to now.
    pub connected: HashSet<PeerId>,
    /// Peers mDNS found (only with [`Observer::spawn_on_lan`]).
    pub discovered: HashSet<PeerId>,
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    identify: identify::Behaviour,
    kad: kad::Behaviour<kad::store::MemoryStore>,
    gossipsub: gossipsub::Behaviour<
        gossipsub::IdentityTransform,
        gossipsub::MaxCountSubscriptionFilter<gossipsub::AllowAllSubscriptionFilter>,
    >,
    mdns: Toggle<mdns::tokio::Behaviour>,
}

/// Anonymous messages have no source or sequence number: name them by
/// topic and content, or every one after the first is a duplicate.
fn content_id(message: &gossipsub::Message) -> gossipsub::MessageId {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    message.topic.hash(&mut hasher);
    message.data.hash(&mut hasher);
    gossipsub::MessageId::from(hasher.finish().to_be_bytes().to_vec())
}

/// A command to the observer's task.
enum Command {
    Dial(Multiaddr),
    Subscribe(String),
    Publish(String, Vec<u8>),
}

/// A running observer (its swarm runs on a task until dropped).
pub struct Observer {
    seen: Arc<Mutex<Seen>>,
    commands: mpsc::Sender<Command>,
    peer_id: PeerId,
}

/// How many topics the observer accepts from a peer (far more than a
/// SafeMeet node would ever need).
const MAX_TOPICS: usize = 100_000;

impl Observer {
    /// Starts an observer on the current tokio runtime, on 127.0.0.1.
    pub fn spawn() -> Self {
        Self::start(false)
    }

    /// Starts an observer that listens on every interface, runs mDNS and
    /// dials every peer it discovers.
    pub fn spawn_on_lan() -> Self {
        Self::start(true)
    }

    fn start(lan: bool) -> Self {
        let mut swarm = swarm(lan);
        let peer_id = *swarm.local_peer_id();
        let listen = if lan {
            "/ip4/0.0.0.0/tcp/0"
        } else {
            "/ip4/127.0.0.1/tcp/0"
        };
        swarm.listen_on(listen.parse().unwrap()).unwrap();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (commands, mut rx) = mpsc::channel(64);
        let state = seen.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    command = rx.recv() => match command {
                        Some(c) => run_command(&mut swarm, c),
                        None => break,
                    },
                    event = swarm.select_next_some() => on_event(&mut swarm, &state, event),
                }
            }
        });
        Self {
            seen,
            commands,
            peer_id,
        }
    }

    /// Its peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Dials an address.
    pub async fn dial(&self, addr: Multiaddr) {
        self.commands.send(Command::Dial(addr)).await.unwrap();
    }

    /// Subscribes to a topic (by its gossipsub name).
    pub async fn subscribe(&self, topic: String) {
        self.commands.send(Command::Subscribe(topic)).await.unwrap();
    }

    /// Publishes bytes on a topic (by its gossipsub name), best effort.
    pub async fn publish(&self, topic: String, data: Vec<u8>) {
        self.commands
            .send(Command::Publish(topic, data))
            .await
            .unwrap();
    }

    /// What it learned so far.
    pub fn seen(&self) -> Seen {
        self.seen.lock().unwrap().clone()
    }

    /// Waits (at most `wait`) until `check` holds for what it learned.
    pub async fn wait_for(&self, wait: Duration, check: impl FnMut(&Seen) -> bool) -> bool {
        crate::wait::wait_for_shared(&self.seen, wait, check).await
    }
}

fn swarm(lan: bool) -> Swarm<Behaviour> {
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            libp2p::tcp::Config::default(),
            libp2p::noise::Config::new,
            libp2p::yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|key| {
            let local = key.public().to_peer_id();
            let config = gossipsub::ConfigBuilder::default()
                .validation_mode(ValidationMode::None)
                .message_id_fn(content_id)
                .heartbeat_interval(Duration::from_millis(100))
                .heartbeat_initial_delay(Duration::from_millis(100))
                .max_transmit_size(1 << 20)
                .build()
                .unwrap();
            let filter = gossipsub::MaxCountSubscriptionFilter {
                filter: gossipsub::AllowAllSubscriptionFilter {},
                max_subscribed_topics: MAX_TOPICS,
                max_subscriptions_per_request: MAX_TOPICS,
            };
            let gossipsub = gossipsub::Behaviour::new_with_subscription_filter(
                MessageAuthenticity::Anonymous,
                config,
                filter,
            )
            .unwrap();
            Behaviour {
                identify: identify::Behaviour::new(identify::Config::new(
                    safemeet_net::IDENTIFY_PROTOCOL.to_owned(),
                    key.public(),
                )),
                kad: kad::Behaviour::with_config(
                    local,
                    kad::store::MemoryStore::new(local),
                    kad::Config::new(safemeet_net::KAD_PROTOCOL),
                ),
                gossipsub,
                // A stranger may ask as often as it likes. With the
                // default (every 5 minutes once any answer came) one
                // member whose mDNS was not up yet when the first query
                // went out would stay unfound for minutes.
                mdns: lan
                    .then(|| {
                        let config = mdns::Config {
                            query_interval: Duration::from_secs(1),
                            ..mdns::Config::default()
                        };
                        mdns::tokio::Behaviour::new(config, local).unwrap()
                    })
                    .into(),
            }
        })
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
        .build()
}

fn run_command(swarm: &mut Swarm<Behaviour>, command: Command) {
    match command {
        Command::Dial(addr) => {
            let _ = swarm.dial(addr);
        }
        Command::Subscribe(topic) => {
            let _ = swarm
                .behaviour_mut()
                .gossipsub
                .subscribe(&IdentTopic::new(topic));
        }
        Command::Publish(topic, data) => {
            let _ = swarm
                .behaviour_mut()
                .gossipsub
                .publish(IdentTopic::new(topic), data);
        }
    }
}

fn on_event(swarm: &mut Swarm<Behaviour>, seen: &Mutex<Seen>, event: SwarmEvent<BehaviourEvent>) {
    let mut seen = seen.lock().unwrap();
    match event {
        SwarmEvent::ConnectionEstablished { peer_id, .. } => {
            seen.connected.insert(peer_id);
        }
        SwarmEvent::ConnectionClosed {
            peer_id,
            num_established: 0,
            ..
        } => {
            seen.connected.remove(&peer_id);
        }
        SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
            peer_id,
            info,
            ..
        })) => {
            for addr in &info.listen_addrs {
                swarm
                    .behaviour_mut()
                    .kad
                    .add_address(&peer_id, addr.clone());
            }
            seen.protocols.insert(
                peer_id,
                info.protocols.iter().map(|p| p.to_string()).collect(),
            );
        }
        SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
            for (peer, addr) in found {
                seen.discovered.insert(peer);
                if !swarm.is_connected(&peer) {
                    let _ = swarm.dial(addr);
                }
            }
        }
        SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(event)) => match event {
            gossipsub::Event::Subscribed { topic, .. } => {
                // A stranger joins whatever it hears of.
                let _ = swarm
                    .behaviour_mut()
                    .gossipsub
                    .subscribe(&IdentTopic::new(topic.as_str()));
                seen.topics.insert(topic);
            }
            gossipsub::Event::Message { .. } => seen.messages += 1,
            gossipsub::Event::GossipsubNotSupported { peer_id } => {
                seen.gossip_refused.insert(peer_id);
            }
            _ => {}
        },
        _ => {}
    }
    if swarm
        .behaviour()
        .gossipsub
        .all_mesh_peers()
        .next()
        .is_some()
    {
        seen.grafted = true;
    }
}
