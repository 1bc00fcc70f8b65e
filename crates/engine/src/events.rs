//! The core's inputs and outputs: requests from the API and their
//! answers, what the network and the actor report, and the effects the
//! actor carries out.

use libp2p::{Multiaddr, PeerId};
use safemeet_proto::mailbox::StoredEnvelope;
use safemeet_proto::room::RoomTopic;
use safemeet_proto::{EventId, MailboxId, RoomId, Timestamp, UserId};
use std::sync::Arc;

use crate::mailbox::Relay;
use crate::{Contact, Error, LogEntry, RoomInfo, TimelineEntry};

/// Identifies a request, so its [`Output::Reply`] can be matched to it.
pub type RequestId = u64;

/// A request from the API.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Command {
    /// Make an invite; `addrs` are where this node listens.
    Invite {
        /// Listen addresses, best first.
        addrs: Vec<Multiaddr>,
    },
    /// Accept an invite.
    AddContact {
        /// The invite text.
        invite: String,
        /// The name this user gives the contact.
        pet_name: Option<String>,
    },
    /// List contacts.
    Contacts,
    /// Remove a contact; their messages are refused until they are added
    /// again.
    RemoveContact(UserId),
    /// Block a user: their deliveries are refused, nothing of theirs is
    /// stored.
    Block(UserId),
    /// Unblock a user.
    Unblock(UserId),
    /// The blocked users.
    Blocked,
    /// Whether a contact's room invitations are joined without asking.
    SetAutoAccept {
        /// The contact.
        user: UserId,
        /// On or off.
        on: bool,
    },
    /// Send a direct message.
    SendDm {
        /// The contact.
        to: UserId,
        /// The text.
        text: String,
    },
    /// Send a message to a group room.
    SendRoom {
        /// The room.
        room: RoomId,
        /// The text.
        text: String,
    },
    /// A page of a conversation's whole timeline, in stored order, after
    /// a stored position (from the start when `None`).
    TimelinePage {
        /// The conversation.
        conversation: crate::Conversation,
        /// The stored position of the last entry of the previous page.
        after: Option<u64>,
        /// At most this many.
        limit: usize,
    },
    /// The last messages with a contact.
    DmMessages {
        /// The contact.
        with: UserId,
        /// How many.
        limit: usize,
    },
    /// The last messages of a group room.
    RoomMessages {
        /// The room.
        room: RoomId,
        /// How many.
        limit: usize,
    },
    /// Delete a message for everyone (its sender, or a room admin).
    Redact(EventId),
    /// Replace the text of one of this user's messages.
    Edit(EventId, String),
    /// Set or clear how long a conversation's messages are kept, for
    /// every member.
    SetExpiry {
        /// The conversation.
        conversation: crate::Conversation,
        /// Milliseconds; `None`: kept.
        expire_after_ms: Option<u64>,
    },
    /// A conversation's expiry.
    Expiry(crate::Conversation),
    /// The node's security log, read back.
    SecurityLog,
    /// Set (or with `None` remove) this user's avatar.
    SetAvatar(Option<safemeet_proto::identity::AvatarImage>),
    /// A user's avatar (this user's own too), if held.
    Avatar(UserId),
    /// What a user's avatar is, if one is held.
    AvatarInfo(UserId),
    /// Issue the device an archive becomes, and the archive's body.
    ExportArchive,
    /// A step of deleting the account (see `deletion`).
    DeleteAccount(crate::DeletionStep),
    /// How many outbox items are still to be delivered.
    Pending,
    /// Set or clear this device's retention limit (ms).
    SetRetention(Option<u64>),
    /// This device's retention limit.
    Retention,
    /// Create a group room.
    CreateRoom {
        /// Its name.
        name: String,
        /// Its members besides this user.
        members: Vec<UserId>,
    },
    /// Add a contact to a group room.
    RoomInvite {
        /// The room.
        room: RoomId,
        /// The contact.
        user: UserId,
    },
    /// Leave a group room.
    RoomLeave(RoomId),
    /// Remove a member from a group room (admins only).
    RoomRemove {
        /// The room.
        room: RoomId,
        /// The member.
        user: UserId,
    },
    /// Remove a member from a group room and bar them from it (admins
    /// only).
    RoomBan {
        /// The room.
        room: RoomId,
        /// The member.
        user: UserId,
    },
    /// The group rooms this user is in.
    Rooms,
    /// The room invitations waiting for consent.
    Invitations,
    /// The message requests.
    Requests,
    /// Accept a message request: its sender becomes a contact.
    RequestAccept(UserId),
    /// Decline a message request: it is deleted.
    RequestDecline(UserId),
    /// Join a room from its pending invitation.
    RoomJoin(RoomId),
    /// Drop a pending room invitation.
    RoomDecline(RoomId),
    /// Issue a new device of this user and make its link bundle, with
    /// this many days of history (the device link's responder asks this
    /// once the handshake has passed).
    LinkExport {
        /// Days of history.
        days: u32,
        /// The new device gets a copy of the master key.
        with_master: bool,
    },
    /// This user's devices.
    Devices,
    /// The devices whose messages show as verified: this user's active
    /// devices and contacts' devices verified by SAS.
    VerifiedDevices,
    /// Verify a contact's device by SAS: answer their request, or ask.
    VerifyStart(UserId),
    /// Where the verification with a contact stands.
    VerifyStatus(UserId),
    /// Verify a contact from their invite, scanned or pasted in person.
    VerifyInvite(String),
    /// This user compared the strings: they match, or not (cancels).
    VerifyAnswer {
        /// The contact.
        user: UserId,
        /// Whether the strings match.
        matches: bool,
    },
    /// Revoke another device of this user (on the device with the master key).
    RevokeDevice(safemeet_proto::DeviceId),
    /// Name one of this user's devices (on any of them).
    RenameDevice(safemeet_proto::DeviceId, String),
    /// Record a security event that happened outside the engine (an
    /// export): a name from a fixed list, and the id it is about.
    Security(&'static str, Option<String>),
    /// This user's current profile.
    Profile,
    /// Change this user's profile (on the device with the master key).
    ChangeProfile(crate::ProfileChange),
    /// Event-log entries after a cursor.
    Events {
        /// 0: from the start.
        cursor: u64,
        /// At most this many.
        limit: usize,
    },
    /// Send a file message (its chunks are sealed already).
    SendFile(crate::Conversation, Box<safemeet_proto::file::FileMessage>),
    /// The file of a message, if this peer may have it.
    FileForPeer(EventId, PeerId),
    /// Where the file of a message comes from.
    FileSource(EventId),
    /// Every file message held.
    FileEntries,
    /// The files still to be left on relays.
    PieceJobs,
    /// Pieces of a file were left on a device's relays up to `next`
    /// (`None`: all, or given up).
    PiecesLeft {
        /// The file message.
        event: EventId,
        /// The device.
        peer: PeerId,
        /// The first piece not left yet.
        next: Option<u64>,
    },
    /// Change which signals this user shares (`None`: unchanged).
    SetSignals {
        /// Presence.
        presence: Option<bool>,
        /// Typing.
        typing: Option<bool>,
        /// Read receipts.
        read_receipts: Option<bool>,
    },
    /// Which signals this user shares.
    Signals,
    /// Signals sent and received since start.
    SignalCounts,
    /// This user types in a conversation (true), or stopped.
    Typing(crate::Conversation, bool),
    /// Send a call signal to a contact's devices (or one).
    CallSignal {
        /// The contact.
        user: UserId,
        /// One device only.
        device: Option<safemeet_proto::DeviceId>,
        /// The signal.
        signal: safemeet_proto::signal::CallSignal,
    },
    /// A call or a meeting ended: into the event log.
    NoteCall(crate::call_signals::CallLog),
    /// This user read a conversation up to its latest message.
    MarkRead(crate::Conversation),
    /// Who types in a conversation now.
    Typers(crate::Conversation),
    /// Contacts' presence.
    Presence,
    /// Each member's read marker in a conversation (Lamport times).
    ReadMarkers(crate::Conversation),
    /// Mute (true) or unmute a conversation on this device.
    SetMuted(crate::Conversation, bool),
    /// The muted conversations.
    Muted,
}

