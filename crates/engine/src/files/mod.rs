//! The file service: files sealed, served and fetched beside the core.
//!
//! A file message (see `file_records`) carries the file's key, hash,
//! size, name and type; the file's sealed chunks
//! (`safemeet_crypto::attachment`: 64 KiB, ChaCha20-Poly1305 under the
//! file's own key, the index, last-chunk flag and count bound in each) are
//! kept in the [`BlobStore`] under a name derived from the message's event
//! id ([`blob_name`]), and fetched by each receiving device from the
//! sending device over `/safemeet/blob/1` (see `serve` and `fetch`):
//!
//! ```text
//!   receiver ── version 1 ‖ event id (32) ‖ first chunk (u64 BE) ──► sender
//!   receiver ◄── status (0 ok, 1 refused, 2 not ready) ‖ sealed chunks ── sender
//! ```
//!
//! The sender serves a file only to an active device of a member of the
//! message's conversation (its peer id is authenticated by Noise), at
//! most [`MAX_SERVING`] streams at once and [`MAX_SERVING_PER_PEER`] per
//! peer. The chunks' sizes follow from the file's size, so none is
//! announced: the receiver reads each at its exact length, opens it
//! (a damaged or foreign chunk is refused at once), appends it sealed to
//! its blob, and checks the whole file's hash at the end. A transfer cut
//! off (a connection lost, either side restarted) resumes from the last
//! whole chunk kept. At most [`MAX_FETCHING`] files are fetched at once,
//! one at a time from any one device (a sender that trickles its files
//! holds one slot, not all). The sender writes only as fast as the receiver
//! reads (the stream's flow control paces it), so a slow receiver holds
//! no more than a stream window in the sender's memory.
//!
//! Nothing here is plaintext on disk: a blob is the sealed chunks, and the
//! key is only in the (encrypted) timeline entry. When a message is
//! redacted or expires, its blob is removed (the service follows the event
//! log); at start, blobs no message names are removed.
//!
//! The service runs as a task on the engine's runtime; the core keeps no
//! state of it, and every blob store call runs on the blocking pool.

mod courier;
mod fetch;
mod keep;
mod pieces;
mod serve;
mod upload;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use safemeet_crypto::attachment::{CHUNK_BYTES, CHUNK_OVERHEAD, chunk_count};
use safemeet_proto::EventId;
use safemeet_store::blob::{BlobName, BlobStore};
use serde::Serialize;

pub use upload::FileUpload;

pub(crate) use fetch::run;

/// Bytes of a sealed chunk (all but the last).
pub const SEALED_CHUNK_BYTES: usize = CHUNK_BYTES + CHUNK_OVERHEAD;
/// Most file streams served at once.
pub const MAX_SERVING: usize = 16;
/// Most file streams served to one peer at once.
pub const MAX_SERVING_PER_PEER: usize = 4;
/// Most files fetched at once.
pub const MAX_FETCHING: usize = 4;
/// Transfers remembered for the API (the oldest finished ones go first).
const MAX_TRANSFERS: usize = 1024;

/// The blob a message's file is kept under.
pub fn blob_name(event: &EventId) -> BlobName {
    let hash = blake3::derive_key("safemeet/v1/blob-name", event.as_bytes());
    let mut name = [0u8; 16];
    name.copy_from_slice(&hash[..16]);
    name
}

/// The offset of sealed chunk `index`.
pub(crate) fn chunk_offset(index: u64) -> u64 {
    index.saturating_mul(SEALED_CHUNK_BYTES as u64)
}

/// The sealed size of a whole file of `size` bytes.
pub(crate) fn sealed_size(size: u64) -> u64 {
    size + chunk_count(size) * CHUNK_OVERHEAD as u64
}

/// Which way a file goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// This device sent it.
    Send,
    /// This device fetches it.
    Receive,
}

