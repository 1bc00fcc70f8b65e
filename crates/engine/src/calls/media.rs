//! One call's media on this device: what it captures, sealed once and
//! sent to each participant over a stream of its own, and what it hears
//! of each, through a jitter buffer, decoded and mixed.
//!
//! ```text
//!   source ─20 ms─► Opus ─► pad ─► SFrame seal ─┬─► queue (3) ─► /safemeet/media/1 ─► peer
//!                                               └─► queue (3) ─► …
//!   peer ─► stream ─► SFrame open ─► jitter buffer ─┐
//!   peer ─► stream ─► …             jitter buffer ─┼─20 ms─► decode ─► mix ─► sink
//! ```
//!
//! A stream opens with a hello frame naming the call and the sender's
//! index ([`hello`]); the service checks it before a stream is attached.
//! Everything else on a stream is SFrame ciphertext of fixed size classes
//! (`safemeet_media::payload`).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId};
use safemeet_media::audio::{AudioSink, AudioSource, Discard, Paced, Silence, WavSink, WavSource};
use safemeet_media::codec::{Codec, OpusCodec};
use safemeet_media::jitter::{JitterBuffer, Playout, Pushed};
use safemeet_media::keys::{OwnKey, PeerKeys};
use safemeet_media::sframe::BaseKey;
use safemeet_media::transport::{MediaLink, SendQueue, pump, read_frame, write_frame};
use safemeet_media::{mix, payload};
use safemeet_proto::clock::{Clock, SystemClock};
use safemeet_proto::signal::CallId;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{CallAudio, CallStats};
use crate::{CallError, Error};

/// What opens every media stream: this, the call's id and the sender's
/// index.
const HELLO: &[u8; 4] = b"SMC1";
/// Mouth-to-ear times kept for the percentiles (the last 10 s).
const LATENCIES: usize = 500;
/// How long a stream that failed waits before it is opened again.
const REOPEN: Duration = Duration::from_millis(500);

/// The hello frame of a stream from participant `index`.
pub(crate) fn hello(call: CallId, index: u8) -> Vec<u8> {
    let mut v = HELLO.to_vec();
    v.extend_from_slice(&call.0);
    v.push(index);
    v
}

/// The call and sender index a hello frame names.
pub(crate) fn read_hello(frame: &[u8]) -> Option<(CallId, u8)> {
    if frame.len() != 21 || &frame[..4] != HELLO {
        return None;
    }
    let id: [u8; 16] = frame[4..20].try_into().ok()?;
    Some((CallId(id), frame[20]))
}

/// One other participant, as this device hears it.
struct Heard {
    keys: PeerKeys,
    jitter: JitterBuffer,
    codec: OpusCodec,
    latencies: VecDeque<u32>,
    /// Frames refused (did not open, or not a payload).
    refused: u64,
    /// Whether a key of the participant's came yet.
    keyed: bool,
    /// Frames that came before any key (the key travels over Olm, the
    /// frames over their own stream, and either may be first), with when
    /// they arrived: opened once it comes.
    early: VecDeque<(Vec<u8>, u64)>,
    /// Played and lost at the last report.
    reported: (u64, u64),
    /// Frames in a row not played as they came (lost, concealed, or
    /// rebuilt from FEC) now, and the longest such run.
    gap: u64,
    longest_gap: u64,
    /// This participant's frames alone, if asked (`CallAudio::wav_each`).
    sink: Option<WavSink>,
    /// When it was added (a participant never heard is silent since).
    added: Instant,
    last_frame: Option<Instant>,
}

/// What the media tasks share.
struct Shared {
    call: CallId,
    own: Mutex<OwnKey>,
    heard: Mutex<HashMap<PeerId, Heard>>,
    queues: Mutex<HashMap<PeerId, Arc<SendQueue>>>,
    /// Each participant's stream task, stopped when it leaves.
    senders: Mutex<HashMap<PeerId, CancellationToken>>,
    /// Where each participant's frames are also written, if asked.
    each_dir: Option<std::path::PathBuf>,
    expected_loss: AtomicU8,
    sent: AtomicU64,
    /// Wall clock at the start (µs since the Unix epoch), and the
    /// monotonic clock then: capture times are taken from both.
    wall0_us: u64,
    mono0: Instant,
}

