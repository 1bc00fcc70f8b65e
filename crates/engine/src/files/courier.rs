//! Leaving a file's pieces on the relays of a device that was away (see
//! `file_pieces`): one piece after another, each signed, sealed to the
//! device's mailbox key of the epoch and deposited like any envelope.
//! A piece no relay keeps (a relay's disk quota is spent, or no relay is
//! reachable) is offered again after a wait that doubles from
//! [`WAIT_FIRST`] to [`WAIT_MAX`]; after [`GIVE_UP`] without one kept,
//! the rest is left to a direct fetch. It stops early when the device
//! has fetched the whole file from this one meanwhile, or the message is
//! gone.

use std::sync::Arc;
use std::time::Duration;

use libp2p::PeerId;
use safemeet_crypto::mailbox::{deposit_check_key, epoch_of, epoch_public_key, mailbox_id, seal};
use safemeet_proto::clock::{Clock, SystemClock};
use safemeet_proto::envelope::{FILE_PIECE_BYTES, FilePieceEnvelope};
use safemeet_proto::{Envelope, EventId};

use super::{FilesShared, blob_name};
use crate::events::Command;
use crate::file_pieces::{PieceJob, piece_count, piece_len};
use crate::handle::WeakHandle;

/// Files left on relays at once.
pub(crate) const MAX_COURIERS: usize = 2;
/// The first wait after a piece no relay kept.
const WAIT_FIRST: Duration = Duration::from_secs(15);
/// The longest wait between offers.
const WAIT_MAX: Duration = Duration::from_secs(600);
/// How long pieces are offered without one kept before the rest is left
/// to a direct fetch.
const GIVE_UP: Duration = Duration::from_secs(2 * 24 * 3600);
/// How long a file just sent is waited for, in tries of [`NAMING_WAIT`].
const NAMING_TRIES: u32 = 120;
const NAMING_WAIT: Duration = Duration::from_millis(250);
/// How often (in pieces) how far it got is written down.
const RECORD_EVERY: u64 = 8;

/// Leaves `job`'s pieces; the file and device, when it is done.
pub(crate) async fn leave(
    handle: WeakHandle,
    net: safemeet_net::Handle,
    files: Arc<FilesShared>,
    job: PieceJob,
) -> (EventId, PeerId) {
    let (event, peer) = (job.event_id, job.peer);
    // Done, given up, or the message is gone: the job ends (a task
    // aborted as the engine stops keeps its record, to go on after).
    let _ = leave_pieces(&handle, &net, &files, &job).await;
    if let Some(h) = handle.upgrade() {
        let done = Command::PiecesLeft {
            event,
            peer,
            next: None,
        };
        if let Err(e) = h.core(done).await {
            tracing::debug!(error = %e, "how far a file was left on relays is not recorded");
        }
    }
    (event, peer)
}

async fn leave_pieces(
    handle: &WeakHandle,
    net: &safemeet_net::Handle,
    files: &Arc<FilesShared>,
    job: &PieceJob,
) -> Option<()> {
    let key = files.keypair.clone()?;
    let count = piece_count(job.size);
    let name = blob_name(&job.event_id);
    let mut next = job.next;
    let mut wait = WAIT_FIRST;
    let mut kept_at = SystemClock.instant();
    while next < count {
        if files.has_whole(&job.event_id, &job.peer) {
            return Some(());
        }
        let len = piece_len(job.size, next)?;
        let index = u32::try_from(next).ok()?;
        let Some(bytes) = read_piece(files, name, next, len).await else {
            // The message is gone, and its file with it.
            return Some(());
        };
        let signature = key
            .sign(&FilePieceEnvelope::signed_bytes(
                &job.event_id,
                index,
                &bytes,
            ))
            .ok()?;
        let frame = Envelope::FilePiece(FilePieceEnvelope {
            event_id: job.event_id,
            index,
            bytes,
            signature,
        })
        .to_frame()
        .ok()?;
        let now = SystemClock.now();
        let epoch = epoch_of(now);
        let check = deposit_check_key(&job.mailbox_key, epoch);
        let (mailbox, sealed) = epoch_public_key(&job.mailbox_key, epoch)
            .and_then(|k| Ok((mailbox_id(&k), seal(&k, &frame)?)))
            .ok()?;
        let kept = crate::relay_client::deposit(
            net.clone(),
            mailbox,
            job.relays.clone(),
            sealed,
            check,
            now,
        )
        .await;
        if kept.is_some() {
            next += 1;
            wait = WAIT_FIRST;
            kept_at = SystemClock.instant();
            files.update(&job.event_id, |t| t.relayed += 1);
            if next.is_multiple_of(RECORD_EVERY) && next < count {
                let h = handle.upgrade()?;
                let _ = h
                    .core(Command::PiecesLeft {
                        event: job.event_id,
                        peer: job.peer,
                        next: Some(next),
                    })
                    .await;
            }
            continue;
        }
        if SystemClock.instant().saturating_duration_since(kept_at) > GIVE_UP {
            tracing::info!("a file was not left on relays: it waits for a direct fetch");
            return Some(());
        }
        tracing::debug!(
            wait_s = wait.as_secs(),
            "no relay kept a file piece; offered again later"
        );
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(WAIT_MAX);
    }
    Some(())
}

/// Piece `index` (`len` bytes) of the blob `name`, once the blob is whole:
/// a file just sent is named after its message a moment after the
/// message goes, so a blob not there yet is waited for a while. `None`:
/// it did not come, or is gone.
async fn read_piece(
    files: &Arc<FilesShared>,
    name: [u8; 16],
    index: u64,
    len: usize,
) -> Option<Vec<u8>> {
    for _ in 0..NAMING_TRIES {
        let blobs = files.blobs.clone();
        let offset = index * FILE_PIECE_BYTES as u64;
        let read = super::blocking(move || {
            if !blobs.is_complete(&name)? {
                return Ok(None);
            }
            let mut buf = vec![0u8; len];
            let n = blobs.read_at(&name, offset, &mut buf)?;
            Ok((n == len).then_some(buf))
        })
        .await;
        match read {
            Ok(Some(bytes)) => return Some(bytes),
            Ok(None) | Err(_) => tokio::time::sleep(NAMING_WAIT).await,
        }
    }
    None
}
