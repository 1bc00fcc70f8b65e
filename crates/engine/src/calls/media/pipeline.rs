//! The tasks of a call's media: capture (code, pad, seal once, fan out),
//! a stream to each participant, reading each participant's stream into
//! its jitter buffer, and play-out (decode, mix, write).

use super::*;

/// A frame's length, µs.
const FRAME_US: u64 = 20_000;

/// Captures a frame every 20 ms, codes, pads and seals it once, and hands
/// it to every participant's queue.
pub(super) async fn capture(
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
        if shared.sent.fetch_add(1, Ordering::Relaxed) == 0 {
            let first_sample = captured.saturating_sub(FRAME_US);
            shared
                .first_capture_us
                .store(first_sample, Ordering::Relaxed);
        }
        for queue in lock(&shared.queues).values() {
            queue.send(sealed.clone());
        }
        drop(own);
    }
}

/// Keeps a stream open to one participant and writes its queue to it;
/// a stream that fails is opened again.
pub(super) async fn send_to(
    shared: Arc<Shared>,
    net: safemeet_net::Handle,
    peer: PeerId,
    addrs: Vec<Multiaddr>,
    hello: Vec<u8>,
    queue: Arc<SendQueue>,
    cancel: CancellationToken,
) {
    let run = async {
        loop {
            let sent_before = queue.stats().sent;
            match net.open_media_stream(peer, &addrs).await {
                Ok(mut stream) => {
                    shared.streams_opened.fetch_add(1, Ordering::Relaxed);
                    if write_frame(&mut stream, &hello).await.is_ok()
                        && let Err(e) = pump(&queue, stream).await
                    {
                        tracing::debug!(error = %e, "a media stream ended");
                    }
                    // A stream that carried a second of frames or more
                    // and broke (a relay's circuit at its limit) is opened
                    // again at once, so little goes unheard; one that broke
                    // sooner waits (a peer that resets streams gets a few
                    // opens a second, not one per frame).
                    if queue.stats().sent >= sent_before + REOPEN_AT_ONCE_AFTER {
                        continue;
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
pub(super) async fn receive_from<S>(
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
pub(super) fn take_frame(call: &CallId, h: &mut Heard, frame: &[u8], arrived_us: u64) {
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
pub(super) async fn play_out(
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
    // A frame has been written.
    let mut started = false;
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
                    // capture time, and comes out of the decoder the codec's
                    // look-ahead later; it is heard now.
                    let ms = (now_us.saturating_sub(capture) + FRAME_US + h.codec_delay_us) / 1000;
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
        // From the first frame heard on, every tick writes a frame, silence
        // when nothing came, as a sound card would play it: the output is
        // a timeline.
        let out = match (frames.is_empty(), started) {
            (true, false) => continue,
            (true, true) => [0i16; safemeet_media::audio::FRAME_SAMPLES],
            (false, _) => mix::mix(&frames),
        };
        if !started {
            started = true;
            shared.first_playout_us.store(now_us, Ordering::Relaxed);
        }
        if let Err(e) = sink.write_frame(&out) {
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