impl Shared {
    fn wall_us(&self) -> u64 {
        self.wall_us_at(SystemClock.instant())
    }

    /// The wall clock (µs) at monotonic instant `at`.
    fn wall_us_at(&self, at: Instant) -> u64 {
        let elapsed = at.saturating_duration_since(self.mono0);
        self.wall0_us
            .saturating_add(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A call's media, while it runs.
pub(crate) struct Media {
    shared: Arc<Shared>,
    cancel: CancellationToken,
    tasks: JoinSet<()>,
    net: safemeet_net::Handle,
    sink_done: Option<tokio::sync::oneshot::Receiver<()>>,
}

impl std::fmt::Debug for Media {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Media").finish_non_exhaustive()
    }
}

impl Media {
    /// Starts capturing and playing out (nobody to send to or hear yet).
    /// `index` is this device's in the call.
    pub(crate) fn start(
        call: CallId,
        index: u8,
        audio: &CallAudio,
        net: safemeet_net::Handle,
        cancel: CancellationToken,
    ) -> Result<Self, Error> {
        let bad =
            |e: safemeet_media::audio::AudioError| Error::from(CallError::Audio(e.to_string()));
        let source: Box<dyn AudioSource> = match &audio.wav_in {
            Some(path) => Box::new(WavSource::open(path).map_err(bad)?),
            None => Box::new(Silence),
        };
        let sink: Box<dyn AudioSink> = match &audio.wav_out {
            Some(path) => Box::new(WavSink::create(path).map_err(bad)?),
            None => Box::new(Discard),
        };
        let encoder = OpusCodec::new().map_err(|e| Error::InvalidInput(e.to_string()))?;
        let shared = Arc::new(Shared {
            call,
            own: Mutex::new(OwnKey::new(index)),
            heard: Mutex::new(HashMap::new()),
            queues: Mutex::new(HashMap::new()),
            senders: Mutex::new(HashMap::new()),
            each_dir: audio.wav_each.clone(),
            expected_loss: AtomicU8::new(0),
            sent: AtomicU64::new(0),
            wall0_us: SystemClock.now().as_millis().saturating_mul(1000),
            mono0: SystemClock.instant(),
        });
        let mut tasks = JoinSet::new();
        tasks.spawn(capture(
            shared.clone(),
            Paced::new(source, true),
            encoder,
            cancel.clone(),
        ));
        let (done_tx, done) = tokio::sync::oneshot::channel();
        tasks.spawn(play_out(shared.clone(), sink, cancel.clone(), done_tx));
        Ok(Self {
            shared,
            cancel,
            tasks,
            net,
            sink_done: Some(done),
        })
    }

    /// This device's key now: index, epoch and base key (to hand over).
    pub(crate) fn own_key(&self) -> (u8, u32, BaseKey) {
        let own = lock(&self.shared.own);
        let (epoch, base) = own.current();
        (own.index(), epoch, base)
    }

    /// A participant joins the call: frames go to it over a stream of
    /// their own, and it is heard once its key and stream come.
    pub(crate) fn add_peer(
        &mut self,
        index: u8,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
    ) -> Result<(), Error> {
        self.add(index, peer, addrs, false)
    }

    /// Someone joins a meeting: this device's key moves one step on (a
    /// fresh key handed out for a leave is taken first, so no two keys
    /// share an epoch) and only then do frames go to the joiner; the new
    /// key, for the joiner only.
    pub(crate) fn add_joiner(
        &mut self,
        index: u8,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
    ) -> Result<(u8, u32, BaseKey), Error> {
        self.add(index, peer, addrs, true)?;
        Ok(self.own_key())
    }

    fn add(
        &mut self,
        index: u8,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        ratchet: bool,
    ) -> Result<(), Error> {
        let codec = OpusCodec::new().map_err(|e| Error::InvalidInput(e.to_string()))?;
        let sink = match &self.shared.each_dir {
            Some(dir) => Some(
                WavSink::create(&dir.join(format!("{peer}.wav")))
                    .map_err(|e| CallError::Audio(e.to_string()))?,
            ),
            None => None,
        };
        lock(&self.shared.heard)
            .entry(peer)
            .or_insert_with(|| Heard {
                keys: PeerKeys::new(index),
                jitter: JitterBuffer::new(),
                codec,
                latencies: VecDeque::with_capacity(LATENCIES),
                refused: 0,
                keyed: false,
                early: VecDeque::new(),
                reported: (0, 0),
                gap: 0,
                longest_gap: 0,
                sink,
                added: SystemClock.instant(),
                last_frame: None,
            });
        let queue = Arc::new(SendQueue::new());
        let own_index = {
            let mut own = lock(&self.shared.own);
            if ratchet {
                // A joiner: the key moves on first, then frames go to it.
                own.switch();
                own.ratchet_for_join();
            }
            lock(&self.shared.queues).insert(peer, queue.clone());
            own.index()
        };
        let stop = self.cancel.child_token();
        lock(&self.shared.senders).insert(peer, stop.clone());
        self.tasks.spawn(send_to(
            self.net.clone(),
            peer,
            addrs,
            hello(self.shared.call, own_index),
            queue,
            stop,
        ));
        Ok(())
    }

    /// A participant left: nothing more goes to it or is taken from it.
    pub(crate) fn remove_peer(&mut self, peer: &PeerId) {
        if let Some(stop) = lock(&self.shared.senders).remove(peer) {
            stop.cancel();
        }
        lock(&self.shared.queues).remove(peer);
        if let Some(mut h) = lock(&self.shared.heard).remove(peer)
            && let Some(sink) = &mut h.sink
            && let Err(e) = sink.finish()
        {
            tracing::debug!(error = %e, "a participant's output was not finished");
        }
    }

    /// Someone left: a fresh key for those who stay, sealed with from
    /// [`switch_key`](Self::switch_key) on.
    pub(crate) fn rotate_for_leave(&self) -> (u8, u32, BaseKey) {
        let mut own = lock(&self.shared.own);
        let (epoch, base) = own.rotate_for_leave();
        (own.index(), epoch, base)
    }

    /// Starts sealing with the fresh key handed out.
    pub(crate) fn switch_key(&self) {
        lock(&self.shared.own).switch();
    }

    /// A key participant `peer` handed over.
    pub(crate) fn learn_key(&self, peer: &PeerId, epoch: u32, base: BaseKey) {
        if let Some(h) = lock(&self.shared.heard).get_mut(peer) {
            h.keys.learn(epoch, base);
            h.keyed = true;
            // Those that still do not open (an older or newer key) are
            // held again, within the bound.
            for (frame, arrived_us) in std::mem::take(&mut h.early) {
                take_frame(&self.shared.call, h, &frame, arrived_us);
            }
        }
    }

    /// A stream from participant `peer` (its hello was checked).
    pub(crate) fn attach<S>(&mut self, peer: PeerId, stream: S)
    where
        S: futures::AsyncRead + Unpin + Send + 'static,
    {
        self.tasks.spawn(receive_from(
            self.shared.clone(),
            peer,
            stream,
            self.cancel.clone(),
        ));
    }

    /// The loss the participants report, in percent: the encoder's FEC
    /// follows the worst.
    pub(crate) fn set_expected_loss(&self, percent: u8) {
        self.shared
            .expected_loss
            .store(percent.min(100), Ordering::Relaxed);
    }

    /// Loss heard from each participant since the last report, per
    /// thousand.
    pub(crate) fn reports(&self) -> Vec<(PeerId, u16)> {
        let mut heard = lock(&self.shared.heard);
        heard
            .iter_mut()
            .filter(|(_, h)| h.last_frame.is_some())
            .map(|(peer, h)| {
                let s = h.jitter.stats();
                let (played, lost) = (s.played + s.fec_recovered, s.lost);
                let (p0, l0) = h.reported;
                h.reported = (played, lost);
                let (dp, dl) = (played.saturating_sub(p0), lost.saturating_sub(l0));
                let permille = (dl * 1000).checked_div(dp + dl).unwrap_or(0);
                (*peer, u16::try_from(permille).unwrap_or(1000))
            })
            .collect()
    }

    /// How long since a frame was last heard from anyone (`None`:
    /// nothing yet).
    pub(crate) fn silent_for(&self) -> Option<Duration> {
        let now = SystemClock.instant();
        lock(&self.shared.heard)
            .values()
            .filter_map(|h| h.last_frame)
            .max()
            .map(|at| now.saturating_duration_since(at))
    }

    /// The participants heard from not once in the last `limit` (since
    /// they were added, if never).
    pub(crate) fn silent_peers(&self, limit: Duration) -> Vec<PeerId> {
        let now = SystemClock.instant();
        lock(&self.shared.heard)
            .iter()
            .filter(|(_, h)| {
                now.saturating_duration_since(h.last_frame.unwrap_or(h.added)) >= limit
            })
            .map(|(p, _)| *p)
            .collect()
    }

    /// What was counted so far.
    pub(crate) fn stats(&self) -> CallStats {
        let mut stats = CallStats {
            sent: self.shared.sent.load(Ordering::Relaxed),
            expected_loss_percent: self.shared.expected_loss.load(Ordering::Relaxed),
            ..CallStats::default()
        };
        for queue in lock(&self.shared.queues).values() {
            stats.dropped_in_queue += queue.stats().dropped;
        }
        let mut latencies = Vec::new();
        for h in lock(&self.shared.heard).values() {
            let s = h.jitter.stats();
            stats.received += s.received;
            stats.played += s.played;
            stats.late += s.late;
            stats.lost += s.lost;
            stats.concealed += s.concealed;
            stats.fec_recovered += s.fec_recovered;
            stats.skipped += s.skipped;
            stats.refused += h.refused;
            stats.longest_gap_ms = stats.longest_gap_ms.max(h.longest_gap * 20);
            stats.jitter_ms = stats.jitter_ms.max(s.jitter_ms);
            stats.delay_ms = stats.delay_ms.max(h.jitter.delay_ms());
            latencies.extend(h.latencies.iter().copied());
        }
        latencies.sort_unstable();
        stats.mouth_to_ear_p50_ms = percentile(&latencies, 50);
        stats.mouth_to_ear_p95_ms = percentile(&latencies, 95);
        stats
    }

    /// Stops everything; the sink is finished (a WAV file is whole).
    pub(crate) async fn stop(mut self) -> CallStats {
        let stats = self.stats();
        self.cancel.cancel();
        if let Some(done) = self.sink_done.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), done).await;
        }
        self.tasks.shutdown().await;
        stats
    }
}

