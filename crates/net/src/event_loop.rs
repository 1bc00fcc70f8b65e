//! The task that owns the [`Swarm`].
//!
//! [`spawn`] builds the node and starts the loop; from then on only the loop
//! touches the swarm. It serves the [`Handle`]'s commands, turns swarm events
//! into [`Event`]s for the application, keeps the outbound deliveries and
//! mailbox requests it is waiting on in maps keyed by request id, and the
//! inbound deliveries waiting for the application's answer in reply slots
//! (see [`ReplySlot`](crate::ReplySlot)). It stops on
//! [`Handle::shutdown`] or when every handle is gone, through one path.

use std::sync::Arc;

use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::request_response::{self, ResponseChannel};
use libp2p::swarm::SwarmEvent;
use libp2p::{PeerId, Swarm, identify, mdns};
use safemeet_proto::Envelope;
use safemeet_proto::clock::{Clock, SystemClock};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::addr::is_public;
use crate::behaviour::{Behaviour, BehaviourEvent, KAD_PROTOCOL};
use crate::codec::StreamRefusals;
use crate::handle::{Command, Verdict};
use crate::outbound::{Deliveries, Outbound};
use crate::refusals::{Refusal, RefusalLog};
use crate::reply::{PendingReplies, Settled};
use crate::topic::room_topic;
use crate::{Config, Error, Event, Handle, build_swarm};

/// How often failed relay circuits are looked at for a retry.
const RELAY_RETRY_CHECK: std::time::Duration = std::time::Duration::from_secs(5);

/// How much longer than the request timeout a caller waits for the event
/// loop's answer: a delivery may have to dial first.
const ASK_MARGIN: std::time::Duration = std::time::Duration::from_secs(30);

/// Builds the node, starts listening, dials the bootstrap peers and spawns
/// the event loop on the current tokio runtime.
///
/// Returns the handle and the application's events, at most
/// [`Config::event_queue`] of them queued: when the application falls
/// behind, new events are dropped (and counted) and inbound deliveries are
/// refused, so the swarm is never blocked by it.
pub fn spawn(keypair: Keypair, config: Config) -> Result<(Handle, mpsc::Receiver<Event>), Error> {
    config.validate()?;
    let local = keypair.public().to_peer_id();
    let streams = Arc::new(StreamRefusals::default());
    let mut swarm = build_swarm(
        keypair,
        config.transport.as_ref(),
        config.idle_timeout,
        |key, relay| Ok(Behaviour::new(key, relay, &config, streams.clone())?),
    )?;
    let relay_listeners = crate::join::join(&mut swarm, &config)?;
    let streams_control = swarm.behaviour().stream.new_control();
    let (commands, command_rx) = mpsc::channel(config.command_queue);
    let shutdown = CancellationToken::new();
    let stopped = CancellationToken::new();
    let (event_tx, events) = mpsc::channel(config.event_queue);
    let event_loop = EventLoop {
        swarm,
        commands: command_rx,
        events: event_tx,
        deliveries: Deliveries::default(),
        mailbox_requests: Deliveries::default(),
        replies: PendingReplies::new(config.max_pending_replies, config.request_timeout),
        dropped_events: 0,
        expired_replies: 0,
        refusals: RefusalLog::default(),
        junk: Default::default(),
        streams,
        relay_listeners,
        autonat: crate::net_status::AutonatResults::default(),
        connecting: Default::default(),
        gossip_waiters: Vec::new(),
        paths: Default::default(),
        shutdown: shutdown.clone(),
        stopped: stopped.clone(),
    };
    tokio::spawn(event_loop.run());
    let handle = Handle {
        commands,
        local,
        streams_control,
        shutdown,
        stopped,
        // A delivery may dial, then wait out the request timeout.
        ask_timeout: config.request_timeout.saturating_add(ASK_MARGIN),
    };
    Ok((handle, events))
}

/// Most callers of `allow_gossip` that wait for closings at once (past
/// this, one is answered at once: it only loses the wait).
pub(crate) const MAX_GOSSIP_WAITERS: usize = 64;

