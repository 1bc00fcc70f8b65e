//! Introductions from users this device does not know yet.
//!
//! A user who adds this user's invite sends an `Introduction` (their
//! signed device list, certificates and profile) over a new Olm session
//! started from the invite's fallback key. Until this user accepts them,
//! the sender is unknown, and [`CryptoMachine::decrypt_to_device`] refuses
//! their messages ([`Error::UnknownSender`]). [`CryptoMachine::open_introduction`]
//! reads such a message anyway, checks every signature in it, and stores
//! nothing: the Olm session made to read it is dropped (the sender's next
//! pre-key message makes it again) and a one-time key it used is kept. The
//! caller decides whether to keep the sender as a message request.

use safemeet_proto::envelope::{OlmMessageKind, ToDeviceEnvelope};
use safemeet_proto::event::{Introduction, Payload, Sealed, SealedSender, ToDeviceEvent};
use safemeet_proto::identity::DeviceStatus;
use safemeet_proto::{DeviceId, UserId};
use safemeet_store::Store;
use vodozemac::olm::{PreKeyMessage, SessionConfig, SessionCreationError};
use zeroize::Zeroizing;

use super::devices::listed_status;
use super::{CryptoMachine, session_id_bytes};
use crate::{Error, certificate};

/// A checked introduction from a user this device does not know.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Introduced {
    /// Who sent it.
    pub user_id: UserId,
    /// From which of their devices.
    pub device_id: DeviceId,
    /// That device's libp2p peer id (bytes, as certified).
    pub peer_id: Vec<u8>,
    /// Their username, from the signed profile.
    pub username: String,
    /// Their display name, from the signed profile.
    pub display_name: String,
    /// The records, all checked: give them to
    /// [`CryptoMachine::add_device_list`] to make the sender known.
    pub introduction: Introduction,
}

fn refused(reason: &'static str) -> Error {
    Error::InvalidRecord {
        what: "introduction",
        reason,
    }
}

impl<S: Store> CryptoMachine<S> {
    /// Reads a pre-key to-device message from an unknown sender that
    /// carries an introduction, and checks it: the sealed certificate
    /// verifies under its user's key and is the one the introduced device
    /// list pins as active, the Olm identity key is that certificate's, and
    /// the list, the other certificates and the profile verify. Stores
    /// nothing (see the [module docs](self)).
    pub fn open_introduction(&mut self, envelope: &ToDeviceEnvelope) -> Result<Introduced, Error> {
        self.check_usable()?;
        if envelope.kind != OlmMessageKind::PreKey {
            return Err(refused("not a pre-key message"));
        }
        let pre = PreKeyMessage::from_bytes(&envelope.ciphertext)
            .map_err(|_| refused("not an Olm pre-key message"))?;
        if pre.to_bytes() != envelope.ciphertext {
            return Err(refused("non-canonical message encoding"));
        }
        if session_id_bytes(&pre.session_id())? != envelope.session_id {
            return Err(refused("the session id does not match the message"));
        }
        if self.load_olm_session(&envelope.session_id)?.is_some() {
            // A session this device keeps is a known sender's.
            return Err(refused("not a first message"));
        }
        let identity = pre.identity_key();
        let olm = &mut self.account.device_keys_mut().olm;
        let keys_before = olm.stored_one_time_key_count();
        let created = olm.create_inbound_session(SessionConfig::version_1(), identity, &pre);
        if olm.stored_one_time_key_count() != keys_before {
            // Keep the one-time key: the sender sends this message again.
            self.reload_account()?;
        }
        let created = created.map_err(|e| match e {
            SessionCreationError::MissingOneTimeKey(_) => Error::MissingOneTimeKey,
            _ => refused("the pre-key message does not open"),
        })?;
        let plaintext = Zeroizing::new(created.plaintext);
        let sealed = Sealed::decode_padded(&plaintext)?;
        let SealedSender::Certificate(signed) = &sealed.sender else {
            return Err(refused("no sender certificate"));
        };
        let Payload::ToDevice(ToDeviceEvent::Introduction(introduction)) = sealed.payload else {
            return Err(Error::UnexpectedPayload);
        };
        let user = signed.decode_body()?.user_id;
        if self.refused.contains(&user) {
            return Err(Error::RefusedSender);
        }
        let cert = certificate::verify_device_certificate(signed, &user)?;
        if cert.curve25519_key != identity.to_bytes() {
            return Err(Error::SenderMismatch {
                reason: "the Olm session key is not the certified device's key",
            });
        }
        let list = certificate::verify_device_list(&introduction.device_list, &user, None)?;
        let hash = certificate::certificate_hash(signed)?;
        match listed_status(&list, &cert.device_id) {
            Some((DeviceStatus::Active, pinned)) if pinned == hash => {}
            _ => return Err(refused("the sender is not an active device of its list")),
        }
        for other in &introduction.certificates {
            certificate::verify_device_certificate(other, &user)?;
        }
        let profile = certificate::verify_profile(&introduction.profile, &user, None)?;
        Ok(Introduced {
            user_id: user,
            device_id: cert.device_id,
            peer_id: cert.peer_id.clone(),
            username: profile.username.as_str().to_owned(),
            display_name: profile.display_name.as_str().to_owned(),
            introduction: *introduction,
        })
    }
}
