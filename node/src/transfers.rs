//! `send --file`, `download` and `files`: files, with progress bars on a
//! terminal (indicatif draws nothing when standard error is not one).

use std::path::PathBuf;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use safemeet_api::files::{Downloaded, FileTransfer};
use safemeet_api::{Request, Sent};
use safemeet_proto::EventId;
use safemeet_proto::clock::{Clock, SystemClock};

use crate::failure::Failure;
use crate::messenger::{Api, print_json};

/// A message's text as a line shows it: with its file, if it has one.
pub(crate) fn message_text(m: &safemeet_api::Message) -> String {
    let text = crate::messenger::shown(&m.text);
    let Some(file) = &m.file else {
        return text;
    };
    let state = match &file.transfer {
        Some(t) if t.direction == "receive" && t.state != "complete" => {
            format!(", {} {}/{} chunks", t.state, t.done, t.chunks)
        }
        _ => String::new(),
    };
    let caption = if text.is_empty() {
        String::new()
    } else {
        format!(" {text}")
    };
    format!(
        "[file {}, {}{state}]{caption}",
        crate::messenger::shown(&file.name),
        size_text(file.size)
    )
}

/// A size for people: bytes, KiB, MiB or GiB.
fn size_text(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["bytes", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} bytes")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// How often progress is asked for.
const POLL: Duration = Duration::from_millis(100);
/// A transfer that moves no chunk for this long is left to the daemon.
const STALLED: Duration = Duration::from_secs(15);

/// A file command.
#[derive(Debug)]
pub(crate) enum FileAction {
    /// Send the file at `path` with `caption`.
    Send {
        target: String,
        path: PathBuf,
        caption: String,
    },
    /// Save the file of a message.
    Download {
        event_id: EventId,
        path: Option<PathBuf>,
    },
    /// List the transfers.
    List,
}

fn absolute(path: &std::path::Path) -> Result<PathBuf, Failure> {
    std::path::absolute(path).map_err(|e| Failure::Usage(format!("{}: {e}", path.display())))
}

fn bar(size: u64, what: String) -> ProgressBar {
    let bar = ProgressBar::new(size);
    if let Ok(style) =
        ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what);
    bar
}

/// The transfer of `event`, if the daemon lists it.
async fn transfer(api: &mut Api, event: EventId) -> Result<Option<FileTransfer>, Failure> {
    let all: Vec<FileTransfer> = api.call(Request::Files {}).await?;
    Ok(all.into_iter().find(|t| t.event_id == event))
}

fn bytes_of(t: &FileTransfer, chunks: u64) -> u64 {
    (chunks.saturating_mul(64 * 1024)).min(t.size)
}

pub(crate) async fn perform(api: &mut Api, json: bool, action: FileAction) -> Result<(), Failure> {
    match action {
        FileAction::Send {
            target,
            path,
            caption,
        } => {
            let path = absolute(&path)?;
            let sent: Sent = api
                .call(Request::Send {
                    target,
                    text: caption,
                    file: Some(path.display().to_string()),
                })
                .await?;
            if json {
                return print_json(&sent);
            }
            println!("sent {}", sent.event_id);
            if matches!(api, Api::InProcess { .. }) {
                eprintln!(
                    "no daemon runs: the recipients' devices fetch the file once `safemeet daemon` runs"
                );
                return Ok(());
            }
            watch_sending(api, sent.event_id).await
        }
        FileAction::Download { event_id, path } => {
            let path = absolute(&path.unwrap_or_else(|| PathBuf::from(".")))?;
            if !json {
                wait_for_file(api, event_id).await?;
            }
            let done: Downloaded = api
                .call(Request::Download {
                    event_id,
                    path: path.display().to_string(),
                })
                .await?;
            if json {
                print_json(&done)
            } else {
                println!("saved {} ({} bytes)", done.path, done.size);
                Ok(())
            }
        }
        FileAction::List => {
            let all: Vec<FileTransfer> = api.call(Request::Files {}).await?;
            if json {
                return print_json(&all);
            }
            for t in &all {
                let count = match t.direction.as_str() {
                    "send" => format!("served {} chunks", t.served),
                    _ => format!("{}/{} chunks", t.done, t.chunks),
                };
                println!(
                    "{}\t{}\t{}\t{} bytes\t{}{}",
                    t.event_id,
                    t.direction,
                    t.state,
                    t.size,
                    count,
                    t.reason
                        .as_deref()
                        .map(|r| format!("\t{r}"))
                        .unwrap_or_default()
                );
            }
            Ok(())
        }
    }
}

/// Shows the file going out until one device holds all of it, or until
/// nothing moves for a while (the daemon goes on serving it).
async fn watch_sending(api: &mut Api, event: EventId) -> Result<(), Failure> {
    let Some(first) = transfer(api, event).await? else {
        return Ok(());
    };
    let bar = bar(first.size, "sending".into());
    let mut last = (first.served, SystemClock.instant());
    loop {
        let Some(t) = transfer(api, event).await? else {
            break;
        };
        bar.set_position(bytes_of(&t, t.served.min(t.chunks)));
        if t.served >= t.chunks {
            bar.finish_with_message("sent");
            return Ok(());
        }
        if t.served != last.0 {
            last = (t.served, SystemClock.instant());
        } else if last.1.elapsed() >= STALLED {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    bar.abandon_with_message("waiting");
    eprintln!("the daemon serves the file to the recipients' devices as they come online");
    Ok(())
}

/// Shows the file coming in until it is whole; an error if it was
/// refused or stops arriving.
async fn wait_for_file(api: &mut Api, event: EventId) -> Result<(), Failure> {
    let Some(first) = transfer(api, event).await? else {
        return Ok(());
    };
    if first.state == "complete" || first.direction == "send" {
        return Ok(());
    }
    let bar = bar(first.size, "receiving".into());
    let mut last = (first.done, SystemClock.instant());
    loop {
        let Some(t) = transfer(api, event).await? else {
            bar.finish_and_clear();
            return Ok(());
        };
        bar.set_position(bytes_of(&t, t.done));
        match t.state.as_str() {
            "complete" => {
                bar.finish_and_clear();
                return Ok(());
            }
            // The download request reports why.
            "failed" => {
                bar.abandon();
                return Ok(());
            }
            _ => {}
        }
        if t.done != last.0 {
            last = (t.done, SystemClock.instant());
        } else if last.1.elapsed() >= STALLED {
            bar.abandon();
            return Err(Failure::Other(anyhow::anyhow!(
                "the file has not arrived whole ({} of {} chunks) and the sender's device is not sending; the daemon goes on trying",
                t.done,
                t.chunks
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}
