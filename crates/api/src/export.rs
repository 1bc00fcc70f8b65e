//! `export.readable`: everything the node holds about its user, with no
//! keys, as JSON files and as Markdown a person can open (the right of
//! access).
//!
//! Written by the node itself into a new directory (mode 0700, files
//! 0600):
//! - `README.md`: the profile, devices, contacts and rooms, and an index
//!   of the conversations;
//! - `avatar.png` or `avatar.jpg`, if one is set;
//! - `profile.json`, `devices.json`, `contacts.json`, `rooms.json`: as
//!   the API shows them;
//! - `messages/NN-KIND-NAME.json` and `.md`: each conversation's whole
//!   timeline, oldest first (an edited message as it is now, a deleted
//!   one as deleted, with no text);
//! - `security-log.json` and `.md`: the security log, each entry checked
//!   against the one before (and where the chain breaks, if it does).
//!
//! Nothing secret is written: no key, secret, session or mailbox key, only
//! what the API shows (ids, names, texts, times).

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use safemeet_engine::{Conversation, Handle as EngineHandle, TimelineEntry};
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::response::{Contact, Room};
use crate::{Device, ProfileView};

/// Timeline entries read per page.
const PAGE: usize = 1000;

/// What `export.readable` wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exported {
    /// The directory.
    pub dir: String,
    /// How many files.
    pub files: usize,
    /// How many conversations.
    pub conversations: usize,
    /// How many messages.
    pub messages: usize,
    /// How many security-log entries.
    #[serde(default)]
    pub security_entries: usize,
}

/// One message as the export shows it.
#[derive(Debug, Serialize)]
struct ExportedMessage<'a> {
    event_id: String,
    sender: String,
    sender_device: String,
    sent_at: u64,
    text: &'a str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    edited: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    deleted: bool,
}

fn failed(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Engine(safemeet_engine::Error::InvalidInput(format!(
        "the export could not {what}: {e}"
    )))
}

/// A name safe in a file name: letters, digits, `-` and `_`, at most 40.
fn file_part(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    if cleaned.is_empty() {
        "unnamed".into()
    } else {
        cleaned
    }
}

/// Text as one Markdown paragraph: characters that would format it are
/// escaped, line breaks kept.
fn markdown_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '#' | '|' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("  \n  "),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

fn utc(ms: u64) -> String {
    safemeet_proto::Timestamp::from_millis(ms)
        .map(|t| t.utc_minutes())
        .unwrap_or_else(|_| format!("{ms} ms"))
}

/// Creates `path` with mode 0600 (never replacing a file) and writes it.
fn write_new(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| failed(&format!("create {}", path.display()), e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| failed(&format!("write {}", path.display()), e))
}

fn json<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Error> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| failed("encode JSON", e))?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// Makes the export directory: absolute, new or empty, mode 0700.
fn make_dir(dir: &str) -> Result<PathBuf, Error> {
    use std::os::unix::fs::DirBuilderExt;
    let path = PathBuf::from(dir);
    if !path.is_absolute() {
        return Err(Error::Engine(safemeet_engine::Error::InvalidInput(
            "the export directory must be an absolute path".into(),
        )));
    }
    if path.exists() {
        let empty = std::fs::read_dir(&path)
            .map_err(|e| failed(&format!("read {}", path.display()), e))?
            .next()
            .is_none();
        if !empty {
            return Err(Error::Engine(safemeet_engine::Error::InvalidInput(
                format!(
                    "{} is not empty: export into a new directory",
                    path.display()
                ),
            )));
        }
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path.join("messages"))
        .map_err(|e| failed(&format!("create {}", path.display()), e))?;
    Ok(path)
}

