//! The media side of calls and meetings: audio in and out ([`audio`]),
//! the speech codec ([`codec`]), frames sealed end to end with SFrame
//! ([`sframe`]) under each sending device's own keys ([`keys`]), moved
//! over a stream per sender and receiver with a short drop-oldest queue
//! ([`transport`]), padded to fixed size classes ([`payload`]), and the
//! receiving side's jitter buffer ([`jitter`]) and mixer ([`mix`]).
//!
//! Nothing here opens a socket or reads the clock: time comes in as
//! arguments (the jitter buffer) or a tokio interval ([`audio::Paced`]).

pub mod audio;
pub mod codec;
pub mod jitter;
pub mod keys;
pub mod mix;
pub mod payload;
pub mod sframe;
#[cfg(feature = "cpal")]
pub mod system;
pub mod transport;
