//! End-to-end tests with a real `safemeet relay` process on 127.0.0.1 and a
//! libp2p peer speaking `/safemeet/mailbox/1`: an owner opens its mailbox,
//! a contact's tagged deposits are receipted and
//! survive a restart of the relay, only the mailbox key fetches and
//! deletes, neither the relay's files nor its logs hold anything that
//! names the depositor, and SIGTERM at any step of a start stops it cleanly.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::io::Read;
use std::process::Command;

use libp2p::PeerId;
use libp2p::request_response;
use safemeet_crypto::mailbox::{EpochKey, authorize, deposit_tag};
use safemeet_net::{MAILBOX_PROTOCOL, MailboxCodec};
use safemeet_proto::codec;
use safemeet_proto::mailbox::{
    AckParams, FetchParams, MailboxError, MailboxRequest, MailboxResponse, OpenParams, Receipt,
    VERSION,
};
use serde_json::Value;
use vodozemac::Ed25519SecretKey;

mod support;

use support::Relay;

type Swarm = libp2p::Swarm<request_response::Behaviour<MailboxCodec>>;

/// A device talking to the relay: its own libp2p identity, nothing else.
struct Client {
    swarm: Swarm,
    relay: PeerId,
    rt: tokio::runtime::Runtime,
}

impl Client {
    fn new(relay: &Relay) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut swarm =
            rt.block_on(async { support::client_swarm(MailboxCodec::default(), MAILBOX_PROTOCOL) });
        rt.block_on(async { swarm.dial(relay.addr.clone()).unwrap() });
        Self {
            swarm,
            relay: relay.peer,
            rt,
        }
    }

    fn peer_id(&self) -> PeerId {
        *self.swarm.local_peer_id()
    }

    fn ask(&mut self, request: &MailboxRequest) -> MailboxResponse {
        let answer = self.ask_raw(codec::encode(request).unwrap());
        codec::decode(&answer, safemeet_proto::mailbox::MAX_RESPONSE_BYTES).unwrap()
    }

    /// Sends `bytes` as they are; returns the relay's answer.
    fn ask_raw(&mut self, bytes: Vec<u8>) -> Vec<u8> {
        let (swarm, relay) = (&mut self.swarm, self.relay);
        let mut answers = self
            .rt
            .block_on(support::request_all(swarm, &relay, vec![bytes]));
        answers.pop().unwrap().expect("the relay answered")
    }

    /// A deposit into `owner`'s mailbox as a contact makes it (tagged
    /// with the epoch's deposit check key, for this relay).
    fn deposit_request(&self, owner: &EpochKey, envelope: &[u8]) -> MailboxRequest {
        let mailbox = owner.mailbox();
        MailboxRequest::Deposit {
            version: VERSION,
            mailbox,
            envelope: envelope.to_vec(),
            tag: deposit_tag(
                &owner.deposit_check(),
                &self.relay.to_bytes(),
                &mailbox,
                envelope,
            ),
        }
    }

    fn deposit(&mut self, owner: &EpochKey, envelope: &[u8]) -> MailboxResponse {
        let request = self.deposit_request(owner, envelope);
        self.ask(&request)
    }

    /// Opens `key`'s mailbox, as its owner does.
    fn open(&mut self, key: &EpochKey) {
        let nonce = self.nonce();
        let params = OpenParams {
            mailbox: key.mailbox(),
            check: key.deposit_check(),
        };
        let answer = self.ask(&MailboxRequest::Open(
            authorize(key, &self.relay.to_bytes(), nonce, params).unwrap(),
        ));
        assert_eq!(answer, MailboxResponse::Opened);
    }

    fn nonce(&mut self) -> [u8; 32] {
        match self.ask(&MailboxRequest::Challenge { version: VERSION }) {
            MailboxResponse::Nonce(n) => n,
            other => panic!("no nonce: {other:?}"),
        }
    }

    fn fetch(&mut self, key: &EpochKey) -> MailboxResponse {
        let nonce = self.nonce();
        let params = FetchParams {
            mailbox: key.mailbox(),
            after: 0,
            limit: 64,
        };
        self.ask(&MailboxRequest::Fetch(
            authorize(key, &self.relay.to_bytes(), nonce, params).unwrap(),
        ))
    }

    fn ack(&mut self, key: &EpochKey, ids: Vec<u64>) -> MailboxResponse {
        let nonce = self.nonce();
        let params = AckParams {
            mailbox: key.mailbox(),
            ids,
        };
        self.ask(&MailboxRequest::Ack(
            authorize(key, &self.relay.to_bytes(), nonce, params).unwrap(),
        ))
    }
}