/// Where a transfer stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum TransferState {
    /// Waiting to be fetched: its sender is unreachable, or its turn has
    /// not come.
    Waiting,
    /// Chunks are arriving.
    Receiving,
    /// Held whole and checked.
    Complete,
    /// Refused for good: a damaged chunk, a file other than described, or
    /// one past the size limit.
    Failed {
        /// Why.
        reason: String,
    },
}

/// A file on its way, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Transfer {
    /// The file message.
    pub event_id: EventId,
    /// Sent or received.
    pub direction: Direction,
    /// The file's size in bytes.
    pub size: u64,
    /// Its chunk count.
    pub chunks: u64,
    /// Chunks held (a sent file: all of them).
    pub done: u64,
    /// Chunks served to other devices (sending).
    pub served: u64,
    /// Pieces left on the relays of devices that were away (sending;
    /// about 64 KiB each).
    pub relayed: u64,
    /// Where it stands.
    #[serde(flatten)]
    pub state: TransferState,
}

/// What the file service shares with the engine's handle.
pub(crate) struct FilesShared {
    pub(crate) blobs: Arc<dyn BlobStore>,
    pub(crate) max_file_bytes: u64,
    transfers: Mutex<Transfers>,
    /// Paces what is served, if a rate is set.
    pub(crate) pace: Option<Pacer>,
    /// Devices a file is being fetched from now.
    sources: Mutex<std::collections::HashSet<libp2p::PeerId>>,
    /// Signs the pieces of files left on relays (this device's network
    /// key); `None`: files are not left on relays.
    pub(crate) keypair: Option<libp2p::identity::Keypair>,
    /// What the actor hands the service: files to leave on relays, and
    /// files some of whose pieces arrived.
    inbox: Mutex<Inbox>,
    wake: tokio::sync::Notify,
    /// Bumped whenever a transfer changes (progress events follow it).
    progress: tokio::sync::watch::Sender<u64>,
    /// Devices served the whole of a file (their files' pieces need not
    /// go through relays any more).
    whole: Mutex<std::collections::HashSet<(EventId, libp2p::PeerId)>>,
    /// The peer a call runs with now: files served to it yield to the
    /// call (see [`CALL_YIELD_BYTES_PER_S`]).
    call_peer: Mutex<Option<libp2p::PeerId>>,
    call_pace: Pacer,
}

/// While a call runs with a peer, files are served to it at most this
/// fast (4 MiB/s), in writes of at most [`CALL_YIELD_WRITE`] bytes: the
/// call's frames share the connection (one TCP stream under yamux, or
/// one QUIC congestion window) and wait behind no more than one write.
pub const CALL_YIELD_BYTES_PER_S: u64 = 4 * 1024 * 1024;
/// The largest write of a file to a peer in a call with this device.
pub const CALL_YIELD_WRITE: usize = 8 * 1024;

/// What the actor hands the file service.
#[derive(Default)]
pub(crate) struct Inbox {
    pub(crate) jobs: Vec<crate::PieceJob>,
    pub(crate) arrived: Vec<EventId>,
}

/// Most (file, device) pairs remembered as served whole.
const MAX_WHOLE: usize = 4096;

/// A fetch from one device; the device is free again when it is dropped
/// (a fetch that ends, fails or is aborted).
pub(crate) struct SourceClaim {
    files: Arc<FilesShared>,
    peer: libp2p::PeerId,
}

impl Drop for SourceClaim {
    fn drop(&mut self) {
        let mut sources = match self.files.sources.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        sources.remove(&self.peer);
    }
}

/// Spreads the chunks served over time: each takes its turn after the
/// one before at `rate` bytes per second, whoever it is for.
pub(crate) struct Pacer {
    rate: u64,
    next: tokio::sync::Mutex<Option<tokio::time::Instant>>,
}

