//! The actor: the only code in this crate that touches the runtime, the
//! network handle, the clock and the OS's randomness.
//!
//! [`start`] opens the network and spawns the actor on the caller's tokio
//! runtime. The actor owns a [`Core`] and hands it to the runtime's
//! blocking pool for every step (`spawn_blocking`), so the core's disk work
//! (sled flushes, crypto commits) never runs on a tokio worker; the core
//! moves to a pool thread and back, and no thread is kept per engine (a
//! simulation runs a thousand). The loop is a `select!` with cancellation
//! first (`biased`), then every source of input polled fairly; it feeds the
//! core its inputs with the time, carries out the outputs, and sleeps until
//! [`Core::poll_timeout`]. A closed request queue (every [`Handle`]
//! dropped) goes through the same clean shutdown as [`Handle::shutdown`]:
//! the crypto state is closed in place, so the next start counts as clean
//! and keeps its outbound sessions.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::PeerId;
use libp2p::gossipsub::MessageId;
use safemeet_crypto::machine::CryptoMachine;
use safemeet_net::{Error as NetError, Event as NetEvent, Handle as Network, ReplySlot, Verdict};
use safemeet_proto::clock::{Clock, SystemClock};
use safemeet_proto::deliver::DeliverAnswer as Answer;
use safemeet_proto::room::RoomTopic;
use safemeet_proto::{RoomId, Timestamp};
use safemeet_store::Store;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::core::{Core, Now};
use crate::events::{DeliveryResult, DeliveryToken, Input, NetInput, Output, RequestId, Response};
use crate::handle::Request;
use crate::relay_client::{self, Drained, Page};
use crate::send::MAX_GROUP;
use crate::{Config, Error, Handle};

/// Requests waiting for the actor; a full queue makes callers wait.
const REQUEST_QUEUE: usize = 256;
/// Most gossip publishing tasks at once.
const MAX_PUBLISHING: usize = 8;

/// Starts the engine: opens the network (on the current tokio runtime)
/// with the account's libp2p key, reads where the engine stood from the
/// store (a few records and the first page of the outbox), and spawns the
/// actor on the current runtime.
pub fn start<S: Store + Clone + Send + 'static>(
    machine: CryptoMachine<S>,
    config: Config,
) -> Result<Handle, Error> {
    config.validate()?;
    let keypair = machine.account().libp2p_keypair().clone();
    let user_id = machine.account().user_id();
    let origin = SystemClock.instant();
    let now = Now {
        wall: SystemClock.now(),
        mono: Duration::ZERO,
    };
    let seed = config.seed_or_random();
    let timeout = config.request_timeout;
    let net_config = config.net.clone();
    // Reads only (no flush, no commit): what was due is queued for the
    // first step, which runs on the blocking pool.
    let core = Core::new(machine, config, seed, now)?;
    let (net, events) = match safemeet_net::spawn(keypair, net_config) {
        Ok(net) => net,
        Err(e) => {
            let mut core = core;
            if let Err(e) = core.close() {
                tracing::warn!(error = %e, "the crypto state did not close cleanly");
            }
            return Err(e.into());
        }
    };
    let peer_id = net.peer_id();
    let (requests, inbox) = mpsc::channel(REQUEST_QUEUE);
    let (log_watch, log) = watch::channel(0);
    let (stopped_tx, stopped) = watch::channel(false);
    let cancel = CancellationToken::new();
    let (pages_tx, pages) = mpsc::channel(1);
    let actor = Actor {
        core: Some(Box::new(core)),
        net,
        origin,
        inbox,
        events,
        cancel: cancel.clone(),
        log_watch,
        next: None,
        replies: HashMap::new(),
        next_request: 0,
        net_replies: HashMap::new(),
        gossip: HashMap::new(),
        next_token: 0,
        deliveries: JoinSet::new(),
        delivering: HashMap::new(),
        deposits: JoinSet::new(),
        depositing: HashMap::new(),
        draining: JoinSet::new(),
        publishing: JoinSet::new(),
        pages,
        pages_tx,
        page_waiters: HashMap::new(),
        next_page: 0,
        failed_subscriptions: Vec::new(),
    };
    tokio::spawn(async move {
        actor.run().await;
        let _ = stopped_tx.send(true);
    });
    Ok(Handle {
        requests,
        user_id,
        peer_id,
        log,
        cancel,
        stopped,
        timeout,
    })
}

