//! The profile directory (`--home`).
//!
//! Layout:
//! - `keyfile`: the data key wrapped under the passphrase (JSON, mode 0600).
//!   Its presence is what makes a profile an account: it is written last
//!   by `init`, atomically.
//! - `db/`: the sled store; every value sealed, every identifying key hashed.
//!
//! The directory is created with mode 0700. Nothing in it names the user in
//! clear.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use etcetera::BaseStrategy;
use safemeet_crypto::EncryptedStore;
use safemeet_crypto::at_rest::{DataKey, KdfParams, KeyFile, Passphrase, StoreCipher};
use safemeet_store::{SledConfig, SledStore, migrate};

use crate::failure::Failure;

/// Schema version of the store this build writes.
pub(crate) const SCHEMA_VERSION: u32 = 1;

/// Schema migrations, oldest first (none yet: version 1 is the first).
const MIGRATIONS: &[migrate::Migration] = &[];

/// An unlocked profile store.
pub(crate) type ProfileStore = EncryptedStore<SledStore>;

#[derive(Debug)]
pub(crate) struct Home {
    dir: PathBuf,
}

impl Home {
    /// `--home`/`SAFEMEET_HOME`, else `$XDG_DATA_HOME/safemeet`.
    pub(crate) fn resolve(explicit: Option<PathBuf>) -> Result<Self, Failure> {
        let dir = match explicit {
            Some(d) => d,
            None => etcetera::choose_base_strategy()
                .context("cannot find a home directory; pass --home DIR")?
                .data_dir()
                .join("safemeet"),
        };
        Ok(Self { dir })
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    fn keyfile(&self) -> PathBuf {
        self.dir.join("keyfile")
    }

    fn db(&self) -> PathBuf {
        self.dir.join("db")
    }

    pub(crate) fn has_account(&self) -> bool {
        self.keyfile().exists()
    }

    /// Creates the profile: directory, store, and finally the key file.
    /// `fill` writes the first records into the unlocked store.
    pub(crate) fn create(
        &self,
        passphrase: &Passphrase,
        fill: impl FnOnce(&ProfileStore) -> Result<(), Failure>,
    ) -> Result<(), Failure> {
        if self.has_account() {
            return Err(Failure::AccountExists(format!(
                "{} already holds an account; refusing to overwrite it",
                self.dir.display()
            )));
        }
        create_private_dir(&self.dir)?;
        // A store without a key file is left from an interrupted init: its
        // data key never reached disk, so it is unreadable by anyone. Start over.
        if self.db().exists() {
            tracing::warn!("removing an unreadable store left by an interrupted init");
            fs::remove_dir_all(self.db()).context("removing the store of an interrupted init")?;
        }
        let key = DataKey::generate();
        let keyfile = KeyFile::wrap(&key, passphrase, KdfParams::default())?;
        {
            let store = self.open_store(&key)?;
            fill(&store)?;
            store.flush()?;
        }
        write_private_file_atomically(&self.keyfile(), keyfile.to_json()?.as_bytes())?;
        Ok(())
    }

    /// Unlocks the profile: reads the key file, checks the passphrase, then
    /// opens the store. A wrong passphrase touches nothing on disk.
    pub(crate) fn unlock(&self, passphrase: &Passphrase) -> Result<ProfileStore, Failure> {
        if !self.has_account() {
            return Err(Failure::NoAccount(format!(
                "no account in {}; create one with `safemeet init --username NAME`",
                self.dir.display()
            )));
        }
        let text = fs::read_to_string(self.keyfile()).context("reading the key file")?;
        let key = KeyFile::from_json(&text)?.unwrap_key(passphrase)?;
        self.open_store(&key)
    }

    fn open_store(&self, key: &DataKey) -> Result<ProfileStore, Failure> {
        let sled = SledStore::open(self.db(), &SledConfig::default())?;
        migrate::migrate(&sled, SCHEMA_VERSION, MIGRATIONS)?;
        Ok(EncryptedStore::new(sled, StoreCipher::new(key)))
    }
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
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

fn write_private_file_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    if let Some(parent) = path.parent() {
        fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}
