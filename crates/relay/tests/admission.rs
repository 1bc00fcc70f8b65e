//! Relay admission: a relay cannot be filled by strangers. Each attack of
//! issue 15 against a real relay node (the production `node::spawn` over
//! sled) on TCP loopback, driven by bare libp2p peers, with its cost
//! measured (refusals, the store's totals, bytes on disk) while an honest
//! owner and contact are served throughout. (The early expiry of mailboxes
//! nobody fetches, and what sled really writes: `tests/disk.rs`.)

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use libp2p::request_response::{self, Event, Message, ProtocolSupport};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, identity::Keypair, noise, tcp, yamux};
use safemeet_crypto::mailbox::{EpochKey, authorize, deposit_tag};
use safemeet_net::{MAILBOX_PROTOCOL, MailboxCodec};
use safemeet_proto::mailbox::{
    Deposit, FetchParams, MAX_RESPONSE_BYTES, MailboxError, MailboxRequest, MailboxResponse,
    OpenParams, VERSION,
};
use safemeet_proto::{MailboxId, codec};
use safemeet_relay::node::{RelayConfig, RelayEvent, RelayHandle};
use safemeet_relay::store::disk_cost;
use safemeet_relay::{Limits, MailboxService, MailboxStore};
use safemeet_store_sled::SledStore;
use vodozemac::Ed25519SecretKey;

/// Every wait in these tests ends in a failure after this long.
const WAIT: Duration = Duration::from_secs(60);
/// The size of the envelopes the attacks deposit: a padded 2 KiB frame,
/// sealed, as every real deposit is at least.
const ENVELOPE: usize = 2048 + 48;

/// A relay node over sled in a temporary directory, on loopback.
struct Node {
    handle: RelayHandle,
    addr: Multiaddr,
    peer: PeerId,
    /// The store under the node (sled handles share one database).
    store: MailboxStore<SledStore>,
    dir: tempfile::TempDir,
}

impl Node {
    async fn start(limits: Limits, config: RelayConfig) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let backend = SledStore::open(
            dir.path().join("relay"),
            &safemeet_store_sled::Config::default(),
        )
        .unwrap();
        let key = Keypair::generate_ed25519();
        let store = MailboxStore::new(backend, limits);
        let service = MailboxService::new(store.clone(), key.clone());
        let config = RelayConfig {
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
            ..config
        };
        let mut handle = safemeet_relay::node::spawn(key, config, service).unwrap();
        let Some(RelayEvent::Listening(addr)) = tokio::time::timeout(WAIT, handle.events.recv())
            .await
            .unwrap()
        else {
            panic!("the relay did not listen")
        };
        let peer = handle.peer_id;
        Self {
            handle,
            addr,
            peer,
            store,
            dir,
        }
    }

    /// Bytes of the relay's database on disk, after a flush.
    fn disk_bytes(&self) -> u64 {
        self.store.flush().unwrap();
        dir_bytes(self.dir.path())
    }
}

fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() {
            dir_bytes(&entry.path())
        } else {
            meta.len()
        };
    }
    total
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A peer speaking the mailbox protocol with its own fresh peer id.
struct Peer {
    swarm: libp2p::Swarm<request_response::Behaviour<MailboxCodec>>,
    relay: PeerId,
}

impl Peer {
    fn new(node: &Node) -> Self {
        let mut swarm = libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(
                tcp::Config::default(),
                noise::Config::new,
                yamux::Config::default,
            )
            .unwrap()
            .with_behaviour(|_| {
                request_response::Behaviour::with_codec(
                    MailboxCodec::default(),
                    [(MAILBOX_PROTOCOL, ProtocolSupport::Outbound)],
                    request_response::Config::default()
                        .with_request_timeout(WAIT)
                        .with_max_concurrent_streams(16),
                )
            })
            .unwrap()
            .with_swarm_config(|c| c.with_idle_connection_timeout(WAIT))
            .build();
        swarm.dial(node.addr.clone()).unwrap();
        Self {
            swarm,
            relay: node.peer,
        }
    }

