//! Padding to size buckets, in two layers.
//!
//! - **Inside the encryption.** Before Olm or Megolm encrypts an event, its
//!   encoding is followed by zeros up to a *plaintext bucket*: a frame
//!   bucket less [`PLAINTEXT_HEADROOM`]. So the ciphertext's length says
//!   which bucket the event is in, and nothing finer, to anyone who sees
//!   the ciphertext: a peer forwarding gossip, the holder of a frame.
//! - **The frame.** A frame is `version (1) ‖ envelope ‖ zeros`, exactly a
//!   bucket long. It carries no length: the envelope's encoding ends by
//!   itself, and decoding checks that only zeros follow it and that the
//!   smallest bucket that fits was used (else the size class would carry
//!   information the sender chose).
//!
//! Buckets double from 512 bytes to
//! [`MAX_ENVELOPE_BYTES`](crate::limits::MAX_ENVELOPE_BYTES). A frame that
//! carries a message (Olm or Megolm) is at least [`MESSAGE_FLOOR`] bytes,
//! which holds about 1 700 bytes of text: a two-character reply, a
//! paragraph and a long message of 1 500 characters all look alike. Only
//! acknowledgements, which carry no content and travel only to the one
//! peer they concern, start at 512.

use crate::codec::{DecodeError, EncodeError};
use crate::limits::MAX_ENVELOPE_BYTES;

/// Current frame version (2: no length field, message floor).
pub const FRAME_VERSION: u8 = 2;

/// Frame bytes before the envelope: the version.
pub const HEADER_BYTES: usize = 1;

/// The bucket sizes, smallest first.
pub const BUCKETS: [usize; 8] = [
    512,
    1024,
    2048,
    4096,
    8192,
    16384,
    32768,
    MAX_ENVELOPE_BYTES,
];

/// The smallest frame that carries a message.
pub const MESSAGE_FLOOR: usize = 2048;

/// The smallest frame of anything else (acknowledgements).
pub const FLOOR: usize = BUCKETS[0];

/// What encryption and the envelope may add to a padded plaintext while
/// the frame stays in the bucket the plaintext was padded for. The largest
/// addition is an Olm pre-key message in a to-device envelope: three keys
/// and a ratchet key (4 × 34 bytes), a MAC, the cipher's block, the session
/// id and a few tags and lengths, about 220 bytes in all.
pub const PLAINTEXT_HEADROOM: usize = 256;

/// The largest envelope that fits in a frame.
pub const MAX_BODY_BYTES: usize = MAX_ENVELOPE_BYTES - HEADER_BYTES;

/// The bucket (at least `floor`) a frame whose envelope is `len` bytes long
/// is padded to, if it fits at all.
pub fn bucket_for(len: usize, floor: usize) -> Option<usize> {
    let needed = len.checked_add(HEADER_BYTES)?;
    BUCKETS
        .iter()
        .copied()
        .find(|b| *b >= needed && *b >= floor)
}

/// Pads an encoded envelope into a frame of at least `floor` bytes.
pub fn pad(body: &[u8], floor: usize) -> Result<Vec<u8>, EncodeError> {
    let bucket = bucket_for(body.len(), floor).ok_or(EncodeError::TooLarge {
        len: body.len(),
        max: MAX_BODY_BYTES,
    })?;
    let mut out = Vec::with_capacity(bucket);
    out.push(FRAME_VERSION);
    out.extend_from_slice(body);
    out.resize(bucket, 0);
    Ok(out)
}

