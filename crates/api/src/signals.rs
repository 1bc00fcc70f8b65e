//! Presence, typing and read receipts in the API: `signals.set`,
//! `presence`, `typing`, `typing.list`, `read`, `signals.counts`, and
//! "read by" on messages.

use safemeet_engine::{Conversation, Handle as EngineHandle, SignalSettings};
use safemeet_proto::UserId;
use safemeet_proto::signal::PresenceState;
use serde::{Deserialize, Serialize};

use crate::resolve::{self, Target};
use crate::{Error, Message};

/// `signals.set`, and in `settings.show`: which signals this user shares
/// (and so sees).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignalsView {
    /// Presence.
    pub presence: bool,
    /// Typing.
    pub typing: bool,
    /// Read receipts.
    pub read_receipts: bool,
}

impl From<SignalSettings> for SignalsView {
    fn from(s: SignalSettings) -> Self {
        SignalsView {
            presence: s.presence,
            typing: s.typing,
            read_receipts: s.read_receipts,
        }
    }
}

/// A contact's presence (`presence`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    /// The contact.
    pub user_id: UserId,
    /// `online`, `away` or `offline`.
    pub state: String,
    /// Last seen, ms since the Unix epoch, rounded down to 5 minutes.
    pub last_seen: u64,
}

/// `typing`, `read`: the signal was taken (it goes out if that setting is
/// on).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signaled {
    /// The conversation, as given.
    pub target: String,
}

/// `signals.counts`: signals sent and received since the daemon started.
pub use safemeet_engine::SignalCounts as Counts;

/// The conversation a target names.
pub(crate) async fn conversation(
    engine: &EngineHandle,
    target: &str,
) -> Result<Conversation, Error> {
    Ok(match resolve::target(engine, target).await? {
        Target::User(user) => Conversation::Dm(user),
        Target::Room(room) => Conversation::Room(room),
    })
}

/// Contacts' presence.
pub(crate) async fn presence(engine: &EngineHandle) -> Result<Vec<Presence>, Error> {
    let mut out: Vec<Presence> = engine
        .presence()
        .await?
        .into_iter()
        .map(|(user_id, p)| Presence {
            user_id,
            state: match p.state {
                PresenceState::Online => "online",
                PresenceState::Away => "away",
                PresenceState::Offline => "offline",
            }
            .into(),
            last_seen: p.last_seen.as_millis(),
        })
        .collect();
    out.sort_by_key(|p| p.user_id);
    Ok(out)
}

/// Fills each message's `read_by` from the conversation's read markers:
/// every member but its sender whose marker is at or past it.
pub(crate) async fn add_read_by(
    engine: &EngineHandle,
    conversation: Conversation,
    messages: &mut [Message],
) -> Result<(), Error> {
    let markers = engine.read_markers(conversation).await?;
    if markers.is_empty() {
        return Ok(());
    }
    for m in messages {
        m.read_by = markers
            .iter()
            .filter(|(user, lamport)| *user != m.sender && *lamport >= m.cursor.lamport)
            .map(|(user, _)| *user)
            .collect();
    }
    Ok(())
}
