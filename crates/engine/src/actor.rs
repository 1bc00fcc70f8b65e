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
    let blobs = config.blobs.clone();
    let max_file_bytes = config.max_file_bytes;
    let file_rate = config.file_rate;
    // Reads only (no flush, no commit): what was due is queued for the
    // first step, which runs on the blocking pool.
    let mut core = Core::new(machine, config, seed, now)?;
    let first_dials = core.take_first_dials();
    // Signs the pieces of files left on relays.
    let signer = keypair.clone();
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
    let files = blobs.map(|b| {
        std::sync::Arc::new(
            crate::files::FilesShared::new(b.0, max_file_bytes, file_rate).with_keypair(signer),
        )
    });
    let files_net = net.clone();
    let calls_net = net.clone();
    if !first_dials.is_empty() {
        let dialer = net.clone();
        tokio::spawn(async move {
            for addr in first_dials {
                if let Err(e) = dialer.dial(addr).await {
                    tracing::debug!(error = %e, "a first dial failed");
                }
            }
        });
    }
    let link_streams = match net.link_streams() {
        Ok(streams) => Some(streams),
        Err(e) => {
            tracing::warn!(error = %e, "device links cannot be answered");
            None
        }
    };
    let (link_asks_tx, link_asks) = mpsc::channel(1);
    let (calls_tx, calls_rx) = mpsc::channel(crate::call_signals::MAX_QUEUED);
    let (asks_tx, asks) = mpsc::channel(16);
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
        files: files.clone(),
        calls: calls_tx,
        draining: JoinSet::new(),
        publishing: JoinSet::new(),
        pages,
        pages_tx,
        page_waiters: HashMap::new(),
        next_page: 0,
        failed_subscriptions: Vec::new(),
        link: Linking {
            streams: link_streams,
            offer: None,
            asks: link_asks,
            asks_tx: link_asks_tx,
            running: JoinSet::new(),
        },
    };
    tokio::spawn(async move {
        actor.run().await;
        let _ = stopped_tx.send(true);
    });
    let handle = Handle {
        requests,
        user_id,
        peer_id,
        log,
        cancel: cancel.clone(),
        stopped,
        timeout,
        files: files.clone(),
        calls: asks_tx,
    };
    tokio::spawn(crate::calls::run(
        handle.downgrade(),
        calls_net,
        asks,
        calls_rx,
        cancel.child_token(),
    ));
    if let Some(files) = files {
        tokio::spawn(crate::files::run(
            handle.downgrade(),
            files_net,
            files,
            cancel.child_token(),
        ));
    }
    Ok(handle)
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
    /// The file service's shared state (files left on relays and pieces
    /// that arrived are handed over here).
    files: Option<std::sync::Arc<crate::files::FilesShared>>,
    /// Call signals for the call service.
    calls: mpsc::Sender<crate::call_signals::IncomingCallSignal>,
    draining: JoinSet<Drained>,
    publishing: JoinSet<()>,
    pages: mpsc::Receiver<Page>,
    pages_tx: mpsc::Sender<Page>,
    page_waiters: HashMap<u64, oneshot::Sender<Vec<u64>>>,
    next_page: u64,
    /// Topics the network would not subscribe to, to tell the core.
    failed_subscriptions: Vec<RoomTopic>,
    link: Linking,
}

/// Device links: the link shown, and the one answer running at a time.
struct Linking {
    /// Incoming `/safemeet/link/1` streams (`None`: not accepted).
    streams: Option<safemeet_net::IncomingStreams>,
    offer: Option<PendingLink>,
    /// Answers whose handshake passed, asking the core for the bundle.
    asks: mpsc::Receiver<LinkAsk>,
    asks_tx: mpsc::Sender<LinkAsk>,
    running: JoinSet<(PeerId, Result<(), Error>)>,
}

