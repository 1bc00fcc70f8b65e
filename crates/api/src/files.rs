//! Files in the API: a message's file as `messages` shows it, the
//! transfers `files` lists, and `send` with a file and `download`, which
//! read and write paths on the daemon's machine (so the web serves them
//! its own way: see `safemeet-web`).

use std::io::Write;
use std::path::{Path, PathBuf};

use safemeet_engine::{Direction, FileUpload, Handle as EngineHandle, Transfer, TransferState};
use safemeet_proto::EventId;
use safemeet_proto::file::FileRef;
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::resolve::{self, Target};

/// A message's file, as `messages` and `message` events show it (never
/// its key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileView {
    /// Its name, as the sender gave it.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its media type.
    pub media_type: String,
    /// Where its transfer stands on this device (set by `messages`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer: Option<FileTransfer>,
}

impl From<&FileRef> for FileView {
    fn from(f: &FileRef) -> Self {
        FileView {
            name: f.name.clone(),
            size: f.size,
            media_type: f.media_type.clone(),
            transfer: None,
        }
    }
}

/// Where a file's transfer stands (`files`, and in `messages`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileTransfer {
    /// The file message.
    pub event_id: EventId,
    /// `send` or `receive`.
    pub direction: String,
    /// `waiting`, `receiving`, `complete` or `failed`.
    pub state: String,
    /// Why it failed, for `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The file's size in bytes.
    pub size: u64,
    /// Its chunks.
    pub chunks: u64,
    /// Chunks held.
    pub done: u64,
    /// Chunks served to other devices.
    pub served: u64,
    /// Pieces (about 64 KiB each) left on the relays of devices that
    /// were away.
    pub relayed: u64,
}

impl From<Transfer> for FileTransfer {
    fn from(t: Transfer) -> Self {
        let (state, reason) = match t.state {
            TransferState::Waiting => ("waiting", None),
            TransferState::Receiving => ("receiving", None),
            TransferState::Complete => ("complete", None),
            TransferState::Failed { reason } => ("failed", Some(reason)),
        };
        FileTransfer {
            event_id: t.event_id,
            direction: match t.direction {
                Direction::Send => "send",
                Direction::Receive => "receive",
            }
            .into(),
            state: state.into(),
            reason,
            size: t.size,
            chunks: t.chunks,
            done: t.done,
            served: t.served,
            relayed: t.relayed,
        }
    }
}

/// `download`: where the file went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Downloaded {
    /// The file message.
    pub event_id: EventId,
    /// The new file.
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
}

fn invalid(what: impl Into<String>) -> Error {
    Error::Engine(safemeet_engine::Error::InvalidInput(what.into()))
}

/// A media type from a file name's extension (what a browser would
/// guess); `application/octet-stream` when unknown.
pub fn media_type_of(name: &str) -> &'static str {
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "txt" | "md" => "text/plain",
        "pdf" => "application/pdf",
        "json" => "application/json",
        "zip" => "application/zip",
        "mp3" => "audio/mpeg",
        "ogg" | "opus" => "audio/ogg",
        "wav" => "audio/wav",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        _ => "application/octet-stream",
    }
}

/// `send` with a file: reads `path` (absolute, a regular file) and sends
/// it with `caption`.
pub(crate) async fn send_file(
    engine: &EngineHandle,
    target: &str,
    path: &str,
    caption: &str,
) -> Result<EventId, Error> {
    let path = Path::new(path);
    if !path.is_absolute() {
        return Err(invalid("the file's path must be absolute"));
    }
    let file = std::fs::File::open(path)
        .map_err(|e| invalid(format!("{} cannot be read: {e}", path.display())))?;
    let meta = file
        .metadata()
        .map_err(|e| invalid(format!("{} cannot be read: {e}", path.display())))?;
    if !meta.is_file() {
        return Err(invalid(format!("{} is not a file", path.display())));
    }
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| invalid("the file's name is not UTF-8"))?
        .to_owned();
    let upload = FileUpload {
        reader: Box::new(std::io::BufReader::with_capacity(256 * 1024, file)),
        size: meta.len(),
        media_type: media_type_of(&name).to_owned(),
        name,
    };
    send_upload(engine, target, upload, caption).await
}

