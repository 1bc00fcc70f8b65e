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
    /// A piece of a file's sealed chunks, left on a relay for a device
    /// that was away when the file was sent. Only ever taken from a
    /// mailbox.
    FilePiece(FilePieceEnvelope),
}

/// Sealed file bytes per [`FilePieceEnvelope`] (all but a file's last
/// piece): what fills a frame of the largest bucket with room for the
/// other fields. Pieces cut a file's sealed chunks
/// ([`crate::file`]) at multiples of this, across chunk boundaries.
pub const FILE_PIECE_BYTES: usize = crate::limits::MAX_ENVELOPE_BYTES - 256;

/// Bytes of a piece's signature (Ed25519).
pub const FILE_PIECE_SIGNATURE_BYTES: usize = 64;

/// Piece `index` of the sealed chunks of the file of message `event_id`:
/// the sealed bytes from `index × FILE_PIECE_BYTES` on. The sending
/// device signs it with its network (libp2p Ed25519) key, the one its
/// device certificate names, so no one else who knows the file's key (any
/// member of the conversation) can put pieces of their own in its place.
/// A relay sees only the mailbox seal around it; every piece travels in a
/// frame of the largest bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "FilePieceWire")]
pub struct FilePieceEnvelope {
    /// The file message.
    pub event_id: crate::EventId,
    /// The piece's place.
    pub index: u32,
    /// The sealed bytes (at most [`FILE_PIECE_BYTES`]).
    #[serde(with = "codec::bytes")]
    pub bytes: Vec<u8>,
    /// The sender's signature over [`FilePieceEnvelope::signed_bytes`].
    #[serde(with = "codec::bytes")]
    pub signature: Vec<u8>,
}

impl FilePieceEnvelope {
    /// The domain of a piece's signature.
    pub const CONTEXT: &'static [u8] = b"safemeet/v1/file-piece";

    /// What the sender signs: the domain, the event id, the index and
    /// the BLAKE3 hash of the bytes.
    pub fn signed_bytes(event_id: &crate::EventId, index: u32, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::CONTEXT.len() + 1 + 32 + 4 + 32);
        out.extend_from_slice(Self::CONTEXT);
        out.push(0);
        out.extend_from_slice(event_id.as_bytes());
        out.extend_from_slice(&index.to_be_bytes());
        out.extend_from_slice(blake3::hash(bytes).as_bytes());
        out
    }
}

#[derive(Deserialize)]
struct FilePieceWire {
    event_id: crate::EventId,
    index: u32,
    #[serde(with = "codec::bytes")]
    bytes: Vec<u8>,
    #[serde(with = "codec::bytes")]
    signature: Vec<u8>,
}

/// A piece too large, or a signature of the wrong length.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a file piece of {bytes} bytes with a {signature}-byte signature")]
pub struct BadFilePiece {
    bytes: usize,
    signature: usize,
}

impl TryFrom<FilePieceWire> for FilePieceEnvelope {
    type Error = BadFilePiece;
    fn try_from(w: FilePieceWire) -> Result<Self, Self::Error> {
        if w.bytes.is_empty()
            || w.bytes.len() > FILE_PIECE_BYTES
            || w.signature.len() != FILE_PIECE_SIGNATURE_BYTES
        {
            return Err(BadFilePiece {
                bytes: w.bytes.len(),
                signature: w.signature.len(),
            });
        }
        Ok(Self {
            event_id: w.event_id,
            index: w.index,
            bytes: w.bytes,
            signature: w.signature,
        })
    }
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
            // Every piece looks alike, the last one too.
            Self::FilePiece(_) => crate::limits::MAX_ENVELOPE_BYTES,
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is a failure

    use super::*;

    fn piece(len: usize, signature: usize) -> Envelope {
        Envelope::FilePiece(FilePieceEnvelope {
            event_id: crate::EventId::from_bytes([7; 32]),
            index: u32::MAX,
            bytes: vec![0xa5; len],
            signature: vec![1; signature],
        })
    }

    #[test]
    fn every_file_piece_fills_a_frame_of_the_largest_bucket() {
        for len in [1, 1000, FILE_PIECE_BYTES] {
            let frame = piece(len, 64).to_frame().unwrap();
            assert_eq!(frame.len(), crate::limits::MAX_ENVELOPE_BYTES, "{len}");
            assert_eq!(Envelope::from_frame(&frame).unwrap(), piece(len, 64));
        }
        // Sealed for a mailbox, the largest still fits a relay's limit.
        const {
            assert!(
                crate::limits::MAX_ENVELOPE_BYTES + crate::mailbox::SEAL_OVERHEAD
                    <= crate::mailbox::MAX_SEALED_BYTES
            );
        }
    }

    #[test]
    fn oversized_empty_or_badly_signed_pieces_do_not_decode() {
        for (len, signature) in [(FILE_PIECE_BYTES + 1, 64), (0, 64), (10, 63), (10, 65)] {
            let body = codec::encode(&piece(len, signature)).unwrap();
            assert!(
                codec::decode::<Envelope>(&body, 2 * padding::MAX_BODY_BYTES).is_err(),
                "{len} {signature}"
            );
        }
    }

    #[test]
    fn a_piece_signature_covers_its_event_index_and_bytes() {
        let e = crate::EventId::from_bytes([1; 32]);
        let base = FilePieceEnvelope::signed_bytes(&e, 3, b"abc");
        assert_ne!(
            base,
            FilePieceEnvelope::signed_bytes(&crate::EventId::from_bytes([2; 32]), 3, b"abc")
        );
        assert_ne!(base, FilePieceEnvelope::signed_bytes(&e, 4, b"abc"));
        assert_ne!(base, FilePieceEnvelope::signed_bytes(&e, 3, b"abd"));
        assert!(base.starts_with(b"safemeet/v1/file-piece\0"));
    }
}
