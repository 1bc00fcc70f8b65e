//! The outer envelope: what a relay, a gossip peer or a mailbox sees.
//!
//! An envelope carries ciphertext and just enough routing data for the
//! recipient to find the right decryption key. It never carries a sender:
//! the sender's identity travels inside the ciphertext (sealed sender, see
//! [`crate::event::Sealed`]). On the wire an envelope is always padded to a
//! size bucket ([`crate::padding`]).

use serde::{Deserialize, Serialize};

use crate::codec::{self, DecodeError, EncodeError};
use crate::padding;
use crate::room::RoomTopic;

/// An encrypted unit of delivery.
///
/// The enum is the version and kind tag: new kinds are new variants, and a
/// node that does not know a variant rejects the envelope with a
/// [`DecodeError`] instead of guessing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Envelope {
    /// A Megolm-encrypted room event, its envelope sealed under the room's
    /// header key.
    Room(SealedRoomEnvelope),
    /// An Olm-encrypted event for one device.
    ToDevice(ToDeviceEnvelope),
    /// Acknowledgements of room messages that arrived over gossip, sent
    /// directly (over the Noise channel) to the device that sent them.
    Acks(AckEnvelope),
}

/// "These room messages arrived here": up to
/// [`MAX_RECEIPT_EVENTS`](crate::limits::MAX_RECEIPT_EVENTS) event ids, sent
/// directly to the sending device so it stops delivering them to this one.
/// An event id is a keyed hash only room members can tie to a message; an
/// acknowledgement names nothing else, and counts only for the peer that
/// sent it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "AckWire")]
pub struct AckEnvelope {
    /// The events that arrived.
    pub event_ids: Vec<crate::EventId>,
}

#[derive(Deserialize)]
struct AckWire {
    event_ids: Vec<crate::EventId>,
}

impl TryFrom<AckWire> for AckEnvelope {
    type Error = crate::event::TooManyEvents;
    fn try_from(w: AckWire) -> Result<Self, Self::Error> {
        if w.event_ids.len() > crate::limits::MAX_RECEIPT_EVENTS {
            return Err(crate::event::TooManyEvents(w.event_ids.len()));
        }
        Ok(Self {
            event_ids: w.event_ids,
        })
    }
}

/// A room message as it travels: its [`RoomEnvelope`], padded and sealed
/// under the room's [`HeaderKey`](crate::header::HeaderKey) with a fresh
/// nonce. Every field is fresh random bytes to anyone without the key;
/// the sealed part's length is a function of the frame's bucket
/// ([`padding::sealed_room_len`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedRoomEnvelope {
    /// Random per message.
    pub nonce: [u8; crate::header::NONCE_BYTES],
    /// The nonce's hint under the room's key: which key opens it.
    pub hint: [u8; crate::header::HINT_BYTES],
    /// XChaCha20-Poly1305 of the padded [`RoomEnvelope`] encoding.
    #[serde(with = "codec::bytes")]
    pub sealed: Vec<u8>,
}

/// A room event encrypted with the room's Megolm session: what a
/// [`SealedRoomEnvelope`] holds once opened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomEnvelope {
    /// Opaque room topic: a hash of the room secret, not the room id.
    pub topic: RoomTopic,
    /// The Megolm session the ciphertext belongs to.
    pub session_id: [u8; 32],
    /// Megolm ciphertext of a [`crate::event::Sealed`] event.
    #[serde(with = "codec::bytes")]
    pub ciphertext: Vec<u8>,
}

/// Which kind of Olm message a to-device ciphertext is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OlmMessageKind {
    /// Starts a new Olm session.
    PreKey,
    /// Continues an existing session.
    Normal,
}

/// An event encrypted with Olm for one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToDeviceEnvelope {
    /// Pre-key or normal Olm message.
    pub kind: OlmMessageKind,
    /// The Olm session the ciphertext belongs to, so the recipient finds the
    /// session without the sender's identity key being sent in clear. It
    /// links the messages of one session to each other, which the
    /// recipient's mailbox already does; it names no one.
    pub session_id: [u8; 32],
    /// Olm ciphertext of a [`crate::event::Sealed`] event.
    #[serde(with = "codec::bytes")]
    pub ciphertext: Vec<u8>,
}

impl Envelope {
    /// The smallest frame this kind of envelope travels in
    /// ([`padding::MESSAGE_FLOOR`] for messages).
    fn floor(&self) -> usize {
        match self {
            Self::Room(_) | Self::ToDevice(_) => padding::MESSAGE_FLOOR,
            Self::Acks(_) => padding::FLOOR,
        }
    }

    /// Encodes and pads the envelope into a wire frame.
    pub fn to_frame(&self) -> Result<Vec<u8>, EncodeError> {
        let body = codec::encode_limited(self, padding::MAX_BODY_BYTES)?;
        padding::pad(&body, self.floor())
    }

    /// Checks the padding of an untrusted frame and decodes the envelope.
    pub fn from_frame(frame: &[u8]) -> Result<Self, DecodeError> {
        let body = padding::body(frame)?;
        let (envelope, used) = codec::decode_prefix::<Self>(body, padding::MAX_BODY_BYTES)?;
        padding::check_tail(body, used, envelope.floor())?;
        Ok(envelope)
    }
}
