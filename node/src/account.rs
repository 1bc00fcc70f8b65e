//! `safemeet account delete [--yes]`: deletes the account, everywhere this
//! device can reach, then here.
//!
//! 1. A marker, `deleting`, goes into the home first: if the command is
//!    stopped half way (killed, the machine off), running it again
//!    finishes the job, whatever step it stopped at.
//! 2. With an engine of its own (the daemon must be stopped): every
//!    contact device and this user's other devices get the account's
//!    tombstone, signed with the master key; the other devices are
//!    revoked; every room is left (its admin rotates the secret); it waits
//!    (at most [`DELIVERY_WAIT`]) for the deliveries, then purges every
//!    mailbox of this device on every relay it used, each relay signing a
//!    receipt (see `safemeet_engine::deletion`).
//! 3. Crypto-shredding: the key file is overwritten with random bytes,
//!    synced and removed, so the store (ciphertext under a key that no
//!    longer exists anywhere) can never be opened again; then the store,
//!    the security log and everything else of the account is removed.
//!
//! It prints what it could not reach: devices it has no session with or
//! that did not take the tombstone in time, relays that did not answer.

use std::io::Write as _;
use std::time::Duration;

use anyhow::Context;
use rand::RngCore;
use safemeet_engine::{DeletionStep, PurgeOutcome};
use safemeet_proto::clock::{Clock, SystemClock};
use serde::Serialize;

use crate::failure::Failure;
use crate::home::Home;
use crate::messenger::print_json;
use crate::passphrase::Source;

/// How long deliveries of the tombstone are waited for.
const DELIVERY_WAIT: Duration = Duration::from_secs(30);
/// The marker of a deletion under way.
const MARKER: &str = "deleting";

/// One relay's purge receipt, as printed.
#[derive(Serialize)]
struct Receipt {
    relay: String,
    mailbox: String,
    removed: u32,
    purged_at: u64,
    /// The relay's signature (hex) over the receipt's signed bytes
    /// (`PurgeReceipt::signed_bytes`), checked against its peer id.
    signature: String,
}

/// What `account delete` prints.
#[derive(Serialize, Default)]
struct Deleted {
    deleted: bool,
    /// Devices the tombstone reached.
    told: Vec<String>,
    /// Devices it did not reach (no session, or no answer in time).
    not_reached: Vec<String>,
    rooms_left: usize,
    devices_revoked: usize,
    receipts: Vec<Receipt>,
    /// Relays (and mailboxes) that gave no receipt, and why.
    relays_not_reached: Vec<String>,
    /// The network steps ran before (this run finished the shredding).
    resumed: bool,
}

/// A step under way, on stderr (`--json` output stays one object on
/// stdout).
fn progress(line: &str) {
    eprintln!("{line}");
}

pub(crate) fn delete(home: &Home, source: &Source, json: bool, yes: bool) -> Result<(), Failure> {
    let marker = home.dir().join(MARKER);
    if !home.has_account() {
        if marker.exists() {
            progress("finishing a deletion that was stopped half way");
            shred(home)?;
            let done = Deleted {
                deleted: true,
                resumed: true,
                ..Default::default()
            };
            return report(json, &done);
        }
        return Err(Failure::NoAccount(format!(
            "no account in {}",
            home.dir().display()
        )));
    }
    let passphrase = source.existing()?;
    let (store, log) = home.unlock(&passphrase).map_err(|e| match e {
        Failure::Locked(_) => Failure::Locked(
            "a daemon runs on this home: stop it first (account delete runs the node itself)"
                .into(),
        ),
        other => other,
    })?;
    if !yes && !marker.exists() {
        // Closed cleanly before anything else opens the store: a machine
        // dropped open counts as a crash, and its sessions would not send.
        let mut machine = safemeet_crypto::machine::CryptoMachine::open(store.clone())?;
        let username = machine.account().profile().username.as_str().to_owned();
        machine.close_in_place()?;
        drop(machine);
        confirm(&username)?;
    }
    std::fs::File::create(&marker)
        .and_then(|f| f.sync_all())
        .context("writing the deletion marker")?;
    log.record("account_deletion_requested", None);

    let rt = crate::messenger::runtime()?;
    let mut done = rt.block_on(async {
        let net = safemeet_net::Config {
            listen: Vec::new(),
            mdns: false,
            ..safemeet_net::Config::default()
        };
        let (engine, _) =
            crate::messenger::start_engine(store, net, std::sync::Arc::new(log), None)?;
        let result = tell_and_purge(&engine).await;
        let _ = engine.shutdown().await;
        result
    })?;
    drop(rt);
    progress("shredding: the key file, then the store");
    shred(home)?;
    done.deleted = true;
    report(json, &done)
}

