//! This user's devices: list, link a new one, name or revoke one; and the new
//! device's side of a link (`init --link`).

use anyhow::Context;
use safemeet_api::{Device, DeviceLink, DeviceRenamed, DeviceRevoked, Request, VerificationState};
use safemeet_crypto::account::Account;
use safemeet_crypto::machine::CryptoMachine;
use safemeet_proto::clock::{Clock, SystemClock};
use safemeet_proto::link::LinkOffer;
use serde::Serialize;

use crate::failure::Failure;
use crate::home::Home;
use crate::messenger::{Api, print_json};
use crate::passphrase::Source;

/// A device command.
#[derive(Debug)]
pub(crate) enum DeviceAction {
    List,
    Link {
        with_master: bool,
    },
    Revoke {
        device_id: String,
    },
    Rename {
        device_id: String,
        name: String,
    },
    /// SAS with a contact's device.
    Verify {
        target: String,
    },
    /// A contact's invite, scanned or pasted in person.
    VerifyInvite {
        invite: String,
    },
}

/// How long `verify` waits for the other side at each step.
const VERIFY_WAIT: std::time::Duration = std::time::Duration::from_secs(300);

/// Asks the daemon where the verification stands until `done` says so.
async fn wait_verification(
    api: &mut Api,
    target: &str,
    mut state: VerificationState,
    done: impl Fn(&str) -> bool,
) -> Result<VerificationState, Failure> {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
    let deadline = tokio::time::Instant::from_std(SystemClock.instant() + VERIFY_WAIT);
    while !done(&state.state) && state.state != "cancelled" {
        if tokio::time::Instant::from_std(SystemClock.instant()) > deadline {
            let _: VerificationState = api
                .call(Request::VerifyAnswer {
                    target: target.to_owned(),
                    matches: false,
                })
                .await?;
            return Err(Failure::Other(anyhow::anyhow!(
                "the other side did not go on in time; the verification was cancelled"
            )));
        }
        tick.tick().await;
        state = api
            .call(Request::VerifyStatus {
                target: target.to_owned(),
            })
            .await?;
    }
    if state.state == "cancelled" {
        return Err(Failure::Other(anyhow::anyhow!(
            "the verification was cancelled: {}",
            state
                .cancel_reason
                .as_deref()
                .unwrap_or("by the other side")
        )));
    }
    Ok(state)
}

/// `verify CONTACT`: both users run it; each compares the emoji and says
/// whether they match (on standard input: y or n).
async fn verify(api: &mut Api, json: bool, target: String) -> Result<(), Failure> {
    let state: VerificationState = api
        .call(Request::VerifyStart {
            target: target.clone(),
        })
        .await?;
    if !json {
        println!("waiting for {target} to run `safemeet verify` too…");
    }
    let state = wait_verification(api, &target, state, |s| s == "compare").await?;
    if json {
        print_json(&state)?;
    } else {
        let emoji: Vec<String> = state
            .emoji
            .iter()
            .map(|e| format!("{} {}", e.symbol, e.name))
            .collect();
        println!("{}", emoji.join("  "));
        let numbers: Vec<String> = state.decimals.iter().map(u16::to_string).collect();
        println!("{}", numbers.join(" "));
        print!("Do both screens show the same? [y/N] ");
        use std::io::Write;
        let _ = std::io::stdout().flush();
    }
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .context("reading the answer")?;
    let matches = matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes");
    let state: VerificationState = api
        .call(Request::VerifyAnswer {
            target: target.clone(),
            matches,
        })
        .await?;
    if !matches {
        return Err(Failure::Other(anyhow::anyhow!(
            "the strings do not match: the verification was cancelled, and {target} is not verified"
        )));
    }
    let state = wait_verification(api, &target, state, |s| s == "verified").await?;
    if json {
        return print_json(&state);
    }
    println!("{target}'s device {} is verified", state.device_id);
    Ok(())
}