    /// Sends every request, at most 16 outstanding (what a relay reads at
    /// once per connection); the answers in order.
    async fn ask_all(&mut self, requests: Vec<MailboxRequest>) -> Vec<MailboxResponse> {
        let total = requests.len();
        let mut queue = requests.into_iter().enumerate();
        let mut waiting = HashMap::new();
        let mut answers: Vec<Option<MailboxResponse>> = (0..total).map(|_| None).collect();
        let mut done = 0;
        while done < total {
            while waiting.len() < 16 {
                let Some((i, request)) = queue.next() else {
                    break;
                };
                let id = self
                    .swarm
                    .behaviour_mut()
                    .send_request(&self.relay, codec::encode(&request).unwrap());
                waiting.insert(id, i);
            }
            let event = tokio::time::timeout(WAIT, self.swarm.select_next_some())
                .await
                .expect("the relay answers");
            match event {
                SwarmEvent::Behaviour(Event::Message {
                    message:
                        Message::Response {
                            request_id,
                            response,
                        },
                    ..
                }) => {
                    let i = waiting.remove(&request_id).unwrap();
                    answers[i] = Some(codec::decode(&response, MAX_RESPONSE_BYTES).unwrap());
                    done += 1;
                }
                SwarmEvent::Behaviour(Event::OutboundFailure { error, .. }) => {
                    panic!("a request failed: {error}")
                }
                _ => {}
            }
        }
        answers.into_iter().map(Option::unwrap).collect()
    }

    async fn ask(&mut self, request: MailboxRequest) -> MailboxResponse {
        self.ask_all(vec![request]).await.pop().unwrap()
    }

    async fn nonces(&mut self, n: usize) -> Vec<[u8; 32]> {
        let requests = (0..n)
            .map(|_| MailboxRequest::Challenge { version: VERSION })
            .collect();
        self.ask_all(requests)
            .await
            .into_iter()
            .map(|r| match r {
                MailboxResponse::Nonce(n) => n,
                other => panic!("no nonce: {other:?}"),
            })
            .collect()
    }

    /// Opens `owner`'s mailbox, as its owner does.
    async fn open(&mut self, owner: &EpochKey) -> MailboxResponse {
        let nonce = self.nonces(1).await[0];
        let params = OpenParams {
            mailbox: owner.mailbox(),
            check: owner.deposit_check(),
        };
        let relay = self.relay.to_bytes();
        self.ask(MailboxRequest::Open(
            authorize(owner, &relay, nonce, params).unwrap(),
        ))
        .await
    }

    /// `n` fetches of `owner`'s mailbox, each over its own nonce.
    async fn fetches(&mut self, owner: &EpochKey, n: usize) -> Vec<MailboxResponse> {
        let relay = self.relay.to_bytes();
        let requests = self
            .nonces(n)
            .await
            .into_iter()
            .map(|nonce| {
                let params = FetchParams {
                    mailbox: owner.mailbox(),
                    after: 0,
                    limit: 64,
                };
                MailboxRequest::Fetch(authorize(owner, &relay, nonce, params).unwrap())
            })
            .collect();
        self.ask_all(requests).await
    }

    /// A deposit into `owner`'s mailbox as its contacts make it.
    fn tagged(&self, owner: &EpochKey, envelope: Vec<u8>) -> MailboxRequest {
        let mailbox = owner.mailbox();
        let tag = deposit_tag(
            &owner.deposit_check(),
            &self.relay.to_bytes(),
            &mailbox,
            &envelope,
        );
        MailboxRequest::Deposit {
            version: VERSION,
            mailbox,
            envelope,
            tag,
        }
    }
}

fn new_key() -> EpochKey {
    EpochKey::derive(&Ed25519SecretKey::new(), 20_000)
}

fn code(response: &MailboxResponse) -> Option<MailboxError> {
    match response {
        MailboxResponse::Error { code, .. } => Some(*code),
        _ => None,
    }
}

