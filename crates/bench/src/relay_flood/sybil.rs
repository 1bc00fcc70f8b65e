//! The attackers of the flood benchmark: sybils, each with a fresh peer id
//! and its own connection (a staller: four) from its own loopback address,
//! each running one [`Attack`] (sybil `i` runs attack `i mod 5`, so a
//! hundred are twenty of each) for as long as the flood lasts; and what
//! they got, second by second ([`Flood`]).
//!
//! All but the fillers go at full rate: as many requests open at once as
//! the relay reads on a connection ([`IN_FLIGHT`]), each replaced as soon
//! as it is answered. Fillers go at the relay's default per-peer rate, the
//! fastest a source can get stored: past it every request is refused and
//! still charged to its disk quota.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::request_response::{Event, Message};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId};
use safemeet_crypto::mailbox::{EpochKey, authorize, deposit_tag};
use safemeet_proto::clock::{Clock, SystemClock};
use safemeet_proto::mailbox::{
    Authorized, Deposit, DepositOutcome, FetchParams, MAX_DEPOSIT_ITEMS, MailboxError,
    MailboxRequest, MailboxResponse, OpenParams, VERSION,
};
use safemeet_proto::{MailboxId, codec};
use safemeet_relay::node::RelayConfig;
use safemeet_relay::store::{disk_cost, open_cost};
use tokio::task::JoinHandle;

use super::honest::{ENVELOPE_BYTES, Target};
use crate::mailbox_peer::{decode_response, mailbox_swarm, new_key, noise, noise32};

/// Requests a sybil keeps open: the relay's cap of mailbox streams per
/// connection (its default); more would be dropped unread.
pub(super) const IN_FLIGHT: usize = 16;
/// How often a sybil whose connection failed dials again (and a staller
/// opens streams again up to its share): often, without spinning.
pub(super) const RETRY: Duration = Duration::from_millis(100);
/// A sybil's wait for an answer: the relay's request timeout.
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Nonces a junk sybil keeps for its forged fetches.
const NONCES_KEPT: usize = 64;

/// What a sybil does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Attack {
    /// Deposits into random mailbox ids nobody opened: one envelope per
    /// request, then 64 (`DepositMany`), in turn.
    Unopened,
    /// Deposits into the honest mailbox with a tag of zeros (none) or a
    /// random one (forged), one and 64 per request in turn.
    Forged,
    /// Junk in turn: random bytes, a challenge, a fetch of the honest
    /// mailbox under its public key with a good nonce and a random
    /// signature (the relay verifies it), a request of an unknown version.
    Junk,
    /// Streams that announce the largest request (one in eight: one byte
    /// more than allowed) and send nothing, as many as the relay reads at
    /// once on each of as many connections as it allows a peer.
    Stall,
    /// Opens a mailbox of its own and fills it with validly tagged
    /// deposits, 64 per request, at the per-peer rate: legitimate-looking
    /// intake that only the quotas cap.
    Fill,
}

impl Attack {
    pub(crate) const ALL: [Attack; 5] = [
        Attack::Unopened,
        Attack::Forged,
        Attack::Junk,
        Attack::Stall,
        Attack::Fill,
    ];

    fn of(i: usize) -> Self {
        Self::ALL[i % Self::ALL.len()]
    }

    pub(crate) fn label(self) -> &'static str {
        match self {
            Attack::Unopened => "unopened",
            Attack::Forged => "forged_tag",
            Attack::Junk => "junk",
            Attack::Stall => "stall",
            Attack::Fill => "fill",
        }
    }
}

/// What the sybils got in one second of the flood.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Second {
    /// Answers received.
    pub(crate) answers: u64,
    /// Envelopes stored for sybils.
    pub(crate) stored: u64,
    /// What the relay accepted to keep for them, as on disk (envelopes
    /// and mailbox records).
    pub(crate) accepted_bytes: u64,
    /// Requests answered `RateLimited`.
    pub(crate) rate_limited: u64,
    /// Stalled streams opened.
    pub(crate) stalls: u64,
}

/// One attack's totals.
#[derive(Debug, Clone, Default)]
pub(crate) struct Totals {
    /// Sybils running it.
    pub(crate) sybils: u64,
    /// Requests (or stalled streams) sent.
    pub(crate) sent: u64,
    /// Answers received.
    pub(crate) answers: u64,
    /// Envelopes stored.
    pub(crate) stored: u64,
    /// Refusals (requests and envelopes), by the relay's code.
    pub(crate) refused: BTreeMap<String, u64>,
    /// Requests that failed without an answer (for stallers: streams that
    /// ended).
    pub(crate) failed: u64,
    /// Connections established.
    pub(crate) connections: u64,
    /// Dials that failed or were refused.
    pub(crate) dial_failures: u64,
}

