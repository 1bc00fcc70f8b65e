//! The call service: end-to-end encrypted audio calls between a contact's
//! devices and this one, beside the core.
//!
//! Signalling is [`CallSignal`]s over Olm (`call_signals`): sent directly
//! and once, never left on a relay.
//!
//! ```text
//!   caller                                   callee's devices (each)
//!   Invite ───────────────────────────────►  rings
//!          ◄─────────────────────────────── Ringing
//!          ◄─────────────────────────────── Accept        (one device)
//!   Hangup(answered elsewhere) ────────────► the others stop ringing
//!   Key (index 0) ◄──────────────────────► Key (index 1)   over Olm, 1:1
//!   /safemeet/media/1 stream each way: hello, then SFrame frames
//!   Report (loss ‰, every 2 s) ◄──────────► Report
//!   Hangup ◄──────────────────────────────► (either side)
//! ```
//!
//! - A call to a contact goes to every device of theirs this device can
//!   reach: an offline device's others ring. The first to accept takes
//!   the call; the rest are told it was answered elsewhere.
//! - Keys: each side makes its own SFrame key for the call
//!   (`safemeet_media::keys`) and hands it to the other device over Olm,
//!   never over a room's Megolm session.
//! - One call at a time: an invite while another is on is answered
//!   `Busy`. A ring not answered in [`RING_FOR`] ends as missed (for the
//!   callee) or not answered (for the caller); a call whose media stops
//!   for [`MEDIA_SILENCE`] ends as lost.
//! - Every ended call goes into the event log (`CallRecord`): a missed
//!   call shows there. Nothing of the media is kept.

mod media;
mod meeting;
mod signalling;
mod view;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::{Multiaddr, PeerId};
use safemeet_media::sframe::BaseKey;
use safemeet_media::transport::read_frame;
use safemeet_proto::clock::{Clock, SystemClock};
use safemeet_proto::signal::{CallId, CallKey, CallSignal, HangupReason};
use safemeet_proto::{DeviceId, Timestamp, UserId};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::call_signals::{CallOutcome, CallRecord, IncomingCallSignal};
use crate::handle::WeakHandle;
use crate::{CallError, Error, Handle};
use media::Media;
pub(crate) use view::Ask;
use view::check_audio;
pub use view::{CallAudio, CallPath, CallState, CallStats, CallView};

/// How long a call rings before it ends unanswered.
pub const RING_FOR: Duration = Duration::from_secs(45);
/// How often each side reports the loss it hears.
pub const REPORT_EVERY: Duration = Duration::from_secs(2);
/// A call that hears nothing for this long ends as lost.
pub const MEDIA_SILENCE: Duration = Duration::from_secs(15);
/// Ended calls `call status` still shows.
const HISTORY: usize = 16;
/// How long a media stream has to say which call it is for.
const HELLO_WITHIN: Duration = Duration::from_secs(5);
/// Streams waiting to say which call they are for, at most; past it a new
/// stream is closed at once (a peer that opens streams and stalls holds
/// a few slots for 5 s, nothing more).
const MAX_HELLOS: usize = 8;

/// The device on the other end.
#[derive(Debug, Clone)]
struct Other {
    device: DeviceId,
    peer: PeerId,
    addrs: Vec<Multiaddr>,
    index: u8,
}

#[derive(Debug)]
struct Call {
    id: CallId,
    with: UserId,
    outgoing: bool,
    state: CallState,
    at: Timestamp,
    rang_at: Instant,
    /// The devices invited (calling).
    invited: Vec<(DeviceId, PeerId)>,
    other: Option<Other>,
    media: Option<Media>,
    answered: Option<Instant>,
    audio: CallAudio,
    /// A key that came before the media started.
    early_key: Option<(DeviceId, u8, u32, BaseKey)>,
    last_report: Instant,
    /// The other side reported hearing this one's frames: its key arrived.
    /// Until then the key is handed over again at each report.
    heard_by_other: bool,
    /// How its audio reaches the other end (looked at each report).
    path: Option<CallPath>,
}

impl Call {
    fn view(&self, stats: CallStats) -> CallView {
        CallView {
            call_id: self.id.to_hex(),
            with: self.with,
            outgoing: self.outgoing,
            state: self.state,
            outcome: None,
            reason: None,
            at: self.at,
            duration_ms: self.duration_ms(),
            stats,
            room_id: None,
            participants: Vec::new(),
            key_epoch: self.media.as_ref().map(|m| m.own_key().1),
            path: self.path,
        }
    }

