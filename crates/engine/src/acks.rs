//! Acknowledgements this device owes: room messages that came over
//! gossip (or from a mailbox) are acknowledged to their sending device
//! directly, in frames of their own.
//!
//! The queue is bounded ([`MAX_QUEUED_ACKS`]; past it the oldest waiting
//! frame is dropped, which only costs its sender a direct delivery of
//! those messages, answered too) and each frame is retried a few times
//! ([`Config::ack_retries`]) with the outbox's backoff.
//!
//! [`Config::ack_retries`]: crate::Config::ack_retries

use std::collections::{BTreeMap, BTreeSet};

use libp2p::{Multiaddr, PeerId};
use safemeet_proto::{DeviceId, Envelope, EventId, UserId};
use safemeet_store::Store;

use crate::core::Core;
use crate::events::{DeliveryResult, DeliveryToken, Output};

/// Most acknowledgement frames in flight at once.
const MAX_ACKS_IN_FLIGHT: usize = 64;
/// Most acknowledgement frames waiting. Each names up to 256 messages, so
/// this covers a burst of a quarter of a million; past it the oldest is
/// dropped (its sender delivers those messages directly instead).
pub(crate) const MAX_QUEUED_ACKS: usize = 1024;

/// An acknowledgement frame to deliver.
struct AckItem {
    peer: PeerId,
    addrs: Vec<Multiaddr>,
    frame: Vec<u8>,
    attempts: u32,
    due: Option<u64>,
}

/// Acknowledgements owed, bounded (see the module docs).
#[derive(Default)]
pub(crate) struct AckQueue {
    items: BTreeMap<u64, AckItem>,
    schedule: BTreeSet<(u64, u64)>,
    next_id: u64,
    in_flight: usize,
    /// Acknowledgement frames dropped because the queue was full, or after
    /// their last retry.
    pub(crate) dropped: u64,
}

impl AckQueue {
    pub(crate) fn next_due(&self) -> Option<u64> {
        if self.in_flight >= MAX_ACKS_IN_FLIGHT {
            return None;
        }
        self.schedule.first().map(|(at, _)| *at)
    }

    fn push(&mut self, peer: PeerId, addrs: Vec<Multiaddr>, frame: Vec<u8>, now: u64) {
        if self.items.len() >= MAX_QUEUED_ACKS {
            // Drop the oldest waiting one (one in flight finishes by itself).
            let oldest = self
                .items
                .iter()
                .find(|(_, a)| a.due.is_some())
                .map(|(id, _)| *id);
            match oldest {
                Some(id) => self.remove(id),
                None => {
                    self.dropped += 1;
                    return;
                }
            }
            self.dropped += 1;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.items.insert(
            id,
            AckItem {
                peer,
                addrs,
                frame,
                attempts: 0,
                due: Some(now),
            },
        );
        self.schedule.insert((now, id));
    }

    fn remove(&mut self, id: u64) {
        if let Some(a) = self.items.remove(&id)
            && let Some(at) = a.due
        {
            self.schedule.remove(&(at, id));
        }
    }

    /// How many acknowledgement frames are waiting or in flight.
    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }
}

impl<S: Store + Clone> Core<S> {
    /// Queues acknowledgements of room messages that came over gossip (or
    /// from a mailbox), one frame per sending device and up to 256 ids.
    pub(crate) fn queue_acks(&mut self, stored: Vec<(UserId, DeviceId, EventId)>) {
        let mut by_device: BTreeMap<DeviceId, (UserId, Vec<EventId>)> = BTreeMap::new();
        for (user, device, id) in stored {
            by_device
                .entry(device)
                .or_insert((user, Vec::new()))
                .1
                .push(id);
        }
        let now = self.now.mono_ms();
        for (device, (user, ids)) in by_device {
            let Ok(Some((peer, addrs))) = self.target(&user, &device) else {
                continue;
            };
            for chunk in ids.chunks(safemeet_proto::limits::MAX_RECEIPT_EVENTS) {
                let frame = Envelope::Acks(safemeet_proto::envelope::AckEnvelope {
                    event_ids: chunk.to_vec(),
                })
                .to_frame();
                if let Ok(frame) = frame {
                    self.acks.push(peer, addrs.clone(), frame, now);
                }
            }
        }
    }

    /// Starts acknowledgement deliveries that are due.
    pub(crate) fn send_due_acks(&mut self) {
        let now = self.now.mono_ms();
        while self.acks.in_flight < MAX_ACKS_IN_FLIGHT {
            let Some(&(at, id)) = self.acks.schedule.first() else {
                return;
            };
            if at > now {
                return;
            }
            self.acks.schedule.remove(&(at, id));
            let Some(a) = self.acks.items.get_mut(&id) else {
                continue;
            };
            a.due = None;
            self.acks.in_flight += 1;
            self.out.push(Output::Deliver {
                token: DeliveryToken::Ack(id),
                peer: a.peer,
                addrs: a.addrs.clone(),
                frame: a.frame.clone(),
            });
        }
    }

    /// Records the outcome of an acknowledgement's delivery.
    pub(crate) fn ack_done(&mut self, id: u64, result: DeliveryResult) {
        self.acks.in_flight = self.acks.in_flight.saturating_sub(1);
        let retries = self.config.ack_retries;
        let Some(a) = self.acks.items.get_mut(&id) else {
            return;
        };
        if matches!(result, DeliveryResult::Answered(_)) {
            self.acks.items.remove(&id);
            return;
        }
        a.attempts += 1;
        if a.attempts > retries {
            tracing::debug!("an acknowledgement was given up; its sender delivers directly");
            self.acks.items.remove(&id);
            self.acks.dropped += 1;
            return;
        }
        let attempts = a.attempts;
        let due = self.backoff(attempts, self.config.retry_max);
        if let Some(a) = self.acks.items.get_mut(&id) {
            a.due = Some(due);
            self.acks.schedule.insert((due, id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ack_queue_is_bounded_and_drops_the_oldest() {
        let mut q = AckQueue::default();
        let peer = PeerId::random();
        for i in 0..(MAX_QUEUED_ACKS + 10) {
            q.push(peer, Vec::new(), vec![i as u8], i as u64);
        }
        assert_eq!(q.len(), MAX_QUEUED_ACKS);
        assert_eq!(q.dropped, 10);
        // The ten oldest went.
        assert_eq!(q.schedule.first().map(|(at, _)| *at), Some(10));
    }
}
