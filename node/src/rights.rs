//! Changing what was said and how long it is kept: `redact`, `edit`,
//! `room set --expire`, `room settings`, `settings set retention` and
//! `settings show`.

use std::time::Duration;

use clap::Subcommand;
use safemeet_api::{Changed, Request, RoomSettingsView, SettingsView};
use safemeet_proto::EventId;

use crate::failure::Failure;
use crate::messenger::{Api, print_json};

/// What to change.
#[derive(Debug)]
pub(crate) enum RightsAction {
    Redact(EventId),
    Edit(EventId, String),
    /// A conversation's expiry; `None` asks for it, `Some(None)` clears it.
    Expiry {
        target: String,
        set: Option<Option<Duration>>,
    },
    /// This device's retention; `None` asks for it.
    Retention(Option<Option<Duration>>),
    /// `export FILE`.
    Archive(Request),
}

#[derive(Debug, Subcommand)]
pub(crate) enum SettingsCommand {
    /// Set one of this device's own limits.
    Set {
        #[command(subcommand)]
        setting: Setting,
    },
    /// Show this device's own limits.
    Show,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Setting {
    /// Delete every conversation's messages on this device this long
    /// after they were sent (for example 30d, 12h, 90s; `off` keeps them).
    /// Other members keep their copies.
    Retention {
        /// A duration (s, m, h, d, w) or `off`.
        #[arg(value_parser = parse_limit)]
        duration: Limit,
    },
    /// Share your presence (online, away, offline, last seen rounded to
    /// 5 minutes) with your contacts, and see theirs. Off by default.
    Presence {
        /// `on` or `off`.
        #[arg(value_parser = crate::signals_cli::parse_on_off, action = clap::ArgAction::Set)]
        value: bool,
    },
    /// Show when you type to the conversation's members, and see when
    /// they do. Off by default.
    Typing {
        /// `on` or `off`.
        #[arg(value_parser = crate::signals_cli::parse_on_off, action = clap::ArgAction::Set)]
        value: bool,
    },
    /// Tell members when you read their messages, and see who read yours.
    /// Off by default.
    ReadReceipts {
        /// `on` or `off`.
        #[arg(value_parser = crate::signals_cli::parse_on_off, action = clap::ArgAction::Set)]
        value: bool,
    },
}

/// A duration, or `off`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limit(pub(crate) Option<Duration>);

/// Parses `90s`, `5m`, `12h`, `30d`, `2w` or `off`: a whole number and a
/// unit, between 1 second and 10 years.
pub(crate) fn parse_limit(s: &str) -> Result<Limit, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(Limit(None));
    }
    let bad = || format!("{s:?} is not a duration like 90s, 5m, 12h, 30d, 2w, or off");
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = s.split_at(split);
    let n: u64 = number.parse().map_err(|_| bad())?;
    let unit_secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(bad()),
    };
    let ms = n
        .checked_mul(unit_secs)
        .and_then(|secs| secs.checked_mul(1_000))
        .ok_or_else(bad)?;
    if !(safemeet_proto::event::MIN_EXPIRY_MS..=safemeet_proto::event::MAX_EXPIRY_MS).contains(&ms)
    {
        return Err(format!("{s:?}: a limit is between 1 second and 10 years"));
    }
    Ok(Limit(Some(Duration::from_millis(ms))))
}

/// How a limit reads.
fn shown_limit(ms: Option<u64>) -> String {
    let Some(ms) = ms else {
        return "off (messages are kept)".into();
    };
    let secs = ms / 1_000;
    for (unit, size) in [("w", 7 * 86_400), ("d", 86_400), ("h", 3_600), ("m", 60)] {
        if secs >= size && secs % size == 0 {
            return format!("{}{unit}", secs / size);
        }
    }
    format!("{secs}s")
}