impl Pacer {
    /// Waits for the turn of `bytes`.
    pub(crate) async fn take(&self, bytes: usize) {
        use safemeet_proto::clock::{Clock, SystemClock};
        let now = tokio::time::Instant::from_std(SystemClock.instant());
        let cost = std::time::Duration::from_secs_f64(bytes as f64 / self.rate.max(1) as f64);
        let at = {
            let mut next = self.next.lock().await;
            let at = next.map_or(now, |n| n.max(now));
            *next = Some(at + cost);
            at
        };
        tokio::time::sleep_until(at).await;
    }
}

#[derive(Default)]
struct Transfers {
    by_event: HashMap<EventId, Transfer>,
    order: std::collections::VecDeque<EventId>,
    /// Blobs being sealed, not yet named after their message.
    sealing: std::collections::HashSet<BlobName>,
}

impl std::fmt::Debug for FilesShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FilesShared").finish_non_exhaustive()
    }
}

impl FilesShared {
    pub(crate) fn new(blobs: Arc<dyn BlobStore>, max_file_bytes: u64, rate: Option<u64>) -> Self {
        Self {
            keypair: None,
            inbox: Mutex::new(Inbox::default()),
            wake: tokio::sync::Notify::new(),
            progress: tokio::sync::watch::Sender::new(0),
            whole: Mutex::new(std::collections::HashSet::new()),
            blobs,
            max_file_bytes,
            transfers: Mutex::new(Transfers::default()),
            pace: rate.filter(|r| *r > 0).map(|rate| Pacer {
                rate,
                next: tokio::sync::Mutex::new(None),
            }),
            sources: Mutex::new(std::collections::HashSet::new()),
            call_peer: Mutex::new(None),
            call_pace: Pacer {
                rate: CALL_YIELD_BYTES_PER_S,
                next: tokio::sync::Mutex::new(None),
            },
        }
    }

    /// A call runs with `peer` now (`None`: no call).
    pub(crate) fn set_call_peer(&self, peer: Option<libp2p::PeerId>) {
        *self
            .call_peer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = peer;
    }

    /// Whether a call runs with `peer` now.
    pub(crate) fn in_call_with(&self, peer: &libp2p::PeerId) -> bool {
        self.call_peer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            == Some(peer)
    }

    /// Signs pieces of files left on relays with `keypair`.
    pub(crate) fn with_keypair(mut self, keypair: libp2p::identity::Keypair) -> Self {
        self.keypair = Some(keypair);
        self
    }

    /// Hands the service a file to leave on a device's relays.
    pub(crate) fn leave_pieces(&self, job: crate::PieceJob) {
        lock(&self.inbox).jobs.push(job);
        self.wake.notify_one();
    }

    /// Tells the service pieces of a file arrived.
    pub(crate) fn piece_arrived(&self, event: EventId) {
        lock(&self.inbox).arrived.push(event);
        self.wake.notify_one();
    }

    /// What the actor handed over since the last call.
    pub(crate) fn take_inbox(&self) -> Inbox {
        std::mem::take(&mut *lock(&self.inbox))
    }

    /// `peer` was served the whole of `event`'s file.
    pub(crate) fn served_whole(&self, event: EventId, peer: libp2p::PeerId) {
        let mut whole = lock(&self.whole);
        if whole.len() >= MAX_WHOLE {
            whole.clear();
        }
        whole.insert((event, peer));
    }

    /// Whether `peer` was served the whole of `event`'s file.
    pub(crate) fn has_whole(&self, event: &EventId, peer: &libp2p::PeerId) -> bool {
        lock(&self.whole).contains(&(*event, *peer))
    }