#[test]
fn a_relay_keeps_envelopes_for_their_owner_and_knows_nothing_of_the_sender() {
    let home = tempfile::tempdir().unwrap();
    let relay = Relay::start(home.path(), &[]);
    let bob = new_key();
    let mailbox = bob.mailbox();
    // Bob has opened his mailbox.
    Client::new(&relay).open(&bob);

    // Alice, a device with her own peer id, leaves three envelopes.
    let mut alice = Client::new(&relay);
    let alice_peer = alice.peer_id();
    let relay_key = libp2p::identity::PublicKey::try_decode_protobuf(relay.peer.as_ref().digest())
        .expect("an Ed25519 peer id holds its key");
    for n in 1..=3u64 {
        let envelope = format!("sealed envelope {n}");
        let MailboxResponse::Receipt(receipt) = alice.deposit(&bob, envelope.as_bytes()) else {
            panic!("no receipt")
        };
        assert_eq!(receipt.id, n);
        let signed =
            Receipt::signed_bytes(&mailbox, receipt.id, receipt.stored_until, &receipt.digest);
        assert!(
            relay_key.verify(&signed, &receipt.signature),
            "signed by the relay it dialled"
        );
    }
    drop(alice);

    // The relay restarts: what it receipted is still there.
    let logs_before = relay.stop();
    let relay = Relay::start(home.path(), &[]);
    let mut bob_device = Client::new(&relay);
    let mallory = new_key();
    // Mallory can neither read nor empty Bob's mailbox.
    let mut mallory_device = Client::new(&relay);
    let nonce = mallory_device.nonce();
    let theft = authorize(
        &mallory,
        &relay.peer.to_bytes(),
        nonce,
        FetchParams {
            mailbox,
            after: 0,
            limit: 64,
        },
    )
    .unwrap();
    assert!(matches!(
        mallory_device.ask(&MailboxRequest::Fetch(theft)),
        MailboxResponse::Error {
            code: MailboxError::BadSignature,
            ..
        }
    ));

    let MailboxResponse::Envelopes { items, more } = bob_device.fetch(&bob) else {
        panic!("no envelopes")
    };
    assert!(!more);
    let texts: Vec<String> = items
        .iter()
        .map(|e| String::from_utf8(e.envelope.clone()).unwrap())
        .collect();
    assert_eq!(
        texts,
        [
            "sealed envelope 1",
            "sealed envelope 2",
            "sealed envelope 3"
        ]
    );
    assert_eq!(
        bob_device.ack(&bob, items.iter().map(|e| e.id).collect()),
        MailboxResponse::Acked { removed: 3 }
    );
    let MailboxResponse::Envelopes { items, .. } = bob_device.fetch(&bob) else {
        panic!("no envelopes")
    };
    assert!(items.is_empty(), "deleted on ack");
    let logs_after = relay.stop();

    // Nothing the relay keeps or logs names Alice's device.
    let files = support::dump(&home.path().join("relay"));
    let logs = format!("{logs_before}{logs_after}");
    assert!(
        !logs.is_empty() && !files.is_empty(),
        "there is something to search"
    );
    for needle in [alice_peer.to_bytes(), alice_peer.to_string().into_bytes()] {
        assert!(
            !support::contains(&files, &needle),
            "Alice's peer id is in the relay's files"
        );
        assert!(
            !support::contains(logs.as_bytes(), &needle),
            "Alice's peer id is in the relay's logs"
        );
    }
    assert!(
        !support::contains(logs.as_bytes(), mailbox.to_string().as_bytes()),
        "no mailbox ids in logs"
    );
}

#[test]
fn a_relay_refuses_bad_input_and_keeps_serving() {
    let home = tempfile::tempdir().unwrap();
    let relay = Relay::start(home.path(), &["--mailbox-max-envelopes", "1"]);
    let bob = new_key();
    let mut client = Client::new(&relay);
    client.open(&bob);
    assert!(matches!(
        client.deposit(&bob, b"one"),
        MailboxResponse::Receipt(_)
    ));
    assert!(matches!(
        client.deposit(&bob, b"two"),
        MailboxResponse::Error {
            code: MailboxError::MailboxFull,
            ..
        }
    ));
    // Undecodable bytes get an error answer, not a dropped connection.
    let answer: MailboxResponse =
        codec::decode(&client.ask_raw(b"\x07not a request".to_vec()), 1 << 20).unwrap();
    assert!(matches!(
        answer,
        MailboxResponse::Error {
            code: MailboxError::Malformed,
            ..
        }
    ));
    let MailboxResponse::Envelopes { items, .. } = client.fetch(&bob) else {
        panic!("no envelopes")
    };
    assert_eq!(items.len(), 1, "the first deposit is kept");
    relay.stop();
}

