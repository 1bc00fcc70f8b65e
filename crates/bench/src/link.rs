//! The `link` suite: linking a new device to an account with a long
//! history. A device with `--ops` messages in a DM shows a link; a new
//! device takes it over TCP on loopback (the link protocol: Noise_XXpsk3,
//! the bundle in sealed frames) and stores everything in its own encrypted
//! sled store. Each sample is one whole link, from asking for the link to
//! the new device's last flush. The goal: at most 5 s for 10 000 messages.

use std::time::Duration;

use safemeet_crypto::EncryptedStore;
use safemeet_crypto::account::Account;
use safemeet_crypto::at_rest::{DataKey, StoreCipher};
use safemeet_crypto::link::MAX_LINK_PLAINTEXT;
use safemeet_crypto::machine::CryptoMachine;
use safemeet_proto::clock::{Clock, SystemClock};
use safemeet_proto::link::LinkOffer;
use safemeet_store_sled::SledStore;
use serde_json::{Value, json};

use crate::chat::{instant, ms, start_engine_on};

/// The goal for 10 000 messages.
const GOAL_MS: f64 = 5000.0;
/// Samples at most: each adds a device to the account (32 at most).
pub(crate) const MAX_SAMPLES: usize = 20;

pub(crate) fn run(samples: usize, messages: usize) -> anyhow::Result<Value> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run_async(samples.min(MAX_SAMPLES), messages))
}

async fn run_async(samples: usize, messages: usize) -> anyhow::Result<Value> {
    let dir = tempfile::tempdir()?;
    let sled = |name: &str| {
        SledStore::open(
            dir.path().join(name),
            &safemeet_store_sled::Config::default(),
        )
    };
    let alice = start_engine_on(
        sled("alice")?,
        &DataKey::generate(),
        safemeet_net::Config::loopback(),
        Some("alice"),
    )?;
    let bob = start_engine_on(
        sled("bob")?,
        &DataKey::generate(),
        safemeet_net::Config::loopback(),
        Some("bob"),
    )?;
    for e in [&alice, &bob] {
        crate::chat::wait_listening(e).await?;
    }
    let (ia, ib) = (alice.invite().await?, bob.invite().await?);
    alice.add_contact(&ib, Some("bob".into())).await?;
    bob.add_contact(&ia, Some("alice".into())).await?;
    eprintln!("link: writing {messages} messages of history…");
    let started = instant();
    for i in 0..messages {
        alice
            .send_dm(
                bob.user_id(),
                &format!("message {i} of the history, about sixty bytes long"),
            )
            .await?;
    }
    eprintln!(
        "link: history written in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let mut times = Vec::with_capacity(samples);
    let mut bundle_bytes = 0;
    let mut taken = 0;
    for i in 0..samples {
        let t0 = instant();
        let offer = LinkOffer::from_text(&alice.link_offer(false).await?.link)?;
        let bundle =
            safemeet_engine::link_io::receive_bundle(&offer, 30, SystemClock.now()).await?;
        let record = safemeet_engine::link::bundle_account(&bundle)?;
        let account = Account::from_record(&record)?;
        let store = EncryptedStore::new(
            sled(&format!("new{i}"))?,
            StoreCipher::new(&DataKey::generate()),
        );
        CryptoMachine::store_account(&store, &account)?;
        let now = safemeet_engine::Now {
            wall: SystemClock.now(),
            mono: Duration::ZERO,
        };
        let summary = safemeet_engine::link::import_bundle(
            CryptoMachine::open(store)?,
            &bundle,
            &offer.addrs,
            now,
            None,
        )?;
        let took = ms(t0.elapsed());
        eprintln!(
            "link: sample {}: {took:.0} ms, {} bytes, {} messages",
            i + 1,
            bundle.len(),
            summary.messages
        );
        times.push(took);
        bundle_bytes = bundle.len();
        taken = summary.messages;
    }
    anyhow::ensure!(
        taken == messages,
        "the new device took {taken} of {messages} messages"
    );
    // The stream carries the bundle's length and the bundle in sealed
    // frames (a 4-byte length and a 16-byte tag each), after the three
    // handshake messages.
    let frames = bundle_bytes.div_ceil(MAX_LINK_PLAINTEXT) + 1;
    let stream_bytes = bundle_bytes + 8 + frames * 20;
    let median = crate::median(times.clone());
    let scaled_goal = GOAL_MS * messages as f64 / 10_000.0;
    eprintln!(
        "link: median {median:.0} ms for {messages} messages (goal {scaled_goal:.0} ms); bundle {bundle_bytes} bytes, {stream_bytes} on the stream"
    );
    alice.shutdown().await?;
    bob.shutdown().await?;
    Ok(json!({
        "suite": "link",
        "messages": messages,
        "samples": times.len(),
        "link_ms": { "median": median, "all": times },
        "bundle_bytes": bundle_bytes,
        "stream_bytes": stream_bytes,
        "goal_ms": scaled_goal,
        "meets_goal": median <= scaled_goal,
    }))
}
