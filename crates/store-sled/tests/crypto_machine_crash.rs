//! Crash test of the crypto machine on sled: a child process sends room
//! messages and is killed with SIGKILL either *between commit and send*
//! (the call returned, the frame was never handed to the network) or
//! *before commit* (inside the store write of the send). After all cycles
//! the outbox must hold every committed frame, no (Megolm session, index)
//! may appear twice, every restart after a kill must use a new session,
//! and the recipient must decrypt every committed frame in order.
//!
//! `SAFEMEET_MACHINE_CRASH_CYCLES` sets the number of kills (default 12).
//!
//! A test of `safemeet-crypto`'s machine, kept here so that the crypto
//! crate does not link sled, not even for its tests.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

mod support;

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};

use safemeet_crypto::EncryptedStore;
use safemeet_crypto::at_rest::{DataKey, KdfParams, KeyFile, Passphrase, StoreCipher};
use safemeet_crypto::machine::{CryptoMachine, Destination};
use safemeet_proto::identity::{OneTimeKey, Signed};
use safemeet_proto::{Envelope, UserId};
use safemeet_store::{Batch, Entry, Keyspace, Op, Store};
use safemeet_store_sled::{Config, SledStore};
use support::*;

const CHILD_ENV: &str = "SAFEMEET_MACHINE_CRASH_DIR";
const PASSPHRASE: &str = "crash test passphrase";

/// A sled store that kills its own process (SIGKILL) on the first write of
/// an outbox item once armed: the process dies before the commit.
struct KillingStore {
    inner: SledStore,
    armed: AtomicBool,
}

fn kill_self() -> ! {
    let _ = Command::new("kill")
        .args(["-9", &std::process::id().to_string()])
        .status();
    loop {
        std::thread::park();
    }
}

