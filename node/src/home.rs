//! The profile directory (`--home`).
//!
//! Layout:
//! - `keyfile`: the data key wrapped under the passphrase (JSON, mode 0600).
//!   Its presence is what makes a profile an account: it is written last
//!   by `init`, atomically.
//! - `db/`: the sled store; every value sealed, every identifying key hashed.
//! - `init.lock`: held by `init` while it creates the profile.
//! - `security.log`, `security.pending`: the security log (see `security`).
//!
//! The directory is created with mode 0700. Nothing in it names the user in
//! clear.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use etcetera::BaseStrategy;
use safemeet_crypto::EncryptedStore;
use safemeet_crypto::at_rest::{DataKey, KdfParams, KeyFile, Passphrase, StoreCipher};
use safemeet_proto::clock::{Clock, SystemClock};
use safemeet_store::migrate;
use safemeet_store_sled::SledStore;

use crate::failure::Failure;

/// Schema version of the store this build writes.
pub(crate) const SCHEMA_VERSION: u32 = 1;

/// Schema migrations, oldest first (none yet: version 1 is the first).
const MIGRATIONS: &[migrate::Migration] = &[];

/// An unlocked profile store.
pub(crate) type ProfileStore = EncryptedStore<SledStore>;

/// The API socket's file name.
const SOCKET: &str = "safemeet.sock";

#[derive(Debug, Clone)]
pub(crate) struct Home {
    dir: PathBuf,
    socket: PathBuf,
    /// Given with `--home` (then config.toml is in it).
    given: bool,
}

impl Home {
    /// `--home`/`SAFEMEET_HOME`, else `$XDG_DATA_HOME/safemeet`. The API
    /// socket is in the profile directory under an explicit home (several
    /// profiles on one machine each have theirs), else in the XDG runtime
    /// directory (`$XDG_RUNTIME_DIR/safemeet/`, private to the user and
    /// cleared at logout) when there is one.
    pub(crate) fn resolve(explicit: Option<PathBuf>) -> Result<Self, Failure> {
        if let Some(dir) = explicit {
            let socket = dir.join(SOCKET);
            return Ok(Self {
                dir,
                socket,
                given: true,
            });
        }
        let base = etcetera::choose_base_strategy()
            .context("cannot find a home directory; pass --home DIR")?;
        let dir = base.data_dir().join("safemeet");
        let socket = match base.runtime_dir() {
            Some(runtime) => runtime.join("safemeet").join(SOCKET),
            None => dir.join(SOCKET),
        };
        Ok(Self {
            dir,
            socket,
            given: false,
        })
    }