pub(crate) async fn perform(
    api: &mut Api,
    json: bool,
    action: DeviceAction,
) -> Result<(), Failure> {
    match action {
        DeviceAction::List => {
            let devices: Vec<Device> = api.call(Request::DeviceList {}).await?;
            if json {
                return print_json(&devices);
            }
            let when =
                |ms: Option<u64>| ms.map_or_else(|| "never".to_owned(), crate::messenger::utc);
            for d in &devices {
                let state = match d.revoked_at {
                    Some(_) => "revoked",
                    None if d.verified => "verified",
                    None => "not verified",
                };
                let name = d.name.as_deref().unwrap_or("(no name)");
                let seen = if d.this_device {
                    "this device".to_owned()
                } else {
                    format!("last seen {}", when(d.last_seen_at))
                };
                println!(
                    "{}  {name}  added {}  {seen}  {state}",
                    d.device_id,
                    when(Some(d.created_at)),
                );
            }
        }
        DeviceAction::Link { with_master } => {
            let link: DeviceLink = api.call(Request::DeviceLink { with_master }).await?;
            if json {
                return print_json(&link);
            }
            crate::qr::print(&link.link);
            println!("{}", link.link);
            println!(
                "On the new device run: safemeet init --link <the link above>. It works once, for 10 minutes; keep it out of sight."
            );
        }
        DeviceAction::Verify { target } => return verify(api, json, target).await,
        DeviceAction::VerifyInvite { invite } => {
            let done: safemeet_api::ContactVerified =
                api.call(Request::ContactVerify { invite }).await?;
            if json {
                return print_json(&done);
            }
            println!(
                "verified {} device(s) of {}",
                done.verified.len(),
                done.user_id
            );
        }
        DeviceAction::Revoke { device_id } => {
            let done: DeviceRevoked = api.call(Request::DeviceRevoke { device_id }).await?;
            if json {
                return print_json(&done);
            }
            println!("revoked {}", done.revoked);
        }
        DeviceAction::Rename { device_id, name } => {
            let done: DeviceRenamed = api.call(Request::DeviceRename { device_id, name }).await?;
            if json {
                return print_json(&done);
            }
            println!("{} is now named {:?}", done.device_id, done.name);
        }
    }
    Ok(())
}

/// What `init --link` prints.
#[derive(Serialize)]
struct Linked {
    user_id: String,
    device_id: String,
    contacts: usize,
    rooms: usize,
    messages: usize,
}

/// `init --link`: takes this device into the account whose device showed
/// the link. Nothing is written here unless the whole bundle arrived and
/// checks out.
pub(crate) fn init_linked(
    home: &Home,
    source: &Source,
    json: bool,
    link: &str,
    days: u32,
    name: Option<String>,
) -> Result<(), Failure> {
    if home.has_account() {
        return Err(home.account_exists());
    }
    if let Some(name) = &name {
        safemeet_proto::event::DeviceName::check(name).map_err(|e| Failure::Usage(e.to_owned()))?;
    }
    let offer = LinkOffer::from_text(link).map_err(|e| Failure::Usage(format!("{e}")))?;
    // Asked first: the link is used up once the bundle arrives.
    let passphrase = source.new_passphrase(&[])?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let bundle = runtime
        .block_on(safemeet_engine::link_io::receive_bundle(
            &offer,
            days,
            SystemClock.now(),
        ))
        .map_err(|e| Failure::Other(e.into()))?;
    let record =
        safemeet_engine::link::bundle_account(&bundle).map_err(|e| Failure::Other(e.into()))?;
    let account = Account::from_record(&record)?;
    let (log, summary) = take_in(home, &passphrase, &account, |machine, now| {
        safemeet_engine::link::import_bundle(machine, &bundle, &offer.addrs, now, name.clone())
    })?;
    log.record(
        "device_linked_to_account",
        Some(account.device_id().to_string()),
    );
    tracing::info!("device linked");
    let linked = Linked {
        user_id: account.user_id().to_string(),
        device_id: account.device_id().to_string(),
        contacts: summary.contacts,
        rooms: summary.rooms,
        messages: summary.messages,
    };
    if json {
        return print_json(&linked);
    }
    println!("linked as a new device of {}", linked.user_id);
    println!("device id:    {}", linked.device_id);
    println!(
        "took in {} contacts, {} conversations and {} messages",
        linked.contacts, linked.rooms, linked.messages
    );
    Ok(())
}

/// Creates the home of a device that an account came to (by a link or an
/// archive), and takes in what came with it through `import`, before the
/// device's first start.
pub(crate) fn take_in(
    home: &Home,
    passphrase: &safemeet_crypto::at_rest::Passphrase,
    account: &Account,
    import: impl FnOnce(
        CryptoMachine<safemeet_store_sled::SledStore>,
        safemeet_engine::Now,
    ) -> Result<safemeet_engine::link::LinkSummary, safemeet_engine::Error>,
) -> Result<
    (
        crate::security::SecurityLog,
        safemeet_engine::link::LinkSummary,
    ),
    Failure,
> {
    let mut summary = None;
    let log = home.create(passphrase, |store| {
        CryptoMachine::store_account(store, account)?;
        let machine = CryptoMachine::open(store.clone())?;
        let now = safemeet_engine::Now {
            wall: SystemClock.now(),
            mono: std::time::Duration::ZERO,
        };
        summary = Some(import(machine, now).map_err(|e| Failure::Other(e.into()))?);
        Ok(())
    })?;
    Ok((log, summary.unwrap_or_default()))
}
