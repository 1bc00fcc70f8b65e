//! Calls in the API: `call`, `call.accept`, `call.decline`,
//! `call.hangup` and `call.status` (answered with the engine's
//! `CallView`: state, outcome and live counts).

use std::path::PathBuf;

use safemeet_engine::CallAudio;

use crate::error::Error;

/// The audio files of a call: absolute paths (the daemon's working
/// folder is not the caller's).
pub(crate) fn audio(wav_in: Option<String>, wav_out: Option<String>) -> Result<CallAudio, Error> {
    let path = |p: Option<String>, what: &str| -> Result<Option<PathBuf>, Error> {
        match p {
            None => Ok(None),
            Some(p) if PathBuf::from(&p).is_absolute() => Ok(Some(PathBuf::from(p))),
            Some(_) => Err(Error::Engine(safemeet_engine::Error::InvalidInput(
                format!("the {what} file's path must be absolute"),
            ))),
        }
    };
    Ok(CallAudio {
        wav_in: path(wav_in, "audio input")?,
        wav_out: path(wav_out, "audio output")?,
        wav_each: None,
    })
}
