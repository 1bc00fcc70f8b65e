//! The modelled world around the cores: the network (latency, devices
//! online or not, gossip to subscribers), the relay, and the trace.

use std::time::Duration;

use libp2p::PeerId;
use safemeet_engine::{DeliveryResult, DeliveryToken, Input, NetInput, Output};

use super::{Event, Path, Sent, Sim, WireFrame};

impl Sim {
    pub(super) fn schedule(&mut self, delay: Duration, event: Event) {
        let key = (self.mono + delay, self.next_event);
        self.next_event += 1;
        self.queue.insert(key, event);
    }

    pub(super) fn event(&mut self, event: Event) {
        match event {
            Event::Arrive {
                to,
                from,
                token,
                frame,
            } => {
                if !self.nodes[to].online {
                    let peer = self.nodes[to].peer;
                    self.schedule(
                        self.latency,
                        Event::Result {
                            node: from,
                            token,
                            peer,
                            result: DeliveryResult::Unreachable,
                        },
                    );
                    return;
                }
                let mut inputs = Vec::new();
                let pair = (from.min(to), from.max(to));
                if self.connected.insert(pair) {
                    inputs.push(NetInput::Connected(self.nodes[from].peer));
                    let to_peer = self.nodes[to].peer;
                    self.feed(from, Input::Network(vec![NetInput::Connected(to_peer)]));
                }
                let reply = self.token();
                self.nodes[to].open.insert(reply, (from, token));
                inputs.push(NetInput::Delivery {
                    peer: self.nodes[from].peer,
                    frame,
                    reply,
                });
                self.feed(to, Input::Network(inputs));
            }
            Event::Result {
                node,
                token,
                peer,
                result,
            } => self.feed(
                node,
                Input::Delivered {
                    token,
                    peer,
                    result,
                },
            ),
            Event::Gossip { to, topic, frame } => {
                if self.nodes[to].online && self.nodes[to].subscribed.contains(topic.as_bytes()) {
                    let at = self.mono;
                    self.nodes[to].gossip_heard.push(at);
                    let token = self.token();
                    self.feed(
                        to,
                        Input::Network(vec![NetInput::Gossip {
                            topic,
                            frame,
                            token,
                        }]),
                    );
                }
            }
            Event::Deposited {
                node,
                seq,
                peer,
                until,
            } => self.feed(node, Input::Deposited { seq, peer, until }),
            Event::Drain { node, keys } => {
                if !self.nodes[node].online {
                    self.feed(
                        node,
                        Input::Drained {
                            fetched: 0,
                            failed: true,
                        },
                    );
                    return;
                }
                let mut fetched = 0;
                for key in keys {
                    let mailbox = key.mailbox();
                    let envelopes = self.mailboxes.get(&mailbox).cloned().unwrap_or_default();
                    if envelopes.is_empty() {
                        continue;
                    }
                    fetched += envelopes.len();
                    let page = self.next_page;
                    self.next_page += 1;
                    self.pages.insert((node, page), mailbox);
                    self.feed(
                        node,
                        Input::Page {
                            page,
                            epoch: key.epoch(),
                            envelopes,
                        },
                    );
                }
                self.feed(
                    node,
                    Input::Drained {
                        fetched,
                        failed: false,
                    },
                );
            }
        }
    }

