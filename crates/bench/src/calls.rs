//! `safemeet-bench calls`: the media pipeline's costs.
//!
//! - **Opus encode** of a 20 ms frame (VoIP, 32 kbit/s, complexity 10,
//!   FEC on), over a speech-like signal: median and p99 per frame (goal:
//!   p99 at most 400 µs).
//! - **SFrame** sealing and opening of a 100-byte frame (what Opus makes
//!   at 32 kbit/s, with its capture time), against raw AES-128-GCM
//!   sealing and opening the same bytes with the same crate in the same
//!   run (goal: at most 1.5 times).
//! - **An 8-way meeting in one process**, on a 20 ms clock for
//!   `--meeting-secs` (default 60): each participant encodes and seals
//!   each frame once and hands it to the 7 others, each of whom opens it,
//!   puts it through its jitter buffer, decodes it and mixes the 7 streams
//!   with a soft clip. Reported: the process's CPU over the wall time, in
//!   percent of one core (goal: at most 50), and the p95 time from capture
//!   to play-out (no network here: the framing, the jitter buffer's target
//!   and the work).

use std::time::Duration;

use anyhow::Context;
use safemeet_media::audio::{FRAME_SAMPLES, Frame, SAMPLE_RATE};
use safemeet_media::codec::{Codec, OpusCodec};
use safemeet_media::jitter::{JitterBuffer, Playout};
use safemeet_media::keys::{OwnKey, PeerKeys};
use safemeet_media::mix::soft_clip;
use serde_json::{Value, json};

use crate::chat::{instant, percentile};
use crate::median;

const ENCODE_P99_GOAL_US: f64 = 400.0;
const SFRAME_RATIO_GOAL: f64 = 1.5;
const MEETING_CPU_GOAL_PERCENT: f64 = 50.0;
const MOUTH_TO_EAR_P95_GOAL_MS: u32 = 100;
const PARTICIPANTS: usize = 8;
const FRAME_BYTES: usize = 100;

/// What the run needs.
#[derive(Debug)]
pub(crate) struct Options {
    pub(crate) samples: usize,
    pub(crate) frames: usize,
    pub(crate) meeting_secs: u64,
}

/// `seconds` of a voiced sound at fundamental `f0` Hz, in syllables.
fn voice(seconds: f64, f0: f64) -> Vec<i16> {
    let n = (f64::from(SAMPLE_RATE) * seconds) as usize;
    let mut phase = 0.0f64;
    (0..n)
        .map(|i| {
            let t = i as f64 / f64::from(SAMPLE_RATE);
            let f = f0 * (1.0 + 0.2 * (2.0 * std::f64::consts::PI * 1.3 * t).sin());
            phase += 2.0 * std::f64::consts::PI * f / f64::from(SAMPLE_RATE);
            let v: f64 = (1..=8).map(|h| (h as f64 * phase).sin() / h as f64).sum();
            let syllable = (2.0 * std::f64::consts::PI * 2.7 * t).sin().max(0.0);
            (v * syllable * 5000.0) as i16
        })
        .collect()
}

fn frames_of(samples: &[i16]) -> Vec<Frame> {
    samples
        .chunks(FRAME_SAMPLES)
        .map(|c| {
            let mut f = [0i16; FRAME_SAMPLES];
            f[..c.len()].copy_from_slice(c);
            f
        })
        .collect()
}

/// Microseconds per Opus encode, sorted.
fn encode_times(frames: &[Frame]) -> anyhow::Result<Vec<f64>> {
    let mut codec = OpusCodec::new().context("opus")?;
    let mut times = Vec::with_capacity(frames.len());
    for frame in frames {
        let start = instant();
        let packet = codec.encode(frame).context("encode")?;
        times.push(start.elapsed().as_secs_f64() * 1e6);
        std::hint::black_box(packet);
    }
    times.sort_by(f64::total_cmp);
    Ok(times)
}

/// Nanoseconds per frame sealed and opened: SFrame, then raw AES-GCM.
fn sframe_vs_raw(frames: usize) -> anyhow::Result<(f64, f64)> {
    use aes_gcm::aead::{Aead, KeyInit, Payload};
    let call = [7u8; 16];
    let payload = [0x5au8; FRAME_BYTES];
    let mut own = OwnKey::new(0);
    let mut peer = PeerKeys::new(0);
    let (epoch, base) = own.current();
    peer.learn(epoch, base);
    let start = instant();
    for _ in 0..frames {
        let sealed = own.seal(&call, &payload).context("seal")?;
        let opened = peer.open(&sealed, &call).context("open")?;
        std::hint::black_box(opened);
    }
    let sframe = start.elapsed().as_secs_f64() * 1e9 / frames as f64;

    let cipher = aes_gcm::Aes128Gcm::new(&[3u8; 16].into());
    let nonce = aes_gcm::Nonce::from([9u8; 12]);
    let start = instant();
    for _ in 0..frames {
        let sealed = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: &payload,
                    aad: &call,
                },
            )
            .map_err(|_| anyhow::anyhow!("seal"))?;
        let opened = cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: &sealed,
                    aad: &call,
                },
            )
            .map_err(|_| anyhow::anyhow!("open"))?;
        std::hint::black_box(opened);
    }
    let raw = start.elapsed().as_secs_f64() * 1e9 / frames as f64;
    Ok((sframe, raw))
}