/// Reads an image for `profile set --avatar`, removes its metadata here
/// (so it never leaves this process with it) and returns it in base64.
pub(crate) fn avatar_file(path: &std::path::Path) -> Result<String, Failure> {
    use safemeet_proto::identity::MAX_AVATAR_BYTES;
    /// The largest file read: a photo far larger cannot fit once stripped.
    const MAX_READ: u64 = 16 * 1024 * 1024;
    let shown = path.display();
    let size = std::fs::metadata(path)
        .map_err(|e| Failure::Usage(format!("{shown}: {e}")))?
        .len();
    if size > MAX_READ {
        return Err(Failure::Usage(format!(
            "{shown} is {size} bytes: an avatar fits in {} KiB",
            MAX_AVATAR_BYTES / 1024
        )));
    }
    let raw = std::fs::read(path).map_err(|e| Failure::Usage(format!("{shown}: {e}")))?;
    let (_, stripped) = safemeet_proto::image::strip_metadata(&raw)
        .map_err(|e| Failure::Usage(format!("{shown}: {e}")))?;
    if stripped.len() > MAX_AVATAR_BYTES {
        return Err(Failure::Usage(format!(
            "{shown} is {} bytes without its metadata; an avatar fits in {} KiB: make it smaller",
            stripped.len(),
            MAX_AVATAR_BYTES / 1024
        )));
    }
    Ok(data_encoding::BASE64.encode(&stripped))
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

pub(crate) async fn perform(
    api: &mut Api,
    json: bool,
    action: RightsAction,
) -> Result<(), Failure> {
    match action {
        RightsAction::Redact(event_id) => {
            let done: Changed = api.call(Request::MessageRedact { event_id }).await?;
            if json {
                print_json(&done)?;
            } else {
                println!("deleted {event_id} for everyone");
            }
        }
        RightsAction::Edit(event_id, text) => {
            let done: Changed = api.call(Request::MessageEdit { event_id, text }).await?;
            if json {
                print_json(&done)?;
            } else {
                println!("edited {event_id}");
            }
        }
        RightsAction::Expiry { target, set } => {
            let request = match set {
                Some(expire) => Request::RoomSet {
                    target,
                    expire_after_ms: expire.map(ms),
                },
                None => Request::RoomSettings { target },
            };
            let changing = matches!(request, Request::RoomSet { .. });
            let view: RoomSettingsView = api.call(request).await?;
            if json {
                print_json(&view)?;
            } else if changing && view.expire_after_ms.is_some() {
                println!(
                    "messages expire {} after they are sent, on every member's device \
                     (the ones already older go now)",
                    shown_limit(view.expire_after_ms)
                );
            } else {
                println!("expiry: {}", shown_limit(view.expire_after_ms));
            }
        }
        RightsAction::Archive(request) => {
            let done: safemeet_api::ArchiveExported = api.call(request).await?;
            if json {
                print_json(&done)?;
            } else {
                println!(
                    "wrote {} ({} bytes): {} contacts, {} conversations, {} messages",
                    done.file, done.bytes, done.contacts, done.rooms, done.messages
                );
                println!(
                    "it holds your master key: keep it safe. `safemeet import {}` on another machine \
                     makes it device {} (listed from now on); `--retire-old` revokes this one",
                    done.file, done.device_id
                );
            }
        }
        RightsAction::Retention(set) => {
            let request = match set {
                Some(r) => Request::SettingsSet {
                    retention_ms: r.map(ms),
                },
                None => Request::SettingsShow {},
            };
            let show = set.is_none();
            let view: SettingsView = api.call(request).await?;
            // What signals left and came since start, to check "off"
            // means nothing is sent.
            let counts: Option<safemeet_api::signals::Counts> = if show {
                Some(api.call(Request::SignalsCounts {}).await?)
            } else {
                None
            };
            if json {
                #[derive(serde::Serialize)]
                struct Shown<'a> {
                    #[serde(flatten)]
                    view: &'a SettingsView,
                    #[serde(skip_serializing_if = "Option::is_none")]
                    signal_counts: Option<safemeet_api::signals::Counts>,
                }
                print_json(&Shown {
                    view: &view,
                    signal_counts: counts,
                })?;
            } else {
                println!("retention: {}", shown_limit(view.retention_ms));
                if let Some(s) = view.signals {
                    crate::signals_cli::print_signals(&s);
                }
                if let Some(c) = counts {
                    println!(
                        "signals sent since start: presence {}, typing {}, read {}",
                        c.presence_sent, c.typing_sent, c.read_sent
                    );
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is a failure

    use super::*;

    #[test]
    fn limits_parse_and_read_back() {
        for (text, ms) in [
            ("1s", 1_000),
            ("90s", 90_000),
            ("5m", 300_000),
            ("12h", 43_200_000),
            ("30d", 2_592_000_000),
            ("2w", 1_209_600_000),
        ] {
            assert_eq!(
                parse_limit(text).unwrap().0,
                Some(Duration::from_millis(ms))
            );
        }
        assert!(parse_limit("off").unwrap().0.is_none());
        for bad in [
            "",
            "s",
            "10",
            "0s",
            "1.5h",
            "-1d",
            "3y",
            "9999999999999999999d",
            "4000w",
        ] {
            assert!(parse_limit(bad).is_err(), "{bad}");
        }
        assert_eq!(shown_limit(Some(90_000)), "90s");
        assert_eq!(shown_limit(Some(2_592_000_000)), "30d");
        assert_eq!(shown_limit(Some(1_209_600_000)), "2w");
    }
}