    pub(super) fn token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token
    }

    pub(super) fn name(&self, peer: &PeerId) -> String {
        match self.by_peer.get(peer) {
            Some(i) => format!("n{i}"),
            None if *peer == self.relay_peer => "relay".into(),
            None => "stranger".into(),
        }
    }

    /// Hands node `i` an input now and carries out its outputs.
    pub(super) fn feed(&mut self, i: usize, input: Input) {
        let now = self.now();
        let outputs = self.nodes[i].core.handle(input, now);
        for output in outputs {
            let line = self.describe(&output);
            self.trace
                .push(format!("{:>10} n{i} {line}", self.mono.as_millis()));
            self.carry(i, output);
        }
    }

    pub(super) fn describe(&self, output: &Output) -> String {
        match output {
            Output::Reply(id, Ok(r)) => {
                let kind = format!("{r:?}");
                let kind = kind.split(['(', ' ']).next().unwrap_or("").to_owned();
                format!("reply {id} ok {kind}")
            }
            Output::Reply(id, Err(e)) => format!("reply {id} error {:?}", e.kind()),
            Output::Deliver {
                token, peer, frame, ..
            } => format!("deliver {token:?} to {} {}B", self.name(peer), frame.len()),
            Output::Publish(frames) => format!("publish {}", frames.len()),
            Output::Deposit { seq, peer, .. } => {
                format!("deposit {seq} for {}", self.name(peer))
            }
            Output::Drain { keys, .. } => format!("drain {} epochs", keys.len()),
            Output::PageDone { page, taken } => format!("page {page} taken {}", taken.len()),
            Output::Subscribe(_) => "subscribe".into(),
            Output::Unsubscribe(_) => "unsubscribe".into(),
            Output::Answer { answer, .. } => format!("answer {answer:?}"),
            Output::Verdict {
                accept, penalise, ..
            } => {
                if *penalise {
                    format!("verdict {accept} reject")
                } else {
                    format!("verdict {accept}")
                }
            }
            Output::LogCursor(n) => format!("log {n}"),
            other => format!("{other:?}"),
        }
    }

    fn record(&mut self, from: usize, path: Path, frame: &[u8]) {
        if let Some(wire) = &mut self.wire {
            wire.push(WireFrame {
                from,
                path,
                frame: frame.to_vec(),
            });
        }
    }

    pub(super) fn carry(&mut self, i: usize, output: Output) {
        let latency = self.latency;
        match output {
            Output::Reply(id, result) => {
                self.nodes[i].replies.insert(id, result);
            }
            Output::Deliver {
                token, peer, frame, ..
            } => {
                self.record(i, Path::Direct, &frame);
                let to = self.by_peer.get(&peer).copied();
                self.sent.push(Sent {
                    at: self.mono,
                    from: i,
                    to,
                    token,
                });
                let delay = match token {
                    DeliveryToken::Ack(_) => self.ack_latency.unwrap_or(latency),
                    DeliveryToken::Outbox(_) | DeliveryToken::Signal => latency,
                };
                match to {
                    Some(to) if self.nodes[i].online => {
                        self.schedule(
                            delay,
                            Event::Arrive {
                                to,
                                from: i,
                                token,
                                frame,
                            },
                        );
                    }
                    _ => self.schedule(
                        latency,
                        Event::Result {
                            node: i,
                            token,
                            peer,
                            result: DeliveryResult::Unreachable,
                        },
                    ),
                }
            }
            Output::Publish(frames) => {
                if !self.nodes[i].online {
                    return;
                }
                for (topic, frame) in frames {
                    self.record(i, Path::Gossip, &frame);
                    for j in 0..self.nodes.len() {
                        let n = &self.nodes[j];
                        let wants = n.subscribed.contains(topic.as_bytes());
                        if j != i && n.online && !n.drop_gossip && wants {
                            let (topic, frame) = (topic.clone(), frame.clone());
                            self.schedule(
                                latency,
                                Event::Gossip {
                                    to: j,
                                    topic,
                                    frame,
                                },
                            );
                        }
                    }
                }
            }
            Output::Deposit {
                seq,
                peer,
                mailbox,
                frame,
                ..
            } => {
                self.record(i, Path::Deposit, &frame);
                let until = if self.nodes[i].online {
                    Some(self.deposit(mailbox, frame))
                } else {
                    None
                };
                self.schedule(
                    latency,
                    Event::Deposited {
                        node: i,
                        seq,
                        peer,
                        until,
                    },
                );
            }
            Output::Drain { keys, .. } => self.schedule(latency, Event::Drain { node: i, keys }),
            Output::PageDone { page, taken } => {
                if let Some(mailbox) = self.pages.remove(&(i, page))
                    && let Some(held) = self.mailboxes.get_mut(&mailbox)
                {
                    held.retain(|e| !taken.contains(&e.id));
                }
            }
            Output::Subscribe(topic) => {
                self.nodes[i].subscribed.insert(*topic.as_bytes());
            }
            // A node that keeps its topics stays on them.
            Output::Unsubscribe(topic) if !self.nodes[i].keep_topics => {
                self.nodes[i].subscribed.remove(topic.as_bytes());
            }
            Output::Answer { reply, answer } => {
                if let Some((from, token)) = self.nodes[i].open.remove(&reply) {
                    let peer = self.nodes[i].peer;
                    self.schedule(
                        latency,
                        Event::Result {
                            node: from,
                            token,
                            peer,
                            result: DeliveryResult::Answered(answer),
                        },
                    );
                }
            }
            Output::Verdict {
                accept, penalise, ..
            } => {
                self.nodes[i].verdicts.push((accept, penalise));
            }
            Output::LogCursor(n) => self.nodes[i].log_cursor = n,
            Output::LeavePieces(job) => self.piece_jobs.push((i, *job)),
            _ => {}
        }
    }
}