/// Checks an untrusted frame's size and version, and returns what follows
/// the version: the envelope, then zeros. Check those with [`check_tail`]
/// once the envelope is decoded.
pub fn body(frame: &[u8]) -> Result<&[u8], DecodeError> {
    if frame.len() > MAX_ENVELOPE_BYTES {
        return Err(DecodeError::TooLarge {
            len: frame.len(),
            max: MAX_ENVELOPE_BYTES,
        });
    }
    if !BUCKETS.contains(&frame.len()) {
        return Err(DecodeError::BadPadding("frame length is not a bucket size"));
    }
    let (&version, rest) = frame.split_first().ok_or(DecodeError::Truncated)?;
    if version != FRAME_VERSION {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    Ok(rest)
}

/// Checks the padding after a decoded envelope: `body` is what [`body`]
/// returned, the envelope took its first `used` bytes, and its kind's
/// frames start at `floor`.
pub fn check_tail(body: &[u8], used: usize, floor: usize) -> Result<(), DecodeError> {
    let zeros = body.get(used..).ok_or(DecodeError::Truncated)?;
    if zeros.iter().any(|b| *b != 0) {
        return Err(DecodeError::BadPadding("padding is not zero"));
    }
    if bucket_for(used, floor) != Some(body.len() + HEADER_BYTES) {
        return Err(DecodeError::BadPadding("frame is not its smallest bucket"));
    }
    Ok(())
}

/// What a frame adds around the sealed part of a room envelope: the frame
/// version, the envelope's kind, the nonce, the hint, the sealed part's
/// length (at most 3 bytes for any frame) and the AEAD tag.
pub const SEALED_ROOM_OVERHEAD: usize = HEADER_BYTES
    + 1
    + crate::header::NONCE_BYTES
    + crate::header::HINT_BYTES
    + 3
    + crate::header::TAG_BYTES;

/// The length a room envelope encoding of `len` bytes is padded to before
/// it is sealed: what fills its frame's bucket, so the sealed part's length
/// names the bucket and nothing finer.
pub fn sealed_room_len(len: usize) -> Option<usize> {
    let frame = bucket_for(
        len.checked_add(SEALED_ROOM_OVERHEAD - HEADER_BYTES)?,
        MESSAGE_FLOOR,
    )?;
    Some(frame - SEALED_ROOM_OVERHEAD)
}

/// The plaintext bucket an encoded event of `len` bytes is padded to.
pub fn plaintext_bucket(len: usize) -> Option<usize> {
    let frame = bucket_for(len.checked_add(PLAINTEXT_HEADROOM)?, MESSAGE_FLOOR)?;
    Some(frame - PLAINTEXT_HEADROOM)
}

/// Pads an encoded event with zeros to its plaintext bucket, before it is
/// encrypted. The buffer grows in place, once (it may hold keys).
pub fn pad_plaintext(plaintext: &mut Vec<u8>) -> Result<(), EncodeError> {
    let len = plaintext.len();
    let target = plaintext_bucket(len).ok_or(EncodeError::TooLarge {
        len,
        max: MAX_BODY_BYTES - PLAINTEXT_HEADROOM,
    })?;
    if plaintext.capacity() < target {
        // One exact reservation: a reallocation would leave a copy behind.
        let mut grown = Vec::with_capacity(target);
        grown.extend_from_slice(plaintext);
        zeroize::Zeroize::zeroize(plaintext);
        *plaintext = grown;
    }
    plaintext.resize(target, 0);
    Ok(())
}

/// Checks the padding of a decrypted plaintext whose event took its first
/// `used` bytes.
pub fn check_plaintext(plaintext: &[u8], used: usize) -> Result<(), DecodeError> {
    let zeros = plaintext.get(used..).ok_or(DecodeError::Truncated)?;
    if zeros.iter().any(|b| *b != 0) {
        return Err(DecodeError::BadPadding("plaintext padding is not zero"));
    }
    if plaintext_bucket(used) != Some(plaintext.len()) {
        return Err(DecodeError::BadPadding(
            "plaintext is not its smallest bucket",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is a failure

    use super::*;
    use proptest::prelude::*;

    fn unpad(frame: &[u8], used: usize, floor: usize) -> Result<&[u8], DecodeError> {
        let rest = body(frame)?;
        check_tail(rest, used, floor)?;
        Ok(&rest[..used])
    }

    proptest! {
        #[test]
        fn round_trips(body_bytes in proptest::collection::vec(1u8..=255, 0..5000)) {
            for floor in [FLOOR, MESSAGE_FLOOR] {
                let frame = pad(&body_bytes, floor).unwrap();
                prop_assert!(BUCKETS.contains(&frame.len()));
                prop_assert!(frame.len() >= floor);
                prop_assert_eq!(unpad(&frame, body_bytes.len(), floor).unwrap(), body_bytes.as_slice());
            }
        }

        #[test]
        fn plaintext_round_trips(len in 0usize..20_000) {
            let mut p = vec![1u8; len];
            pad_plaintext(&mut p).unwrap();
            prop_assert!(check_plaintext(&p, len).is_ok());
            // Encrypted and framed, it stays in its bucket.
            prop_assert_eq!(
                bucket_for(p.len() + PLAINTEXT_HEADROOM - HEADER_BYTES, MESSAGE_FLOOR),
                Some(p.len() + PLAINTEXT_HEADROOM)
            );
        }

        #[test]
        fn random_frames_never_panic(frame in proptest::collection::vec(any::<u8>(), 0..3000), used in 0usize..3000) {
            let _ = unpad(&frame, used, FLOOR);
            let _ = check_plaintext(&frame, used);
        }
    }

    #[test]
    fn a_sealed_room_envelope_fills_its_bucket() {
        use crate::envelope::{Envelope, SealedRoomEnvelope};
        for len in [0, 1, 1_900, 1_995, 1_996, 4_000, 40_000, 65_000] {
            let Some(padded) = sealed_room_len(len) else {
                assert!(len > MAX_ENVELOPE_BYTES - SEALED_ROOM_OVERHEAD, "{len}");
                continue;
            };
            assert!(padded >= len);
            let env = Envelope::Room(SealedRoomEnvelope {
                nonce: [1; crate::header::NONCE_BYTES],
                hint: [2; crate::header::HINT_BYTES],
                sealed: vec![3; padded + crate::header::TAG_BYTES],
            });
            let frame = env.to_frame().unwrap();
            let bucket = bucket_for(len + SEALED_ROOM_OVERHEAD - HEADER_BYTES, MESSAGE_FLOOR);
            assert_eq!(Some(frame.len()), bucket, "{len}");
            assert_eq!(Envelope::from_frame(&frame).unwrap(), env);
        }
    }

    #[test]
    fn short_and_long_messages_share_a_bucket() {
        let sizes: Vec<usize> = [40, 400, 1_700]
            .into_iter()
            .map(|len| plaintext_bucket(len).unwrap())
            .collect();
        assert_eq!(sizes, [MESSAGE_FLOOR - PLAINTEXT_HEADROOM; 3]);
    }

    #[test]
    fn rejects_bad_frames() {
        let frame = pad(b"hello", FLOOR).unwrap();
        assert_eq!(frame.len(), 512);
        let mut bad = frame.clone();
        bad[100] = 1;
        assert_eq!(
            unpad(&bad, 5, FLOOR),
            Err(DecodeError::BadPadding("padding is not zero"))
        );
        let mut bad = frame.clone();
        bad[0] = 9;
        assert_eq!(
            unpad(&bad, 5, FLOOR),
            Err(DecodeError::UnsupportedVersion(9))
        );
        let mut big = frame.clone();
        big.resize(1024, 0);
        assert!(unpad(&big, 5, FLOOR).is_err());
        // A message frame below the floor, or above its smallest bucket.
        assert!(unpad(&frame, 5, MESSAGE_FLOOR).is_err());
        let message = pad(b"hello", MESSAGE_FLOOR).unwrap();
        assert_eq!(message.len(), MESSAGE_FLOOR);
        assert!(unpad(&message, 5, FLOOR).is_err());
        assert!(pad(&vec![0; MAX_BODY_BYTES + 1], FLOOR).is_err());
        assert_eq!(
            pad(&vec![0; MAX_BODY_BYTES], FLOOR).unwrap().len(),
            MAX_ENVELOPE_BYTES
        );
    }

    #[test]
    fn rejects_bad_plaintext_padding() {
        let mut p = b"event".to_vec();
        pad_plaintext(&mut p).unwrap();
        assert!(check_plaintext(&p, 5).is_ok());
        let mut bad = p.clone();
        bad[40] = 1;
        assert!(check_plaintext(&bad, 5).is_err());
        let mut short = p.clone();
        short.truncate(1000);
        assert!(check_plaintext(&short, 5).is_err());
        assert!(check_plaintext(&p, p.len() + 1).is_err());
    }
}
