//! Plaintext events: what is inside the ciphertext of an [`Envelope`](crate::Envelope).
//!
//! Every ciphertext decrypts to a [`Sealed`] value: the sender's device
//! certificate (or, in room messages, its hash) and a typed payload.
//! Putting the sender inside the encryption (sealed sender) keeps it from
//! relays and gossip peers; the crypto layer checks that the key which
//! decrypted the message belongs to the certified device.
//!
//! All enums here are tagged by variant index, so adding a kind of event is
//! adding a variant at the end, and an old node rejects an unknown kind with
//! a [`DecodeError`](crate::DecodeError).

use std::fmt;

use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

use crate::codec::{self, DecodeError, EncodeError};
use crate::identity::{DeviceCertificate, Profile, Signed};
use crate::limits::{MAX_EVENT_BYTES, MAX_MESSAGE_TEXT_BYTES, MAX_RECEIPT_EVENTS};
use crate::{DeviceId, EventId, RoomId, Timestamp, UserId};

pub use crate::room_state::{BadRoomState, ROOM_STATE_VERSION, RoomState};

/// A decrypted event with its sender.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    /// The sender device's certificate, or its hash.
    pub sender: SealedSender,
    /// What was sent.
    pub payload: Payload,
}

/// How a plaintext names its sender device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SealedSender {
    /// The certificate itself, signed by the sender's master key. To-device
    /// messages (which carry room keys) always use this.
    Certificate(Signed<DeviceCertificate>),
    /// The BLAKE3 hash of the signed certificate's bytes, as the sender's
    /// device list pins it. Room messages use this: the certificate itself
    /// travelled, inside Olm, with the room key that decrypts them, and the
    /// hash binds each message to exactly that certificate at an eighth of
    /// the size.
    CertificateHash([u8; 32]),
}

impl Sealed {
    /// Encodes the plaintext for encryption.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        codec::encode_limited(self, MAX_EVENT_BYTES)
    }

    /// Decodes untrusted decrypted bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        codec::decode(bytes, MAX_EVENT_BYTES)
    }

    /// Encodes the plaintext for encryption, padded to its bucket
    /// ([`crate::padding::pad_plaintext`]).
    pub fn encode_padded(&self) -> Result<Vec<u8>, EncodeError> {
        let mut bytes = self.encode()?;
        crate::padding::pad_plaintext(&mut bytes)?;
        Ok(bytes)
    }

    /// Decodes an untrusted decrypted plaintext and checks its padding.
    pub fn decode_padded(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (sealed, used) =
            codec::decode_prefix::<Self>(bytes, crate::limits::MAX_ENVELOPE_BYTES)?;
        if used > MAX_EVENT_BYTES {
            return Err(DecodeError::TooLarge {
                len: used,
                max: MAX_EVENT_BYTES,
            });
        }
        crate::padding::check_plaintext(bytes, used)?;
        Ok(sealed)
    }

    /// Encodes a plaintext from borrowed parts, padded: the same bytes as
    /// [`Sealed::encode_padded`] of `Sealed { sender, payload }`, without
    /// copying them.
    pub fn encode_parts(sender: &SealedSender, payload: &Payload) -> Result<Vec<u8>, EncodeError> {
        #[derive(Serialize)]
        struct SealedRef<'a> {
            sender: &'a SealedSender,
            payload: &'a Payload,
        }
        let mut bytes = codec::encode_limited(&SealedRef { sender, payload }, MAX_EVENT_BYTES)?;
        crate::padding::pad_plaintext(&mut bytes)?;
        Ok(bytes)
    }
}

/// The two families of events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Payload {
    /// An event in a room's timeline (Megolm).
    Room(RoomEvent),
    /// A message for one device (Olm): keys and control data.
    ToDevice(ToDeviceEvent),
}

/// An event in a room's timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomEvent {
    /// The room.
    pub room_id: RoomId,
    /// The sending user (must match the sealed certificate).
    pub sender: UserId,
    /// The sending device (must match the sealed certificate).
    pub sender_device: DeviceId,
    /// Lamport clock: orders the timeline together with sender and event id.
    pub lamport: u64,
    /// The sender's wall clock when sending (informational; not trusted for order).
    pub ts: Timestamp,
    /// What happened.
    pub content: EventContent,
}

