//! Delivery scheduling: which outbox item goes to which device when.
//!
//! Every outbox item waiting for delivery is a [`Pending`] with its
//! recipient devices. Items are kept in a timer queue ordered by when they
//! are next due (monotonic time), so looking for due work costs nothing
//! for items that are not due: there is no periodic scan. A delivery
//! that fails is retried with jittered exponential backoff. A device that
//! keeps answering "later" is *parked* (see `parked.rs`). An item that no
//! known device can receive is kept *unrouted* and routed again when
//! contacts, devices or rooms change. At most [`OUTBOX_WINDOW`] items are
//! read into memory; the rest of the stored outbox is paged in as these
//! finish.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use libp2p::{Multiaddr, PeerId};
use safemeet_crypto::machine::{Destination, OutboxItem};
use safemeet_proto::deliver::DeliverAnswer as Answer;
use safemeet_proto::{DeviceId, Envelope, EventId, UserId};
use safemeet_store::Store;

use crate::Error;
use crate::core::Core;
use crate::events::{DeliveryResult, DeliveryToken, Output};
use crate::records::{MessageState, VERSION};

/// Most outbox deliveries and deposits in flight at once.
pub(crate) const MAX_IN_FLIGHT: usize = 64;
/// Most outbox items read from the store into memory at once; the rest are
/// paged in as these finish, so a large outbox left by a long offline
/// spell does not have to fit in memory at start.
pub(crate) const OUTBOX_WINDOW: usize = 4096;
/// Outbox items read from the store per page.
const OUTBOX_PAGE: usize = 256;

/// One device an item is still to reach.
#[derive(Debug, Clone)]
pub(crate) struct Recipient {
    pub(crate) peer: PeerId,
    pub(crate) addrs: Vec<Multiaddr>,
    /// "Later" answers in a row from it.
    pub(crate) later: u32,
    /// When it was parked last (monotonic ms): the next rare retry
    /// counts from here.
    pub(crate) parked_at: u64,
    /// When it was first parked for this item: giving up counts from here
    /// (a retry that is answered "later" again does not reset it).
    pub(crate) parked_since: Option<u64>,
}

/// An outbox item still to be delivered.
pub(crate) struct Pending {
    pub(crate) item: OutboxItem,
    /// The event id of a room message (acknowledgements name it).
    pub(crate) event_id: Option<EventId>,
    /// Devices still to acknowledge, and where to find them.
    pub(crate) targets: Vec<Recipient>,
    /// Devices that answered "later" too often: tried when they connect.
    pub(crate) parked: Vec<Recipient>,
    pub(crate) in_flight: HashSet<PeerId>,
    pub(crate) delivered_once: bool,
    pub(crate) attempts: u32,
    /// When it is next due (monotonic ms); `None`: not on a timer.
    pub(crate) due: Option<u64>,
}

impl Pending {
    pub(crate) fn idle_target(&self) -> bool {
        self.targets
            .iter()
            .any(|t| !self.in_flight.contains(&t.peer))
    }

    fn is_done(&self) -> bool {
        self.targets.is_empty() && self.parked.is_empty() && self.in_flight.is_empty()
    }
}

/// The items waiting for delivery.
#[derive(Default)]
pub(crate) struct Outbox {
    pub(crate) pending: BTreeMap<u64, Pending>,
    /// (due, seq) of every item on a timer.
    pub(crate) schedule: BTreeSet<(u64, u64)>,
    /// Pending room messages by event id.
    pub(crate) by_event: HashMap<EventId, u64>,
    /// Items with no known recipient device yet.
    unrouted: BTreeMap<u64, OutboxItem>,
    /// Items parked for a peer, by peer.
    pub(crate) parked: HashMap<PeerId, BTreeSet<u64>>,
    /// When each peer with parked items last had them tried early (on a
    /// connection or an accepted delivery), monotonic ms.
    pub(crate) unparked_at: HashMap<PeerId, u64>,
    /// Deliveries and deposits in flight.
    pub(crate) in_flight: usize,
    /// While stored items remain to be paged in: the last seq read.
    resume: Option<Option<u64>>,
}