struct Actor<S: Store> {
    /// The core, while no step runs (`None`: lost to a panic).
    core: Option<Box<Core<S>>>,
    net: Network,
    origin: Instant,
    inbox: mpsc::Receiver<Request>,
    events: mpsc::Receiver<NetEvent>,
    cancel: CancellationToken,
    log_watch: watch::Sender<u64>,
    /// A request taken from the queue while gathering a group.
    next: Option<Request>,
    replies: HashMap<RequestId, oneshot::Sender<Result<Response, Error>>>,
    next_request: RequestId,
    /// Open direct deliveries and gossip frames, by the core's token.
    net_replies: HashMap<u64, ReplySlot>,
    gossip: HashMap<u64, (MessageId, PeerId)>,
    next_token: u64,
    deliveries: JoinSet<(DeliveryToken, PeerId, DeliveryResult)>,
    /// What each delivery task is for, so a task that panicked still
    /// reports (as failed).
    delivering: HashMap<tokio::task::Id, (DeliveryToken, PeerId)>,
    deposits: JoinSet<(u64, PeerId, Option<Timestamp>)>,
    depositing: HashMap<tokio::task::Id, (u64, PeerId)>,
    draining: JoinSet<Drained>,
    publishing: JoinSet<()>,
    pages: mpsc::Receiver<Page>,
    pages_tx: mpsc::Sender<Page>,
    page_waiters: HashMap<u64, oneshot::Sender<Vec<u64>>>,
    next_page: u64,
    /// Topics the network would not subscribe to, to tell the core.
    failed_subscriptions: Vec<RoomTopic>,
}

