//! Moving an account to another machine: the body of the archive that
//! `safemeet export FILE` writes (sealed by the node under a passphrase,
//! see `safemeet_crypto::archive` and `docs/archive.md`), and what
//! `safemeet import FILE` does with it.
//!
//! Exporting issues the device the archive will become, exactly as a
//! link does (`link`): its keys, its certificate signed with the master
//! key, a copy of the master key, and the new device list, which goes to
//! every contact device and this user's other devices at once, so they
//! share room keys with it from then on and what they send meanwhile
//! waits for it. The body carries that device's account and the link
//! bundle: contacts, rooms, and the whole timeline.
//!
//! Importing stores it all in a new home, before the device's first
//! start. With `--retire-old`, the imported device then revokes the
//! device that exported it (it holds the master key): the new list is
//! owed to every contact device and own device, and each gets it as soon
//! as this device has an Olm session with it (see `device_lists`).

use safemeet_crypto::machine::CryptoMachine;
use safemeet_proto::{DeviceId, Timestamp, UserId, codec};
use safemeet_store::Store;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::Error;
use crate::core::Core;
use crate::link::{LinkSummary, MAX_BUNDLE_BYTES, MAX_HISTORY_DAYS};

/// The body's format version.
const BODY_VERSION: u8 = 1;

/// What an archive holds, inside its sealed envelope.
#[derive(Serialize, Deserialize)]
struct ArchiveBody {
    version: u8,
    /// The account.
    user_id: UserId,
    /// The device that exported it.
    exported_from: DeviceId,
    /// The device the archive becomes.
    device_id: DeviceId,
    /// When it was made.
    created_at: Timestamp,
    /// The link bundle (the new device's account: secret).
    bundle: Vec<u8>,
}

impl Drop for ArchiveBody {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.bundle.zeroize();
    }
}

/// What an archive says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ArchiveInfo {
    /// The account.
    pub user_id: UserId,
    /// The device that exported it.
    pub exported_from: DeviceId,
    /// The device an import of it becomes.
    pub device_id: DeviceId,
    /// When it was made.
    pub created_at: Timestamp,
}

/// An archive's body, opened.
pub struct OpenedArchive {
    /// What it says about itself.
    pub info: ArchiveInfo,
    /// The link bundle it carries (secret).
    pub bundle: Zeroizing<Vec<u8>>,
}

impl OpenedArchive {
    /// Decodes an archive's body (bounded).
    pub fn decode(body: &[u8]) -> Result<Self, Error> {
        let mut decoded: ArchiveBody = codec::decode(body, MAX_BUNDLE_BYTES + 4096)?;
        if decoded.version != BODY_VERSION {
            return Err(Error::InvalidInput(format!(
                "an archive of body format {}; this version reads format {BODY_VERSION}",
                decoded.version
            )));
        }
        Ok(Self {
            info: ArchiveInfo {
                user_id: decoded.user_id,
                exported_from: decoded.exported_from,
                device_id: decoded.device_id,
                created_at: decoded.created_at,
            },
            bundle: Zeroizing::new(std::mem::take(&mut decoded.bundle)),
        })
    }
}

/// What an export issued and carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ArchiveExport {
    /// What the archive says about itself.
    pub info: ArchiveInfo,
    /// What it carries.
    pub summary: LinkSummary,
}

impl<S: Store + Clone> Core<S> {
    /// Issues the device an archive becomes and returns the archive's body
    /// (secret; the node seals it) with what it carries. Only on the
    /// device that holds the master key.
    pub(crate) fn export_archive(&mut self) -> Result<(Zeroizing<Vec<u8>>, ArchiveExport), Error> {
        let (bundle, device_id, summary) = self.export_link(MAX_HISTORY_DAYS, true)?;
        let info = ArchiveInfo {
            user_id: self.user_id(),
            exported_from: self.machine.account().device_id(),
            device_id,
            created_at: self.now.wall,
        };
        let body = ArchiveBody {
            version: BODY_VERSION,
            user_id: info.user_id,
            exported_from: info.exported_from,
            device_id,
            created_at: info.created_at,
            bundle: bundle.to_vec(),
        };
        let bytes = Zeroizing::new(codec::encode_limited(&body, MAX_BUNDLE_BYTES + 4096)?);
        self.security("archive_exported", Some(device_id.to_string()));
        Ok((bytes, ArchiveExport { info, summary }))
    }
}

/// Takes an opened archive into a fresh store of the account it carries:
/// what `safemeet import` does before the device's first start. With
/// `retire_old`, the device that exported it is revoked.
pub fn import_archive<S: Store + Clone>(
    machine: CryptoMachine<S>,
    archive: &OpenedArchive,
    now: crate::Now,
    name: Option<String>,
    retire_old: bool,
) -> Result<LinkSummary, Error> {
    let retire = retire_old.then_some(archive.info.exported_from);
    crate::link::import_bundle_and(
        machine,
        &archive.bundle,
        &[],
        now,
        name,
        |core| match retire {
            Some(old) => core.revoke_device(old),
            None => Ok(()),
        },
    )
}