/// What the flood got, second by second and per attack.
pub(crate) struct Flood {
    start: Instant,
    tally: Mutex<Tally>,
}

/// The numbers behind [`Flood`].
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub(crate) seconds: Vec<Second>,
    pub(crate) attacks: BTreeMap<Attack, Totals>,
    /// Sybils that stopped on an error, and the first error.
    pub(crate) errors: u64,
    pub(crate) first_error: Option<String>,
}

impl Flood {
    /// A flood of `secs` seconds starting now.
    pub(crate) fn new(secs: u64) -> Self {
        let seconds = usize::try_from(secs).unwrap_or(usize::MAX).min(86_400);
        Self {
            start: SystemClock.instant(),
            tally: Mutex::new(Tally {
                seconds: vec![Second::default(); seconds],
                ..Tally::default()
            }),
        }
    }

    /// Counts into `attack`'s totals and, within the flood, its second.
    pub(super) fn record(&self, attack: Attack, f: impl FnOnce(&mut Totals, &mut Second)) {
        let at = usize::try_from(SystemClock.instant().duration_since(self.start).as_secs());
        let Ok(mut tally) = self.tally.lock() else {
            return;
        };
        let mut outside = Second::default();
        let Tally {
            seconds, attacks, ..
        } = &mut *tally;
        let second = match at {
            Ok(i) if i < seconds.len() => &mut seconds[i],
            _ => &mut outside,
        };
        f(attacks.entry(attack).or_default(), second);
    }

    /// Counts an answer to a sybil.
    fn answered(&self, attack: Attack, answer: &MailboxResponse) {
        self.record(attack, |t, s| {
            t.answers += 1;
            s.answers += 1;
            let mut refuse = |code: MailboxError| {
                if code == MailboxError::RateLimited {
                    s.rate_limited += 1;
                }
                *t.refused.entry(format!("{code:?}")).or_default() += 1;
            };
            match answer {
                MailboxResponse::Receipt(_) => {
                    t.stored += 1;
                    s.stored += 1;
                    s.accepted_bytes += disk_cost(ENVELOPE_BYTES);
                }
                MailboxResponse::Receipts(outcomes) => {
                    for o in outcomes {
                        match o {
                            DepositOutcome::Stored(_) => {
                                t.stored += 1;
                                s.stored += 1;
                                s.accepted_bytes += disk_cost(ENVELOPE_BYTES);
                            }
                            DepositOutcome::Refused { code, .. } => refuse(*code),
                        }
                    }
                }
                MailboxResponse::Error { code, .. } => refuse(*code),
                MailboxResponse::Opened => s.accepted_bytes += open_cost(),
                _ => {}
            }
        });
    }

    /// A snapshot of the numbers.
    pub(crate) fn tally(&self) -> Tally {
        match self.tally.lock() {
            Ok(t) => Tally {
                seconds: t.seconds.clone(),
                attacks: t.attacks.clone(),
                errors: t.errors,
                first_error: t.first_error.clone(),
            },
            Err(_) => Tally::default(),
        }
    }

    fn failed(&self, attack: Attack, error: &anyhow::Error) {
        if let Ok(mut t) = self.tally.lock() {
            t.errors += 1;
            t.first_error
                .get_or_insert_with(|| format!("{attack:?}: {error:#}"));
        }
    }
}

/// The source address of sybil address number `k`: 127.(1 + k / 256).(k mod
/// 256).1, each in a /24 of its own (the relay's per-prefix cap is per /24).
fn source(k: usize) -> IpAddr {
    let high = u8::try_from(1 + k / 256).unwrap_or(u8::MAX);
    Ipv4Addr::new(127, high, (k % 256) as u8, 1).into()
}

/// Starts `sybils` attackers on the current runtime, from `addresses`
/// distinct source addresses (sybil `i` uses number `i mod addresses`),
/// against the relay at `addr`. Abort the handles to stop them.
pub(crate) fn launch(
    flood: &Arc<Flood>,
    sybils: usize,
    addresses: usize,
    addr: &Multiaddr,
    relay: PeerId,
    target: Target,
) -> Vec<JoinHandle<()>> {
    (0..sybils)
        .map(|i| {
            let attack = Attack::of(i);
            flood.record(attack, |t, _| t.sybils += 1);
            let from = source(i % addresses.max(1));
            let (flood, addr) = (flood.clone(), addr.clone());
            tokio::spawn(async move {
                let result = if attack == Attack::Stall {
                    super::stall::run(&flood, from, addr, relay).await
                } else {
                    let sybil = Sybil::new(i, attack, relay, target);
                    sybil.run(&flood, from, addr).await
                };
                if let Err(e) = result {
                    flood.failed(attack, &e);
                }
            })
        })
        .collect()
}

