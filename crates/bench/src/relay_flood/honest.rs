//! The honest device of the flood benchmark. It opens its mailbox, then
//! for the run's duration deposits [`RATE`] envelopes of
//! [`ENVELOPE_BYTES`] a second into it, each tagged as a contact tags it,
//! and every [`FETCH_EVERY`] fetches a page and acknowledges it (a nonce
//! each, as the daemon does). Once it stops depositing and every deposit
//! has its answer, it drains the mailbox to the end.
//!
//! It keeps at most [`IN_FLIGHT`] requests open, as the daemon does (the
//! relay reads no more at once on a connection): deposits past that wait
//! in its queue, and a deposit's latency runs from the moment it was due
//! to its receipt, queueing included.
//!
//! It runs on a thread and a runtime of its own, so its timing does not
//! wait on the attackers' tasks in the same process.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::request_response::{Event, Message, OutboundRequestId};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId};
use safemeet_crypto::mailbox::{EpochKey, authorize, deposit_tag};
use safemeet_proto::clock::{Clock, SystemClock};
use safemeet_proto::mailbox::{
    AckParams, FetchParams, MAX_FETCH_ITEMS, MailboxRequest, MailboxResponse, OpenParams, VERSION,
};
use safemeet_proto::{MailboxId, codec};
use tokio::sync::oneshot;

use crate::mailbox_peer::{MailboxSwarm, decode_response, mailbox_swarm, new_key};

/// Deposits a second: a busy conversation with a device that is offline.
pub(crate) const RATE: u32 = 20;
/// The envelopes' size, as in the relay throughput suite.
pub(crate) const ENVELOPE_BYTES: usize = 512;
/// How often it fetches: often enough that its mailbox stays small.
const FETCH_EVERY: Duration = Duration::from_secs(1);
/// Requests open at once: the relay's cap of mailbox streams per
/// connection (more are dropped unread).
const IN_FLIGHT: usize = 16;
/// How long an answer may take: the relay's own request timeout (30 s),
/// past which no answer comes.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the final drain may take before the rest counts as lost.
const DRAIN_WAIT: Duration = Duration::from_secs(60);

/// Where the honest client deposits: what the attackers aim at (its
/// mailbox, and its public key for requests signed with a wrong key).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Target {
    pub(crate) mailbox: MailboxId,
    pub(crate) key: [u8; 32],
}

/// What became of the honest client's deposits.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// Deposits it made.
    pub(crate) sent: u64,
    /// Answered with a receipt.
    pub(crate) stored: u64,
    /// Refused, by the relay's code.
    pub(crate) refused: BTreeMap<String, u64>,
    /// Failed without an answer (timeout, connection lost).
    pub(crate) failed: u64,
    /// Distinct deposits found again by its fetches.
    pub(crate) fetched: u64,
    /// Of each stored deposit: when it was due (s after the first) and
    /// its latency from due to receipt (ms).
    pub(crate) latencies: Vec<(f64, f64)>,
    /// Fetch rounds that failed (tried again at the next one).
    pub(crate) fetch_errors: u64,
    /// Times its connection closed and it dialled again.
    pub(crate) reconnects: u64,
}

impl Outcome {
    /// Deposits made and never fetched.
    pub(crate) fn lost(&self) -> u64 {
        self.sent.saturating_sub(self.fetched)
    }

    /// Latencies (ms) of the deposits due at `from_s` seconds or later.
    pub(crate) fn latencies_ms(&self, from_s: f64) -> Vec<f64> {
        self.latencies
            .iter()
            .filter(|(at, _)| *at >= from_s)
            .map(|(_, ms)| *ms)
            .collect()
    }
}

/// Starts the honest client on a thread of its own; it deposits for
/// `secs`, then drains. `ready` gets its mailbox once that is open,
/// before the first deposit. The outcome comes on the receiver.
pub(crate) fn spawn(
    addr: Multiaddr,
    relay: PeerId,
    secs: u64,
    ready: Option<oneshot::Sender<Target>>,
) -> anyhow::Result<oneshot::Receiver<anyhow::Result<Outcome>>> {
    let (tx, rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("honest client".into())
        .spawn(move || {
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(run(addr, relay, secs, ready)));
            let _ = tx.send(result);
        })?;
    Ok(rx)
}

/// A request in flight, or waiting for a slot.
#[derive(Debug, Clone, Copy)]
enum Sent {
    Deposit { due: Instant },
    Challenge { round: u64 },
    Fetch { round: u64 },
    Ack { round: u64 },
}

/// Where the current fetch round is.
#[derive(Debug)]
enum Round {
    Idle,
    /// Waiting for two nonces (fetch, ack).
    Nonces(Vec<[u8; 32]>),
    /// Waiting for the page; the ack's nonce.
    Fetching([u8; 32]),
    /// Waiting for the ack; whether more pages follow.
    Acking {
        more: bool,
    },
}

