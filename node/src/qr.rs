//! QR codes on a terminal, at most [`MAX_COLUMNS`] wide.
//!
//! A module is half a character cell high: with one module per column
//! (upper and lower half blocks) a code stays square on screen. An invite
//! is too long for that to fit in 80 columns, so a code that would be
//! wider is drawn two modules per column (quadrant blocks): it fits, and
//! scanners, which map the code's corners whatever its proportions, read
//! it stretched. Dark modules are drawn filled; the four-module quiet zone
//! is left blank.

/// Widest a code may be drawn.
pub(crate) const MAX_COLUMNS: usize = 80;

/// The quiet zone around a code, in modules.
const QUIET: usize = 4;

/// A code's modules, `true` for dark, with the quiet zone around them.
fn modules(text: &str) -> Option<(usize, Vec<bool>)> {
    let code =
        qrcode::QrCode::with_error_correction_level(text.as_bytes(), qrcode::EcLevel::L).ok()?;
    let inner = code.width();
    let size = inner + 2 * QUIET;
    let colors = code.to_colors();
    let mut dark = vec![false; size * size];
    for (i, color) in colors.iter().enumerate() {
        let (x, y) = (i % inner + QUIET, i / inner + QUIET);
        dark[y * size + x] = *color == qrcode::Color::Dark;
    }
    Some((size, dark))
}

/// `text` as lines of block characters, or `None` if it does not fit in
/// a QR code or in [`MAX_COLUMNS`].
pub(crate) fn art(text: &str) -> Option<String> {
    let (size, dark) = modules(text)?;
    let at = |x: usize, y: usize| x < size && y < size && dark[y * size + x];
    let mut out = String::new();
    if size <= MAX_COLUMNS {
        for y in (0..size).step_by(2) {
            for x in 0..size {
                out.push(match (at(x, y), at(x, y + 1)) {
                    (false, false) => ' ',
                    (true, false) => '▀',
                    (false, true) => '▄',
                    (true, true) => '█',
                });
            }
            out.push('\n');
        }
    } else if size.div_ceil(2) <= MAX_COLUMNS {
        for y in (0..size).step_by(2) {
            for x in (0..size).step_by(2) {
                let bits = usize::from(at(x, y)) << 3
                    | usize::from(at(x + 1, y)) << 2
                    | usize::from(at(x, y + 1)) << 1
                    | usize::from(at(x + 1, y + 1));
                out.push(QUADRANTS[bits]);
            }
            out.push('\n');
        }
    } else {
        return None;
    }
    Some(out)
}

/// Quadrant blocks by their dark quarters: upper left, upper right, lower
/// left, lower right (from the high bit down).
const QUADRANTS: [char; 16] = [
    ' ', '▗', '▖', '▄', '▝', '▐', '▞', '▟', '▘', '▚', '▌', '▙', '▀', '▜', '▛', '█',
];

pub(crate) fn print(text: &str) {
    match art(text) {
        Some(art) => print!("{art}"),
        None => tracing::debug!("the text is too long for a QR code on a terminal"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

    use super::*;

    /// The modules drawn, read back from the characters.
    fn read_back(art: &str, size: usize) -> Vec<bool> {
        let mut dark = vec![false; size * size];
        let wide = art.lines().next().unwrap().chars().count() == size;
        for (row, line) in art.lines().enumerate() {
            for (col, c) in line.chars().enumerate() {
                let mut set = |x: usize, y: usize, on: bool| {
                    if x < size && y < size {
                        dark[y * size + x] = on;
                    }
                };
                if wide {
                    let (top, bottom) = match c {
                        ' ' => (false, false),
                        '▀' => (true, false),
                        '▄' => (false, true),
                        _ => (true, true),
                    };
                    set(col, row * 2, top);
                    set(col, row * 2 + 1, bottom);
                } else {
                    let bits = QUADRANTS.iter().position(|q| *q == c).unwrap();
                    set(col * 2, row * 2, bits & 8 != 0);
                    set(col * 2 + 1, row * 2, bits & 4 != 0);
                    set(col * 2, row * 2 + 1, bits & 2 != 0);
                    set(col * 2 + 1, row * 2 + 1, bits & 1 != 0);
                }
            }
        }
        dark
    }

    #[test]
    fn short_and_invite_sized_texts_fit_80_columns_and_draw_every_module() {
        for text in [
            "safemeet:short".to_owned(),
            format!("safemeet:{}", "a".repeat(1100)),
        ] {
            let art = art(&text).unwrap();
            assert!(
                art.lines().all(|l| l.chars().count() <= MAX_COLUMNS),
                "{art}"
            );
            let (size, dark) = modules(&text).unwrap();
            assert_eq!(read_back(&art, size), dark, "every module as it is");
        }
        assert!(art(&"x".repeat(10_000)).is_none());
    }
}
