//! Sealing a room message's envelope under the room's header key (see
//! [`safemeet_proto::header`]): XChaCha20-Poly1305 with a random nonce, over
//! the [`RoomEnvelope`] encoding padded to fill its frame's bucket.
//!
//! What a carrier sees is the nonce, the hint and the sealed bytes: fresh
//! random bytes in every message, of a length that names the bucket. The
//! Megolm session id and message index, which would link one device's
//! messages, are inside.

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use rand::RngCore;
use rand::rngs::OsRng;
use safemeet_proto::codec;
use safemeet_proto::envelope::{RoomEnvelope, SealedRoomEnvelope};
use safemeet_proto::header::{HeaderKey, NONCE_BYTES, TAG_BYTES};
use safemeet_proto::padding;

use crate::Error;

fn failed(reason: &str) -> Error {
    Error::Decryption {
        what: "room header",
        reason: reason.to_owned(),
    }
}

/// Seals `envelope` under `key`.
pub fn seal(key: &HeaderKey, envelope: &RoomEnvelope) -> Result<SealedRoomEnvelope, Error> {
    let len = codec::encoded_len(envelope)?;
    let padded = padding::sealed_room_len(len).ok_or(codec::EncodeError::TooLarge {
        len,
        max: padding::MAX_BODY_BYTES - padding::SEALED_ROOM_OVERHEAD,
    })?;
    let mut buf = vec![0u8; padded];
    codec::encode_into(envelope, &mut buf[..len])?;
    let mut nonce = [0u8; NONCE_BYTES];
    OsRng.fill_bytes(&mut nonce);
    let tag = XChaCha20Poly1305::new(key.seal_key().into())
        .encrypt_in_place_detached(XNonce::from_slice(&nonce), &[], &mut buf)
        .map_err(|_| failed("sealing failed"))?;
    buf.extend_from_slice(tag.as_slice());
    Ok(SealedRoomEnvelope {
        hint: key.hint(&nonce),
        nonce,
        sealed: buf,
    })
}

/// Whether `sealed` names `key` (its hint matches). A match is only a
/// strong guess; [`open`] checks.
pub fn names(key: &HeaderKey, sealed: &SealedRoomEnvelope) -> bool {
    key.hint(&sealed.nonce) == sealed.hint
}

/// Opens `sealed` with `key` and checks its padding.
pub fn open(key: &HeaderKey, sealed: &SealedRoomEnvelope) -> Result<RoomEnvelope, Error> {
    let body_len = sealed
        .sealed
        .len()
        .checked_sub(TAG_BYTES)
        .ok_or_else(|| failed("too short"))?;
    let mut buf = sealed.sealed[..body_len].to_vec();
    let tag = Tag::from_slice(&sealed.sealed[body_len..]);
    XChaCha20Poly1305::new(key.seal_key().into())
        .decrypt_in_place_detached(XNonce::from_slice(&sealed.nonce), &[], &mut buf, tag)
        .map_err(|_| failed("authentication failed"))?;
    let (envelope, used) = codec::decode_prefix::<RoomEnvelope>(&buf, padding::MAX_BODY_BYTES)?;
    if buf[used..].iter().any(|b| *b != 0) {
        return Err(failed("padding is not zero"));
    }
    if padding::sealed_room_len(used) != Some(buf.len()) {
        return Err(failed("not padded to its bucket"));
    }
    Ok(envelope)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is a failure

    use safemeet_proto::envelope::Envelope;
    use safemeet_proto::padding::MESSAGE_FLOOR;
    use safemeet_proto::room::{RoomSecret, RoomTopic};

    use super::*;

    fn envelope(len: usize) -> RoomEnvelope {
        RoomEnvelope {
            topic: RoomTopic::from_bytes([1; 32]),
            session_id: [2; 32],
            ciphertext: vec![3; len],
        }
    }

    #[test]
    fn sealed_envelopes_open_only_with_their_key_and_share_no_bytes() {
        let key = HeaderKey::for_room(&RoomSecret::from_bytes([5; 32]));
        let other = HeaderKey::for_room(&RoomSecret::from_bytes([6; 32]));
        let env = envelope(300);
        let a = seal(&key, &env).unwrap();
        let b = seal(&key, &env).unwrap();
        assert!(names(&key, &a) && !names(&other, &a));
        assert_eq!(open(&key, &a).unwrap(), env);
        assert!(open(&other, &a).is_err());
        // The same envelope twice: no field alike, and the session id is
        // nowhere in the bytes.
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.hint, b.hint);
        assert_ne!(a.sealed, b.sealed);
        assert!(!a.sealed.windows(32).any(|w| w == [2; 32]));
        // Tampering anywhere fails.
        for i in [0, a.sealed.len() / 2, a.sealed.len() - 1] {
            let mut bad = a.clone();
            bad.sealed[i] ^= 1;
            assert!(open(&key, &bad).is_err());
        }
        let mut bad = a.clone();
        bad.nonce[0] ^= 1;
        assert!(open(&key, &bad).is_err());
        let mut short = a.clone();
        short.sealed.truncate(10);
        assert!(open(&key, &short).is_err());
    }

    #[test]
    fn sealed_frames_are_their_bucket_whatever_the_envelope() {
        let key = HeaderKey::for_room(&RoomSecret::from_bytes([5; 32]));
        for len in [1, 100, 1_500, 1_900] {
            let frame = Envelope::Room(seal(&key, &envelope(len)).unwrap())
                .to_frame()
                .unwrap();
            assert_eq!(frame.len(), MESSAGE_FLOOR, "{len}");
        }
        let frame = Envelope::Room(seal(&key, &envelope(3_000)).unwrap())
            .to_frame()
            .unwrap();
        assert_eq!(frame.len(), 2 * MESSAGE_FLOOR);
    }
}
