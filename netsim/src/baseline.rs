//! The baseline: the same plan with raw gossipsub and request-response, no
//! engine and no encryption, over the same modelled transport (Noise +
//! yamux included). Room messages are published on a topic per room; DMs
//! are one request to the recipient. Reports state the production run's
//! figures as ratios to these.
//!
//! Gossipsub has the production node's configuration
//! ([`safemeet_net::gossip_config`]: anonymous, content-hash ids, mesh
//! 4/2/8, flood publish, same heartbeat), except that messages are
//! forwarded at once: there is no application to validate them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::SwarmEvent;
use libp2p::{PeerId, StreamProtocol, gossipsub};
use safemeet_net::FrameCodec;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::plan::{Target, room_name};
use crate::run::{Ctx, MeshProbe, Nodes};
use crate::transport::{NodeIdx, addr_of};

const RAW_PROTOCOL: StreamProtocol = StreamProtocol::new("/safemeet-netsim/raw/1");
/// Commands queued per node; a full queue makes the send fail (counted).
const COMMAND_QUEUE: usize = 1024;
/// How often a publish that found no subscribed peer is tried again (only
/// during warm-up: a measured publish that fails is a lost message).
const WARMUP_RETRY: Duration = Duration::from_millis(100);

#[derive(libp2p::swarm::NetworkBehaviour)]
struct Bare {
    gossip: gossipsub::Behaviour,
    rr: request_response::Behaviour<FrameCodec>,
}

enum Command {
    Publish(u64, usize, Vec<u8>, bool),
    Dm(PeerId, NodeIdx, Vec<u8>),
    /// Open a connection to a contact (as the production node does when it
    /// first delivers to one).
    Dial(libp2p::Multiaddr),
    /// Leave (`false`) or join (`true`) a room's topic.
    Member(usize, bool),
    /// How many peers the mesh of a room's topic holds.
    Mesh(usize, tokio::sync::oneshot::Sender<usize>),
}

struct Node {
    key: Keypair,
    peer: PeerId,
    tx: Option<mpsc::Sender<Command>>,
    task: Option<JoinHandle<()>>,
}

/// The baseline nodes of a run.
pub struct BaselineNodes {
    ctx: Arc<Ctx>,
    nodes: Vec<Node>,
    /// Each node's index by its peer id (to read subscriptions).
    index_of: Arc<HashMap<PeerId, NodeIdx>>,
    /// (node, room) pairs whose node left the room and was not invited
    /// back.
    left: std::collections::HashSet<(NodeIdx, usize)>,
    /// Set-up (contacts) is done.
    set_up: bool,
}

fn topic(r: usize) -> gossipsub::IdentTopic {
    gossipsub::IdentTopic::new(room_name(r))
}

/// A frame: the message number, then filler up to the payload size.
fn frame(n: u64, size: usize) -> Vec<u8> {
    let mut f = n.to_le_bytes().to_vec();
    f.resize(size.max(8), 0x5a);
    f
}

fn number(frame: &[u8]) -> Option<u64> {
    let b: [u8; 8] = frame.get(..8)?.try_into().ok()?;
    Some(u64::from_le_bytes(b))
}

impl BaselineNodes {
    /// Keys for every node of the plan.
    pub fn new(ctx: Arc<Ctx>) -> Self {
        let nodes: Vec<Node> = (0..ctx.plan.nodes)
            .map(|_| {
                let key = Keypair::generate_ed25519();
                Node {
                    peer: key.public().to_peer_id(),
                    key,
                    tx: None,
                    task: None,
                }
            })
            .collect();
        let index_of = Arc::new(
            nodes
                .iter()
                .enumerate()
                .map(|(i, n)| (n.peer, i as NodeIdx))
                .collect(),
        );
        Self {
            ctx,
            nodes,
            index_of,
            left: Default::default(),
            set_up: false,
        }
    }

    /// Node `j`'s address, with its peer id.
    fn address(&self, j: NodeIdx) -> libp2p::Multiaddr {
        addr_of(j).with(Protocol::P2p(self.nodes[j as usize].peer))
    }