impl Outbox {
    /// Puts item `seq` on the timer at `due` (or takes it off).
    pub(crate) fn set_due(&mut self, seq: u64, due: Option<u64>) {
        let Some(p) = self.pending.get_mut(&seq) else {
            return;
        };
        if let Some(old) = p.due.take() {
            self.schedule.remove(&(old, seq));
        }
        if let Some(at) = due {
            self.schedule.insert((at, seq));
        }
        p.due = due;
    }

    pub(crate) fn next_due(&self) -> Option<u64> {
        if self.in_flight >= MAX_IN_FLIGHT {
            return None;
        }
        self.schedule.first().map(|(at, _)| *at)
    }

    /// How many items are waiting for a recipient device to be known.
    pub(crate) fn unrouted_len(&self) -> usize {
        self.unrouted.len()
    }

    /// Whether stored items remain to be paged in.
    pub(crate) fn paging(&self) -> bool {
        self.resume.is_some()
    }
}

/// The delay before try `attempts + 1`: `initial` doubled per failure, at
/// most `max`, then scaled by a factor drawn from 0.5..=1 (see
/// `Core::backoff`).
pub(crate) fn backoff_delay(
    initial: Duration,
    attempts: u32,
    max: Duration,
    rng: &mut impl rand::Rng,
) -> Duration {
    let full = initial.saturating_mul(1u32 << attempts.min(16)).min(max);
    let permille: u128 = rng.gen_range(500..=1000);
    let ms = full.as_millis().saturating_mul(permille) / 1000;
    Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
}

