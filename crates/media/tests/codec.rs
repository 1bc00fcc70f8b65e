//! Audio in and out, and Opus: WAV files go through frame by frame
//! unchanged (and another format is refused by name); speech-like sound
//! comes back through the codec close to what went in, at about 32 kbit/s;
//! a lost frame is rebuilt from the next one's FEC or concealed; and two
//! decoders given the same packets give the same samples.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use safemeet_media::audio::{
    AudioSink, AudioSource, FRAME_SAMPLES, Frame, Paced, SAMPLE_RATE, Samples, WavSink, WavSource,
};
use safemeet_media::codec::{Codec, OpusCodec};

/// Two seconds of a voiced sound: a gliding fundamental with harmonics,
/// switched on and off like syllables.
fn speechlike(seconds: f64) -> Vec<i16> {
    let n = (f64::from(SAMPLE_RATE) * seconds) as usize;
    let mut phase = 0.0f64;
    (0..n)
        .map(|i| {
            let t = i as f64 / f64::from(SAMPLE_RATE);
            let f0 = 140.0 + 40.0 * (2.0 * std::f64::consts::PI * 1.5 * t).sin();
            phase += 2.0 * std::f64::consts::PI * f0 / f64::from(SAMPLE_RATE);
            let voice: f64 = (1..=8).map(|h| (h as f64 * phase).sin() / h as f64).sum();
            let syllable = (2.0 * std::f64::consts::PI * 3.0 * t).sin().max(0.0);
            (voice * syllable * 6000.0) as i16
        })
        .collect()
}

fn frames(samples: &[i16]) -> Vec<Frame> {
    let mut source = Samples::new(samples.to_vec());
    std::iter::from_fn(|| source.next_frame().unwrap()).collect()
}

/// The best normalised correlation of `b` against `a` over lags 0..max.
fn best_correlation(a: &[i16], b: &[i16], max_lag: usize) -> (usize, f64) {
    (0..max_lag)
        .map(|lag| {
            let n = a.len().min(b.len() - lag);
            let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
            for i in 0..n {
                let (x, y) = (f64::from(a[i]), f64::from(b[i + lag]));
                ab += x * y;
                aa += x * x;
                bb += y * y;
            }
            (lag, ab / (aa.sqrt() * bb.sqrt()).max(1.0))
        })
        .fold((0, f64::MIN), |best, c| if c.1 > best.1 { c } else { best })
}