    /// The profile directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    fn keyfile(&self) -> PathBuf {
        self.dir.join("keyfile")
    }

    fn db(&self) -> PathBuf {
        self.dir.join("db")
    }

    /// The settings from the environment and config.toml (no flags): for
    /// commands that run an engine of their own.
    pub(crate) fn settings(&self) -> Result<crate::config::Settings, Failure> {
        let path = crate::config::path(&self.dir, self.given)?;
        let file = crate::config::read(&path)?;
        crate::config::resolve(&crate::config::Flags::default(), &file)
    }

    /// Where sealed files are kept (see `safemeet_engine` files).
    pub(crate) fn blobs_dir(&self) -> PathBuf {
        self.dir.join("blobs")
    }

    /// Where `safemeet relay` keeps its identity and mailboxes.
    pub(crate) fn relay_dir(&self) -> PathBuf {
        self.dir.join("relay")
    }

    /// The daemon's API socket.
    pub(crate) fn socket(&self) -> PathBuf {
        self.socket.clone()
    }

    /// Makes the directory the socket goes in (private to the user).
    pub(crate) fn make_socket_dir(&self) -> Result<(), Failure> {
        if let Some(parent) = self.socket.parent() {
            create_private_dir(parent)?;
        }
        Ok(())
    }

    pub(crate) fn has_account(&self) -> bool {
        self.keyfile().exists()
    }

    /// An error saying there is no account here, if there is none: checked
    /// before a passphrase is asked for.
    pub(crate) fn require_account(&self) -> Result<(), Failure> {
        if self.has_account() {
            return Ok(());
        }
        Err(Failure::NoAccount(format!(
            "no account in {}; create one with `safemeet init --username NAME`",
            self.dir.display()
        )))
    }

    /// Creates the profile: directory, store, and finally the key file.
    /// `fill` writes the first records into the unlocked store.
    ///
    /// Holds `init.lock` throughout, so two `init`s cannot interleave, and
    /// publishes the key file with a hard link, which fails rather than
    /// replace a key file that appeared meanwhile.
    pub(crate) fn create(
        &self,
        passphrase: &Passphrase,
        fill: impl FnOnce(&ProfileStore) -> Result<(), Failure>,
    ) -> Result<crate::security::SecurityLog, Failure> {
        create_private_dir(&self.dir)?;
        let lock = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(self.dir.join("init.lock"))
            .context("opening init.lock")?;
        if lock.try_lock().is_err() {
            return Err(Failure::Locked(format!(
                "another `safemeet init` is running on {}",
                self.dir.display()
            )));
        }
        if self.has_account() {
            return Err(self.account_exists());
        }
        // A store without a key file is left from an interrupted init: its
        // data key never reached disk, so nobody can read it. Move it aside
        // rather than delete it, in case the key file is being restored.
        if self.db().exists() {
            let aside = self.dir.join(format!("db.orphaned-{}", SystemClock.now()));
            tracing::warn!(to = %aside.display(), "moving aside a store without a key file");
            fs::rename(self.db(), &aside)
                .context("moving aside the store of an interrupted init")?;
        }
        let key = DataKey::generate();
        let keyfile = KeyFile::wrap(&key, passphrase, KdfParams::default())?;
        {
            let store = self.open_store(&key)?;
            fill(&store)?;
            store.flush()?;
        }
        // sled's flush does not fsync (see ARCHITECTURE.md); the key file
        // must not outlive the records it unlocks, so fsync them first.
        sync_tree(&self.db())?;
        publish_private_file(&self.keyfile(), keyfile.to_json()?.as_bytes()).map_err(|e| {
            if self.has_account() {
                self.account_exists()
            } else {
                Failure::Other(e)
            }
        })?;
        // A log left from an account that was here before is not this
        // one's: moved aside, as a store without a key file is.
        let log = self.dir.join(crate::security::LOG_FILE);
        if log.exists() {
            let aside = self.dir.join(format!(
                "{}.orphaned-{}",
                crate::security::LOG_FILE,
                SystemClock.now()
            ));
            fs::rename(&log, aside).context("moving aside an old security log")?;
        }
        crate::security::SecurityLog::open(&self.dir, &key)
    }

    pub(crate) fn account_exists(&self) -> Failure {
        Failure::AccountExists(format!(
            "{} already holds an account; refusing to overwrite it",
            self.dir.display()
        ))
    }

    /// Unlocks the profile: reads the key file, checks the passphrase, then
    /// opens the store and the security log (which takes in the unlock
    /// failures noted since). A wrong passphrase changes nothing on disk
    /// but one line in `security.pending`.
    pub(crate) fn unlock(
        &self,
        passphrase: &Passphrase,
    ) -> Result<(ProfileStore, crate::security::SecurityLog), Failure> {
        let key = self.data_key(passphrase)?;
        let store = self.open_store(&key)?;
        let log = crate::security::SecurityLog::open(&self.dir, &key)?;
        Ok((store, log))
    }

    /// Unwraps the data key (rewrapping the key file under today's KDF
    /// cost if it was made under a weaker one). A wrong passphrase is noted
    /// in `security.pending`.
    fn data_key(&self, passphrase: &Passphrase) -> Result<DataKey, Failure> {
        self.require_account()?;
        let text =
            read_bounded(&self.keyfile(), MAX_KEYFILE_BYTES).context("reading the key file")?;
        let keyfile = KeyFile::from_json(&text)?;
        let key = match keyfile.unwrap_key(passphrase) {
            Ok(key) => key,
            Err(e) => {
                if matches!(e, safemeet_crypto::Error::WrongPassphrase) {
                    crate::security::note_unlock_failure(&self.dir);
                }
                return Err(e.into());
            }
        };
        if keyfile.needs_rewrap() {
            self.rewrap(&key, passphrase)?;
        }
        Ok(key)
    }

    /// Whether `passphrase` opens the key file (a KDF run; nothing is
    /// written, a wrong one is not noted: the caller logs it).
    pub(crate) fn passphrase_opens(&self, passphrase: &Passphrase) -> bool {
        let Ok(text) = read_bounded(&self.keyfile(), MAX_KEYFILE_BYTES) else {
            return false;
        };
        KeyFile::from_json(&text).is_ok_and(|k| k.unwrap_key(passphrase).is_ok())
    }

    /// The security log, for reading while a daemon may hold the store:
    /// only the key file is read.
    pub(crate) fn security_log(
        &self,
        passphrase: &Passphrase,
    ) -> Result<crate::security::SecurityLog, Failure> {
        let key = self.data_key(passphrase)?;
        crate::security::SecurityLog::reader(&self.dir, &key)
    }

    /// Wraps the data key again under the default KDF parameters and
    /// replaces the key file: a profile made when the default was weaker
    /// gets today's cost against guessing once it is unlocked. The
    /// replacement is atomic; a crash leaves the old key file or the new.
    fn rewrap(&self, key: &DataKey, passphrase: &Passphrase) -> Result<(), Failure> {
        let keyfile = KeyFile::wrap(key, passphrase, KdfParams::default())?;
        replace_private_file(&self.keyfile(), keyfile.to_json()?.as_bytes())
            .context("replacing the key file")?;
        tracing::info!("key file wrapped again under the current KDF parameters");
        Ok(())
    }

    fn open_store(&self, key: &DataKey) -> Result<ProfileStore, Failure> {
        let sled = SledStore::open(self.db(), &safemeet_store_sled::Config::default())?;
        migrate::migrate(&sled, SCHEMA_VERSION, MIGRATIONS)?;
        Ok(EncryptedStore::new(sled, StoreCipher::new(key)))
    }
}