/// Kinds of room events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum EventContent {
    /// A text message.
    Message(Message),
    /// Someone was invited, joined, left, was removed or banned.
    Membership(Membership),
    /// The sender's new signed profile.
    Profile(Signed<Profile>),
    /// The sender withdraws one of their events; receivers purge its content.
    Redaction(Redaction),
    /// Delivery or read receipts.
    Receipt(Receipt),
    /// The room's name, secret, members, admins and bans, from an admin
    /// (boxed: it is the largest kind of event by far, and every event
    /// would carry its size).
    RoomState(Box<RoomState>),
    /// The sender replaces the text of one of its own messages.
    Edit(Edit),
    /// How long the room's messages are kept: from an admin of a group
    /// room, or either user of a DM.
    Settings(RoomSettings),
    /// A file, with a caption: a message like a text one (edited,
    /// redacted and expired the same way), whose file is fetched apart.
    File(Box<crate::file::FileMessage>),
}

/// Text of a message: at most [`MAX_MESSAGE_TEXT_BYTES`], never printed by `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MessageText(String);

/// The message text is too long.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("message text is {0} bytes; the limit is {MAX_MESSAGE_TEXT_BYTES}")]
pub struct TextTooLong(pub usize);

impl MessageText {
    /// Validates the length.
    pub fn new(text: impl Into<String>) -> Result<Self, TextTooLong> {
        let text = text.into();
        if text.len() > MAX_MESSAGE_TEXT_BYTES {
            return Err(TextTooLong(text.len()));
        }
        Ok(Self(text))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for MessageText {
    type Error = TextTooLong;
    fn try_from(s: String) -> Result<Self, TextTooLong> {
        Self::new(s)
    }
}

impl From<MessageText> for String {
    fn from(t: MessageText) -> String {
        t.0
    }
}

impl fmt::Debug for MessageText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageText([scrubbed; {} bytes])", self.0.len())
    }
}

/// A text message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The text.
    pub body: MessageText,
    /// The event this replies to, if any.
    pub reply_to: Option<EventId>,
}

/// A change of room membership, authorised by the room's admins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// Whose membership changes.
    pub user_id: UserId,
    /// The change.
    pub change: MembershipChange,
}

/// Membership transitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum MembershipChange {
    /// Invited by an admin.
    Invite,
    /// Accepted an invitation.
    Join,
    /// Left by choice.
    Leave,
    /// Removed by an admin.
    Remove,
    /// Removed and barred from rejoining.
    Ban,
}

/// Withdraws an earlier event of the same sender.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redaction {
    /// The event to redact.
    pub target: EventId,
}

/// Replaces the text of an earlier message of the same sender.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Edit {
    /// The message to change.
    pub target: EventId,
    /// Its new text.
    pub body: MessageText,
}

/// The shortest expiry a room may set: one second.
pub const MIN_EXPIRY_MS: u64 = 1_000;
/// The longest expiry a room may set: about ten years.
pub const MAX_EXPIRY_MS: u64 = 10 * 366 * 86_400_000;

/// A room's settings, as an admin (or, in a DM, either user) last set
/// them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RoomSettingsWire")]
pub struct RoomSettings {
    /// Every member's node deletes each message this long (milliseconds)
    /// after it was sent; `None`: messages are kept.
    pub expire_after_ms: Option<u64>,
}

#[derive(Deserialize)]
struct RoomSettingsWire {
    expire_after_ms: Option<u64>,
}

/// An expiry outside [`MIN_EXPIRY_MS`]..=[`MAX_EXPIRY_MS`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an expiry of {0} ms is outside 1 s ..= 10 years")]
pub struct BadExpiry(pub u64);

impl RoomSettings {
    /// Checks the expiry's range.
    pub fn new(expire_after_ms: Option<u64>) -> Result<Self, BadExpiry> {
        match expire_after_ms {
            Some(ms) if !(MIN_EXPIRY_MS..=MAX_EXPIRY_MS).contains(&ms) => Err(BadExpiry(ms)),
            _ => Ok(Self { expire_after_ms }),
        }
    }
}

impl TryFrom<RoomSettingsWire> for RoomSettings {
    type Error = BadExpiry;
    fn try_from(w: RoomSettingsWire) -> Result<Self, BadExpiry> {
        Self::new(w.expire_after_ms)
    }
}

/// What a receipt confirms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReceiptKind {
    /// Reached the device.
    Delivered,
    /// Shown to the user (opt-in).
    Read,
}

/// Receipts for up to [`MAX_RECEIPT_EVENTS`] events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ReceiptWire")]
pub struct Receipt {
    /// Delivered or read.
    pub kind: ReceiptKind,
    /// The events confirmed.
    pub events: Vec<EventId>,
}

#[derive(Deserialize)]
struct ReceiptWire {
    kind: ReceiptKind,
    events: Vec<EventId>,
}

/// A receipt lists too many events.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a receipt lists {0} events; the limit is {MAX_RECEIPT_EVENTS}")]
pub struct TooManyEvents(pub usize);

