//! A crypto device in memory and the fixtures the crypto machine's crash
//! test needs (a small part of `safemeet-crypto`'s own test support).

#![allow(dead_code, unreachable_pub, missing_docs)]

use safemeet_crypto::EncryptedStore;
use safemeet_crypto::account::Account;
use safemeet_crypto::at_rest::{DataKey, StoreCipher};
use safemeet_crypto::machine::{CryptoMachine, DecryptedRoomEvent};
use safemeet_proto::event::{EventContent, Message, MessageText};
use safemeet_proto::identity::{DeviceCertificate, DeviceList, Signed};
use safemeet_proto::{DeviceId, DisplayName, RoomId, Timestamp, UserId, Username};
use safemeet_store::MemoryStore;

/// The tests' "now", in ms since the Unix epoch.
pub const T0: u64 = 1_700_000_000_000;

pub fn ts(ms: u64) -> Timestamp {
    Timestamp::from_millis(ms).unwrap()
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

/// A device with its crypto machine over a memory store.
pub struct Device {
    pub machine: CryptoMachine<MemoryStore>,
}

impl Device {
    pub fn new(name: &str) -> Self {
        let store = EncryptedStore::new(MemoryStore::new(), StoreCipher::new(&DataKey::generate()));
        CryptoMachine::store_account(&store, &new_account(name)).unwrap();
        Self {
            machine: CryptoMachine::open(store).unwrap(),
        }
    }

    pub fn user(&self) -> UserId {
        self.machine.account().user_id()
    }

    pub fn device_id(&self) -> DeviceId {
        self.machine.account().device_id()
    }
}

/// What a contact learns of `d`: its device list and certificate.
pub fn identity_of(d: &Device) -> (Signed<DeviceList>, Vec<Signed<DeviceCertificate>>) {
    (
        d.machine.account().device_list().signed().clone(),
        vec![d.machine.account().certificate().clone()],
    )
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