pub(crate) struct EventLoop {
    pub(crate) swarm: Swarm<Behaviour>,
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) events: mpsc::Sender<Event>,
    /// Direct deliveries waiting for their answer or their turn.
    pub(crate) deliveries: Deliveries,
    /// Mailbox requests to relays waiting for their answer or their turn
    /// (their ids count apart from deliveries').
    pub(crate) mailbox_requests: Deliveries,
    /// Inbound deliveries waiting for the application's answer.
    pub(crate) replies: PendingReplies,
    /// Events dropped because the application was behind, since the start.
    pub(crate) dropped_events: u64,
    /// Inbound deliveries nobody answered in time, since the start.
    pub(crate) expired_replies: u64,
    /// What this node refused, for the operator.
    pub(crate) refusals: RefusalLog,
    /// Who sent junk deliveries, and who is blocked for it.
    pub(crate) junk: crate::junk::JunkScores,
    /// What its codecs refused, not yet in `refusals`.
    pub(crate) streams: Arc<StreamRefusals>,
    /// Its circuits through relays, and the failed ones' retries.
    pub(crate) relay_listeners: crate::relay_listeners::RelayListeners,
    /// The latest AutoNAT results.
    pub(crate) autonat: crate::net_status::AutonatResults,
    /// The connections up now, and relays' limits on circuits.
    pub(crate) paths: crate::paths::Paths,
    /// Callers waiting for a connection to open a stream on.
    pub(crate) connecting: crate::connect::ConnectWaiters,
    /// Callers of `allow_gossip` waiting for the gossip connections of the
    /// peers it left out to close (at most [`MAX_GOSSIP_WAITERS`]).
    pub(crate) gossip_waiters: Vec<oneshot::Sender<()>>,
    /// Cancelled by [`Handle::shutdown`].
    pub(crate) shutdown: CancellationToken,
    /// Cancelled when the loop has stopped (on drop, so also on a panic).
    pub(crate) stopped: CancellationToken,
}

/// A frame is well formed when it is a correctly padded, decodable envelope.
fn well_formed(frame: &[u8]) -> bool {
    Envelope::from_frame(frame).is_ok()
}