impl Drop for Media {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn percentile(sorted: &[u32], p: usize) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    let at = ((sorted.len() * p).div_ceil(100)).clamp(1, sorted.len()) - 1;
    Some(sorted[at])
}

/// Captures a frame every 20 ms, codes, pads and seals it once, and hands
/// it to every participant's queue.
async fn capture(
    shared: Arc<Shared>,
    mut source: Paced<Box<dyn AudioSource>>,
    mut encoder: OpusCodec,
    cancel: CancellationToken,
) {
    let mut loss = 0u8;
    loop {
        let next = tokio::select! {
            () = cancel.cancelled() => return,
            next = source.next_at() => next,
        };
        let (frame, due) = match next {
            Ok((Some(frame), due)) => (frame, due),
            // A file that ends is followed by silence, as a microphone
            // left on would be: the call goes on until someone hangs up.
            Ok((None, due)) => ([0i16; safemeet_media::audio::FRAME_SAMPLES], due),
            Err(e) => {
                tracing::warn!(error = %e, "the call's audio source failed");
                return;
            }
        };
        let want = shared.expected_loss.load(Ordering::Relaxed);
        if want != loss && encoder.set_expected_loss(want).is_ok() {
            loss = want;
        }
        // The frame's capture time: when its last sample was taken (by the
        // source's clock, which does not slip when this task is held up).
        let captured = due.map_or_else(|| shared.wall_us(), |at| shared.wall_us_at(at));
        let Some(payload) = encoder
            .encode(&frame)
            .ok()
            .and_then(|packet| payload::pack(captured, &packet))
        else {
            tracing::debug!("a frame could not be coded");
            continue;
        };
        // Sealed and handed to the queues under the key's lock: a joiner's
        // queue and the key it gets are set under it too, so no frame
        // sealed before it came reaches it (it could not open one).
        let mut own = lock(&shared.own);
        let Ok(sealed) = own.seal(&shared.call.0, &payload) else {
            tracing::debug!("a frame could not be sealed");
            continue;
        };
        shared.sent.fetch_add(1, Ordering::Relaxed);
        for queue in lock(&shared.queues).values() {
            queue.send(sealed.clone());
        }
        drop(own);
    }
}