impl TryFrom<ReceiptWire> for Receipt {
    type Error = TooManyEvents;
    fn try_from(w: ReceiptWire) -> Result<Self, TooManyEvents> {
        if w.events.len() > MAX_RECEIPT_EVENTS {
            return Err(TooManyEvents(w.events.len()));
        }
        Ok(Self {
            kind: w.kind,
            events: w.events,
        })
    }
}

/// Events for one device, sent over Olm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ToDeviceEvent {
    /// A Megolm room key.
    RoomKey(RoomKey),
    /// A step of interactive device verification (SAS).
    Verification(Verification),
    /// Carries nothing: sent on a new Olm session to establish it, for
    /// example after the previous one broke.
    NewSession,
    /// The sending device's relays changed: its new signed list.
    RelayList(crate::identity::Signed<crate::identity::RelayList>),
    /// Who the sender is, sent when it adds this user's invite: a device
    /// that has not added the sender yet shows it as a message request,
    /// and makes it a contact from this if its user accepts.
    Introduction(Box<Introduction>),
    /// The sender's user linked or revoked a device: its new signed list,
    /// the certificates of its active devices, and a signed key for each
    /// new device to start an Olm session with.
    DeviceList(Box<DeviceListNotice>),
    /// Between one user's own devices: a contact's devices were verified.
    Trust(Box<TrustNotice>),
    /// Between one user's own devices: the names its devices were given.
    /// Contacts never see them.
    DeviceNames(DeviceNames),
    /// The sender's user signed a new version of its profile: to every
    /// contact device and the user's other devices. Receivers keep the
    /// newest (by counter) and drop the one before.
    ProfileUpdate(Signed<Profile>),
    /// The sender's account is deleted: its tombstone, signed with the
    /// master key. Receivers drop the account's profile, sessions and
    /// devices, show it as deleted and refuse what its devices send.
    AccountDeleted(crate::identity::Signed<crate::identity::AccountTombstone>),
    /// The sender's user signed a new version of its avatar: to every
    /// contact device and the user's other devices, which keep the newest.
    AvatarUpdate(crate::identity::Signed<crate::identity::Avatar>),
    /// Presence, typing or a read marker (see [`crate::signal`]).
    Signal(crate::signal::Signal),
}

/// The longest device name, in characters.
pub const MAX_DEVICE_NAME_CHARS: usize = 64;

/// The names one user gave its devices, as one of them holds them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceNames {
    /// At most one entry per device, at most
    /// [`MAX_DEVICES_PER_USER`](crate::limits::MAX_DEVICES_PER_USER).
    pub names: Vec<DeviceName>,
}

/// A device's name, and when it was given (the later name wins).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceName {
    /// The device.
    pub device_id: DeviceId,
    /// Its name: 1 to [`MAX_DEVICE_NAME_CHARS`] characters, no control
    /// characters (see [`DeviceName::check`]).
    pub name: String,
    /// When it was given.
    pub set_at: Timestamp,
}

impl DeviceName {
    /// Checks a name as typed or received: why it is not acceptable.
    pub fn check(name: &str) -> Result<(), &'static str> {
        let trimmed = name.trim();
        if trimmed.is_empty() {
            return Err("a device name cannot be empty");
        }
        if trimmed.len() != name.len() {
            return Err("a device name cannot start or end with spaces");
        }
        if name.chars().count() > MAX_DEVICE_NAME_CHARS {
            return Err("a device name is at most 64 characters");
        }
        if name.chars().any(char::is_control) {
            return Err("a device name cannot hold control characters");
        }
        Ok(())
    }
}

/// A contact's devices verified on one of this user's devices, for its
/// other devices (cross-signing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TrustNotice {
    /// From a device without the master key, to the one with it: sign this.
    Request(crate::identity::UserTrust),
    /// Signed by the master key: trust these devices.
    Signed(Signed<crate::identity::UserTrust>),
}

/// A user's new device list, as one of its devices announces it to
/// contacts and to its user's other devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceListNotice {
    /// Format version; currently [`DEVICE_LIST_NOTICE_VERSION`].
    pub version: u8,
    /// The signed device list.
    pub device_list: Signed<crate::identity::DeviceList>,
    /// The certificates of its active devices.
    pub certificates: Vec<Signed<DeviceCertificate>>,
    /// Fallback keys of new devices, each signed by its device: a device
    /// that has no Olm session with one starts it from its key.
    pub keys: Vec<Signed<crate::identity::OneTimeKey>>,
}

/// The format version of [`DeviceListNotice`].
pub const DEVICE_LIST_NOTICE_VERSION: u8 = 1;