/// A sybil that speaks the mailbox protocol.
struct Sybil {
    attack: Attack,
    relay: Vec<u8>,
    target: Target,
    /// Requests made so far (picks the next kind and seeds its junk).
    n: u64,
    seed: u64,
    /// Junk: nonces received, for forged fetches.
    nonces: VecDeque<[u8; 32]>,
    /// Fill: its mailbox, and whether it is open.
    own: EpochKey,
    open: bool,
    /// Fill: an open is under way.
    opening: bool,
}

impl Sybil {
    fn new(i: usize, attack: Attack, relay: PeerId, target: Target) -> Self {
        Self {
            attack,
            relay: relay.to_bytes(),
            target,
            n: 0,
            // Far apart: each sybil's junk differs from every other's.
            seed: (i as u64) << 40,
            nonces: VecDeque::new(),
            own: new_key(),
            open: false,
            opening: false,
        }
    }

    /// Runs until aborted.
    async fn run(mut self, flood: &Flood, from: IpAddr, addr: Multiaddr) -> anyhow::Result<()> {
        let attack = self.attack;
        let mut swarm = mailbox_swarm(Some(from), IN_FLIGHT, REQUEST_TIMEOUT)?;
        let relay = PeerId::from_bytes(&self.relay)?;
        swarm.dial(addr.clone())?;
        let (mut connected, mut dialing) = (false, true);
        let mut in_flight = HashSet::new();
        // Fillers: one request of 64 envelopes per 64 of the relay's
        // default per-peer rate (200 a second: one every 320 ms), and no
        // more saved up than its per-peer burst allows at once (400: six).
        let config = RelayConfig::default();
        let rate = f64::from(config.peer_rate.max(1));
        let mut pace =
            tokio::time::interval(Duration::from_secs_f64(MAX_DEPOSIT_ITEMS as f64 / rate));
        let most_saved = (config.peer_burst as usize / MAX_DEPOSIT_ITEMS).max(1);
        let mut credit = 0usize;
        let mut redial = tokio::time::interval(RETRY);
        loop {
            if connected {
                while in_flight.len() < IN_FLIGHT {
                    let paced = attack == Attack::Fill && self.open;
                    if paced && credit == 0 {
                        break;
                    }
                    let Some(request) = self.next()? else {
                        break;
                    };
                    credit = credit.saturating_sub(usize::from(paced));
                    in_flight.insert(swarm.behaviour_mut().send_request(&relay, request));
                    flood.record(attack, |t, _| t.sent += 1);
                }
            }
            tokio::select! {
                _ = pace.tick(), if attack == Attack::Fill => credit = (credit + 1).min(most_saved),
                _ = redial.tick(), if !connected && !dialing => {
                    swarm.dial(addr.clone())?;
                    dialing = true;
                }
                event = swarm.select_next_some() => match event {
                    SwarmEvent::ConnectionEstablished { .. } => {
                        (connected, dialing) = (true, false);
                        flood.record(attack, |t, _| t.connections += 1);
                    }
                    SwarmEvent::ConnectionClosed { num_established: 0, .. } => {
                        connected = false;
                    }
                    SwarmEvent::OutgoingConnectionError { .. } => {
                        dialing = false;
                        flood.record(attack, |t, _| t.dial_failures += 1);
                    }
                    SwarmEvent::Behaviour(Event::Message {
                        message: Message::Response { request_id, response },
                        ..
                    }) => {
                        in_flight.remove(&request_id);
                        match decode_response(&response) {
                            Ok(answer) => {
                                flood.answered(attack, &answer);
                                self.learn(answer);
                            }
                            Err(_) => flood.record(attack, |t, _| t.failed += 1),
                        }
                    }
                    SwarmEvent::Behaviour(Event::OutboundFailure { request_id, .. }) => {
                        in_flight.remove(&request_id);
                        flood.record(attack, |t, _| t.failed += 1);
                        self.opening = false;
                    }
                    _ => {}
                },
            }
        }
    }

    /// What an answer teaches it.
    fn learn(&mut self, answer: MailboxResponse) {
        match answer {
            MailboxResponse::Nonce(nonce) if self.attack == Attack::Fill => {
                // Open its mailbox with it.
                self.nonces.push_back(nonce);
            }
            MailboxResponse::Nonce(nonce) => {
                if self.nonces.len() == NONCES_KEPT {
                    self.nonces.pop_front();
                }
                self.nonces.push_back(nonce);
            }
            MailboxResponse::Opened => {
                self.open = true;
                self.opening = false;
            }
            MailboxResponse::Error { .. } if self.opening && self.nonces.is_empty() => {
                // The challenge or the open was refused: try again.
                self.opening = false;
            }
            MailboxResponse::Receipts(outcomes)
                if self.attack == Attack::Fill
                    && outcomes.iter().all(|o| {
                        matches!(
                            o,
                            DepositOutcome::Refused {
                                code: MailboxError::MailboxFull,
                                ..
                            }
                        )
                    }) =>
            {
                // Full: a new mailbox of its own.
                self.own = new_key();
                self.open = false;
            }
            _ => {}
        }
    }