/// One participant of the in-process meeting.
struct Participant {
    frames: Vec<Frame>,
    codec: OpusCodec,
    key: OwnKey,
    /// Per other participant: its keys, jitter buffer and decoder.
    peers: Vec<(usize, PeerKeys, JitterBuffer, OpusCodec)>,
}

/// Runs the meeting for `secs` on a 20 ms clock; CPU percent of one core
/// and the p95 capture-to-play-out time in ms.
async fn meeting(secs: u64) -> anyhow::Result<(f64, f64, u64)> {
    let call = [1u8; 16];
    let mut people = Vec::with_capacity(PARTICIPANTS);
    for i in 0..PARTICIPANTS {
        let frames = frames_of(&voice(10.0, 110.0 + 15.0 * i as f64));
        people.push(Participant {
            frames,
            codec: OpusCodec::new().context("opus")?,
            key: OwnKey::new(i as u8),
            peers: Vec::new(),
        });
    }
    for i in 0..PARTICIPANTS {
        for j in 0..PARTICIPANTS {
            if i != j {
                let (epoch, base) = people[j].key.current();
                let mut keys = PeerKeys::new(j as u8);
                keys.learn(epoch, base);
                people[i].peers.push((
                    j,
                    keys,
                    JitterBuffer::new(),
                    OpusCodec::new().context("opus")?,
                ));
            }
        }
    }
    let start = instant();
    let cpu0 = crate::process_cpu();
    let mut clock = tokio::time::interval(Duration::from_millis(20));
    clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ticks = secs * 50;
    let mut latencies = Vec::new();
    let mut played = 0u64;
    for tick in 0..ticks {
        clock.tick().await;
        let now_ms = start.elapsed().as_millis() as u64;
        // Each speaks: one encode and one seal per frame, fanned out.
        let mut sent = Vec::with_capacity(PARTICIPANTS);
        for (i, p) in people.iter_mut().enumerate() {
            let frame = &p.frames[tick as usize % p.frames.len()];
            let packet = p.codec.encode(frame).context("encode")?;
            let mut payload = now_ms.to_be_bytes().to_vec();
            payload.extend_from_slice(&packet);
            sent.push((i, p.key.seal(&call, &payload).context("seal")?));
        }
        // Each hears the others: open, buffer, decode, mix.
        for (i, p) in people.iter_mut().enumerate() {
            let mut mix = [0i32; FRAME_SAMPLES];
            for (from, keys, jitter, codec) in &mut p.peers {
                if let Some((_, frame)) = sent.iter().find(|(j, _)| j == from) {
                    let (header, opened) = keys.open(frame, &call).context("open")?;
                    let mut capture = [0u8; 8];
                    capture.copy_from_slice(&opened[..8]);
                    jitter.push(
                        header.ctr,
                        u64::from_be_bytes(capture),
                        now_ms,
                        opened.to_vec(),
                    );
                }
                // Each payload: the capture time (ms), then the packet.
                let pcm = match jitter.pop(now_ms) {
                    Some(Playout::Frame(payload)) => {
                        if i == 0 {
                            let mut capture = [0u8; 8];
                            capture.copy_from_slice(&payload[..8]);
                            // The frame's first sample was spoken 20 ms
                            // before its capture time, and is heard now.
                            let heard = now_ms.saturating_sub(u64::from_be_bytes(capture));
                            latencies.push(heard as f64 + 20.0);
                        }
                        Some(codec.decode(&payload[8..]))
                    }
                    Some(Playout::Fec(next)) => Some(codec.decode_fec(&next[8..])),
                    Some(Playout::Conceal) => Some(codec.conceal()),
                    None => None,
                };
                if let Some(pcm) = pcm {
                    let pcm = pcm.context("decode")?;
                    for (m, s) in mix.iter_mut().zip(pcm.iter()) {
                        *m += i32::from(*s);
                    }
                    played += 1;
                }
            }
            let mixed: Vec<i16> = mix.iter().map(|m| soft_clip(*m)).collect();
            std::hint::black_box(mixed);
        }
    }
    let wall = start.elapsed();
    let cpu = match (cpu0, crate::process_cpu()) {
        (Some(a), Some(b)) => (b - a).as_secs_f64() / wall.as_secs_f64() * 100.0,
        _ => f64::NAN,
    };
    latencies.sort_by(f64::total_cmp);
    Ok((cpu, percentile(&latencies, 95.0), played))
}