/// The link shown last.
struct PendingLink {
    secret: zeroize::Zeroizing<[u8; 32]>,
    expires_at: Timestamp,
    /// Peers whose answer is running (one each, at most
    /// [`MAX_LINK_ANSWERS`]): anyone may open link streams, so a stranger
    /// who stalls them holds a slot for [`LINK_HANDSHAKE_TIMEOUT`] at most.
    answering: Vec<PeerId>,
    /// The new device gets a copy of the master key.
    with_master: bool,
}

/// Most link handshakes answered at once. Each costs a task and a Noise
/// state for at most [`LINK_HANDSHAKE_TIMEOUT`]; the network's per-address
/// connection limits bound how many one stranger holds, so keeping the
/// right device out takes many addresses (and only while the link lasts).
const MAX_LINK_ANSWERS: usize = 64;

/// An answer's handshake passed: the new device wants its bundle.
struct LinkAsk {
    days: u32,
    reply: oneshot::Sender<Result<Response, Error>>,
}

/// How long the new device has for the handshake: a stalled one holds
/// the link no longer than this.
const LINK_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The next incoming link stream (never, when none are accepted).
async fn next_link_stream(
    streams: &mut Option<safemeet_net::IncomingStreams>,
) -> Option<(PeerId, libp2p::Stream)> {
    use futures::StreamExt;
    match streams {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

/// Answers one link stream: the handshake under the shown secret, then
/// the bundle the core makes (asked through `asks`).
async fn answer_link(
    mut stream: libp2p::Stream,
    secret: zeroize::Zeroizing<[u8; 32]>,
    own: PeerId,
    asks: mpsc::Sender<LinkAsk>,
) -> Result<(), Error> {
    use crate::link_io;
    let (mut channel, hello) = tokio::time::timeout(
        LINK_HANDSHAKE_TIMEOUT,
        link_io::answer_handshake(&mut stream, &secret, &own),
    )
    .await
    .map_err(|_| Error::Link("the new device stalled the handshake".into()))??;
    drop(secret);
    let (reply, answer) = oneshot::channel();
    asks.send(LinkAsk {
        days: hello.days,
        reply,
    })
    .await
    .map_err(|_| Error::Stopped)?;
    let Response::LinkBundle(bundle) = answer.await.map_err(|_| Error::Stopped)?? else {
        return Err(Error::Link("the engine answered something else".into()));
    };
    tokio::time::timeout(
        link_io::LINK_TIMEOUT,
        link_io::send_bundle(&mut stream, &mut channel, &bundle.bytes),
    )
    .await
    .map_err(|_| Error::Link("the new device stalled the transfer".into()))??;
    tracing::info!(
        contacts = bundle.summary.contacts,
        rooms = bundle.summary.rooms,
        messages = bundle.summary.messages,
        "a new device was linked"
    );
    Ok(())
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
            Some((peer, stream)) = next_link_stream(&mut self.link.streams) => {
                self.link_stream(peer, stream);
                None
            }
            Some(ask) = self.link.asks.recv() => self.link_ask(ask),
            Some(done) = self.link.running.join_next() => {
                match done {
                    Ok((peer, result)) => {
                        if let Err(e) = result {
                            tracing::info!(error = %e, "a device link attempt failed");
                        }
                        if let Some(offer) = &mut self.link.offer {
                            offer.answering.retain(|p| *p != peer);
                        }
                    }
                    // A panicked answer frees no slot it can name: the
                    // link's remaining slots still serve.
                    Err(e) => tracing::warn!(error = %e, "a device link answer failed"),
                }
                None
            }
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
            Request::NetStatus(reply) => {
                let _ = reply.send(self.net.status().await.map_err(Into::into));
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
            Request::LinkOffer(with_master, reply) => {
                let _ = reply.send(self.link_offer(with_master).await);
            }
            Request::PurgeMailboxes(reply) => {
                let targets = self.core.as_ref().map(|core| core.purge_targets());
                let result = match targets {
                    Some((relays, keys)) => {
                        Ok(relay_client::purge(self.net.clone(), relays, keys).await)
                    }
                    None => Err(Error::Stopped),
                };
                let _ = reply.send(result);
            }
            Request::Core(command, reply) => {
                // Never here: core requests are gathered by `request`.
                drop(command);
                let _ = reply.send(Err(Error::Stopped));
            }
        }
    }

    /// Shows a new link; the one before stops working.
    async fn link_offer(&mut self, with_master: bool) -> Result<crate::link::LinkShown, Error> {
        use rand::RngCore;
        use safemeet_proto::link::{LINK_LIFETIME_MS, LINK_VERSION, LinkOffer};
        let master = self
            .core
            .as_ref()
            .is_some_and(|c| c.machine().account().has_master_key());
        if !master {
            return Err(safemeet_crypto::Error::NoMasterKey.into());
        }
        if self.link.streams.is_none() {
            return Err(Error::Link("this node cannot answer device links".into()));
        }
        let addrs: Vec<String> = self
            .net
            .listen_addrs()
            .await?
            .iter()
            .filter(|a| {
                !a.iter()
                    .any(|p| matches!(p, libp2p::multiaddr::Protocol::P2pCircuit))
            })
            .take(safemeet_proto::link::MAX_LINK_ADDRS)
            .map(|a| a.to_string())
            .collect();
        if addrs.is_empty() {
            return Err(Error::Link("this node listens on no address yet".into()));
        }
        let mut secret = zeroize::Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(secret.as_mut());
        let now = SystemClock.now();
        let expires_at =
            Timestamp::from_millis(now.as_millis().saturating_add(LINK_LIFETIME_MS)).unwrap_or(now);
        let offer = LinkOffer {
            version: LINK_VERSION,
            peer_id: self.net.peer_id().to_bytes(),
            addrs,
            secret: *secret,
            expires_at,
        };
        let link = offer.to_text().map_err(|e| Error::Link(e.to_string()))?;
        self.link.offer = Some(PendingLink {
            secret,
            expires_at,
            answering: Vec::new(),
            with_master,
        });
        Ok(crate::link::LinkShown { link, expires_at })
    }

    /// An incoming link stream: answered when a link is shown and not
    /// expired, and a slot is free; otherwise closed at once.
    fn link_stream(&mut self, peer: PeerId, stream: libp2p::Stream) {
        let now = SystemClock.now();
        let Some(offer) = &mut self.link.offer else {
            return;
        };
        if now > offer.expires_at {
            self.link.offer = None;
            return;
        }
        if offer.answering.len() >= MAX_LINK_ANSWERS || offer.answering.contains(&peer) {
            return;
        }
        offer.answering.push(peer);
        tracing::debug!("answering a device link");
        let secret = offer.secret.clone();
        let own = self.net.peer_id();
        let asks = self.link.asks_tx.clone();
        self.link
            .running
            .spawn(async move { (peer, answer_link(stream, secret, own, asks).await) });
    }

    /// A link's handshake passed: the link is used up, and the core makes
    /// the bundle.
    fn link_ask(&mut self, ask: LinkAsk) -> Option<Input> {
        let offer = self.link.offer.take();
        let with_master = offer.as_ref().is_some_and(|o| o.with_master);
        let valid = offer.is_some_and(|o| SystemClock.now() <= o.expires_at);
        if !valid {
            let _ = ask
                .reply
                .send(Err(Error::Link("the link expired meanwhile".into())));
            return None;
        }
        let id = self.next_request;
        self.next_request += 1;
        self.replies.insert(id, ask.reply);
        Some(Input::Commands(vec![(
            id,
            crate::events::Command::LinkExport {
                days: ask.days,
                with_master,
            },
        )]))
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
                Output::LeavePieces(job) => {
                    if let Some(files) = &self.files {
                        files.leave_pieces(*job);
                    }
                }
                Output::CallSignal(signal) => {
                    if self.calls.try_send(*signal).is_err() {
                        tracing::debug!("a call signal was dropped: the call service is behind");
                    }
                }
                Output::PieceArrived(event) => {
                    if let Some(files) = &self.files {
                        files.piece_arrived(event);
                    }
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
