//! The one codec: [postcard].
//!
//! Why postcard rather than CBOR: postcard has a single encoding for every
//! value (no choice of integer width, no indefinite lengths, no map ordering
//! question as long as we never encode maps), so encoding is deterministic
//! and the bytes that are signed are exactly the bytes that are sent. It is
//! compact (varints, no field names), its wire format is specified and stable
//! since 1.0, and it is serde-based like the rest of the workspace. CBOR
//! would need a canonicalisation step (RFC 8949 §4.2) before signing and is
//! larger on the wire. The cost, that postcard is not self-describing, is
//! met by versioned enums: the variant index is the first thing decoded.
//!
//! [`decode`] is strict: it checks the input size before parsing, refuses
//! trailing bytes, and refuses any input that does not re-encode to itself
//! (for example an over-long varint), so one value has exactly one accepted
//! encoding and a signature can never cover two different readings.

use serde::Serialize;
use serde::de::DeserializeOwned;
use zeroize::Zeroizing;

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input is longer than the limit for its type.
    #[error("input of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Length of the input.
        len: usize,
        /// The limit that applies.
        max: usize,
    },
    /// The input ended before the value did.
    #[error("input is truncated")]
    Truncated,
    /// The input does not describe a valid value.
    #[error("malformed input: {0}")]
    Malformed(String),
    /// Bytes follow the value.
    #[error("{0} unexpected bytes after the value")]
    TrailingBytes(usize),
    /// The input decodes, but not from its one canonical encoding.
    #[error("input is not canonically encoded")]
    NonCanonical,
    /// A format version this build does not know.
    #[error("unsupported format version {0}")]
    UnsupportedVersion(u8),
    /// Padding is missing, inconsistent or not zero.
    #[error("bad padding: {0}")]
    BadPadding(&'static str),
}

/// Why a value could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The encoded value would exceed the limit for its type.
    #[error("encoded value of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Encoded length.
        len: usize,
        /// The limit that applies.
        max: usize,
    },
    /// The serializer refused the value.
    #[error("cannot encode value: {0}")]
    Serialize(String),
}

/// Encodes a value with the workspace codec.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, EncodeError> {
    // Size first, then one allocation of exactly that size (growing a
    // vector while encoding would copy large values several times).
    let mut buf = vec![0u8; encoded_len(value)?];
    encode_into(value, &mut buf)?;
    Ok(buf)
}

/// The length of `value`'s encoding, computed without encoding it.
pub fn encoded_len<T: Serialize + ?Sized>(value: &T) -> Result<usize, EncodeError> {
    postcard::serialize_with_flavor(value, postcard::ser_flavors::Size::default())
        .map_err(|e| EncodeError::Serialize(e.to_string()))
}

/// Encodes `value` into `buf`, which must be exactly [`encoded_len`] bytes.
pub fn encode_into<T: Serialize + ?Sized>(value: &T, buf: &mut [u8]) -> Result<(), EncodeError> {
    let len = buf.len();
    let written = postcard::to_slice(value, buf)
        .map_err(|e| EncodeError::Serialize(e.to_string()))?
        .len();
    if written != len {
        return Err(EncodeError::Serialize("size changed while encoding".into()));
    }
    Ok(())
}

/// Encodes a value and checks it against a size limit.
pub fn encode_limited<T: Serialize + ?Sized>(
    value: &T,
    max: usize,
) -> Result<Vec<u8>, EncodeError> {
    let bytes = encode(value)?;
    if bytes.len() > max {
        return Err(EncodeError::TooLarge {
            len: bytes.len(),
            max,
        });
    }
    Ok(bytes)
}

/// Encodes a value that holds secrets: the buffer is sized exactly up front
/// (no reallocation leaves partial copies behind) and zeroized on drop.
pub fn encode_secret<T: Serialize + ?Sized>(
    value: &T,
    max: usize,
) -> Result<Zeroizing<Vec<u8>>, EncodeError> {
    let len = encoded_len(value)?;
    if len > max {
        return Err(EncodeError::TooLarge { len, max });
    }
    let mut buf = Zeroizing::new(vec![0u8; len]);
    encode_into(value, &mut buf)?;
    Ok(buf)
}

