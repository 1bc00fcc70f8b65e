//! Meetings: a call in a room, a full mesh of at most [`MAX_MEETING`]
//! devices, each sending its frames (coded and sealed once) to every
//! other and mixing what it hears.
//!
//! ```text
//!   joiner ── Join(meeting, room, index) ──► every member device it can reach
//!          ◄── Here(meeting, room, index) ── each device in the meeting
//!          ◄── Key (its key, ratcheted one step: for the joiner only)
//!   Key ──► each device in the meeting (the joiner's own)
//!   Leave ──► each device in the meeting: each that stays makes a fresh
//!             key, hands it to those who stay, seals with it 1 s later
//! ```
//!
//! - Signalling is [`CallSignal`]s over Olm to each device, like a
//!   one-to-one call, not room events: a meeting is now or never (nothing
//!   of it should wait on a relay for a device that is away), and who is
//!   in a meeting right now goes only to the room's devices that can be
//!   reached. A signal counts only from a member of the room.
//! - A `Join` to a room whose meeting this device is in, naming another
//!   meeting (two started at once), is answered with this one; a joiner
//!   alone in its meeting moves to the smaller id of the two.
//! - Someone who joins gets each sender's key ratcheted one step (the
//!   others follow by ratcheting what they hold): it opens nothing sent
//!   before it came. Someone who leaves (or is silent for
//!   [`MEDIA_SILENCE`]) gets nothing more, and every sender's next key is
//!   fresh: it opens nothing sent 1 s after.

use std::collections::HashMap;
use std::time::Instant;

use libp2p::{Multiaddr, PeerId};
use safemeet_media::keys::LEAVE_SWITCH;
use safemeet_media::sframe::BaseKey;
use safemeet_proto::clock::{Clock, SystemClock};
use safemeet_proto::signal::{CallId, CallSignal, HangupReason, MAX_MEETING};
use safemeet_proto::{DeviceId, RoomId, Timestamp, UserId};

use super::media::Media;
use super::{
    CallAudio, CallError, CallState, CallStats, CallView, MEDIA_SILENCE, REPORT_EVERY, Service,
    check_audio, key_signal,
};
use crate::Error;
use crate::call_signals::{IncomingCallSignal, MAX_MET, MeetingRecord};

/// How long a meeting heard of (a `Join`) is taken to run still: `meet`
/// joins it rather than starting another.
const KNOWN_FOR: std::time::Duration = std::time::Duration::from_secs(10 * 60);
/// Rooms whose meetings are remembered, at most.
const MAX_KNOWN: usize = 64;
/// A device that said the meeting is full is asked again after this…
const FULL_AGAIN: std::time::Duration = std::time::Duration::from_secs(1);
/// …at most this often.
const FULL_TRIES: u8 = 2;
/// A key not confirmed is handed over again this often.
const KEY_AGAIN: std::time::Duration = std::time::Duration::from_millis(500);

/// Another device in the meeting.
#[derive(Debug, Clone)]
pub(super) struct Member {
    user: UserId,
    device: DeviceId,
    index: u8,
    /// It reported hearing this device (its key arrived).
    hears_us: bool,
    /// The loss it last reported, percent.
    loss: u8,
    /// When this device's key was last handed to it.
    key_sent: Option<Instant>,
}

impl Member {
    fn new(user: UserId, device: DeviceId, index: u8) -> Self {
        Self {
            user,
            device,
            index,
            hears_us: false,
            loss: 0,
            key_sent: Some(SystemClock.instant()),
        }
    }
}

/// The meeting this device is in.
#[derive(Debug)]
pub(super) struct Meeting {
    id: CallId,
    room: RoomId,
    index: u8,
    at: Timestamp,
    joined: Instant,
    members: HashMap<PeerId, Member>,
    media: Media,
    audio: CallAudio,
    /// When to start sealing with the fresh key handed out (someone left).
    switch_at: Option<Instant>,
    /// Until then the key is handed to every member again at each report
    /// (a fresh key that did not arrive would silence this device for it).
    resend_until: Option<Instant>,
    /// Devices that said the meeting is full, when, and how often this
    /// one asked again (one that has not taken in a leave yet may say so
    /// while the others let it in).
    full_from: HashMap<PeerId, (UserId, DeviceId, Instant, u8)>,
    last_report: Instant,
    /// Who this device met here, in the order they came (for the event
    /// log; at most [`MAX_MET`]).
    met: Vec<UserId>,
}

impl Meeting {
    fn add_member(&mut self, peer: PeerId, member: Member) {
        if !self.met.contains(&member.user) && self.met.len() < MAX_MET {
            self.met.push(member.user);
        }
        self.members.insert(peer, member);
    }

