//! Where a call's audio comes from and goes: 48 kHz mono, in frames of
//! 20 ms (960 samples). [`AudioSource`] and [`AudioSink`] are the seams;
//! the WAV ones ([`WavSource`], [`WavSink`]) need no sound card, and
//! [`Paced`] hands a source's frames out on a 20 ms clock (or as fast as
//! they are asked for, for tests).

use std::path::Path;
use std::time::Duration;

/// Samples per second.
pub const SAMPLE_RATE: u32 = 48_000;
/// Samples per frame: 20 ms.
pub const FRAME_SAMPLES: usize = 960;
/// A frame's length in time.
pub const FRAME_TIME: Duration = Duration::from_millis(20);

/// One 20 ms frame of 16-bit samples.
pub type Frame = [i16; FRAME_SAMPLES];

/// Why audio could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    /// A WAV file of another kind than 48 kHz, mono, 16-bit PCM.
    #[error("{0}: the audio must be 48 kHz mono 16-bit PCM WAV (found {1})")]
    Format(String, String),
    /// The file could not be read or written.
    #[error("{0}: {1}")]
    Io(String, String),
    /// The sound card could not be opened, or failed.
    #[error("{0}")]
    Device(String),
}

/// Audio to send, a frame at a time.
pub trait AudioSource: Send {
    /// The next frame; `None` at the end. A last frame shorter than 20 ms
    /// is filled with silence.
    fn next_frame(&mut self) -> Result<Option<Frame>, AudioError>;
}

/// Audio received, a frame at a time.
pub trait AudioSink: Send {
    /// Plays (or keeps) one frame.
    fn write_frame(&mut self, frame: &Frame) -> Result<(), AudioError>;
    /// Ends it (a file is finished and synced).
    fn finish(&mut self) -> Result<(), AudioError>;
}

/// A 48 kHz mono 16-bit WAV file, read a frame at a time.
pub struct WavSource {
    path: String,
    reader: hound::WavReader<std::io::BufReader<std::fs::File>>,
}

impl std::fmt::Debug for WavSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WavSource")
            .field("path", &self.path)
            .finish()
    }
}

fn wav_spec() -> hound::WavSpec {
    hound::WavSpec {
        channels: 1,
        sample_rate: SAMPLE_RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    }
}

impl WavSource {
    /// Opens `path`, refusing any other format than 48 kHz mono 16-bit.
    pub fn open(path: &Path) -> Result<Self, AudioError> {
        let name = path.display().to_string();
        let reader = hound::WavReader::open(path)
            .map_err(|e| AudioError::Io(name.clone(), e.to_string()))?;
        let spec = reader.spec();
        if spec != wav_spec() {
            return Err(AudioError::Format(
                name,
                format!(
                    "{} Hz, {} channels, {}-bit {:?}",
                    spec.sample_rate, spec.channels, spec.bits_per_sample, spec.sample_format
                ),
            ));
        }
        Ok(Self { path: name, reader })
    }

    /// Its length in frames (the last one may be partly silence).
    pub fn frames(&self) -> usize {
        (self.reader.len() as usize).div_ceil(FRAME_SAMPLES)
    }
}

impl AudioSource for WavSource {
    fn next_frame(&mut self) -> Result<Option<Frame>, AudioError> {
        let mut frame = [0i16; FRAME_SAMPLES];
        let mut n = 0;
        for (slot, sample) in frame.iter_mut().zip(self.reader.samples::<i16>()) {
            *slot = sample.map_err(|e| AudioError::Io(self.path.clone(), e.to_string()))?;
            n += 1;
        }
        Ok((n > 0).then_some(frame))
    }
}

/// A 48 kHz mono 16-bit WAV file, written a frame at a time.
pub struct WavSink {
    path: String,
    writer: Option<hound::WavWriter<std::io::BufWriter<std::fs::File>>>,
}

impl std::fmt::Debug for WavSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WavSink").field("path", &self.path).finish()
    }
}

impl WavSink {
    /// Creates (or replaces) `path`.
    pub fn create(path: &Path) -> Result<Self, AudioError> {
        let name = path.display().to_string();
        let writer = hound::WavWriter::create(path, wav_spec())
            .map_err(|e| AudioError::Io(name.clone(), e.to_string()))?;
        Ok(Self {
            path: name,
            writer: Some(writer),
        })
    }
}

