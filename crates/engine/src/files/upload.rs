//! Sending a file (sealing it into the blob store, then the message) and
//! saving a received one (opening and checking it as it is written out).

use std::io::{Read, Write};
use std::sync::Arc;

use safemeet_crypto::attachment::{Assembler, CHUNK_BYTES, chunk_count, generate_key, seal_chunk};
use safemeet_proto::EventId;
use safemeet_proto::event::MessageText;
use safemeet_proto::file::{FileMessage, FileRef};
use zeroize::Zeroizing;

use super::{
    Direction, FilesShared, SEALED_CHUNK_BYTES, Transfer, TransferState, blob_name, chunk_offset,
    sealed_size,
};
use crate::events::{Command, Response};
use crate::{Conversation, Error, FileError, Handle};

/// Chunks sealed or opened between two blob store calls (1 MiB).
const CHUNKS_PER_WRITE: usize = 16;

/// A file to send: its bytes, size, name and type.
pub struct FileUpload {
    /// Its bytes (read once, front to back).
    pub reader: Box<dyn Read + Send>,
    /// Its size: exactly what `reader` gives.
    pub size: u64,
    /// Its name (no path).
    pub name: String,
    /// Its media type.
    pub media_type: String,
}

impl std::fmt::Debug for FileUpload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileUpload")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

fn io(e: impl std::fmt::Display) -> Error {
    Error::File(FileError::Io(e.to_string()))
}

impl Handle {
    fn files(&self) -> Result<&Arc<FilesShared>, Error> {
        self.files.as_ref().ok_or(Error::File(FileError::NoBlobs))
    }

    /// Sends a file with a caption: it is sealed into the blob store
    /// under a fresh key (its hash taken on the way), then the message
    /// that describes it is sent; each recipient device fetches it from
    /// this one.
    pub async fn send_file(
        &self,
        conversation: Conversation,
        upload: FileUpload,
        caption: &str,
    ) -> Result<EventId, Error> {
        let files = self.files()?.clone();
        if upload.size > files.max_file_bytes {
            return Err(FileError::TooLarge {
                size: upload.size,
                limit: files.max_file_bytes,
            }
            .into());
        }
        let caption = MessageText::new(caption).map_err(|e| Error::InvalidInput(e.to_string()))?;
        let check = FileRef {
            key: safemeet_proto::file::FileKey::from_bytes([0; 32]),
            hash: [0; 32],
            size: upload.size,
            name: upload.name.clone(),
            media_type: upload.media_type.clone(),
        };
        check
            .check()
            .map_err(|e| Error::InvalidInput(e.to_string()))?;
        // The file's fresh key (from the crypto crate) also names the blob
        // while it is sealed: a name no other file has.
        let key = generate_key();
        let temp = sealing_name(&key);
        files.sealing(temp, true);
        let sealed = {
            let files = files.clone();
            tokio::task::spawn_blocking(move || seal_into(&files, temp, key, upload))
                .await
                .unwrap_or_else(|e| Err(io(e)))
        };
        let file = match sealed {
            Ok(file) => file,
            Err(e) => {
                let _ = files.blobs.remove(&temp);
                files.sealing(temp, false);
                return Err(e);
            }
        };
        let size = file.size;
        let sent = self
            .core(Command::SendFile(
                conversation,
                Box::new(FileMessage { file, caption }),
            ))
            .await;
        let event = match sent {
            Ok(Response::Sent(event)) => event,
            Ok(_) => {
                files.sealing(temp, false);
                return Err(Error::InvalidInput("unexpected answer".into()));
            }
            Err(e) => {
                let _ = files.blobs.remove(&temp);
                files.sealing(temp, false);
                return Err(e);
            }
        };
        let renamed = {
            let blobs = files.blobs.clone();
            super::blocking(move || blobs.rename(&temp, &blob_name(&event))).await
        };
        files.sealing(temp, false);
        renamed.map_err(io)?;
        let chunks = chunk_count(size);
        files.set(Transfer {
            event_id: event,
            direction: Direction::Send,
            size,
            chunks,
            done: chunks,
            served: 0,
            relayed: 0,
            state: TransferState::Complete,
        });
        Ok(event)
    }

    /// Writes the file of message `event` to `out`, each chunk opened and
    /// the whole file checked on the way (a damaged file is refused, and
    /// what was written must then be thrown away by the caller). Returns
    /// what the message says of the file.
    pub async fn save_file(
        &self,
        event: EventId,
        out: Box<dyn Write + Send>,
    ) -> Result<FileRef, Error> {
        let files = self.files()?.clone();
        let file = self.file_of(event).await?;
        let name = blob_name(&event);
        let chunks = chunk_count(file.size);
        let complete = {
            let blobs = files.blobs.clone();
            super::blocking(move || blobs.is_complete(&name))
                .await
                .map_err(io)?
        };
        if !complete {
            if let Some(Transfer {
                state: TransferState::Failed { reason },
                ..
            }) = files.get(&event)
            {
                return Err(FileError::Refused(reason).into());
            }
            let done = files.get(&event).map_or(0, |t| t.done);
            return Err(FileError::NotYet { done, chunks }.into());
        }
        let blobs = files.blobs.clone();
        tokio::task::spawn_blocking(move || open_into(&*blobs, &name, file, out))
            .await
            .unwrap_or_else(|e| Err(io(e)))
    }

