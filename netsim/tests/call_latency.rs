//! A call between two engines over a modelled link of 50 ± 20 ms each way
//! (30 ms, plus a uniform draw of 0–40 ms for each write, delivered in
//! order as a byte stream is): the callee hears the caller within 150 ms
//! mouth to ear (p95), and where the chirps in the caller's audio land in
//! what the callee wrote agrees with the frames' capture timestamps
//! within 5 ms. Real libp2p (Noise, yamux, the media stream) over the
//! netsim link model (`safemeet_netsim::transport`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::f64::consts::TAU;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

use safemeet_engine::{CallAudio, CallState, CallView, Handle};
use safemeet_netsim::link::LinkProfile;
use safemeet_netsim::transport::{Hub, addr_of};
use safemeet_proto::clock::{Clock, SystemClock};
use safemeet_test_utils::speech::{self, write_wav};
use safemeet_test_utils::{spawn_nodes_with, wait_until};

const RATE: usize = 48_000;
/// A chirp each second, 50 ms long, starting 250 ms into the second.
const CHIRP_LEN: usize = RATE / 20;
const CHIRP_AT: usize = RATE / 4;
/// Seconds of the caller's audio.
const SECONDS: usize = 20;

/// A 50 ms sweep from 400 Hz to 3.4 kHz under a Hann window.
fn chirp() -> Vec<f64> {
    (0..CHIRP_LEN)
        .map(|i| {
            let t = i as f64 / RATE as f64;
            let span = CHIRP_LEN as f64 / RATE as f64;
            let phase = TAU * (400.0 * t + 3000.0 / (2.0 * span) * t * t);
            let window = 0.5 - 0.5 * (TAU * i as f64 / CHIRP_LEN as f64).cos();
            phase.sin() * window
        })
        .collect()
}

/// Where the chirp template matches `signal` best within `from..to`.
fn best_match(signal: &[f64], template: &[f64], from: usize, to: usize) -> usize {
    let to = to.min(signal.len().saturating_sub(template.len()));
    (from..to)
        .max_by(|a, b| {
            let score =
                |at: usize| -> f64 { template.iter().zip(&signal[at..]).map(|(t, s)| t * s).sum() };
            score(*a).total_cmp(&score(*b))
        })
        .unwrap_or(from)
}

fn read_wav(path: &Path) -> Vec<f64> {
    speech::read_wav(path).into_iter().map(f64::from).collect()
}

async fn call_of(engine: &Handle) -> Option<CallView> {
    engine.calls().await.unwrap().into_iter().next()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_a_50_20_ms_link_the_callee_hears_within_150_ms_and_chirps_agree_with_timestamps() {
    let hub = Hub::new(2, 20, SystemClock.instant(), |_, _| LinkProfile {
        latency_ms: 30.0,
        jitter_ms: 40.0,
        ..LinkProfile::default()
    });
    let next = AtomicU32::new(0);
    let nodes = spawn_nodes_with(2, |config| {
        let i = next.fetch_add(1, Ordering::Relaxed);
        config.net.listen = vec![addr_of(i)];
        config.net.transport = Some(hub.transport_for(i));
    })
    .await;
    let (alice, bob) = (&nodes[0].1, &nodes[1].1);

    let dir = tempfile::tempdir().unwrap();
    let template = chirp();
    let mut sent = vec![0i16; SECONDS * RATE];
    for second in 0..SECONDS {
        let at = second * RATE + CHIRP_AT;
        for (i, s) in template.iter().enumerate() {
            sent[at + i] = (s * 12_000.0) as i16;
        }
    }
    let (wav_in, wav_out) = (dir.path().join("in.wav"), dir.path().join("out.wav"));
    write_wav(&wav_in, &sent);

    alice
        .call(
            bob.user_id(),
            CallAudio {
                wav_in: Some(wav_in),
                ..CallAudio::default()
            },
        )
        .await
        .unwrap();
    wait_until(
        "bob's device rings",
        || call_of(bob),
        |c| c.as_ref().is_some_and(|c| c.state == CallState::Ringing),
    )
    .await;
    bob.call_accept(CallAudio {
        wav_out: Some(wav_out.clone()),
        ..CallAudio::default()
    })
    .await
    .unwrap();
    // The whole file, heard.
    let heard = wait_until(
        "bob hears the whole file",
        || call_of(bob),
        |c| {
            c.as_ref()
                .is_some_and(|c| c.stats.played + c.stats.lost >= (SECONDS * 50) as u64)
        },
    )
    .await
    .unwrap();
    let said = call_of(alice).await.unwrap();
    bob.call_hangup().await.unwrap();
    wait_until(
        "the call ends on both sides",
        || async { (call_of(alice).await, call_of(bob).await) },
        |(a, b)| {
            [a, b]
                .iter()
                .all(|c| c.as_ref().is_some_and(|c| c.state == CallState::Ended))
        },
    )
    .await;

    let s = heard.stats;
    eprintln!("over 50 ± 20 ms: {s:?}");
    let (p50, p95) = (
        s.mouth_to_ear_p50_ms.unwrap(),
        s.mouth_to_ear_p95_ms.unwrap(),
    );
    assert!(p95 <= 150, "mouth-to-ear p95 {p95} ms: {s:?}");
    assert!(s.late * 100 <= s.received, "late drops over 1 %: {s:?}");

    // Each chirp of the last 8 s: when it was taken (the caller's clock:
    // the first sample sent, plus its place in the file) and when it was
    // played (the callee's: the first sample heard, plus its place in what
    // it wrote). The median of those delays is the timestamps' median.
    let captured_us = said.stats.capture_started_us.unwrap() as f64;
    let played_us = s.playout_started_us.unwrap() as f64;
    let out = read_wav(&wav_out);
    let mut delays = Vec::new();
    for second in SECONDS - 8..SECONDS {
        let at_in = second * RATE + CHIRP_AT;
        let taken_ms = (captured_us + at_in as f64 * 1e6 / RATE as f64) / 1000.0;
        // Where it should be, give or take 150 ms.
        let guess = (taken_ms + f64::from(p50) - played_us / 1000.0) * RATE as f64 / 1000.0;
        let guess = guess.max(0.0) as usize;
        let window = RATE * 150 / 1000;
        let at_out = best_match(
            &out,
            &template,
            guess.saturating_sub(window),
            guess + window,
        );
        let heard_ms = (played_us + at_out as f64 * 1e6 / RATE as f64) / 1000.0;
        delays.push(heard_ms - taken_ms);
    }
    delays.sort_by(f64::total_cmp);
    let median = delays[delays.len() / 2];
    eprintln!("chirp delays, ms: {delays:.1?}; the timestamps' median {p50} ms");
    assert!(
        (median - f64::from(p50)).abs() <= 5.0,
        "chirps say {median:.1} ms, timestamps {p50} ms ({delays:.1?})"
    );
}
