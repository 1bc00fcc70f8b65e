//! Speech coding: [`Codec`] is the seam, [`OpusCodec`] the one used —
//! Opus at 48 kHz mono, 20 ms frames, VoIP mode, 32 kbit/s, complexity
//! 10, in-band forward error correction on, tuned to the loss the
//! receivers report.

use crate::audio::{FRAME_SAMPLES, Frame, SAMPLE_RATE};

/// The bitrate, in bits per second.
pub const BITRATE: i32 = 32_000;
/// The encoder's complexity (0–10).
pub const COMPLEXITY: i32 = 10;
/// The largest packet a frame encodes to (Opus's own limit).
pub const MAX_PACKET_BYTES: usize = 1275;

/// Why a frame was not coded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("opus: {0}")]
pub struct CodecError(String);

/// An audio codec for 20 ms frames.
pub trait Codec: Send {
    /// Encodes a frame; its packet.
    fn encode(&mut self, frame: &Frame) -> Result<Vec<u8>, CodecError>;
    /// Decodes a packet into a frame.
    fn decode(&mut self, packet: &[u8]) -> Result<Frame, CodecError>;
    /// Rebuilds the frame before `next` (which was lost) from the forward
    /// error correction `next` carries.
    fn decode_fec(&mut self, next: &[u8]) -> Result<Frame, CodecError>;
    /// Conceals a lost frame.
    fn conceal(&mut self) -> Result<Frame, CodecError>;
    /// The loss the receivers report, in percent (the encoder spends more
    /// on forward error correction as it grows).
    fn set_expected_loss(&mut self, percent: u8) -> Result<(), CodecError>;
    /// How much later a sample comes out of the decoder than it went into
    /// the encoder (the encoder's look-ahead), µs: part of mouth-to-ear.
    fn delay_us(&mut self) -> Result<u64, CodecError>;
}

/// Opus, through libopus.
pub struct OpusCodec {
    encoder: opus::Encoder,
    decoder: opus::Decoder,
}

impl std::fmt::Debug for OpusCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusCodec").finish_non_exhaustive()
    }
}

fn err(e: opus::Error) -> CodecError {
    CodecError(e.to_string())
}

impl OpusCodec {
    /// An encoder and decoder with the settings above.
    pub fn new() -> Result<Self, CodecError> {
        let mut encoder =
            opus::Encoder::new(SAMPLE_RATE, opus::Channels::Mono, opus::Application::Voip)
                .map_err(err)?;
        encoder
            .set_bitrate(opus::Bitrate::Bits(BITRATE))
            .map_err(err)?;
        encoder.set_complexity(COMPLEXITY).map_err(err)?;
        encoder.set_inband_fec(true).map_err(err)?;
        let decoder = opus::Decoder::new(SAMPLE_RATE, opus::Channels::Mono).map_err(err)?;
        Ok(Self { encoder, decoder })
    }

    fn decode_into(&mut self, packet: &[u8], fec: bool) -> Result<Frame, CodecError> {
        let mut frame = [0i16; FRAME_SAMPLES];
        let n = self.decoder.decode(packet, &mut frame, fec).map_err(err)?;
        if n != FRAME_SAMPLES {
            return Err(CodecError(format!(
                "a packet of {n} samples where a frame has {FRAME_SAMPLES}"
            )));
        }
        Ok(frame)
    }
}

impl Codec for OpusCodec {
    fn encode(&mut self, frame: &Frame) -> Result<Vec<u8>, CodecError> {
        let mut out = vec![0u8; MAX_PACKET_BYTES];
        let n = self.encoder.encode(frame, &mut out).map_err(err)?;
        out.truncate(n);
        Ok(out)
    }

    fn decode(&mut self, packet: &[u8]) -> Result<Frame, CodecError> {
        if packet.is_empty() || packet.len() > MAX_PACKET_BYTES {
            return Err(CodecError(format!("a packet of {} bytes", packet.len())));
        }
        self.decode_into(packet, false)
    }

    fn decode_fec(&mut self, next: &[u8]) -> Result<Frame, CodecError> {
        if next.is_empty() || next.len() > MAX_PACKET_BYTES {
            return Err(CodecError(format!("a packet of {} bytes", next.len())));
        }
        self.decode_into(next, true)
    }

    fn conceal(&mut self) -> Result<Frame, CodecError> {
        self.decode_into(&[], false)
    }

    fn set_expected_loss(&mut self, percent: u8) -> Result<(), CodecError> {
        self.encoder
            .set_packet_loss_perc(i32::from(percent.min(100)))
            .map_err(err)
    }

    fn delay_us(&mut self) -> Result<u64, CodecError> {
        let samples = self.encoder.get_lookahead().map_err(err)?;
        let samples =
            u64::try_from(samples).map_err(|_| CodecError("a negative look-ahead".into()))?;
        Ok(samples * 1_000_000 / u64::from(SAMPLE_RATE))
    }
}