/// Keeps a stream open to one participant and writes its queue to it;
/// a stream that fails is opened again.
async fn send_to(
    net: safemeet_net::Handle,
    peer: PeerId,
    addrs: Vec<Multiaddr>,
    hello: Vec<u8>,
    queue: Arc<SendQueue>,
    cancel: CancellationToken,
) {
    let run = async {
        loop {
            match net.open_media_stream(peer, &addrs).await {
                Ok(mut stream) => {
                    if write_frame(&mut stream, &hello).await.is_ok()
                        && let Err(e) = pump(&queue, stream).await
                    {
                        tracing::debug!(error = %e, "a media stream ended");
                    }
                }
                Err(e) => tracing::debug!(error = %e, "a media stream could not be opened"),
            }
            tokio::time::sleep(REOPEN).await;
        }
    };
    tokio::select! {
        () = cancel.cancelled() => queue.close(),
        () = run => {}
    }
}

/// Reads one participant's frames into its jitter buffer.
async fn receive_from<S>(
    shared: Arc<Shared>,
    peer: PeerId,
    mut stream: S,
    cancel: CancellationToken,
) where
    S: futures::AsyncRead + Unpin + Send,
{
    loop {
        let frame = tokio::select! {
            () = cancel.cancelled() => return,
            frame = read_frame(&mut stream) => frame,
        };
        let frame = match frame {
            Ok(Some(frame)) => frame,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(error = %e, "a media stream broke");
                return;
            }
        };
        let arrived_us = shared.wall_us();
        let mut heard = lock(&shared.heard);
        let Some(h) = heard.get_mut(&peer) else {
            return;
        };
        if !h.keyed {
            if h.early.len() == MAX_EARLY {
                h.early.pop_front();
                h.refused += 1;
            }
            h.early.push_back((frame, arrived_us));
            continue;
        }
        take_frame(&shared.call, h, &frame, arrived_us);
    }
}

