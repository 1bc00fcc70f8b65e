//! The cloneable [`Handle`] callers use to talk to a running engine.
//!
//! Every request goes to the actor over a bounded queue (a full queue
//! makes the caller wait: back-pressure) and is answered on a one-shot
//! channel; every wait is bounded by [`Config::request_timeout`].
//! Shutting down cancels the actor and waits until it has closed the
//! crypto state cleanly.
//!
//! [`Config::request_timeout`]: crate::Config::request_timeout

use std::time::Duration;

use libp2p::{Multiaddr, PeerId};
use safemeet_proto::room::RoomTopic;
use safemeet_proto::{EventId, RoomId, UserId};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::events::{Command, Response};
use crate::{Contact, Error, LogEntry, RoomInfo, TimelineEntry};

/// What the actor is asked.
pub(crate) enum Request {
    /// A request for the core.
    Core(Command, oneshot::Sender<Result<Response, Error>>),
    /// Where the node listens.
    ListenAddrs(oneshot::Sender<Result<Vec<Multiaddr>, Error>>),
    /// How the node stands with the network.
    NetStatus(oneshot::Sender<Result<safemeet_net::NetStatus, Error>>),
    /// How many peers the gossip mesh of a room holds.
    RoomMeshPeers(RoomId, oneshot::Sender<Result<usize, Error>>),
    /// The current gossip topic of a group room.
    RoomTopic(RoomId, oneshot::Sender<Result<RoomTopic, Error>>),
    /// The peers the network lets gossip.
    GossipPeers(oneshot::Sender<Result<Vec<PeerId>, Error>>),
    /// How many gossip topics the network is subscribed to.
    TopicCount(oneshot::Sender<Result<usize, Error>>),
    /// Show a device link (replacing any link shown before).
    LinkOffer(bool, oneshot::Sender<Result<crate::link::LinkShown, Error>>),
    /// Purge this device's mailboxes on its relays.
    PurgeMailboxes(oneshot::Sender<Result<Vec<crate::PurgeOutcome>, Error>>),
}

/// A cloneable handle to a running engine.
#[derive(Clone)]
pub struct Handle {
    pub(crate) requests: mpsc::Sender<Request>,
    pub(crate) user_id: UserId,
    pub(crate) peer_id: PeerId,
    pub(crate) log: watch::Receiver<u64>,
    pub(crate) cancel: CancellationToken,
    pub(crate) stopped: watch::Receiver<bool>,
    pub(crate) timeout: Duration,
    /// The file service's shared state (`None`: no blob store).
    pub(crate) files: Option<std::sync::Arc<crate::files::FilesShared>>,
    /// The call service's queue.
    pub(crate) calls: mpsc::Sender<crate::calls::Ask>,
}

/// A [`Handle`] that does not keep the engine running: the file service
/// holds one, so that dropping every caller's handle still stops the
/// engine.
#[derive(Clone)]
pub(crate) struct WeakHandle {
    requests: mpsc::WeakSender<Request>,
    user_id: UserId,
    peer_id: PeerId,
    log: watch::Receiver<u64>,
    cancel: CancellationToken,
    stopped: watch::Receiver<bool>,
    timeout: Duration,
    files: Option<std::sync::Arc<crate::files::FilesShared>>,
    calls: mpsc::Sender<crate::calls::Ask>,
}

impl WeakHandle {
    /// The handle, while the engine runs.
    pub(crate) fn upgrade(&self) -> Option<Handle> {
        Some(Handle {
            requests: self.requests.upgrade()?,
            user_id: self.user_id,
            peer_id: self.peer_id,
            log: self.log.clone(),
            cancel: self.cancel.clone(),
            stopped: self.stopped.clone(),
            timeout: self.timeout,
            files: self.files.clone(),
            calls: self.calls.clone(),
        })
    }
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("user_id", &self.user_id)
            .finish_non_exhaustive()
    }
}

/// Unwraps the expected answer, or says the engine answered nonsense.
macro_rules! expect {
    ($answer:expr, $pattern:pat => $value:expr) => {
        match $answer? {
            $pattern => Ok($value),
            _ => Err(Error::InvalidInput("unexpected answer".into())),
        }
    };
}

impl Handle {
    /// This user.
    pub fn user_id(&self) -> UserId {
        self.user_id
    }