#[test]
fn wav_files_go_through_unchanged_and_other_formats_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("voice.wav");
    let samples = speechlike(0.5);
    let mut sink = WavSink::create(&path).unwrap();
    for frame in frames(&samples) {
        sink.write_frame(&frame).unwrap();
    }
    sink.finish().unwrap();
    let mut source = WavSource::open(&path).unwrap();
    assert_eq!(source.frames(), samples.len().div_ceil(FRAME_SAMPLES));
    let mut back = Vec::new();
    while let Some(frame) = source.next_frame().unwrap() {
        back.extend_from_slice(&frame);
    }
    assert_eq!(&back[..samples.len()], &samples[..]);

    let stereo = dir.path().join("stereo.wav");
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: 44_100,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&stereo, spec).unwrap();
    w.write_sample(0i16).unwrap();
    w.write_sample(0i16).unwrap();
    w.finalize().unwrap();
    let err = WavSource::open(&stereo).unwrap_err().to_string();
    assert!(
        err.contains("48 kHz mono") && err.contains("44100 Hz, 2 channels"),
        "{err}"
    );
    let err = WavSource::open(&dir.path().join("missing.wav"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing.wav"), "{err}");
}

#[tokio::test(start_paused = true)]
#[allow(clippy::disallowed_methods)] // the paused tokio clock is what is measured
async fn a_paced_source_gives_a_frame_every_20_ms() {
    let mut paced = Paced::new(Samples::new(vec![1; FRAME_SAMPLES * 5]), true);
    let start = tokio::time::Instant::now();
    let mut n = 0;
    while paced.next().await.unwrap().is_some() {
        n += 1;
    }
    assert_eq!(n, 5);
    // Six ticks (the last finds the end), the first at once.
    assert_eq!(start.elapsed(), std::time::Duration::from_millis(100));
    let mut unpaced = Paced::new(Samples::new(vec![1; FRAME_SAMPLES * 5]), false);
    let start = tokio::time::Instant::now();
    while unpaced.next().await.unwrap().is_some() {}
    assert_eq!(start.elapsed(), std::time::Duration::ZERO);
}

#[test]
fn speech_comes_back_through_opus_at_about_32_kbit_s() {
    let samples = speechlike(2.0);
    let mut codec = OpusCodec::new().unwrap();
    let mut bytes = 0;
    let mut out = Vec::new();
    for frame in frames(&samples) {
        let packet = codec.encode(&frame).unwrap();
        bytes += packet.len();
        out.extend_from_slice(&codec.decode(&packet).unwrap());
    }
    let kbps = bytes as f64 * 8.0 / 2.0 / 1000.0;
    assert!((16.0..=40.0).contains(&kbps), "{kbps} kbit/s");
    // The codec delays the sound by its look-ahead (6.5 ms: 312 samples),
    // and keeps its shape (a waveform measure: Opus codes what is heard,
    // not the waveform, so this is a sanity floor; 0.87 here; how good it
    // sounds is PESQ's to judge).
    let (lag, correlation) = best_correlation(&samples, &out, 1000);
    assert!((250..400).contains(&lag), "lag {lag}");
    assert!(correlation > 0.8, "correlation {correlation} at lag {lag}");
}

#[test]
fn a_lost_frame_is_rebuilt_from_fec_or_concealed_and_decoding_is_deterministic() {
    let samples = speechlike(1.0);
    let mut sender = OpusCodec::new().unwrap();
    sender.set_expected_loss(10).unwrap();
    let packets: Vec<Vec<u8>> = frames(&samples)
        .iter()
        .map(|f| sender.encode(f).unwrap())
        .collect();
    let decode_all = |lost: &[usize], fec: bool| {
        let mut receiver = OpusCodec::new().unwrap();
        let mut out = Vec::new();
        for (i, packet) in packets.iter().enumerate() {
            let frame = if lost.contains(&i) {
                match packets.get(i + 1) {
                    Some(next) if fec => receiver.decode_fec(next).unwrap(),
                    _ => receiver.conceal().unwrap(),
                }
            } else {
                receiver.decode(packet).unwrap()
            };
            out.extend_from_slice(&frame);
        }
        out
    };
    let whole = decode_all(&[], false);
    assert_eq!(
        whole,
        decode_all(&[], false),
        "the same packets, the same samples"
    );
    let lost = [10, 20, 30];
    let with_fec = decode_all(&lost, true);
    let concealed = decode_all(&lost, false);
    // Each fills its gap with sound (not silence), and FEC comes closer to
    // what was lost than concealment does.
    let error = |out: &[i16]| -> f64 {
        lost.iter()
            .flat_map(|&i| i * FRAME_SAMPLES..(i + 1) * FRAME_SAMPLES)
            .map(|s| (f64::from(out[s]) - f64::from(whole[s])).powi(2))
            .sum()
    };
    for out in [&with_fec, &concealed] {
        let energy: f64 = (10 * FRAME_SAMPLES..11 * FRAME_SAMPLES)
            .map(|s| f64::from(out[s]).powi(2))
            .sum();
        assert!(energy > 0.0);
    }
    assert!(
        error(&with_fec) < error(&concealed),
        "fec {} concealment {}",
        error(&with_fec),
        error(&concealed)
    );
    // Nonsense is refused, not decoded.
    let mut codec = OpusCodec::new().unwrap();
    assert!(codec.decode(&[]).is_err());
    assert!(codec.decode(&vec![0xff; 2000]).is_err());
}
