//! What a run observes: every send, every first receipt, room joins, and
//! host samples (CPU, memory, bytes, scheduler lag) over time.
//!
//! Messages carry their run-wide number in their text (`m<n>.` for
//! measured messages, `w<n>.` for warm-up), so a receiver's event log says
//! which message arrived without any side channel.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::transport::{Hub, NodeIdx};

/// A message as sent.
#[derive(Debug, Clone)]
pub struct Sent {
    /// When, since the start of the run.
    pub at: Duration,
    /// Who sent it.
    pub from: NodeIdx,
    /// Who should get it.
    pub to: Vec<NodeIdx>,
    /// A warm-up message (not measured).
    pub warmup: bool,
    /// A DM (else a room message).
    pub dm: bool,
    /// The send call failed.
    pub failed: bool,
    /// Text bytes.
    pub bytes: usize,
}

/// Everything observed; guarded by the [`Recorder`].
#[derive(Debug, Default)]
pub struct Observed {
    /// Sends by message number.
    pub sent: HashMap<u64, Sent>,
    /// First receipt of (message, node), and how many times it arrived.
    pub receipts: HashMap<(u64, NodeIdx), (Duration, u32)>,
    /// (node, room name) joins.
    pub joined: HashSet<(NodeIdx, String)>,
    /// Each node's view of each room's members: (node, room name) to the
    /// members it knows of (from its event log; the baseline's from
    /// gossipsub subscriptions).
    pub views: HashMap<(NodeIdx, String), BTreeSet<NodeIdx>>,
    /// When a member last appeared in a node's view of a room: (node, room
    /// name, member).
    pub view_added: HashMap<(NodeIdx, String, NodeIdx), Duration>,
    /// Host samples.
    pub samples: Vec<Sample>,
    /// "Stored at relay" entries in senders' logs: a message of theirs
    /// that a relay keeps for an unreachable recipient (an engine logs it
    /// only while no recipient has acknowledged the message yet).
    pub stored_at_relay: u64,
    /// Most envelopes the relays held at once (sampled every 100 ms).
    pub relay_peak_envelopes: u64,
    /// Envelopes the relays held at the last sample.
    pub relay_envelopes: u64,
    /// Most bytes (as on disk) the relays' stores held at once.
    pub relay_peak_bytes: u64,
    /// Most connections the relays held at once (all relays together).
    pub relay_peak_connections: usize,
    /// What the attackers did, when there were any (taken when they stop).
    pub attack: Option<crate::attack::AttackFigures>,
}

/// One host sample.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Sample {
    /// Seconds since the start of the run.
    pub t_s: f64,
    /// Process CPU seconds so far.
    pub cpu_s: f64,
    /// Resident memory in bytes.
    pub rss: u64,
    /// Bytes sent on the modelled network so far.
    pub wire_bytes: u64,
    /// Open modelled connections.
    pub connections: usize,
    /// Measured (message, recipient) pairs delivered so far.
    pub delivered: usize,
    /// How late the sampler's own tick was, ms (scheduler lag).
    pub lag_ms: f64,
}

/// Shared, thread-safe record of a run.
#[derive(Debug)]
pub struct Recorder {
    start: Instant,
    observed: Mutex<Observed>,
    changed: Notify,
}

/// The text of message `n`, `size` bytes long.
pub fn text_of(n: u64, warmup: bool, size: usize) -> String {
    let mut t = format!("{}{n}.", if warmup { 'w' } else { 'm' });
    while t.len() < size {
        t.push(char::from(b'a' + (t.len() % 26) as u8));
    }
    t
}

/// The message number in a text, if it is one of ours.
pub fn number_of(text: &str) -> Option<u64> {
    let rest = text.strip_prefix('m').or_else(|| text.strip_prefix('w'))?;
    let (n, _) = rest.split_once('.')?;
    n.parse().ok()
}

/// Now, as the one clock module reads it.
pub fn clock() -> Instant {
    safemeet_proto::clock::Clock::instant(&safemeet_proto::clock::SystemClock)
}

impl Recorder {
    /// A record whose time zero is `start`.
    pub fn new(start: Instant) -> Arc<Self> {
        Arc::new(Self {
            start,
            observed: Mutex::new(Observed::default()),
            changed: Notify::new(),
        })
    }

    /// Time since the start of the run.
    pub fn now(&self) -> Duration {
        clock().saturating_duration_since(self.start)
    }

    /// The observations so far.
    pub fn lock(&self) -> MutexGuard<'_, Observed> {
        self.observed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes a send.
    pub fn sent(&self, n: u64, sent: Sent) {
        self.lock().sent.insert(n, sent);
        self.changed.notify_waiters();
    }

    /// Notes that the send call of message `n` failed.
    pub fn failed(&self, n: u64) {
        if let Some(s) = self.lock().sent.get_mut(&n) {
            s.failed = true;
        }
    }

    /// Notes that `node` got message `n` at `at`.
    pub fn received(&self, n: u64, node: NodeIdx, at: Duration) {
        self.lock()
            .receipts
            .entry((n, node))
            .and_modify(|(_, count)| *count += 1)
            .or_insert((at, 1));
        self.changed.notify_waiters();
    }

    /// Notes that `node` joined room `name`.
    pub fn joined(&self, node: NodeIdx, name: String) {
        self.lock().joined.insert((node, name));
        self.changed.notify_waiters();
    }

    /// Notes `node`'s view of room `name`'s members now.
    pub fn view(&self, node: NodeIdx, name: String, members: BTreeSet<NodeIdx>) {
        let at = self.now();
        Self::set_view(&mut self.lock(), at, node, name, members);
        self.changed.notify_waiters();
    }

