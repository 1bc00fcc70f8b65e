//! Two SafeMeet nodes in one process exchange direct messages.
//!
//! Run with `cargo run -p safemeet-examples --bin two-nodes`.
//!
//! Alice and Bob each get an account, an in-memory encrypted store and a
//! real libp2p node on 127.0.0.1. They swap invites, then Alice writes to
//! Bob and Bob answers. Each message is end-to-end encrypted, delivered
//! directly, acknowledged, and marked delivered on the sender's side.

use std::time::Duration;

use anyhow::{Context, bail};
use safemeet_crypto::EncryptedStore;
use safemeet_crypto::account::Account;
use safemeet_crypto::at_rest::{DataKey, StoreCipher};
use safemeet_crypto::machine::CryptoMachine;
use safemeet_engine::{LogEntry, MessageState};
use safemeet_net::Config as NetConfig;
use safemeet_proto::clock::{Clock, SystemClock};
use safemeet_proto::{DisplayName, Username};
use safemeet_store::MemoryStore;

fn node(name: &str) -> anyhow::Result<safemeet_engine::Handle> {
    let account = Account::create(
        Username::new(name)?,
        DisplayName::new(name)?,
        vec![],
        SystemClock.now(),
    )?;
    let store = EncryptedStore::new(MemoryStore::new(), StoreCipher::new(&DataKey::generate()));
    CryptoMachine::store_account(&store, &account)?;
    let config = safemeet_engine::Config {
        net: NetConfig::loopback(),
        ..safemeet_engine::Config::default()
    };
    Ok(safemeet_engine::start(CryptoMachine::open(store)?, config)?)
}

/// Waits (up to 20 s) until `who` has received a message; returns its text.
async fn next_message(who: &safemeet_engine::Handle, after: &mut u64) -> anyhow::Result<String> {
    let mut log = who.log_watch();
    let wait = async {
        loop {
            for (cursor, entry) in who.events(*after, 100).await? {
                *after = cursor;
                if let LogEntry::Message { entry, .. } = entry
                    && entry.state == MessageState::Received
                {
                    return Ok::<_, anyhow::Error>(entry.text);
                }
            }
            log.changed().await?;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), wait)
        .await
        .context("no message within 20 s")?
}

async fn wait_listening(who: &safemeet_engine::Handle) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    for _ in 0..500 {
        if !who.listen_addrs().await?.is_empty() {
            return Ok(());
        }
        tick.tick().await;
    }
    bail!("the node never listened")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (alice, bob) = (node("alice")?, node("bob")?);
    wait_listening(&alice).await?;
    wait_listening(&bob).await?;
    alice
        .add_contact(&bob.invite().await?, Some("bob".into()))
        .await?;
    bob.add_contact(&alice.invite().await?, Some("alice".into()))
        .await?;
    println!("alice and bob are contacts");

    let (mut a_cursor, mut b_cursor) = (0, 0);
    alice.send_dm(bob.user_id(), "Hi Bob, it's Alice.").await?;
    println!("bob got:   {}", next_message(&bob, &mut b_cursor).await?);
    bob.send_dm(alice.user_id(), "Hello Alice!").await?;
    println!("alice got: {}", next_message(&alice, &mut a_cursor).await?);

    // Alice's first message is acknowledged by Bob's device.
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    for _ in 0..400 {
        let mine = alice.dm_messages(bob.user_id(), 10).await?;
        if mine
            .first()
            .is_some_and(|m| m.state == MessageState::Delivered)
        {
            println!("alice's message is delivered");
            alice.shutdown().await?;
            bob.shutdown().await?;
            return Ok(());
        }
        tick.tick().await;
    }
    bail!("alice's message was never acknowledged")
}
