//! This device's relay mailboxes: when to drain them, and how a fetched
//! page is placed.
//!
//! The core drains on start and then every [`Config::mailbox_poll`]
//! (monotonic time), oldest epoch first: from the oldest epoch the last
//! complete drain left something in (at first as far back as relays keep
//! mail, but never before the device's certificate), and at least the
//! previous one. A drain that could not reach a relay is tried again with
//! backoff, and as soon as the relay connects. Each page fetched is stored
//! like direct deliveries (one flush), and only then are the stored ones,
//! and ones refused for good, handed back for deletion; a message that
//! cannot be placed yet stays for the next drain. The protocol itself is
//! the actor's (`relay_client.rs`).
//!
//! [`Config::mailbox_poll`]: crate::Config::mailbox_poll

use std::sync::Arc;

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use safemeet_proto::deliver::DeliverAnswer as Answer;
use safemeet_proto::mailbox::StoredEnvelope;
use safemeet_proto::{Envelope, codec};
use safemeet_store::{Keyspace, Store};

use crate::core::Core;

/// Epochs whose mailboxes a drain opens on each relay: the current one and
/// the next 7, so contacts find them open through a week away; relays
/// forget a mailbox never fetched 8 days after its last open (the
/// default of `safemeet_relay::Limits::unfetched_retention`).
pub(crate) const OPEN_AHEAD_EPOCHS: u64 = 8;
use crate::events::Output;
use crate::receive::Source;
use crate::records::name;

/// A relay: its peer id and the address to reach it at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relay {
    /// Its peer id.
    pub peer: PeerId,
    /// Its address, ending in `/p2p/<peer id>`.
    pub addr: Multiaddr,
}

impl Relay {
    /// A relay from its address, which must end in `/p2p/<peer id>`.
    pub fn from_addr(addr: &Multiaddr) -> Option<Self> {
        match addr.iter().last() {
            Some(Protocol::P2p(peer)) => Some(Self {
                peer,
                addr: addr.clone(),
            }),
            _ => None,
        }
    }
}

/// Where to leave deliveries for a device that cannot be reached.
#[derive(Debug, Clone)]
pub(crate) struct DeviceMailbox {
    /// Its long-term mailbox key, from its certificate.
    pub(crate) key: [u8; 32],
    /// Its relays, from its signed relay list.
    pub(crate) relays: Vec<Relay>,
}

/// Where draining stands.
#[derive(Debug, Default)]
pub(crate) struct DrainState {
    /// A drain is running.
    running: bool,
    /// Drains in a row that could not reach some relay.
    failures: u32,
    /// When the next drain is due (monotonic ms); 0 on start.
    next_ms: u64,
    /// The oldest epoch whose mailboxes may still hold mail for this
    /// device (`None`: not read from the store yet).
    from: Option<u64>,
    /// The epoch current when the running drain started, and the oldest
    /// epoch in which it left something (a message not placeable yet).
    epoch: u64,
    leftover: Option<u64>,
}

impl<S: Store + Clone> Core<S> {
    fn has_relays(&self) -> bool {
        !(self.own_relays.is_empty() && self.former_relays.is_empty())
    }

    /// When the next drain is due (monotonic ms), if one may start.
    pub(crate) fn drain_due_ms(&self) -> Option<u64> {
        (self.has_relays() && !self.drain.running).then_some(self.drain.next_ms)
    }

    /// The oldest epoch whose mailboxes may hold mail for this device, at
    /// epoch `current`: nothing is older than this device (its
    /// certificate), nor kept longer than relays keep mail.
    pub(crate) fn oldest_epoch(&self, current: u64) -> u64 {
        let born = self
            .machine
            .account()
            .certificate()
            .decode_body()
            .map_or(0, |c| safemeet_crypto::mailbox::epoch_of(c.created_at));
        current
            .saturating_sub(self.config.mailbox_catch_up_epochs)
            .max(born)
    }