/// A user's signed identity records, as an invite carries them (without
/// the one-time key and addresses): what a message request is made of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Introduction {
    /// Format version; currently [`INTRODUCTION_VERSION`].
    pub version: u8,
    /// The sender's signed device list.
    pub device_list: Signed<crate::identity::DeviceList>,
    /// The certificates of its listed active devices.
    pub certificates: Vec<Signed<DeviceCertificate>>,
    /// The sender's signed profile.
    pub profile: Signed<Profile>,
}

/// The format version of [`Introduction`].
pub const INTRODUCTION_VERSION: u8 = 1;

/// One message of a short-authentication-string verification between two
/// devices. The flow: the initiator sends `Start`; the responder answers
/// `Accept` with a commitment to its key; the initiator sends its `Key`;
/// the responder reveals its `Key`; both users compare the short string and
/// each side sends `Mac` once its user confirmed. `Cancel` may come at any
/// point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verification {
    /// Format version; currently 1.
    pub version: u8,
    /// Random id of this verification, chosen by the initiator.
    pub flow_id: [u8; 16],
    /// The step.
    pub step: VerificationStep,
}

/// The steps of a SAS verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum VerificationStep {
    /// The initiator asks to verify.
    Start,
    /// The responder agrees and commits to its ephemeral key:
    /// a hash of the key and the flow.
    Accept {
        /// The commitment.
        commitment: [u8; 32],
    },
    /// An ephemeral Curve25519 public key.
    Key {
        /// The key.
        key: [u8; 32],
    },
    /// MACs, under the agreed secret, of the sender's device key and master key.
    Mac {
        /// MAC of the sender's device Ed25519 key.
        device_key: [u8; 32],
        /// MAC of the sender's master key (its user id).
        master_key: [u8; 32],
    },
    /// The verification stopped.
    Cancel {
        /// Why.
        reason: CancelReason,
    },
}

/// Why a verification was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum CancelReason {
    /// The user stopped it.
    User,
    /// The short strings did not match.
    Mismatch,
    /// The revealed key does not match its commitment.
    BadCommitment,
    /// A MAC did not verify.
    BadMac,
    /// A step came out of order.
    UnexpectedStep,
    /// The flow took too long.
    Timeout,
}

/// A Megolm session key shared with one member device.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomKey {
    /// Format version; currently 1.
    pub version: u8,
    /// The room the session encrypts.
    pub room_id: RoomId,
    /// The Megolm session id.
    pub session_id: [u8; 32],
    /// The first message index this key can decrypt.
    pub first_index: u32,
    /// The exported session key. Secret: zeroized on drop, never printed.
    #[serde(with = "codec::bytes")]
    pub session_key: Vec<u8>,
    /// The root of the header key the session's messages are sealed under
    /// ([`crate::header`]), so a device opens them before it has the
    /// room's state (when joining, or after a rotation).
    pub header: crate::header::HeaderRoot,
}

impl fmt::Debug for RoomKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoomKey")
            .field("room_id", &self.room_id)
            .field("first_index", &self.first_index)
            .finish_non_exhaustive()
    }
}

impl Drop for RoomKey {
    fn drop(&mut self) {
        self.session_key.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_are_checked() {
        assert!(DeviceName::check("laptop").is_ok());
        assert!(DeviceName::check("Ana's phone 📱").is_ok());
        assert!(DeviceName::check(&"é".repeat(MAX_DEVICE_NAME_CHARS)).is_ok());
        for bad in ["", " ", " lead", "trail ", "a\tb", "a\nb", "\u{7}"] {
            assert!(DeviceName::check(bad).is_err(), "{bad:?}");
        }
        assert!(DeviceName::check(&"x".repeat(MAX_DEVICE_NAME_CHARS + 1)).is_err());
    }
}

#[cfg(test)]
mod settings_tests {
    use super::*;

    #[test]
    fn expiries_outside_their_range_do_not_decode() {
        for ms in [None, Some(MIN_EXPIRY_MS), Some(2_000), Some(MAX_EXPIRY_MS)] {
            let settings = RoomSettings::new(ms).unwrap();
            let bytes = codec::encode(&EventContent::Settings(settings)).unwrap();
            assert_eq!(
                codec::decode::<EventContent>(&bytes, 64).unwrap(),
                EventContent::Settings(settings)
            );
        }
        for ms in [0, 999, MAX_EXPIRY_MS + 1, u64::MAX] {
            assert_eq!(RoomSettings::new(Some(ms)), Err(BadExpiry(ms)));
            let forged = codec::encode(&EventContent::Settings(RoomSettings {
                expire_after_ms: Some(ms),
            }))
            .unwrap();
            assert!(codec::decode::<EventContent>(&forged, 64).is_err(), "{ms}");
        }
    }
}
