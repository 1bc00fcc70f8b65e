//! Avatars: an image (PNG or JPEG, no metadata, at most 48 KiB) signed by
//! the master key and counted like the profile (`profile`), sent over Olm
//! to every contact device and this user's other devices
//! ([`ToDeviceEvent::AvatarUpdate`]), each of which keeps only the newest.
//! The image's rules are checked as the record decodes, on every device:
//! a contact's device takes no image that still carries metadata.

use safemeet_crypto::certificate::verify_avatar;
use safemeet_proto::UserId;
use safemeet_proto::event::ToDeviceEvent;
use safemeet_proto::identity::{Avatar, AvatarImage, Signed};
use safemeet_proto::image::ImageKind;
use safemeet_store::{Keyspace, Store};
use serde::Serialize;

use crate::core::Core;
use crate::error::Error;
use crate::records::{MAX_RECORD_BYTES, name};

/// What an avatar is, as views show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct AvatarInfo {
    /// PNG or JPEG.
    pub kind: ImageKind,
    /// Its size.
    pub bytes: usize,
    /// Its BLAKE3 hash, hex.
    pub blake3: String,
    /// The avatar's version.
    pub version: u64,
}

impl AvatarInfo {
    fn of(avatar: &Avatar) -> Option<Self> {
        avatar.image.as_ref().map(|image| Self {
            kind: image.kind,
            bytes: image.bytes.len(),
            blake3: blake3::hash(&image.bytes).to_hex().to_string(),
            version: avatar.counter,
        })
    }
}

impl<S: Store + Clone> Core<S> {
    /// The newest avatar held of `user` (this user's own included).
    pub(crate) fn avatar_of(&self, user: &UserId) -> Result<Option<Avatar>, Error> {
        let Some(bytes) = self.store.get(Keyspace::Contacts, &name::avatar(user))? else {
            return Ok(None);
        };
        Ok(Some(verify_avatar(&Signed::from_bytes(&bytes)?, user)?))
    }

    /// What `user`'s avatar is, if they have one.
    pub(crate) fn avatar_info(&self, user: &UserId) -> Result<Option<AvatarInfo>, Error> {
        Ok(self.avatar_of(user)?.as_ref().and_then(AvatarInfo::of))
    }

    /// Sets (or with `None` removes) this user's avatar: a new version,
    /// signed with the master key, kept here and sent to every contact
    /// device and this user's other devices.
    pub(crate) fn set_avatar(
        &mut self,
        image: Option<AvatarImage>,
    ) -> Result<Option<AvatarInfo>, Error> {
        if !self.machine.account().has_master_key() {
            return Err(safemeet_crypto::Error::NoMasterKey.into());
        }
        let me = self.user_id();
        let held = self.avatar_of(&me)?;
        let avatar = Avatar {
            version: 1,
            user_id: me,
            counter: held.map_or(1, |a| a.counter.saturating_add(1)),
            image,
            updated_at: self.now.wall,
        };
        let signed = self.machine.account().sign_avatar(&avatar)?;
        // Decoding checks the image as every receiver will.
        verify_avatar(&signed, &me)
            .map_err(|e| Error::InvalidInput(format!("the avatar is refused: {e}")))?;
        self.keep_avatar(&me, &signed)?;
        self.security("profile_changed", None);
        self.send_to_own_and_contacts(|| ToDeviceEvent::AvatarUpdate(signed.clone()))?;
        Ok(AvatarInfo::of(&avatar))
    }

    /// An avatar from a device of `sender` (signature and image checked by
    /// the crypto machine): kept if newer than the one held. Nothing is
    /// kept of someone who is not a contact.
    pub(crate) fn avatar_received(
        &mut self,
        sender: UserId,
        signed: &Signed<Avatar>,
    ) -> Result<bool, Error> {
        if sender != self.user_id() && self.contact(&sender)?.is_none() {
            return Ok(false);
        }
        let new = verify_avatar(signed, &sender)?;
        if self
            .avatar_of(&sender)?
            .is_some_and(|held| held.counter >= new.counter)
        {
            return Ok(false);
        }
        self.keep_avatar(&sender, signed)?;
        Ok(true)
    }

    fn keep_avatar(&mut self, user: &UserId, signed: &Signed<Avatar>) -> Result<(), Error> {
        let bytes = signed.to_bytes()?;
        if bytes.len() > MAX_RECORD_BYTES {
            return Err(Error::InvalidInput("an avatar too large to keep".into()));
        }
        self.store
            .put(Keyspace::Contacts, &name::avatar(user), &bytes)?;
        Ok(())
    }
}