pub(crate) fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    // An existing directory keeps its mode from before; tighten it.
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .with_context(|| format!("setting permissions of {}", dir.display()))
}

/// Largest key file read (a real one is under 1 KiB).
const MAX_KEYFILE_BYTES: u64 = 4096;

/// Reads a text file of at most `max` bytes, whatever its metadata says
/// (FIFOs and procfs files report a length of 0).
pub(crate) fn read_bounded(path: &Path, max: u64) -> anyhow::Result<zeroize::Zeroizing<String>> {
    let mut text = zeroize::Zeroizing::new(String::new());
    fs::File::open(path)?
        .take(max + 1)
        .read_to_string(&mut text)?;
    anyhow::ensure!(
        text.len() as u64 <= max,
        "{} is larger than {max} bytes",
        path.display()
    );
    Ok(text)
}

/// fsyncs every file and directory under `dir`.
fn sync_tree(dir: &Path) -> anyhow::Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            sync_tree(&path)?;
        } else {
            fs::File::open(&path)?.sync_all()?;
        }
    }
    fs::File::open(dir)?.sync_all()?;
    Ok(())
}

/// Writes `bytes` to a fresh temporary file (mode 0600), fsyncs it, and links
/// it in as `path`; fails if `path` exists.
pub(crate) fn publish_private_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = write_private_tmp(path, bytes)?;
    let linked =
        fs::hard_link(&tmp, path).with_context(|| format!("publishing {}", path.display()));
    fs::remove_file(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
    linked?;
    if let Some(parent) = path.parent() {
        fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

/// Writes `bytes` to a fresh temporary file beside `path` (mode 0600) and
/// fsyncs it.
fn write_private_tmp(path: &Path, bytes: &[u8]) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    // A leftover temporary file may have other permissions: start afresh.
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", tmp.display())),
    }
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(tmp)
}

/// Replaces `path` with `bytes` atomically: a fresh temporary file (mode
/// 0600), fsynced, renamed over `path`, then the directory fsynced.
pub(crate) fn replace_private_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = write_private_tmp(path, bytes)?;
    fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
    if let Some(parent) = path.parent() {
        fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

    use super::*;

    #[test]
    fn a_key_file_under_the_old_default_is_rewrapped_when_unlocked() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home {
            socket: dir.path().join("profile").join(SOCKET),
            dir: dir.path().join("profile"),
            given: true,
        };
        let pass = Passphrase::new("seven tall giraffes drink tea");
        home.create(&pass, |_| Ok(())).unwrap();

        // Put the key file back under the default of earlier versions.
        let text = read_bounded(&home.keyfile(), MAX_KEYFILE_BYTES).unwrap();
        let key = KeyFile::from_json(&text)
            .unwrap()
            .unwrap_key(&pass)
            .unwrap();
        let old = KdfParams {
            m_cost_kib: 19 * 1024,
            t_cost: 2,
            p_cost: 1,
        };
        let legacy = KeyFile::wrap(&key, &pass, old).unwrap();
        replace_private_file(&home.keyfile(), legacy.to_json().unwrap().as_bytes()).unwrap();

        drop(home.unlock(&pass).unwrap().0);
        let text = read_bounded(&home.keyfile(), MAX_KEYFILE_BYTES).unwrap();
        let now = KeyFile::from_json(&text).unwrap();
        assert_eq!(now.kdf, KdfParams::default(), "rewrapped under the default");
        assert!(!now.needs_rewrap());
        // The same data key: the store still opens, and no temporary is left.
        drop(home.unlock(&pass).unwrap().0);
        assert!(!home.keyfile().with_extension("tmp").exists());
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(home.keyfile()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
