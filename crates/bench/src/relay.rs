//! `safemeet-bench relay`: a relay node in this process on sled in a
//! temporary directory, and a client over real TCP (Noise + yamux) on
//! 127.0.0.1 speaking `/safemeet/mailbox/1`.
//!
//! - **deposit**: envelopes of 512 bytes to 100 mailboxes, 256 requests
//!   outstanding, until every receipt is back (each one sent only after the
//!   relay flushed); one envelope per request, then 64 per request
//!   (`DepositMany`). Goal ≥ 20 000 envelopes/s.
//! - **fetch**: the same envelopes read back in pages of 64, every mailbox
//!   at once (a nonce, then a signed fetch). Goal ≥ 50 000/s.
//! - **drain**: one mailbox holding 10 000 envelopes emptied by one client
//!   page by page (nonce, fetch, nonce, ack). Goal ≤ 5 s. A bare client: a
//!   daemon's drain adds its own decryption and storage, so:
//! - **node drain**: Bob's engine (on sled, as the daemon runs) is stopped;
//!   Alice's engine sends him 10 000 DMs, each left on his relay; Bob's
//!   engine starts again, and the time from its start until all 10 000
//!   are in its event log is the drain (fetch, decrypt, store, flush, ack).
//!   Goal ≤ 5 s.
//! - **RSS**: the process's resident memory after `ops × 50` envelopes
//!   (1 000 000 by default) are stored through the service directly, in
//!   groups of 256 with one flush each, as the node stores them. Goal ≤ 256 MiB.

use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::request_response::{Event, Message};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId};
use safemeet_crypto::mailbox::{EpochKey, authorize, deposit_tag};
use safemeet_proto::clock::{Clock, SystemClock};
use safemeet_proto::mailbox::{
    AckParams, Deposit, DepositOutcome, FetchParams, MAX_DEPOSIT_ITEMS, MAX_RESPONSE_BYTES,
    MailboxRequest, MailboxResponse, OpenParams, VERSION,
};
use safemeet_proto::{MailboxId, codec};
use safemeet_relay::node::{RelayConfig, RelayEvent};
use safemeet_relay::{Limits, MailboxService, MailboxStore};
use safemeet_store_sled::SledStore;
use serde_json::{Value, json};

use crate::mailbox_peer::{MailboxSwarm, mailbox_swarm, new_key};
use crate::{median, relay_drain};

const ENVELOPE_BYTES: usize = 512;
const MAILBOXES: usize = 100;
const OUTSTANDING: usize = 256;
const DRAIN: usize = 10_000;
const PAGE: u16 = 64;

const DEPOSIT_GOAL: f64 = 20_000.0;
const FETCH_GOAL: f64 = 50_000.0;
const DRAIN_GOAL_S: f64 = 5.0;
const RSS_GOAL_MIB: f64 = 256.0;

fn limits() -> Limits {
    Limits {
        mailbox_max_envelopes: u64::MAX,
        mailbox_max_bytes: u64::MAX,
        max_envelopes: u64::MAX,
        max_bytes: u64::MAX,
        ..Limits::default()
    }
}

/// A device talking to the relay.
struct Client {
    swarm: MailboxSwarm,
    relay: PeerId,
}

impl Client {
    fn connect(addr: Multiaddr, relay: PeerId) -> anyhow::Result<Self> {
        let mut swarm = mailbox_swarm(None, OUTSTANDING, Duration::from_secs(60))?;
        swarm.dial(addr)?;
        Ok(Self { swarm, relay })
    }

