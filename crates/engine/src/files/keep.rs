//! What a fetch keeps: the chunks it has checked, appended to the file's
//! blob one batch while the next is read; what is kept of a file after a
//! restart (every whole chunk opened again); and the whole file checked
//! once every chunk is held.

use std::sync::Arc;

use safemeet_crypto::attachment::Assembler;
use safemeet_proto::EventId;
use safemeet_proto::file::FileRef;

use super::fetch::Fetched;
use super::{FilesShared, SEALED_CHUNK_BYTES, TransferState, blob_name, chunk_offset, sealed_size};
use crate::file_pieces::piece_count;

/// Every chunk of `event`'s file is held: the whole is checked, and the
/// blob completed (pieces that came through relays meanwhile go).
pub(super) async fn finish(
    files: &Arc<FilesShared>,
    event: EventId,
    assembler: Assembler,
) -> Fetched {
    let (name, chunks) = (blob_name(&event), assembler.count());
    let size = assembler.size();
    if let Err(e) = assembler.finish() {
        let blobs = files.blobs.clone();
        let _ = super::blocking(move || blobs.remove(&name)).await;
        return Fetched::Failed(e.to_string());
    }
    let blobs = files.blobs.clone();
    let completed = super::blocking(move || {
        blobs.complete(&name)?;
        super::pieces::remove_pieces(&*blobs, &event, 0, piece_count(size));
        Ok(())
    })
    .await;
    if let Err(e) = completed {
        return Fetched::Retry(e.to_string());
    }
    files.update(&event, |t| {
        t.done = chunks;
        t.state = TransferState::Complete;
    });
    Fetched::Done
}

/// Appends batches of checked chunks to the blob, one write in flight
/// while the next batch is read from the stream.
pub(super) struct Writer {
    pub(super) files: Arc<FilesShared>,
    pub(super) name: [u8; 16],
    pub(super) event: EventId,
    /// The write in flight, and how many chunks are held once it is done.
    pub(super) writing: Option<(
        tokio::task::JoinHandle<Result<(), safemeet_store::Error>>,
        u64,
    )>,
}

impl Writer {
    /// Waits for the write in flight, if any.
    pub(super) async fn flush(&mut self) -> Result<(), safemeet_store::Error> {
        if let Some((task, held)) = self.writing.take() {
            task.await
                .unwrap_or_else(|e| Err(safemeet_store::Error::Backend(Box::new(e))))?;
            self.files.update(&self.event, |t| t.done = held);
        }
        Ok(())
    }

    /// Writes `bytes` (after the write in flight), after which `held`
    /// chunks are held.
    pub(super) async fn push(
        &mut self,
        bytes: Vec<u8>,
        held: u64,
    ) -> Result<(), safemeet_store::Error> {
        self.flush().await?;
        if bytes.is_empty() {
            return Ok(());
        }
        let blobs = self.files.blobs.clone();
        let name = self.name;
        let task = tokio::task::spawn_blocking(move || blobs.append(&name, &bytes));
        self.writing = Some((task, held));
        Ok(())
    }
}

/// What is kept of a file: every whole chunk is opened again (so the
/// hash goes on from there), and anything past the last good one is cut
/// off. Also whether the blob is complete already.
pub(super) fn reopen(
    blobs: &dyn safemeet_store::blob::BlobStore,
    name: &[u8; 16],
    file: FileRef,
) -> Result<(Assembler, bool), safemeet_store::Error> {
    let bad = |e: safemeet_crypto::attachment::AttachmentError| {
        safemeet_store::Error::Corrupt(e.to_string())
    };
    let mut assembler = Assembler::new(file.clone()).map_err(bad)?;
    let complete = blobs.is_complete(name)?;
    let Some(len) = blobs.len(name)? else {
        return Ok((assembler, false));
    };
    let total = sealed_size(file.size);
    let count = assembler.count();
    let mut chunk = vec![0u8; SEALED_CHUNK_BYTES];
    let mut index = 0;
    while index < count {
        let offset = chunk_offset(index);
        let want = (chunk_offset(index + 1).min(total) - offset) as usize;
        if offset + want as u64 > len {
            break;
        }
        if blobs.read_at(name, offset, &mut chunk[..want])? != want
            || assembler.take(&chunk[..want]).is_err()
        {
            break;
        }
        index += 1;
    }
    if complete {
        if index == count && assembler.check().is_ok() {
            return Ok((assembler, true));
        }
        // A complete blob that does not open: start again.
        blobs.remove(name)?;
        return Ok((Assembler::new(file).map_err(bad)?, false));
    }
    let keep = chunk_offset(index);
    if keep < len {
        blobs.truncate(name, keep)?;
    }
    Ok((assembler, false))
}