    fn duration_ms(&self) -> u64 {
        self.answered.map_or(0, |at| {
            u64::try_from(
                SystemClock
                    .instant()
                    .saturating_duration_since(at)
                    .as_millis(),
            )
            .unwrap_or(u64::MAX)
        })
    }
}

struct Service {
    handle: WeakHandle,
    net: safemeet_net::Handle,
    current: Option<Call>,
    /// The meeting this device is in (not at once with a call).
    meeting: Option<meeting::Meeting>,
    /// Meetings heard of, by room: the id and when.
    known: std::collections::HashMap<safemeet_proto::RoomId, (CallId, Instant)>,
    history: VecDeque<CallView>,
    cancel: CancellationToken,
}

/// Runs the call service until `cancel`.
pub(crate) async fn run(
    handle: WeakHandle,
    net: safemeet_net::Handle,
    mut asks: mpsc::Receiver<Ask>,
    mut signals: mpsc::Receiver<IncomingCallSignal>,
    cancel: CancellationToken,
) {
    let mut incoming = match net.media_streams() {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "calls cannot be answered");
            None
        }
    };
    let (hellos_tx, mut hellos) = mpsc::channel::<(PeerId, CallId, u8, libp2p::Stream)>(8);
    let waiting = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut service = Service {
        handle,
        net,
        current: None,
        meeting: None,
        known: std::collections::HashMap::new(),
        history: VecDeque::new(),
        cancel: cancel.clone(),
    };
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            Some(ask) = asks.recv() => service.ask(ask).await,
            Some(signal) = signals.recv() => service.signal(signal).await,
            Some((peer, mut stream)) = async {
                match incoming.as_mut() {
                    Some(s) => s.next().await,
                    None => std::future::pending().await,
                }
            } => {
                // Only a stream from the device on the other end of the
                // call on now is read (its hello, then its frames).
                use std::sync::atomic::Ordering::Relaxed;
                if service.expects(&peer) && waiting.load(Relaxed) < MAX_HELLOS {
                    let tx = hellos_tx.clone();
                    let waiting = waiting.clone();
                    waiting.fetch_add(1, Relaxed);
                    tokio::spawn(async move {
                        let hello = tokio::time::timeout(HELLO_WITHIN, read_frame(&mut stream)).await;
                        waiting.fetch_sub(1, Relaxed);
                        if let Ok(Ok(Some(frame))) = hello
                            && let Some((call, index)) = media::read_hello(&frame)
                        {
                            let _ = tx.send((peer, call, index, stream)).await;
                        }
                    });
                }
            }
            Some((peer, call, index, stream)) = hellos.recv() => service.attach(peer, call, index, stream),
            _ = tick.tick() => {
                service.tick().await;
                service.meeting_tick().await;
            }
        }
    }
    if let Some(call) = service.current.take()
        && let Some(media) = call.media
    {
        media.stop().await;
    }
    if let Some(meeting) = service.meeting.take() {
        meeting.stop().await;
    }
}

impl Service {
    async fn ask(&mut self, ask: Ask) {
        match ask {
            Ask::Place(user, audio, reply) => {
                let _ = reply.send(self.place(user, audio).await);
            }
            Ask::Accept(audio, reply) => {
                let _ = reply.send(self.accept(audio).await);
            }
            Ask::Decline(reply) => {
                let r = match self.current.as_ref().map(|c| c.state) {
                    Some(CallState::Ringing) => Ok(self.decline().await),
                    _ => Err(CallError::NoCall("no call is ringing").into()),
                };
                let _ = reply.send(r);
            }
            Ask::Meet(room, audio, reply) => {
                let _ = reply.send(self.meet(room, audio).await);
            }
            Ask::Hangup(reply) if self.meeting.is_some() => {
                let left = self.leave_meeting("left").await;
                let _ = reply.send(left.ok_or(Error::Stopped));
            }
            Ask::Hangup(reply) => {
                let r = match self.current.as_ref().map(|c| (c.state, c.outgoing)) {
                    Some((CallState::Ringing, _)) => Ok(self.decline().await),
                    Some((CallState::Calling, _)) => Ok(self
                        .end_for_all(HangupReason::Hangup, CallOutcome::NoAnswer, "cancelled")
                        .await),
                    Some((CallState::Active, _)) => Ok(self
                        .end_for_all(HangupReason::Hangup, CallOutcome::Answered, "hung up")
                        .await),
                    _ => Err(CallError::NoCall("no call is on").into()),
                };
                let _ = reply.send(r);
            }
            Ask::Status(reply) => {
                let mut views: Vec<CallView> = self
                    .current
                    .iter()
                    .map(|c| c.view(c.media.as_ref().map(Media::stats).unwrap_or_default()))
                    .collect();
                if self.meeting.is_some() {
                    views.insert(0, self.meeting_view());
                }
                views.extend(self.history.iter().cloned());
                let _ = reply.send(views);
            }
        }
    }