    /// Sends every request, at most [`OUTSTANDING`] at once; the answers
    /// in order.
    async fn ask_all(
        &mut self,
        requests: Vec<MailboxRequest>,
    ) -> anyhow::Result<Vec<MailboxResponse>> {
        let total = requests.len();
        let mut queue = requests.into_iter().enumerate();
        let mut waiting = std::collections::HashMap::new();
        let mut answers: Vec<Option<MailboxResponse>> = (0..total).map(|_| None).collect();
        let mut done = 0;
        while done < total {
            while waiting.len() < OUTSTANDING {
                let Some((i, request)) = queue.next() else {
                    break;
                };
                let id = self
                    .swarm
                    .behaviour_mut()
                    .send_request(&self.relay, codec::encode(&request)?);
                waiting.insert(id, i);
            }
            let event =
                tokio::time::timeout(Duration::from_secs(60), self.swarm.select_next_some())
                    .await
                    .context("the relay stopped answering")?;
            match event {
                SwarmEvent::Behaviour(Event::Message {
                    message:
                        Message::Response {
                            request_id,
                            response,
                        },
                    ..
                }) => {
                    if let Some(i) = waiting.remove(&request_id) {
                        answers[i] = Some(codec::decode(&response, MAX_RESPONSE_BYTES)?);
                        done += 1;
                    }
                }
                SwarmEvent::Behaviour(Event::OutboundFailure { error, .. }) => {
                    anyhow::bail!("a request failed: {error}")
                }
                _ => {}
            }
        }
        answers
            .into_iter()
            .map(|a| a.context("an answer is missing"))
            .collect()
    }

    async fn nonces(&mut self, n: usize) -> anyhow::Result<Vec<[u8; 32]>> {
        let requests = (0..n)
            .map(|_| MailboxRequest::Challenge { version: VERSION })
            .collect();
        self.ask_all(requests)
            .await?
            .into_iter()
            .map(|r| match r {
                MailboxResponse::Nonce(n) => Ok(n),
                other => anyhow::bail!("no nonce: {other:?}"),
            })
            .collect()
    }

    /// The same as [`deposit`](Self::deposit), [`MAX_DEPOSIT_ITEMS`]
    /// envelopes per request (as a device with mail queued for several
    /// offline devices sends them).
    async fn deposit_batched(&mut self, owners: &[EpochKey], count: usize) -> anyhow::Result<()> {
        let relay = self.relay.to_bytes();
        let requests = (0..count)
            .collect::<Vec<_>>()
            .chunks(MAX_DEPOSIT_ITEMS)
            .map(|chunk| MailboxRequest::DepositMany {
                version: VERSION,
                items: chunk
                    .iter()
                    .map(|&i| {
                        let (mailbox, envelope, tag) = tagged(owners, i, &relay);
                        Deposit {
                            mailbox,
                            envelope,
                            tag,
                        }
                    })
                    .collect(),
            })
            .collect();
        let mut stored = 0;
        for answer in self.ask_all(requests).await? {
            let MailboxResponse::Receipts(outcomes) = answer else {
                anyhow::bail!("a batch was refused: {answer:?}");
            };
            for o in outcomes {
                anyhow::ensure!(matches!(o, DepositOutcome::Stored(_)), "refused: {o:?}");
                stored += 1;
            }
        }
        anyhow::ensure!(stored == count, "{stored} stored of {count}");
        Ok(())
    }

    /// Deposits `count` envelopes round-robin into `mailboxes`, one request
    /// each.
    async fn deposit(&mut self, owners: &[EpochKey], count: usize) -> anyhow::Result<()> {
        let relay = self.relay.to_bytes();
        let requests = (0..count)
            .map(|i| {
                let (mailbox, envelope, tag) = tagged(owners, i, &relay);
                MailboxRequest::Deposit {
                    version: VERSION,
                    mailbox,
                    envelope,
                    tag,
                }
            })
            .collect();
        for answer in self.ask_all(requests).await? {
            anyhow::ensure!(
                matches!(answer, MailboxResponse::Receipt(_)),
                "a deposit was refused: {answer:?}"
            );
        }
        Ok(())
    }

    /// Opens each owner's mailbox, as owners do before contacts deposit.
    async fn open_all(&mut self, owners: &[EpochKey]) -> anyhow::Result<()> {
        let nonces = self.nonces(owners.len()).await?;
        let mut requests = Vec::with_capacity(owners.len());
        for (owner, nonce) in owners.iter().zip(nonces) {
            let params = OpenParams {
                mailbox: owner.mailbox(),
                check: owner.deposit_check(),
            };
            requests.push(MailboxRequest::Open(authorize(
                owner,
                &self.relay.to_bytes(),
                nonce,
                params,
            )?));
        }
        for answer in self.ask_all(requests).await? {
            anyhow::ensure!(
                answer == MailboxResponse::Opened,
                "an open was refused: {answer:?}"
            );
        }
        Ok(())
    }