    /// How long this device has been in it, ms.
    fn in_for_ms(&self) -> u64 {
        u64::try_from(
            SystemClock
                .instant()
                .saturating_duration_since(self.joined)
                .as_millis(),
        )
        .unwrap_or(u64::MAX)
    }

    /// What the event log keeps of it, as this device leaves.
    fn record(&self) -> MeetingRecord {
        MeetingRecord {
            room_id: self.room,
            call_id: self.id,
            at: self.at,
            duration_ms: self.in_for_ms(),
            with: self.met.clone(),
        }
    }

    pub(super) fn view(&self, stats: CallStats, me: UserId) -> CallView {
        let mut participants: Vec<UserId> = self.members.values().map(|m| m.user).collect();
        participants.sort();
        CallView {
            call_id: self.id.to_hex(),
            with: me,
            outgoing: true,
            state: CallState::Active,
            outcome: None,
            reason: None,
            at: self.at,
            duration_ms: self.in_for_ms(),
            stats,
            room_id: Some(self.room),
            participants,
            key_epoch: Some(self.media.own_key().1),
            path: None,
        }
    }

    pub(super) fn id(&self) -> CallId {
        self.id
    }

    pub(super) fn expects(&self, peer: &PeerId) -> bool {
        self.members.contains_key(peer)
    }

    pub(super) fn attach(&mut self, peer: PeerId, id: CallId, index: u8, stream: libp2p::Stream) {
        if id == self.id && self.members.get(&peer).is_some_and(|m| m.index == index) {
            self.media.attach(peer, stream);
        }
    }

    pub(super) fn stats(&self) -> CallStats {
        self.media.stats()
    }

    pub(super) async fn stop(self) -> CallStats {
        self.media.stop().await
    }
}

impl Service {
    /// The members of `room`, if this device is in it.
    async fn room_members(&self, room: &RoomId) -> Option<Vec<UserId>> {
        let h = self.handle.upgrade()?;
        h.rooms()
            .await
            .ok()?
            .into_iter()
            .find(|r| r.room_id == *room)
            .map(|r| r.members)
    }

    /// Joins the meeting of `room`, or starts one.
    pub(super) async fn meet(&mut self, room: RoomId, audio: CallAudio) -> Result<CallView, Error> {
        if self.busy() {
            return Err(CallError::Busy.into());
        }
        check_audio(&audio)?;
        let members = self
            .room_members(&room)
            .await
            .ok_or(Error::UnknownRoom(room))?;
        let now = SystemClock.instant();
        let id = match self.known.get(&room) {
            Some((id, at)) if now.saturating_duration_since(*at) < KNOWN_FOR => *id,
            _ => CallId(rand::random()),
        };
        self.start_meeting(id, room, audio, &members).await?;
        Ok(self.meeting_view())
    }

    async fn start_meeting(
        &mut self,
        id: CallId,
        room: RoomId,
        audio: CallAudio,
        members: &[UserId],
    ) -> Result<(), Error> {
        let index: u8 = rand::random();
        let media = Media::start(
            id,
            index,
            &audio,
            self.net.clone(),
            self.cancel.child_token(),
        )?;
        let now = SystemClock.instant();
        self.meeting = Some(Meeting {
            id,
            room,
            index,
            at: SystemClock.now(),
            joined: now,
            members: HashMap::new(),
            media,
            audio,
            switch_at: None,
            resend_until: None,
            full_from: HashMap::new(),
            last_report: now,
            met: Vec::new(),
        });
        let me = self.me();
        let join = CallSignal::Join {
            call_id: id,
            room_id: room,
            index,
        };
        for user in members.iter().filter(|u| Some(**u) != me) {
            self.send(*user, None, join.clone()).await;
        }
        Ok(())
    }

    fn me(&self) -> Option<UserId> {
        self.handle.upgrade().map(|h| h.user_id())
    }

    pub(super) fn meeting_view(&self) -> CallView {
        match (&self.meeting, self.me()) {
            (Some(m), Some(me)) => m.view(m.stats(), me),
            _ => self.view(),
        }
    }

    /// Leaves the meeting: those in it are told; its media stops.
    pub(super) async fn leave_meeting(&mut self, why: &str) -> Option<CallView> {
        let meeting = self.meeting.take()?;
        let me = self.me()?;
        for m in meeting.members.values() {
            let leave = CallSignal::Leave {
                call_id: meeting.id,
            };
            self.send(m.user, Some(m.device), leave).await;
        }
        if let Some(h) = self.handle.upgrade()
            && let Err(e) = h.note_meeting(meeting.record()).await
        {
            tracing::warn!(error = %e, "a meeting left was not logged");
        }
        let mut view = meeting.view(CallStats::default(), me);
        view.stats = meeting.stop().await;
        view.state = CallState::Ended;
        view.reason = Some(why.to_owned());
        self.history.push_front(view.clone());
        self.history.truncate(super::HISTORY);
        Some(view)
    }