    fn busy(&self) -> bool {
        self.meeting.is_some()
            || self
                .current
                .as_ref()
                .is_some_and(|c| c.state != CallState::Ended)
    }

    async fn send(
        &self,
        user: UserId,
        device: Option<DeviceId>,
        signal: CallSignal,
    ) -> Vec<(DeviceId, PeerId)> {
        let Some(h) = self.handle.upgrade() else {
            return Vec::new();
        };
        h.send_call_signal(user, device, signal)
            .await
            .unwrap_or_else(|e| {
                tracing::debug!(error = %e, "a call signal was not sent");
                Vec::new()
            })
    }

    async fn place(&mut self, user: UserId, audio: CallAudio) -> Result<CallView, Error> {
        if self.busy() {
            return Err(CallError::Busy.into());
        }
        check_audio(&audio)?;
        let handle = self.handle.upgrade().ok_or(Error::Stopped)?;
        if handle.contacts().await?.iter().all(|c| c.user_id != user) {
            return Err(Error::UnknownContact(user));
        }
        let id = CallId(rand::random());
        let now = SystemClock.instant();
        let invited = self
            .send(user, None, CallSignal::Invite { call_id: id })
            .await;
        let call = Call {
            id,
            with: user,
            outgoing: true,
            state: CallState::Calling,
            at: SystemClock.now(),
            rang_at: now,
            invited,
            other: None,
            media: None,
            answered: None,
            audio,
            early_key: None,
            last_report: now,
            heard_by_other: false,
            path: None,
        };
        let unreachable = call.invited.is_empty();
        self.current = Some(call);
        if unreachable {
            self.end(CallOutcome::NoAnswer, "unreachable").await;
            return Err(CallError::Unreachable.into());
        }
        Ok(self.view())
    }

    fn view(&self) -> CallView {
        match &self.current {
            Some(c) => c.view(c.media.as_ref().map(Media::stats).unwrap_or_default()),
            None => self.history.front().cloned().unwrap_or_else(|| CallView {
                call_id: String::new(),
                with: UserId::from_bytes([0; 32]),
                outgoing: false,
                state: CallState::Ended,
                outcome: None,
                reason: None,
                at: SystemClock.now(),
                duration_ms: 0,
                stats: CallStats::default(),
                room_id: None,
                participants: Vec::new(),
                key_epoch: None,
                path: None,
            }),
        }
    }

    async fn accept(&mut self, audio: CallAudio) -> Result<CallView, Error> {
        let Some(call) = self
            .current
            .as_mut()
            .filter(|c| c.state == CallState::Ringing)
        else {
            return Err(CallError::NoCall("no call is ringing").into());
        };
        let Some(other) = call.other.clone() else {
            return Err(CallError::NoCall("no call is ringing").into());
        };
        let mut media = Media::start(
            call.id,
            1,
            &audio,
            self.net.clone(),
            self.cancel.child_token(),
        )?;
        media.add_peer(other.index, other.peer, other.addrs.clone())?;
        if let Some((_, _, epoch, base)) = call.early_key.take().filter(|k| k.0 == other.device) {
            media.learn_key(&other.peer, epoch, base);
        }
        let (index, epoch, base) = media.own_key();
        call.media = Some(media);
        call.state = CallState::Active;
        call.audio = audio;
        yield_files(&self.handle, Some(other.peer));
        let now = SystemClock.instant();
        call.answered = Some(now);
        call.last_report = now;
        let (id, with) = (call.id, call.with);
        self.send(with, Some(other.device), CallSignal::Accept { call_id: id })
            .await;
        self.send(
            with,
            Some(other.device),
            key_signal(id, index, epoch, &base),
        )
        .await;
        Ok(self.view())
    }

    async fn decline(&mut self) -> CallView {
        if let Some(call) = &self.current
            && let Some(other) = &call.other
        {
            let (id, with, device) = (call.id, call.with, other.device);
            self.send(with, Some(device), CallSignal::Decline { call_id: id })
                .await;
        }
        self.end(CallOutcome::Declined, "declined").await
    }