fn envelope(n: usize) -> Vec<u8> {
    vec![(n % 251) as u8; ENVELOPE]
}

/// Generous per-peer request limits, so the attacks below are as fast as
/// the relay answers: what bounds them is admission, not the rate limiter.
fn open_rates() -> RelayConfig {
    RelayConfig {
        peer_rate: 100_000,
        peer_burst: 100_000,
        ..RelayConfig::default()
    }
}

#[tokio::test]
async fn a_stranger_stores_nothing_while_a_contact_is_served() {
    let node = Node::start(Limits::default(), open_rates()).await;
    // Bob's mailbox of today, which he opens, and his real mailbox of
    // tomorrow, which he has not opened yet.
    let secret = Ed25519SecretKey::new();
    let (bob, bob_tomorrow) = (
        EpochKey::derive(&secret, 20_000),
        EpochKey::derive(&secret, 20_001),
    );
    let mut bob_device = Peer::new(&node);
    assert_eq!(bob_device.open(&bob).await, MailboxResponse::Opened);
    let mut alice = Peer::new(&node);
    let mut stranger = Peer::new(&node);
    let disk_before = node.disk_bytes();
    let rss_before = rss_kib();

    // Rounds of 300 deposits from one fresh peer id: to random mailbox
    // ids, to Bob's real but unopened mailbox (tagged as a contact would),
    // and to Bob's open mailbox with tags it cannot make. Between rounds,
    // Alice (a contact) deposits and is receipted.
    let (mut refused, mut slowed, mut attempted, mut alice_stored) = (0, 0, 0, 0);
    for round in 0..10 {
        let requests = (0..300)
            .map(|n| match n % 3 {
                0 => MailboxRequest::Deposit {
                    version: VERSION,
                    mailbox: MailboxId::from_bytes(rand::random()),
                    envelope: envelope(n),
                    tag: rand::random(),
                },
                1 => stranger.tagged(&bob_tomorrow, envelope(n)),
                _ => MailboxRequest::Deposit {
                    version: VERSION,
                    mailbox: bob.mailbox(),
                    envelope: envelope(n),
                    // Keyed with what a stranger can know: nothing of Bob's.
                    tag: deposit_tag(
                        &new_key().deposit_check(),
                        &node.peer.to_bytes(),
                        &bob.mailbox(),
                        &envelope(n),
                    ),
                },
            })
            .collect();
        for answer in stranger.ask_all(requests).await {
            attempted += 1;
            // One answer, whichever the reason: it tells nothing of which
            // mailboxes are open. (Past 3 MiB tried, as on disk, its byte
            // rate slows it down too.)
            match code(&answer) {
                Some(MailboxError::Refused) => refused += 1,
                Some(MailboxError::RateLimited) => slowed += 1,
                _ => panic!("a stranger's deposit was not refused: {answer:?}"),
            }
        }
        let deposit = alice.tagged(&bob, format!("from alice {round}").into_bytes());
        assert!(
            matches!(alice.ask(deposit).await, MailboxResponse::Receipt(_)),
            "the contact is served in round {round}"
        );
        alice_stored += 1;
    }
    // A batch of the same, from another fresh peer id, is refused item by
    // item.
    let mut stranger = Peer::new(&node);
    let batch = MailboxRequest::DepositMany {
        version: VERSION,
        items: (0..16)
            .map(|n| Deposit {
                mailbox: MailboxId::from_bytes(rand::random()),
                envelope: envelope(n),
                tag: rand::random(),
            })
            .collect(),
    };
    let MailboxResponse::Receipts(outcomes) = stranger.ask(batch).await else {
        panic!("no outcomes")
    };
    assert!(
        outcomes.iter().all(|o| matches!(
            o,
            safemeet_proto::mailbox::DepositOutcome::Refused {
                code: MailboxError::Refused,
                ..
            }
        )),
        "{outcomes:?}"
    );

    // What it cost: nothing stored, nothing on disk, little memory.
    let totals = node.store.totals().unwrap();
    assert_eq!(
        (totals.envelopes, totals.mailboxes),
        (alice_stored, 1),
        "only Alice's deposits are kept, in Bob's one mailbox"
    );
    let disk_after = node.disk_bytes();
    let tried = (attempted * ENVELOPE) as u64;
    let grown = disk_after.saturating_sub(disk_before);
    eprintln!(
        "{refused} of {attempted} stranger deposits refused, {slowed} slowed ({} MiB tried); disk grew {grown} B; RSS {} → {} KiB",
        tried >> 20,
        rss_before,
        rss_kib()
    );
    // Its first 3 MiB (as on disk, about 590 deposits) are refused
    // outright; the rest slowed.
    assert!(refused > 200, "refused outright at first: {refused}");
    assert!(
        grown < tried / 20,
        "the disk grew by {grown} B for {tried} B of refused deposits"
    );
    assert!(
        rss_kib() < rss_before + 128 * 1024,
        "memory stays bounded: {} KiB → {} KiB",
        rss_before,
        rss_kib()
    );
    // Bob gets Alice's mail, and nothing else.
    let got = bob_device.fetches(&bob, 1).await.pop().unwrap();
    let MailboxResponse::Envelopes { items, .. } = got else {
        panic!("no envelopes: {got:?}")
    };
    assert_eq!(items.len() as u64, alice_stored);
    assert!(items.iter().all(|e| e.envelope.starts_with(b"from alice")));
    node.handle.stop().await;
}

