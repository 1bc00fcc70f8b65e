//! The answer to a direct delivery (`/safemeet/deliver/1`).
//!
//! A device answers every well-formed delivery with one of three short
//! byte strings. They are kept as they were first sent, so older nodes
//! understand newer ones.

/// A device's answer to a direct delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Answer {
    /// Stored (durably): the sender is done for this device.
    Ack,
    /// Never accepted (malformed, forged, from a stranger): do not retry.
    Refused,
    /// Cannot be placed yet (its room key, room or sender is not known
    /// here yet, or this device's store failed): retry later.
    Later,
}

/// An answer's bytes are none of the three.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a delivery answer ({len} bytes)")]
pub struct UnknownAnswer {
    /// How long the bytes were.
    pub len: usize,
}

impl Answer {
    /// The wire bytes.
    pub fn as_bytes(self) -> &'static [u8] {
        match self {
            Self::Ack => b"ok",
            Self::Refused => b"refused",
            Self::Later => b"later",
        }
    }

    /// Parses the wire bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, UnknownAnswer> {
        match bytes {
            b"ok" => Ok(Self::Ack),
            b"refused" => Ok(Self::Refused),
            b"later" => Ok(Self::Later),
            _ => Err(UnknownAnswer { len: bytes.len() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_keep_their_wire_bytes_and_nothing_else_parses() {
        for (a, b) in [
            (Answer::Ack, &b"ok"[..]),
            (Answer::Refused, b"refused"),
            (Answer::Later, b"later"),
        ] {
            assert_eq!(a.as_bytes(), b);
            assert_eq!(Answer::from_bytes(b), Ok(a));
        }
        for junk in [&b""[..], b"OK", b"ok ", b"later\0", &[0xff; 300]] {
            assert!(Answer::from_bytes(junk).is_err());
        }
    }
}
