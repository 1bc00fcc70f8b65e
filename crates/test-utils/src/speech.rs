//! Speech for call tests, and how good it sounds after: a fixture made
//! with espeak-ng and sox (nothing is downloaded), and PESQ-WB (ITU-T
//! P.862.2) and STOI scores from Python's `pesq` and `pystoi` (used by
//! tests only, never shipped). Needs `espeak-ng`, `sox` and a Python with
//! `pesq`, `pystoi`, `numpy` and `scipy` (`SAFEMEET_PYTHON`, else
//! `python3`); `.ci/run` installs them.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Harvard sentences (IEEE 1969), read by espeak-ng.
pub const TEXT: &str = "The birch canoe slid on the smooth planks. Glue the sheet to the dark \
    blue background. It is easy to tell the depth of a well. These days a chicken leg is a \
    rare dish. Rice is often served in round bowls. The juice of lemons makes fine punch.";

fn run(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("{what}: {e} (install espeak-ng and sox: apt-get install espeak-ng sox)")
    });
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The speech fixture in `dir`: [`TEXT`] at 48 kHz mono 16-bit, the same
/// bytes every run (no dither).
pub fn fixture(dir: &Path) -> PathBuf {
    let raw = dir.join("speech-22k.wav");
    let speech = dir.join("speech.wav");
    run(
        Command::new("espeak-ng")
            .args(["-v", "en-us", "-s", "150", "-w"])
            .arg(&raw)
            .arg(TEXT),
        "espeak-ng",
    );
    run(
        Command::new("sox")
            .arg("-D")
            .arg(&raw)
            .args(["-r", "48000", "-c", "1", "-b", "16"])
            .arg(&speech)
            .args(["rate", "-v"]),
        "sox",
    );
    speech
}

fn python(script: &str, args: &[&Path]) -> String {
    let python = std::env::var("SAFEMEET_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(&python)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{python}: {e}"));
    assert!(
        out.status.success(),
        "scoring failed (a Python with pesq, pystoi, numpy and scipy is needed: \
         set SAFEMEET_PYTHON): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn number(text: &str, key: &str) -> f64 {
    text.split(&format!("\"{key}\": "))
        .nth(1)
        .and_then(|rest| rest.split([',', '}']).next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {text}"))
}

/// PESQ-WB and STOI of `degraded` against `reference` (both 48 kHz, lined
/// up; scored at 16 kHz over their common length).
pub fn score(reference: &Path, degraded: &Path) -> (f64, f64) {
    let script = r#"
import json, sys
import numpy as np
from scipy.io import wavfile
from scipy.signal import resample_poly
from pesq import pesq
from pystoi import stoi
_, ref = wavfile.read(sys.argv[1])
_, deg = wavfile.read(sys.argv[2])
n = min(len(ref), len(deg))
ref = resample_poly(ref[:n].astype(np.float64), 1, 3)
deg = resample_poly(deg[:n].astype(np.float64), 1, 3)
print(json.dumps({"pesq": pesq(16000, ref, deg, "wb"), "stoi": stoi(ref, deg, 16000)}))
"#;
    let out = python(script, &[reference, degraded]);
    (number(&out, "pesq"), number(&out, "stoi"))
}

/// PESQ-WB of the last `seconds` of `degraded` (what a receiver wrote of
/// one sender, from whenever it started hearing it) against the stretch
/// of `reference` (what the sender sent) it best lines up with, found by
/// cross-correlation.
pub fn score_tail(reference: &Path, degraded: &Path, seconds: f64) -> f64 {
    let script = r#"
import json, sys
import numpy as np
from scipy.io import wavfile
from scipy.signal import resample_poly, fftconvolve
from pesq import pesq
_, ref = wavfile.read(sys.argv[1])
_, deg = wavfile.read(sys.argv[2])
n = int(float(sys.argv[3]) * 48000)
deg = deg[-n:].astype(np.float64)
ref = ref.astype(np.float64)
corr = fftconvolve(ref, deg[::-1], mode="valid")
at = int(np.argmax(corr))
ref = ref[at:at + len(deg)]
ref = resample_poly(ref, 1, 3)
deg = resample_poly(deg, 1, 3)
print(json.dumps({"pesq": pesq(16000, ref, deg, "wb"), "at": at}))
"#;
    let secs = PathBuf::from(format!("{seconds}"));
    let out = python(script, &[reference, degraded, &secs]);
    number(&out, "pesq")
}

/// Writes `samples` as a 48 kHz mono 16-bit WAV file (what calls take and
/// write).
pub fn write_wav(path: &Path, samples: &[i16]) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 48_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = or_fail(hound::WavWriter::create(path, spec), path);
    for sample in samples {
        or_fail(writer.write_sample(*sample), path);
    }
    or_fail(writer.finalize(), path);
}

/// The samples of a 16-bit WAV file.
pub fn read_wav(path: &Path) -> Vec<i16> {
    or_fail(hound::WavReader::open(path), path)
        .samples::<i16>()
        .map(|s| or_fail(s, path))
        .collect()
}

fn or_fail<T>(result: Result<T, hound::Error>, path: &Path) -> T {
    result.unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
