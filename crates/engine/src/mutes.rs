//! The engine's handle for signals (see `signals`) and mutes.

use safemeet_proto::{RoomId, codec};
use safemeet_store::{Keyspace, Store};

use crate::core::Core;
use crate::events::{Command, Response};
use crate::records::name;
use crate::{Conversation, Error};

impl crate::Handle {
    /// Changes which signals this user shares (`None`: unchanged).
    pub async fn set_signals(
        &self,
        presence: Option<bool>,
        typing: Option<bool>,
        read_receipts: Option<bool>,
    ) -> Result<crate::SignalSettings, Error> {
        match self
            .core(Command::SetSignals {
                presence,
                typing,
                read_receipts,
            })
            .await?
        {
            Response::Signals(s) => Ok(s),
            _ => Err(Error::InvalidInput("unexpected answer".into())),
        }
    }

    /// Which signals this user shares.
    pub async fn signals(&self) -> Result<crate::SignalSettings, Error> {
        match self.core(Command::Signals).await? {
            Response::Signals(s) => Ok(s),
            _ => Err(Error::InvalidInput("unexpected answer".into())),
        }
    }

    /// Signals sent and received since start, by kind.
    pub async fn signal_counts(&self) -> Result<crate::SignalCounts, Error> {
        match self.core(Command::SignalCounts).await? {
            Response::SignalCounts(c) => Ok(c),
            _ => Err(Error::InvalidInput("unexpected answer".into())),
        }
    }

    /// This user types in a conversation, or stopped.
    pub async fn typing(&self, conversation: Conversation, typing: bool) -> Result<(), Error> {
        self.core(Command::Typing(conversation, typing)).await?;
        Ok(())
    }

    /// This user read a conversation up to its latest message.
    pub async fn mark_read(&self, conversation: Conversation) -> Result<(), Error> {
        self.core(Command::MarkRead(conversation)).await?;
        Ok(())
    }

    /// Who types in a conversation now.
    pub async fn typers(
        &self,
        conversation: Conversation,
    ) -> Result<Vec<safemeet_proto::UserId>, Error> {
        match self.core(Command::Typers(conversation)).await? {
            Response::Users(u) => Ok(u),
            _ => Err(Error::InvalidInput("unexpected answer".into())),
        }
    }

    /// Contacts' presence.
    pub async fn presence(
        &self,
    ) -> Result<Vec<(safemeet_proto::UserId, crate::PresenceView)>, Error> {
        match self.core(Command::Presence).await? {
            Response::Presence(p) => Ok(p),
            _ => Err(Error::InvalidInput("unexpected answer".into())),
        }
    }

    /// Each member's read marker in a conversation (Lamport times).
    pub async fn read_markers(
        &self,
        conversation: Conversation,
    ) -> Result<Vec<(safemeet_proto::UserId, u64)>, Error> {
        match self.core(Command::ReadMarkers(conversation)).await? {
            Response::ReadMarkers(m) => Ok(m),
            _ => Err(Error::InvalidInput("unexpected answer".into())),
        }
    }
}

/// Most conversations muted at once.
pub const MAX_MUTED: usize = 4096;

impl<S: Store + Clone> Core<S> {
    /// The muted conversations (their room ids).
    pub(crate) fn muted(&mut self) -> Result<Vec<RoomId>, Error> {
        Ok(match self.store.get(Keyspace::Rooms, name::MUTED)? {
            Some(bytes) => codec::decode(&bytes, 16 + MAX_MUTED * 17)?,
            None => Vec::new(),
        })
    }

    /// Mutes or unmutes a conversation on this device (its notifications
    /// only: messages still arrive); the muted conversations.
    pub(crate) fn set_muted(
        &mut self,
        conversation: Conversation,
        muted: bool,
    ) -> Result<Vec<RoomId>, Error> {
        let room = self.conversation_room(conversation)?.room_id;
        let mut all = self.muted()?;
        all.retain(|r| *r != room);
        if muted {
            if all.len() >= MAX_MUTED {
                return Err(Error::InvalidInput(format!(
                    "at most {MAX_MUTED} conversations can be muted"
                )));
            }
            all.push(room);
        }
        self.store
            .put(Keyspace::Rooms, name::MUTED, &codec::encode(&all)?)?;
        self.machine.flush()?;
        Ok(all)
    }
}

impl crate::Handle {
    /// Mutes or unmutes a conversation; the muted ones.
    pub async fn set_muted(
        &self,
        conversation: Conversation,
        muted: bool,
    ) -> Result<Vec<RoomId>, Error> {
        match self.core(Command::SetMuted(conversation, muted)).await? {
            Response::RoomIds(r) => Ok(r),
            _ => Err(Error::InvalidInput("unexpected answer".into())),
        }
    }

    /// The muted conversations' room ids.
    pub async fn muted(&self) -> Result<Vec<RoomId>, Error> {
        match self.core(Command::Muted).await? {
            Response::RoomIds(r) => Ok(r),
            _ => Err(Error::InvalidInput("unexpected answer".into())),
        }
    }
}

impl<S: Store + Clone> Core<S> {
    /// Serves a command about signals or mutes.
    pub(crate) fn signal_command(&mut self, command: Command) -> Result<Response, Error> {
        Ok(match command {
            Command::SetSignals {
                presence,
                typing,
                read_receipts,
            } => Response::Signals(self.set_signals(presence, typing, read_receipts)?),
            Command::Signals => Response::Signals(self.signal_settings()?),
            Command::SignalCounts => Response::SignalCounts(self.signals.counts),
            Command::Typing(conversation, typing) => {
                self.typing(conversation, typing)?;
                Response::Done
            }
            Command::MarkRead(conversation) => {
                self.mark_read(conversation)?;
                Response::Done
            }
            Command::Typers(conversation) => Response::Users(self.typers(conversation)?),
            Command::Presence => Response::Presence(self.presence_list()?),
            Command::SetMuted(conversation, muted) => {
                Response::RoomIds(self.set_muted(conversation, muted)?)
            }
            Command::Muted => Response::RoomIds(self.muted()?),
            Command::ReadMarkers(conversation) => {
                Response::ReadMarkers(self.conversation_markers(conversation)?)
            }
            _ => return Err(Error::InvalidInput("not a signal command".into())),
        })
    }
}