    /// Its next request's bytes, or `None` while it waits for an answer.
    fn next(&mut self) -> anyhow::Result<Option<Vec<u8>>> {
        self.n += 1;
        let n = self.n;
        // Each request's junk from its own 256 seeds.
        let seed = self.seed.wrapping_add(n.wrapping_mul(256));
        let request = match self.attack {
            Attack::Unopened => {
                let mailbox = |k: u64| MailboxId::from_bytes(noise32(seed + k));
                deposits(n, seed, mailbox, |k| noise32(seed + 64 + k))
            }
            Attack::Forged => {
                let honest = self.target.mailbox;
                deposits(
                    n,
                    seed,
                    |_| honest,
                    |k| {
                        // None (zeros) half the time, forged the other half.
                        if n % 4 < 2 {
                            [0; 32]
                        } else {
                            noise32(seed + k)
                        }
                    },
                )
            }
            Attack::Junk => match n % 4 {
                0 => {
                    let mut len = [0u8; 2];
                    noise(seed, &mut len);
                    let mut junk = vec![0u8; 1 + usize::from(u16::from_le_bytes(len)) % 2048];
                    noise(seed + 1, &mut junk);
                    return Ok(Some(junk));
                }
                1 => MailboxRequest::Challenge { version: VERSION },
                2 => match self.nonces.pop_front() {
                    Some(nonce) => {
                        let mut signature = [0u8; 64];
                        noise(seed, &mut signature);
                        MailboxRequest::Fetch(Authorized {
                            version: VERSION,
                            key: self.target.key,
                            nonce,
                            params: FetchParams {
                                mailbox: self.target.mailbox,
                                after: 0,
                                limit: 64,
                            },
                            signature,
                        })
                    }
                    None => MailboxRequest::Challenge { version: VERSION },
                },
                _ => MailboxRequest::Challenge {
                    version: VERSION - 1,
                },
            },
            Attack::Fill => {
                if self.open {
                    let mailbox = self.own.mailbox();
                    let check = self.own.deposit_check();
                    let items = (0..MAX_DEPOSIT_ITEMS as u64)
                        .map(|k| {
                            let mut envelope = vec![0u8; ENVELOPE_BYTES];
                            noise(seed + k, &mut envelope);
                            let tag = deposit_tag(&check, &self.relay, &mailbox, &envelope);
                            Deposit {
                                mailbox,
                                envelope,
                                tag,
                            }
                        })
                        .collect();
                    MailboxRequest::DepositMany {
                        version: VERSION,
                        items,
                    }
                } else if let Some(nonce) = self.nonces.pop_front() {
                    let params = OpenParams {
                        mailbox: self.own.mailbox(),
                        check: self.own.deposit_check(),
                    };
                    MailboxRequest::Open(authorize(&self.own, &self.relay, nonce, params)?)
                } else if !self.opening {
                    self.opening = true;
                    MailboxRequest::Challenge { version: VERSION }
                } else {
                    return Ok(None);
                }
            }
            Attack::Stall => return Ok(None),
        };
        Ok(Some(codec::encode(&request)?))
    }
}

/// Deposits of 512 random bytes: one (odd `n`) or 64 (even `n`), into
/// `mailbox(k)` with `tag(k)` for the `k`-th.
fn deposits(
    n: u64,
    seed: u64,
    mailbox: impl Fn(u64) -> MailboxId,
    tag: impl Fn(u64) -> [u8; 32],
) -> MailboxRequest {
    let envelope = |k: u64| {
        let mut e = vec![0u8; ENVELOPE_BYTES];
        noise(seed + 128 + k, &mut e);
        e
    };
    if n % 2 == 1 {
        return MailboxRequest::Deposit {
            version: VERSION,
            mailbox: mailbox(0),
            envelope: envelope(0),
            tag: tag(0),
        };
    }
    MailboxRequest::DepositMany {
        version: VERSION,
        items: (0..MAX_DEPOSIT_ITEMS as u64)
            .map(|k| Deposit {
                mailbox: mailbox(k),
                envelope: envelope(k),
                tag: tag(k),
            })
            .collect(),
    }
}
