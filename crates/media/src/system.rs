//! The system sound card: the host's default microphone as an
//! [`AudioSource`] ([`SystemSource`]) and its default speakers as an
//! [`AudioSink`] ([`SystemSink`]), through `cpal`.
//!
//! Each opens the device at 48 kHz in its mode with the fewest channels
//! (16-bit or float samples), keeps the first channel of what it records
//! and plays each sample on every channel. The device's callback and the
//! call meet in a ring of at most 200 ms: the microphone's callback
//! pushes and [`next_frame`](AudioSource::next_frame) takes 20 ms; the
//! call writes 20 ms and the speakers' callback pulls.
//!
//! The call's own 20 ms clock ([`Paced`](crate::audio::Paced)) still paces
//! capture, so two clocks run side by side: the sound card's and the
//! call's. They drift apart slowly (a few samples a second at most), and
//! the ring absorbs it: when one side runs ahead the oldest samples are
//! dropped (an overrun), when it runs behind a frame is padded with
//! silence (an underrun). Both are counted.
//!
//! `cpal` only builds with this crate's `cpal` feature; on Linux it needs
//! the ALSA headers (`libasound2-dev`) and `pkg-config`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{ErrorKind, SampleFormat};

use crate::audio::{AudioError, AudioSink, AudioSource, FRAME_SAMPLES, Frame, SAMPLE_RATE};

/// The most a ring holds: 200 ms, ten frames. Enough to ride out a late
/// task or a large device buffer; more would only add delay to the call.
const RING_SAMPLES: usize = 10 * FRAME_SAMPLES;

/// How long [`SystemSource::open`] and [`SystemSink::open`] wait for the
/// device to start: a sound server that does not answer by then is
/// reported rather than waited on for ever.
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);

/// Locks `mutex`, even if a callback panicked while holding it.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Samples between a device callback and the call: a drop-oldest queue
/// of at most [`RING_SAMPLES`], counting what it drops and pads.
#[derive(Debug, Default)]
struct Ring {
    samples: Mutex<VecDeque<i16>>,
    /// Pushes that had to drop the oldest samples to fit.
    overruns: AtomicU64,
    /// Takes that found fewer samples than asked for.
    underruns: AtomicU64,
    /// The device's fatal error (unplugged, stream invalidated), if any.
    fault: Mutex<Option<String>>,
}