/// Writes the readable export into `dir` (see the module docs).
pub(crate) async fn export_readable(
    engine: &EngineHandle,
    profile: ProfileView,
    dir: &str,
) -> Result<Exported, Error> {
    let devices: Vec<Device> = engine
        .devices()
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    let contacts: Vec<Contact> = engine
        .contacts()
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    let rooms: Vec<Room> = engine.rooms().await?.into_iter().map(Into::into).collect();
    let path = make_dir(dir)?;
    let mut files = 0;
    if let Some(image) = engine.avatar(engine.user_id()).await? {
        let name = format!("avatar.{}", image.kind.extension());
        write_new(&path.join(name), &image.bytes)?;
        files += 1;
    }
    for (name, bytes) in [
        ("profile.json", json(&profile)?),
        ("devices.json", json(&devices)?),
        ("contacts.json", json(&contacts)?),
        ("rooms.json", json(&rooms)?),
    ] {
        write_new(&path.join(name), &bytes)?;
        files += 1;
    }

    let name_of = |user: &safemeet_proto::UserId| -> String {
        if *user == profile.user_id {
            return profile.username.clone();
        }
        contacts
            .iter()
            .find(|c| c.user_id == *user)
            .map(|c| c.username.clone())
            .unwrap_or_else(|| user.to_string())
    };
    let mut conversations: Vec<(Conversation, String)> = contacts
        .iter()
        .map(|c| (Conversation::Dm(c.user_id), format!("dm-{}", c.username)))
        .collect();
    conversations.extend(
        rooms
            .iter()
            .map(|r| (Conversation::Room(r.room_id), format!("room-{}", r.name))),
    );
    let mut index = String::new();
    let mut total = 0;
    for (n, (conversation, label)) in conversations.iter().enumerate() {
        let mut entries: Vec<TimelineEntry> = Vec::new();
        let mut after = None;
        loop {
            let page = engine.timeline_page(*conversation, after, PAGE).await?;
            let done = page.len() < PAGE;
            for (seq, entry) in page {
                after = Some(seq);
                entries.push(entry);
            }
            if done {
                break;
            }
        }
        // As `messages` shows them: Lamport order, the same on every device.
        entries.sort_by(|a, b| {
            (a.lamport, a.sender, a.event_id).cmp(&(b.lamport, b.sender, b.event_id))
        });
        let base = format!("{:02}-{}", n + 1, file_part(label));
        let shown: Vec<ExportedMessage<'_>> = entries
            .iter()
            .map(|e| ExportedMessage {
                event_id: e.event_id.to_string(),
                sender: e.sender.to_string(),
                sender_device: e.sender_device.to_string(),
                sent_at: e.ts.as_millis(),
                text: &e.text,
                edited: matches!(e.revision, safemeet_engine::Revision::Edited { .. }),
                deleted: e.revision == safemeet_engine::Revision::Redacted,
            })
            .collect();
        write_new(
            &path.join("messages").join(format!("{base}.json")),
            &json(&shown)?,
        )?;
        let mut md = format!("# {}\n\n", markdown_text(label));
        for e in &entries {
            let text = match e.revision {
                safemeet_engine::Revision::Redacted => "*(deleted)*".to_owned(),
                safemeet_engine::Revision::Edited { .. } => {
                    format!("{} *(edited)*", markdown_text(&e.text))
                }
                safemeet_engine::Revision::Original => markdown_text(&e.text),
            };
            let _ = writeln!(
                md,
                "- {} **{}**: {text}",
                utc(e.ts.as_millis()),
                markdown_text(&name_of(&e.sender)),
            );
        }
        write_new(
            &path.join("messages").join(format!("{base}.md")),
            md.as_bytes(),
        )?;
        files += 2;
        total += entries.len();
        let _ = writeln!(
            index,
            "- [{}](messages/{base}.md): {} messages",
            markdown_text(label),
            entries.len()
        );
    }

    let mut readme = String::from("# Your SafeMeet data\n\n");
    let _ = writeln!(
        readme,
        "Everything this device holds about you, without any key. The same in JSON: `profile.json`, `devices.json`, `contacts.json`, `rooms.json` and `messages/`.\n"
    );
    let _ = writeln!(readme, "## Profile\n");
    let _ = writeln!(readme, "- user id: `{}`", profile.user_id);
    let _ = writeln!(readme, "- username: {}", markdown_text(&profile.username));
    let _ = writeln!(
        readme,
        "- display name: {}",
        markdown_text(&profile.display_name)
    );
    for e in &profile.emails {
        let _ = writeln!(readme, "- e-mail: {}", markdown_text(e));
    }
    let _ = writeln!(readme, "\n## Devices\n");
    for d in &devices {
        let _ = writeln!(
            readme,
            "- `{}` {}, added {}{}{}",
            d.device_id,
            markdown_text(d.name.as_deref().unwrap_or("(no name)")),
            utc(d.created_at),
            if d.this_device { ", this device" } else { "" },
            d.revoked_at
                .map(|t| format!(", revoked {}", utc(t)))
                .unwrap_or_default()
        );
    }
    let _ = writeln!(readme, "\n## Contacts\n");
    if contacts.is_empty() {
        let _ = writeln!(readme, "(none)");
    }
    for c in &contacts {
        let _ = writeln!(
            readme,
            "- {} ({}), `{}`, {} device(s){}",
            markdown_text(&c.display_name),
            markdown_text(&c.username),
            c.user_id,
            c.devices.len(),
            if c.verified { ", verified" } else { "" }
        );
    }
    let _ = writeln!(readme, "\n## Rooms\n");
    if rooms.is_empty() {
        let _ = writeln!(readme, "(none)");
    }
    for r in &rooms {
        let members: Vec<String> = r.members.iter().map(&name_of).collect();
        let _ = writeln!(
            readme,
            "- {} (`{}`): {}",
            markdown_text(&r.name),
            r.room_id,
            markdown_text(&members.join(", "))
        );
    }
    if index.is_empty() {
        index.push_str("(none)\n");
    }
    let _ = writeln!(readme, "\n## Conversations\n\n{index}");

    // The security log: what happened to the account, never content.
    let log = engine.security_log().await?;
    write_new(
        &path.join("security-log.json"),
        &json(&serde_json::json!({
            "entries": log.entries,
            "chain": log.broken.as_deref().unwrap_or("unchanged"),
        }))?,
    )?;
    let mut md = String::from("# Security log\n\n");
    match &log.broken {
        None => md.push_str("Each entry checks against the one before: the log is unchanged.\n\n"),
        Some(b) => {
            let _ = writeln!(
                md,
                "**The log was changed or damaged** ({}); the entries before it:\n",
                markdown_text(b)
            );
        }
    }
    for e in &log.entries {
        let _ = writeln!(
            md,
            "- {} {} {}{}",
            e.seq,
            utc(e.at),
            markdown_text(&e.event),
            e.subject
                .as_deref()
                .map(|s| format!(" `{}`", markdown_text(s)))
                .unwrap_or_default()
        );
    }
    write_new(&path.join("security-log.md"), md.as_bytes())?;
    files += 2;
    let _ = writeln!(
        readme,
        "\n## Security log\n\n[{} entries](security-log.md){}",
        log.entries.len(),
        if log.broken.is_some() {
            ": the log was changed or damaged"
        } else {
            ""
        }
    );
    write_new(&path.join("README.md"), readme.as_bytes())?;
    files += 1;
    Ok(Exported {
        dir: path.display().to_string(),
        files,
        security_entries: log.entries.len(),
        conversations: conversations.len(),
        messages: total,
    })
}