struct Client {
    swarm: MailboxSwarm,
    addr: Multiaddr,
    relay: PeerId,
    key: EpochKey,
    queue: VecDeque<(MailboxRequest, Sent)>,
    pending: HashMap<OutboundRequestId, Sent>,
    round: Round,
    round_id: u64,
    /// When it started depositing.
    start: Instant,
    fetched: HashSet<u64>,
    out: Outcome,
    draining: bool,
    drained: bool,
}

async fn run(
    addr: Multiaddr,
    relay: PeerId,
    secs: u64,
    ready: Option<oneshot::Sender<Target>>,
) -> anyhow::Result<Outcome> {
    let mut swarm = mailbox_swarm(None, IN_FLIGHT, REQUEST_TIMEOUT)?;
    swarm.dial(addr.clone())?;
    let mut c = Client {
        swarm,
        addr,
        relay,
        key: new_key(),
        queue: VecDeque::new(),
        pending: HashMap::new(),
        round: Round::Idle,
        round_id: 0,
        start: SystemClock.instant(),
        fetched: HashSet::new(),
        out: Outcome::default(),
        draining: false,
        drained: false,
    };
    c.open().await?;
    if let Some(ready) = ready {
        let _ = ready.send(Target {
            mailbox: c.key.mailbox(),
            key: c.key.public_key(),
        });
    }
    c.work(secs).await?;
    c.out.fetched = c.fetched.len() as u64;
    Ok(c.out)
}

impl Client {
    /// Sends one request and drives the swarm until its answer.
    async fn ask(&mut self, request: &MailboxRequest) -> anyhow::Result<MailboxResponse> {
        let id = self
            .swarm
            .behaviour_mut()
            .send_request(&self.relay, codec::encode(request)?);
        tokio::time::timeout(REQUEST_TIMEOUT, async {
            loop {
                match self.swarm.select_next_some().await {
                    SwarmEvent::Behaviour(Event::Message {
                        message:
                            Message::Response {
                                request_id,
                                response,
                            },
                        ..
                    }) if request_id == id => return decode_response(&response),
                    SwarmEvent::Behaviour(Event::OutboundFailure {
                        request_id, error, ..
                    }) if request_id == id => anyhow::bail!("a request failed: {error}"),
                    _ => {}
                }
            }
        })
        .await?
    }

    /// Opens its mailbox, as an owner does before contacts deposit.
    async fn open(&mut self) -> anyhow::Result<()> {
        let MailboxResponse::Nonce(nonce) = self
            .ask(&MailboxRequest::Challenge { version: VERSION })
            .await?
        else {
            anyhow::bail!("no nonce for the open");
        };
        let params = OpenParams {
            mailbox: self.key.mailbox(),
            check: self.key.deposit_check(),
        };
        let open = authorize(&self.key, &self.relay.to_bytes(), nonce, params)?;
        let answer = self.ask(&MailboxRequest::Open(open)).await?;
        anyhow::ensure!(
            answer == MailboxResponse::Opened,
            "the open was refused: {answer:?}"
        );
        Ok(())
    }

    /// Deposits for `secs` with fetch rounds, then drains to the end.
    async fn work(&mut self, secs: u64) -> anyhow::Result<()> {
        self.start = SystemClock.instant();
        let end = self.start + Duration::from_secs(secs);
        let every = Duration::from_secs(1) / RATE;
        let mut deposit = tokio::time::interval(every);
        let mut fetch = tokio::time::interval(FETCH_EVERY);
        let mut seq = 0;
        let mut drain_until = None;
        while !self.drained {
            let depositing = SystemClock.instant() < end;
            if !depositing && !self.draining && !self.deposits_open() {
                self.draining = true;
                drain_until = Some(SystemClock.instant() + DRAIN_WAIT);
                if matches!(self.round, Round::Idle) {
                    self.start_round();
                }
            }
            if drain_until.is_some_and(|until| SystemClock.instant() > until) {
                break;
            }
            tokio::select! {
                due = deposit.tick(), if depositing => {
                    // The tick's own time: when this deposit was due.
                    let due = due.into_std();
                    let request = self.deposit(seq)?;
                    self.queue.push_back((request, Sent::Deposit { due }));
                    self.out.sent += 1;
                    seq += 1;
                }
                _ = fetch.tick() => {
                    if matches!(self.round, Round::Idle) {
                        self.start_round();
                    }
                }
                event = self.swarm.select_next_some() => self.on_event(event)?,
            }
            self.pump()?;
        }
        Ok(())
    }

    /// Whether a deposit is queued or in flight.
    fn deposits_open(&self) -> bool {
        self.queue
            .iter()
            .map(|(_, s)| s)
            .chain(self.pending.values())
            .any(|s| matches!(s, Sent::Deposit { .. }))
    }

    /// The `seq`-th deposit: its number first, tagged with the check key.
    fn deposit(&self, seq: u64) -> anyhow::Result<MailboxRequest> {
        let mut envelope = vec![0x5a; ENVELOPE_BYTES];
        envelope[..8].copy_from_slice(&seq.to_be_bytes());
        let mailbox = self.key.mailbox();
        let tag = deposit_tag(
            &self.key.deposit_check(),
            &self.relay.to_bytes(),
            &mailbox,
            &envelope,
        );
        Ok(MailboxRequest::Deposit {
            version: VERSION,
            mailbox,
            envelope,
            tag,
        })
    }