    fn set_view(
        o: &mut Observed,
        at: Duration,
        node: NodeIdx,
        name: String,
        members: BTreeSet<NodeIdx>,
    ) {
        let before = o
            .views
            .get(&(node, name.clone()))
            .cloned()
            .unwrap_or_default();
        for m in members.difference(&before) {
            o.view_added.insert((node, name.clone(), *m), at);
        }
        o.views.insert((node, name), members);
    }

    /// Notes that `member` joined (`true`) or left room `name` in `node`'s
    /// view.
    pub fn view_change(&self, node: NodeIdx, name: String, member: NodeIdx, joined: bool) {
        let at = self.now();
        let mut o = self.lock();
        let mut members = o
            .views
            .get(&(node, name.clone()))
            .cloned()
            .unwrap_or_default();
        if joined {
            members.insert(member);
        } else if member == node {
            // A node out of a room knows nothing of its members from then
            // on: when it is back, everyone it finds there is news to it.
            members.clear();
        } else {
            members.remove(&member);
        }
        Self::set_view(&mut o, at, node, name, members);
        drop(o);
        self.changed.notify_waiters();
    }

    /// Whether `node` knows `member` is in room `name`.
    pub fn knows_member(o: &Observed, node: NodeIdx, name: &str, member: NodeIdx) -> bool {
        o.views
            .get(&(node, name.to_owned()))
            .is_some_and(|v| v.contains(&member))
    }

    /// Notes a "stored at relay" entry in a sender's log.
    pub fn stored_at_relay(&self) {
        self.lock().stored_at_relay += 1;
    }

    /// Notes how many envelopes and bytes the relays hold now, and how
    /// many connections.
    pub fn relay_holds(&self, envelopes: u64, bytes: u64, connections: usize) {
        let mut o = self.lock();
        o.relay_envelopes = envelopes;
        o.relay_peak_envelopes = o.relay_peak_envelopes.max(envelopes);
        o.relay_peak_bytes = o.relay_peak_bytes.max(bytes);
        o.relay_peak_connections = o.relay_peak_connections.max(connections);
    }

    /// Waits until `done` holds, at most `timeout`; returns whether it did.
    pub async fn wait_for(&self, timeout: Duration, done: impl Fn(&Observed) -> bool) -> bool {
        let deadline = tokio::time::Instant::from_std(clock() + timeout);
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if done(&self.lock()) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return done(&self.lock());
            }
        }
    }

    /// Every expected (message, recipient) pair of the given kind has
    /// arrived, counting only recipients in `alive`.
    pub fn all_delivered(o: &Observed, warmup: bool, alive: &[bool]) -> bool {
        o.sent
            .iter()
            .filter(|(_, s)| s.warmup == warmup)
            .all(|(n, s)| {
                s.to.iter().all(|to| {
                    !alive.get(*to as usize).copied().unwrap_or(false)
                        || o.receipts.contains_key(&(*n, *to))
                })
            })
    }

    /// Samples the host and the network every `every` until the returned
    /// handle is aborted.
    pub fn spawn_sampler(
        self: &Arc<Self>,
        hub: Arc<Hub>,
        nodes: usize,
        every: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let rec = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let due = tick.tick().await;
                let lag = clock().saturating_duration_since(due.into_std());
                let wire_bytes = (0..nodes as NodeIdx)
                    .filter_map(|i| hub.counters(i))
                    .map(|c| c.sent.load(std::sync::atomic::Ordering::Relaxed))
                    .sum();
                let connections = hub.open_connections();
                let (cpu_s, rss) = host();
                let t_s = rec.now().as_secs_f64();
                let mut o = rec.lock();
                let delivered = o
                    .receipts
                    .keys()
                    .filter(|(n, _)| o.sent.get(n).is_some_and(|s| !s.warmup))
                    .count();
                o.samples.push(Sample {
                    t_s,
                    cpu_s,
                    rss,
                    wire_bytes,
                    connections,
                    delivered,
                    lag_ms: lag.as_secs_f64() * 1000.0,
                });
            }
        })
    }
}

/// Process CPU seconds (user + system) and resident bytes, from /proc;
/// zeros where /proc cannot be read.
pub fn host() -> (f64, u64) {
    // Clock ticks per second of /proc/self/stat: 100 on every Linux build
    // this runs on (USER_HZ is fixed by the kernel ABI).
    const USER_HZ: f64 = 100.0;
    let cpu = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the command name (which may hold spaces).
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = f.get(11)?.parse().ok()?;
            let stime: f64 = f.get(12)?.parse().ok()?;
            Some((utime + stime) / USER_HZ)
        })
        .unwrap_or(0.0);
    (cpu, status_kib("VmRSS:") * 1024)
}

/// Peak resident memory in bytes.
pub fn peak_rss() -> u64 {
    status_kib("VmHWM:") * 1024
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn message_numbers_round_trip_through_their_text() {
        let t = text_of(1234, false, 200);
        assert_eq!(t.len(), 200);
        assert_eq!(number_of(&t), Some(1234));
        assert_eq!(number_of(&text_of(7, true, 3)), Some(7));
        assert_eq!(number_of("hello"), None);
        assert_eq!(number_of("m12"), None);
    }

    #[test]
    fn host_figures_are_read() {
        let (cpu, rss) = host();
        assert!(cpu >= 0.0);
        assert!(rss > 0);
        assert!(peak_rss() >= rss / 2);
    }
}