/// A secret in a request (a passphrase): never printed, wiped when dropped.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([scrubbed])")
    }
}

/// Shortest archive passphrase the API takes (the CLI asks for a strong one).
const MIN_ARCHIVE_PASSPHRASE_CHARS: usize = 8;

/// What `export.archive` wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveExported {
    /// The file.
    pub file: String,
    /// Its size.
    pub bytes: u64,
    /// The account.
    pub user_id: safemeet_proto::UserId,
    /// The device that exported it (`import --retire-old` revokes it).
    pub exported_from: safemeet_proto::DeviceId,
    /// The device an import of it becomes (listed from now on).
    pub device_id: safemeet_proto::DeviceId,
    /// Contacts it holds.
    pub contacts: usize,
    /// Conversations it holds.
    pub rooms: usize,
    /// Messages it holds.
    pub messages: usize,
}

/// Writes the account archive to `file` (absolute, new), sealed under
/// `passphrase` (see `safemeet_crypto::archive` and `docs/archive.md`).
pub(crate) async fn export_archive(
    engine: &EngineHandle,
    file: &str,
    passphrase: Secret,
) -> Result<ArchiveExported, Error> {
    use std::os::unix::fs::OpenOptionsExt;
    let invalid = |m: String| Error::Engine(safemeet_engine::Error::InvalidInput(m));
    let path = PathBuf::from(file);
    if !path.is_absolute() {
        return Err(invalid("the archive's path must be absolute".into()));
    }
    if passphrase.0.chars().count() < MIN_ARCHIVE_PASSPHRASE_CHARS {
        return Err(invalid(format!(
            "the archive's passphrase must have at least {MIN_ARCHIVE_PASSPHRASE_CHARS} characters"
        )));
    }
    // Created first, so that nothing is issued for a file that cannot be
    // written (it exists already, or its directory does not).
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| failed(&format!("create {}", path.display()), e))?;
    let archive = match engine.export_archive().await {
        Ok(a) => a,
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            return Err(e.into());
        }
    };
    let body = archive.body.clone();
    let pass = safemeet_crypto::at_rest::Passphrase::new(passphrase.0.as_str());
    let sealed = tokio::task::spawn_blocking(move || {
        safemeet_crypto::archive::seal(&body, &pass, Default::default())
    })
    .await
    .map_err(|e| failed("seal the archive", e))
    .and_then(|r| r.map_err(|e| failed("seal the archive", e)));
    let written = sealed.and_then(|sealed: Vec<u8>| {
        out.write_all(&sealed)
            .and_then(|()| out.sync_all())
            .map_err(|e| failed(&format!("write {}", path.display()), e))
            .map(|()| sealed.len() as u64)
    });
    let bytes = match written {
        Ok(n) => n,
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
    };
    let info = archive.export.info;
    Ok(ArchiveExported {
        file: path.display().to_string(),
        bytes,
        user_id: info.user_id,
        exported_from: info.exported_from,
        device_id: info.device_id,
        contacts: archive.export.summary.contacts,
        rooms: archive.export.summary.rooms,
        messages: archive.export.summary.messages,
    })
}
