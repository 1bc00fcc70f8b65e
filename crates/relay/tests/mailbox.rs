//! The mailbox rules over a real sled store: receipts, open, fetch and ack
//! signed by the mailbox key over single-use nonces, quotas, expiry and the
//! switch that stops new mailboxes. (Admission: `tests/admission.rs`.)

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::time::Duration;

use libp2p::identity::Keypair;
use safemeet_crypto::mailbox::{EpochKey, authorize, deposit_tag};
use safemeet_proto::mailbox::{
    AckParams, FetchParams, MailboxError, MailboxRequest, MailboxResponse, OpenParams, PurgeParams,
    PurgeReceipt, Receipt, VERSION,
};
use safemeet_proto::{MailboxId, Timestamp, codec};
use safemeet_relay::store::disk_cost;
use safemeet_relay::{Limits, MailboxService, MailboxStore};
use safemeet_store::{Keyspace, Store};
use safemeet_store_sled::SledStore;
use vodozemac::Ed25519SecretKey;

const T0: u64 = 1_800_000_000_000;

fn at(ms_after: u64) -> Timestamp {
    Timestamp::from_millis(T0 + ms_after).unwrap()
}

struct Relay {
    service: MailboxService<SledStore>,
    key: Keypair,
    /// What fetches and acks are signed for: the relay's peer id.
    id: Vec<u8>,
    backend: SledStore,
    _dir: tempfile::TempDir,
}

impl Relay {
    fn new(limits: Limits) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let backend = SledStore::open(
            dir.path().join("relay"),
            &safemeet_store_sled::Config::default(),
        )
        .unwrap();
        let key = Keypair::generate_ed25519();
        let service = MailboxService::new(MailboxStore::new(backend.clone(), limits), key.clone());
        Self {
            service,
            id: key.public().to_peer_id().to_bytes(),
            key,
            backend,
            _dir: dir,
        }
    }

    fn ask(&mut self, request: &MailboxRequest, now: Timestamp) -> MailboxResponse {
        self.service
            .handle(&codec::encode(request).unwrap(), now)
            .response
    }

    /// Opens `owner`'s mailbox as its owner does.
    fn open(&mut self, owner: &EpochKey, now: Timestamp) -> MailboxResponse {
        let nonce = self.nonce(now);
        let params = OpenParams {
            mailbox: owner.mailbox(),
            check: owner.deposit_check(),
        };
        self.ask(
            &MailboxRequest::Open(authorize(owner, &self.id, nonce, params).unwrap()),
            now,
        )
    }

    /// A deposit as a contact of `owner` makes it (tagged).
    fn deposit_request(&self, owner: &EpochKey, envelope: &[u8]) -> MailboxRequest {
        let mailbox = owner.mailbox();
        MailboxRequest::Deposit {
            version: VERSION,
            mailbox,
            envelope: envelope.to_vec(),
            tag: deposit_tag(&owner.deposit_check(), &self.id, &mailbox, envelope),
        }
    }

    /// Opens `owner`'s mailbox (again) and deposits into it as a contact.
    fn deposit(&mut self, owner: &EpochKey, envelope: &[u8], now: Timestamp) -> MailboxResponse {
        assert_eq!(self.open(owner, now), MailboxResponse::Opened);
        let request = self.deposit_request(owner, envelope);
        self.ask(&request, now)
    }

    fn nonce(&mut self, now: Timestamp) -> [u8; 32] {
        match self.ask(&MailboxRequest::Challenge { version: VERSION }, now) {
            MailboxResponse::Nonce(n) => n,
            other => panic!("no nonce: {other:?}"),
        }
    }

    fn fetch(&mut self, owner: &EpochKey, after: u64, now: Timestamp) -> MailboxResponse {
        let nonce = self.nonce(now);
        let params = FetchParams {
            mailbox: owner.mailbox(),
            after,
            limit: 64,
        };
        self.ask(
            &MailboxRequest::Fetch(authorize(owner, &self.id, nonce, params).unwrap()),
            now,
        )
    }

    fn ack(&mut self, owner: &EpochKey, ids: Vec<u64>, now: Timestamp) -> MailboxResponse {
        let nonce = self.nonce(now);
        let params = AckParams {
            mailbox: owner.mailbox(),
            ids,
        };
        self.ask(
            &MailboxRequest::Ack(authorize(owner, &self.id, nonce, params).unwrap()),
            now,
        )
    }
}

