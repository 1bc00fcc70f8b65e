//! Taking in the pieces of a file that came through this device's relays
//! (see `file_pieces`): they are read in order from where the file's blob
//! ends, cut back into sealed chunks, each opened under the file's key
//! (as a chunk fetched directly is), appended to the blob, and removed.

use std::sync::Arc;

use safemeet_crypto::attachment::Assembler;
use safemeet_proto::EventId;
use safemeet_proto::envelope::FILE_PIECE_BYTES;
use safemeet_store::blob::BlobStore;

use super::{FilesShared, blob_name, chunk_offset, sealed_size};
use crate::file_pieces::{piece_count, piece_len, piece_name};

/// Why pieces could not be taken in.
pub(crate) enum PieceError {
    /// A chunk they hold is damaged: refused, as a damaged chunk fetched
    /// directly is.
    Damaged(String),
    /// The blob store failed: try again later.
    Store(String),
}

/// Takes in what pieces of `event`'s file are held after the chunks
/// `assembler` has opened; gives the assembler back, at the chunk after
/// the last one taken in.
pub(crate) async fn take_in(
    files: &Arc<FilesShared>,
    event: EventId,
    size: u64,
    assembler: Assembler,
) -> Result<Assembler, PieceError> {
    let blobs = files.blobs.clone();
    tokio::task::spawn_blocking(move || take_in_blocking(&*blobs, &event, size, assembler))
        .await
        .map_err(|e| PieceError::Store(e.to_string()))?
}

fn take_in_blocking(
    blobs: &dyn BlobStore,
    event: &EventId,
    size: u64,
    mut assembler: Assembler,
) -> Result<Assembler, PieceError> {
    let store = |e: safemeet_store::Error| PieceError::Store(e.to_string());
    let piece_bytes = FILE_PIECE_BYTES as u64;
    let name = blob_name(event);
    let count = assembler.count();
    let total = sealed_size(size);
    let pieces = piece_count(size);
    // The blob holds whole chunks up to here; `pending` the sealed bytes
    // after it that make no whole chunk yet.
    let mut held = chunk_offset(assembler.next_chunk());
    let mut pending: Vec<u8> = Vec::new();
    let mut piece = vec![0u8; FILE_PIECE_BYTES];
    let mut removed_below = 0;
    while assembler.next_chunk() < count {
        let want = held + pending.len() as u64;
        let index = want / piece_bytes;
        let Some(len) = piece_len(size, index) else {
            break;
        };
        let this = piece_name(event, index);
        if !blobs.is_complete(&this).map_err(store)? {
            break;
        }
        if blobs.read_at(&this, 0, &mut piece[..len]).map_err(store)? != len {
            // Cut short on disk: it is fetched again another way.
            blobs.remove(&this).map_err(store)?;
            break;
        }
        let skip = (want - index * piece_bytes) as usize;
        pending.extend_from_slice(&piece[skip..len]);
        let mut whole = Vec::new();
        while assembler.next_chunk() < count {
            let at = assembler.next_chunk();
            let chunk_len = (chunk_offset(at + 1).min(total) - chunk_offset(at)) as usize;
            if pending.len() < chunk_len {
                break;
            }
            if let Err(e) = assembler.take(&pending[..chunk_len]) {
                // Signed by the sending device and still damaged: what
                // came before it is kept, nothing of these pieces is.
                if !whole.is_empty() {
                    blobs.append(&name, &whole).map_err(store)?;
                }
                remove_pieces(blobs, event, 0, pieces);
                return Err(PieceError::Damaged(e.to_string()));
            }
            whole.extend_from_slice(&pending[..chunk_len]);
            pending.drain(..chunk_len);
        }
        if !whole.is_empty() {
            blobs.append(&name, &whole).map_err(store)?;
            held += whole.len() as u64;
        }
        // Pieces wholly inside what the blob holds are done with.
        let done_below = held / piece_bytes;
        remove_pieces(blobs, event, removed_below, done_below);
        removed_below = done_below;
    }
    if assembler.next_chunk() == count {
        blobs.sync(&name).map_err(store)?;
        remove_pieces(blobs, event, 0, pieces);
    }
    Ok(assembler)
}