    /// Sends what is queued while slots are free.
    fn pump(&mut self) -> anyhow::Result<()> {
        while self.pending.len() < IN_FLIGHT {
            let Some((request, sent)) = self.queue.pop_front() else {
                break;
            };
            let id = self
                .swarm
                .behaviour_mut()
                .send_request(&self.relay, codec::encode(&request)?);
            self.pending.insert(id, sent);
        }
        Ok(())
    }

    /// A fetch round: two nonces first, ahead of queued deposits.
    fn start_round(&mut self) {
        self.round_id += 1;
        self.round = Round::Nonces(Vec::new());
        for _ in 0..2 {
            let challenge = MailboxRequest::Challenge { version: VERSION };
            self.queue.push_front((
                challenge,
                Sent::Challenge {
                    round: self.round_id,
                },
            ));
        }
    }

    fn on_event(&mut self, event: SwarmEvent<Event<Vec<u8>, Vec<u8>>>) -> anyhow::Result<()> {
        match event {
            SwarmEvent::Behaviour(Event::Message {
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                ..
            }) => {
                if let Some(sent) = self.pending.remove(&request_id) {
                    match decode_response(&response) {
                        Ok(answer) => self.on_answer(sent, answer)?,
                        Err(_) => self.on_failure(sent),
                    }
                }
            }
            SwarmEvent::Behaviour(Event::OutboundFailure { request_id, .. }) => {
                if let Some(sent) = self.pending.remove(&request_id) {
                    self.on_failure(sent);
                }
            }
            SwarmEvent::ConnectionClosed {
                num_established: 0, ..
            } => {
                self.out.reconnects += 1;
                self.swarm.dial(self.addr.clone())?;
            }
            _ => {}
        }
        Ok(())
    }

    fn on_failure(&mut self, sent: Sent) {
        match sent {
            Sent::Deposit { .. } => self.out.failed += 1,
            Sent::Challenge { round } | Sent::Fetch { round } | Sent::Ack { round } => {
                if round == self.round_id {
                    self.out.fetch_errors += 1;
                    self.round = Round::Idle;
                }
            }
        }
    }

    fn on_answer(&mut self, sent: Sent, answer: MailboxResponse) -> anyhow::Result<()> {
        let round = match sent {
            Sent::Deposit { due, .. } => {
                match answer {
                    MailboxResponse::Receipt(_) => {
                        self.out.stored += 1;
                        let ms = SystemClock.instant().duration_since(due).as_secs_f64() * 1e3;
                        let at = due.saturating_duration_since(self.start).as_secs_f64();
                        self.out.latencies.push((at, ms));
                    }
                    MailboxResponse::Error { code, .. } => {
                        *self.out.refused.entry(format!("{code:?}")).or_default() += 1;
                    }
                    other => {
                        *self.out.refused.entry(format!("{other:?}")).or_default() += 1;
                    }
                }
                return Ok(());
            }
            Sent::Challenge { round } | Sent::Fetch { round } | Sent::Ack { round } => round,
        };
        if round != self.round_id {
            return Ok(());
        }
        let relay = self.relay.to_bytes();
        let mailbox = self.key.mailbox();
        match (std::mem::replace(&mut self.round, Round::Idle), answer) {
            (Round::Nonces(mut nonces), MailboxResponse::Nonce(nonce)) => {
                nonces.push(nonce);
                if let [fetch, ack] = nonces[..] {
                    let params = FetchParams {
                        mailbox,
                        after: 0,
                        limit: MAX_FETCH_ITEMS,
                    };
                    let request =
                        MailboxRequest::Fetch(authorize(&self.key, &relay, fetch, params)?);
                    self.queue.push_front((request, Sent::Fetch { round }));
                    self.round = Round::Fetching(ack);
                } else {
                    self.round = Round::Nonces(nonces);
                }
            }
            (Round::Fetching(ack), MailboxResponse::Envelopes { items, more }) => {
                for item in &items {
                    if let Some(seq) = item.envelope.get(..8) {
                        let mut bytes = [0u8; 8];
                        bytes.copy_from_slice(seq);
                        self.fetched.insert(u64::from_be_bytes(bytes));
                    }
                }
                if items.is_empty() {
                    if self.draining && !more {
                        self.drained = true;
                    }
                    return Ok(());
                }
                let ids = items.iter().map(|e| e.id).collect();
                let params = AckParams { mailbox, ids };
                let request = MailboxRequest::Ack(authorize(&self.key, &relay, ack, params)?);
                self.queue.push_front((request, Sent::Ack { round }));
                self.round = Round::Acking { more };
            }
            (Round::Acking { more }, MailboxResponse::Acked { .. }) => {
                if more || self.draining {
                    self.start_round();
                }
            }
            _ => self.out.fetch_errors += 1,
        }
        Ok(())
    }
}