    /// Tells every device concerned that the call is over, and ends it.
    async fn end_for_all(
        &mut self,
        reason: HangupReason,
        outcome: CallOutcome,
        why: &str,
    ) -> CallView {
        if let Some(call) = &self.current {
            let (id, with) = (call.id, call.with);
            let devices: Vec<DeviceId> = match &call.other {
                Some(o) => vec![o.device],
                None => call.invited.iter().map(|(d, _)| *d).collect(),
            };
            for device in devices {
                self.send(
                    with,
                    Some(device),
                    CallSignal::Hangup {
                        call_id: id,
                        reason,
                    },
                )
                .await;
            }
        }
        self.end(outcome, why).await
    }

    /// Ends the call on now: its media stops, it goes into the event log.
    async fn end(&mut self, outcome: CallOutcome, why: &str) -> CallView {
        let Some(mut call) = self.current.take() else {
            return self.view();
        };
        let stats = match call.media.take() {
            Some(media) => {
                yield_files(&self.handle, None);
                media.stop().await
            }
            None => CallStats::default(),
        };
        let duration_ms = call.duration_ms();
        call.state = CallState::Ended;
        let mut view = call.view(stats);
        view.outcome = Some(outcome);
        view.reason = Some(why.to_owned());
        view.duration_ms = duration_ms;
        if let Some(h) = self.handle.upgrade() {
            let record = CallRecord {
                with: call.with,
                call_id: call.id,
                outgoing: call.outgoing,
                outcome,
                at: call.at,
                duration_ms,
            };
            if let Err(e) = h.note_call(record).await {
                tracing::warn!(error = %e, "an ended call was not logged");
            }
        }
        self.history.push_front(view.clone());
        self.history.truncate(HISTORY);
        view
    }

    async fn tick(&mut self) {
        let now = SystemClock.instant();
        let Some(call) = &mut self.current else {
            return;
        };
        let ringing_for = now.saturating_duration_since(call.rang_at);
        match call.state {
            CallState::Calling if ringing_for >= RING_FOR => {
                self.end_for_all(HangupReason::NoAnswer, CallOutcome::NoAnswer, "no answer")
                    .await;
            }
            // The caller ends it at RING_FOR; a little more, should its
            // hang-up not come.
            CallState::Ringing if ringing_for >= RING_FOR + Duration::from_secs(5) => {
                self.end(CallOutcome::Missed, "missed").await;
            }
            CallState::Active => {
                if (call.path.is_none()
                    || now.saturating_duration_since(call.last_report) >= REPORT_EVERY)
                    && let Some(peer) = call.other.as_ref().map(|o| o.peer)
                {
                    let paths = self.net.paths(peer).await.unwrap_or_default();
                    call.path = paths.first().map(CallPath::from);
                }
                let Some(media) = &call.media else { return };
                let since = call
                    .answered
                    .map_or(Duration::ZERO, |a| now.saturating_duration_since(a));
                let silent = media.silent_for().unwrap_or(since);
                if silent >= MEDIA_SILENCE {
                    self.end_for_all(HangupReason::Lost, CallOutcome::Answered, "lost")
                        .await;
                    return;
                }
                if now.saturating_duration_since(call.last_report) >= REPORT_EVERY {
                    call.last_report = now;
                    let reports = media.reports();
                    let (id, with) = (call.id, call.with);
                    let device = call.other.as_ref().map(|o| o.device);
                    if !call.heard_by_other {
                        // Signals are tried once: a key that did not
                        // arrive is handed over again.
                        let (index, epoch, base) = media.own_key();
                        self.send(with, device, key_signal(id, index, epoch, &base))
                            .await;
                    }
                    for (_, loss_permille) in reports {
                        let report = CallSignal::Report {
                            call_id: id,
                            loss_permille,
                        };
                        self.send(with, device, report).await;
                    }
                }
            }
            _ => {}
        }
    }
}

/// Files served to the peer of a call yield to it while it runs.
fn yield_files(handle: &WeakHandle, peer: Option<PeerId>) {
    if let Some(files) = handle.upgrade().and_then(|h| h.files) {
        files.set_call_peer(peer);
    }
}

fn key_signal(call_id: CallId, index: u8, epoch: u32, base: &BaseKey) -> CallSignal {
    CallSignal::Key {
        call_id,
        index,
        epoch,
        key: CallKey(*base.expose()),
    }
}
