//! The modelled transport: an in-process network whose links follow the
//! [link model](crate::link), plugged in *under* the production Noise +
//! yamux upgrade (through `safemeet_net::Config::transport`).
//!
//! A [`Hub`] knows every node (node `i` listens on `/memory/i`) and every
//! connection, so both endpoints of a link are known and a fault applies to
//! both directions at once:
//!
//! - **blackhole**: bytes are held (a TCP retransmitting into the void);
//!   new dials hang (until libp2p's dial timeout). At heal, what was held
//!   flows again, one latency later.
//! - **reset**: connections across the cut fail at once on both ends, new
//!   dials are refused. At heal, nodes may dial again.
//! - a **crashed** node is blackholed until it restarts; a restart resets
//!   its old connections (the peer's next segment meets a RST).
//! - an **offline** node is blackholed until it comes back online.
//!
//! Bytes are counted per node (sent and received) for the reports.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::{AsyncRead, AsyncWrite, FutureExt};
use libp2p::Multiaddr;
use libp2p::core::transport::{DialOpts, ListenerId, Transport, TransportError, TransportEvent};
use libp2p::multiaddr::Protocol;
use safemeet_net::{CustomTransport, RawStream};
use tokio::sync::mpsc;

use crate::link::{Direction, LinkProfile};

/// Bytes a writer may have in flight on one direction before it waits for
/// the reader (a TCP window): enough for a full link at 100 Mbit/s × 20 ms.
const WINDOW: usize = 256 * 1024;
/// Most bytes one write takes (a large write is split, like segments).
const MAX_WRITE: usize = 64 * 1024;
/// Connections waiting to be accepted by one listener (a listen backlog);
/// a dial to a full backlog is refused.
const BACKLOG: usize = 256;
/// How long a dial waits for a node that is up but not listening yet (all
/// nodes start together and dial each other at once: a real host would
/// have been listening long before).
const BOOT_WAIT: Duration = Duration::from_secs(3);

/// Index of a node in the simulated network.
pub type NodeIdx = u32;

/// How a cut link behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CutMode {
    /// Bytes are held and dials hang until the cut heals.
    Blackhole,
    /// Connections fail at once and dials are refused.
    Reset,
}

/// Bytes one node sent and received on the modelled network.
#[derive(Debug, Default)]
pub struct Counters {
    /// Bytes written by this node.
    pub sent: AtomicU64,
    /// Bytes read by this node.
    pub received: AtomicU64,
}

/// The address of node `idx`.
pub fn addr_of(idx: NodeIdx) -> Multiaddr {
    Multiaddr::empty().with(Protocol::Memory(u64::from(idx)))
}

fn idx_of(addr: &Multiaddr) -> Option<NodeIdx> {
    let mut parts = addr.iter();
    match (parts.next(), parts.next(), parts.next()) {
        (Some(Protocol::Memory(n)), None | Some(Protocol::P2p(_)), None) => {
            NodeIdx::try_from(n).ok()
        }
        _ => None,
    }
}

/// One direction of one connection, shared by its writer and its reader.
struct Pipe {
    from: NodeIdx,
    to: NodeIdx,
    state: Mutex<PipeState>,
}

struct PipeState {
    model: Direction,
    /// (readable at, bytes, bytes of it already read).
    queue: VecDeque<(Duration, Vec<u8>, usize)>,
    queued: usize,
    held: bool,
    reset: bool,
    write_closed: bool,
    read_closed: bool,
    reader: Option<Waker>,
    writer: Option<Waker>,
}

impl Pipe {
    fn lock(&self) -> MutexGuard<'_, PipeState> {
        // A poisoned lock means a panic elsewhere in this pipe; its state
        // is still consistent (every update is a single assignment).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl PipeState {
    fn wake(&mut self) {
        if let Some(w) = self.reader.take() {
            w.wake();
        }
        if let Some(w) = self.writer.take() {
            w.wake();
        }
    }
}

struct NodeSlot {
    /// The listening transport's token and backlog.
    listener: Option<(u64, mpsc::Sender<SimConnection>)>,
    down: bool,
    offline: bool,
    counters: Arc<Counters>,
}