/// The answer to a [`Command`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Response {
    /// Done, nothing to report.
    Done,
    /// An invite's text.
    Invite(String),
    /// The devices a call signal went to, with their peers.
    CallSent(Vec<(safemeet_proto::DeviceId, PeerId)>),
    /// A user (a contact added).
    User(UserId),
    /// Users (the blocked ones).
    Users(Vec<UserId>),
    /// The contacts.
    Contacts(Vec<Contact>),
    /// A message sent ("sent": committed to the outbox).
    Sent(EventId),
    /// A duration in milliseconds, or none.
    Duration(Option<u64>),
    /// The node's security log.
    SecurityLog(crate::SecurityEntries),
    /// An archive's body (secret) and what it carries.
    Archive(ArchiveBytes),
    /// What the network part of a deletion did.
    Deletion(crate::DeletionReport),
    /// A count.
    Count(usize),
    /// What an avatar is now.
    AvatarInfo(Option<crate::AvatarInfo>),
    /// An avatar's image.
    AvatarImage(Option<safemeet_proto::identity::AvatarImage>),
    /// Messages, oldest first.
    Messages(Vec<TimelineEntry>),
    /// A room created.
    Room(RoomId),
    /// The group rooms.
    Rooms(Vec<RoomInfo>),
    /// The pending room invitations.
    Invitations(Vec<crate::Invitation>),
    /// The message requests.
    Requests(Vec<crate::MessageRequest>),
    /// Event-log entries with their cursors.
    Events(Vec<(u64, LogEntry)>),
    /// A link bundle for a new device.
    LinkBundle(LinkBundleBytes),
    /// This user's devices.
    Devices(Vec<crate::DeviceView>),
    /// A verification's state.
    Verification(crate::VerificationView),
    /// Devices.
    DeviceIds(Vec<safemeet_proto::DeviceId>),
    /// A user's devices.
    UserDevices(UserId, Vec<safemeet_proto::DeviceId>),
    /// A profile.
    Profile(Box<safemeet_proto::identity::Profile>),
    /// Timeline entries with their stored positions.
    Page(Vec<(u64, TimelineEntry)>),
    /// A file message, if any.
    File(Option<crate::FileEntry>),
    /// Where a file comes from, if it is held.
    FileSource(Option<crate::FileSource>),
    /// File messages.
    Files(Vec<crate::FileEntry>),
    /// Files still to be left on relays.
    PieceJobs(Vec<crate::PieceJob>),
    /// Signal settings.
    Signals(crate::SignalSettings),
    /// Signal counts.
    SignalCounts(crate::SignalCounts),
    /// Contacts' presence.
    Presence(Vec<(UserId, crate::PresenceView)>),
    /// Read markers: each member's Lamport time.
    ReadMarkers(Vec<(UserId, u64)>),
    /// Room ids (the muted conversations).
    RoomIds(Vec<RoomId>),
}

