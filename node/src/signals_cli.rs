//! `settings set presence|typing|read-receipts on|off`, `presence` and
//! `typing`.

use safemeet_api::Request;
use safemeet_api::signals::{Presence, Signaled, SignalsView};

use crate::failure::Failure;
use crate::messenger::{Api, print_json};

/// A signal command.
#[derive(Debug)]
pub(crate) enum SignalAction {
    /// Turn signals on or off (`None`: unchanged).
    Set {
        presence: Option<bool>,
        typing: Option<bool>,
        read_receipts: Option<bool>,
    },
    /// List contacts' presence.
    Presence,
    /// Typing in a conversation, or stopped.
    Typing { target: String, typing: bool },
    /// Who types in a conversation.
    Typers { target: String },
    /// Mute or unmute a conversation.
    Mute { target: String, muted: bool },
}

impl SignalAction {
    /// The action for `settings set` with a signal setting.
    pub(crate) fn set(setting: crate::rights::Setting) -> crate::messenger::Action {
        use crate::rights::Setting;
        let (presence, typing, read_receipts) = match setting {
            Setting::Presence { value } => (Some(value), None, None),
            Setting::Typing { value } => (None, Some(value), None),
            Setting::ReadReceipts { value } => (None, None, Some(value)),
            Setting::Retention { .. } => (None, None, None),
        };
        crate::messenger::Action::Signals(SignalAction::Set {
            presence,
            typing,
            read_receipts,
        })
    }
}

/// `on` or `off`.
pub(crate) fn parse_on_off(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("{s:?}: expected `on` or `off`")),
    }
}

fn word(on: bool) -> &'static str {
    if on { "on" } else { "off" }
}

/// Prints the signal settings, one a line.
pub(crate) fn print_signals(s: &SignalsView) {
    println!("presence: {}", word(s.presence));
    println!("typing: {}", word(s.typing));
    println!("read-receipts: {}", word(s.read_receipts));
}

pub(crate) async fn perform(
    api: &mut Api,
    json: bool,
    action: SignalAction,
) -> Result<(), Failure> {
    match action {
        SignalAction::Set {
            presence,
            typing,
            read_receipts,
        } => {
            let view: SignalsView = api
                .call(Request::SignalsSet {
                    presence,
                    typing,
                    read_receipts,
                })
                .await?;
            if json {
                print_json(&view)?;
            } else {
                print_signals(&view);
            }
        }
        SignalAction::Presence => {
            let all: Vec<Presence> = api.call(Request::Presence {}).await?;
            if json {
                print_json(&all)?;
            } else {
                let names = api.names().await?;
                for p in &all {
                    println!(
                        "{}\t{}\tlast seen {}",
                        names.of(&p.user_id),
                        p.state,
                        crate::messenger::local_time(p.last_seen)
                    );
                }
            }
        }
        SignalAction::Mute { target, muted } => {
            let all: Vec<safemeet_proto::RoomId> = api
                .call(Request::Mute {
                    target: target.clone(),
                    muted,
                })
                .await?;
            if json {
                print_json(
                    &serde_json::json!({ "target": target, "muted": muted, "muted_rooms": all }),
                )?;
            } else if muted {
                println!("muted {target}");
            } else {
                println!("unmuted {target}");
            }
        }
        SignalAction::Typers { target } => {
            let who: Vec<safemeet_proto::UserId> = api.call(Request::TypingList { target }).await?;
            if json {
                print_json(&who)?;
            } else {
                let names = api.names().await?;
                for u in &who {
                    println!("{} is typing", names.of(u));
                }
            }
        }
        SignalAction::Typing { target, typing } => {
            let done: Signaled = api.call(Request::Typing { target, typing }).await?;
            if json {
                print_json(&done)?;
            }
        }
    }
    Ok(())
}