impl Relay {
    fn purge(&mut self, signer: &EpochKey, mailbox: MailboxId, now: Timestamp) -> MailboxResponse {
        let nonce = self.nonce(now);
        let params = PurgeParams { mailbox };
        self.ask(
            &MailboxRequest::Purge(authorize(signer, &self.id, nonce, params).unwrap()),
            now,
        )
    }
}

#[test]
fn only_the_owner_purges_a_mailbox_and_the_relay_signs_that_it_is_gone() {
    let mut relay = Relay::new(Limits::default());
    let owner = new_key();
    let mailbox = owner.mailbox();
    for n in 0..3u8 {
        relay.deposit(&owner, &[n; 40], at(u64::from(n)));
    }
    let other = new_key();
    relay.deposit(&other, b"someone else's", at(3));
    // Mallory cannot purge it, nor replay the owner's purge elsewhere.
    let mallory = new_key();
    assert_eq!(
        refused(relay.purge(&mallory, mailbox, at(4))),
        MailboxError::BadSignature
    );
    let receipt = match relay.purge(&owner, mailbox, at(5)) {
        MailboxResponse::Purged(r) => r,
        other => panic!("no purge receipt: {other:?}"),
    };
    assert_eq!((receipt.mailbox, receipt.removed), (mailbox, 3));
    let signed = PurgeReceipt::signed_bytes(&mailbox, receipt.removed, receipt.purged_at);
    assert!(relay.key.public().verify(&signed, &receipt.signature));
    let mut forged = PurgeReceipt::signed_bytes(&mailbox, 2, receipt.purged_at);
    assert!(!relay.key.public().verify(&forged, &receipt.signature));
    forged.clear();
    // Gone: nothing to fetch, the mailbox takes no deposit until opened
    // again, and the other mailbox is untouched.
    assert!(envelopes(relay.fetch(&owner, 0, at(6))).is_empty());
    let late = relay.deposit_request(&owner, b"late");
    assert!(matches!(
        relay.ask(&late, at(7)),
        MailboxResponse::Error { .. }
    ));
    assert_eq!(envelopes(relay.fetch(&other, 0, at(8))).len(), 1);
    let totals = relay.service.store().totals().unwrap();
    assert_eq!((totals.envelopes, totals.mailboxes), (1, 1), "{totals:?}");
    // A second purge: nothing left, still receipted.
    match relay.purge(&owner, mailbox, at(9)) {
        MailboxResponse::Purged(r) => assert_eq!(r.removed, 0),
        other => panic!("no purge receipt: {other:?}"),
    }
}

fn fetch_request(
    key: &EpochKey,
    relay: &[u8],
    nonce: [u8; 32],
    mailbox: MailboxId,
) -> MailboxRequest {
    let params = FetchParams {
        mailbox,
        after: 0,
        limit: 64,
    };
    MailboxRequest::Fetch(authorize(key, relay, nonce, params).unwrap())
}

fn ack_request(
    key: &EpochKey,
    relay: &[u8],
    nonce: [u8; 32],
    mailbox: MailboxId,
    ids: Vec<u64>,
) -> MailboxRequest {
    MailboxRequest::Ack(authorize(key, relay, nonce, AckParams { mailbox, ids }).unwrap())
}

fn envelopes(response: MailboxResponse) -> Vec<(u64, Vec<u8>)> {
    match response {
        MailboxResponse::Envelopes { items, .. } => {
            items.into_iter().map(|e| (e.id, e.envelope)).collect()
        }
        other => panic!("no envelopes: {other:?}"),
    }
}