    async fn member(&mut self, idx: NodeIdx, room: usize, join: bool) -> anyhow::Result<()> {
        if join {
            self.left.remove(&(idx, room));
        } else {
            self.left.insert((idx, room));
        }
        let tx = self.nodes[idx as usize]
            .tx
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("baseline node {idx} is not running"))?;
        tx.send(Command::Member(room, join))
            .await
            .map_err(|_| anyhow::anyhow!("baseline node {idx} stopped"))
    }

    fn start(&mut self, i: NodeIdx) -> anyhow::Result<()> {
        let heartbeat = Duration::from_millis(self.ctx.scenario.node.heartbeat_ms);
        let transport = self.ctx.hub.transport_for(i);
        let mut swarm = safemeet_net::build_swarm(
            self.nodes[i as usize].key.clone(),
            Some(&transport),
            Duration::from_secs(300),
            |_, _| {
                let config = safemeet_net::gossip_config(heartbeat, false)?;
                Ok(Bare {
                    gossip: gossipsub::Behaviour::new(
                        gossipsub::MessageAuthenticity::Anonymous,
                        config,
                    )
                    .map_err(|e| e.to_string())?,
                    rr: request_response::Behaviour::with_codec(
                        FrameCodec::default(),
                        [(RAW_PROTOCOL, ProtocolSupport::Full)],
                        request_response::Config::default(),
                    ),
                })
            },
        )?;
        swarm.listen_on(addr_of(i))?;
        for (r, members) in self.ctx.plan.rooms.iter().enumerate() {
            // A restarted node stays out of the rooms it left.
            if members.contains(&i) && !self.left.contains(&(i, r)) {
                swarm.behaviour_mut().gossip.subscribe(&topic(r))?;
                self.ctx.rec.view_change(i, room_name(r), i, true);
            }
        }
        // Its topology's dials; a restarted node also connects to its
        // contacts again, as set-up did (the production node does when it
        // next delivers).
        let contacts: &[NodeIdx] = if self.set_up {
            &self.ctx.plan.contacts_of[i as usize]
        } else {
            &[]
        };
        for j in self.ctx.plan.dials[i as usize].iter().chain(contacts) {
            if let Err(e) = swarm.dial(self.address(*j)) {
                tracing::debug!(error = %e, "a baseline dial failed");
            }
        }
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let ctx = self.ctx.clone();
        let task = tokio::spawn(run_node(swarm, rx, i, self.index_of.clone(), ctx));
        let node = &mut self.nodes[i as usize];
        node.tx = Some(tx);
        node.task = Some(task);
        Ok(())
    }
}

async fn run_node(
    mut swarm: libp2p::Swarm<Bare>,
    mut rx: mpsc::Receiver<Command>,
    idx: NodeIdx,
    index_of: Arc<HashMap<PeerId, NodeIdx>>,
    ctx: Arc<Ctx>,
) {
    let mut retry = tokio::time::interval(WARMUP_RETRY);
    // Warm-up publishes still waiting for a subscribed peer.
    let mut waiting: Vec<(u64, usize, Vec<u8>)> = Vec::new();
    loop {
        tokio::select! {
            command = rx.recv() => match command {
                None => return,
                Some(Command::Publish(n, r, data, warmup)) => {
                    if swarm.behaviour_mut().gossip.publish(topic(r), data.clone()).is_err() {
                        if warmup {
                            waiting.push((n, r, data));
                        } else {
                            ctx.rec.failed(n);
                        }
                    }
                }
                Some(Command::Dm(peer, to, data)) => {
                    swarm.behaviour_mut().rr.send_request_with_addresses(&peer, data, vec![addr_of(to)]);
                }
                Some(Command::Dial(addr)) => {
                    if let Err(e) = swarm.dial(addr) {
                        tracing::debug!(error = %e, "a baseline contact dial failed");
                    }
                }
                Some(Command::Member(r, true)) => {
                    if let Err(e) = swarm.behaviour_mut().gossip.subscribe(&topic(r)) {
                        tracing::debug!(error = %e, "a baseline subscription failed");
                    } else {
                        ctx.rec.view_change(idx, room_name(r), idx, true);
                    }
                }
                Some(Command::Mesh(r, tx)) => {
                    let _ = tx.send(swarm.behaviour().gossip.mesh_peers(&topic(r).hash()).count());
                }
                Some(Command::Member(r, false)) => {
                    swarm.behaviour_mut().gossip.unsubscribe(&topic(r));
                    ctx.rec.view_change(idx, room_name(r), idx, false);
                }
            },
            _ = retry.tick(), if !waiting.is_empty() => {
                waiting.retain(|(_, r, data)| {
                    swarm.behaviour_mut().gossip.publish(topic(*r), data.clone()).is_err()
                });
            }
            event = swarm.select_next_some() => match event {
                SwarmEvent::Behaviour(BareEvent::Gossip(gossipsub::Event::Message { message, .. })) => {
                    if let Some(n) = number(&message.data) {
                        ctx.rec.received(n, idx, ctx.rec.now());
                    }
                }
                SwarmEvent::Behaviour(BareEvent::Gossip(gossipsub::Event::Subscribed { peer_id, topic })) => {
                    if let Some(m) = index_of.get(&peer_id) {
                        ctx.rec.view_change(idx, topic.into_string(), *m, true);
                    }
                }
                SwarmEvent::Behaviour(BareEvent::Gossip(gossipsub::Event::Unsubscribed { peer_id, topic })) => {
                    if let Some(m) = index_of.get(&peer_id) {
                        ctx.rec.view_change(idx, topic.into_string(), *m, false);
                    }
                }
                SwarmEvent::Behaviour(BareEvent::Rr(request_response::Event::Message {
                    message: request_response::Message::Request { request, channel, .. }, ..
                })) => {
                    if let Some(n) = number(&request) {
                        ctx.rec.received(n, idx, ctx.rec.now());
                    }
                    let _ = swarm.behaviour_mut().rr.send_response(channel, b"ok".to_vec());
                }
                _ => {}
            },
        }
    }
}