    /// Reads every envelope of every mailbox, pages of [`PAGE`], all
    /// mailboxes at once; returns how many.
    async fn fetch_all(&mut self, owners: &[EpochKey]) -> anyhow::Result<usize> {
        let mut cursors: Vec<Option<u64>> = vec![Some(0); owners.len()];
        let mut total = 0;
        loop {
            let active: Vec<usize> = (0..owners.len())
                .filter(|i| cursors[*i].is_some())
                .collect();
            if active.is_empty() {
                return Ok(total);
            }
            let nonces = self.nonces(active.len()).await?;
            let mut requests = Vec::with_capacity(active.len());
            for (&i, nonce) in active.iter().zip(nonces) {
                let params = FetchParams {
                    mailbox: owners[i].mailbox(),
                    after: cursors[i].unwrap_or(0),
                    limit: PAGE,
                };
                requests.push(MailboxRequest::Fetch(authorize(
                    &owners[i],
                    &self.relay.to_bytes(),
                    nonce,
                    params,
                )?));
            }
            for (&i, answer) in active.iter().zip(self.ask_all(requests).await?) {
                let MailboxResponse::Envelopes { items, more } = answer else {
                    anyhow::bail!("a fetch was refused: {answer:?}");
                };
                total += items.len();
                cursors[i] = if more {
                    items.last().map(|e| e.id)
                } else {
                    None
                };
            }
        }
    }

    /// Empties one mailbox page by page; returns how many it held.
    async fn drain(&mut self, owner: &EpochKey) -> anyhow::Result<usize> {
        let mailbox = owner.mailbox();
        let mut total = 0;
        loop {
            let nonces = self.nonces(2).await?;
            let params = FetchParams {
                mailbox,
                after: 0,
                limit: PAGE,
            };
            let fetch =
                MailboxRequest::Fetch(authorize(owner, &self.relay.to_bytes(), nonces[0], params)?);
            let [MailboxResponse::Envelopes { items, more }] =
                <[MailboxResponse; 1]>::try_from(self.ask_all(vec![fetch]).await?)
                    .map_err(|_| anyhow::anyhow!("one answer expected"))?
            else {
                anyhow::bail!("a fetch was refused");
            };
            total += items.len();
            let ids = items.iter().map(|e| e.id).collect();
            let ack = MailboxRequest::Ack(authorize(
                owner,
                &self.relay.to_bytes(),
                nonces[1],
                AckParams { mailbox, ids },
            )?);
            let answers = self.ask_all(vec![ack]).await?;
            anyhow::ensure!(
                matches!(answers.first(), Some(MailboxResponse::Acked { .. })),
                "an ack was refused"
            );
            if !more {
                return Ok(total);
            }
        }
    }
}

/// The `i`-th envelope of a run, into the mailbox of `owners[i % n]`, and
/// its tag for the relay `relay` (as a contact of the owner makes it).
fn tagged(owners: &[EpochKey], i: usize, relay: &[u8]) -> (MailboxId, Vec<u8>, [u8; 32]) {
    let owner = &owners[i % owners.len()];
    let mailbox = owner.mailbox();
    let envelope = vec![(i % 251) as u8; ENVELOPE_BYTES];
    let tag = deposit_tag(&owner.deposit_check(), relay, &mailbox, &envelope);
    (mailbox, envelope, tag)
}

/// Resident memory of this process, from `/proc/self/status`.
fn rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

pub(crate) fn run(samples: usize, ops: usize) -> anyhow::Result<Value> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run_async(samples, ops))
}