fn refused(response: MailboxResponse) -> MailboxError {
    match response {
        MailboxResponse::Error { code, message } => {
            assert!(!message.is_empty());
            code
        }
        other => panic!("not refused: {other:?}"),
    }
}

#[test]
fn a_deposit_is_receipted_fetched_by_its_owner_and_deleted_on_ack() {
    let mut relay = Relay::new(Limits::default());
    let owner = new_key();
    let mailbox = owner.mailbox();

    let receipt = match relay.deposit(&owner, b"sealed one", at(0)) {
        MailboxResponse::Receipt(r) => r,
        other => panic!("no receipt: {other:?}"),
    };
    assert_eq!((receipt.mailbox, receipt.id), (mailbox, 1));
    assert_eq!(
        receipt.stored_until,
        at(0).saturating_add(Limits::default().retention)
    );
    assert_eq!(receipt.digest, *blake3::hash(b"sealed one").as_bytes());
    let signed = Receipt::signed_bytes(&mailbox, receipt.id, receipt.stored_until, &receipt.digest);
    assert!(
        relay.key.public().verify(&signed, &receipt.signature),
        "the relay signed it"
    );
    let mut forged = signed.clone();
    if let Some(last) = forged.last_mut() {
        *last ^= 1;
    }
    assert!(!relay.key.public().verify(&forged, &receipt.signature));

    relay.deposit(&owner, b"sealed two", at(1));
    let got = envelopes(relay.fetch(&owner, 0, at(2)));
    assert_eq!(
        got,
        vec![(1, b"sealed one".to_vec()), (2, b"sealed two".to_vec())]
    );
    assert_eq!(
        envelopes(relay.fetch(&owner, 1, at(2))).len(),
        1,
        "from a cursor"
    );

    assert_eq!(
        relay.ack(&owner, vec![1, 1, 99], at(3)),
        MailboxResponse::Acked { removed: 1 },
        "a repeated or unknown id counts once or not at all"
    );
    assert_eq!(
        envelopes(relay.fetch(&owner, 0, at(4))),
        vec![(2, b"sealed two".to_vec())]
    );
    let totals = relay.service.store().totals().unwrap();
    assert_eq!(
        (totals.envelopes, totals.bytes, totals.mailboxes),
        (1, disk_cost(10), 1),
        "bytes are counted as on disk"
    );
}

#[test]
fn only_a_fresh_signature_by_the_mailbox_key_reads_or_deletes() {
    let mut relay = Relay::new(Limits::default());
    let owner = new_key();
    let mailbox = owner.mailbox();
    relay.deposit(&owner, b"for the owner", at(0));

    // Mallory signs with her own key for the owner's mailbox.
    let mallory = new_key();
    let nonce = relay.nonce(at(1));
    let theft = fetch_request(&mallory, &relay.id, nonce, mailbox);
    assert_eq!(
        refused(relay.ask(&theft, at(1))),
        MailboxError::BadSignature
    );
    let nonce = relay.nonce(at(1));
    let wipe = ack_request(&mallory, &relay.id, nonce, mailbox, vec![1]);
    assert_eq!(refused(relay.ask(&wipe, at(1))), MailboxError::BadSignature);

    // The owner's request signed for another relay (which may have passed
    // on this relay's nonce) is not taken here.
    let nonce = relay.nonce(at(1));
    let elsewhere = fetch_request(&owner, b"another relay", nonce, mailbox);
    assert_eq!(
        refused(relay.ask(&elsewhere, at(1))),
        MailboxError::BadSignature
    );

    // A recorded request of the owner's cannot be played again.
    let nonce = relay.nonce(at(2));
    let fetch = fetch_request(&owner, &relay.id, nonce, mailbox);
    assert_eq!(envelopes(relay.ask(&fetch, at(2))).len(), 1);
    assert_eq!(refused(relay.ask(&fetch, at(3))), MailboxError::BadNonce);
    // Nor a nonce the relay never issued, nor one past its time.
    let made_up = ack_request(&owner, &relay.id, [9; 32], mailbox, vec![1]);
    assert_eq!(refused(relay.ask(&made_up, at(3))), MailboxError::BadNonce);
    let nonce = relay.nonce(at(4));
    let late = ack_request(&owner, &relay.id, nonce, mailbox, vec![1]);
    assert_eq!(
        refused(relay.ask(&late, at(4 + 61_000))),
        MailboxError::BadNonce
    );

    assert_eq!(
        envelopes(relay.fetch(&owner, 0, at(5))).len(),
        1,
        "nothing was deleted"
    );
    // Junk is refused, and the relay goes on.
    assert_eq!(
        refused(relay.service.handle(b"\xff\x00junk", at(6)).response),
        MailboxError::Malformed
    );
    assert_eq!(envelopes(relay.fetch(&owner, 0, at(6))).len(), 1);
}

