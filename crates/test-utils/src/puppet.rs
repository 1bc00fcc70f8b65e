//! A puppet device: a real, certified device whose crypto machine the
//! test drives by hand, on a bare `safemeet_net` node (real TCP on
//! 127.0.0.1, Noise, yamux) with the device's own libp2p keypair. It sends
//! exactly the frames the test makes, one at a time, and hands back each
//! answer (`ok`, `later`, `refused`), which an engine of its own would keep
//! to itself. Deliveries to it are dropped unanswered.
//!
//! It plays a blocked user, a stranger holding an invite, or a member
//! flooding junk, as the test needs.

use std::time::Duration;

use libp2p::{Multiaddr, PeerId};
use safemeet_crypto::machine::{CryptoMachine, Destination, RoomMessage};
use safemeet_proto::clock::{Clock, SystemClock};
use safemeet_proto::event::{
    EventContent, INTRODUCTION_VERSION, Introduction, Message, MessageText, ToDeviceEvent,
};
use safemeet_proto::event::{ROOM_STATE_VERSION, RoomState};
use safemeet_proto::header::HeaderKey;
use safemeet_proto::invite::{INVITE_VERSION, Invite};
use safemeet_proto::room::{dm_room, room_id_for};
use safemeet_proto::{RoomId, RoomSecret, UserId};

use crate::{Device, FaultyStore};

fn text_content(text: &str) -> EventContent {
    EventContent::Message(Message {
        body: MessageText::new(text).unwrap(),
        reply_to: None,
    })
}

/// How long the puppet waits for an answer.
const ANSWER_WAIT: Duration = Duration::from_secs(20);

/// A device driven by the test (see the module docs).
pub struct Puppet {
    /// The device (its account and store).
    pub device: Device,
    machine: CryptoMachine<FaultyStore>,
    net: safemeet_net::Handle,
    addr: Multiaddr,
    lamport: u64,
    /// The inviting devices of the invites it took.
    devices: Vec<(UserId, safemeet_proto::DeviceId)>,
    /// The rooms it created: id, secret, members.
    rooms: Vec<(RoomId, RoomSecret, Vec<UserId>)>,
    _events: tokio::task::JoinHandle<()>,
}