    /// Claims `peer` for a fetch, unless a fetch from it runs already.
    pub(crate) fn claim_source(this: &Arc<Self>, peer: libp2p::PeerId) -> Option<SourceClaim> {
        let mut sources = match this.sources.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        sources.insert(peer).then(|| SourceClaim {
            files: this.clone(),
            peer,
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Transfers) -> T) -> T {
        let mut guard = match self.transfers.lock() {
            Ok(g) => g,
            // A panic while updating progress leaves progress, nothing
            // else: carry on with it.
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }

    /// A watch bumped whenever a transfer changes.
    pub(crate) fn progress(&self) -> tokio::sync::watch::Receiver<u64> {
        self.progress.subscribe()
    }

    fn changed(&self) {
        self.progress.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Records or replaces a transfer.
    pub(crate) fn set(&self, transfer: Transfer) {
        self.changed();
        self.with(|t| {
            let id = transfer.event_id;
            if t.by_event.insert(id, transfer).is_none() {
                t.order.push_back(id);
            }
            while t.order.len() > MAX_TRANSFERS {
                let Some(old) = t.order.pop_front() else {
                    break;
                };
                t.by_event.remove(&old);
            }
        });
    }

    /// Changes a transfer, if it is known.
    pub(crate) fn update(&self, event: &EventId, f: impl FnOnce(&mut Transfer)) {
        let known = self.with(|t| match t.by_event.get_mut(event) {
            Some(transfer) => {
                f(transfer);
                true
            }
            None => false,
        });
        if known {
            self.changed();
        }
    }

    /// Forgets a transfer (its message is gone).
    pub(crate) fn forget(&self, event: &EventId) {
        self.with(|t| {
            t.by_event.remove(event);
            t.order.retain(|e| e != event);
        });
        self.changed();
    }

    /// A transfer, if known.
    pub(crate) fn get(&self, event: &EventId) -> Option<Transfer> {
        self.with(|t| t.by_event.get(event).cloned())
    }

    /// Every transfer known, oldest first.
    pub(crate) fn all(&self) -> Vec<Transfer> {
        self.with(|t| {
            t.order
                .iter()
                .filter_map(|e| t.by_event.get(e).cloned())
                .collect()
        })
    }

    fn sealing(&self, name: BlobName, on: bool) {
        self.with(|t| {
            if on {
                t.sealing.insert(name);
            } else {
                t.sealing.remove(&name);
            }
        });
    }

    fn is_sealing(&self, name: &BlobName) -> bool {
        self.with(|t| t.sealing.contains(name))
    }
}

/// A lock, carried on past a panic while it was held (it guards
/// bookkeeping only).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Runs blocking blob store work on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, safemeet_store::Error> + Send + 'static,
) -> Result<T, safemeet_store::Error> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(safemeet_store::Error::Backend(Box::new(e))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_fetch_at_a_time_from_a_device() {
        let files = Arc::new(FilesShared::new(
            Arc::new(safemeet_store::blob::MemoryBlobs::new()),
            1 << 20,
            None,
        ));
        let (a, b) = (libp2p::PeerId::random(), libp2p::PeerId::random());
        let first = FilesShared::claim_source(&files, a);
        assert!(first.is_some());
        assert!(FilesShared::claim_source(&files, a).is_none(), "a is busy");
        assert!(FilesShared::claim_source(&files, b).is_some(), "b is not");
        drop(first);
        assert!(
            FilesShared::claim_source(&files, a).is_some(),
            "a is free again"
        );
    }

    #[test]
    fn blob_names_follow_event_ids_and_sizes_add_a_tag_per_chunk() {
        let a = EventId::from_bytes([1; 32]);
        let b = EventId::from_bytes([2; 32]);
        assert_eq!(blob_name(&a), blob_name(&a));
        assert_ne!(blob_name(&a), blob_name(&b));
        assert_eq!(sealed_size(0), 16);
        assert_eq!(sealed_size(CHUNK_BYTES as u64), SEALED_CHUNK_BYTES as u64);
        assert_eq!(
            sealed_size(CHUNK_BYTES as u64 + 1),
            SEALED_CHUNK_BYTES as u64 + 17
        );
        assert_eq!(chunk_offset(2), 2 * SEALED_CHUNK_BYTES as u64);
    }
}
