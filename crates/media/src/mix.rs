//! Mixing the frames of several senders into one, with a soft clip.

use crate::audio::{FRAME_SAMPLES, Frame};

/// Below this a sum passes unchanged; above it, it bends towards full
/// scale instead of wrapping or clipping hard.
pub const KNEE: i32 = 24_000;

/// A soft clip: linear below [`KNEE`], then bent smoothly towards
/// ±32 767 (a `tanh` over what is left).
pub fn soft_clip(x: i32) -> i16 {
    const TOP: f64 = 32_767.0;
    let knee = f64::from(KNEE);
    let v = f64::from(x);
    let a = v.abs();
    let out = if a <= knee {
        a
    } else {
        knee + (TOP - knee) * ((a - knee) / (TOP - knee)).tanh()
    };
    (out.copysign(v)) as i16
}

/// The frames summed and soft-clipped; one frame passes unchanged, none
/// is silence.
pub fn mix(frames: &[Frame]) -> Frame {
    if let [one] = frames {
        return *one;
    }
    let mut sum = [0i32; FRAME_SAMPLES];
    for frame in frames {
        for (s, x) in sum.iter_mut().zip(frame.iter()) {
            *s += i32::from(*x);
        }
    }
    let mut out = [0i16; FRAME_SAMPLES];
    for (o, s) in out.iter_mut().zip(sum.iter()) {
        *o = soft_clip(*s);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_clip_is_linear_below_the_knee_and_never_wraps() {
        assert_eq!(soft_clip(1000), 1000);
        assert_eq!(soft_clip(-24_000), -24_000);
        assert!(soft_clip(7 * 32_767) > 32_000);
        assert!(soft_clip(-7 * 32_767) < -32_000);
        assert!(soft_clip(30_000) > soft_clip(25_000));
    }

    #[test]
    fn one_frame_passes_unchanged_and_eight_loud_ones_do_not_wrap() {
        let loud = [30_000i16; FRAME_SAMPLES];
        assert_eq!(mix(&[loud]), loud);
        let mixed = mix(&[loud; 8]);
        assert!(mixed.iter().all(|s| *s > 32_000));
        assert_eq!(mix(&[]), [0i16; FRAME_SAMPLES]);
    }
}
