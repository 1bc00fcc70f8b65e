//! The engine's errors, and their kinds.
//!
//! Callers match on [`Error::kind`] (as in arti): the variants say what
//! failed and keep their source, the kind says what to do about it.

use std::sync::Arc;

use safemeet_proto::{RoomId, UserId};

/// What went wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The crypto layer refused or failed.
    #[error(transparent)]
    Crypto(#[from] safemeet_crypto::Error),
    /// The network layer failed (boxed: its errors are large, and every
    /// result of the engine would carry their size).
    #[error(transparent)]
    Net(Box<safemeet_net::Error>),
    /// Encoding failed.
    #[error(transparent)]
    Encode(#[from] safemeet_proto::EncodeError),
    /// Decoding stored or received bytes failed.
    #[error(transparent)]
    Decode(#[from] safemeet_proto::DecodeError),
    /// The invite cannot be used.
    #[error("invalid invite: {0}")]
    BadInvite(#[from] safemeet_proto::invite::InviteError),
    /// No such contact.
    #[error("no contact {0}")]
    UnknownContact(UserId),
    /// No such group room (or this user left it).
    #[error("no room {0}")]
    UnknownRoom(RoomId),
    /// No such member in a group room.
    #[error("{user} is not a member of room {room}")]
    UnknownMember {
        /// The room.
        room: RoomId,
        /// Who is not in it.
        user: UserId,
    },
    /// The input is not acceptable.
    #[error("{0}")]
    InvalidInput(String),
    /// The settings cannot be run with.
    #[error("invalid engine setting: {0}")]
    InvalidConfig(String),
    /// A group commit failed; every send in the group failed with it.
    #[error("the commit failed")]
    Commit(#[source] Arc<safemeet_crypto::Error>),
    /// The engine did not answer in time.
    #[error("the engine did not answer in time")]
    Timeout,
    /// The engine has stopped.
    #[error("the engine has stopped")]
    Stopped,
    /// Linking a device failed; nothing was changed on this device.
    #[error("device link failed: {0}")]
    Link(String),
    /// A file could not be sent or saved.
    #[error(transparent)]
    File(#[from] FileError),
    /// A call could not be placed, answered or ended.
    #[error(transparent)]
    Call(#[from] CallError),
}

/// Why a call could not be placed, answered or ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// There is no call in that state.
    #[error("{0}")]
    NoCall(&'static str),
    /// Another call is on.
    #[error("another call is on: hang up first")]
    Busy,
    /// None of the contact's devices could be reached.
    #[error("none of their devices can be reached now (a call is never left on a relay)")]
    Unreachable,
    /// The audio file or device could not be used.
    #[error("audio: {0}")]
    Audio(String),
}

/// Why a file could not be sent or saved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// The message carries no file (or is gone).
    #[error("that message has no file")]
    NotAFile,
    /// Not all of it has arrived yet.
    #[error("the file has not arrived whole yet ({done} of {chunks} chunks)")]
    NotYet {
        /// Chunks held.
        done: u64,
        /// Of how many.
        chunks: u64,
    },
    /// It was refused: a damaged chunk, or a file other than described.
    #[error("the file was refused: {0}")]
    Refused(String),
    /// Past this node's size limit.
    #[error("a file of {size} bytes is past the limit of {limit} bytes")]
    TooLarge {
        /// The file's size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// This node keeps no files (no blob store was configured).
    #[error("this node does not keep files")]
    NoBlobs,
    /// Reading the file or writing it out failed.
    #[error("{0}")]
    Io(String),
}

/// What kind of failure an [`Error`] is: what a caller can do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The request was malformed or not allowed: fix it.
    InvalidInput,
    /// A contact or room named by the request does not exist.
    NotFound,
    /// Something received was invalid (bad signature, unknown sender,
    /// replay): it is refused, and sending it again will not help.
    Refused,
    /// The network failed: trying again later may help.
    Network,
    /// This device's own trouble (its store, its crypto state): the same
    /// input may well succeed later, so a sender should try again.
    Local,
    /// The engine took too long.
    Timeout,
    /// The engine has stopped.
    Stopped,
}

impl From<safemeet_net::Error> for Error {
    fn from(e: safemeet_net::Error) -> Self {
        Self::Net(Box::new(e))
    }
}

impl Error {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Crypto(c) if crypto_is_local(c) => ErrorKind::Local,
            Self::Crypto(_) => ErrorKind::Refused,
            Self::Net(_) => ErrorKind::Network,
            Self::Encode(_) | Self::Decode(_) | Self::Commit(_) => ErrorKind::Local,
            Self::BadInvite(_) | Self::InvalidInput(_) | Self::InvalidConfig(_) => {
                ErrorKind::InvalidInput
            }
            Self::UnknownContact(_) | Self::UnknownRoom(_) | Self::UnknownMember { .. } => {
                ErrorKind::NotFound
            }
            Self::Timeout => ErrorKind::Timeout,
            Self::Stopped => ErrorKind::Stopped,
            Self::Link(_) => ErrorKind::Refused,
            Self::File(FileError::NotAFile) => ErrorKind::NotFound,
            Self::File(FileError::NotYet { .. }) => ErrorKind::Network,
            Self::File(FileError::Refused(_)) => ErrorKind::Refused,
            Self::File(FileError::TooLarge { .. } | FileError::NoBlobs) => ErrorKind::InvalidInput,
            Self::File(FileError::Io(_)) => ErrorKind::Local,
            Self::Call(CallError::NoCall(_)) => ErrorKind::NotFound,
            Self::Call(CallError::Busy) => ErrorKind::Refused,
            Self::Call(CallError::Unreachable) => ErrorKind::Network,
            Self::Call(CallError::Audio(_)) => ErrorKind::InvalidInput,
        }
    }
}

/// Whether a crypto error is this device's own trouble rather than
/// something wrong with what was received.
fn crypto_is_local(e: &safemeet_crypto::Error) -> bool {
    use safemeet_crypto::Error as C;
    matches!(
        e,
        C::Poisoned | C::Closed | C::Store(_) | C::SealedValue { .. }
    )
}