/// Sends `upload` to `target` with `caption`.
pub async fn send_upload(
    engine: &EngineHandle,
    target: &str,
    upload: FileUpload,
    caption: &str,
) -> Result<EventId, Error> {
    let conversation = match resolve::target(engine, target).await? {
        Target::User(user) => safemeet_engine::Conversation::Dm(user),
        Target::Room(room) => safemeet_engine::Conversation::Room(room),
    };
    Ok(engine.send_file(conversation, upload, caption).await?)
}

/// `download`: saves the file of `event` to `path` (absolute: a new
/// file, or a directory to save it in under its own name). It is written
/// to a hidden file beside it first and renamed once whole and checked,
/// so a refused or cut-off file never shows under its name.
pub(crate) async fn download(
    engine: &EngineHandle,
    event: EventId,
    path: &str,
) -> Result<Downloaded, Error> {
    let path = PathBuf::from(path);
    if !path.is_absolute() {
        return Err(invalid("the path to save to must be absolute"));
    }
    // Nothing is created for a file that is not whole yet.
    let file = engine.file_of(event).await?;
    if let Some(t) = engine.transfer(&event) {
        match t.state {
            TransferState::Complete => {}
            TransferState::Failed { reason } => {
                return Err(
                    safemeet_engine::Error::File(safemeet_engine::FileError::Refused(reason))
                        .into(),
                );
            }
            _ => {
                return Err(
                    safemeet_engine::Error::File(safemeet_engine::FileError::NotYet {
                        done: t.done,
                        chunks: t.chunks,
                    })
                    .into(),
                );
            }
        }
    }
    let target = if path.is_dir() {
        path.join(&file.name)
    } else {
        path
    };
    if target.exists() {
        return Err(invalid(format!("{} exists already", target.display())));
    }
    let dir = target
        .parent()
        .ok_or_else(|| invalid("the path has no directory"))?;
    let stem = target
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("file");
    let temp = dir.join(format!(".{stem}.{}.part", std::process::id()));
    let out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp)
        .map_err(|e| invalid(format!("{} cannot be written: {e}", temp.display())))?;
    let writer = SyncedFile(std::io::BufWriter::with_capacity(256 * 1024, out));
    match engine.save_file(event, Box::new(writer)).await {
        Ok(file) => {
            // Not over a file that appeared meanwhile.
            if target.exists() {
                let _ = std::fs::remove_file(&temp);
                return Err(invalid(format!("{} exists already", target.display())));
            }
            std::fs::rename(&temp, &target).map_err(|e| {
                let _ = std::fs::remove_file(&temp);
                invalid(format!("{} cannot be written: {e}", target.display()))
            })?;
            Ok(Downloaded {
                event_id: event,
                path: target.display().to_string(),
                size: file.size,
            })
        }
        Err(e) => {
            let _ = std::fs::remove_file(&temp);
            Err(e.into())
        }
    }
}

/// A file whose `flush` also syncs it to the disk.
struct SyncedFile(std::io::BufWriter<std::fs::File>);

impl Write for SyncedFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()?;
        self.0.get_ref().sync_all()
    }
}

/// `files`: the transfers this daemon knows.
pub(crate) fn transfers(engine: &EngineHandle) -> Vec<FileTransfer> {
    engine
        .transfers()
        .into_iter()
        .map(FileTransfer::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_follow_extensions() {
        assert_eq!(media_type_of("a.PNG"), "image/png");
        assert_eq!(media_type_of("a.tar.gz"), "application/octet-stream");
        assert_eq!(media_type_of("noext"), "application/octet-stream");
        assert_eq!(media_type_of("photo.jpeg"), "image/jpeg");
    }
}