impl Ring {
    /// Appends `samples`, dropping the oldest held ones past 200 ms.
    fn push(&self, samples: impl IntoIterator<Item = i16>) {
        let mut ring = lock(&self.samples);
        let mut dropped = false;
        for sample in samples {
            if ring.len() >= RING_SAMPLES {
                ring.pop_front();
                dropped = true;
            }
            ring.push_back(sample);
        }
        drop(ring);
        if dropped {
            self.overruns.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Fills `out` with the oldest samples, and with silence past them.
    fn take_into(&self, out: &mut [i16]) {
        let mut ring = lock(&self.samples);
        let n = out.len().min(ring.len());
        for (slot, sample) in out.iter_mut().zip(ring.drain(..n)) {
            *slot = sample;
        }
        drop(ring);
        if let Some(rest) = out.get_mut(n..) {
            rest.fill(0);
        }
        if n < out.len() {
            self.underruns.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Drops the oldest samples past `keep` (counted as an overrun): a
    /// microphone whose clock runs a little fast does not build up delay.
    fn trim_to(&self, keep: usize) {
        let mut ring = lock(&self.samples);
        if ring.len() > keep {
            let extra = ring.len() - keep;
            ring.drain(..extra);
            drop(ring);
            self.overruns.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The device's fatal error, if it had one.
    fn check(&self) -> Result<(), AudioError> {
        match lock(&self.fault).as_ref() {
            Some(message) => Err(AudioError::Device(message.clone())),
            None => Ok(()),
        }
    }
}

/// A sample type the sound card may use, converted to and from 16 bits.
trait Pcm: cpal::SizedSample + Copy {
    /// To 16 bits.
    fn to_pcm16(self) -> i16;
    /// From 16 bits.
    fn from_pcm16(sample: i16) -> Self;
}

impl Pcm for i16 {
    fn to_pcm16(self) -> i16 {
        self
    }
    fn from_pcm16(sample: i16) -> Self {
        sample
    }
}

impl Pcm for f32 {
    fn to_pcm16(self) -> i16 {
        // `as` saturates; the clamp keeps full scale symmetric.
        (self.clamp(-1.0, 1.0) * f32::from(i16::MAX)) as i16
    }
    fn from_pcm16(sample: i16) -> Self {
        f32::from(sample) / 32_768.0
    }
}

/// Which way the audio goes.
#[derive(Debug, Clone, Copy)]
enum Direction {
    Input,
    Output,
}

impl Direction {
    /// As said in messages.
    fn name(self) -> &'static str {
        match self {
            Self::Input => "input",
            Self::Output => "output",
        }
    }
}

/// A device stream running on its own thread, which builds it, holds it
/// and drops it (so the stream never has to be `Send`), with the ring it
/// feeds or drains.
#[derive(Debug)]
struct Running {
    ring: Arc<Ring>,
    /// Dropping it tells the thread to drop the stream and end.
    stop: Option<SyncSender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Running {
    /// Opens the default device for `direction` and starts it.
    fn start(direction: Direction) -> Result<Self, AudioError> {
        let name = direction.name();
        let ring = Arc::new(Ring::default());
        let (ready_tx, ready_rx) = sync_channel::<Result<(), String>>(1);
        let (stop, stopped) = sync_channel::<()>(1);
        let shared = Arc::clone(&ring);
        let thread = std::thread::Builder::new()
            .name(format!("audio {name}"))
            .spawn(move || match open_stream(direction, shared) {
                Ok(stream) => {
                    let _ = ready_tx.send(Ok(()));
                    // Returns when told to stop or when the owner is gone.
                    let _ = stopped.recv();
                    drop(stream);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            })
            .map_err(|e| {
                AudioError::Device(format!("cannot start the audio {name} thread: {e}"))
            })?;
        match ready_rx.recv_timeout(OPEN_TIMEOUT) {
            Ok(Ok(())) => Ok(Self {
                ring,
                stop: Some(stop),
                thread: Some(thread),
            }),
            Ok(Err(message)) => {
                let _ = thread.join();
                Err(AudioError::Device(message))
            }
            // Still opening (or it panicked): it ends once it sees `stop` dropped.
            Err(_) => Err(AudioError::Device(format!(
                "the audio {name} device did not start within {} s",
                OPEN_TIMEOUT.as_secs()
            ))),
        }
    }

    /// Stops the stream and waits for its thread.
    fn stop(&mut self) {
        self.stop = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Opens, configures and starts the default device (on the thread that
/// will hold the stream).
fn open_stream(direction: Direction, ring: Arc<Ring>) -> Result<cpal::Stream, String> {
    let name = direction.name();
    let host = cpal::default_host();
    let device = match direction {
        Direction::Input => host.default_input_device(),
        Direction::Output => host.default_output_device(),
    }
    .ok_or_else(|| format!("no audio {name} device"))?;
    let ranges = match direction {
        Direction::Input => device
            .supported_input_configs()
            .map(|c| c.collect::<Vec<_>>()),
        Direction::Output => device
            .supported_output_configs()
            .map(|c| c.collect::<Vec<_>>()),
    }
    .map_err(|e| format!("cannot list the audio {name} device's modes: {e}"))?;
    let at_48k: Vec<cpal::SupportedStreamConfig> = ranges
        .into_iter()
        .filter_map(|range| range.try_with_sample_rate(SAMPLE_RATE))
        .collect();
    if at_48k.is_empty() {
        return Err(format!("the audio {name} device has no 48 kHz mode"));
    }
    let mode = at_48k
        .iter()
        .filter(|m| matches!(m.sample_format(), SampleFormat::I16 | SampleFormat::F32))
        .min_by_key(|m| (m.channels(), m.sample_format() != SampleFormat::I16))
        .copied()
        .ok_or_else(|| format!("the audio {name} device has no 48 kHz mode in i16 or f32"))?;
    let stream = match mode.sample_format() {
        SampleFormat::I16 => build::<i16>(&device, direction, mode.config(), ring),
        _ => build::<f32>(&device, direction, mode.config(), ring),
    }
    .map_err(|e| format!("cannot open the audio {name} stream: {e}"))?;
    stream
        .play()
        .map_err(|e| format!("cannot start the audio {name} stream: {e}"))?;
    Ok(stream)
}

/// Builds the stream: input keeps the first channel of each frame, output
/// plays each sample on every channel.
fn build<T: Pcm>(
    device: &cpal::Device,
    direction: Direction,
    config: cpal::StreamConfig,
    ring: Arc<Ring>,
) -> Result<cpal::Stream, cpal::Error> {
    let channels = usize::from(config.channels).max(1);
    let faults = Arc::clone(&ring);
    let on_error = move |error: cpal::Error| {
        // Xruns and the like show in the ring's counts; only a lost device ends it.
        let lost = matches!(
            error.kind(),
            ErrorKind::DeviceNotAvailable | ErrorKind::StreamInvalidated
        );
        if lost {
            let name = direction.name();
            *lock(&faults.fault) = Some(format!("the audio {name} device failed: {error}"));
        }
    };
    match direction {
        Direction::Input => device.build_input_stream(
            config,
            move |data: &[T], _: &cpal::InputCallbackInfo| {
                let firsts = data.chunks(channels).filter_map(|f| f.first());
                ring.push(firsts.map(|&s| s.to_pcm16()));
            },
            on_error,
            None,
        ),
        Direction::Output => {
            let mut mono: Vec<i16> = Vec::new();
            device.build_output_stream(
                config,
                move |data: &mut [T], _: &cpal::OutputCallbackInfo| {
                    mono.resize(data.len().div_ceil(channels), 0);
                    ring.take_into(&mut mono);
                    for (frame, sample) in data.chunks_mut(channels).zip(&mono) {
                        frame.fill(T::from_pcm16(*sample));
                    }
                },
                on_error,
                None,
            )
        }
    }
}

/// The default microphone, 20 ms at a time. It never ends: when the
/// device has fallen behind, the frame is padded with silence.
#[derive(Debug)]
pub struct SystemSource {
    running: Running,
}

impl SystemSource {
    /// Opens and starts the host's default input device at 48 kHz.
    pub fn open() -> Result<Self, AudioError> {
        Ok(Self {
            running: Running::start(Direction::Input)?,
        })
    }

    /// How many times the call fell behind and the oldest samples were dropped.
    pub fn overruns(&self) -> u64 {
        self.running.ring.overruns.load(Ordering::Relaxed)
    }

    /// How many frames were padded with silence (the device fell behind).
    pub fn underruns(&self) -> u64 {
        self.running.ring.underruns.load(Ordering::Relaxed)
    }
}

impl AudioSource for SystemSource {
    fn next_frame(&mut self) -> Result<Option<Frame>, AudioError> {
        self.running.ring.check()?;
        let mut frame = [0i16; FRAME_SAMPLES];
        self.running.ring.take_into(&mut frame);
        // At most two frames wait behind this one (40 ms), however the
        // two clocks drift.
        self.running.ring.trim_to(2 * FRAME_SAMPLES);
        Ok(Some(frame))
    }
}

/// The default speakers, fed 20 ms at a time; silence when nothing is
/// written.
#[derive(Debug)]
pub struct SystemSink {
    running: Running,
}

impl SystemSink {
    /// Opens and starts the host's default output device at 48 kHz.
    pub fn open() -> Result<Self, AudioError> {
        Ok(Self {
            running: Running::start(Direction::Output)?,
        })
    }

    /// How many writes had to drop the oldest samples (the device fell behind).
    pub fn overruns(&self) -> u64 {
        self.running.ring.overruns.load(Ordering::Relaxed)
    }

    /// How many device callbacks found too few samples and played silence.
    pub fn underruns(&self) -> u64 {
        self.running.ring.underruns.load(Ordering::Relaxed)
    }
}

impl AudioSink for SystemSink {
    fn write_frame(&mut self, frame: &Frame) -> Result<(), AudioError> {
        self.running.ring.check()?;
        if self.running.thread.is_none() {
            return Err(AudioError::Device("the audio output is finished".into()));
        }
        self.running.ring.push(frame.iter().copied());
        Ok(())
    }

    /// Stops the device (what is still queued, at most 200 ms, is not played).
    fn finish(&mut self) -> Result<(), AudioError> {
        self.running.stop();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take(ring: &Ring, n: usize) -> Vec<i16> {
        let mut out = vec![-1i16; n];
        ring.take_into(&mut out);
        out
    }

    #[test]
    fn pushing_past_200_ms_drops_the_oldest() {
        let ring = Ring::default();
        ring.push(0i16..9_000);
        assert_eq!(ring.overruns.load(Ordering::Relaxed), 0);
        ring.push(9_000i16..9_610);
        assert_eq!(ring.overruns.load(Ordering::Relaxed), 1);
        let held = take(&ring, RING_SAMPLES);
        assert_eq!(held, (10i16..9_610).collect::<Vec<_>>());
        assert_eq!(ring.underruns.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_short_take_is_padded_with_silence_and_counted() {
        let ring = Ring::default();
        ring.push(1i16..=100);
        let frame = take(&ring, FRAME_SAMPLES);
        assert_eq!(&frame[..100], (1i16..=100).collect::<Vec<_>>().as_slice());
        assert!(frame[100..].iter().all(|&s| s == 0));
        assert_eq!(ring.underruns.load(Ordering::Relaxed), 1);
        assert!(take(&ring, FRAME_SAMPLES).iter().all(|&s| s == 0));
        assert_eq!(ring.underruns.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn order_is_kept_across_pushes_and_takes() {
        let ring = Ring::default();
        ring.push(0i16..500);
        ring.push(500i16..1_500);
        assert_eq!(take(&ring, FRAME_SAMPLES), (0i16..960).collect::<Vec<_>>());
        assert_eq!(take(&ring, 540), (960i16..1_500).collect::<Vec<_>>());
        assert_eq!(ring.underruns.load(Ordering::Relaxed), 0);
        assert_eq!(ring.overruns.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_trim_keeps_the_newest_and_counts_once() {
        let ring = Ring::default();
        ring.push(0i16..100);
        ring.trim_to(10);
        assert_eq!(take(&ring, 10), (90i16..100).collect::<Vec<_>>());
        assert_eq!(ring.overruns.load(Ordering::Relaxed), 1);
        ring.trim_to(10);
        assert_eq!(ring.overruns.load(Ordering::Relaxed), 1);
    }
}