#[test]
fn a_peer_flooding_deposits_is_slowed_while_another_is_served() {
    let home = tempfile::tempdir().unwrap();
    let relay = Relay::start(home.path(), &["--peer-rate", "5", "--peer-burst", "10"]);
    let bob = new_key();
    let mailbox = bob.mailbox();
    Client::new(&relay).open(&bob);

    // 60 deposits at once from one peer: the first ten or so pass.
    let mut flood = Client::new(&relay);
    let requests: Vec<Vec<u8>> = (0..60)
        .map(|n| {
            let envelope = format!("flood {n}").into_bytes();
            codec::encode(&flood.deposit_request(&bob, &envelope)).unwrap()
        })
        .collect();
    let (swarm, peer) = (&mut flood.swarm, flood.relay);
    let answers = flood
        .rt
        .block_on(support::request_all(swarm, &peer, requests));
    let (mut stored, mut limited) = (0, 0);
    for answer in answers {
        match codec::decode::<MailboxResponse>(&answer.unwrap(), 1 << 20).unwrap() {
            MailboxResponse::Receipt(_) => stored += 1,
            MailboxResponse::Error {
                code: MailboxError::RateLimited,
                ..
            } => limited += 1,
            other => panic!("unexpected answer: {other:?}"),
        }
    }
    assert!(limited >= 30, "{limited} of 60 were slowed down");
    assert!((10..=30).contains(&stored), "{stored} of 60 were stored");

    // Each envelope of a batch counts: twenty at once are over a burst of ten.
    let mut batcher = Client::new(&relay);
    let batch = MailboxRequest::DepositMany {
        version: VERSION,
        items: (0..20)
            .map(|n| {
                let envelope = format!("batch {n}").into_bytes();
                let MailboxRequest::Deposit { tag, .. } = batcher.deposit_request(&bob, &envelope)
                else {
                    unreachable!()
                };
                safemeet_proto::mailbox::Deposit {
                    mailbox,
                    envelope,
                    tag,
                }
            })
            .collect(),
    };
    assert!(matches!(
        batcher.ask(&batch),
        MailboxResponse::Error {
            code: MailboxError::RateLimited,
            ..
        }
    ));

    // Another peer is served meanwhile.
    let mut other = Client::new(&relay);
    assert!(matches!(
        other.deposit(&bob, b"not flooding"),
        MailboxResponse::Receipt(_)
    ));
    let MailboxResponse::Envelopes { items, .. } = other.fetch(&bob) else {
        panic!("no envelopes")
    };
    assert_eq!(
        items.len(),
        stored + 1,
        "everything receipted is there, nothing more"
    );
    relay.stop();
}

