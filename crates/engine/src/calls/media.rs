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

mod pipeline;

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
/// Frames a stream carried (a second's) for it to be opened again at once
/// when it breaks.
const REOPEN_AT_ONCE_AFTER: u64 = 50;

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
    /// The codec's own delay (look-ahead), µs: part of mouth-to-ear.
    codec_delay_us: u64,
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
    /// Media streams opened (see `CallStats::streams_opened`).
    streams_opened: AtomicU64,
    /// When the first sample sent was taken, and when the first sample
    /// heard was played (µs since the Unix epoch; 0: not yet).
    first_capture_us: AtomicU64,
    first_playout_us: AtomicU64,
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

/// The microphone (with the `cpal` feature, when there is one), else
/// silence: a call without one still hears the other side.
fn system_source() -> Box<dyn AudioSource> {
    #[cfg(feature = "cpal")]
    match safemeet_media::system::SystemSource::open() {
        Ok(source) => return Box::new(source),
        Err(e) => tracing::warn!(error = %e, "no microphone: the call sends silence"),
    }
    Box::new(Silence)
}

/// The speakers (with the `cpal` feature, when there are some), else
/// nothing is played.
fn system_sink() -> Box<dyn AudioSink> {
    #[cfg(feature = "cpal")]
    match safemeet_media::system::SystemSink::open() {
        Ok(sink) => return Box::new(sink),
        Err(e) => tracing::warn!(error = %e, "no speakers: the call is not played"),
    }
    Box::new(Discard)
}

fn nonzero(us: u64) -> Option<u64> {
    (us != 0).then_some(us)
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
            None => system_source(),
        };
        let sink: Box<dyn AudioSink> = match &audio.wav_out {
            Some(path) => Box::new(WavSink::create(path).map_err(bad)?),
            None => system_sink(),
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
            streams_opened: AtomicU64::new(0),
            first_capture_us: AtomicU64::new(0),
            first_playout_us: AtomicU64::new(0),
            wall0_us: SystemClock.now().as_millis().saturating_mul(1000),
            mono0: SystemClock.instant(),
        });
        let mut tasks = JoinSet::new();
        tasks.spawn(pipeline::capture(
            shared.clone(),
            Paced::new(source, true),
            encoder,
            cancel.clone(),
        ));
        let (done_tx, done) = tokio::sync::oneshot::channel();
        tasks.spawn(pipeline::play_out(
            shared.clone(),
            sink,
            cancel.clone(),
            done_tx,
        ));
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
        let mut codec = OpusCodec::new().map_err(|e| Error::InvalidInput(e.to_string()))?;
        // The sender codes as this device would: its look-ahead is this one's.
        let codec_delay_us = codec.delay_us().unwrap_or(0);
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
                codec_delay_us,
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
        self.tasks.spawn(pipeline::send_to(
            self.shared.clone(),
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
                pipeline::take_frame(&self.shared.call, h, &frame, arrived_us);
            }
        }
    }

    /// A stream from participant `peer` (its hello was checked).
    pub(crate) fn attach<S>(&mut self, peer: PeerId, stream: S)
    where
        S: futures::AsyncRead + Unpin + Send + 'static,
    {
        self.tasks.spawn(pipeline::receive_from(
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
            streams_opened: self.shared.streams_opened.load(Ordering::Relaxed),
            capture_started_us: nonzero(self.shared.first_capture_us.load(Ordering::Relaxed)),
            playout_started_us: nonzero(self.shared.first_playout_us.load(Ordering::Relaxed)),
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