    /// A meeting signal (or a signal about the meeting this device is in).
    pub(super) async fn meeting_signal(&mut self, incoming: IncomingCallSignal) {
        let IncomingCallSignal {
            user,
            device,
            peer,
            addrs,
            signal,
        } = incoming;
        match signal {
            CallSignal::Join {
                call_id,
                room_id,
                index,
            } => {
                if !self.is_member(&room_id, &user).await {
                    return;
                }
                self.joined(call_id, room_id, index, user, device, peer, addrs)
                    .await;
            }
            CallSignal::Here {
                call_id,
                room_id,
                index,
            } => {
                if !self.is_member(&room_id, &user).await {
                    return;
                }
                self.here(call_id, room_id, index, user, device, peer, addrs)
                    .await;
            }
            CallSignal::Leave { call_id }
                if self.meeting.as_ref().is_some_and(|m| m.id == call_id) =>
            {
                self.member_left(&peer).await;
            }
            CallSignal::Key {
                call_id,
                index,
                epoch,
                key,
            } => {
                if let Some(m) = self.meeting.as_ref().filter(|m| m.id == call_id)
                    && m.members
                        .get(&peer)
                        .is_some_and(|x| x.index == index && x.device == device)
                {
                    m.media.learn_key(&peer, epoch, BaseKey::from_bytes(key.0));
                }
            }
            CallSignal::Report {
                call_id,
                loss_permille,
            } => {
                if let Some(m) = self.meeting.as_mut().filter(|m| m.id == call_id)
                    && let Some(member) = m.members.get_mut(&peer)
                {
                    member.hears_us = true;
                    member.loss = u8::try_from(loss_permille.min(1000).div_ceil(10)).unwrap_or(100);
                    // The encoder's FEC follows the one who hears worst.
                    let worst = m.members.values().map(|x| x.loss).max().unwrap_or(0);
                    m.media.set_expected_loss(worst);
                }
            }
            CallSignal::Hangup {
                call_id,
                reason: HangupReason::Full,
            } => {
                if let Some(m) = self.meeting.as_mut().filter(|m| m.id == call_id) {
                    let now = SystemClock.instant();
                    let tries = m.full_from.get(&peer).map_or(0, |f| f.3);
                    m.full_from.insert(peer, (user, device, now, tries));
                }
            }
            _ => {}
        }
    }

    async fn is_member(&self, room: &RoomId, user: &UserId) -> bool {
        self.room_members(room)
            .await
            .is_some_and(|m| m.contains(user))
    }

    #[allow(clippy::too_many_arguments)] // one signal's fields, taken apart
    async fn joined(
        &mut self,
        call_id: CallId,
        room: RoomId,
        index: u8,
        user: UserId,
        device: DeviceId,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
    ) {
        let Some(m) = self.meeting.as_mut().filter(|m| m.room == room) else {
            // Not in it: remember it runs, for `meet`.
            if self.known.len() >= MAX_KNOWN && !self.known.contains_key(&room) {
                return;
            }
            self.known.insert(room, (call_id, SystemClock.instant()));
            return;
        };
        let here = CallSignal::Here {
            call_id: m.id,
            room_id: room,
            index: m.index,
        };
        if call_id != m.id {
            // Another meeting of this room: it is told of this one.
            self.send(user, Some(device), here).await;
            return;
        }
        if m.members.contains_key(&peer) {
            return;
        }
        if m.members.len() + 1 >= MAX_MEETING {
            let full = CallSignal::Hangup {
                call_id,
                reason: HangupReason::Full,
            };
            self.send(user, Some(device), full).await;
            return;
        }
        let (own, epoch, base) = match m.media.add_joiner(index, peer, addrs) {
            Ok(key) => key,
            Err(e) => {
                tracing::warn!(error = %e, "a participant could not be added");
                return;
            }
        };
        m.add_member(peer, Member::new(user, device, index));
        m.switch_at = None;
        self.send(user, Some(device), here).await;
        self.send(user, Some(device), key_signal(call_id, own, epoch, &base))
            .await;
    }

