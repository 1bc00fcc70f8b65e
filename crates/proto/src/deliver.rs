//! The answer to a direct delivery (`/safemeet/deliver/1`).
//!
//! A device that receives a frame over direct delivery answers with a few
//! ASCII bytes saying what it did with it. The sender uses the answer to
//! decide whether the frame is done (stored, or never to be stored) or must
//! be sent again. The bytes are fixed by the deployed protocol: `ok`,
//! `refused` and `later`, with no length prefix or version of their own
//! (the transport frames them). Anything else is a [`DeliverAnswerError`];
//! a sender treats it like no answer at all.

use std::fmt;

/// What a device did with a frame it received directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliverAnswer {
    /// Stored: the sender is done with this device (`ok`).
    Ack,
    /// Will never be stored (not for this device, undecryptable, or
    /// invalid): the sender must not retry (`refused`).
    Refused,
    /// Cannot be placed yet (a room message that arrived before the room's
    /// state): the sender keeps it and retries later (`later`).
    Later,
}

/// Bytes that are not a [`DeliverAnswer`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an answer of {len} bytes is not a known delivery answer")]
pub struct DeliverAnswerError {
    /// How many bytes the answer had (its content is the peer's and is not
    /// kept).
    pub len: usize,
}

impl DeliverAnswer {
    /// Wire bytes of [`DeliverAnswer::Ack`].
    const ACK: &'static [u8] = b"ok";
    /// Wire bytes of [`DeliverAnswer::Refused`].
    const REFUSED: &'static [u8] = b"refused";
    /// Wire bytes of [`DeliverAnswer::Later`].
    const LATER: &'static [u8] = b"later";

    /// The answer's wire bytes.
    pub const fn to_bytes(self) -> &'static [u8] {
        match self {
            Self::Ack => Self::ACK,
            Self::Refused => Self::REFUSED,
            Self::Later => Self::LATER,
        }
    }

    /// Parses an answer. Only the exact wire bytes are accepted (no case
    /// folding, no trailing bytes).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DeliverAnswerError> {
        match bytes {
            Self::ACK => Ok(Self::Ack),
            Self::REFUSED => Ok(Self::Refused),
            Self::LATER => Ok(Self::Later),
            _ => Err(DeliverAnswerError { len: bytes.len() }),
        }
    }
}

impl fmt::Display for DeliverAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ack => "stored",
            Self::Refused => "refused",
            Self::Later => "retry later",
        })
    }
}

impl TryFrom<&[u8]> for DeliverAnswer {
    type Error = DeliverAnswerError;

    fn try_from(bytes: &[u8]) -> Result<Self, Self::Error> {
        Self::from_bytes(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_answer_round_trips() {
        for answer in [
            DeliverAnswer::Ack,
            DeliverAnswer::Refused,
            DeliverAnswer::Later,
        ] {
            assert_eq!(DeliverAnswer::from_bytes(answer.to_bytes()), Ok(answer));
        }
    }

    #[test]
    fn anything_else_is_an_error() {
        for bytes in [
            &b""[..],
            b"OK",
            b"ok ",
            b"ok\0",
            b"o",
            b"refuse",
            b"laterr",
            b"ok:512",
        ] {
            assert_eq!(
                DeliverAnswer::from_bytes(bytes),
                Err(DeliverAnswerError { len: bytes.len() }),
                "{bytes:?}"
            );
        }
    }
}
