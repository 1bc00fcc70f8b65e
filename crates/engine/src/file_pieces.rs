//! Files for a device that was away: their sealed chunks through its
//! relays, the core's side.
//!
//! When a file message is left on a device's relays (the device could
//! not be reached), its file follows the same way: the file service
//! (`files::courier`) cuts the sealed chunks into pieces of
//! [`FILE_PIECE_BYTES`], each signed with this device's network key,
//! sealed to the device's mailbox key of the epoch like any deposit, and
//! left on its relays one after another, as fast as the relays take them
//! (a relay's disk quota counts them like any envelope; one refused is
//! offered again later). What is still to deposit is kept here, in the
//! store ([`PieceJob`]), so a restart goes on where it was.
//!
//! A receiving device takes pieces from its mailbox only (never from a
//! peer or gossip): a piece counts when its message is held, came from
//! another device, and the piece is signed by the network key of the
//! device that sent the message, is of the length its place calls for,
//! and the file is within this node's size limit. It is kept as a blob of
//! its own ([`piece_name`]), synced before the relay is told to delete it;
//! the file service then reads the pieces in order, opens each sealed
//! chunk (the file's key and the whole file's hash check them as for a
//! direct fetch), appends them to the file's blob and removes the pieces.

use libp2p::PeerId;
use safemeet_proto::deliver::DeliverAnswer as Answer;
use safemeet_proto::envelope::{FILE_PIECE_BYTES, FilePieceEnvelope};
use safemeet_proto::{EventId, codec};
use safemeet_store::Store;
use safemeet_store::blob::BlobName;
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::core::Core;
use crate::events::Output;
use crate::files::sealed_size;
use crate::mailbox::Relay;

/// Most files being left on relays at once, for all devices; past it the
/// oldest is dropped (its receiver fetches it from this device when both
/// are online, as any file).
pub const MAX_PIECE_JOBS: usize = 256;

/// The store record of the jobs.
const JOBS: &[u8] = b"piece-jobs";

/// How many pieces a file of `size` bytes travels in.
pub fn piece_count(size: u64) -> u64 {
    sealed_size(size).div_ceil(FILE_PIECE_BYTES as u64)
}

/// The length of piece `index` of a file of `size` bytes, if it has one.
pub fn piece_len(size: u64, index: u64) -> Option<usize> {
    let total = sealed_size(size);
    let start = index.checked_mul(FILE_PIECE_BYTES as u64)?;
    (start < total).then(|| (total - start).min(FILE_PIECE_BYTES as u64) as usize)
}

/// The blob a received piece is kept under until it is taken in.
pub fn piece_name(event: &EventId, index: u64) -> BlobName {
    let mut input = [0u8; 40];
    input[..32].copy_from_slice(event.as_bytes());
    input[32..].copy_from_slice(&index.to_be_bytes());
    let hash = blake3::derive_key("safemeet/v1/piece-name", &input);
    let mut name = [0u8; 16];
    name.copy_from_slice(&hash[..16]);
    name
}

/// A file still to be left on a device's relays.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PieceJob {
    /// The file message.
    pub event_id: EventId,
    /// The device it is for.
    pub peer: PeerId,
    /// The file's size.
    pub size: u64,
    /// The device's long-term mailbox key (from its certificate).
    pub mailbox_key: [u8; 32],
    /// Its relays.
    pub relays: Vec<Relay>,
    /// The first piece not yet left.
    pub next: u64,
}

/// A job as kept: with where to leave the pieces, so a restart needs no
/// routing of the device first (the mailbox key is public, from its
/// certificate; the relays are addresses).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct JobRecord {
    event_id: EventId,
    #[serde(with = "codec::bytes")]
    peer: Vec<u8>,
    next: u64,
    mailbox_key: [u8; 32],
    relays: Vec<String>,
}

/// The largest jobs record read (256 jobs of 8 relays' addresses).
const MAX_JOBS_RECORD: usize = 1024 * 1024;

impl<S: Store + Clone> Core<S> {
    fn piece_records(&self) -> Result<Vec<JobRecord>, Error> {
        match self.store.get(safemeet_store::Keyspace::Contacts, JOBS)? {
            Some(bytes) => Ok(codec::decode(&bytes, MAX_JOBS_RECORD)?),
            None => Ok(Vec::new()),
        }
    }

    fn put_piece_records(&mut self, records: &[JobRecord]) -> Result<(), Error> {
        let bytes = codec::encode(&records)?;
        self.store
            .put(safemeet_store::Keyspace::Contacts, JOBS, &bytes)?;
        self.store.flush()?;
        Ok(())
    }

    /// A message was left on `peer`'s relays: if it is a file message of
    /// this device's, its file follows.
    pub(crate) fn file_left_on_relays(&mut self, event: EventId, peer: PeerId) {
        if self.config.blobs.is_none() {
            return;
        }
        let Ok(Some(source)) = self.file_source(&event) else {
            return;
        };
        if !source.entry.sent_here {
            return;
        }
        let Some(mailbox) = self.mailboxes.get(&peer).filter(|m| !m.relays.is_empty()) else {
            return;
        };
        let job = PieceJob {
            event_id: event,
            peer,
            size: source.entry.file.size,
            mailbox_key: mailbox.key,
            relays: mailbox.relays.clone(),
            next: 0,
        };
        let added = self.piece_records().and_then(|mut records| {
            records.retain(|r| !(r.event_id == event && r.peer == peer.to_bytes()));
            records.push(JobRecord {
                event_id: event,
                peer: peer.to_bytes(),
                next: 0,
                mailbox_key: job.mailbox_key,
                relays: job.relays.iter().map(|r| r.addr.to_string()).collect(),
            });
            let over = records.len().saturating_sub(MAX_PIECE_JOBS);
            records.drain(..over);
            self.put_piece_records(&records)
        });
        if let Err(e) = added {
            tracing::warn!(error = %e, "a file to leave on relays could not be recorded");
            return;
        }
        self.out.push(Output::LeavePieces(Box::new(job)));
    }