#[tokio::test]
async fn byte_quotas_hold_per_source_and_per_mailbox() {
    // A source may add 128 KiB (as on disk) at once, then 128 KiB an hour;
    // a mailbox takes at most 200 KiB a day.
    let daily = 200 * 1024;
    let limits = Limits {
        mailbox_daily_bytes: daily,
        ..Limits::default()
    };
    let config = RelayConfig {
        peer_disk_kib_per_hour: 128,
        peer_disk_burst_kib: 128,
        ..open_rates()
    };
    let node = Node::start(limits, config).await;
    let (bob, carol) = (new_key(), new_key());
    let mut owner = Peer::new(&node);
    assert_eq!(owner.open(&bob).await, MailboxResponse::Opened);
    assert_eq!(owner.open(&carol).await, MailboxResponse::Opened);

    // One contact floods Carol's mailbox: its source quota stops it.
    let mut flooder = Peer::new(&node);
    let requests = (0..200)
        .map(|n| flooder.tagged(&carol, envelope(n)))
        .collect();
    let answers = flooder.ask_all(requests).await;
    let stored = answers
        .iter()
        .filter(|a| matches!(a, MailboxResponse::Receipt(_)))
        .count() as u64;
    let limited = answers
        .iter()
        .filter(|a| code(a) == Some(MailboxError::RateLimited))
        .count();
    assert_eq!(stored as usize + limited, 200, "receipted or slowed down");
    assert!(
        stored * disk_cost(ENVELOPE) <= 128 * 1024,
        "{stored} envelopes stored from one source, over its 128 KiB"
    );
    assert!(
        stored > 0 && limited > 0,
        "{stored} stored, {limited} slowed"
    );

    // Many sources (fresh peer ids, each within its own quota) into Bob's
    // mailbox: its daily quota stops them, counted in bytes on disk.
    let mut full = 0;
    let mut bob_stored = 0u64;
    for _ in 0..4 {
        let mut source = Peer::new(&node);
        let requests = (0..20).map(|n| source.tagged(&bob, envelope(n))).collect();
        for answer in source.ask_all(requests).await {
            match answer {
                MailboxResponse::Receipt(_) => bob_stored += 1,
                ref other if code(other) == Some(MailboxError::MailboxFull) => full += 1,
                other => panic!("unexpected: {other:?}"),
            }
        }
    }
    assert!(full > 0, "Bob's mailbox filled for the day");
    assert!(
        bob_stored * disk_cost(ENVELOPE) <= daily,
        "{bob_stored} envelopes in Bob's mailbox, over its daily bytes"
    );
    // Another mailbox and another source are still served.
    let mut contact = Peer::new(&node);
    let deposit = contact.tagged(&carol, b"an honest message".to_vec());
    assert!(matches!(
        contact.ask(deposit).await,
        MailboxResponse::Receipt(_)
    ));
    let totals = node.store.totals().unwrap();
    assert_eq!(totals.envelopes, stored + bob_stored + 1);
    assert_eq!(
        totals.bytes,
        (stored + bob_stored) * disk_cost(ENVELOPE) + disk_cost(17)
    );
    node.handle.stop().await;
}