async fn run_async(samples: usize, ops: usize) -> anyhow::Result<Value> {
    let stored = ops * 50;
    eprintln!(
        "{samples} samples: {ops} deposits of {ENVELOPE_BYTES} B into {MAILBOXES} mailboxes, fetched back; a drain of {DRAIN}; then {stored} envelopes stored for the memory reading"
    );
    // Memory with many envelopes stored, first, in a fresh process:
    // through the service, so the reading is the relay's own (no client,
    // no network buffers, nothing freed by earlier samples).
    let rss_before = rss_mib();
    let dir = tempfile::tempdir()?;
    let backend = SledStore::open(
        dir.path().join("relay"),
        &safemeet_store_sled::Config::default(),
    )?;
    let store = MailboxStore::new(backend, limits());
    let relay_key = Keypair::generate_ed25519();
    let relay_id = relay_key.public().to_peer_id().to_bytes();
    let mut service = MailboxService::new(store, relay_key);
    let owners: Vec<EpochKey> = (0..MAILBOXES * 10).map(|_| new_key()).collect();
    let now = SystemClock.now();
    for owner in &owners {
        service
            .store()
            .open(&owner.mailbox(), owner.deposit_check(), now)?;
    }
    let t0 = SystemClock.instant();
    let mut last_report = SystemClock.instant();
    let mut i = 0;
    while i < stored {
        // As the relay node works: a group of requests, one flush.
        let n = OUTSTANDING.min(stored - i);
        let requests = (i..i + n)
            .map(|k| {
                let (mailbox, envelope, tag) = tagged(&owners, k, &relay_id);
                codec::encode(&MailboxRequest::Deposit {
                    version: VERSION,
                    mailbox,
                    envelope,
                    tag,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (answers, _) = service.handle_many(&requests, now);
        if let Some(refused) = answers
            .iter()
            .find(|a| !matches!(a, MailboxResponse::Receipt(_)))
        {
            anyhow::bail!("a deposit was refused: {refused:?}");
        }
        service.store().flush()?;
        i += n;
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!("  {i} of {stored} stored…");
            last_report = SystemClock.instant();
        }
    }
    service.store().flush()?;
    let fill = t0.elapsed().as_secs_f64();
    let rss = rss_mib();
    let totals = service.store().totals()?;
    eprintln!(
        "{stored} envelopes stored in {fill:.1} s ({:.0}/s through the service); RSS {} MiB",
        stored as f64 / fill,
        rss.map_or("?".to_owned(), |r| format!("{r:.0}"))
    );

    let (mut deposit_rates, mut fetch_rates, mut drains) = (vec![], vec![], vec![]);
    let (mut batched_rates, mut node_drains) = (vec![], vec![]);
    // A daemon's drain: as many messages as the bare drain, fewer in a
    // small run.
    let node_count = DRAIN.min(ops);
    for sample in 1..=samples {
        let dir = tempfile::tempdir()?;
        let (relay, addr) = start_relay(dir.path()).await?;
        let mut client = Client::connect(addr, relay.peer_id)?;
        let owners: Vec<EpochKey> = (0..MAILBOXES).map(|_| new_key()).collect();
        client.open_all(&owners).await?;
        // Warm-up: the connection and the first pages of the tree.
        client.deposit(&owners, 1_000).await?;

        let t0 = SystemClock.instant();
        client.deposit(&owners, ops).await?;
        let deposit = ops as f64 / t0.elapsed().as_secs_f64();
        let t0 = SystemClock.instant();
        client.deposit_batched(&owners, ops).await?;
        let batched = ops as f64 / t0.elapsed().as_secs_f64();

        let t0 = SystemClock.instant();
        let fetched = client.fetch_all(&owners).await?;
        let fetch = fetched as f64 / t0.elapsed().as_secs_f64();
        let expected = 2 * ops + 1_000;
        anyhow::ensure!(
            fetched == expected,
            "{fetched} envelopes fetched of {expected}"
        );

        let one = [new_key()];
        client.open_all(&one).await?;
        client.deposit(&one, DRAIN).await?;
        let drainer = &one[0];
        let t0 = SystemClock.instant();
        let drained = client.drain(drainer).await?;
        let drain = t0.elapsed().as_secs_f64();
        anyhow::ensure!(drained == DRAIN, "{drained} drained of {DRAIN}");
        relay.stop().await;
        let (left, node) = relay_drain::node_drain(node_count).await?;

        eprintln!(
            "sample {sample}/{samples}: deposit {deposit:.0}/s one per request, {batched:.0}/s {MAX_DEPOSIT_ITEMS} per request; fetch {fetch:.0}/s; drain of {DRAIN} {drain:.2} s; a daemon left {node_count} messages on the relay in {left:.1} s and drained them in {node:.2} s"
        );
        node_drains.push(node);
        deposit_rates.push(deposit);
        batched_rates.push(batched);
        fetch_rates.push(fetch);
        drains.push(drain);
    }

    let (deposit, fetch, drain) = (median(deposit_rates), median(fetch_rates), median(drains));
    let batched = median(batched_rates);
    let node = median(node_drains);
    let report = json!({
        "suite": "relay",
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
        "samples": samples,
        "transport": "TCP + Noise + yamux on 127.0.0.1; relay on sled",
        "envelope_bytes": ENVELOPE_BYTES,
        "deposit_per_second_one_per_request": deposit.round(),
        "deposit_per_second_batched": batched.round(),
        "deposit_batch_envelopes": MAX_DEPOSIT_ITEMS,
        "fetch_per_second": fetch.round(),
        "drain_seconds": (drain * 1000.0).round() / 1000.0,
        "drain_envelopes": DRAIN,
        "node_drain_seconds": (node * 1000.0).round() / 1000.0,
        "node_drain_messages": node_count,
        "stored_envelopes": totals.envelopes,
        "rss_mib_with_stored": rss.map(|r| r.round()),
        "rss_mib_at_start": rss_before.map(|r| r.round()),
        "goal": {
            "deposit_per_second_min": DEPOSIT_GOAL,
            "fetch_per_second_min": FETCH_GOAL,
            "drain_seconds_max": DRAIN_GOAL_S,
            "rss_mib_max": RSS_GOAL_MIB,
            "rss_judged_at_envelopes": 1_000_000,
            "deposit_met_one_per_request": deposit >= DEPOSIT_GOAL,
            "deposit_met_batched": batched >= DEPOSIT_GOAL,
            "fetch_met": fetch >= FETCH_GOAL,
            "drain_met": drain <= DRAIN_GOAL_S,
            "node_drain_met": node_count >= DRAIN && node <= DRAIN_GOAL_S,
            "rss_met": stored >= 1_000_000 && rss.is_some_and(|r| r <= RSS_GOAL_MIB),
        },
    });
    eprintln!("{}", serde_json::to_string_pretty(&report)?);
    Ok(report)
}

/// A relay node on sled under `dir`, listening on 127.0.0.1, with no
/// per-peer rate limit (one client makes every request here); returns it
/// and its address (with `/p2p/<id>`).
pub(crate) async fn start_relay(
    dir: &std::path::Path,
) -> anyhow::Result<(safemeet_relay::node::RelayHandle, Multiaddr)> {
    let backend = SledStore::open(dir.join("relay"), &safemeet_store_sled::Config::default())?;
    let key = Keypair::generate_ed25519();
    let service = MailboxService::new(MailboxStore::new(backend, limits()), key.clone());
    let config = RelayConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse()?],
        peer_rate: u32::MAX,
        peer_burst: u32::MAX,
        peer_disk_kib_per_hour: u32::MAX,
        peer_disk_burst_kib: u32::MAX,
        // One client keeps OUTSTANDING requests in flight on one
        // connection: throughput, not abuse, is measured here.
        max_streams_per_connection: OUTSTANDING,
        ..RelayConfig::default()
    };
    let mut relay = safemeet_relay::node::spawn(key, config, service)?;
    let Some(RelayEvent::Listening(addr)) = relay.events.recv().await else {
        anyhow::bail!("the relay did not listen");
    };
    Ok((relay, addr))
}