impl<S: Store + Clone> Core<S> {
    /// When to try again after `attempts` failures (monotonic ms):
    /// exponential backoff from `retry_initial`, at most `max`, each delay
    /// drawn between half and all of it. Without the jitter, deliveries
    /// that failed together retry together: a device that dials many
    /// contacts at once (a room key for a large room) meets the connection
    /// limits again at every retry.
    pub(crate) fn backoff(&mut self, attempts: u32, max: Duration) -> u64 {
        let delay = backoff_delay(self.config.retry_initial, attempts, max, &mut self.rng);
        self.now
            .mono_ms()
            .saturating_add(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX))
    }

    /// Starts reading the stored outbox into the delivery queue (after a
    /// restart), up to [`OUTBOX_WINDOW`] items.
    pub(crate) fn resume_outbox(&mut self) -> Result<(), Error> {
        self.outbox.resume = Some(None);
        self.page_in()
    }

    /// Reads more of the stored outbox while fewer than half of
    /// [`OUTBOX_WINDOW`] items are in memory. Items sent since the start
    /// (tracked already) are passed over.
    pub(crate) fn page_in(&mut self) -> Result<(), Error> {
        while let Some(after) = self.outbox.resume {
            // Items waiting for a recipient to be known do not count: they
            // must not stop the rest of the outbox from being read.
            let held = self.outbox.pending.len();
            if held >= OUTBOX_WINDOW / 2 && after.is_some() || held >= OUTBOX_WINDOW {
                return Ok(());
            }
            let items = self.machine.outbox(after, OUTBOX_PAGE)?;
            let Some((last, _)) = items.last() else {
                self.outbox.resume = None;
                return Ok(());
            };
            self.outbox.resume = Some(Some(*last));
            let now = self.now.mono_ms();
            for (seq, item) in items {
                if self.outbox.pending.contains_key(&seq) || self.outbox.unrouted.contains_key(&seq)
                {
                    continue;
                }
                self.track_or_keep(seq, item, Some(now));
            }
        }
        Ok(())
    }

    /// Works out which devices an outbox item goes to and queues it, due
    /// at `due` (monotonic ms; `None`: not until that is changed). Returns
    /// whether it was queued; an item with no known recipient device is
    /// kept aside and routed again when contacts or rooms change, unless
    /// it is a room message sent while no one else was in the room, which
    /// is done at once.
    pub(crate) fn track(
        &mut self,
        seq: u64,
        item: OutboxItem,
        due: Option<u64>,
    ) -> Result<bool, Error> {
        let mut targets = Vec::new();
        let mut alone = false;
        match item.destination {
            Destination::Device(user, device) => {
                if let Some(t) = self.target(&user, &device)? {
                    targets.push(t);
                }
            }
            Destination::Room(room_id) => {
                let members = self.room(&room_id)?.map(|r| r.members).unwrap_or_default();
                let me = self.user_id();
                alone = members.iter().all(|u| *u == me);
                for user in members {
                    let devices: Vec<DeviceId> = self
                        .machine
                        .user_devices(&user)?
                        .into_iter()
                        .map(|d| d.device_id)
                        .collect();
                    for device in devices {
                        if let Some(t) = self.target(&user, &device)? {
                            targets.push(t);
                        }
                    }
                }
            }
        }
        // Tracked again (routed anew): its old entry goes first.
        self.outbox.set_due(seq, None);
        if targets.is_empty() && alone {
            // Sent while no one else was in the room: it is for no one (a
            // member who comes in later was not a recipient, and was not
            // given the key it was sent under).
            tracing::debug!(seq, "a room message with no one else in the room; done");
            self.finish(&[seq]);
            return Ok(false);
        }
        if targets.is_empty() {
            tracing::debug!(seq, "an outbox item has no known recipient device yet");
            self.outbox.unrouted.insert(seq, item);
            return Ok(false);
        }
        let event_id = match (&item.envelope, &item.destination) {
            (Envelope::Room(sealed), Destination::Room(room)) => self.own_event_id(room, sealed),
            _ => None,
        };
        if let Some(id) = event_id {
            self.outbox.by_event.insert(id, seq);
        }
        self.outbox.pending.insert(
            seq,
            Pending {
                item,
                event_id,
                targets: targets
                    .into_iter()
                    .map(|(peer, addrs)| Recipient {
                        peer,
                        addrs,
                        later: 0,
                        parked_at: 0,
                        parked_since: None,
                    })
                    .collect(),
                parked: Vec::new(),
                in_flight: HashSet::new(),
                delivered_once: false,
                attempts: 0,
                due: None,
            },
        );
        self.outbox.set_due(seq, due);
        Ok(true)
    }

    /// Routes the items that had no known recipient device, now that
    /// contacts, devices or rooms changed.
    pub(crate) fn route_unrouted(&mut self) {
        let waiting = std::mem::take(&mut self.outbox.unrouted);
        let now = self.now.mono_ms();
        for (seq, item) in waiting {
            self.track_or_keep(seq, item, Some(now));
        }
    }

    /// Tracks an item; one that cannot be worked out now (the store could
    /// not be read) is kept with the unrouted ones and tried again when
    /// they are, never lost.
    fn track_or_keep(&mut self, seq: u64, item: OutboxItem, due: Option<u64>) {
        if let Err(e) = self.track(seq, item.clone(), due) {
            tracing::warn!(error = %e, "an outbox item could not be routed; kept");
            self.outbox.unrouted.insert(seq, item);
        }
    }

    /// Forgets pending items that are done, and removes them from the
    /// outbox.
    pub(crate) fn finish(&mut self, seqs: &[u64]) {
        for seq in seqs {
            self.outbox.set_due(*seq, None);
            self.gossip.window.remove(seq);
            if let Some(p) = self.outbox.pending.remove(seq) {
                if let Some(id) = p.event_id {
                    self.outbox.by_event.remove(&id);
                }
                for r in &p.parked {
                    if let Some(set) = self.outbox.parked.get_mut(&r.peer) {
                        set.remove(seq);
                        if set.is_empty() {
                            self.outbox.parked.remove(&r.peer);
                            self.outbox.unparked_at.remove(&r.peer);
                        }
                    }
                }
            }
        }
        if !seqs.is_empty()
            && let Err(e) = self.machine.remove_from_outbox(seqs)
        {
            tracing::warn!(error = %e, "could not clear outbox items");
        }
    }

    pub(crate) fn finish_if_done(&mut self, seq: u64) {
        if self.outbox.pending.get(&seq).is_some_and(Pending::is_done) {
            self.finish(&[seq]);
        }
    }

    /// Schedules the next try of an item, with exponential backoff.
    pub(crate) fn retry_later(&mut self, seq: u64) {
        let Some(pending) = self.outbox.pending.get_mut(&seq) else {
            return;
        };
        pending.attempts = pending.attempts.saturating_add(1);
        let attempts = pending.attempts;
        let due = self.backoff(attempts, self.config.retry_max);
        self.outbox.set_due(seq, Some(due));
    }

    /// Starts deliveries that are due, within the in-flight limit.
    pub(crate) fn deliver_due(&mut self) {
        let now = self.now.mono_ms();
        while self.outbox.in_flight < MAX_IN_FLIGHT {
            let Some(&(at, seq)) = self.outbox.schedule.first() else {
                return;
            };
            if at > now {
                return;
            }
            self.outbox.schedule.remove(&(at, seq));
            if let Some(p) = self.outbox.pending.get_mut(&seq) {
                p.due = None;
            }
            self.retry_parked(seq);
            let Some(pending) = self.outbox.pending.get_mut(&seq) else {
                continue;
            };
            // An envelope the machine made always frames; one that does not
            // is left alone.
            let Ok(frame) = pending.item.frame() else {
                continue;
            };
            // Its gossip grace is over: it no longer holds a window place.
            self.gossip.window.remove(&seq);
            for t in &pending.targets {
                if pending.in_flight.contains(&t.peer) || self.outbox.in_flight >= MAX_IN_FLIGHT {
                    continue;
                }
                pending.in_flight.insert(t.peer);
                self.outbox.in_flight += 1;
                self.out.push(Output::Deliver {
                    token: DeliveryToken::Outbox(seq),
                    peer: t.peer,
                    addrs: t.addrs.clone(),
                    frame: frame.clone(),
                });
            }
            if pending.idle_target() {
                // The limit stopped it half-way: the rest stays due.
                self.outbox.set_due(seq, Some(at));
                return;
            }
            self.schedule_parked(seq);
        }
    }

    /// Records the outcome of one delivery attempt.
    pub(crate) fn delivery_done(&mut self, seq: u64, peer: PeerId, result: DeliveryResult) {
        self.outbox.in_flight = self.outbox.in_flight.saturating_sub(1);
        let later_retries = self.config.later_retries;
        let Some(pending) = self.outbox.pending.get_mut(&seq) else {
            return;
        };
        pending.in_flight.remove(&peer);
        if !pending.targets.iter().any(|t| t.peer == peer) {
            // It acknowledged over gossip meanwhile: nothing more to do
            // for it (and nothing to leave on its relays).
            self.finish_if_done(seq);
            return;
        }
        let now = self.now.mono_ms();
        match result {
            DeliveryResult::Answered(Answer::Ack) => {
                pending.targets.retain(|t| t.peer != peer);
                if !pending.delivered_once {
                    pending.delivered_once = true;
                    self.gossip.window.remove(&seq);
                    self.record_state(&[seq], MessageState::Delivered);
                }
            }
            DeliveryResult::Answered(Answer::Refused) => {
                tracing::warn!(seq, "a device refused a delivery; not retried");
                pending.targets.retain(|t| t.peer != peer);
            }
            DeliveryResult::Answered(Answer::Later) => {
                let Some(i) = pending.targets.iter().position(|t| t.peer == peer) else {
                    return;
                };
                pending.targets[i].later += 1;
                if pending.targets[i].later > later_retries {
                    // It may never place it (it left the room, it never
                    // adds the sender): retried when it shows up, or
                    // rarely, and given up in the end.
                    tracing::debug!(seq, "a device keeps answering later; parked");
                    let mut parked = pending.targets.remove(i);
                    parked.parked_at = now;
                    parked.parked_since.get_or_insert(now);
                    pending.parked.push(parked);
                    self.outbox.parked.entry(peer).or_default().insert(seq);
                    if pending.targets.is_empty() {
                        self.schedule_parked(seq);
                    } else {
                        self.retry_later(seq);
                    }
                } else {
                    self.retry_later(seq);
                }
            }
            DeliveryResult::Unreachable if self.deposit(seq, peer) => {
                // Left on its relays instead: the deposit's outcome decides.
                return;
            }
            DeliveryResult::Unreachable | DeliveryResult::Failed => self.retry_later(seq),
        }
        self.finish_if_done(seq);
        self.schedule_parked(seq);
    }

    /// Acknowledgements from `peer` of room messages it got over gossip.
    pub(crate) fn acked(&mut self, peer: PeerId, ids: &[EventId]) -> Result<(), Error> {
        let mut first = Vec::new();
        let mut finished = Vec::new();
        let mut touched = Vec::new();
        let mut later = Vec::new();
        for id in ids {
            let Some(&seq) = self.outbox.by_event.get(id) else {
                later.push(*id);
                continue;
            };
            let Some(p) = self.outbox.pending.get_mut(&seq) else {
                continue;
            };
            let before = p.targets.len() + p.parked.len();
            p.targets.retain(|t| t.peer != peer);
            p.parked.retain(|t| t.peer != peer);
            if let Some(set) = self.outbox.parked.get_mut(&peer) {
                set.remove(&seq);
            }
            if p.targets.len() + p.parked.len() == before {
                continue;
            }
            if !p.delivered_once {
                p.delivered_once = true;
                self.gossip.window.remove(&seq);
                first.push(seq);
            }
            if p.is_done() {
                finished.push(seq);
            } else {
                touched.push(seq);
            }
        }
        self.record_state(&first, MessageState::Delivered);
        // Done either way: the peer did acknowledge.
        self.finish(&finished);
        for seq in touched {
            self.schedule_parked(seq);
        }
        self.acked_after_relay(&later)
    }

    /// The peer and addresses of a contact's device, if it is known; also
    /// remembers where to leave deliveries for it while it is unreachable.
    pub(crate) fn target(
        &mut self,
        user: &UserId,
        device: &DeviceId,
    ) -> Result<Option<(PeerId, Vec<Multiaddr>)>, Error> {
        let Some(info) = self.machine.device(device)? else {
            return Ok(None);
        };
        let cert = info.certificate.decode_body()?;
        let Ok(peer) = PeerId::from_bytes(&cert.peer_id) else {
            return Ok(None);
        };
        if !self.mailboxes.contains_key(&peer) {
            let relays = self.relay_list(device).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "a contact's relay list is unusable; ignored");
                Vec::new()
            });
            self.mailboxes.insert(
                peer,
                crate::mailbox::DeviceMailbox {
                    key: cert.mailbox_key,
                    relays,
                },
            );
        }
        let addrs = self
            .contact(user)?
            .and_then(|c| c.addrs.into_iter().find(|(d, _)| d == device))
            .map(|(_, a)| a.iter().filter_map(|s| s.parse().ok()).collect())
            .unwrap_or_default();
        Ok(Some((peer, addrs)))
    }
}