/// A plain HTTP GET; `None` when the server closes without an answer.
fn http_get(addr: &str, path: &str) -> Option<String> {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    // A server that refuses may close before the request is written.
    if write!(stream, "GET {path} HTTP/1.1\r\nhost: relay\r\n\r\n").is_err() {
        return None;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    (!answer.is_empty()).then_some(answer)
}

#[test]
fn an_operator_configures_limits_in_a_file_and_reads_counters() {
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("relay.toml");
    std::fs::write(
        &config,
        "mailbox_max_envelopes = 1\nretention = \"2d\"\n\n[metrics]\nlisten = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let relay = Relay::start(home.path(), &["--config", config.to_str().unwrap()]);
    let metrics = relay.metrics.clone().expect("metrics are served");
    let bob = new_key();
    let mailbox = bob.mailbox();
    let mut client = Client::new(&relay);
    let client_peer = client.peer_id();
    client.open(&bob);
    let MailboxResponse::Receipt(receipt) = client.deposit(&bob, b"one") else {
        panic!("no receipt")
    };
    // The file's retention holds: two days, to the end of that hour (the
    // relay keeps expiries to the hour).
    let two_days = 2 * 24 * 3600 * 1000;
    let now = safemeet_proto::clock::Clock::now(&safemeet_proto::clock::SystemClock);
    let left = receipt.stored_until.as_millis() - now.as_millis();
    assert!(
        left > two_days - 60_000 && left <= two_days + 3_600_000,
        "{left} ms left"
    );
    assert_eq!(
        receipt.stored_until.as_millis() % 3_600_000,
        0,
        "to the hour"
    );
    // The file's quota holds: one envelope per mailbox.
    assert!(matches!(
        client.deposit(&bob, b"two"),
        MailboxResponse::Error {
            code: MailboxError::MailboxFull,
            ..
        }
    ));

    let status = http_get(&metrics, "/status").expect("a status");
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let body: Value = serde_json::from_str(status.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["envelopes"], 1);
    assert_eq!(body["mailboxes"], 1);
    assert_eq!(body["accepting_new_mailboxes"], true);

    let text = http_get(&metrics, "/metrics").expect("metrics");
    assert!(text.contains("safemeet_relay_deposits_total 1"), "{text}");
    assert!(
        text.contains("safemeet_relay_refused_total{reason=\"mailbox_full\"} 1"),
        "{text}"
    );
    assert!(text.contains("safemeet_relay_stored_envelopes 1"), "{text}");
    assert!(
        text.contains("libp2p_swarm"),
        "libp2p's metrics share the registry"
    );
    // Counters only: nobody is named.
    for needle in [
        client_peer.to_string(),
        relay.peer.to_string(),
        mailbox.to_string(),
        "127.0.0.1".to_owned(),
    ] {
        assert!(!text.contains(&needle), "{needle} in the metrics");
    }
    assert!(
        http_get(&metrics, "/nothing")
            .unwrap()
            .starts_with("HTTP/1.1 404")
    );
    relay.stop();

    // Only the allowlist is answered; bad files are refused clearly.
    let relay = Relay::start(
        home.path(),
        &["--metrics", "127.0.0.1:0", "--metrics-allow", "10.1.2.3"],
    );
    assert_eq!(http_get(relay.metrics.as_ref().unwrap(), "/status"), None);
    relay.stop();
    std::fs::write(&config, "mailbox_max_envelope = 1\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_safemeet"))
        .args(["--home", home.path().to_str().unwrap(), "relay", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "a usage error");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("mailbox_max_envelope"), "{stderr}");
}

#[test]
fn sigterm_at_any_point_of_the_start_stops_the_relay_cleanly() {
    let home = tempfile::tempdir().unwrap();
    let relay = |home: &std::path::Path| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_safemeet"));
        command
            .args(["--home", home.to_str().unwrap(), "--json", "relay"])
            .args(["--listen", "/ip4/127.0.0.1/tcp/0"])
            .env_remove("SAFEMEET_HOME")
            .env(
                "SAFEMEET_LOG",
                "warn,safemeet::shutdown=debug,safemeet::relay=debug",
            );
        support::Watched::spawn(command)
    };
    let on_stderr = |text: &'static str| move |line: &support::Line| matches!(line, support::Line::Err(l) if l.contains(text));
    let ready = |line: &support::Line| matches!(line, support::Line::Out(l) if l.starts_with('{'));
    // SIGTERM as soon as the relay reaches each step: the signal handlers
    // (the earliest a signal can be handled at all; it then lands while the
    // relay opens its database), the database opened, and the ready line.
    // Twice over.
    let steps: [support::Step; 3] = [
        (
            "the signal handlers",
            Box::new(on_stderr("SIGINT and SIGTERM now stop cleanly")),
        ),
        (
            "the database opened",
            Box::new(on_stderr("relay database opened")),
        ),
        ("the ready line", Box::new(ready)),
    ];
    for round in 0..2 {
        for (step, reached) in &steps {
            let mut process = relay(home.path());
            process.wait_for(step, reached);
            process.signal("TERM");
            let (status, stderr) = process.finish();
            assert_eq!(
                status.code(),
                Some(0),
                "round {round}, SIGTERM at {step}: not a clean exit ({status:?}):\n{stderr}"
            );
        }
    }
    // The database was let go each time: the next relay opens it and serves.
    let relay = Relay::start(home.path(), &[]);
    let mut client = Client::new(&relay);
    let owner = new_key();
    client.open(&owner);
    assert!(matches!(
        client.deposit(&owner, b"after the signals"),
        MailboxResponse::Receipt(_)
    ));
    relay.stop();
}