async fn tell_and_purge(engine: &safemeet_engine::Handle) -> Result<Deleted, Failure> {
    let failed = |e: safemeet_engine::Error| Failure::Other(e.into());
    let left = engine
        .delete_account(DeletionStep::LeaveRooms)
        .await
        .map_err(failed)?;
    progress(&format!("left {} rooms", left.rooms_left));
    delivered(engine).await?;
    let mut told = engine
        .delete_account(DeletionStep::Tell)
        .await
        .map_err(failed)?;
    told.rooms_left = left.rooms_left;
    progress(&format!(
        "telling {} devices the account is deleted; revoked {} devices",
        told.told.len(),
        told.devices_revoked
    ));
    let pending = delivered(engine).await?;
    progress("purging this device's mailboxes on its relays");
    let outcomes = engine.purge_mailboxes().await.map_err(failed)?;
    let mut done = Deleted {
        told: told.told.iter().map(|(_, d)| d.to_string()).collect(),
        not_reached: told
            .not_reached
            .iter()
            .map(|(_, d)| d.to_string())
            .collect(),
        rooms_left: told.rooms_left,
        devices_revoked: told.devices_revoked,
        ..Default::default()
    };
    if pending > 0 {
        // Which devices are still owed is not tracked per item here: say
        // how many deliveries were left.
        done.not_reached.push(format!(
            "{pending} deliveries still waiting when the wait ended"
        ));
    }
    for PurgeOutcome { relay, result, .. } in outcomes {
        match result {
            Ok(r) => done.receipts.push(Receipt {
                relay: relay.to_string(),
                mailbox: r.mailbox.to_string(),
                removed: r.removed,
                purged_at: r.purged_at.as_millis(),
                signature: hex(&r.signature),
            }),
            Err(e) => done.relays_not_reached.push(format!("{relay}: {e}")),
        }
    }
    Ok(done)
}

/// Waits (at most [`DELIVERY_WAIT`]) until the outbox is empty; returns
/// how many deliveries are left.
async fn delivered(engine: &safemeet_engine::Handle) -> Result<usize, Failure> {
    let failed = |e: safemeet_engine::Error| Failure::Other(e.into());
    let deadline = SystemClock.instant() + DELIVERY_WAIT;
    let mut pending = engine.pending().await.map_err(failed)?;
    while pending > 0 && SystemClock.instant() < deadline {
        // Deliveries are driven by the engine; this only watches them end.
        tokio::time::sleep(Duration::from_millis(200)).await;
        pending = engine.pending().await.map_err(failed)?;
    }
    Ok(pending)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Asks the user to type the username.
fn confirm(username: &str) -> Result<(), Failure> {
    if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        return Err(Failure::Usage(
            "confirm by typing the username at a terminal, or pass --yes".into(),
        ));
    }
    eprint!(
        "This deletes the account {username} everywhere and cannot be undone. Type the username to confirm: "
    );
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .context("reading the confirmation")?;
    if answer.trim() != username {
        return Err(Failure::Usage("not confirmed: nothing was deleted".into()));
    }
    Ok(())
}

/// Crypto-shreds the home: the key file is overwritten with random bytes,
/// synced and removed; then the store and every other file of the account.
fn shred(home: &Home) -> Result<(), Failure> {
    let dir = home.dir();
    let keyfile = dir.join("keyfile");
    if let Ok(meta) = std::fs::metadata(&keyfile) {
        let mut noise = vec![0u8; usize::try_from(meta.len()).unwrap_or(4096).max(4096)];
        rand::rngs::OsRng.fill_bytes(&mut noise);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&keyfile)
            .context("opening the key file to overwrite it")?;
        f.write_all(&noise)
            .and_then(|()| f.sync_all())
            .context("overwriting the key file")?;
        drop(f);
        std::fs::remove_file(&keyfile).context("removing the key file")?;
    }
    sync_dir(dir);
    for entry in std::fs::read_dir(dir).context("reading the home")? {
        let entry = entry.context("reading the home")?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // The relay's own directory is not the account's; the marker goes last.
        if name == "relay" || name == MARKER {
            continue;
        }
        let path = entry.path();
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.with_context(|| format!("removing {}", path.display()))?;
    }
    std::fs::remove_file(dir.join(MARKER)).context("removing the deletion marker")?;
    sync_dir(dir);
    Ok(())
}

/// Makes the directory's entries durable (best effort).
fn sync_dir(dir: &std::path::Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

fn report(json: bool, done: &Deleted) -> Result<(), Failure> {
    if json {
        return print_json(done);
    }
    if done.resumed {
        println!("the account is deleted: this run finished removing it from this device");
        return Ok(());
    }
    println!(
        "the account is deleted: {} devices told, {} rooms left, {} devices revoked",
        done.told.len(),
        done.rooms_left,
        done.devices_revoked
    );
    for r in &done.receipts {
        println!(
            "relay {} purged mailbox {} ({} envelopes), signed {}",
            r.relay, r.mailbox, r.removed, r.signature
        );
    }
    for n in &done.not_reached {
        println!("not reached: {n}");
    }
    for n in &done.relays_not_reached {
        println!("relay not reached: {n}");
    }
    println!("this device's key file was overwritten and its store removed");
    Ok(())
}