struct HubState {
    nodes: Vec<NodeSlot>,
    /// The partition in force: each node's side, and how the cut behaves.
    partition: Option<(Vec<u32>, CutMode)>,
    pipes: Vec<Weak<Pipe>>,
    /// Connections made so far (seeds each new one's draws).
    connections: u64,
    /// Listeners opened so far (tells a restarted node's listener from
    /// the one its previous run is still dropping).
    listeners: u64,
}

/// The simulated network every node of a run is attached to.
pub struct Hub {
    start: Instant,
    seed: u64,
    profile: Box<dyn Fn(NodeIdx, NodeIdx) -> LinkProfile + Send + Sync>,
    state: Mutex<HubState>,
    /// Woken whenever a node starts listening.
    listening: tokio::sync::Notify,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").field("seed", &self.seed).finish()
    }
}

impl Hub {
    /// A network of `nodes` nodes; `profile(a, b)` gives the link between
    /// two nodes (the same both ways); `start` is time zero of the run.
    pub fn new(
        nodes: usize,
        seed: u64,
        start: Instant,
        profile: impl Fn(NodeIdx, NodeIdx) -> LinkProfile + Send + Sync + 'static,
    ) -> Arc<Self> {
        let nodes = (0..nodes)
            .map(|_| NodeSlot {
                listener: None,
                down: false,
                offline: false,
                counters: Arc::new(Counters::default()),
            })
            .collect();
        Arc::new(Self {
            start,
            seed,
            profile: Box::new(profile),
            state: Mutex::new(HubState {
                nodes,
                partition: None,
                pipes: Vec::new(),
                connections: 0,
                listeners: 0,
            }),
            listening: tokio::sync::Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now(&self) -> Duration {
        safemeet_proto::clock::Clock::instant(&safemeet_proto::clock::SystemClock)
            .saturating_duration_since(self.start)
    }

    /// The byte counters of a node.
    pub fn counters(&self, idx: NodeIdx) -> Option<Arc<Counters>> {
        self.lock()
            .nodes
            .get(idx as usize)
            .map(|n| n.counters.clone())
    }

    /// The transport node `idx` runs on, for `safemeet_net::Config::transport`.
    pub fn transport_for(self: &Arc<Self>, idx: NodeIdx) -> CustomTransport {
        let hub = self.clone();
        CustomTransport::new(move || {
            SimTransport::new(hub.clone(), idx)
                .map(|c, _| Box::new(c) as Box<dyn RawStream>)
                .boxed()
        })
    }

    /// How the link between `a` and `b` is cut now, if it is.
    fn cut(state: &HubState, a: NodeIdx, b: NodeIdx) -> Option<CutMode> {
        let (na, nb) = (state.nodes.get(a as usize)?, state.nodes.get(b as usize)?);
        if na.down || nb.down || na.offline || nb.offline {
            return Some(CutMode::Blackhole);
        }
        match &state.partition {
            Some((side, mode)) if side.get(a as usize) != side.get(b as usize) => Some(*mode),
            _ => None,
        }
    }

    /// Applies the current cuts to every open connection.
    fn refresh(&self, state: &mut HubState) {
        let now = self.now();
        state.pipes.retain(|p| p.strong_count() > 0);
        let pipes: Vec<Arc<Pipe>> = state.pipes.iter().filter_map(Weak::upgrade).collect();
        for pipe in pipes {
            let cut = Self::cut(state, pipe.from, pipe.to);
            let mut p = pipe.lock();
            match cut {
                Some(CutMode::Reset) => {
                    p.reset = true;
                    p.wake();
                }
                Some(CutMode::Blackhole) => p.held = true,
                None if p.held => {
                    p.held = false;
                    p.model.hold_until(now);
                    let earliest = now + p.model.profile().latency();
                    for chunk in p.queue.iter_mut() {
                        chunk.0 = chunk.0.max(earliest);
                    }
                    p.wake();
                }
                None => {}
            }
        }
    }

    /// Splits the network: `side[i]` is node `i`'s side; links between
    /// sides are cut in `mode`.
    pub fn partition(&self, side: Vec<u32>, mode: CutMode) {
        let mut state = self.lock();
        state.partition = Some((side, mode));
        self.refresh(&mut state);
    }

    /// Ends the partition.
    pub fn heal(&self) {
        let mut state = self.lock();
        state.partition = None;
        self.refresh(&mut state);
    }

    /// A node crashes silently: its links are blackholed until it restarts.
    pub fn crash(&self, idx: NodeIdx) {
        let mut state = self.lock();
        if let Some(n) = state.nodes.get_mut(idx as usize) {
            n.down = true;
        }
        self.refresh(&mut state);
    }

    /// A crashed node comes back: its old connections are reset (their
    /// peers' next bytes meet a RST) and its links work again.
    pub fn restart(&self, idx: NodeIdx) {
        let mut state = self.lock();
        if let Some(n) = state.nodes.get_mut(idx as usize) {
            n.down = false;
        }
        for pipe in state.pipes.iter().filter_map(Weak::upgrade) {
            if pipe.from == idx || pipe.to == idx {
                let mut p = pipe.lock();
                p.reset = true;
                p.wake();
            }
        }
        self.refresh(&mut state);
    }

    /// A node goes offline (links blackholed) or comes back online (held
    /// bytes flow again).
    pub fn set_offline(&self, idx: NodeIdx, offline: bool) {
        let mut state = self.lock();
        if let Some(n) = state.nodes.get_mut(idx as usize) {
            n.offline = offline;
        }
        self.refresh(&mut state);
    }

    fn is_listening(&self, idx: NodeIdx) -> bool {
        self.lock()
            .nodes
            .get(idx as usize)
            .is_some_and(|n| n.listener.is_some())
    }

    /// Waits (at most [`BOOT_WAIT`]) until node `idx` listens.
    async fn wait_listening(&self, idx: NodeIdx) {
        let deadline = tokio::time::Instant::from_std(self.start + self.now() + BOOT_WAIT);
        loop {
            let notified = self.listening.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_listening(idx) {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return;
            }
        }
    }

    /// Open connections (each counted once).
    pub fn open_connections(&self) -> usize {
        let mut state = self.lock();
        state.pipes.retain(|p| p.strong_count() > 0);
        state.pipes.len() / 2
    }

    /// Open connections of node `idx` (either end).
    pub fn connections_of(&self, idx: NodeIdx) -> usize {
        let mut state = self.lock();
        state.pipes.retain(|p| p.strong_count() > 0);
        // Each connection has one pipe from each end.
        state
            .pipes
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|p| p.from == idx)
            .count()
    }

    fn connect(self: &Arc<Self>, from: NodeIdx, to: NodeIdx) -> io::Result<ConnectPlan> {
        let mut state = self.lock();
        if to as usize >= state.nodes.len() {
            return Err(io::ErrorKind::AddrNotAvailable.into());
        }
        match Self::cut(&state, from, to) {
            Some(CutMode::Blackhole) => return Ok(ConnectPlan::Hang),
            Some(CutMode::Reset) => return Err(io::ErrorKind::ConnectionRefused.into()),
            None => {}
        }
        let listener = state.nodes[to as usize]
            .listener
            .as_ref()
            .map(|(_, tx)| tx.clone())
            .ok_or(io::Error::from(io::ErrorKind::ConnectionRefused))?;
        state.connections += 1;
        let n = state.connections;
        let profile = (self.profile)(from.min(to), from.max(to));
        let seed = |dir: u64| {
            let mut h = blake3::Hasher::new_derive_key("safemeet/netsim/link-seed");
            for x in [self.seed, u64::from(from), u64::from(to), n, dir] {
                h.update(&x.to_le_bytes());
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&h.finalize().as_bytes()[..8]);
            u64::from_le_bytes(b)
        };
        let pipe = |a, b, dir| {
            Arc::new(Pipe {
                from: a,
                to: b,
                state: Mutex::new(PipeState {
                    model: Direction::new(profile.clone(), seed(dir)),
                    queue: VecDeque::new(),
                    queued: 0,
                    held: false,
                    reset: false,
                    write_closed: false,
                    read_closed: false,
                    reader: None,
                    writer: None,
                }),
            })
        };
        let (out, back) = (pipe(from, to, 0), pipe(to, from, 1));
        state.pipes.push(Arc::downgrade(&out));
        state.pipes.push(Arc::downgrade(&back));
        let counters = |i: NodeIdx| state.nodes[i as usize].counters.clone();
        let dialer = SimConnection {
            hub: self.clone(),
            tx: out.clone(),
            rx: back.clone(),
            mine: counters(from),
            timer: None,
        };
        let accepted = SimConnection {
            hub: self.clone(),
            tx: back,
            rx: out,
            mine: counters(to),
            timer: None,
        };
        Ok(ConnectPlan::Ready {
            dialer,
            accepted,
            listener,
            handshake: profile.rtt(),
        })
    }
}

enum ConnectPlan {
    Hang,
    Ready {
        dialer: SimConnection,
        accepted: SimConnection,
        listener: mpsc::Sender<SimConnection>,
        handshake: Duration,
    },
}

/// One end of a modelled connection: a raw byte stream.
pub struct SimConnection {
    hub: Arc<Hub>,
    tx: Arc<Pipe>,
    rx: Arc<Pipe>,
    mine: Arc<Counters>,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl std::fmt::Debug for SimConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimConnection")
            .field("from", &self.tx.from)
            .field("to", &self.tx.to)
            .finish()
    }
}

fn reset_error() -> io::Error {
    io::ErrorKind::ConnectionReset.into()
}

impl AsyncRead for SimConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            let now = self.hub.now();
            let due = {
                let rx = self.rx.clone();
                let mut p = rx.lock();
                if p.reset {
                    return Poll::Ready(Err(reset_error()));
                }
                if p.held {
                    p.reader = Some(cx.waker().clone());
                    return Poll::Pending;
                }
                let Some(release) = p.queue.front().map(|c| c.0) else {
                    if p.write_closed {
                        return Poll::Ready(Ok(0));
                    }
                    p.reader = Some(cx.waker().clone());
                    return Poll::Pending;
                };
                if release <= now {
                    let mut n = 0;
                    while n < buf.len() {
                        let Some((release, bytes, read)) = p.queue.front_mut() else {
                            break;
                        };
                        if *release > now {
                            break;
                        }
                        let take = (bytes.len() - *read).min(buf.len() - n);
                        buf[n..n + take].copy_from_slice(&bytes[*read..*read + take]);
                        *read += take;
                        n += take;
                        if *read == bytes.len() {
                            p.queue.pop_front();
                        }
                    }
                    p.queued -= n;
                    if let Some(w) = p.writer.take() {
                        w.wake();
                    }
                    drop(p);
                    self.mine.received.fetch_add(n as u64, Ordering::Relaxed);
                    self.timer = None;
                    return Poll::Ready(Ok(n));
                }
                p.reader = Some(cx.waker().clone());
                release
            };
            let at = tokio::time::Instant::from_std(self.hub.start + due);
            match &mut self.timer {
                Some(t) if t.deadline() == at => {}
                slot => *slot = Some(Box::pin(tokio::time::sleep_until(at))),
            }
            if let Some(t) = &mut self.timer
                && t.as_mut().poll(cx).is_pending()
            {
                return Poll::Pending;
            }
            // The timer fired: read again.
        }
    }
}