/// A call between two engines over loopback TCP in this process, for
/// `secs`: what the callee heard (its p50 and p95 mouth-to-ear, ms, and
/// frames played, late and lost).
async fn between_engines(secs: u64) -> anyhow::Result<Value> {
    use safemeet_media::audio::{AudioSink, WavSink};
    let dir = tempfile::tempdir()?;
    let wav = dir.path().join("voice.wav");
    let mut sink = WavSink::create(&wav)?;
    for frame in frames_of(&voice(secs as f64 + 5.0, 140.0)) {
        sink.write_frame(&frame)?;
    }
    sink.finish()?;
    let alice = crate::chat::start_engine("alice", safemeet_store::MemoryStore::new())?;
    let bob = crate::chat::start_engine("bob", safemeet_store::MemoryStore::new())?;
    crate::chat::wait_listening(&alice).await?;
    crate::chat::wait_listening(&bob).await?;
    let (ia, ib) = (alice.invite().await?, bob.invite().await?);
    alice.add_contact(&ib, Some("bob".into())).await?;
    bob.add_contact(&ia, Some("alice".into())).await?;
    let audio = safemeet_engine::CallAudio {
        wav_in: Some(wav),
        wav_out: None,
        wav_each: None,
    };
    alice.call(bob.user_id(), audio).await?;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let ringing = async {
        loop {
            tick.tick().await;
            let calls = bob.calls().await?;
            if calls
                .first()
                .is_some_and(|c| c.state == safemeet_engine::CallState::Ringing)
            {
                return anyhow::Ok(());
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), ringing).await??;
    bob.call_accept(safemeet_engine::CallAudio::default())
        .await?;
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let heard = bob
        .calls()
        .await?
        .into_iter()
        .next()
        .context("bob's call")?;
    alice.call_hangup().await?;
    let s = heard.stats;
    eprintln!(
        "a call between two engines over loopback TCP for {secs} s: mouth-to-ear p50 {:?} ms, p95 {:?} ms; {} played, {} late, {} lost",
        s.mouth_to_ear_p50_ms, s.mouth_to_ear_p95_ms, s.played, s.late, s.lost
    );
    alice.shutdown().await?;
    bob.shutdown().await?;
    Ok(json!({
        "secs": secs,
        "transport": "tcp, loopback",
        "mouth_to_ear_p50_ms": s.mouth_to_ear_p50_ms,
        "mouth_to_ear_p95_ms": s.mouth_to_ear_p95_ms,
        "mouth_to_ear_p95_goal_ms": MOUTH_TO_EAR_P95_GOAL_MS,
        "played": s.played,
        "late": s.late,
        "lost": s.lost,
    }))
}

pub(crate) fn run(options: Options) -> anyhow::Result<Value> {
    let frames = frames_of(&voice((options.frames as f64 * 0.02).max(1.0), 140.0));
    let mut p50s = Vec::new();
    let mut p99s = Vec::new();
    let mut ratios = Vec::new();
    let mut sframe_ns = Vec::new();
    let mut raw_ns = Vec::new();
    for sample in 0..options.samples {
        let times = encode_times(&frames)?;
        let (p50, p99) = (percentile(&times, 50.0), percentile(&times, 99.0));
        let (s, r) = sframe_vs_raw(options.frames.max(1000))?;
        eprintln!(
            "sample {sample}: opus encode p50 {p50:.0} µs, p99 {p99:.0} µs; sframe {s:.0} ns, raw aes-gcm {r:.0} ns ({:.2}x)",
            s / r
        );
        p50s.push(p50);
        p99s.push(p99);
        sframe_ns.push(s);
        raw_ns.push(r);
        ratios.push(s / r);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    let (cpu, latency_p95, played) = runtime.block_on(meeting(options.meeting_secs))?;
    let engines = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(between_engines(options.meeting_secs))?;
    let call_p95 = engines["mouth_to_ear_p95_ms"].as_u64().unwrap_or(u64::MAX);
    eprintln!(
        "meeting of {PARTICIPANTS} for {} s: {cpu:.1}% of one core, p95 capture to play-out {latency_p95:.0} ms, {played} frames played",
        options.meeting_secs
    );
    let (p99, ratio) = (median(p99s.clone()), median(ratios.clone()));
    Ok(json!({
        "suite": "calls",
        "samples": options.samples,
        "frames": frames.len(),
        "opus_encode_us": {"p50": median(p50s), "p99": p99, "p99_goal": ENCODE_P99_GOAL_US},
        "sframe_ns_per_frame": median(sframe_ns),
        "raw_aes_gcm_ns_per_frame": median(raw_ns),
        "sframe_over_raw": {"median": ratio, "all": ratios, "goal": SFRAME_RATIO_GOAL},
        "meeting": {
            "participants": PARTICIPANTS,
            "secs": options.meeting_secs,
            "cpu_percent_of_one_core": cpu,
            "cpu_goal": MEETING_CPU_GOAL_PERCENT,
            "p95_capture_to_playout_ms_no_network": latency_p95,
            "frames_played": played,
        },
        "call_between_engines": engines,
        "meets_goals": p99 <= ENCODE_P99_GOAL_US && ratio <= SFRAME_RATIO_GOAL
            && cpu <= MEETING_CPU_GOAL_PERCENT
            && call_p95 <= u64::from(MOUTH_TO_EAR_P95_GOAL_MS),
    }))
}