/// Decodes untrusted bytes: size-checked, whole-input, canonical.
pub fn decode<T: Serialize + DeserializeOwned>(bytes: &[u8], max: usize) -> Result<T, DecodeError> {
    let (value, used) = decode_prefix(bytes, max)?;
    if used != bytes.len() {
        return Err(DecodeError::TrailingBytes(bytes.len() - used));
    }
    Ok(value)
}

/// Decodes a value from the start of untrusted bytes (size-checked,
/// canonical) and says how many bytes it took. For encodings followed by
/// padding: the caller checks what follows.
pub fn decode_prefix<T: Serialize + DeserializeOwned>(
    bytes: &[u8],
    max: usize,
) -> Result<(T, usize), DecodeError> {
    if bytes.len() > max {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            max,
        });
    }
    let (value, rest) = postcard::take_from_bytes::<T>(bytes).map_err(map_postcard)?;
    let used = bytes.len() - rest.len();
    // One value, one encoding: re-encode into a comparison against the
    // input (no copy is made, so no secret is copied either).
    let matched = postcard::serialize_with_flavor(
        &value,
        Compare {
            expected: &bytes[..used],
            pos: 0,
        },
    )
    .map_err(|_| DecodeError::NonCanonical)?;
    if !matched {
        return Err(DecodeError::NonCanonical);
    }
    Ok((value, used))
}

/// A postcard flavor that checks the bytes it is given against `expected`
/// instead of storing them; it ends in `true` when they match exactly.
struct Compare<'a> {
    expected: &'a [u8],
    pos: usize,
}

impl postcard::ser_flavors::Flavor for Compare<'_> {
    type Output = bool;

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        let end = self.pos.saturating_add(data.len());
        if self.expected.get(self.pos..end) != Some(data) {
            return Err(postcard::Error::SerializeBufferFull);
        }
        self.pos = end;
        Ok(())
    }

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.try_extend(&[data])
    }

    fn finalize(self) -> postcard::Result<bool> {
        Ok(self.pos == self.expected.len())
    }
}

fn map_postcard(e: postcard::Error) -> DecodeError {
    match e {
        postcard::Error::DeserializeUnexpectedEnd => DecodeError::Truncated,
        other => DecodeError::Malformed(other.to_string()),
    }
}

/// Serde helper for byte strings with a maximum length: `Vec<u8>` encoded as
/// one length-prefixed byte string (not a sequence of integers).
pub mod bytes {
    use serde::Serializer;
    use serde::de::{self, Deserializer, Visitor};
    use std::fmt;

    /// Serializes a byte slice as a byte string.
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    /// Deserializes a byte string of at most [`crate::limits::MAX_BLOB_BYTES`].
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                if v.len() > crate::limits::MAX_BLOB_BYTES {
                    return Err(E::custom("byte string too long"));
                }
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                self.visit_bytes(&v)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
                let mut out = Vec::new();
                while let Some(b) = seq.next_element::<u8>()? {
                    if out.len() >= crate::limits::MAX_BLOB_BYTES {
                        return Err(de::Error::custom("byte string too long"));
                    }
                    out.push(b);
                }
                Ok(out)
            }
        }
        d.deserialize_bytes(V)
    }
}

/// Serde helper for 64-byte signatures as one fixed byte string.
pub mod sig64 {
    use serde::Serializer;
    use serde::de::{self, Deserializer, Visitor};
    use std::fmt;

    /// Serializes a signature.
    pub fn serialize<S: Serializer>(v: &[u8; 64], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    /// Deserializes exactly 64 bytes.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 64], D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = [u8; 64];
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("64 bytes")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<[u8; 64], E> {
                <[u8; 64]>::try_from(v).map_err(|_| E::invalid_length(v.len(), &self))
            }
        }
        d.deserialize_bytes(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_trailing_and_overlong() {
        let bytes = encode(&300u32).unwrap();
        assert_eq!(decode::<u32>(&bytes, 16), Ok(300));
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(
            decode::<u32>(&trailing, 16),
            Err(DecodeError::TrailingBytes(1))
        );
        // 0 written as a two-byte varint decodes but is not canonical.
        assert_eq!(
            decode::<u32>(&[0x80, 0x00], 16),
            Err(DecodeError::NonCanonical)
        );
        assert_eq!(decode::<u32>(&[0x80], 16), Err(DecodeError::Truncated));
        assert!(matches!(
            decode::<u32>(&[0; 32], 16),
            Err(DecodeError::TooLarge { .. })
        ));
    }
}
