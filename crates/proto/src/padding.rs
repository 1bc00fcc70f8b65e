//! Padding to size buckets.
//!
//! Every envelope leaves a node padded to one of a few sizes, so an observer
//! (a relay, a peer forwarding gossip) learns the size class of a message,
//! not its length. Buckets double from 512 bytes to
//! [`MAX_ENVELOPE_BYTES`](crate::limits::MAX_ENVELOPE_BYTES): at most half of
//! a frame is padding, and a short chat line, the common case, costs 512 bytes.
//!
//! A padded frame is `version (1) ‖ length (u32 LE) ‖ payload ‖ zeros`, and
//! its total length is exactly a bucket size. Unpadding checks every part.

use crate::codec::DecodeError;
use crate::limits::MAX_ENVELOPE_BYTES;

/// Current padded-frame version.
pub const FRAME_VERSION: u8 = 1;

/// Header bytes before the payload: version and length.
pub const HEADER_BYTES: usize = 5;

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

/// The largest payload that fits in a frame.
pub const MAX_PAYLOAD_BYTES: usize = MAX_ENVELOPE_BYTES - HEADER_BYTES;

/// The bucket a payload of `len` bytes is padded to, if it fits at all.
pub fn bucket_for(len: usize) -> Option<usize> {
    let needed = len.checked_add(HEADER_BYTES)?;
    BUCKETS.iter().copied().find(|b| *b >= needed)
}

/// Pads a payload into a frame. Fails if the payload is over [`MAX_PAYLOAD_BYTES`].
pub fn pad(payload: &[u8]) -> Result<Vec<u8>, crate::EncodeError> {
    let bucket = bucket_for(payload.len()).ok_or(crate::EncodeError::TooLarge {
        len: payload.len(),
        max: MAX_PAYLOAD_BYTES,
    })?;
    let len = u32::try_from(payload.len()).map_err(|_| crate::EncodeError::TooLarge {
        len: payload.len(),
        max: MAX_PAYLOAD_BYTES,
    })?;
    let mut out = Vec::with_capacity(bucket);
    out.push(FRAME_VERSION);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(payload);
    out.resize(bucket, 0);
    Ok(out)
}

/// Checks a frame and returns its payload.
pub fn unpad(frame: &[u8]) -> Result<&[u8], DecodeError> {
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
    let (len_bytes, rest) = rest.split_at_checked(4).ok_or(DecodeError::Truncated)?;
    let mut len4 = [0u8; 4];
    len4.copy_from_slice(len_bytes);
    let len =
        usize::try_from(u32::from_le_bytes(len4)).map_err(|_| DecodeError::BadPadding("length"))?;
    let (payload, zeros) = rest
        .split_at_checked(len)
        .ok_or(DecodeError::BadPadding("length exceeds frame"))?;
    // The smallest bucket that fits must have been used, or the size class
    // would carry information chosen by the sender.
    if bucket_for(len) != Some(frame.len()) {
        return Err(DecodeError::BadPadding("frame is larger than its bucket"));
    }
    if zeros.iter().any(|b| *b != 0) {
        return Err(DecodeError::BadPadding("padding is not zero"));
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trips(payload in proptest::collection::vec(any::<u8>(), 0..5000)) {
            let frame = pad(&payload).unwrap();
            prop_assert!(BUCKETS.contains(&frame.len()));
            prop_assert_eq!(unpad(&frame).unwrap(), payload.as_slice());
        }

        #[test]
        fn random_frames_never_panic(frame in proptest::collection::vec(any::<u8>(), 0..3000)) {
            let _ = unpad(&frame);
        }
    }

    #[test]
    fn rejects_bad_frames() {
        let mut frame = pad(b"hello").unwrap();
        assert_eq!(frame.len(), 512);
        frame[100] = 1;
        assert_eq!(
            unpad(&frame),
            Err(DecodeError::BadPadding("padding is not zero"))
        );
        let mut frame = pad(b"hello").unwrap();
        frame[0] = 9;
        assert_eq!(unpad(&frame), Err(DecodeError::UnsupportedVersion(9)));
        let mut frame = pad(b"hello").unwrap();
        frame[4] = 0xff;
        assert!(unpad(&frame).is_err());
        let mut big = pad(b"hello").unwrap();
        big.resize(1024, 0);
        assert!(unpad(&big).is_err());
        assert!(pad(&vec![0; MAX_PAYLOAD_BYTES + 1]).is_err());
        assert_eq!(
            pad(&vec![0; MAX_PAYLOAD_BYTES]).unwrap().len(),
            MAX_ENVELOPE_BYTES
        );
    }
}
