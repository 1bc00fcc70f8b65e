//! This user's devices: list, link a new one, revoke one; and the new
//! device's side of a link (`init --link`).

use anyhow::Context;
use safemeet_api::{Device, DeviceLink, DeviceRevoked, Request};
use safemeet_crypto::account::Account;
use safemeet_crypto::machine::CryptoMachine;
use safemeet_proto::clock::{Clock, SystemClock};
use safemeet_proto::link::LinkOffer;
use serde::Serialize;

use crate::failure::Failure;
use crate::home::Home;
use crate::messenger::{Api, print_json, print_qr};
use crate::passphrase::Source;

/// A device command.
#[derive(Debug)]
pub(crate) enum DeviceAction {
    List,
    Link,
    Revoke { device_id: String },
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
            for d in &devices {
                let state = match d.revoked_at {
                    Some(_) => "revoked",
                    None if d.verified => "verified",
                    None => "not verified",
                };
                let this = if d.this_device { "  (this device)" } else { "" };
                println!(
                    "{}  added {}  {state}{this}",
                    d.device_id,
                    safemeet_proto::Timestamp::from_millis(d.created_at)
                        .map(|t| t.to_string())
                        .unwrap_or_default()
                );
            }
        }
        DeviceAction::Link => {
            let link: DeviceLink = api.call(Request::DeviceLink {}).await?;
            if json {
                return print_json(&link);
            }
            print_qr(&link.link);
            println!("{}", link.link);
            println!(
                "On the new device run: safemeet init --link <the link above>. It works once, for 10 minutes; keep it out of sight."
            );
        }
        DeviceAction::Revoke { device_id } => {
            let done: DeviceRevoked = api.call(Request::DeviceRevoke { device_id }).await?;
            if json {
                return print_json(&done);
            }
            println!("revoked {}", done.revoked);
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
) -> Result<(), Failure> {
    if home.has_account() {
        return Err(home.account_exists());
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
    let mut summary = None;
    home.create(&passphrase, |store| {
        CryptoMachine::store_account(store, &account)?;
        let machine = CryptoMachine::open(store.clone())?;
        let now = safemeet_engine::Now {
            wall: SystemClock.now(),
            mono: std::time::Duration::ZERO,
        };
        summary = Some(
            safemeet_engine::link::import_bundle(machine, &bundle, &offer.addrs, now)
                .map_err(|e| Failure::Other(e.into()))?,
        );
        Ok(())
    })?;
    let summary = summary.unwrap_or_default();
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