/// Removes pieces `from..to` of `event`'s file, where there are any.
pub(crate) fn remove_pieces(blobs: &dyn BlobStore, event: &EventId, from: u64, to: u64) {
    for index in from..to {
        if let Err(e) = blobs.remove(&piece_name(event, index)) {
            tracing::debug!(error = %e, "a file piece could not be removed");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is a failure

    use safemeet_crypto::attachment::seal_file;
    use safemeet_store::blob::MemoryBlobs;

    use super::*;

    /// A file of `len` bytes sealed, its manifest, and its sealed bytes.
    fn sealed(len: usize) -> (safemeet_proto::file::FileRef, Vec<u8>) {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        let (manifest, chunks) = seal_file(&data, "f.bin", "application/octet-stream").unwrap();
        (manifest, chunks.concat())
    }

    fn keep_piece(blobs: &MemoryBlobs, event: &EventId, sealed: &[u8], index: u64) {
        let start = (index * FILE_PIECE_BYTES as u64) as usize;
        let end = (start + FILE_PIECE_BYTES).min(sealed.len());
        let name = piece_name(event, index);
        blobs.append(&name, &sealed[start..end]).unwrap();
        blobs.complete(&name).unwrap();
    }

    #[test]
    fn pieces_are_taken_in_order_as_far_as_they_go_and_then_removed() {
        let blobs = MemoryBlobs::new();
        let event = EventId::from_bytes([5; 32]);
        let (file, bytes) = sealed(5 * 65_536 + 999);
        let pieces = piece_count(file.size);
        assert_eq!(pieces, 6);
        // Pieces 0, 1 and 3 are here; 2 is not yet.
        for i in [0, 1, 3] {
            keep_piece(&blobs, &event, &bytes, i);
        }
        let assembler = Assembler::new(file.clone()).unwrap();
        let assembler =
            take_in_blocking(&blobs, &event, file.size, assembler).unwrap_or_else(|_| panic!());
        // Two pieces hold one whole chunk and most of the next.
        assert_eq!(assembler.next_chunk(), 1);
        let held = blobs.len(&blob_name(&event)).unwrap().unwrap();
        assert_eq!(held, chunk_offset(1));
        assert_eq!(&bytes[..held as usize], {
            let mut b = vec![0; held as usize];
            blobs.read_at(&blob_name(&event), 0, &mut b).unwrap();
            b
        });
        // Piece 0 is wholly held now; piece 1 is not (its tail is needed).
        assert!(!blobs.is_complete(&piece_name(&event, 0)).unwrap());
        assert!(blobs.is_complete(&piece_name(&event, 1)).unwrap());

        for i in [2, 4, 5] {
            keep_piece(&blobs, &event, &bytes, i);
        }
        let assembler =
            take_in_blocking(&blobs, &event, file.size, assembler).unwrap_or_else(|_| panic!());
        assert_eq!(assembler.next_chunk(), assembler.count());
        assert!(assembler.check().is_ok(), "the whole file's hash holds");
        let mut all = vec![0; bytes.len()];
        blobs.read_at(&blob_name(&event), 0, &mut all).unwrap();
        assert_eq!(all, bytes);
        // Every piece is gone; only the file's blob is left.
        assert_eq!(blobs.list().unwrap(), vec![blob_name(&event)]);
    }

    #[test]
    fn a_damaged_piece_is_refused_and_nothing_of_it_kept() {
        let blobs = MemoryBlobs::new();
        let event = EventId::from_bytes([6; 32]);
        let (file, mut bytes) = sealed(3 * 65_536);
        bytes[70_000] ^= 1; // inside chunk 1
        for i in 0..piece_count(file.size) {
            keep_piece(&blobs, &event, &bytes, i);
        }
        let assembler = Assembler::new(file.clone()).unwrap();
        let result = take_in_blocking(&blobs, &event, file.size, assembler);
        assert!(matches!(result, Err(PieceError::Damaged(_))));
        // Chunk 0 was good and is kept; no piece is.
        assert_eq!(
            blobs.len(&blob_name(&event)).unwrap(),
            Some(chunk_offset(1))
        );
        assert_eq!(blobs.list().unwrap(), vec![blob_name(&event)]);
    }
}