#[test]
fn quotas_refuse_clearly_and_lose_nothing() {
    let mut relay = Relay::new(Limits {
        max_envelope_bytes: 100,
        mailbox_max_envelopes: 3,
        mailbox_max_bytes: 10 * disk_cost(10),
        max_envelopes: 5,
        ..Limits::default()
    });
    let (alice, bob, carol) = (new_key(), new_key(), new_key());

    assert_eq!(
        refused(relay.deposit(&alice, &[0; 101], at(0))),
        MailboxError::TooLarge
    );
    for n in 0..3u8 {
        assert!(matches!(
            relay.deposit(&alice, &[n; 10], at(0)),
            MailboxResponse::Receipt(_)
        ));
    }
    assert_eq!(
        refused(relay.deposit(&alice, &[3; 10], at(0))),
        MailboxError::MailboxFull
    );
    // Another mailbox is still served, up to the relay's total.
    for n in 0..2u8 {
        assert!(matches!(
            relay.deposit(&bob, &[n; 10], at(0)),
            MailboxResponse::Receipt(_)
        ));
    }
    assert_eq!(
        refused(relay.deposit(&carol, &[0; 10], at(0))),
        MailboxError::RelayFull
    );

    // Everything accepted is still there.
    let got = envelopes(relay.fetch(&alice, 0, at(1)));
    assert_eq!(
        got.iter().map(|(_, e)| e[0]).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    assert_eq!(envelopes(relay.fetch(&bob, 0, at(1))).len(), 2);
    // Room again once Alice has read hers.
    relay.ack(&alice, vec![1, 2, 3], at(2));
    assert!(matches!(
        relay.deposit(&carol, &[0; 10], at(3)),
        MailboxResponse::Receipt(_)
    ));
}

#[test]
fn expired_envelopes_are_not_served_and_are_purged() {
    let retention = Duration::from_secs(3600);
    let mut relay = Relay::new(Limits {
        retention,
        ..Limits::default()
    });
    let owner = new_key();
    relay.deposit(&owner, b"old", at(0));
    relay.deposit(&owner, b"new", at(1_800_000));

    let hour = 3_600_000;
    assert_eq!(
        envelopes(relay.fetch(&owner, 0, at(hour))),
        vec![(2, b"new".to_vec())]
    );
    let store = relay.service.store();
    assert_eq!(store.purge_expired(at(hour), 100).unwrap(), 1);
    assert_eq!(store.totals().unwrap().envelopes, 1);
    assert_eq!(store.purge_expired(at(2 * hour), 100).unwrap(), 1);
    // Empty and untouched for a retention period: the mailbox is forgotten.
    store.purge_expired(at(4 * hour), 100).unwrap();
    let totals = store.totals().unwrap();
    assert_eq!(
        (totals.envelopes, totals.bytes, totals.mailboxes),
        (0, 0, 0)
    );
    for ks in [Keyspace::MailboxEnvelopes, Keyspace::MailboxExpiry] {
        assert!(
            relay.backend.scan(ks, &[], None, 10).unwrap().is_empty(),
            "{ks:?} is empty"
        );
    }
    // Ids go on after a mailbox is forgotten only if it was: a new deposit
    // starts a new mailbox.
    assert!(matches!(
        relay.deposit(&owner, b"again", at(5 * hour)),
        MailboxResponse::Receipt(_)
    ));
}

#[test]
fn every_forgotten_mailbox_goes_however_many_there_are() {
    let retention = Duration::from_secs(3600);
    let mut relay = Relay::new(Limits {
        retention,
        ..Limits::default()
    });
    let hour = 3_600_000;
    // Five mailboxes whose mail expired long ago, among twenty in use.
    for _ in 0..5 {
        relay.deposit(&new_key(), b"long gone", at(0));
    }
    for _ in 0..20 {
        relay.deposit(&new_key(), b"still here", at(3 * hour));
    }
    let store = relay.service.store();
    assert_eq!(store.totals().unwrap().mailboxes, 25);
    // Each purge looks at three mailbox records only, going on where the
    // last one stopped: the stale ones are found wherever they sort.
    for _ in 0..20 {
        store.purge_expired(at(3 * hour + hour / 2), 3).unwrap();
    }
    let totals = store.totals().unwrap();
    assert_eq!((totals.mailboxes, totals.envelopes), (20, 20));
}

#[test]
fn a_relay_can_stop_taking_new_mailboxes() {
    let mut relay = Relay::new(Limits::default());
    let (old, new) = (new_key(), new_key());
    relay.deposit(&old, b"before", at(0));

    let mut closing = Relay {
        service: MailboxService::new(
            MailboxStore::new(
                relay.backend.clone(),
                Limits {
                    accept_new_mailboxes: false,
                    ..Limits::default()
                },
            ),
            relay.key.clone(),
        ),
        key: relay.key.clone(),
        id: relay.id.clone(),
        backend: relay.backend.clone(),
        _dir: tempfile::tempdir().unwrap(),
    };
    assert!(matches!(
        closing.deposit(&old, b"after", at(1)),
        MailboxResponse::Receipt(_)
    ));
    assert_eq!(
        refused(closing.open(&new, at(1))),
        MailboxError::NotAccepting
    );
    assert_eq!(envelopes(closing.fetch(&old, 0, at(2))).len(), 2);
}

#[test]
fn many_deposits_in_one_request_are_answered_one_by_one() {
    use safemeet_proto::mailbox::{Deposit, DepositOutcome, MAX_DEPOSIT_ITEMS};

    let mut relay = Relay::new(Limits {
        max_envelope_bytes: 100,
        mailbox_max_envelopes: 2,
        ..Limits::default()
    });
    let (alice, bob) = (new_key(), new_key());
    let id = |k: &EpochKey| k.mailbox();
    relay.open(&alice, at(0));
    relay.open(&bob, at(0));
    let relay_id = relay.id.clone();
    let item = |k: &EpochKey, bytes: &[u8]| Deposit {
        mailbox: id(k),
        envelope: bytes.to_vec(),
        tag: deposit_tag(&k.deposit_check(), &relay_id, &id(k), bytes),
    };
    let request = MailboxRequest::DepositMany {
        version: VERSION,
        items: vec![
            item(&alice, b"a1"),
            item(&bob, b"b1"),
            item(&alice, &[0; 101]),
            item(&alice, b"a2"),
            item(&alice, b"a3"),
        ],
    };
    let MailboxResponse::Receipts(outcomes) = relay.ask(&request, at(0)) else {
        panic!("no outcomes")
    };
    let codes: Vec<Option<MailboxError>> = outcomes
        .iter()
        .map(|o| match o {
            DepositOutcome::Stored(_) => None,
            DepositOutcome::Refused { code, .. } => Some(*code),
        })
        .collect();
    assert_eq!(
        codes,
        [
            None,
            None,
            Some(MailboxError::TooLarge),
            None,
            Some(MailboxError::MailboxFull)
        ]
    );
    // Ids follow each other within a mailbox, as for single deposits.
    let ids: Vec<u64> = outcomes
        .iter()
        .filter_map(|o| match o {
            DepositOutcome::Stored(r) if r.mailbox == id(&alice) => Some(r.id),
            _ => None,
        })
        .collect();
    assert_eq!(ids, [1, 2]);
    assert_eq!(
        envelopes(relay.fetch(&alice, 0, at(1))),
        vec![(1, b"a1".to_vec()), (2, b"a2".to_vec())]
    );
    let totals = relay.service.store().totals().unwrap();
    assert_eq!((totals.envelopes, totals.mailboxes), (3, 2));

    let too_many = MailboxRequest::DepositMany {
        version: VERSION,
        items: (0..=MAX_DEPOSIT_ITEMS).map(|_| item(&bob, b"x")).collect(),
    };
    assert_eq!(
        refused(relay.ask(&too_many, at(2))),
        MailboxError::Malformed
    );
    assert_eq!(
        envelopes(relay.fetch(&bob, 0, at(3))).len(),
        1,
        "nothing of it stored"
    );
}

#[test]
fn requests_answered_together_see_each_other_in_order() {
    let mut relay = Relay::new(Limits::default());
    let alice = new_key();
    let mailbox = alice.mailbox();
    relay.open(&alice, at(0));
    let nonce = relay.nonce(at(0));
    let deposit = |bytes: &[u8]| codec::encode(&relay.deposit_request(&alice, bytes)).unwrap();
    let group = [
        deposit(b"one"),
        deposit(b"two"),
        codec::encode(&ack_request(&alice, &relay.id, nonce, mailbox, vec![1])).unwrap(),
        deposit(b"three"),
    ];
    let (answers, wrote) = relay.service.handle_many(&group, at(1));
    assert!(wrote);
    let ids: Vec<Option<u64>> = answers
        .iter()
        .map(|a| match a {
            MailboxResponse::Receipt(r) => Some(r.id),
            _ => None,
        })
        .collect();
    assert_eq!(ids, [Some(1), Some(2), None, Some(3)]);
    assert_eq!(
        answers[2],
        MailboxResponse::Acked { removed: 1 },
        "the ack saw the deposits before it"
    );
    assert_eq!(
        envelopes(relay.fetch(&alice, 0, at(2))),
        vec![(2, b"two".to_vec()), (3, b"three".to_vec())]
    );
    let totals = relay.service.store().totals().unwrap();
    assert_eq!(
        (totals.envelopes, totals.bytes),
        (2, disk_cost(3) + disk_cost(5))
    );
}

#[test]
fn a_page_of_large_envelopes_fits_in_one_answer() {
    use safemeet_proto::mailbox::MAX_RESPONSE_BYTES;

    let mut relay = Relay::new(Limits::default());
    let owner = new_key();
    let mailbox = owner.mailbox();
    let largest = Limits::default().max_envelope_bytes;
    for n in 0..70u8 {
        assert!(matches!(
            relay.deposit(&owner, &vec![n; largest], at(0)),
            MailboxResponse::Receipt(_)
        ));
    }
    let mut after = 0;
    let mut seen = 0;
    loop {
        let nonce = relay.nonce(at(1));
        let params = FetchParams {
            mailbox,
            after,
            limit: 64,
        };
        let request = MailboxRequest::Fetch(authorize(&owner, &relay.id, nonce, params).unwrap());
        let response = relay.ask(&request, at(1));
        let encoded = codec::encode(&response).unwrap();
        assert!(
            encoded.len() <= MAX_RESPONSE_BYTES,
            "{} bytes",
            encoded.len()
        );
        let MailboxResponse::Envelopes { items, more } = response else {
            panic!("no envelopes")
        };
        assert!(!items.is_empty());
        seen += items.len();
        after = items.last().unwrap().id;
        if !more {
            break;
        }
    }
    assert_eq!(seen, 70, "every envelope, over several pages");
}

/// A fresh mailbox key (of epoch 0).
fn new_key() -> EpochKey {
    EpochKey::derive(&Ed25519SecretKey::new(), 0)
}
