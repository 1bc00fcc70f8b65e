//! What stays on a relay's disk, on the service over sled in virtual
//! time: mailboxes opened and never fetched are forgotten early with their
//! mail, and the quotas' byte count covers what sled really writes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::path::Path;
use std::time::Duration;

use libp2p::identity::Keypair;
use safemeet_crypto::mailbox::{EpochKey, authorize, deposit_tag};
use safemeet_proto::mailbox::{
    FetchParams, MailboxError, MailboxRequest, MailboxResponse, OpenParams, VERSION,
};
use safemeet_proto::{Timestamp, codec};
use safemeet_relay::store::disk_cost;
use safemeet_relay::{Limits, MailboxService, MailboxStore};
use safemeet_store::{Keyspace, Store};
use safemeet_store_sled::SledStore;
use vodozemac::Ed25519SecretKey;

/// A padded 2 KiB frame, sealed, as every real deposit is at least.
const ENVELOPE: usize = 2048 + 48;

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

const T0: u64 = 1_800_000_000_000;
const HOUR: u64 = 3_600_000;

fn at(ms: u64) -> Timestamp {
    Timestamp::from_millis(T0 + ms).unwrap()
}

#[test]
fn an_opened_never_fetched_mailbox_expires_early() {
    let dir = tempfile::tempdir().unwrap();
    let backend = SledStore::open(
        dir.path().join("relay"),
        &safemeet_store_sled::Config::default(),
    )
    .unwrap();
    let limits = Limits::default();
    let early = limits.unfetched_retention.as_millis() as u64;
    assert!(Duration::from_millis(early) < limits.retention);
    let key = Keypair::generate_ed25519();
    let relay = key.public().to_peer_id().to_bytes();
    let mut service = MailboxService::new(MailboxStore::new(backend.clone(), limits), key);
    let mut ask = |request: &MailboxRequest, now: Timestamp| {
        service
            .handle(&codec::encode(request).unwrap(), now)
            .response
    };
    let (junk, read, kept) = (new_key(), new_key(), new_key());
    for owner in [&junk, &read, &kept] {
        let MailboxResponse::Nonce(nonce) =
            ask(&MailboxRequest::Challenge { version: VERSION }, at(0))
        else {
            panic!("no nonce")
        };
        let params = OpenParams {
            mailbox: owner.mailbox(),
            check: owner.deposit_check(),
        };
        let open = MailboxRequest::Open(authorize(owner, &relay, nonce, params).unwrap());
        assert_eq!(ask(&open, at(0)), MailboxResponse::Opened);
        for n in 0..3 {
            let mailbox = owner.mailbox();
            let deposit = MailboxRequest::Deposit {
                version: VERSION,
                mailbox,
                envelope: envelope(n),
                tag: deposit_tag(&owner.deposit_check(), &relay, &mailbox, &envelope(n)),
            };
            assert!(matches!(
                ask(&deposit, at(HOUR)),
                MailboxResponse::Receipt(_)
            ));
        }
    }
    // `read` is fetched once; `kept` is opened again a day before the end.
    let MailboxResponse::Nonce(nonce) = ask(
        &MailboxRequest::Challenge { version: VERSION },
        at(2 * HOUR),
    ) else {
        panic!("no nonce")
    };
    let params = FetchParams {
        mailbox: read.mailbox(),
        after: 0,
        limit: 64,
    };
    let fetch = MailboxRequest::Fetch(authorize(&read, &relay, nonce, params).unwrap());
    assert!(matches!(
        ask(&fetch, at(2 * HOUR)),
        MailboxResponse::Envelopes { .. }
    ));
    let reopen_at = early - 24 * HOUR;
    let MailboxResponse::Nonce(nonce) = ask(
        &MailboxRequest::Challenge { version: VERSION },
        at(reopen_at),
    ) else {
        panic!("no nonce")
    };
    let params = OpenParams {
        mailbox: kept.mailbox(),
        check: kept.deposit_check(),
    };
    let open = MailboxRequest::Open(authorize(&kept, &relay, nonce, params).unwrap());
    assert_eq!(ask(&open, at(reopen_at)), MailboxResponse::Opened);

    let store = service.store();
    let before = store.totals().unwrap();
    assert_eq!((before.envelopes, before.mailboxes), (9, 3));
    // An hour before the early expiry: all there.
    store.purge_expired(at(early - HOUR), 1_000).unwrap();
    assert_eq!(store.totals().unwrap(), before);
    // Past it: the never-fetched mailbox is gone with its mail, long before
    // the retention; the fetched one and the one opened again stay.
    assert_eq!(store.purge_expired(at(early + HOUR), 1_000).unwrap(), 3);
    let after = store.totals().unwrap();
    assert_eq!((after.envelopes, after.mailboxes), (6, 2));
    assert_eq!(after.bytes, 6 * disk_cost(ENVELOPE));
    let junk_rows = backend
        .scan(
            Keyspace::MailboxEnvelopes,
            junk.mailbox().as_bytes(),
            None,
            10,
        )
        .unwrap();
    assert!(junk_rows.is_empty(), "its envelopes are deleted");
    assert!(
        backend
            .get(Keyspace::Mailboxes, junk.mailbox().as_bytes())
            .unwrap()
            .is_none(),
        "its record is deleted"
    );
    // It takes no more deposits.
    let mailbox = junk.mailbox();
    let deposit = MailboxRequest::Deposit {
        version: VERSION,
        mailbox,
        envelope: envelope(9),
        tag: deposit_tag(&junk.deposit_check(), &relay, &mailbox, &envelope(9)),
    };
    let answer = service
        .handle(&codec::encode(&deposit).unwrap(), at(early + 2 * HOUR))
        .response;
    assert_eq!(code(&answer), Some(MailboxError::Refused));
}

