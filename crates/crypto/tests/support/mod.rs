//! Devices with real crypto machines over real stores, and a hand-carried
//! "network" that moves committed frames between them.

#![allow(dead_code, unreachable_pub, missing_docs)]

use safemeet_crypto::EncryptedStore;
use safemeet_crypto::Error;
use safemeet_crypto::account::Account;
use safemeet_crypto::at_rest::{DataKey, StoreCipher};
use safemeet_crypto::machine::{
    CryptoMachine, DecryptedRoomEvent, Destination, Outgoing, ReceivedToDevice, RoomMessage,
    RoomSend,
};
use safemeet_proto::envelope::{RoomEnvelope, ToDeviceEnvelope};
use safemeet_proto::event::{EventContent, Message, MessageText};
use safemeet_proto::{DeviceId, DisplayName, Envelope, RoomId, Timestamp, UserId, Username};
use safemeet_store::{MemoryStore, Store};

pub const T0: u64 = 1_700_000_000_000;

pub fn ts(ms: u64) -> Timestamp {
    Timestamp::from_millis(ms).unwrap()
}

pub struct Device<S: Store = MemoryStore> {
    pub name: &'static str,
    pub machine: CryptoMachine<S>,
    pub backend: S,
    pub key: DataKey,
}

pub fn new_account(name: &str) -> Account {
    Account::create(
        Username::new(name).unwrap(),
        DisplayName::new(name).unwrap(),
        vec![],
        ts(T0),
    )
    .unwrap()
}

impl<S: Store + Clone> Device<S> {
    pub fn with_account(name: &'static str, account: &Account, backend: S) -> Self {
        let key = DataKey::generate();
        let store = EncryptedStore::new(backend.clone(), StoreCipher::new(&key));
        CryptoMachine::store_account(&store, account).unwrap();
        let machine = CryptoMachine::open(store).unwrap();
        Self {
            name,
            machine,
            backend,
            key,
        }
    }

    /// Reopens the machine over the same backend. With `clean`, the old one
    /// is closed first; without, it is dropped as a crash would leave it.
    pub fn restart(self, clean: bool) -> Self {
        let Self {
            name,
            machine,
            backend,
            key,
        } = self;
        if clean {
            machine.close().unwrap();
        } else {
            drop(machine);
        }
        let store = EncryptedStore::new(backend.clone(), StoreCipher::new(&key));
        Self {
            name,
            machine: CryptoMachine::open(store).unwrap(),
            backend,
            key,
        }
    }
}

impl<S: Store> Device<S> {
    pub fn user(&self) -> UserId {
        self.machine.account().user_id()
    }

    pub fn device_id(&self) -> DeviceId {
        self.machine.account().device_id()
    }
}

impl Device<MemoryStore> {
    pub fn new(name: &'static str) -> Self {
        Self::with_account(name, &new_account(name), MemoryStore::new())
    }
}

/// Each learns the other's device list and certificates.
pub fn introduce<A: Store, B: Store>(a: &mut Device<A>, b: &mut Device<B>) {
    let (la, ca) = identity_of(a);
    let (lb, cb) = identity_of(b);
    a.machine.add_device_list(&lb, &cb).unwrap();
    b.machine.add_device_list(&la, &ca).unwrap();
}

pub fn identity_of<S: Store>(
    d: &Device<S>,
) -> (
    safemeet_proto::identity::Signed<safemeet_proto::identity::DeviceList>,
    Vec<safemeet_proto::identity::Signed<safemeet_proto::identity::DeviceCertificate>>,
) {
    (
        d.machine.account().device_list().signed().clone(),
        vec![d.machine.account().certificate().clone()],
    )
}

/// `a` opens an Olm session to `b` with one of `b`'s one-time keys.
pub fn connect<A: Store, B: Store>(a: &mut Device<A>, b: &mut Device<B>) {
    let key = b.machine.claim_one_time_keys(1, ts(T0)).unwrap().remove(0);
    a.machine
        .create_outbound_session(&b.device_id(), &key, ts(T0))
        .unwrap();
}

pub fn text(s: &str) -> EventContent {
    EventContent::Message(Message {
        body: MessageText::new(s).unwrap(),
        reply_to: None,
    })
}

pub fn body(e: &DecryptedRoomEvent) -> String {
    match &e.event.content {
        EventContent::Message(m) => m.body.as_str().to_owned(),
        other => panic!("not a message: {other:?}"),
    }
}

pub fn room(n: u8) -> RoomId {
    RoomId::from_bytes([n; 16])
}