impl AsyncWrite for SimConnection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let now = self.hub.now();
        let mut p = self.tx.lock();
        if p.reset {
            return Poll::Ready(Err(reset_error()));
        }
        if p.read_closed || p.write_closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if p.queued >= WINDOW {
            p.writer = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = buf.len().min(WINDOW - p.queued).min(MAX_WRITE);
        if n == 0 {
            return Poll::Ready(Ok(0));
        }
        let release = p.model.schedule(now, n);
        p.queue.push_back((release, buf[..n].to_vec(), 0));
        p.queued += n;
        if let Some(w) = p.reader.take() {
            w.wake();
        }
        drop(p);
        self.mine.sent.fetch_add(n as u64, Ordering::Relaxed);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut p = self.tx.lock();
        p.write_closed = true;
        if let Some(w) = p.reader.take() {
            w.wake();
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for SimConnection {
    fn drop(&mut self) {
        let mut tx = self.tx.lock();
        tx.write_closed = true;
        tx.wake();
        drop(tx);
        let mut rx = self.rx.lock();
        rx.read_closed = true;
        rx.wake();
    }
}

/// A node's raw transport on the [`Hub`]: listens on `/memory/<its index>`
/// and dials `/memory/<index>` (with or without `/p2p/..`).
pub struct SimTransport {
    hub: Arc<Hub>,
    idx: NodeIdx,
    listener: Option<(ListenerId, mpsc::Receiver<SimConnection>)>,
    announce: Option<ListenerId>,
    token: u64,
}

impl SimTransport {
    /// The transport of node `idx`.
    pub fn new(hub: Arc<Hub>, idx: NodeIdx) -> Self {
        Self {
            hub,
            idx,
            listener: None,
            announce: None,
            token: 0,
        }
    }

    fn unregister(&mut self) {
        let mut state = self.hub.lock();
        if let Some(n) = state.nodes.get_mut(self.idx as usize)
            && n.listener.as_ref().is_some_and(|(t, _)| *t == self.token)
        {
            n.listener = None;
        }
    }
}

impl Drop for SimTransport {
    fn drop(&mut self) {
        if self.listener.is_some() {
            self.unregister();
        }
    }
}

impl Transport for SimTransport {
    type Output = SimConnection;
    type Error = io::Error;
    type ListenerUpgrade = futures::future::Ready<io::Result<SimConnection>>;
    type Dial = BoxFuture<'static, io::Result<SimConnection>>;

    fn listen_on(
        &mut self,
        id: ListenerId,
        addr: Multiaddr,
    ) -> Result<(), TransportError<Self::Error>> {
        match idx_of(&addr) {
            Some(i) if i == self.idx => {}
            Some(_) => {
                return Err(TransportError::Other(
                    io::ErrorKind::AddrNotAvailable.into(),
                ));
            }
            None => return Err(TransportError::MultiaddrNotSupported(addr)),
        }
        if self.listener.is_some() {
            return Err(TransportError::Other(io::ErrorKind::AddrInUse.into()));
        }
        let (tx, rx) = mpsc::channel(BACKLOG);
        let mut state = self.hub.lock();
        state.listeners += 1;
        let token = state.listeners;
        let Some(slot) = state.nodes.get_mut(self.idx as usize) else {
            return Err(TransportError::Other(
                io::ErrorKind::AddrNotAvailable.into(),
            ));
        };
        slot.listener = Some((token, tx));
        drop(state);
        self.hub.listening.notify_waiters();
        self.token = token;
        self.listener = Some((id, rx));
        self.announce = Some(id);
        Ok(())
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        match &self.listener {
            Some((mine, _)) if *mine == id => {
                self.listener = None;
                self.unregister();
                true
            }
            _ => false,
        }
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        _opts: DialOpts,
    ) -> Result<Self::Dial, TransportError<Self::Error>> {
        let Some(to) = idx_of(&addr) else {
            return Err(TransportError::MultiaddrNotSupported(addr));
        };
        let (hub, from) = (self.hub.clone(), self.idx);
        Ok(async move {
            hub.wait_listening(to).await;
            match hub.connect(from, to)? {
                ConnectPlan::Hang => futures::future::pending().await,
                ConnectPlan::Ready {
                    dialer,
                    accepted,
                    listener,
                    handshake,
                } => {
                    // SYN, SYN-ACK: the dialer may send after a round trip.
                    tokio::time::sleep(handshake).await;
                    listener
                        .try_send(accepted)
                        .map_err(|_| io::Error::from(io::ErrorKind::ConnectionRefused))?;
                    Ok(dialer)
                }
            }
        }
        .boxed())
    }

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, Self::Error>> {
        if let Some(id) = self.announce.take() {
            return Poll::Ready(TransportEvent::NewAddress {
                listener_id: id,
                listen_addr: addr_of(self.idx),
            });
        }
        let idx = self.idx;
        if let Some((id, rx)) = &mut self.listener
            && let Poll::Ready(Some(conn)) = rx.poll_recv(cx)
        {
            let from = conn.tx.to;
            return Poll::Ready(TransportEvent::Incoming {
                listener_id: *id,
                upgrade: futures::future::ready(Ok(conn)),
                local_addr: addr_of(idx),
                send_back_addr: addr_of(from),
            });
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
    use libp2p::core::Endpoint;
    use libp2p::core::transport::PortUse;

    use super::*;

    fn opts() -> DialOpts {
        DialOpts {
            role: Endpoint::Dialer,
            port_use: PortUse::New,
        }
    }

    fn clock() -> Instant {
        safemeet_proto::clock::Clock::instant(&safemeet_proto::clock::SystemClock)
    }

    /// Node 1 listens; node 0 dials it; returns both ends.
    async fn pair(hub: &Arc<Hub>) -> (SimConnection, SimConnection) {
        let mut server = SimTransport::new(hub.clone(), 1);
        server.listen_on(ListenerId::next(), addr_of(1)).unwrap();
        let mut client = SimTransport::new(hub.clone(), 0);
        let dial = client.dial(addr_of(1), opts()).unwrap();
        let accept = async {
            let mut server = server;
            loop {
                let ev = futures::future::poll_fn(|cx| Pin::new(&mut server).poll(cx)).await;
                if let TransportEvent::Incoming { upgrade, .. } = ev {
                    return (upgrade.await.unwrap(), server);
                }
            }
        };
        let (a, (b, server)) = tokio::join!(dial, accept);
        std::mem::forget(server); // keep the listener registered
        (a.unwrap(), b)
    }

    fn hub(latency_ms: f64) -> Arc<Hub> {
        Hub::new(3, 1, clock(), move |_, _| LinkProfile {
            latency_ms,
            ..LinkProfile::default()
        })
    }

    #[tokio::test]
    async fn bytes_arrive_in_order_after_the_latency_and_are_counted() {
        let hub = hub(30.0);
        let (mut a, mut b) = pair(&hub).await;
        let t0 = clock();
        a.write_all(b"hello ").await.unwrap();
        a.write_all(b"world").await.unwrap();
        let mut buf = [0u8; 11];
        tokio::time::timeout(Duration::from_secs(5), b.read_exact(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let took = clock().saturating_duration_since(t0);
        assert_eq!(&buf, b"hello world");
        assert!(took >= Duration::from_millis(29), "{took:?}");
        assert_eq!(hub.counters(0).unwrap().sent.load(Ordering::Relaxed), 11);
        assert_eq!(
            hub.counters(1).unwrap().received.load(Ordering::Relaxed),
            11
        );
    }

    #[tokio::test]
    async fn a_blackhole_holds_bytes_until_heal() {
        let hub = hub(5.0);
        let (mut a, mut b) = pair(&hub).await;
        hub.partition(vec![0, 1, 1], CutMode::Blackhole);
        a.write_all(b"held").await.unwrap();
        let mut buf = [0u8; 4];
        let early = tokio::time::timeout(Duration::from_millis(200), b.read_exact(&mut buf)).await;
        assert!(early.is_err(), "nothing crosses a blackhole");
        hub.heal();
        tokio::time::timeout(Duration::from_secs(5), b.read_exact(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf, b"held");
    }

    #[tokio::test]
    async fn a_reset_fails_both_ends_and_refuses_dials() {
        let hub = hub(5.0);
        let (mut a, mut b) = pair(&hub).await;
        hub.partition(vec![0, 1, 1], CutMode::Reset);
        let mut buf = [0u8; 1];
        let err = tokio::time::timeout(Duration::from_secs(5), b.read(&mut buf))
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
        assert!(a.write_all(b"x").await.is_err());
        let mut t = SimTransport::new(hub.clone(), 0);
        let dial = t.dial(addr_of(1), opts()).unwrap();
        assert!(dial.await.is_err());
        hub.heal();
        let mut t = SimTransport::new(hub.clone(), 0);
        let dial = t.dial(addr_of(1), opts()).unwrap();
        assert!(
            tokio::time::timeout(Duration::from_secs(5), dial)
                .await
                .unwrap()
                .is_ok()
        );
    }

    #[tokio::test]
    async fn closing_one_end_is_an_end_of_stream_on_the_other() {
        let hub = hub(1.0);
        let (mut a, mut b) = pair(&hub).await;
        a.write_all(b"bye").await.unwrap();
        a.close().await.unwrap();
        let mut all = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), b.read_to_end(&mut all))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(all, b"bye");
    }

    #[tokio::test]
    async fn a_dial_to_a_node_that_does_not_listen_is_refused() {
        let hub = hub(1.0);
        let mut t = SimTransport::new(hub.clone(), 0);
        assert!(t.dial(addr_of(2), opts()).unwrap().await.is_err());
        assert!(matches!(
            t.dial("/ip4/1.2.3.4/tcp/1".parse().unwrap(), opts()),
            Err(TransportError::MultiaddrNotSupported(_))
        ));
        let _ = futures::stream::empty::<()>().next().await;
    }
}