impl AudioSink for WavSink {
    fn write_frame(&mut self, frame: &Frame) -> Result<(), AudioError> {
        let Some(writer) = self.writer.as_mut() else {
            return Err(AudioError::Io(self.path.clone(), "already finished".into()));
        };
        let mut samples = writer.get_i16_writer(FRAME_SAMPLES as u32);
        for s in frame {
            samples.write_sample(*s);
        }
        samples
            .flush()
            .map_err(|e| AudioError::Io(self.path.clone(), e.to_string()))
    }

    fn finish(&mut self) -> Result<(), AudioError> {
        match self.writer.take() {
            Some(writer) => writer
                .finalize()
                .map_err(|e| AudioError::Io(self.path.clone(), e.to_string())),
            None => Ok(()),
        }
    }
}

/// A source whose frames come out on a 20 ms clock, as a microphone's do
/// (or, unpaced, as fast as they are asked for).
///
/// Like a sound card's, the clock does not slip: frames whose ticks were
/// missed (the task was held up) come at once after, each with the time it
/// was due ([`next_at`](Self::next_at)), so the audio's timeline stays
/// the wall clock's.
pub struct Paced<S> {
    source: S,
    clock: Option<tokio::time::Interval>,
}

impl<S: AudioSource> Paced<S> {
    /// Frames of `source` every 20 ms (`paced`), or at once.
    pub fn new(source: S, paced: bool) -> Self {
        let clock = paced.then(|| {
            let mut clock = tokio::time::interval(FRAME_TIME);
            clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            clock
        });
        Self { source, clock }
    }

    /// The next frame, on its tick.
    pub async fn next(&mut self) -> Result<Option<Frame>, AudioError> {
        Ok(self.next_at().await?.0)
    }

    /// The next frame, and when its tick was due (`None` unpaced).
    pub async fn next_at(
        &mut self,
    ) -> Result<(Option<Frame>, Option<std::time::Instant>), AudioError> {
        let due = match &mut self.clock {
            Some(clock) => Some(clock.tick().await.into_std()),
            None => None,
        };
        Ok((self.source.next_frame()?, due))
    }
}

/// A source of frames held in memory (tests, generated tones).
#[derive(Debug, Clone)]
pub struct Samples {
    samples: Vec<i16>,
    at: usize,
}

impl Samples {
    /// Frames of `samples`, the last filled with silence.
    pub fn new(samples: Vec<i16>) -> Self {
        Self { samples, at: 0 }
    }
}

impl AudioSource for Samples {
    fn next_frame(&mut self) -> Result<Option<Frame>, AudioError> {
        if self.at >= self.samples.len() {
            return Ok(None);
        }
        let mut frame = [0i16; FRAME_SAMPLES];
        let end = (self.at + FRAME_SAMPLES).min(self.samples.len());
        frame[..end - self.at].copy_from_slice(&self.samples[self.at..end]);
        self.at = end;
        Ok(Some(frame))
    }
}

/// Silence, for ever (a call with nothing to send: the other side still
/// hears a steady stream, and nothing of when this one would speak).
#[derive(Debug, Clone, Copy, Default)]
pub struct Silence;

impl AudioSource for Silence {
    fn next_frame(&mut self) -> Result<Option<Frame>, AudioError> {
        Ok(Some([0i16; FRAME_SAMPLES]))
    }
}

/// A sink that keeps nothing (a call with no output chosen).
#[derive(Debug, Clone, Copy, Default)]
pub struct Discard;

impl AudioSink for Discard {
    fn write_frame(&mut self, _frame: &Frame) -> Result<(), AudioError> {
        Ok(())
    }
    fn finish(&mut self) -> Result<(), AudioError> {
        Ok(())
    }
}

impl<T: AudioSource + ?Sized> AudioSource for Box<T> {
    fn next_frame(&mut self) -> Result<Option<Frame>, AudioError> {
        (**self).next_frame()
    }
}

impl<T: AudioSink + ?Sized> AudioSink for Box<T> {
    fn write_frame(&mut self, frame: &Frame) -> Result<(), AudioError> {
        (**self).write_frame(frame)
    }
    fn finish(&mut self) -> Result<(), AudioError> {
        (**self).finish()
    }
}
