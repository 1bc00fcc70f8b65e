//! Three devices share an end-to-end encrypted room; one member leaves and
//! can read nothing after.
//!
//! Run with `cargo run -p safemeet-examples --bin room-encryption`.
//!
//! Alice, Bob and Carol each have one device with its own crypto machine
//! over an in-memory store. They exchange signed device lists, Alice opens
//! Olm sessions with one-time keys that Bob's and Carol's devices hand out,
//! and Alice writes to the room: the first message carries the room key to
//! each device over Olm. Carol then leaves; Alice's next message starts a new
//! Megolm session that Carol never receives, so she cannot decrypt it.

use anyhow::{Context, bail};
use safemeet_crypto::EncryptedStore;
use safemeet_crypto::account::Account;
use safemeet_crypto::at_rest::{DataKey, StoreCipher};
use safemeet_crypto::machine::{CryptoMachine, Destination, RoomMessage, RoomSend};
use safemeet_proto::clock::{Clock, SystemClock};
use safemeet_proto::event::{EventContent, Message, MessageText};
use safemeet_proto::{DisplayName, Envelope, RoomId, UserId, Username};
use safemeet_store::MemoryStore;

type Machine = CryptoMachine<MemoryStore>;

fn device(name: &str) -> anyhow::Result<Machine> {
    let account = Account::create(
        Username::new(name)?,
        DisplayName::new(name)?,
        vec![],
        SystemClock.now(),
    )?;
    let store = EncryptedStore::new(MemoryStore::new(), StoreCipher::new(&DataKey::generate()));
    CryptoMachine::store_account(&store, &account)?;
    Ok(CryptoMachine::open(store)?)
}

/// `a` learns `b`'s signed device list and opens an Olm session to it.
fn meet(a: &mut Machine, b: &mut Machine) -> anyhow::Result<()> {
    let list = b.account().device_list().signed().clone();
    a.add_device_list(&list, std::slice::from_ref(b.account().certificate()))?;
    let list = a.account().device_list().signed().clone();
    b.add_device_list(&list, std::slice::from_ref(a.account().certificate()))?;
    let key = b
        .claim_one_time_keys(1, SystemClock.now())?
        .pop()
        .context("no one-time key")?;
    a.create_outbound_session(&b.account().device_id(), &key, SystemClock.now())?;
    Ok(())
}

/// The room's header key: its messages' envelopes are sealed under it.
fn header_key() -> safemeet_proto::header::HeaderKey {
    safemeet_proto::header::HeaderKey::for_room(&safemeet_proto::RoomSecret::from_bytes([7; 32]))
}

fn send(
    from: &mut Machine,
    room: RoomId,
    members: &[UserId],
    text: &str,
) -> anyhow::Result<RoomSend> {
    let batch = from.store().batch();
    Ok(from.encrypt_room_event(
        RoomMessage {
            room_id: room,
            topic: safemeet_proto::room::RoomTopic::from_bytes([7; 32]),
            header: &header_key(),
            members,
            content: EventContent::Message(Message {
                body: MessageText::new(text)?,
                reply_to: None,
            }),
            lamport: 0,
        },
        SystemClock.now(),
        batch,
        b"",
    )?)
}

/// Delivers the key shares addressed to `to`, then the message; returns
/// the text or the reason it could not be read.
fn receive(sent: &RoomSend, to: &mut Machine) -> anyhow::Result<Result<String, String>> {
    let me = Destination::Device(to.account().user_id(), to.account().device_id());
    for share in sent.key_shares.iter().filter(|s| s.destination == me) {
        let Envelope::ToDevice(env) = Envelope::from_frame(&share.frame()?)? else {
            bail!("a key share that is not a to-device envelope");
        };
        to.decrypt_to_device(&env, SystemClock.now())?;
    }
    let Envelope::Room(sealed) = Envelope::from_frame(&sent.message.frame()?)? else {
        bail!("a room message that is not a room envelope");
    };
    let env = safemeet_crypto::header::open(&header_key(), &sealed)?;
    Ok(match to.decrypt_room(&env, SystemClock.now()) {
        Ok(event) => match event.event.content {
            EventContent::Message(m) => Ok(m.body.as_str().to_owned()),
            _ => Err("not a message".to_owned()),
        },
        Err(e) => Err(e.to_string()),
    })
}

fn main() -> anyhow::Result<()> {
    let (mut alice, mut bob, mut carol) = (device("alice")?, device("bob")?, device("carol")?);
    meet(&mut alice, &mut bob)?;
    meet(&mut alice, &mut carol)?;
    let room = RoomId::from_bytes([1; 16]);
    let ids = |m: &Machine| m.account().user_id();

    let everyone = [ids(&alice), ids(&bob), ids(&carol)];
    let first = send(&mut alice, room, &everyone, "Hello, both of you")?;
    println!(
        "alice sends  \"Hello, both of you\" (key shared with {} devices)",
        first.key_shares.len()
    );
    for (name, m) in [("bob", &mut bob), ("carol", &mut carol)] {
        match receive(&first, m)? {
            Ok(text) => println!("{name:<5} reads \"{text}\""),
            Err(e) => bail!("{name} could not read the first message: {e}"),
        }
    }

    let without_carol = [ids(&alice), ids(&bob)];
    let second = send(&mut alice, room, &without_carol, "Carol has left")?;
    println!(
        "alice sends  \"Carol has left\" (new session: {:?})",
        second.rotation
    );
    match receive(&second, &mut bob)? {
        Ok(text) => println!("bob   reads \"{text}\""),
        Err(e) => bail!("bob could not read the second message: {e}"),
    }
    match receive(&second, &mut carol)? {
        Ok(_) => bail!("carol read a message sent after she left"),
        Err(e) => println!("carol cannot read it: {e}"),
    }
    println!("a member who left reads nothing new");
    Ok(())
}