    /// Starts draining this device's mailboxes when that is due and no
    /// drain runs.
    pub(crate) fn drain_if_due(&mut self) {
        let mono = self.now.mono_ms();
        if self.drain_due_ms().is_none_or(|due| mono < due) {
            return;
        }
        let poll = u64::try_from(self.config.mailbox_poll.as_millis()).unwrap_or(u64::MAX);
        self.drain.next_ms = mono.saturating_add(poll);
        let wall = self.now.wall;
        let current = safemeet_crypto::mailbox::epoch_of(wall);
        let oldest = self.oldest_epoch(current);
        // Never fewer than the current and the previous epoch.
        let from = self
            .drain
            .from
            .or_else(
                || match self.store.get(Keyspace::Contacts, name::DRAIN_FROM) {
                    Ok(Some(bytes)) => codec::decode::<u64>(&bytes, 16).ok(),
                    _ => None,
                },
            )
            .unwrap_or(oldest)
            .max(oldest)
            .min(current.saturating_sub(1));
        self.drain.epoch = current;
        self.drain.leftover = None;
        self.drain.running = true;
        let account = self.machine.account();
        let keys: Vec<_> = (from..=current)
            .map(|e| Arc::new(account.mailbox_key(e)))
            .collect();
        // The current epoch's mailbox and the next ones are opened (again)
        // on each relay, so contacts can leave mail there while this
        // device is away (relays forget a mailbox never fetched a while
        // after its last open: see `safemeet_relay::Limits`).
        let open = (current..current.saturating_add(OPEN_AHEAD_EPOCHS))
            .map(|e| match keys.last() {
                Some(k) if k.epoch() == e => Arc::clone(k),
                _ => Arc::new(account.mailbox_key(e)),
            })
            .collect();
        // Former relays, while they may hold mail; one that is gone does
        // not hold up the others (its failures do not count).
        let now_ms = wall.as_millis();
        self.former_relays.retain(|(_, until)| *until > now_ms);
        let former: Vec<Relay> = self
            .former_relays
            .iter()
            .filter_map(|(a, _)| a.parse::<Multiaddr>().ok())
            .filter_map(|a| Relay::from_addr(&a))
            .collect();
        self.out.push(Output::Drain {
            relays: self.own_relays.clone(),
            former,
            keys,
            open,
        });
    }

    /// A drain finished. A relay that could not be asked (often: still
    /// being dialled on start) is asked again soon, backing off up to the
    /// poll interval.
    pub(crate) fn drain_done(&mut self, fetched: usize, failed: bool) {
        tracing::debug!(fetched, failed, "mailboxes drained");
        self.drain.running = false;
        if !failed {
            self.drain.failures = 0;
            // Every relay answered for every epoch looked at: the next
            // drain starts at the previous epoch, or at the oldest one
            // where something was left.
            let previous = self.drain.epoch.saturating_sub(1);
            let from = self.drain.leftover.map_or(previous, |e| e.min(previous));
            self.drain.from = Some(from);
            let kept = codec::encode(&from)
                .map_err(crate::Error::from)
                .and_then(|b| Ok(self.store.put(Keyspace::Contacts, name::DRAIN_FROM, &b)?));
            if let Err(e) = kept {
                tracing::warn!(error = %e, "could not record how far mailboxes are drained");
            }
            return;
        }
        self.drain.failures = self.drain.failures.saturating_add(1);
        self.drain.next_ms = self.backoff(self.drain.failures, self.config.mailbox_poll);
    }

    /// A peer connected: a relay that could not be asked is asked now, and
    /// deliveries parked for the peer are tried again.
    pub(crate) fn connected(&mut self, peer: PeerId) {
        if self.drain.failures > 0 && self.own_relays.iter().any(|r| r.peer == peer) {
            self.drain.next_ms = 0;
        }
        self.on_connected(peer);
    }

    /// Stores a page fetched from a mailbox as direct deliveries are
    /// stored, makes it durable, and says what the relay may delete: all
    /// but what cannot be placed yet. On a failed flush, nothing.
    pub(crate) fn mailbox_page(&mut self, page: u64, epoch: u64, envelopes: Vec<StoredEnvelope>) {
        let mut taken = Vec::with_capacity(envelopes.len());
        let key = self.machine.account().mailbox_key(epoch);
        // Deposits arrive in the order they were made, not sent: to-device
        // messages (room keys, room state) first, then what they unlock.
        let mut frames = Vec::with_capacity(envelopes.len());
        for envelope in &envelopes {
            match key.open(&envelope.envelope) {
                Ok(frame) => frames.push((envelope.id, frame)),
                // Not for this device, or damaged: nothing to keep it for.
                Err(_) => taken.push(envelope.id),
            }
        }
        let to_device = |f: &[u8]| matches!(Envelope::from_frame(f), Ok(Envelope::ToDevice(_)));
        frames.sort_by_key(|(_, f)| !to_device(f));
        let mut later = Vec::new();
        for (id, frame) in frames {
            let (answer, stored) = self.receive(Source::Mailbox, &frame);
            self.acks_due.extend(stored);
            if answer == Answer::Later {
                later.push((id, frame));
            } else {
                taken.push(id);
            }
        }
        // Once more for what could not be placed: what came after may have
        // placed it (then it is a repeat now, and is taken).
        for (id, frame) in later {
            let (answer, stored) = self.receive(Source::Mailbox, &frame);
            self.acks_due.extend(stored);
            if answer == Answer::Later {
                let oldest = self.drain.leftover.map_or(epoch, |e| e.min(epoch));
                self.drain.leftover = Some(oldest);
            } else {
                taken.push(id);
            }
        }
        if !self.flush_received() {
            self.acks_due.clear();
            self.out.push(Output::PageDone {
                page,
                taken: Vec::new(),
            });
            return;
        }
        self.out.push(Output::PageDone { page, taken });
        let acks = std::mem::take(&mut self.acks_due);
        self.queue_acks(acks);
    }
}