/// Whether `frame` names an epoch past the newest key held of its sender.
fn newer_key(h: &Heard, frame: &[u8]) -> bool {
    let epoch = safemeet_media::sframe::Header::decode(frame)
        .ok()
        .and_then(|(header, _)| safemeet_media::keys::split_kid(header.kid))
        .map(|(_, epoch)| epoch);
    match (epoch, h.keys.latest_epoch()) {
        (Some(e), Some(held)) => e > held,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// Frames held while no key of their sender's has come (three seconds: a
/// key signal that did not arrive is handed over again within one).
const MAX_EARLY: usize = 150;

/// Opens a frame and hands it to the jitter buffer (or counts it refused).
fn take_frame(call: &CallId, h: &mut Heard, frame: &[u8], arrived_us: u64) {
    let opened = match h.keys.open(frame, &call.0) {
        Ok(opened) => Some(opened),
        // Sealed with a key newer than any held (a fresh one after someone
        // left travels over Olm, the frames sealed with it on their own
        // stream, and a join's ratchet may follow it at once): held, like
        // the frames before the first key, and opened when it comes.
        Err(_) if h.early.len() < MAX_EARLY && newer_key(h, frame) => {
            h.early.push_back((frame.to_vec(), arrived_us));
            return;
        }
        Err(_) => None,
    };
    let opened = opened.and_then(|(header, p)| {
        payload::unpack(&p).map(|(capture, packet)| {
            let mut kept = capture.to_be_bytes().to_vec();
            kept.extend_from_slice(packet);
            (header.ctr, capture, kept)
        })
    });
    let Some((seq, capture_us, kept)) = opened else {
        h.refused += 1;
        return;
    };
    h.last_frame = Some(SystemClock.instant());
    if h.jitter
        .push(seq, capture_us / 1000, arrived_us / 1000, kept)
        == Pushed::TooFarAhead
    {
        tracing::debug!("a frame far ahead was dropped");
    }
}

/// Every 20 ms: each participant's next frame decoded, mixed, written.
async fn play_out(
    shared: Arc<Shared>,
    mut sink: Box<dyn AudioSink>,
    cancel: CancellationToken,
    done: tokio::sync::oneshot::Sender<()>,
) {
    // A sound card's clock: ticks missed while this task was held up come
    // at once after, each at the time it was due, so a stall here delays
    // what is heard but drops nothing.
    let mut clock = tokio::time::interval(safemeet_media::audio::FRAME_TIME);
    clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    loop {
        let due = tokio::select! {
            () = cancel.cancelled() => break,
            due = clock.tick() => due,
        };
        let due_us = shared.wall_us_at(due.into_std());
        let now_us = shared.wall_us();
        let mut frames = Vec::new();
        for h in lock(&shared.heard).values_mut() {
            let lost_before = h.jitter.stats().lost;
            let playout = h.jitter.pop(due_us / 1000);
            // Frames missing at their turn (concealed, rebuilt, or skipped
            // over), in a row: the gap a listener hears.
            let missing = h.jitter.stats().lost - lost_before;
            match &playout {
                Some(Playout::Frame(_)) if missing == 0 => h.gap = 0,
                Some(Playout::Frame(_)) => {
                    h.longest_gap = h.longest_gap.max(h.gap + missing);
                    h.gap = 0;
                }
                Some(_) => {
                    h.gap += missing;
                    h.longest_gap = h.longest_gap.max(h.gap);
                }
                None => {}
            }
            for skipped in h.jitter.take_skipped() {
                // Decoded and not played: the decoder follows the sender.
                let _ = h.codec.decode(&skipped[8..]);
            }
            let pcm = match playout {
                Some(Playout::Frame(p)) => {
                    let capture = u64::from_be_bytes(p[..8].try_into().unwrap_or_default());
                    // The frame's first sample was taken 20 ms before its
                    // capture time; it is heard now.
                    let ms = now_us.saturating_sub(capture) / 1000 + 20;
                    if h.latencies.len() == LATENCIES {
                        h.latencies.pop_front();
                    }
                    h.latencies.push_back(u32::try_from(ms).unwrap_or(u32::MAX));
                    h.codec.decode(&p[8..])
                }
                Some(Playout::Fec(next)) => h.codec.decode_fec(&next[8..]),
                Some(Playout::Conceal) => h.codec.conceal(),
                None => continue,
            };
            match pcm {
                Ok(pcm) => {
                    if let Some(own) = &mut h.sink
                        && let Err(e) = own.write_frame(&pcm)
                    {
                        tracing::debug!(error = %e, "a participant's output failed");
                        h.sink = None;
                    }
                    frames.push(pcm);
                }
                Err(e) => tracing::debug!(error = %e, "a frame did not decode"),
            }
        }
        if !frames.is_empty()
            && let Err(e) = sink.write_frame(&mix::mix(&frames))
        {
            tracing::warn!(error = %e, "the call's audio output failed");
            break;
        }
    }
    if let Err(e) = sink.finish() {
        tracing::warn!(error = %e, "the call's audio output was not finished");
    }
    for h in lock(&shared.heard).values_mut() {
        if let Some(own) = &mut h.sink
            && let Err(e) = own.finish()
        {
            tracing::debug!(error = %e, "a participant's output was not finished");
        }
    }
    let _ = done.send(());
}
