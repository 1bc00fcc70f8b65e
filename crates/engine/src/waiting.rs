//! Room frames that decrypt but cannot be placed yet: the room state that
//! places them has not come (a state ahead of this device's chain, a
//! message from a member the next state brings in, a room not joined yet).
//!
//! They are answered "later", and their senders try again, on a backoff of
//! a second or more. States that travel apart (an admin bringing several
//! members back in one after the other) often arrive out of order, so a
//! few such frames are kept in memory, each charged to its holder (see
//! `admission`), and tried again as soon as a room changes: a head start,
//! like the held frames of `headers`. A frame stored that way is
//! acknowledged, and its sender's next try is a repeat.
//!
//! Only frames from known senders are kept (a stranger's frame has no
//! holder), at most [`MAX_WAITING`] in all and [`MAX_WAITING_PER_HOLDER`]
//! per holder; past that the holder's own oldest frame goes, and when the
//! whole is full, the oldest frame of whoever keeps the most.

use safemeet_crypto::machine::Holder;
use safemeet_proto::envelope::RoomEnvelope;
use safemeet_store::Store;

use crate::admission::HolderQueue;
use crate::core::Core;
use crate::error::Error;
use crate::placement::waits_for_state;

/// Most frames kept in all: 64. A frame is at most 64 KiB, so at most
/// 4 MiB of memory; an honest burst of out-of-order states is a few.
pub(crate) const MAX_WAITING: usize = 64;
/// Most frames kept for one holder: 8, an eighth of the whole, so one
/// sender's frames cannot push out seven others'.
pub(crate) const MAX_WAITING_PER_HOLDER: usize = 8;

/// The frames waiting for a room state.
pub(crate) struct Waiting {
    frames: HolderQueue<RoomEnvelope>,
}

impl Default for Waiting {
    fn default() -> Self {
        Self {
            frames: HolderQueue::new(MAX_WAITING, MAX_WAITING_PER_HOLDER),
        }
    }
}

impl Waiting {
    /// Keeps `env` for `holder`, within the bounds (see the module docs).
    pub(crate) fn keep(&mut self, holder: Holder, env: RoomEnvelope) {
        self.frames.push(holder, env);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }
}

impl<S: Store + Clone> Core<S> {
    /// Tries the waiting frames again, after a room changed: each one
    /// stored is acknowledged; one that still waits for a state stays;
    /// any other is dropped (its sender's next try meets the same answer).
    /// Goes round again while a round stored something, since one state
    /// may place the next. Returns whether anything was stored.
    pub(crate) fn retry_waiting(&mut self) -> bool {
        let mut placed = false;
        loop {
            let frames = self.waiting.frames.take();
            let mut stored_any = false;
            for (holder, env) in frames {
                match self.decrypt_and_store(&env, None) {
                    Ok(stored) => {
                        self.acks_due.push(stored);
                        self.unflushed_receipts += 1;
                        stored_any = true;
                        placed = true;
                    }
                    Err(e) if waits_for_state(&e) => self.waiting.keep(holder, env),
                    Err(Error::Crypto(safemeet_crypto::Error::Replay { .. })) => {}
                    Err(e) => tracing::debug!(error = %e, "a waiting room frame was dropped"),
                }
            }
            if !stored_any || self.waiting.is_empty() {
                return placed;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use safemeet_proto::room::RoomTopic;

    use super::*;

    fn frame(n: u8) -> RoomEnvelope {
        RoomEnvelope {
            topic: RoomTopic::from_bytes([0; 32]),
            session_id: [n; 32],
            ciphertext: vec![n],
        }
    }

    #[test]
    fn one_holder_cannot_push_out_the_others() {
        let mut w = Waiting::default();
        let honest = Holder([1; 32]);
        let flood = Holder([2; 32]);
        w.keep(honest, frame(0));
        w.keep(honest, frame(0));
        assert_eq!(w.frames.len_for(honest), 1, "a repeat is kept once");
        for n in 1..=200 {
            w.keep(flood, frame(n));
        }
        assert_eq!(w.frames.len_for(flood), MAX_WAITING_PER_HOLDER);
        assert_eq!(w.frames.len_for(honest), 1);
        // Many holders fill the whole; the largest gives way.
        for n in 0..=(MAX_WAITING as u8) {
            w.keep(Holder([n.wrapping_add(10); 32]), frame(n.wrapping_add(100)));
        }
        assert!(w.frames.len() <= MAX_WAITING);
    }
}
