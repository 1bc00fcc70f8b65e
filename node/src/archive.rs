//! `safemeet import FILE [--retire-old]`: a new home from an account
//! archive (`safemeet export FILE`), as a new device of the same user.
//! See `docs/archive.md`.

use safemeet_crypto::account::Account;
use safemeet_crypto::archive::{self, ArchiveError, MAX_ARCHIVE_BYTES};
use safemeet_engine::archive::OpenedArchive;
use serde::Serialize;

use crate::failure::Failure;
use crate::home::Home;
use crate::messenger::print_json;
use crate::passphrase::Source;

/// What `import` prints.
#[derive(Serialize)]
struct Imported {
    user_id: String,
    device_id: String,
    /// The device that exported the archive.
    exported_from: String,
    /// It was revoked (`--retire-old`).
    retired: bool,
    contacts: usize,
    rooms: usize,
    messages: usize,
}

pub(crate) fn import(
    home: &Home,
    source: &Source,
    json: bool,
    file: &std::path::Path,
    retire_old: bool,
    device_name: Option<String>,
) -> Result<(), Failure> {
    if home.has_account() {
        return Err(Failure::AccountExists(format!(
            "{} already holds an account; import into a new --home (an archive is imported once, as one new device)",
            home.dir().display()
        )));
    }
    if let Some(name) = &device_name {
        safemeet_proto::event::DeviceName::check(name).map_err(|e| Failure::Usage(e.to_owned()))?;
    }
    let size = std::fs::metadata(file)
        .map_err(|e| Failure::Usage(format!("{}: {e}", file.display())))?
        .len();
    if size > MAX_ARCHIVE_BYTES as u64 {
        return Err(Failure::Usage(format!(
            "{} is larger than any archive",
            file.display()
        )));
    }
    let bytes =
        std::fs::read(file).map_err(|e| Failure::Usage(format!("{}: {e}", file.display())))?;
    // The archive's passphrase; the new home is sealed under it too.
    let passphrase = source.existing()?;
    let body = archive::open(&bytes, &passphrase).map_err(|e| match e {
        ArchiveError::WrongPassphrase => Failure::WrongPassphrase,
        other => Failure::Usage(format!("{}: {other}", file.display())),
    })?;
    let opened = OpenedArchive::decode(&body)
        .map_err(|e| Failure::Usage(format!("{}: {e}", file.display())))?;
    let record = safemeet_engine::link::bundle_account(&opened.bundle)
        .map_err(|e| Failure::Usage(format!("{}: {e}", file.display())))?;
    let account = Account::from_record(&record)?;
    if account.device_id() != opened.info.device_id || account.user_id() != opened.info.user_id {
        return Err(Failure::Usage(format!(
            "{}: the archive does not hold the device it names",
            file.display()
        )));
    }
    let (log, summary) = crate::devices::take_in(home, &passphrase, &account, |machine, now| {
        safemeet_engine::archive::import_archive(
            machine,
            &opened,
            now,
            device_name.clone(),
            retire_old,
        )
    })?;
    log.record("account_imported", Some(account.device_id().to_string()));
    if retire_old {
        log.record(
            "device_revoked",
            Some(opened.info.exported_from.to_string()),
        );
    }
    let imported = Imported {
        user_id: account.user_id().to_string(),
        device_id: account.device_id().to_string(),
        exported_from: opened.info.exported_from.to_string(),
        retired: retire_old,
        contacts: summary.contacts,
        rooms: summary.rooms,
        messages: summary.messages,
    };
    if json {
        return print_json(&imported);
    }
    println!("imported {} as a new device", imported.user_id);
    println!("device id:    {}", imported.device_id);
    println!(
        "took in {} contacts, {} conversations and {} messages",
        imported.contacts, imported.rooms, imported.messages
    );
    if retire_old {
        println!(
            "revoked the device that exported it ({}); contacts learn it as this device meets them",
            imported.exported_from
        );
    }
    Ok(())
}