pub fn send<S: Store>(
    from: &mut Device<S>,
    room_id: RoomId,
    members: &[UserId],
    msg: &str,
    now: u64,
) -> RoomSend {
    let batch = from.machine.store().batch();
    from.machine
        .encrypt_room_event(
            RoomMessage {
                room_id,
                topic: safemeet_proto::room::RoomTopic::from_bytes([9; 32]),
                header: &header_key(),
                members,
                content: text(msg),
                lamport: 1,
            },
            ts(now),
            batch,
            b"",
        )
        .unwrap()
}

/// The header key the test rooms' messages are sealed under.
pub fn header_key() -> safemeet_proto::header::HeaderKey {
    safemeet_proto::header::HeaderKey::for_room(&safemeet_proto::RoomSecret::from_bytes([9; 32]))
}

pub fn room_envelope(out: &Outgoing) -> RoomEnvelope {
    match Envelope::from_frame(&out.frame().unwrap()).unwrap() {
        Envelope::Room(r) => safemeet_crypto::header::open(&header_key(), &r).unwrap(),
        other => panic!("not a room envelope: {other:?}"),
    }
}

pub fn to_device_envelope(out: &Outgoing) -> ToDeviceEnvelope {
    match Envelope::from_frame(&out.frame().unwrap()).unwrap() {
        Envelope::ToDevice(t) => t,
        other => panic!("not a to-device envelope: {other:?}"),
    }
}

/// The key shares of `sent` addressed to `to`.
pub fn shares_for<'a, S: Store>(sent: &'a RoomSend, to: &Device<S>) -> Vec<&'a Outgoing> {
    sent.key_shares
        .iter()
        .filter(|o| o.destination == Destination::Device(to.user(), to.device_id()))
        .collect()
}

/// Delivers the key shares for `to`, then the room message.
pub fn deliver<S: Store>(
    sent: &RoomSend,
    to: &mut Device<S>,
    now: u64,
) -> Result<DecryptedRoomEvent, Error> {
    for share in shares_for(sent, to) {
        receive_to_device(share, to, now)?;
    }
    to.machine
        .decrypt_room(&room_envelope(&sent.message), ts(now))
}

pub fn receive_to_device<S: Store>(
    out: &Outgoing,
    to: &mut Device<S>,
    now: u64,
) -> Result<ReceivedToDevice, Error> {
    to.machine
        .decrypt_to_device(&to_device_envelope(out), ts(now))
}

/// Alice and Bob, introduced, with an Olm session from Alice to Bob.
pub fn pair() -> (Device, Device) {
    let mut alice = Device::new("alice");
    let mut bob = Device::new("bob");
    introduce(&mut alice, &mut bob);
    connect(&mut alice, &mut bob);
    (alice, bob)
}

/// Alice, Bob and Carol; Alice knows and has sessions to both others.
pub fn hub_of_three() -> (Device, Device, Device) {
    let (mut a, b) = pair();
    let mut c = Device::new("carol");
    introduce(&mut a, &mut c);
    connect(&mut a, &mut c);
    (a, b, c)
}

/// A to-device envelope from `from` to `to` built with raw vodozemac: a
/// fresh Olm session from `from`'s real identity key and one of `to`'s
/// one-time keys, carrying `sealed` as is. This lets a test put anything in
/// the plaintext, as a malicious device could.
pub fn raw_to_device(
    from: &Device,
    to: &mut Device,
    sealed: &safemeet_proto::event::Sealed,
) -> ToDeviceEnvelope {
    let otk = to.machine.claim_one_time_keys(1, ts(T0)).unwrap().remove(0);
    let otk = otk.decode_body().unwrap();
    let to_cert = to.machine.account().certificate().decode_body().unwrap();
    let mut session = from
        .machine
        .account()
        .device_keys()
        .olm
        .create_outbound_session(
            vodozemac::olm::SessionConfig::version_1(),
            vodozemac::Curve25519PublicKey::from_bytes(to_cert.curve25519_key),
            vodozemac::Curve25519PublicKey::from_bytes(otk.key),
        )
        .unwrap();
    let vodozemac::olm::OlmMessage::PreKey(pre) =
        session.encrypt(sealed.encode_padded().unwrap()).unwrap()
    else {
        panic!("the first message of a session is a pre-key message");
    };
    ToDeviceEnvelope {
        kind: safemeet_proto::envelope::OlmMessageKind::PreKey,
        session_id: session_id(&session.session_id()),
        ciphertext: pre.to_bytes(),
    }
}

/// A vodozemac base64 session id as bytes.
pub fn session_id(text: &str) -> [u8; 32] {
    data_encoding::BASE64_NOPAD
        .decode(text.as_bytes())
        .unwrap()
        .try_into()
        .unwrap()
}
