//! [`BlobDir`]: sealed files in a directory of their own.
//!
//! A blob being written is `<hex>.part`; [`complete`](BlobStore::complete)
//! syncs it and renames it to `<hex>` (then syncs the directory), so a
//! crash leaves either a part, which the writer cuts back to its last
//! whole chunk and resumes, or a complete blob, never a half-renamed one.
//! The files hold ciphertext only (each chunk sealed under its file's own
//! key, which is in the encrypted store); what shows is how many there are
//! and their sizes. The directory is made mode 0700.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use safemeet_store::blob::{BlobName, BlobStore};
use safemeet_store::{Error, Result};

/// Blobs as files under one directory.
#[derive(Debug, Clone)]
pub struct BlobDir {
    dir: PathBuf,
}

fn io(e: std::io::Error) -> Error {
    Error::Backend(Box::new(e))
}

fn hex(name: &BlobName) -> String {
    name.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse(file: &str) -> Option<BlobName> {
    let stem = file.strip_suffix(".part").unwrap_or(file);
    if stem.len() != 32 {
        return None;
    }
    let mut name = [0u8; 16];
    for (i, byte) in name.iter_mut().enumerate() {
        *byte = u8::from_str_radix(stem.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(name)
}

impl BlobDir {
    /// Opens (creating, mode 0700) the directory `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        fs::create_dir_all(dir).map_err(io)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io)?;
        }
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    fn part(&self, name: &BlobName) -> PathBuf {
        self.dir.join(format!("{}.part", hex(name)))
    }

    fn whole(&self, name: &BlobName) -> PathBuf {
        self.dir.join(hex(name))
    }

    /// The blob's file, complete first.
    fn existing(&self, name: &BlobName) -> Option<PathBuf> {
        [self.whole(name), self.part(name)]
            .into_iter()
            .find(|p| p.exists())
    }
}

impl BlobStore for BlobDir {
    fn len(&self, name: &BlobName) -> Result<Option<u64>> {
        match self.existing(name) {
            Some(path) => Ok(Some(fs::metadata(path).map_err(io)?.len())),
            None => Ok(None),
        }
    }

    fn is_complete(&self, name: &BlobName) -> Result<bool> {
        Ok(self.whole(name).exists())
    }

    fn append(&self, name: &BlobName, bytes: &[u8]) -> Result<()> {
        if self.whole(name).exists() {
            return Err(Error::Corrupt("the blob is complete".into()));
        }
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.part(name))
            .map_err(io)?;
        file.write_all(bytes).map_err(io)
    }

    fn truncate(&self, name: &BlobName, len: u64) -> Result<()> {
        let file = OpenOptions::new()
            .write(true)
            .open(self.part(name))
            .map_err(io)?;
        file.set_len(len).map_err(io)
    }

    fn sync(&self, name: &BlobName) -> Result<()> {
        match File::open(self.part(name)) {
            Ok(f) => f.sync_data().map_err(io),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(e)),
        }
    }

    fn complete(&self, name: &BlobName) -> Result<()> {
        let part = self.part(name);
        File::open(&part).map_err(io)?.sync_all().map_err(io)?;
        fs::rename(&part, self.whole(name)).map_err(io)?;
        File::open(&self.dir).map_err(io)?.sync_all().map_err(io)
    }

    fn read_at(&self, name: &BlobName, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let path = self
            .existing(name)
            .ok_or_else(|| Error::Corrupt("no such blob".into()))?;
        let mut file = File::open(path).map_err(io)?;
        file.seek(SeekFrom::Start(offset)).map_err(io)?;
        let mut read = 0;
        while read < buf.len() {
            match file.read(&mut buf[read..]) {
                Ok(0) => break,
                Ok(n) => read += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io(e)),
            }
        }
        Ok(read)
    }

    fn rename(&self, from: &BlobName, to: &BlobName) -> Result<()> {
        fs::rename(self.whole(from), self.whole(to)).map_err(io)?;
        File::open(&self.dir).map_err(io)?.sync_all().map_err(io)
    }

    fn remove(&self, name: &BlobName) -> Result<()> {
        for path in [self.whole(name), self.part(name)] {
            match fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(e)),
            }
        }
        Ok(())
    }

    fn list(&self) -> Result<Vec<BlobName>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            if let Some(name) = entry.file_name().to_str().and_then(parse)
                && !names.contains(&name)
            {
                names.push(name);
            }
        }
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is a failure

    use super::*;

    #[test]
    fn a_blob_dir_conforms_and_keeps_blobs_across_opens() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobDir::open(&dir.path().join("blobs")).unwrap();
        safemeet_store::blob::conformance(&blobs).unwrap();
        let again = BlobDir::open(&dir.path().join("blobs")).unwrap();
        assert_eq!(again.list().unwrap(), vec![[2u8; 16]]);
        assert_eq!(again.len(&[2u8; 16]).unwrap(), Some(1));
        // Files that are not blobs are not listed.
        std::fs::write(dir.path().join("blobs/notes.txt"), b"x").unwrap();
        assert_eq!(again.list().unwrap(), vec![[2u8; 16]]);
    }
}