impl<S: Store + Clone + Send + 'static> Actor<S> {
    fn now(&self) -> Now {
        Now {
            wall: SystemClock.now(),
            mono: SystemClock.instant().saturating_duration_since(self.origin),
        }
    }

    /// Hands the core one input on the blocking pool and carries out what
    /// it says. False when the core is gone (a step panicked).
    async fn step(&mut self, input: Input) -> bool {
        let Some(mut core) = self.core.take() else {
            return false;
        };
        let now = self.now();
        let stepped = tokio::task::spawn_blocking(move || {
            let outputs = core.handle(input, now);
            (core, outputs)
        })
        .await;
        match stepped {
            Ok((core, outputs)) => {
                self.core = Some(core);
                self.execute(outputs).await;
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "the engine's core failed; the engine stops");
                false
            }
        }
    }

    async fn run(mut self) {
        // What the core queued on start (the outbox, the first drain).
        if !self.step(Input::Timer).await {
            return;
        }
        let cancel = self.cancel.clone();
        loop {
            let input = match (self.failed_subscriptions.pop(), self.next.take()) {
                (Some(topic), next) => {
                    self.next = next;
                    Some(Input::SubscribeFailed(topic))
                }
                (None, Some(request)) => self.request(request).await,
                (None, None) => tokio::select! {
                    biased;
                    () = cancel.cancelled() => break,
                    input = self.next_input() => match input {
                        Some(input) => input,
                        // Every handle is gone: the same clean shutdown.
                        None => break,
                    },
                },
            };
            if let Some(input) = input
                && !self.step(input).await
            {
                return;
            }
        }
        self.shutdown().await;
    }

    /// Waits for the next thing to hand the core, from every source polled
    /// fairly (no source can starve another). `None`: the request queue
    /// closed; `Some(None)`: something was handled that needs no step.
    async fn next_input(&mut self) -> Option<Option<Input>> {
        let deadline = self
            .core
            .as_ref()
            .and_then(|c| c.poll_timeout())
            .map(|d| self.origin + d);
        let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(
            deadline.unwrap_or(self.origin + Duration::from_secs(86_400 * 365)),
        ));
        Some(tokio::select! {
            request = self.inbox.recv() => match request {
                Some(request) => self.request(request).await,
                None => return None,
            },
            Some(event) = self.events.recv() => self.net_events(event),
            Some(done) = self.deliveries.join_next_with_id() => {
                let (token, peer, result) = match done {
                    Ok((id, done)) => {
                        self.delivering.remove(&id);
                        done
                    }
                    Err(e) => {
                        let (token, peer) = self.delivering.remove(&e.id())?;
                        (token, peer, DeliveryResult::Failed)
                    }
                };
                Some(Input::Delivered { token, peer, result })
            }
            Some(done) = self.deposits.join_next_with_id() => {
                let (seq, peer, until) = match done {
                    Ok((id, done)) => {
                        self.depositing.remove(&id);
                        done
                    }
                    Err(e) => {
                        let (seq, peer) = self.depositing.remove(&e.id())?;
                        (seq, peer, None)
                    }
                };
                Some(Input::Deposited { seq, peer, until })
            }
            Some(page) = self.pages.recv() => {
                let id = self.next_page;
                self.next_page += 1;
                self.page_waiters.insert(id, page.done);
                Some(Input::Page { page: id, epoch: page.epoch, envelopes: page.envelopes })
            }
            Some(done) = self.draining.join_next() => {
                let drained = done.unwrap_or(Drained { fetched: 0, failed: true });
                Some(Input::Drained { fetched: drained.fetched, failed: drained.failed })
            }
            Some(_) = self.publishing.join_next() => None,
            () = sleep, if deadline.is_some() => Some(Input::Timer),
        })
    }

    /// Turns a request into the core's input (gathering the core requests
    /// waiting behind it, so sends share a flush), or answers it here.
    async fn request(&mut self, first: Request) -> Option<Input> {
        let mut commands = Vec::new();
        let mut request = Some(first);
        while let Some(r) = request.take() {
            match r {
                Request::Core(command, reply) => {
                    let id = self.next_request;
                    self.next_request += 1;
                    self.replies.insert(id, reply);
                    commands.push((id, command));
                }
                other if commands.is_empty() => {
                    self.answer_here(other).await;
                    return None;
                }
                other => {
                    self.next = Some(other);
                    break;
                }
            }
            if commands.len() < MAX_GROUP {
                request = self.inbox.try_recv().ok();
            }
        }
        Some(Input::Commands(commands))
    }

    /// Requests the network answers.
    async fn answer_here(&mut self, request: Request) {
        match request {
            Request::ListenAddrs(reply) => {
                let _ = reply.send(self.net.listen_addrs().await.map_err(Into::into));
            }
            Request::RoomMeshPeers(room, reply) => {
                let _ = reply.send(self.mesh_peers(room).await);
            }
            Request::RoomTopic(room, reply) => {
                let _ = reply.send(self.room_topic(room).await);
            }
            Request::GossipPeers(reply) => {
                let _ = reply.send(self.net.gossip_peers().await.map_err(Into::into));
            }
            Request::TopicCount(reply) => {
                let _ = reply.send(self.net.topic_count().await.map_err(Into::into));
            }
            Request::Core(command, reply) => {
                // Never here: core requests are gathered by `request`.
                drop(command);
                let _ = reply.send(Err(Error::Stopped));
            }
        }
    }

    async fn mesh_peers(&mut self, room: RoomId) -> Result<usize, Error> {
        let topic = self.room_topic(room).await?;
        Ok(self.net.mesh_peers(topic).await?)
    }

    /// A group room's current topic, read on the blocking pool (it reads
    /// the store).
    async fn room_topic(&mut self, room: RoomId) -> Result<RoomTopic, Error> {
        let mut core = self.core.take().ok_or(Error::Stopped)?;
        let (core, topic) = tokio::task::spawn_blocking(move || {
            let topic = core.room_topic(&room);
            (core, topic)
        })
        .await
        .map_err(|_| Error::Stopped)?;
        self.core = Some(core);
        topic
    }

    /// `first` and the network events waiting behind it, as one input.
    fn net_events(&mut self, first: NetEvent) -> Option<Input> {
        let mut inputs = Vec::new();
        let mut event = Some(first);
        while let Some(e) = event.take() {
            if let Some(input) = self.net_input(e) {
                inputs.push(input);
            }
            if inputs.len() < MAX_GROUP {
                event = self.events.try_recv().ok();
            }
        }
        (!inputs.is_empty()).then_some(Input::Network(inputs))
    }

    fn net_input(&mut self, event: NetEvent) -> Option<NetInput> {
        match event {
            NetEvent::Delivery { peer, frame, reply } => {
                let token = self.token();
                self.net_replies.insert(token, reply);
                Some(NetInput::Delivery {
                    peer,
                    frame,
                    reply: token,
                })
            }
            NetEvent::Gossip {
                topic,
                frame,
                id,
                via,
            } => {
                let token = self.token();
                self.gossip.insert(token, (id, via));
                Some(NetInput::Gossip {
                    topic,
                    frame,
                    token,
                })
            }
            NetEvent::Connected(peer) => Some(NetInput::Connected(peer)),
            _ => None,
        }
    }

    fn token(&mut self) -> u64 {
        let t = self.next_token;
        self.next_token = self.next_token.wrapping_add(1);
        t
    }

    /// Carries out the core's outputs.
    async fn execute(&mut self, outputs: Vec<Output>) {
        let mut verdicts = Vec::new();
        for output in outputs {
            match output {
                Output::Reply(id, result) => {
                    if let Some(reply) = self.replies.remove(&id) {
                        let _ = reply.send(result);
                    }
                }
                Output::Deliver {
                    token,
                    peer,
                    addrs,
                    frame,
                } => {
                    let net = self.net.clone();
                    let task = self.deliveries.spawn(async move {
                        let result = net.deliver(peer, addrs, frame).await;
                        (token, peer, delivery_result(result))
                    });
                    self.delivering.insert(task.id(), (token, peer));
                }
                Output::Publish(frames) => {
                    while self.publishing.len() >= MAX_PUBLISHING {
                        let _ = self.publishing.join_next().await;
                    }
                    let net = self.net.clone();
                    self.publishing.spawn(async move {
                        // Not reaching anyone now is fine: direct delivery follows.
                        match net.publish_many(frames).await {
                            Ok(results) => {
                                let missed = results.iter().filter(|r| r.is_err()).count();
                                if missed > 0 {
                                    tracing::debug!(missed, "room messages not published");
                                }
                            }
                            Err(e) => tracing::debug!(error = %e, "room messages not published"),
                        }
                    });
                }
                Output::Deposit {
                    seq,
                    peer,
                    mailbox,
                    relays,
                    frame,
                    check,
                } => {
                    let (net, now) = (self.net.clone(), SystemClock.now());
                    let task = self.deposits.spawn(async move {
                        let until =
                            relay_client::deposit(net, mailbox, relays, frame, check, now).await;
                        (seq, peer, until)
                    });
                    self.depositing.insert(task.id(), (seq, peer));
                }
                Output::Drain {
                    relays,
                    former,
                    keys,
                    open,
                } => {
                    let (net, pages) = (self.net.clone(), self.pages_tx.clone());
                    self.draining
                        .spawn(relay_client::drain(net, relays, former, keys, open, pages));
                }
                Output::PageDone { page, taken } => {
                    if let Some(waiter) = self.page_waiters.remove(&page) {
                        let _ = waiter.send(taken);
                    }
                }
                Output::GossipPeers(peers) => {
                    if let Err(e) = self.net.allow_gossip(peers).await {
                        tracing::warn!(error = %e, "could not set the gossip peers");
                    }
                }
                Output::Subscribe(topic) => {
                    if let Err(e) = self.net.subscribe(topic.clone()).await {
                        tracing::warn!(error = %e, "could not subscribe to a room topic");
                        self.failed_subscriptions.push(topic);
                    }
                }
                Output::Unsubscribe(topic) => {
                    let _ = self.net.unsubscribe(topic).await;
                }
                Output::Junk(peer) => {
                    let _ = self.net.report_junk(peer).await;
                }
                Output::Answer { reply, answer } => {
                    if let Some(slot) = self.net_replies.remove(&reply)
                        && let Err(e) = slot.send(answer.to_bytes().to_vec())
                    {
                        tracing::debug!(error = %e, "a delivery could not be answered");
                    }
                }
                Output::Verdict {
                    token,
                    accept,
                    penalise,
                } => {
                    if let Some((id, via)) = self.gossip.remove(&token) {
                        let verdict = if accept {
                            Verdict::Accept
                        } else if penalise {
                            Verdict::Reject
                        } else {
                            Verdict::Ignore
                        };
                        verdicts.push((id, via, verdict));
                    }
                }
                Output::LogCursor(next) => {
                    self.log_watch.send_if_modified(|v| {
                        let changed = *v != next;
                        *v = next;
                        changed
                    });
                }
            }
        }
        if !verdicts.is_empty() {
            let _ = self.net.report_many(verdicts).await;
        }
    }

    /// Closes the crypto state cleanly and stops the network.
    async fn shutdown(mut self) {
        if let Some(mut core) = self.core.take() {
            let closed = tokio::task::spawn_blocking(move || core.close()).await;
            match closed {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "the crypto state did not close cleanly"),
                Err(e) => tracing::warn!(error = %e, "the crypto state did not close cleanly"),
            }
        }
        let _ = self.net.shutdown().await;
        for (_, reply) in self.replies.drain() {
            let _ = reply.send(Err(Error::Stopped));
        }
    }
}

/// What a finished delivery says. Only a peer that could not be reached
/// at all sends a message to relays.
fn delivery_result(result: Result<Vec<u8>, NetError>) -> DeliveryResult {
    match result {
        Ok(bytes) => match Answer::from_bytes(&bytes) {
            Ok(answer) => DeliveryResult::Answered(answer),
            Err(_) => DeliveryResult::Failed,
        },
        Err(e) if e.is_unreachable() => DeliveryResult::Unreachable,
        Err(_) => DeliveryResult::Failed,
    }
}