impl Puppet {
    /// A new user with one device, listening on 127.0.0.1.
    pub async fn spawn(name: &str) -> Self {
        let device = Device::new(name, SystemClock.now());
        let machine = device.machine();
        let (net, mut events) =
            safemeet_net::spawn(device.libp2p_keypair(), safemeet_net::Config::loopback()).unwrap();
        // Deliveries to the puppet are dropped (their slots freed).
        let events = tokio::spawn(async move { while events.recv().await.is_some() {} });
        let addr = tokio::time::timeout(ANSWER_WAIT, async {
            loop {
                if let Some(a) = net.listen_addrs().await.unwrap().into_iter().next() {
                    return safemeet_net::dialable(&a, net.peer_id());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the puppet listens");
        Self {
            device,
            machine,
            net,
            addr,
            lamport: 0,
            devices: Vec::new(),
            rooms: Vec::new(),
            _events: events,
        }
    }

    /// Its user id.
    pub fn user_id(&self) -> UserId {
        self.machine.account().user_id()
    }

    /// Its invite, as an engine makes one.
    pub fn invite(&mut self) -> String {
        let fallback_key = self.machine.fallback_key(SystemClock.now()).unwrap();
        let account = self.machine.account();
        Invite {
            version: INVITE_VERSION,
            device_list: account.device_list().signed().clone(),
            certificates: vec![account.certificate().clone()],
            fallback_key,
            profile: account.profile().signed().clone(),
            addrs: vec![self.addr.to_string()],
            relays: None,
        }
        .to_text()
        .unwrap()
    }

    /// Takes another user's invite (their devices, and an Olm session to
    /// the inviting device from its fallback key).
    pub fn add(&mut self, invite: &str) {
        let invite = Invite::from_text(invite).unwrap();
        self.machine
            .add_device_list(&invite.device_list, &invite.certificates)
            .unwrap();
        let device = invite.fallback_key.decode_body().unwrap().device_id;
        let user = invite.device_list.decode_body().unwrap().user_id;
        self.devices.push((user, device));
        if !self.machine.has_session(&device).unwrap() {
            self.machine
                .create_outbound_session(&device, &invite.fallback_key, SystemClock.now())
                .unwrap();
        }
    }

    /// Its introduction to `to`'s device (whose invite it took), as an
    /// engine sends it on adding a contact.
    pub fn introduce(&mut self, to: UserId) -> Vec<u8> {
        let account = self.machine.account();
        let introduction = Introduction {
            version: INTRODUCTION_VERSION,
            device_list: account.device_list().signed().clone(),
            certificates: vec![account.certificate().clone()],
            profile: account.profile().signed().clone(),
        };
        self.to_device(to, ToDeviceEvent::Introduction(Box::new(introduction)))
    }

    /// A to-device event for `to`'s device (whose invite it took), as a
    /// frame.
    pub fn to_device(&mut self, to: UserId, event: ToDeviceEvent) -> Vec<u8> {
        let device = self
            .devices
            .iter()
            .find(|(u, _)| *u == to)
            .map(|(_, d)| *d)
            .expect("an invite of theirs was taken");
        let out = self
            .machine
            .encrypt_to_device(to, device, event, Default::default(), &[])
            .unwrap();
        self.machine.flush().unwrap();
        out.frame().unwrap()
    }

    /// Signs the next version of its profile with this display name and
    /// returns it (to send as the test chooses).
    pub fn next_profile(
        &mut self,
        display_name: &str,
    ) -> safemeet_proto::identity::Signed<safemeet_proto::identity::Profile> {
        let emails = self.machine.account().profile().emails.clone();
        self.machine
            .update_profile(display_name.parse().unwrap(), emails, SystemClock.now())
            .unwrap();
        self.machine.account().profile().signed().clone()
    }

    /// The frames of a DM to `to`: the room key shares for `to`'s devices
    /// (none once they have the session), then the message.
    pub fn dm(&mut self, to: UserId, text: &str) -> Vec<Vec<u8>> {
        let me = self.user_id();
        let (room_id, topic) = dm_room(&me, &to);
        let header = HeaderKey::for_dm(&topic);
        self.frames(
            room_id,
            topic,
            &header,
            &[me, to],
            text_content(text),
            Some(to),
        )
    }

    /// Creates a group room with `members` (this user is its creator and
    /// admin); returns its id and the frames for `to`: its key share and
    /// the room's first state (the invitation). `n` makes the room's nonce
    /// and secret.
    pub fn create_room(
        &mut self,
        name: &str,
        others: &[UserId],
        to: UserId,
        n: u8,
    ) -> (RoomId, Vec<Vec<u8>>) {
        let me = self.user_id();
        let nonce = [n; 16];
        let secret = RoomSecret::from_bytes([n; 32]);
        let room_id = room_id_for(&me, &nonce);
        let mut members = vec![me];
        members.extend_from_slice(others);
        let state = RoomState {
            version: ROOM_STATE_VERSION,
            name: name.to_owned(),
            secret: secret.clone(),
            members: members.clone(),
            admins: vec![me],
            banned: Vec::new(),
            creator: me,
            nonce,
            epoch: 0,
            prev: None,
            added: others.to_vec(),
        };
        let header = HeaderKey::for_room(&secret);
        let frames = self.frames(
            room_id,
            secret.topic(),
            &header,
            &members,
            EventContent::RoomState(Box::new(state)),
            Some(to),
        );
        self.rooms.push((room_id, secret, members));
        (room_id, frames)
    }

    /// The frames of a message in a room this puppet created, for `to`
    /// (its key share, if `to` has none yet, then the message).
    pub fn room_message(&mut self, room: RoomId, to: UserId, text: &str) -> Vec<Vec<u8>> {
        let (_, secret, members) = self
            .rooms
            .iter()
            .find(|(r, _, _)| *r == room)
            .cloned()
            .expect("a room of this puppet's");
        let header = HeaderKey::for_room(&secret);
        self.frames(
            room,
            secret.topic(),
            &header,
            &members,
            text_content(text),
            Some(to),
        )
    }

    /// A real Megolm message under the DM header key of `a` and `b` (which
    /// anyone knowing the two user ids can work out), from a session of a
    /// room nobody else was given (a new one for each `n`): junk that opens
    /// but cannot be placed.
    pub fn junk_for_dm(&mut self, a: UserId, b: UserId, n: u32) -> Vec<u8> {
        let (_, topic) = dm_room(&a, &b);
        let header = HeaderKey::for_dm(&topic);
        let me = self.user_id();
        let mut id = [0xee; 16];
        id[..4].copy_from_slice(&n.to_be_bytes());
        let room = RoomId::from_bytes(id);
        let mut frames = self.frames(room, topic, &header, &[me], text_content("junk"), None);
        frames.pop().unwrap()
    }

    fn frames(
        &mut self,
        room_id: RoomId,
        topic: safemeet_proto::room::RoomTopic,
        header: &HeaderKey,
        members: &[UserId],
        content: EventContent,
        to: Option<UserId>,
    ) -> Vec<Vec<u8>> {
        self.lamport += 1;
        let sent = self
            .machine
            .encrypt_room_event(
                RoomMessage {
                    room_id,
                    topic,
                    header,
                    members,
                    content,
                    lamport: self.lamport,
                },
                SystemClock.now(),
                Default::default(),
                &[],
            )
            .unwrap();
        self.machine.flush().unwrap();
        let mut frames: Vec<Vec<u8>> = sent
            .key_shares
            .iter()
            .filter(|o| matches!(o.destination, Destination::Device(user, _) if Some(user) == to))
            .map(|o| o.frame().unwrap())
            .collect();
        frames.push(sent.message.frame().unwrap());
        frames
    }

    /// Delivers `frame` to the engine `peer` listening on `addr`; its
    /// answer (`ok`, `later`, `refused`).
    pub async fn deliver(&self, peer: PeerId, addr: &Multiaddr, frame: Vec<u8>) -> String {
        self.try_deliver(peer, addr, frame)
            .await
            .expect("delivered")
    }

    /// [`deliver`](Self::deliver), or why the delivery failed (the engine
    /// refused the connection, say).
    pub async fn try_deliver(
        &self,
        peer: PeerId,
        addr: &Multiaddr,
        frame: Vec<u8>,
    ) -> Result<String, safemeet_net::Error> {
        let answer = tokio::time::timeout(
            ANSWER_WAIT,
            self.net.deliver(peer, vec![addr.clone()], frame),
        )
        .await
        .expect("an answer or a failure in time")?;
        Ok(String::from_utf8_lossy(&answer).into_owned())
    }
}