/// A duration in whole milliseconds (saturating).
pub(crate) fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The outbox item an `Outgoing` stands for.
pub(crate) fn outbox_item(out: &safemeet_crypto::machine::Outgoing, meta: &[u8]) -> OutboxItem {
    OutboxItem {
        version: VERSION,
        destination: out.destination,
        meta: meta.to_vec(),
        envelope: out.envelope.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn retry_delays_double_stay_under_the_cap_and_are_spread() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let (initial, max) = (Duration::from_secs(1), Duration::from_secs(300));
        for attempts in 0..20 {
            let full = (initial * 2u32.pow(attempts.min(16))).min(max);
            let d = backoff_delay(initial, attempts, max, &mut rng);
            assert!(d >= full / 2 && d <= full, "{attempts}: {d:?} vs {full:?}");
        }
        // Deliveries that failed together do not all retry together.
        let draws: std::collections::BTreeSet<u128> = (0..50)
            .map(|_| backoff_delay(initial, 3, max, &mut rng).as_millis())
            .collect();
        assert!(draws.len() > 25, "{draws:?}");
        // Any configured cap is safe.
        let huge = backoff_delay(Duration::MAX, 16, Duration::MAX, &mut rng);
        assert!(huge >= Duration::from_millis(u64::MAX / 2));
    }
}
