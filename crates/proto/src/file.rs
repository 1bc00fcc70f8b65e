//! Files sent in a conversation: what the message says of one.
//!
//! A file travels in two parts. Its chunks, sealed under a key of its own
//! (see `safemeet_crypto::attachment`), are fetched from the sender's
//! device over a stream protocol of their own (asked for by the message's
//! event id) and say nothing without the key. The message ([`FileMessage`], inside the Megolm or Olm ciphertext
//! like any event) carries the key, the hash of the whole file, its size,
//! its name and its type: a [`FileRef`].

use std::fmt;

use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

use crate::event::MessageText;

/// Longest file name and media type kept, in bytes.
pub const MAX_FILE_NAME_BYTES: usize = 255;
/// The largest file a message may describe (1 TiB): far past any limit a
/// node sets, small enough that chunk counts stay exact.
pub const MAX_DESCRIBED_FILE_BYTES: u64 = 1 << 40;

/// A file's key: 32 random bytes, used for that file only. Zeroized on
/// drop; `Debug` does not print it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileKey([u8; 32]);

impl FileKey {
    /// Wraps key bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The key bytes.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl Drop for FileKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for FileKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FileKey(..)")
    }
}

/// Why a file description was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadFileRef {
    /// Its size is past [`MAX_DESCRIBED_FILE_BYTES`].
    #[error("a file of {0} bytes is past the largest a message may describe")]
    TooLarge(u64),
    /// Its name is empty, too long, or holds a path separator or a control
    /// character.
    #[error("a file name must be 1 to 255 bytes, without '/', '\\\\' or control characters")]
    BadName,
    /// Its media type is not `type/subtype` of at most 255 printable ASCII
    /// bytes.
    #[error("a media type must look like type/subtype")]
    BadMediaType,
}

/// What a message says of its file: enough to fetch it, open it and check
/// it. Names and types are checked when read, so a receiver never writes
/// a file under a name that climbs out of a directory.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "FileRefWire")]
pub struct FileRef {
    /// Its key.
    pub key: FileKey,
    /// BLAKE3 of the whole (plaintext) file.
    pub hash: [u8; 32],
    /// Its size in bytes.
    pub size: u64,
    /// Its name as the sender gave it (no path).
    pub name: String,
    /// Its media type (`image/png`).
    pub media_type: String,
}

impl fmt::Debug for FileRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileRef")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct FileRefWire {
    key: FileKey,
    hash: [u8; 32],
    size: u64,
    name: String,
    media_type: String,
}

impl TryFrom<FileRefWire> for FileRef {
    type Error = BadFileRef;
    fn try_from(w: FileRefWire) -> Result<Self, BadFileRef> {
        let file = FileRef {
            key: w.key,
            hash: w.hash,
            size: w.size,
            name: w.name,
            media_type: w.media_type,
        };
        file.check()?;
        Ok(file)
    }
}

impl FileRef {
    /// Checks size, name and media type.
    pub fn check(&self) -> Result<(), BadFileRef> {
        if self.size > MAX_DESCRIBED_FILE_BYTES {
            return Err(BadFileRef::TooLarge(self.size));
        }
        check_name(&self.name)?;
        check_media_type(&self.media_type)
    }
}

/// Whether `name` may name a file: 1 to 255 bytes, no path separator, no
/// control character, not `.` or `..`.
pub fn check_name(name: &str) -> Result<(), BadFileRef> {
    let bad = name.is_empty()
        || name.len() > MAX_FILE_NAME_BYTES
        || name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_control());
    if bad {
        Err(BadFileRef::BadName)
    } else {
        Ok(())
    }
}

/// Whether `media_type` looks like `type/subtype` (printable ASCII, no
/// spaces, at most 255 bytes).
pub fn check_media_type(media_type: &str) -> Result<(), BadFileRef> {
    let printable = media_type
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\');
    let shaped = media_type
        .split_once('/')
        .is_some_and(|(a, b)| !a.is_empty() && !b.is_empty() && !b.contains('/'));
    if media_type.len() <= MAX_FILE_NAME_BYTES && printable && shaped {
        Ok(())
    } else {
        Err(BadFileRef::BadMediaType)
    }
}

/// A file sent in a conversation, with an optional caption.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMessage {
    /// The file.
    pub file: FileRef,
    /// The caption (may be empty).
    pub caption: MessageText,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;

    fn file(name: &str, media_type: &str) -> FileRef {
        FileRef {
            key: FileKey::from_bytes([2; 32]),
            hash: [3; 32],
            size: 10,
            name: name.into(),
            media_type: media_type.into(),
        }
    }

    #[test]
    fn a_file_ref_round_trips_and_hides_its_key() {
        let f = file("photo.png", "image/png");
        let bytes = codec::encode(&f).unwrap();
        assert_eq!(codec::decode::<FileRef>(&bytes, 1024).unwrap(), f);
        assert!(!format!("{f:?}").contains("2, 2"));
        assert!(!format!("{f:?}").contains("photo"));
    }

    #[test]
    fn names_that_leave_a_directory_and_odd_types_are_refused_when_read() {
        for name in ["", ".", "..", "a/b", "..\\x", "a\nb", &"x".repeat(256)] {
            let bytes = codec::encode(&file(name, "text/plain")).unwrap();
            assert!(codec::decode::<FileRef>(&bytes, 1024).is_err(), "{name:?}");
        }
        for media_type in ["", "text", "text/", "/plain", "a b/c", "a/b/c"] {
            let bytes = codec::encode(&file("a.txt", media_type)).unwrap();
            assert!(
                codec::decode::<FileRef>(&bytes, 1024).is_err(),
                "{media_type:?}"
            );
        }
        let mut big = file("a", "a/b");
        big.size = MAX_DESCRIBED_FILE_BYTES + 1;
        let bytes = codec::encode(&big).unwrap();
        assert!(codec::decode::<FileRef>(&bytes, 1024).is_err());
    }
}