#[tokio::test]
async fn a_nonce_flood_on_one_mailbox_refuses_no_other_mailbox() {
    let node = Node::start(Limits::default(), open_rates()).await;
    let (bob, mallory) = (new_key(), new_key());
    let mut bob_device = Peer::new(&node);
    assert_eq!(bob_device.open(&bob).await, MailboxResponse::Opened);
    let deposit = bob_device.tagged(&bob, b"for bob".to_vec());
    assert!(matches!(
        bob_device.ask(deposit).await,
        MailboxResponse::Receipt(_)
    ));

    // Mallory spends nonces on her own mailbox as fast as the relay
    // answers: 1 200 fetches in rounds, with Bob fetching between rounds.
    let mut attacker = Peer::new(&node);
    let (mut served, mut limited) = (0, 0);
    for _ in 0..12 {
        for answer in attacker.fetches(&mallory, 100).await {
            match answer {
                MailboxResponse::Envelopes { .. } => served += 1,
                ref other if code(other) == Some(MailboxError::RateLimited) => limited += 1,
                other => panic!("unexpected: {other:?}"),
            }
        }
        let answer = bob_device.fetches(&bob, 1).await.pop().unwrap();
        let MailboxResponse::Envelopes { items, .. } = answer else {
            panic!("Bob's fetch was refused: {answer:?}")
        };
        assert_eq!(items.len(), 1);
    }
    // Her mailbox is held to its share of spent nonces for the minute
    // (1 024, `service::MAX_SPENT_PER_MAILBOX`).
    assert!(
        served <= 1024,
        "{served} fetches of one mailbox in a minute"
    );
    assert!(limited >= 1200 - 1024, "{limited} of 1 200 refused");
    assert_eq!(served + limited, 1200);
    node.handle.stop().await;
}

#[tokio::test]
async fn fresh_peer_ids_from_one_network_share_its_disk_quota() {
    // Each peer id may add plenty; their network (here 127.0.0.0/24,
    // counted as any other for this test) 128 KiB at once, then 128 KiB
    // an hour.
    let config = RelayConfig {
        prefix_disk_kib_per_hour: 128,
        prefix_disk_burst_kib: 128,
        prefix_quota_on_loopback: true,
        ..open_rates()
    };
    let node = Node::start(Limits::default(), config).await;
    let carol = new_key();
    let mut owner = Peer::new(&node);
    assert_eq!(owner.open(&carol).await, MailboxResponse::Opened);
    let mut stored = 0u64;
    let mut limited_per_source = Vec::new();
    for _ in 0..4 {
        // A fresh peer id each time, as a flooder would make.
        let mut source = Peer::new(&node);
        let requests = (0..40)
            .map(|n| source.tagged(&carol, envelope(n)))
            .collect();
        let mut limited = 0;
        for answer in source.ask_all(requests).await {
            match answer {
                MailboxResponse::Receipt(_) => stored += 1,
                ref other if code(other) == Some(MailboxError::RateLimited) => limited += 1,
                other => panic!("unexpected: {other:?}"),
            }
        }
        limited_per_source.push(limited);
    }
    assert!(
        stored * disk_cost(ENVELOPE) <= 128 * 1024 + disk_cost(ENVELOPE),
        "{stored} envelopes stored from one network, over its 128 KiB"
    );
    assert_eq!(
        limited_per_source.last(),
        Some(&40),
        "a fresh peer id gets no fresh quota: {limited_per_source:?}"
    );
    node.handle.stop().await;
}