impl Nodes for BaselineNodes {
    async fn start_all(&mut self) -> anyhow::Result<()> {
        for i in 0..self.nodes.len() as NodeIdx {
            self.start(i)?;
        }
        Ok(())
    }

    async fn set_up(&mut self) -> anyhow::Result<()> {
        // No contacts or room state in raw gossipsub, but the same
        // connections: a production node connects to each contact when it
        // first delivers to it (room keys go to every member by direct
        // delivery), and flood publishing then reaches every connected
        // member in one hop. Without these the baseline would be measured
        // on a sparser graph than the production run.
        for (a, b) in &self.ctx.plan.contacts {
            let addr = self.address(*b);
            if let Some(tx) = &self.nodes[*a as usize].tx {
                tx.send(Command::Dial(addr))
                    .await
                    .map_err(|_| anyhow::anyhow!("baseline node {a} stopped"))?;
            }
        }
        self.set_up = true;
        Ok(())
    }

    fn send(&mut self, n: u64, from: NodeIdx, target: Target, _text: String) {
        let size = self.ctx.scenario.workload.size;
        let warmup = self.ctx.rec.lock().sent.get(&n).is_some_and(|s| s.warmup);
        let command = match target {
            Target::Room(r) => Command::Publish(n, r, frame(n, size), warmup),
            Target::Dm(to) => Command::Dm(self.nodes[to as usize].peer, to, frame(n, size)),
        };
        let ok = self.nodes[from as usize]
            .tx
            .as_ref()
            .is_some_and(|tx| tx.try_send(command).is_ok());
        if !ok {
            self.ctx.rec.failed(n);
        }
    }

    async fn stop(&mut self, idx: NodeIdx) {
        let node = &mut self.nodes[idx as usize];
        node.tx = None;
        if let Some(t) = node.task.take() {
            t.abort();
        }
    }

    async fn restart(&mut self, idx: NodeIdx) -> anyhow::Result<()> {
        self.start(idx)
    }

    fn mesh_probe(&self) -> MeshProbe {
        let txs: Arc<Vec<Option<mpsc::Sender<Command>>>> =
            Arc::new(self.nodes.iter().map(|n| n.tx.clone()).collect());
        Arc::new(move |idx, room| {
            let tx = txs.get(idx as usize).cloned().flatten();
            Box::pin(async move {
                let (reply, answer) = tokio::sync::oneshot::channel();
                tx?.send(Command::Mesh(room, reply)).await.ok()?;
                answer.await.ok()
            })
        })
    }

    async fn leave(&mut self, idx: NodeIdx, room: usize) -> anyhow::Result<()> {
        self.member(idx, room, false).await
    }

    async fn join(&mut self, idx: NodeIdx, room: usize) -> anyhow::Result<()> {
        self.member(idx, room, true).await
    }

    async fn stop_all(&mut self) {
        for i in 0..self.nodes.len() as NodeIdx {
            self.stop(i).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_their_number() {
        assert_eq!(number(&frame(42, 200)), Some(42));
        assert_eq!(frame(1, 200).len(), 200);
        assert_eq!(number(&[1, 2]), None);
    }
}