/// An archive's body (secret: it holds the new device's keys and the
/// master key), with what it says about itself and carries.
#[derive(Clone)]
pub struct ArchiveBytes {
    /// The archive's body, to be sealed.
    pub body: std::sync::Arc<zeroize::Zeroizing<Vec<u8>>>,
    /// What it says about itself and carries.
    pub export: crate::archive::ArchiveExport,
}

impl std::fmt::Debug for ArchiveBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveBytes")
            .field("export", &self.export)
            .finish_non_exhaustive()
    }
}

/// A link bundle's bytes (secret: they hold the new device's keys), with
/// the new device's id and what it holds.
#[derive(Clone)]
pub struct LinkBundleBytes {
    /// The encoded bundle.
    pub bytes: std::sync::Arc<zeroize::Zeroizing<Vec<u8>>>,
    /// The new device.
    pub device_id: safemeet_proto::DeviceId,
    /// What it holds.
    pub summary: crate::link::LinkSummary,
}

impl std::fmt::Debug for LinkBundleBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkBundleBytes")
            .field("len", &self.bytes.len())
            .finish_non_exhaustive()
    }
}

/// Something from the network.
#[derive(Debug, Clone)]
pub enum NetInput {
    /// A direct delivery from an authenticated peer; answer with
    /// [`Output::Answer`] naming `reply`.
    Delivery {
        /// The sending peer.
        peer: PeerId,
        /// The padded frame.
        frame: Vec<u8>,
        /// The caller's handle for the answer.
        reply: u64,
    },
    /// A gossip frame on a room topic; judge it with [`Output::Verdict`]
    /// naming `token`.
    Gossip {
        /// The topic.
        topic: RoomTopic,
        /// The padded frame.
        frame: Vec<u8>,
        /// The caller's handle for the verdict.
        token: u64,
    },
    /// A peer connected.
    Connected(PeerId),
}

/// What became of one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryResult {
    /// The device answered.
    Answered(safemeet_proto::deliver::DeliverAnswer),
    /// The device could not be reached at all (no address worked, the dial
    /// failed): the only failure that sends a message to relays.
    Unreachable,
    /// The device was reached but did not answer in time, refused the
    /// stream, or does not speak the protocol: retried later.
    Failed,
}

/// What a delivery is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryToken {
    /// Outbox item `seq`.
    Outbox(u64),
    /// Acknowledgement frame `id`.
    Ack(u64),
    /// A signal, tried once (see `signals`).
    Signal,
}