#[test]
fn disk_cost_covers_what_sled_writes() {
    // 4 000 envelopes of a padded 2 KiB frame, sealed, into 40 mailboxes,
    // in groups of 256 with a flush each, as the node stores them.
    let dir = tempfile::tempdir().unwrap();
    let backend = SledStore::open(
        dir.path().join("relay"),
        &safemeet_store_sled::Config::default(),
    )
    .unwrap();
    let key = Keypair::generate_ed25519();
    let relay = key.public().to_peer_id().to_bytes();
    let mut service = MailboxService::new(MailboxStore::new(backend, Limits::default()), key);
    let owners: Vec<EpochKey> = (0..40).map(|_| new_key()).collect();
    for owner in &owners {
        service
            .store()
            .open(&owner.mailbox(), owner.deposit_check(), at(0))
            .unwrap();
    }
    service.store().flush().unwrap();
    let before = dir_bytes(dir.path());
    let count: usize = std::env::var("ADMISSION_DISK_COUNT")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(4_000);
    for group in (0..count).collect::<Vec<usize>>().chunks(256) {
        let requests: Vec<Vec<u8>> = group
            .iter()
            .map(|&n| {
                let owner = &owners[n % owners.len()];
                let mailbox = owner.mailbox();
                // Incompressible, as sealed envelopes are.
                let mut envelope = vec![0u8; ENVELOPE];
                rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut envelope);
                let tag = deposit_tag(&owner.deposit_check(), &relay, &mailbox, &envelope);
                codec::encode(&MailboxRequest::Deposit {
                    version: VERSION,
                    mailbox,
                    envelope,
                    tag,
                })
                .unwrap()
            })
            .collect();
        let (answers, _) = service.handle_many(&requests, at(HOUR));
        assert!(
            answers
                .iter()
                .all(|a| matches!(a, MailboxResponse::Receipt(_)))
        );
        service.store().flush().unwrap();
    }
    let written = dir_bytes(dir.path()) - before;
    let counted = service.store().totals().unwrap().bytes;
    let raw = (count * ENVELOPE) as u64;
    eprintln!(
        "{count} envelopes of {ENVELOPE} B: {raw} B of envelopes, {written} B on disk ({:.2}×), {counted} B counted ({:.2}×)",
        written as f64 / raw as f64,
        counted as f64 / raw as f64
    );
    assert!(
        counted >= written,
        "the quota counts {counted} B for {written} B on disk"
    );
    assert!(
        counted <= written * 2,
        "the quota counts {counted} B, over twice the {written} B on disk"
    );
}
