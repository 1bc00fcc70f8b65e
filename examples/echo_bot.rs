//! A bot that answers every message through a daemon's local API.
//!
//! Run with `cargo run -p safemeet-examples --bin echo-bot -- --socket $XDG_RUNTIME_DIR/safemeet/safemeet.sock`
//! (or `DIR/safemeet.sock` for a daemon started with `--home DIR`).
//!
//! It subscribes to the event log from its newest entry and, for every
//! message that arrives, sends `echo: <text>` back to the sender, using only
//! the JSON-RPC API (`events`, `subscribe`, `send`) that the CLI uses.
//! `--count N` stops it after N answers.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use safemeet_api::Client;
use serde_json::json;

/// Answers every direct message with an echo.
#[derive(Debug, Parser)]
struct Args {
    /// The daemon's API socket (`DIR/safemeet.sock`).
    #[arg(long)]
    socket: PathBuf,
    /// Stop after this many answers.
    #[arg(long)]
    count: Option<u64>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Start after the newest event: answer only what arrives from now on.
    let mut calls = Client::connect(&args.socket).await?;
    let mut since = 0;
    loop {
        let batch = calls
            .call("events", json!({ "since": since, "limit": 1000 }))
            .await?;
        let Some(last) = batch.as_array().and_then(|a| a.last()) else {
            break;
        };
        since = last["cursor"]
            .as_u64()
            .context("an event without a cursor")?;
    }
    let mut events = Client::connect(&args.socket)
        .await?
        .subscribe(since)
        .await?;
    println!("listening from cursor {since}");
    let mut answered = 0;
    while let Some(event) = events.next().await? {
        let message = &event["message"];
        if event["type"] != "message" || message["state"] != "received" {
            continue;
        }
        let (Some(sender), Some(text)) = (message["sender"].as_str(), message["text"].as_str())
        else {
            continue;
        };
        calls
            .call(
                "send",
                json!({ "target": sender, "text": format!("echo: {text}") }),
            )
            .await?;
        answered += 1;
        println!("answered {answered}");
        if args.count.is_some_and(|n| answered >= n) {
            break;
        }
    }
    Ok(())
}