    /// A kept job, if its message is still held and its relays parse.
    fn kept_job(&mut self, record: &JobRecord, peer: PeerId) -> Option<PieceJob> {
        let source = self.file_source(&record.event_id).ok()??;
        let relays: Vec<Relay> = record
            .relays
            .iter()
            .filter_map(|a| a.parse::<libp2p::Multiaddr>().ok())
            .filter_map(|a| Relay::from_addr(&a))
            .collect();
        (!relays.is_empty()).then(|| PieceJob {
            event_id: record.event_id,
            peer,
            size: source.entry.file.size,
            mailbox_key: record.mailbox_key,
            relays,
            next: record.next,
        })
    }

    /// The files still to be left on relays (the file service asks at
    /// start); ones whose message or device is gone are dropped.
    pub(crate) fn piece_jobs(&mut self) -> Result<Vec<PieceJob>, Error> {
        let records = self.piece_records()?;
        let held = records.len();
        let mut jobs = Vec::new();
        let mut kept = Vec::new();
        for record in records {
            let Ok(peer) = PeerId::from_bytes(&record.peer) else {
                continue;
            };
            if let Some(job) = self.kept_job(&record, peer) {
                jobs.push(job);
                kept.push(record);
            }
        }
        if kept.len() != held {
            self.put_piece_records(&kept)?;
        }
        Ok(jobs)
    }

    /// The file service left pieces up to `next` (`None`: all of them, or
    /// it gave up).
    pub(crate) fn pieces_left(
        &mut self,
        event: EventId,
        peer: PeerId,
        next: Option<u64>,
    ) -> Result<(), Error> {
        let mut records = self.piece_records()?;
        let peer = peer.to_bytes();
        match next {
            Some(next) => records
                .iter_mut()
                .filter(|r| r.event_id == event && r.peer == peer)
                .for_each(|r| r.next = next),
            None => records.retain(|r| !(r.event_id == event && r.peer == peer)),
        }
        self.put_piece_records(&records)
    }

    /// A piece from this device's mailbox (see the module's text).
    pub(crate) fn file_piece(&mut self, piece: &FilePieceEnvelope) -> Answer {
        let Some(blobs) = self.config.blobs.clone() else {
            return Answer::Refused;
        };
        let source = match self.file_source(&piece.event_id) {
            Ok(Some(source)) => source,
            // Its message has not come yet (or is gone: then the piece
            // waits on the relay until the relay lets it go).
            Ok(None) => return Answer::Later,
            Err(e) => {
                tracing::debug!(error = %e, "a file piece could not be placed");
                return Answer::Later;
            }
        };
        let file = &source.entry.file;
        if source.entry.sent_here || file.size > self.config.max_file_bytes {
            return Answer::Refused;
        }
        let Some((sender, _)) = source.from else {
            return Answer::Later;
        };
        let index = u64::from(piece.index);
        let signed = FilePieceEnvelope::signed_bytes(&piece.event_id, piece.index, &piece.bytes);
        let genuine = crate::relay_client::relay_key(&sender)
            .is_some_and(|key| key.verify(&signed, &piece.signature));
        if !genuine || piece_len(file.size, index) != Some(piece.bytes.len()) {
            tracing::debug!("a file piece was refused");
            return Answer::Refused;
        }
        let whole = crate::files::blob_name(&piece.event_id);
        let name = piece_name(&piece.event_id, index);
        let kept = (|| {
            if blobs.0.is_complete(&whole)? || blobs.0.is_complete(&name)? {
                return Ok(false);
            }
            blobs.0.remove(&name)?;
            blobs.0.append(&name, &piece.bytes)?;
            blobs.0.complete(&name)?;
            Ok::<_, safemeet_store::Error>(true)
        })();
        match kept {
            Ok(true) => {
                self.out.push(Output::PieceArrived(piece.event_id));
                Answer::Ack
            }
            Ok(false) => Answer::Ack,
            Err(e) => {
                tracing::warn!(error = %e, "a file piece could not be kept");
                Answer::Later
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::SEALED_CHUNK_BYTES;

    #[test]
    fn pieces_cover_the_sealed_file_exactly() {
        let p = FILE_PIECE_BYTES as u64;
        for size in [0u64, 1, 65_535, 65_536, 3 * 65_536 + 17, 5 << 20] {
            let count = piece_count(size);
            let total: u64 = (0..count).map(|i| piece_len(size, i).unwrap() as u64).sum();
            assert_eq!(total, sealed_size(size), "{size}");
            assert_eq!(piece_len(size, count), None);
            assert!((0..count.saturating_sub(1)).all(|i| piece_len(size, i) == Some(p as usize)));
        }
        // A piece is a little less than a sealed chunk.
        const { assert!(FILE_PIECE_BYTES < SEALED_CHUNK_BYTES) };
        assert_eq!(piece_len(1, u64::MAX), None);
    }

    #[test]
    fn piece_names_differ_by_file_and_place_and_from_the_file_blob() {
        let a = EventId::from_bytes([1; 32]);
        let b = EventId::from_bytes([2; 32]);
        assert_ne!(piece_name(&a, 0), piece_name(&a, 1));
        assert_ne!(piece_name(&a, 0), piece_name(&b, 0));
        assert_ne!(piece_name(&a, 0), crate::files::blob_name(&a));
    }
}