impl EventLoop {
    /// Runs until [`Handle::shutdown`] or until every handle is dropped,
    /// then [stops](Self::stop).
    async fn run(mut self) {
        // Tells waiting `Handle::shutdown` calls that the loop is gone, even
        // if it panicked.
        let _stopped = self.stopped.clone().drop_guard();
        let mut report = tokio::time::interval(crate::refusals::REPORT_EVERY);
        report.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Failed relay circuits are tried again when their wait is over,
        // to within this.
        let mut relay_tick = tokio::time::interval(RELAY_RETRY_CHECK);
        relay_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Shutdown first, so it is never starved by traffic. Commands
            // next: each caller waits for its answer, so they cannot starve
            // the swarm for long. Reply slots settle before new swarm events
            // are read, which frees slots for them.
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => break,
                command = self.commands.recv() => match command {
                    Some(command) => self.command(command),
                    // Every handle is gone: nobody can drive or stop the
                    // node any more.
                    None => break,
                },
                (channel, settled) = self.replies.next() => self.settle(channel, settled),
                event = self.swarm.select_next_some() => {
                    self.event(event);
                    let gate = &mut self.swarm.behaviour_mut().gossipsub;
                    for (peer, refused) in gate.take_dropped() {
                        self.refusals.record_n(Refusal::Subscriptions, peer, refused);
                    }
                    if !self.gossip_waiters.is_empty() && !gate.leaving() {
                        for tx in self.gossip_waiters.drain(..) {
                            let _ = tx.send(());
                        }
                    }
                }
                _ = report.tick() => {
                    for peer in self.junk.expired(SystemClock.instant()) {
                        self.swarm.behaviour_mut().blocked.unblock_peer(peer);
                    }
                    self.refusals.absorb(&self.streams);
                    self.refusals.report_due(SystemClock.instant());
                }
                _ = relay_tick.tick() => self.relay_listeners.retry_due(&mut self.swarm),
            }
        }
        self.stop();
    }

    /// The one way out of the loop: every waiting caller learns the network
    /// stopped, open reply slots close (their deliveries are refused), the
    /// swarm is dropped, which closes every connection and listener, and
    /// last the event stream ends: when the application sees it end, all
    /// the rest is done.
    fn stop(self) {
        let Self {
            swarm,
            commands,
            events,
            deliveries,
            mailbox_requests,
            replies,
            dropped_events,
            expired_replies,
            refusals: _,
            junk: _,
            streams: _,
            relay_listeners: _,
            autonat: _,
            connecting,
            gossip_waiters: _,
            paths: _,
            shutdown: _,
            stopped: _,
        } = self;
        connecting.stopped();
        let waiting = deliveries.len() + mailbox_requests.len();
        let answers = deliveries.into_answers();
        for tx in answers.chain(mailbox_requests.into_answers()) {
            let _ = tx.send(Err(Error::Stopped));
        }
        let open_slots = replies.len();
        drop(replies);
        drop(commands);
        drop(swarm);
        tracing::debug!(
            waiting,
            open_slots,
            dropped_events,
            expired_replies,
            "network event loop stopped"
        );
        drop(events);
    }

    /// Hands an event to the application without ever blocking the swarm:
    /// when the application is behind, the event is dropped and counted.
    fn emit(&mut self, event: Event) {
        if self.events.try_send(event).is_err() {
            self.dropped_events += 1;
            tracing::warn!(
                dropped = self.dropped_events,
                "network event queue full; event dropped"
            );
        }
    }

    fn event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr {
                address,
                listener_id,
            } => {
                self.relay_listeners.reserved(listener_id);
                if is_public(&address) {
                    // Bound directly on a public address: others can reach
                    // it, so Kademlia (in its automatic mode) serves the DHT.
                    // Behind NAT an address is confirmed by autonat instead.
                    self.swarm.add_external_address(address.clone());
                }
                self.emit(Event::Listening(address))
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                num_established,
                connection_id,
                endpoint,
                ..
            } => {
                let local = match &endpoint {
                    libp2p::core::ConnectedPoint::Listener { local_addr, .. } => Some(local_addr),
                    libp2p::core::ConnectedPoint::Dialer { .. } => None,
                };
                self.paths.established(
                    connection_id,
                    peer_id,
                    endpoint.get_remote_address(),
                    local,
                );
                self.connecting.connected(peer_id);
                if num_established.get() == 1 {
                    self.emit(Event::Connected(peer_id));
                }
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                error,
                ..
            } => self.connecting.failed(connection_id, &error.to_string()),
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                connection_id,
                ..
            } => {
                self.paths.closed(connection_id);
                if num_established == 0 {
                    self.emit(Event::Disconnected(peer_id));
                }
            }
            SwarmEvent::Behaviour(event) => self.behaviour_event(event),
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => {
                let why = match &reason {
                    Ok(()) => "closed".to_owned(),
                    Err(e) => e.to_string(),
                };
                self.relay_listeners
                    .closed(listener_id, &why, SystemClock.instant());
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error: libp2p::swarm::ListenError::Denied { cause },
                ..
            } if cause.downcast_ref::<crate::PerIpDenied>().is_some() => {
                let ip = crate::remote_ip(&send_back_addr);
                self.refusals.record(Refusal::ConnectionPerAddress, ip);
            }
            _ => {}
        }
    }

    fn behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Gossipsub(libp2p::gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            }) => {
                let topic = room_topic(&message.topic);
                match topic {
                    Some(topic) if well_formed(&message.data) => self.emit(Event::Gossip {
                        topic,
                        frame: message.data,
                        id: message_id,
                        via: propagation_source,
                    }),
                    _ => self.report(&message_id, &propagation_source, Verdict::Reject),
                }
            }
            BehaviourEvent::DeliverIn(request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            }) => self.inbound_delivery(peer, request, channel),
            BehaviourEvent::Deliver(request_response::Event::Message {
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            }) => self.request_ended(Outbound::Deliver, &request_id, Ok(response)),
            BehaviourEvent::Deliver(request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            }) => {
                tracing::debug!(%error, "a delivery failed");
                self.request_ended(
                    Outbound::Deliver,
                    &request_id,
                    Err(Error::delivery(peer, error)),
                );
            }
            BehaviourEvent::Mailbox(request_response::Event::Message {
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            }) => self.request_ended(Outbound::Mailbox, &request_id, Ok(response)),
            BehaviourEvent::Mailbox(request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            }) => {
                tracing::debug!(%error, "a mailbox request failed");
                self.request_ended(
                    Outbound::Mailbox,
                    &request_id,
                    Err(Error::mailbox(peer, error)),
                );
            }
            BehaviourEvent::DeliverIn(request_response::Event::InboundFailure {
                error, ..
            }) => {
                tracing::debug!(error = %error, "inbound delivery failed");
            }
            // Kademlia learns no dialable address for peers that dialed us:
            // take the listen addresses identify reports.
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. })
                if info.protocols.contains(&KAD_PROTOCOL) =>
            {
                for addr in info.listen_addrs {
                    self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                }
            }
            BehaviourEvent::Autonat(libp2p::autonat::v2::client::Event {
                tested_addr,
                result,
                ..
            }) => self.autonat.note(tested_addr, result.is_ok()),
            BehaviourEvent::Relay(
                libp2p::relay::client::Event::ReservationReqAccepted {
                    relay_peer_id,
                    limit,
                    ..
                }
                | libp2p::relay::client::Event::OutboundCircuitEstablished {
                    relay_peer_id,
                    limit,
                },
            ) => self.paths.relay_limit(
                relay_peer_id,
                limit.and_then(|l| l.duration()),
                limit.and_then(|l| l.data_in_bytes()),
            ),
            BehaviourEvent::Mdns(mdns::Event::Discovered(found)) => {
                for (peer, addr) in found {
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .add_address(&peer, addr.clone());
                    if !self.swarm.is_connected(&peer)
                        && let Err(e) = self.swarm.dial(addr)
                    {
                        tracing::debug!(error = %e, "could not dial a local peer");
                    }
                }
            }
            _ => {}
        }
    }

    /// Counts a junk delivery from `peer`; past a few it is cut off for a
    /// while (see `junk`).
    pub(crate) fn junk_from(&mut self, peer: PeerId) {
        self.refusals.record(Refusal::JunkDelivery, peer);
        if self.junk.record(peer, SystemClock.instant()) {
            tracing::debug!("a peer that sent junk deliveries is blocked for a while");
            self.swarm.behaviour_mut().blocked.block_peer(peer);
        }
    }

    fn inbound_delivery(
        &mut self,
        peer: PeerId,
        frame: Vec<u8>,
        channel: ResponseChannel<Vec<u8>>,
    ) {
        if !well_formed(&frame) {
            tracing::debug!("a malformed direct frame was refused");
            self.junk_from(peer);
            return; // Dropping the channel fails the request on the sender's side.
        }
        if self.events.capacity() == 0 {
            self.dropped_events += 1;
            tracing::warn!("network event queue full; delivery refused");
            return;
        }
        let Some(reply) = self.replies.open(channel) else {
            tracing::warn!(
                waiting = self.replies.len(),
                "too many deliveries awaiting an answer; one refused"
            );
            return;
        };
        self.emit(Event::Delivery { peer, frame, reply });
    }

    /// Ends an inbound delivery's slot: sends the answer, or drops the
    /// response channel (the sender sees its request closed unanswered).
    fn settle(&mut self, channel: ResponseChannel<Vec<u8>>, settled: Settled) {
        match settled {
            Settled::Answered(answer) => {
                if self
                    .swarm
                    .behaviour_mut()
                    .deliver_in
                    .send_response(channel, answer)
                    .is_err()
                {
                    tracing::debug!("an answer was not sent: the request is gone");
                }
            }
            Settled::Dropped => tracing::debug!("a delivery was dropped unanswered"),
            Settled::Expired => {
                self.expired_replies += 1;
                tracing::debug!(
                    expired = self.expired_replies,
                    "a delivery was not answered in time"
                );
            }
        }
    }
}
