//! The gossip window: flow control for room messages published over
//! gossip.
//!
//! A message in a gossip room (see `topics`) is published on the room's
//! topic and delivered directly only to the member devices that have not
//! acknowledged it a gossip grace ([`Config::gossip_grace`]) after it was
//! published. At most [`Config::gossip_window`] messages are out on gossip
//! with no acknowledgement; later ones wait their turn. Gossip has no
//! back-pressure: a sender that outran its readers would overflow their
//! network event queues, where what does not fit is dropped and then
//! waits out the grace for the direct fallback.
//!
//! [`Config::gossip_grace`]: crate::Config::gossip_grace
//! [`Config::gossip_window`]: crate::Config::gossip_window

use std::collections::{HashSet, VecDeque};

use safemeet_proto::room::RoomTopic;
use safemeet_store::Store;

use crate::core::Core;
use crate::events::Output;

/// Room messages waiting for, or holding, a place in the window.
#[derive(Default)]
pub(crate) struct GossipWindow {
    /// Waiting to be published (outbox seq and topic; the frame is the
    /// pending item's), in order.
    pub(crate) queue: VecDeque<(u64, RoomTopic)>,
    /// Published and not yet acknowledged by anyone nor handed to direct
    /// delivery.
    pub(crate) window: HashSet<u64>,
}

impl<S: Store + Clone> Core<S> {
    /// Publishes the room messages the gossip window lets out now, starting
    /// their gossip grace.
    pub(crate) fn publish_due(&mut self) {
        let mut frames = Vec::new();
        let grace = u64::try_from(self.config.gossip_grace.as_millis()).unwrap_or(u64::MAX);
        let due = self.now.mono_ms().saturating_add(grace);
        while self.gossip.window.len() < self.config.gossip_window {
            let Some((seq, topic)) = self.gossip.queue.pop_front() else {
                break;
            };
            // Acknowledged or finished meanwhile (over direct delivery):
            // nothing left to publish.
            let Some(pending) = self.outbox.pending.get(&seq) else {
                continue;
            };
            if pending.delivered_once {
                continue;
            }
            let Ok(frame) = pending.item.frame() else {
                continue;
            };
            if !self.subscribed.contains(&topic) {
                // The room shrank to direct fan-out meanwhile: deliver now.
                let now = self.now.mono_ms();
                self.outbox.set_due(seq, Some(now));
                continue;
            }
            self.outbox.set_due(seq, Some(due));
            self.gossip.window.insert(seq);
            frames.push((topic, frame));
        }
        if !frames.is_empty() {
            self.out.push(Output::Publish(frames));
        }
    }
}
