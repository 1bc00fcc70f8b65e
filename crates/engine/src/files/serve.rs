//! Serving a file's sealed chunks to a device that may have them.

use std::sync::Arc;
use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::{PeerId, Stream};
use safemeet_crypto::attachment::chunk_count;
use safemeet_proto::EventId;

use super::{FilesShared, SEALED_CHUNK_BYTES, blob_name, chunk_offset, sealed_size};
use crate::Handle;
use crate::events::{Command, Response};

/// The request's length: version, event id, first chunk.
pub(crate) const REQUEST_BYTES: usize = 1 + 32 + 8;
/// The protocol's version byte.
pub(crate) const VERSION: u8 = 1;
/// The request must arrive whole within this.
const REQUEST_WAIT: Duration = Duration::from_secs(5);
/// A write the receiver does not take within this ends the stream.
pub(crate) const STALL: Duration = Duration::from_secs(30);
/// Chunks read from the blob store at once (1 MiB).
const CHUNKS_PER_READ: u64 = 16;

/// The sender's answer before the chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Status {
    /// The chunks follow.
    Ok = 0,
    /// No such file for this peer.
    Refused = 1,
    /// The file is not held whole yet.
    NotReady = 2,
}

impl Status {
    pub(crate) fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(Self::Ok),
            1 => Some(Self::Refused),
            2 => Some(Self::NotReady),
            _ => None,
        }
    }
}

/// Encodes a request for `event`'s chunks from `first` on.
pub(crate) fn request(event: &EventId, first: u64) -> [u8; REQUEST_BYTES] {
    let mut out = [0u8; REQUEST_BYTES];
    out[0] = VERSION;
    out[1..33].copy_from_slice(event.as_bytes());
    out[33..].copy_from_slice(&first.to_be_bytes());
    out
}

/// Serves one stream from `peer`: reads its request, checks that `peer`
/// may have the file, and writes the chunks asked for. Every failure
/// just ends the stream.
pub(crate) async fn serve(
    handle: Handle,
    files: Arc<FilesShared>,
    peer: PeerId,
    mut stream: Stream,
) {
    let mut req = [0u8; REQUEST_BYTES];
    match tokio::time::timeout(REQUEST_WAIT, stream.read_exact(&mut req)).await {
        Ok(Ok(())) => {}
        _ => return,
    }
    if req[0] != VERSION {
        return;
    }
    let Ok(event) = EventId::from_slice(&req[1..33]) else {
        return;
    };
    let mut first = [0u8; 8];
    first.copy_from_slice(&req[33..]);
    let first = u64::from_be_bytes(first);
    let status = answer(&handle, &files, &event, &peer, first).await;
    let Some(file_size) = status else {
        let _ = write(&mut stream, &[Status::Refused as u8]).await;
        let _ = stream.close().await;
        return;
    };
    let name = blob_name(&event);
    let complete = {
        let blobs = files.blobs.clone();
        super::blocking(move || blobs.is_complete(&name)).await
    };
    if !matches!(complete, Ok(true)) {
        let _ = write(&mut stream, &[Status::NotReady as u8]).await;
        let _ = stream.close().await;
        return;
    }
    if write(&mut stream, &[Status::Ok as u8]).await.is_err() {
        return;
    }
    let count = chunk_count(file_size);
    let total = sealed_size(file_size);
    // The next batch is read from the blob store while this one is
    // written to the stream.
    let read = |from: u64| {
        let batch = CHUNKS_PER_READ.min(count - from);
        let offset = chunk_offset(from);
        let len = (chunk_offset(from + batch).min(total) - offset) as usize;
        let blobs = files.blobs.clone();
        tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; len];
            let n = blobs.read_at(&name, offset, &mut buf)?;
            if n != len {
                return Err(safemeet_store::Error::Corrupt(
                    "the file is cut short".into(),
                ));
            }
            Ok(buf)
        })
    };
    let mut index = first;
    let mut next = Some(read(index));
    while let Some(reading) = next.take() {
        let Ok(Ok(buf)) = reading.await else {
            return;
        };
        let after = index + CHUNKS_PER_READ.min(count - index);
        if after < count {
            next = Some(read(after));
        }
        for chunk in buf.chunks(SEALED_CHUNK_BYTES) {
            if let Some(pace) = &files.pace {
                pace.take(chunk.len()).await;
            }
            if files.in_call_with(&peer) {
                // A call runs on this connection: small writes, paced.
                for part in chunk.chunks(super::CALL_YIELD_WRITE) {
                    files.call_pace.take(part.len()).await;
                    if write(&mut stream, part).await.is_err() {
                        return;
                    }
                }
            } else if write(&mut stream, chunk).await.is_err() {
                return;
            }
            index += 1;
            files.update(&event, |t| t.served += 1);
        }
    }
    if matches!(
        tokio::time::timeout(STALL, stream.close()).await,
        Ok(Ok(()))
    ) {
        // Its pieces need not go through the peer's relays any more.
        files.served_whole(event, peer);
    }
}

/// The file's size, if `peer` may have chunks of it from `first` on.
async fn answer(
    handle: &Handle,
    files: &FilesShared,
    event: &EventId,
    peer: &PeerId,
    first: u64,
) -> Option<u64> {
    let entry = match handle.core(Command::FileForPeer(*event, *peer)).await {
        Ok(Response::File(Some(entry))) => entry,
        _ => return None,
    };
    let size = entry.file.size;
    if first >= chunk_count(size) {
        return None;
    }
    if files.get(event).is_none() {
        let chunks = chunk_count(size);
        files.set(super::Transfer {
            event_id: *event,
            direction: if entry.sent_here {
                super::Direction::Send
            } else {
                super::Direction::Receive
            },
            size,
            chunks,
            done: chunks,
            served: 0,
            relayed: 0,
            state: super::TransferState::Complete,
        });
    }
    Some(size)
}

async fn write(stream: &mut Stream, bytes: &[u8]) -> Result<(), ()> {
    match tokio::time::timeout(STALL, stream.write_all(bytes)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}