    #[allow(clippy::too_many_arguments)] // one signal's fields, taken apart
    async fn here(
        &mut self,
        call_id: CallId,
        room: RoomId,
        index: u8,
        user: UserId,
        device: DeviceId,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
    ) {
        let Some(m) = self.meeting.as_mut().filter(|m| m.room == room) else {
            return;
        };
        if call_id != m.id {
            // Two meetings of one room: one alone moves to the smaller id.
            if m.members.is_empty() && call_id < m.id {
                let audio = m.audio.clone();
                if let Some(old) = self.meeting.take() {
                    old.stop().await;
                }
                let members = self.room_members(&room).await.unwrap_or_default();
                if let Err(e) = self.start_meeting(call_id, room, audio, &members).await {
                    tracing::warn!(error = %e, "the meeting could not be moved");
                }
            }
            return;
        }
        if m.members.contains_key(&peer) || m.members.len() + 1 >= MAX_MEETING {
            return;
        }
        if let Err(e) = m.media.add_peer(index, peer, addrs) {
            tracing::warn!(error = %e, "a participant could not be added");
            return;
        }
        m.add_member(peer, Member::new(user, device, index));
        let (own, epoch, base) = m.media.own_key();
        self.send(user, Some(device), key_signal(call_id, own, epoch, &base))
            .await;
    }

    /// A member left (or went silent): it gets nothing more, and every
    /// sender here moves to a fresh key, handed to those who stay.
    async fn member_left(&mut self, peer: &PeerId) {
        let Some(m) = self.meeting.as_mut() else {
            return;
        };
        if m.members.remove(peer).is_none() {
            return;
        }
        m.media.remove_peer(peer);
        let (own, epoch, base) = m.media.rotate_for_leave();
        m.switch_at = Some(SystemClock.instant() + LEAVE_SWITCH);
        let id = m.id;
        let stay: Vec<(UserId, DeviceId)> =
            m.members.values().map(|x| (x.user, x.device)).collect();
        for (user, device) in stay {
            self.send(user, Some(device), key_signal(id, own, epoch, &base))
                .await;
        }
    }

    /// Asks again, a second later, those that said the meeting is full (at
    /// most [`FULL_TRIES`] times); gives up when that is all it heard.
    /// Whether the meeting was left.
    async fn ask_again_or_give_up(&mut self, now: Instant) -> bool {
        let Some(m) = self.meeting.as_mut() else {
            return false;
        };
        if m.members.len() + 1 >= MAX_MEETING {
            m.full_from.clear();
        }
        let join = CallSignal::Join {
            call_id: m.id,
            room_id: m.room,
            index: m.index,
        };
        let mut again = Vec::new();
        let mut spent = false;
        for (peer, (user, device, at, tries)) in &mut m.full_from {
            if m.members.contains_key(peer) || now.saturating_duration_since(*at) < FULL_AGAIN {
                continue;
            }
            if *tries >= FULL_TRIES {
                spent = true;
                continue;
            }
            *tries += 1;
            *at = now;
            again.push((*user, *device));
        }
        m.full_from.retain(|p, _| !m.members.contains_key(p));
        if spent && m.members.is_empty() && again.is_empty() {
            self.leave_meeting("full").await;
            return true;
        }
        for (user, device) in again {
            self.send(user, Some(device), join.clone()).await;
        }
        false
    }

    pub(super) async fn meeting_tick(&mut self) {
        let now = SystemClock.instant();
        let Some(m) = self.meeting.as_mut() else {
            return;
        };
        if m.switch_at.is_some_and(|at| at <= now) {
            m.switch_at = None;
            m.media.switch_key();
            m.resend_until = Some(now + 2 * REPORT_EVERY);
        }
        for peer in m.media.silent_peers(MEDIA_SILENCE) {
            self.member_left(&peer).await;
        }
        if self.ask_again_or_give_up(now).await {
            return;
        }
        let Some(m) = self.meeting.as_mut() else {
            return;
        };
        let id = m.id;
        let (own, epoch, base) = m.media.own_key();
        let mut out = Vec::new();
        // Signals are tried once: a key not confirmed yet (by a loss
        // report) is handed over again every half second, and every key
        // for a while after a switch to a fresh one.
        let resend = m.resend_until.is_some_and(|until| now < until);
        let switching = m.switch_at.is_some();
        for member in m.members.values_mut() {
            let due = member
                .key_sent
                .is_none_or(|at| now.saturating_duration_since(at) >= KEY_AGAIN);
            if (!member.hears_us || resend) && !switching && due {
                member.key_sent = Some(now);
                out.push((
                    member.user,
                    member.device,
                    key_signal(id, own, epoch, &base),
                ));
            }
        }
        if now.saturating_duration_since(m.last_report) >= REPORT_EVERY {
            m.last_report = now;
            let reports = m.media.reports();
            for (peer, member) in &m.members {
                if let Some((_, loss)) = reports.iter().find(|(p, _)| p == peer) {
                    let report = CallSignal::Report {
                        call_id: id,
                        loss_permille: *loss,
                    };
                    out.push((member.user, member.device, report));
                }
            }
        }
        for (user, device, signal) in out {
            self.send(user, Some(device), signal).await;
        }
    }
}