    /// Whether the file of message `event` is held whole (checked when it
    /// arrived; opened and checked again when saved).
    pub async fn file_held(&self, event: EventId) -> Result<bool, Error> {
        let files = self.files()?.clone();
        let name = blob_name(&event);
        super::blocking(move || files.blobs.is_complete(&name))
            .await
            .map_err(io)
    }

    /// What message `event` says of its file.
    pub async fn file_of(&self, event: EventId) -> Result<FileRef, Error> {
        match self.core(Command::FileSource(event)).await? {
            Response::FileSource(Some(source)) => Ok(source.entry.file),
            Response::FileSource(None) => Err(FileError::NotAFile.into()),
            _ => Err(Error::InvalidInput("unexpected answer".into())),
        }
    }

    /// The files on their way (and recently done), oldest first.
    pub fn transfers(&self) -> Vec<Transfer> {
        self.files.as_ref().map(|f| f.all()).unwrap_or_default()
    }

    /// A watch that changes whenever a transfer does (`None`: this node
    /// has no files). Progress is read with [`transfers`](Self::transfers).
    pub fn transfers_changed(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.files.as_ref().map(|f| f.progress())
    }

    /// Where the file of message `event` stands, if this device knows.
    pub fn transfer(&self, event: &EventId) -> Option<Transfer> {
        self.files.as_ref().and_then(|f| f.get(event))
    }
}

/// The name of a blob being sealed under `key`, until it is named after
/// its message (a one-way hash: the name says nothing of the key).
fn sealing_name(key: &safemeet_proto::file::FileKey) -> [u8; 16] {
    let hash = blake3::derive_key("safemeet/v1/sealing-blob", key.expose());
    let mut name = [0u8; 16];
    name.copy_from_slice(&hash[..16]);
    name
}

/// Reads, hashes and seals `upload` under `key` into blob `temp`; the
/// file's description.
fn seal_into(
    files: &FilesShared,
    temp: [u8; 16],
    key: safemeet_proto::file::FileKey,
    mut upload: FileUpload,
) -> Result<FileRef, Error> {
    let size = upload.size;
    let count = chunk_count(size);
    let mut hasher = blake3::Hasher::new();
    let mut plain = Zeroizing::new(vec![0u8; CHUNK_BYTES]);
    let mut sealed = Vec::with_capacity(CHUNKS_PER_WRITE * SEALED_CHUNK_BYTES);
    let mut left = size;
    for index in 0..count {
        let len = usize::try_from(left.min(CHUNK_BYTES as u64)).unwrap_or(CHUNK_BYTES);
        upload.reader.read_exact(&mut plain[..len]).map_err(|e| {
            io(format!(
                "the file could not be read whole ({e}); did it change while it was sent?"
            ))
        })?;
        left -= len as u64;
        hasher.update(&plain[..len]);
        let chunk = seal_chunk(&key, size, index, &plain[..len])
            .map_err(|e| Error::InvalidInput(e.to_string()))?;
        sealed.extend_from_slice(&chunk);
        if sealed.len() >= CHUNKS_PER_WRITE * SEALED_CHUNK_BYTES || index + 1 == count {
            files.blobs.append(&temp, &sealed).map_err(io)?;
            sealed.clear();
        }
    }
    let mut probe = [0u8; 1];
    if matches!(upload.reader.read(&mut probe), Ok(n) if n > 0) {
        return Err(io(
            "the file is longer than its size said; did it change while it was sent?",
        ));
    }
    files.blobs.complete(&temp).map_err(io)?;
    Ok(FileRef {
        key,
        hash: *hasher.finalize().as_bytes(),
        size,
        name: upload.name,
        media_type: upload.media_type,
    })
}

/// Opens the complete blob `name` chunk by chunk into `out`, checking the
/// whole file at the end.
fn open_into(
    blobs: &dyn safemeet_store::blob::BlobStore,
    name: &[u8; 16],
    file: FileRef,
    mut out: Box<dyn Write + Send>,
) -> Result<FileRef, Error> {
    let total = sealed_size(file.size);
    if blobs.len(name).map_err(io)? != Some(total) {
        return Err(FileError::Refused("the kept file is not the size described".into()).into());
    }
    let mut assembler =
        Assembler::new(file.clone()).map_err(|e| FileError::Refused(e.to_string()))?;
    let count = assembler.count();
    let mut buf = vec![0u8; CHUNKS_PER_WRITE * SEALED_CHUNK_BYTES];
    let mut index = 0;
    while index < count {
        let offset = chunk_offset(index);
        let want = usize::try_from((total - offset).min(buf.len() as u64)).unwrap_or(buf.len());
        let got = blobs.read_at(name, offset, &mut buf[..want]).map_err(io)?;
        if got != want {
            return Err(FileError::Refused("the kept file is cut short".into()).into());
        }
        for sealed in buf[..want].chunks(SEALED_CHUNK_BYTES) {
            let plain = assembler
                .take(sealed)
                .map_err(|e| FileError::Refused(e.to_string()))?;
            out.write_all(&plain).map_err(io)?;
            index += 1;
        }
    }
    assembler
        .finish()
        .map_err(|e| FileError::Refused(e.to_string()))?;
    out.flush().map_err(io)?;
    Ok(file)
}