/// A device behind NAT, reduced to what a circuit needs.
#[derive(libp2p::swarm::NetworkBehaviour)]
struct NatDevice {
    relay: libp2p::relay::client::Behaviour,
    ping: libp2p::ping::Behaviour,
}

fn nat_device() -> libp2p::Swarm<NatDevice> {
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            libp2p::tcp::Config::default(),
            libp2p::noise::Config::new,
            libp2p::yamux::Config::default,
        )
        .unwrap()
        .with_relay_client(libp2p::noise::Config::new, libp2p::yamux::Config::default)
        .unwrap()
        .with_behaviour(|_, relay| NatDevice {
            relay,
            ping: libp2p::ping::Behaviour::default(),
        })
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(std::time::Duration::from_secs(30)))
        .build()
}

#[test]
fn two_devices_reach_each_other_through_the_relay_circuit() {
    use futures::StreamExt;
    use libp2p::multiaddr::Protocol;
    use libp2p::swarm::SwarmEvent;

    let home = tempfile::tempdir().unwrap();
    let relay = Relay::start(home.path(), &[]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // Alice listens only through the relay (a reservation).
        let mut alice = nat_device();
        let alice_id = *alice.local_peer_id();
        alice
            .listen_on(relay.addr.clone().with(Protocol::P2pCircuit))
            .unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(30), async {
            loop {
                if let SwarmEvent::NewListenAddr { address, .. } = alice.select_next_some().await
                    && address.iter().any(|p| p == Protocol::P2pCircuit)
                {
                    return;
                }
            }
        })
        .await
        .expect("the relay accepted Alice's reservation");
        tokio::spawn(async move {
            loop {
                alice.select_next_some().await;
            }
        });

        // Bob knows only the circuit address, and pings Alice through it.
        let mut bob = nat_device();
        let circuit = relay
            .addr
            .clone()
            .with(Protocol::P2pCircuit)
            .with(Protocol::P2p(alice_id));
        bob.dial(circuit).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(30), async {
            let mut relayed = false;
            loop {
                match bob.select_next_some().await {
                    SwarmEvent::ConnectionEstablished {
                        peer_id, endpoint, ..
                    } if peer_id == alice_id => {
                        relayed = endpoint
                            .get_remote_address()
                            .iter()
                            .any(|p| p == Protocol::P2pCircuit);
                    }
                    SwarmEvent::Behaviour(NatDeviceEvent::Ping(libp2p::ping::Event {
                        peer,
                        result: Ok(_),
                        ..
                    })) if peer == alice_id => {
                        assert!(relayed, "the connection to Alice runs through the relay");
                        return;
                    }
                    _ => {}
                }
            }
        })
        .await
        .expect("Bob pinged Alice through the relay");
    });
    relay.stop();
}

/// A fresh mailbox key (of epoch 0).
fn new_key() -> EpochKey {
    EpochKey::derive(&Ed25519SecretKey::new(), 0)
}

/// A relay on 0.0.0.0 listens on every interface and says so: each
/// address, not only 127.0.0.1 (here: the one this machine's default
/// route leaves from, when there is one).
#[test]
fn a_relay_on_all_interfaces_prints_each_address() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = support::node::bin()
        .arg("--home")
        .arg(dir.path())
        .args(["relay", "--listen", "/ip4/0.0.0.0/tcp/0", "--json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut process = support::Reaped::new(child);
    let line = support::node::lines_of(stdout)
        .recv_timeout(support::node::WAIT)
        .unwrap();
    let started: Value = serde_json::from_str(&line).unwrap();
    let addrs: Vec<&str> = started["listen_addrs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        addrs.iter().any(|a| a.starts_with("/ip4/127.0.0.1/")),
        "{addrs:?}"
    );
    // The address the default route leaves from (no packet is sent).
    let outward = std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect("192.0.2.1:9").map(|()| s))
        .and_then(|s| s.local_addr());
    if let Ok(outward) = outward {
        let ip = outward.ip().to_string();
        assert!(
            addrs.iter().any(|a| a.starts_with(&format!("/ip4/{ip}/"))),
            "{ip} among {addrs:?}"
        );
    }
    assert!(addrs.iter().all(|a| !a.contains("/0.0.0.0/")), "{addrs:?}");
    process.signal("TERM");
    assert!(process.wait().success());
}
