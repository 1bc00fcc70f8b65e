//! Inbound deliveries waiting for the application's answer.
//!
//! An inbound `/safemeet/deliver/1` request holds a libp2p response channel
//! until it is answered. The event loop keeps each one in a slot and hands
//! the application a [`ReplySlot`], the only way to answer it. A slot is
//! freed when the application answers, when it drops its `ReplySlot` (the
//! sender sees its request closed unanswered, at once), or when the slot
//! expires after [`Config::request_timeout`](crate::Config::request_timeout)
//! (by then the sender has given up too). So an application that never
//! answers costs at most [`Config::max_pending_replies`](crate::Config::max_pending_replies)
//! slots for that long, never every later delivery.

use std::fmt;
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use libp2p::request_response::ResponseChannel;
use tokio::sync::oneshot;

use crate::{Error, MAX_REPLY_BYTES};

/// The right to answer one inbound delivery.
///
/// Answer with [`send`](Self::send). Dropping it refuses the delivery and
/// frees its slot at once; left unanswered, it expires after
/// [`Config::request_timeout`](crate::Config::request_timeout).
pub struct ReplySlot {
    answer: oneshot::Sender<Vec<u8>>,
}

impl ReplySlot {
    /// Answers the delivery with at most [`MAX_REPLY_BYTES`] bytes.
    ///
    /// `Ok` means the answer was handed to the network, not that the peer
    /// read it. A slot that expired (or whose network stopped) gives
    /// [`Error::ReplyExpired`]; a longer answer gives [`Error::TooLarge`]
    /// and refuses the delivery.
    pub fn send(self, answer: Vec<u8>) -> Result<(), Error> {
        if answer.len() > MAX_REPLY_BYTES {
            return Err(Error::TooLarge {
                len: answer.len(),
                max: MAX_REPLY_BYTES,
            });
        }
        self.answer.send(answer).map_err(|_| Error::ReplyExpired)
    }

    /// Whether the slot has expired (or its network stopped): answering now
    /// would fail.
    pub fn is_expired(&self) -> bool {
        self.answer.is_closed()
    }
}

impl fmt::Debug for ReplySlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplySlot")
            .field("expired", &self.is_expired())
            .finish()
    }
}

/// How a slot ended.
#[derive(Debug)]
pub(crate) enum Settled {
    /// The application answered.
    Answered(Vec<u8>),
    /// The application dropped its [`ReplySlot`].
    Dropped,
    /// Nobody answered in time.
    Expired,
}

/// A slot: waits for the application's answer, at most the slot lifetime.
type Slot = BoxFuture<'static, (ResponseChannel<Vec<u8>>, Settled)>;

/// The open slots, at most `max` of them.
pub(crate) struct PendingReplies {
    slots: FuturesUnordered<Slot>,
    max: usize,
    lifetime: Duration,
}

impl PendingReplies {
    /// Room for `max` slots, each open for at most `lifetime`.
    pub(crate) fn new(max: usize, lifetime: Duration) -> Self {
        Self {
            slots: FuturesUnordered::new(),
            max,
            lifetime,
        }
    }

    /// How many slots are open.
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Opens a slot for `channel`; `None` (and the channel dropped, which
    /// refuses the request) when all are taken.
    pub(crate) fn open(&mut self, channel: ResponseChannel<Vec<u8>>) -> Option<ReplySlot> {
        if self.slots.len() >= self.max {
            return None;
        }
        let (answer, answered) = oneshot::channel();
        let lifetime = self.lifetime;
        self.slots.push(Box::pin(async move {
            let settled = match tokio::time::timeout(lifetime, answered).await {
                Ok(Ok(answer)) => Settled::Answered(answer),
                Ok(Err(_)) => Settled::Dropped,
                Err(_) => Settled::Expired,
            };
            (channel, settled)
        }));
        Some(ReplySlot { answer })
    }

    /// The next slot to settle; never resolves while none is open.
    pub(crate) async fn next(&mut self) -> (ResponseChannel<Vec<u8>>, Settled) {
        match self.slots.next().await {
            Some(settled) => settled,
            None => std::future::pending().await,
        }
    }
}