/// An input to [`Core::handle`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Input {
    /// Requests, in order; sends among them share one flush.
    Commands(Vec<(RequestId, Command)>),
    /// Network events, in order; deliveries among them share one flush.
    Network(Vec<NetInput>),
    /// A delivery finished.
    Delivered {
        /// What it was for.
        token: DeliveryToken,
        /// To whom.
        peer: PeerId,
        /// How it went.
        result: DeliveryResult,
    },
    /// A deposit on relays finished: the latest "stored until" of the
    /// valid receipts, or `None` when no relay kept it.
    Deposited {
        /// The outbox item.
        seq: u64,
        /// The device it was for.
        peer: PeerId,
        /// Kept until then.
        until: Option<Timestamp>,
    },
    /// A page fetched from one of this device's mailboxes; answer with
    /// [`Output::PageDone`].
    Page {
        /// The caller's handle for the answer.
        page: u64,
        /// The mailbox's epoch.
        epoch: u64,
        /// The envelopes.
        envelopes: Vec<StoredEnvelope>,
    },
    /// A drain finished.
    Drained {
        /// Envelopes fetched.
        fetched: usize,
        /// Some relay could not be asked.
        failed: bool,
    },
    /// The deadline from [`Core::poll_timeout`] passed.
    Timer,
    /// The network could not subscribe to a topic the core asked for.
    SubscribeFailed(RoomTopic),
}

/// An effect for the caller to carry out.
#[derive(Debug)]
#[non_exhaustive]
pub enum Output {
    /// The answer to a request.
    Reply(RequestId, Result<Response, Error>),
    /// Deliver a frame directly; report with [`Input::Delivered`].
    Deliver {
        /// What it is for.
        token: DeliveryToken,
        /// To whom.
        peer: PeerId,
        /// Where the peer may be found.
        addrs: Vec<Multiaddr>,
        /// The padded frame.
        frame: Vec<u8>,
    },
    /// Publish frames on room topics (best effort).
    Publish(Vec<(RoomTopic, Vec<u8>)>),
    /// Leave a sealed frame on relays; report with [`Input::Deposited`].
    Deposit {
        /// The outbox item.
        seq: u64,
        /// The device it is for.
        peer: PeerId,
        /// The mailbox.
        mailbox: MailboxId,
        /// The relays.
        relays: Vec<Relay>,
        /// The sealed frame.
        frame: Vec<u8>,
        /// The epoch's deposit check key (the credential deposits are
        /// tagged with).
        check: [u8; 32],
    },
    /// Drain this device's mailboxes; feed pages back with
    /// [`Input::Page`], then [`Input::Drained`].
    Drain {
        /// This device's relays.
        relays: Vec<Relay>,
        /// Relays it no longer lists that may still hold mail.
        former: Vec<Relay>,
        /// The keys of the epochs to drain, oldest first.
        keys: Vec<Arc<safemeet_crypto::mailbox::EpochKey>>,
        /// The keys of the epochs to open (or keep open) on each relay
        /// first: the current one and the next ones.
        open: Vec<Arc<safemeet_crypto::mailbox::EpochKey>>,
    },
    /// The envelopes of a page the relay may delete.
    PageDone {
        /// The page.
        page: u64,
        /// Envelope ids.
        taken: Vec<u64>,
    },
    /// Gossip only with these peers (the member devices of the gossip
    /// rooms), from now on; it replaces the previous set.
    GossipPeers(Vec<PeerId>),
    /// Subscribe to a room topic.
    Subscribe(RoomTopic),
    /// Unsubscribe from a room topic.
    Unsubscribe(RoomTopic),
    /// Answer a direct delivery.
    Answer {
        /// The delivery's handle.
        reply: u64,
        /// The answer.
        answer: safemeet_proto::deliver::DeliverAnswer,
    },
    /// Judge a gossip frame: forward it (`true`) or not.
    Verdict {
        /// The frame's handle.
        token: u64,
        /// Whether it may be forwarded.
        accept: bool,
        /// Not forwarded, and junk no honest peer would have passed on:
        /// the peer that sent it is penalised (gossipsub's `Reject`).
        penalise: bool,
    },
    /// The event log is durable up to (not including) this cursor.
    LogCursor(u64),
    /// `peer` delivered junk directly: a frame no honest device sends
    /// (see [`safemeet_net::Handle::report_junk`]).
    Junk(PeerId),
    /// Leave a file's pieces on a device's relays (the file service).
    LeavePieces(Box<crate::PieceJob>),
    /// A call signal from a contact's device, for the call service.
    CallSignal(Box<crate::call_signals::IncomingCallSignal>),
    /// A piece of a file arrived from this device's mailbox (the file
    /// service takes it in).
    PieceArrived(EventId),
}