    /// A handle that does not keep the engine running.
    pub(crate) fn downgrade(&self) -> WeakHandle {
        WeakHandle {
            requests: self.requests.downgrade(),
            user_id: self.user_id,
            peer_id: self.peer_id,
            log: self.log.clone(),
            cancel: self.cancel.clone(),
            stopped: self.stopped.clone(),
            timeout: self.timeout,
            files: self.files.clone(),
            calls: self.calls.clone(),
        }
    }

    /// This device's libp2p peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, Error>>) -> Request,
    ) -> Result<T, Error> {
        let (tx, rx) = oneshot::channel();
        let asked = async {
            self.requests
                .send(make(tx))
                .await
                .map_err(|_| Error::Stopped)?;
            rx.await.map_err(|_| Error::Stopped)?
        };
        tokio::time::timeout(self.timeout, asked)
            .await
            .map_err(|_| Error::Timeout)?
    }

    pub(crate) async fn core(&self, command: Command) -> Result<Response, Error> {
        self.ask(|tx| Request::Core(command, tx)).await
    }

    /// Watches the event log: the value is the next cursor (one past the
    /// newest entry), and it changes whenever an entry is appended.
    pub fn log_watch(&self) -> watch::Receiver<u64> {
        self.log.clone()
    }

    /// The contacts, in the order they were added.
    pub async fn contacts(&self) -> Result<Vec<Contact>, Error> {
        expect!(self.core(Command::Contacts).await, Response::Contacts(c) => c)
    }

    /// Removes a contact (their keys and the messages stored so far
    /// stay); what they send from now on is refused until their invite is
    /// accepted again.
    pub async fn remove_contact(&self, user: UserId) -> Result<(), Error> {
        expect!(self.core(Command::RemoveContact(user)).await, Response::Done => ())
    }

    /// Blocks a user (a contact or not): their deliveries are refused
    /// without an acknowledgement, their gossip is not passed on, and
    /// nothing of theirs is stored. Survives restarts.
    pub async fn block(&self, user: UserId) -> Result<(), Error> {
        expect!(self.core(Command::Block(user)).await, Response::Done => ())
    }

    /// Unblocks a user; an error if they were not blocked.
    pub async fn unblock(&self, user: UserId) -> Result<(), Error> {
        expect!(self.core(Command::Unblock(user)).await, Response::Done => ())
    }

    /// The blocked users, in the order they were blocked.
    pub async fn blocked(&self) -> Result<Vec<UserId>, Error> {
        expect!(self.core(Command::Blocked).await, Response::Users(u) => u)
    }

    /// The room invitations waiting for consent, oldest first.
    pub async fn invitations(&self) -> Result<Vec<crate::Invitation>, Error> {
        expect!(self.core(Command::Invitations).await, Response::Invitations(i) => i)
    }

    /// Joins a room from its pending invitation.
    pub async fn room_join(&self, room: RoomId) -> Result<(), Error> {
        expect!(self.core(Command::RoomJoin(room)).await, Response::Done => ())
    }

    /// Drops a pending room invitation.
    pub async fn room_decline(&self, room: RoomId) -> Result<(), Error> {
        expect!(self.core(Command::RoomDecline(room)).await, Response::Done => ())
    }

    /// The message requests, oldest first.
    pub async fn requests(&self) -> Result<Vec<crate::MessageRequest>, Error> {
        expect!(self.core(Command::Requests).await, Response::Requests(r) => r)
    }

    /// Accepts a message request: its sender becomes a contact and the
    /// messages kept with it show.
    pub async fn accept_request(&self, user: UserId) -> Result<(), Error> {
        expect!(self.core(Command::RequestAccept(user)).await, Response::Done => ())
    }

    /// Declines a message request: it and what was kept with it are deleted.
    pub async fn decline_request(&self, user: UserId) -> Result<(), Error> {
        expect!(self.core(Command::RequestDecline(user)).await, Response::Done => ())
    }

    /// Sets whether a contact's room invitations are joined without asking.
    pub async fn set_auto_accept(&self, user: UserId, on: bool) -> Result<(), Error> {
        expect!(self.core(Command::SetAutoAccept { user, on }).await, Response::Done => ())
    }

    /// An invite for this user, as text.
    pub async fn invite(&self) -> Result<String, Error> {
        let addrs = self.listen_addrs().await?;
        expect!(self.core(Command::Invite { addrs }).await, Response::Invite(i) => i)
    }

    /// Accepts another user's invite; returns their user id.
    pub async fn add_contact(
        &self,
        invite: &str,
        pet_name: Option<String>,
    ) -> Result<UserId, Error> {
        let command = Command::AddContact {
            invite: invite.to_owned(),
            pet_name,
        };
        expect!(self.core(command).await, Response::User(u) => u)
    }

    /// Sends a direct message; returns its event id once it is committed
    /// to the outbox ("sent").
    pub async fn send_dm(&self, to: UserId, text: &str) -> Result<EventId, Error> {
        let command = Command::SendDm {
            to,
            text: text.to_owned(),
        };
        expect!(self.core(command).await, Response::Sent(id) => id)
    }

    /// Sends a message to a group room.
    pub async fn send_room(&self, room: RoomId, text: &str) -> Result<EventId, Error> {
        let command = Command::SendRoom {
            room,
            text: text.to_owned(),
        };
        expect!(self.core(command).await, Response::Sent(id) => id)
    }

    /// Deletes a message for everyone (this user's own, or any in a room
    /// this user is an admin of).
    pub async fn redact(&self, event: EventId) -> Result<EventId, Error> {
        expect!(self.core(Command::Redact(event)).await, Response::Sent(id) => id)
    }

    /// Replaces the text of one of this user's messages, everywhere.
    pub async fn edit(&self, event: EventId, text: &str) -> Result<EventId, Error> {
        let command = Command::Edit(event, text.to_owned());
        expect!(self.core(command).await, Response::Sent(id) => id)
    }

    /// Sets (or with `None` clears) how long a conversation's messages are
    /// kept, for every member: a room setting only its admins may change
    /// (in a DM, either user).
    pub async fn set_expiry(
        &self,
        conversation: crate::Conversation,
        expire_after: Option<std::time::Duration>,
    ) -> Result<EventId, Error> {
        let command = Command::SetExpiry {
            conversation,
            expire_after_ms: expire_after.map(duration_ms),
        };
        expect!(self.core(command).await, Response::Sent(id) => id)
    }

    /// How long a conversation's messages are kept, if it sets a limit.
    pub async fn expiry(
        &self,
        conversation: crate::Conversation,
    ) -> Result<Option<std::time::Duration>, Error> {
        expect!(self.core(Command::Expiry(conversation)).await,
            Response::Duration(d) => d.map(std::time::Duration::from_millis))
    }

    /// Sets (or with `None` clears) this device's retention limit: every
    /// conversation's messages are deleted here that long after they were
    /// sent.
    pub async fn set_retention(
        &self,
        retention: Option<std::time::Duration>,
    ) -> Result<Option<std::time::Duration>, Error> {
        let command = Command::SetRetention(retention.map(duration_ms));
        expect!(self.core(command).await,
            Response::Duration(d) => d.map(std::time::Duration::from_millis))
    }

    /// This device's retention limit.
    pub async fn retention(&self) -> Result<Option<std::time::Duration>, Error> {
        expect!(self.core(Command::Retention).await,
            Response::Duration(d) => d.map(std::time::Duration::from_millis))
    }

    /// The last `limit` messages with a contact, oldest first.
    pub async fn dm_messages(
        &self,
        with: UserId,
        limit: usize,
    ) -> Result<Vec<TimelineEntry>, Error> {
        let command = Command::DmMessages { with, limit };
        expect!(self.core(command).await, Response::Messages(m) => m)
    }

    /// The last `limit` messages of a group room, oldest first.
    pub async fn room_messages(
        &self,
        room: RoomId,
        limit: usize,
    ) -> Result<Vec<TimelineEntry>, Error> {
        let command = Command::RoomMessages { room, limit };
        expect!(self.core(command).await, Response::Messages(m) => m)
    }

    /// Creates a group room with these contacts; this user is its admin.
    pub async fn create_room(&self, name: &str, members: Vec<UserId>) -> Result<RoomId, Error> {
        let command = Command::CreateRoom {
            name: name.to_owned(),
            members,
        };
        expect!(self.core(command).await, Response::Room(r) => r)
    }

    /// Adds a contact to a group room (admins only).
    pub async fn room_invite(&self, room: RoomId, user: UserId) -> Result<(), Error> {
        expect!(self.core(Command::RoomInvite { room, user }).await, Response::Done => ())
    }

    /// Leaves a group room.
    pub async fn room_leave(&self, room: RoomId) -> Result<(), Error> {
        expect!(self.core(Command::RoomLeave(room)).await, Response::Done => ())
    }

    /// Removes a member from a group room (admins only). The remaining
    /// members get a new room secret, hence a new topic.
    pub async fn room_remove(&self, room: RoomId, user: UserId) -> Result<(), Error> {
        expect!(self.core(Command::RoomRemove { room, user }).await, Response::Done => ())
    }

    /// Removes a member from a group room and bars them from it (admins
    /// only). The remaining members get a new room secret.
    pub async fn room_ban(&self, room: RoomId, user: UserId) -> Result<(), Error> {
        expect!(self.core(Command::RoomBan { room, user }).await, Response::Done => ())
    }

    /// The group rooms this user is in.
    pub async fn rooms(&self) -> Result<Vec<RoomInfo>, Error> {
        expect!(self.core(Command::Rooms).await, Response::Rooms(r) => r)
    }

    /// Event-log entries after `cursor` (0: from the start), at most `limit`.
    pub async fn events(&self, cursor: u64, limit: usize) -> Result<Vec<(u64, LogEntry)>, Error> {
        let command = Command::Events { cursor, limit };
        expect!(self.core(command).await, Response::Events(e) => e)
    }

    /// Shows a link for a new device of this user: its text (with a
    /// 256-bit one-time secret), good for one use within 10 minutes. A
    /// link shown before stops working. Only on the device that holds the
    /// master key; `with_master` gives the new device a copy of it.
    pub async fn link_offer(&self, with_master: bool) -> Result<crate::link::LinkShown, Error> {
        self.ask(|tx| Request::LinkOffer(with_master, tx)).await
    }

    /// The devices whose messages show as verified.
    pub async fn verified_devices(&self) -> Result<Vec<safemeet_proto::DeviceId>, Error> {
        expect!(self.core(Command::VerifiedDevices).await, Response::DeviceIds(d) => d)
    }

    /// This user's devices.
    pub async fn devices(&self) -> Result<Vec<crate::DeviceView>, Error> {
        expect!(self.core(Command::Devices).await, Response::Devices(d) => d)
    }

    /// Revokes another device of this user.
    pub async fn revoke_device(&self, device: safemeet_proto::DeviceId) -> Result<(), Error> {
        expect!(self.core(Command::RevokeDevice(device)).await, Response::Done => ())
    }

    /// A page of a conversation's whole timeline, in stored order, after
    /// stored position `after` (from the start when `None`).
    pub async fn timeline_page(
        &self,
        conversation: crate::Conversation,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, TimelineEntry)>, Error> {
        let command = Command::TimelinePage {
            conversation,
            after,
            limit,
        };
        expect!(self.core(command).await, Response::Page(p) => p)
    }

    /// Sets (or with `None` removes) this user's avatar, on the device that
    /// holds the master key: PNG or JPEG with no metadata, at most
    /// [`MAX_AVATAR_BYTES`](safemeet_proto::identity::MAX_AVATAR_BYTES).
    pub async fn set_avatar(
        &self,
        image: Option<safemeet_proto::identity::AvatarImage>,
    ) -> Result<Option<crate::AvatarInfo>, Error> {
        expect!(self.core(Command::SetAvatar(image)).await, Response::AvatarInfo(i) => i)
    }

    /// What a user's avatar is (this user's own too), if one is held.
    pub async fn avatar_info(&self, user: UserId) -> Result<Option<crate::AvatarInfo>, Error> {
        expect!(self.core(Command::AvatarInfo(user)).await, Response::AvatarInfo(i) => i)
    }

    /// A user's avatar image (this user's own too), if one is held.
    pub async fn avatar(
        &self,
        user: UserId,
    ) -> Result<Option<safemeet_proto::identity::AvatarImage>, Error> {
        expect!(self.core(Command::Avatar(user)).await, Response::AvatarImage(i) => i)
    }

    /// Carries out a step of deleting the account (see
    /// [`DeletionStep`](crate::DeletionStep)); what it sends waits in the
    /// outbox (see [`pending`](Self::pending)).
    pub async fn delete_account(
        &self,
        step: crate::DeletionStep,
    ) -> Result<crate::DeletionReport, Error> {
        expect!(self.core(Command::DeleteAccount(step)).await, Response::Deletion(r) => r)
    }

    /// How many outbox items are still to be delivered.
    pub async fn pending(&self) -> Result<usize, Error> {
        expect!(self.core(Command::Pending).await, Response::Count(n) => n)
    }

    /// Deletes every mailbox of this device on every relay it used; one
    /// outcome per relay and mailbox (a receipt signed by the relay, or
    /// why not).
    pub async fn purge_mailboxes(&self) -> Result<Vec<crate::PurgeOutcome>, Error> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send(Request::PurgeMailboxes(tx))
            .await
            .map_err(|_| Error::Stopped)?;
        rx.await.map_err(|_| Error::Stopped)?
    }

    /// Issues the device an archive becomes (see `archive`): the archive's
    /// body, to be sealed under a passphrase, and what it carries.
    pub async fn export_archive(&self) -> Result<crate::events::ArchiveBytes, Error> {
        expect!(self.core(Command::ExportArchive).await, Response::Archive(a) => a)
    }

    /// The node's security log, read back and checked (empty when the
    /// node keeps none).
    pub async fn security_log(&self) -> Result<crate::SecurityEntries, Error> {
        expect!(self.core(Command::SecurityLog).await, Response::SecurityLog(e) => e)
    }

    /// Records a security event that happened outside the engine (an
    /// export) in the node's security log.
    pub async fn note_security(
        &self,
        event: &'static str,
        subject: Option<String>,
    ) -> Result<(), Error> {
        expect!(self.core(Command::Security(event, subject)).await, Response::Done => ())
    }

    /// This user's current profile.
    pub async fn profile(&self) -> Result<safemeet_proto::identity::Profile, Error> {
        expect!(self.core(Command::Profile).await, Response::Profile(p) => *p)
    }

    /// Changes this user's profile (on the device with the master key);
    /// contacts and this user's other devices get the new version.
    pub async fn change_profile(
        &self,
        change: crate::ProfileChange,
    ) -> Result<safemeet_proto::identity::Profile, Error> {
        expect!(self.core(Command::ChangeProfile(change)).await, Response::Profile(p) => *p)
    }

    /// Names one of this user's devices; its other devices learn the name.
    pub async fn rename_device(
        &self,
        device: safemeet_proto::DeviceId,
        name: String,
    ) -> Result<(), Error> {
        expect!(self.core(Command::RenameDevice(device, name)).await, Response::Done => ())
    }

    /// Where the node listens.
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, Error> {
        self.ask(Request::ListenAddrs).await
    }

    /// How the node stands with the network: addresses, peers, relay
    /// reservations, AutoNAT's latest results.
    pub async fn net_status(&self) -> Result<safemeet_net::NetStatus, Error> {
        self.ask(Request::NetStatus).await
    }

    /// How many peers this node's gossip mesh for a group room holds: the
    /// peers it exchanges the room's messages with directly (0 until the
    /// mesh forms; messages then go by direct delivery after the grace).
    pub async fn room_mesh_peers(&self, room: RoomId) -> Result<usize, Error> {
        self.ask(|tx| Request::RoomMeshPeers(room, tx)).await
    }

    /// The current gossip topic of a group room this user is in: opaque
    /// bytes derived from the room secret, so a new secret (a member left
    /// or was removed) gives a new topic. [`Error::UnknownRoom`] for a DM,
    /// a room this user left, or no room at all.
    pub async fn room_topic(&self, room: RoomId) -> Result<RoomTopic, Error> {
        self.ask(|tx| Request::RoomTopic(room, tx)).await
    }

    /// The peers this node gossips with now, as the network layer's gate
    /// holds them: the member devices of its gossip rooms (empty when every
    /// room goes by direct fan-out), in no particular order.
    pub async fn gossip_peers(&self) -> Result<Vec<PeerId>, Error> {
        self.ask(Request::GossipPeers).await
    }

    /// How many gossip topics this node is subscribed to: one per gossip
    /// room (0 when every room goes by direct fan-out).
    pub async fn gossip_topic_count(&self) -> Result<usize, Error> {
        self.ask(Request::TopicCount).await
    }

    /// Stops the engine: the crypto state is closed cleanly and the
    /// network shut down; the outbox is kept for the next start. Returns
    /// once that is done (or after the request timeout).
    pub async fn shutdown(&self) -> Result<(), Error> {
        self.cancel.cancel();
        let mut stopped = self.stopped.clone();
        // A closed watch also means the actor is gone.
        let _ = tokio::time::timeout(self.timeout, stopped.wait_for(|s| *s))
            .await
            .map_err(|_| Error::Timeout)?;
        Ok(())
    }
}

/// A duration in whole milliseconds (saturating).
fn duration_ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