impl Store for KillingStore {
    fn get(&self, ks: Keyspace, key: &[u8]) -> safemeet_store::Result<Option<Vec<u8>>> {
        self.inner.get(ks, key)
    }
    fn scan(
        &self,
        ks: Keyspace,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> safemeet_store::Result<Vec<Entry>> {
        self.inner.scan(ks, prefix, after, limit)
    }
    fn apply(&self, batch: Batch) -> safemeet_store::Result<()> {
        let sends = batch.ops().iter().any(|op| {
            matches!(
                op,
                Op::Put {
                    keyspace: Keyspace::Outbox,
                    ..
                }
            )
        });
        if sends && self.armed.load(Ordering::SeqCst) {
            kill_self();
        }
        self.inner.apply(batch)
    }
    fn flush(&self) -> safemeet_store::Result<()> {
        self.inner.flush()
    }
}

fn open_store(dir: &Path) -> (SledStore, StoreCipher) {
    let key_file = KeyFile::from_json(&std::fs::read_to_string(dir.join("keyfile")).unwrap())
        .unwrap()
        .unwrap_key(&Passphrase::new(PASSPHRASE))
        .unwrap();
    let store = SledStore::open(dir.join("db"), &Config::default()).unwrap();
    (store, StoreCipher::new(&key_file))
}

/// The child: sends `count` messages (printing each after the call
/// returned), then dies on message `count` as `mode` says.
#[test]
fn machine_crash_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return; // Only does something when started by the parent test.
    };
    let dir = Path::new(&dir);
    let var = |k: &str| std::env::var(k).unwrap();
    let (cycle, count, mode) = (var("CYCLE"), var("COUNT"), var("MODE"));
    let count: u64 = count.parse().unwrap();
    let bob: UserId = var("BOB").parse().unwrap();
    let (sled, cipher) = open_store(dir);
    let killing = std::sync::Arc::new(KillingStore {
        inner: sled,
        armed: AtomicBool::new(false),
    });
    let mut machine = CryptoMachine::open(EncryptedStore::new(killing.clone(), cipher)).unwrap();
    let alice = machine.account().user_id();
    let mut out = std::io::stdout().lock();
    writeln!(out, "UNCLEAN {}", machine.started_unclean()).unwrap();
    out.flush().unwrap();
    // After an unclean start the old Olm session may not send: open a new
    // one with the one-time key the parent set aside for this cycle.
    let keys = std::fs::read_to_string(dir.join("bob-keys")).unwrap();
    let line = keys.lines().nth(cycle.parse().unwrap()).unwrap();
    let key: Signed<OneTimeKey> =
        Signed::from_bytes(&data_encoding::HEXLOWER.decode(line.as_bytes()).unwrap()).unwrap();
    let bob_device = key.decode_body().unwrap().device_id;
    if !machine.has_session(&bob_device).unwrap() {
        machine
            .create_outbound_session(&bob_device, &key, ts(T0))
            .unwrap();
    }
    for i in 0..=count {
        let fatal = i == count;
        if fatal && mode == "before" {
            killing.armed.store(true, Ordering::SeqCst);
        }
        let members = [alice, bob];
        let batch = machine.store().batch();
        let sent = machine
            .encrypt_room_event(
                safemeet_crypto::machine::RoomMessage {
                    room_id: room(1),
                    topic: safemeet_proto::room::RoomTopic::from_bytes([1; 32]),
                    header: &header_key(),
                    members: &members,
                    content: text(&format!("c{cycle}-m{i}")),
                    lamport: i,
                },
                ts(T0 + i),
                batch,
                b"",
            )
            .unwrap();
        if fatal {
            // Committed, never sent.
            kill_self();
        }
        writeln!(
            out,
            "SENT {} {}",
            data_encoding::HEXLOWER.encode(&sent.session_id),
            sent.message_index
        )
        .unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn no_index_is_used_twice_across_kills() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let cycles: u64 = std::env::var("SAFEMEET_MACHINE_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12)
        .min(safemeet_crypto::machine::MAX_KEYS_PER_CLAIM as u64);
    let dir = tempfile::tempdir().unwrap();

    // Set up Alice's store on sled, and Bob in memory; Alice opens an Olm
    // session to Bob.
    let data_key = DataKey::generate();
    let key_file = KeyFile::wrap(
        &data_key,
        &Passphrase::new(PASSPHRASE),
        KdfParams::default(),
    )
    .unwrap();
    std::fs::write(dir.path().join("keyfile"), key_file.to_json().unwrap()).unwrap();
    let alice_account = new_account("alice");
    let mut bob = Device::new("bob");
    {
        let store = EncryptedStore::new(
            SledStore::open(dir.path().join("db"), &Config::default()).unwrap(),
            StoreCipher::new(&data_key),
        );
        CryptoMachine::store_account(&store, &alice_account).unwrap();
        let mut alice = CryptoMachine::open(store).unwrap();
        let (list, certs) = identity_of(&bob);
        alice.add_device_list(&list, &certs).unwrap();
        let key = bob
            .machine
            .claim_one_time_keys(1, ts(T0))
            .unwrap()
            .remove(0);
        alice
            .create_outbound_session(&bob.device_id(), &key, ts(T0))
            .unwrap();
        bob.machine
            .add_device_list(
                alice.account().device_list().signed(),
                std::slice::from_ref(alice.account().certificate()),
            )
            .unwrap();
        alice.close().unwrap();
    }
    let keys: Vec<String> = bob
        .machine
        .claim_one_time_keys(cycles as usize, ts(T0))
        .unwrap()
        .iter()
        .map(|k| data_encoding::HEXLOWER.encode(&k.to_bytes().unwrap()))
        .collect();
    std::fs::write(dir.path().join("bob-keys"), keys.join("\n")).unwrap();

    let exe = std::env::current_exe().unwrap();
    let mut sent: Vec<(String, u32)> = Vec::new();
    let mut expect_committed = BTreeSet::new();
    let mut expect_absent = BTreeSet::new();
    let mut first_session_of_cycle = Vec::new();
    for cycle in 0..cycles {
        let mode = if cycle % 2 == 0 { "after" } else { "before" };
        let count = cycle % 4;
        let output = Command::new(&exe)
            .args([
                "machine_crash_child",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .env("CYCLE", cycle.to_string())
            .env("COUNT", count.to_string())
            .env("MODE", mode)
            .env("BOB", bob.user().to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .output()
            .unwrap();
        assert_eq!(
            output.status.signal(),
            Some(9),
            "cycle {cycle}: the child must die by SIGKILL, got {:?}",
            output.status
        );
        let stdout = String::from_utf8(output.stdout).unwrap();
        let unclean = stdout
            .lines()
            .find_map(|l| l.split("UNCLEAN ").nth(1))
            .unwrap();
        assert_eq!(unclean, if cycle == 0 { "false" } else { "true" });
        let lines: Vec<(String, u32)> = stdout
            .lines()
            .filter_map(|l| l.split("SENT ").nth(1))
            .map(|rest| {
                let (s, i) = rest.split_once(' ').unwrap();
                (s.to_owned(), i.parse().unwrap())
            })
            .collect();
        assert_eq!(
            lines.len() as u64,
            count,
            "cycle {cycle}: every send before the kill returned"
        );
        if let Some(first) = lines.first() {
            first_session_of_cycle.push(first.0.clone());
            assert_eq!(
                first.1, 0,
                "cycle {cycle}: a restart starts a new session at index 0"
            );
        }
        for i in 0..count {
            expect_committed.insert(format!("c{cycle}-m{i}"));
        }
        let fatal = format!("c{cycle}-m{count}");
        if mode == "after" {
            expect_committed.insert(fatal);
        } else {
            expect_absent.insert(fatal);
        }
        sent.extend(lines);
    }
    let distinct: BTreeSet<_> = first_session_of_cycle.iter().collect();
    assert_eq!(
        distinct.len(),
        first_session_of_cycle.len(),
        "a session survived a kill"
    );

    // Everything committed is in Alice's outbox; Bob decrypts it all, in order.
    let (sled, cipher) = open_store(dir.path());
    let alice = CryptoMachine::open(EncryptedStore::new(sled, cipher)).unwrap();
    assert!(alice.started_unclean());
    let outbox = alice.outbox(None, usize::MAX).unwrap();
    let mut used: HashMap<(Vec<u8>, u32), usize> = HashMap::new();
    let mut texts = BTreeSet::new();
    for (_, item) in &outbox {
        match Envelope::from_frame(&item.frame().unwrap()).unwrap() {
            Envelope::ToDevice(env) => {
                assert_eq!(
                    item.destination,
                    Destination::Device(bob.user(), bob.device_id())
                );
                bob.machine.decrypt_to_device(&env, ts(T0)).unwrap();
            }
            Envelope::Room(sealed) => {
                let env = safemeet_crypto::header::open(&header_key(), &sealed).unwrap();
                let index = vodozemac::megolm::MegolmMessage::from_bytes(&env.ciphertext)
                    .unwrap()
                    .message_index();
                *used.entry((env.session_id.to_vec(), index)).or_default() += 1;
                let got = bob.machine.decrypt_room(&env, ts(T0)).unwrap();
                texts.insert(body(&got));
            }
            other => panic!("unexpected envelope {other:?}"),
        }
    }
    let reused: Vec<_> = used.iter().filter(|(_, n)| **n > 1).collect();
    assert!(reused.is_empty(), "(session, index) used twice: {reused:?}");
    for (session, index) in &sent {
        let key = (
            data_encoding::HEXLOWER.decode(session.as_bytes()).unwrap(),
            *index,
        );
        assert!(
            used.contains_key(&key),
            "a sent message is missing from the outbox"
        );
    }
    for t in &expect_committed {
        assert!(
            texts.contains(t),
            "committed message {t} is not in the outbox"
        );
    }
    for t in &expect_absent {
        assert!(
            !texts.contains(t),
            "message {t} was killed before its commit yet is in the outbox"
        );
    }
    assert_eq!(texts.len(), expect_committed.len());
}

/// The test room's header key (its messages' envelopes are sealed under it).
fn header_key() -> safemeet_proto::header::HeaderKey {
    safemeet_proto::header::HeaderKey::for_room(&safemeet_proto::RoomSecret::from_bytes([1; 32]))
}
