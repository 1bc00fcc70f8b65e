//! The event loop's answers to the [`Handle`](crate::Handle)'s commands.

use libp2p::PeerId;
use libp2p::gossipsub::{MessageAcceptance, MessageId, PublishError};
use safemeet_proto::limits::MAX_ENVELOPE_BYTES;

use crate::Refusal;
use crate::event_loop::EventLoop;
use crate::handle::{Command, Verdict};
use crate::outbound::{Delivery, Outbound};
use crate::topic::gossip_topic;
use crate::{Error, RoomTopic};

impl EventLoop {
    pub(crate) fn command(&mut self, command: Command) {
        match command {
            Command::ListenAddrs(tx) => {
                let _ = tx.send(self.swarm.listeners().cloned().collect());
            }
            Command::Status(tx) => {
                let status =
                    crate::net_status::status(&self.swarm, &self.relay_listeners, &self.autonat);
                let _ = tx.send(status);
            }
            Command::Dial(addr, tx) => {
                let result = self.swarm.dial(addr).map_err(Error::Dial);
                let _ = tx.send(result);
            }
            Command::Connect(peer, addrs, tx) => self.connect(peer, addrs, tx),
            Command::Paths(peer, tx) => {
                let _ = tx.send(self.paths.to(&peer));
            }
            Command::Subscribe(topic, tx) => {
                let gossipsub = self.swarm.behaviour_mut().gossipsub.inner_mut();
                let name = gossip_topic(&topic);
                // Scoring is on from the start, so this cannot fail; a
                // topic without parameters would only go unscored.
                if gossipsub
                    .set_topic_params(name.clone(), crate::scoring::room_params())
                    .is_err()
                {
                    tracing::debug!("a room topic has no score parameters");
                }
                let result = gossipsub
                    .subscribe(&name)
                    .map(|_| ())
                    .map_err(Error::Subscribe);
                let _ = tx.send(result);
            }
            Command::Unsubscribe(topic, tx) => {
                self.swarm
                    .behaviour_mut()
                    .gossipsub
                    .inner_mut()
                    .unsubscribe(&gossip_topic(&topic));
                let _ = tx.send(());
            }
            Command::Publish(topic, frame, tx) => {
                let _ = tx.send(self.publish(topic, frame));
            }
            Command::PublishMany(frames, tx) => {
                let results = frames
                    .into_iter()
                    .map(|(topic, frame)| self.publish(topic, frame))
                    .collect();
                let _ = tx.send(results);
            }
            Command::Report(id, via, verdict) => self.report(&id, &via, verdict),
            Command::Junk(peer) => self.junk_from(peer),
            Command::ReportMany(verdicts) => {
                for (id, via, verdict) in verdicts {
                    self.report(&id, &via, verdict);
                }
            }
            Command::Deliver(peer, addrs, frame, answer) => {
                let delivery = Delivery {
                    addrs,
                    frame,
                    answer,
                };
                if let Some(delivery) = self.deliveries.admit(peer, delivery) {
                    self.send_request(Outbound::Deliver, peer, delivery);
                }
            }
            Command::Mailbox(relay, addrs, frame, answer) => {
                let request = Delivery {
                    addrs,
                    frame,
                    answer,
                };
                if let Some(request) = self.mailbox_requests.admit(relay, request) {
                    self.send_request(Outbound::Mailbox, relay, request);
                }
            }
            Command::ConnectedPeers(tx) => {
                let _ = tx.send(self.swarm.connected_peers().copied().collect());
            }
            Command::AllowGossip(peers, tx) => {
                let gate = &mut self.swarm.behaviour_mut().gossipsub;
                gate.set_allowed(peers);
                tracing::debug!(allowed = gate.allowed_len(), "gossip peers updated");
                // Answered once the peers left out are gone from gossipsub:
                // the caller subscribes to a room's new topic next, and
                // gossipsub announces a subscription to every peer it
                // counts, a closing connection's too.
                if gate.leaving()
                    && self.gossip_waiters.len() < crate::event_loop::MAX_GOSSIP_WAITERS
                {
                    self.gossip_waiters.push(tx);
                } else {
                    let _ = tx.send(());
                }
            }
            Command::GossipPeers(tx) => {
                let gate = &self.swarm.behaviour().gossipsub;
                let _ = tx.send(gate.allowed().copied().collect());
            }
            Command::TopicCount(tx) => {
                let _ = tx.send(self.swarm.behaviour().gossipsub.inner().topics().count());
            }
            Command::Refusals(tx) => {
                self.refusals.absorb(&self.streams);
                let _ = tx.send(self.refusals.totals());
            }
            Command::PeerScore(peer, tx) => {
                let gossipsub = self.swarm.behaviour().gossipsub.inner();
                let _ = tx.send(gossipsub.peer_score(&peer));
            }
            Command::MeshPeers(topic, tx) => {
                let hash = gossip_topic(&topic).hash();
                let _ = tx.send(
                    self.swarm
                        .behaviour()
                        .gossipsub
                        .inner()
                        .mesh_peers(&hash)
                        .count(),
                );
            }
        }
    }

    pub(crate) fn publish(&mut self, topic: RoomTopic, frame: Vec<u8>) -> Result<(), Error> {
        if frame.len() > MAX_ENVELOPE_BYTES {
            return Err(Error::TooLarge {
                len: frame.len(),
                max: MAX_ENVELOPE_BYTES,
            });
        }
        self.swarm
            .behaviour_mut()
            .gossipsub
            .inner_mut()
            .publish(gossip_topic(&topic), frame)
            .map(|_| ())
            .map_err(|e| match e {
                PublishError::NoPeersSubscribedToTopic => Error::NoPeers,
                PublishError::Duplicate => Error::Duplicate,
                other => Error::Publish(other),
            })
    }

    pub(crate) fn report(&mut self, id: &MessageId, via: &PeerId, verdict: Verdict) {
        let acceptance = match verdict {
            Verdict::Accept => MessageAcceptance::Accept,
            Verdict::Reject => {
                self.refusals.record(Refusal::GossipRejected, via);
                MessageAcceptance::Reject
            }
            Verdict::Ignore => MessageAcceptance::Ignore,
        };
        self.swarm
            .behaviour_mut()
            .gossipsub
            .inner_mut()
            .report_message_validation_result(id, via, acceptance);
    }
}
