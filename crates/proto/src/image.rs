//! Images a profile carries (avatars): PNG or JPEG, with every piece of
//! metadata removed before they leave the device, and checked again by
//! every receiver.
//!
//! No decoder is involved: the containers are walked, and only what draws
//! the picture is kept.
//! - PNG: the chunks `IHDR`, `PLTE`, `tRNS`, `IDAT` and `IEND`; everything
//!   else goes (text, `eXIf`, times, colour profiles, physical size).
//! - JPEG: the frame, tables and scans; every `APPn` segment (EXIF, XMP,
//!   JFIF, ICC) and comment goes.

use serde::{Deserialize, Serialize};

/// The kinds of image a profile may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ImageKind {
    /// PNG.
    Png,
    /// JPEG.
    Jpeg,
}

impl ImageKind {
    /// Its media type.
    pub fn media_type(self) -> &'static str {
        match self {
            ImageKind::Png => "image/png",
            ImageKind::Jpeg => "image/jpeg",
        }
    }

    /// Its usual file extension.
    pub fn extension(self) -> &'static str {
        match self {
            ImageKind::Png => "png",
            ImageKind::Jpeg => "jpg",
        }
    }
}

/// Why bytes are not an image a profile takes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// Neither PNG nor JPEG.
    #[error("not a PNG or JPEG image")]
    UnknownKind,
    /// The container is cut short or malformed.
    #[error("the image is damaged: {0}")]
    Damaged(&'static str),
}

const PNG_SIGNATURE: &[u8; 8] = b"\x89PNG\r\n\x1a\n";
/// The PNG chunks kept: what draws the picture.
const PNG_KEPT: [&[u8; 4]; 5] = [b"IHDR", b"PLTE", b"tRNS", b"IDAT", b"IEND"];

/// The image in `bytes` with its metadata removed, and its kind.
pub fn strip_metadata(bytes: &[u8]) -> Result<(ImageKind, Vec<u8>), ImageError> {
    if bytes.starts_with(PNG_SIGNATURE) {
        return strip_png(bytes).map(|b| (ImageKind::Png, b));
    }
    if bytes.starts_with(&[0xFF, 0xD8]) {
        return strip_jpeg(bytes).map(|b| (ImageKind::Jpeg, b));
    }
    Err(ImageError::UnknownKind)
}

/// Whether `bytes` is an image of `kind` that carries no metadata (what
/// [`strip_metadata`] leaves).
pub fn is_clean(kind: ImageKind, bytes: &[u8]) -> bool {
    matches!(strip_metadata(bytes), Ok((k, stripped)) if k == kind && stripped == bytes)
}

fn strip_png(bytes: &[u8]) -> Result<Vec<u8>, ImageError> {
    let mut out = PNG_SIGNATURE.to_vec();
    let mut rest = &bytes[PNG_SIGNATURE.len()..];
    let mut first = true;
    loop {
        let (head, after) = rest
            .split_at_checked(8)
            .ok_or(ImageError::Damaged("a PNG chunk is cut short"))?;
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let kind: [u8; 4] = [head[4], head[5], head[6], head[7]];
        let total = len
            .checked_add(4)
            .ok_or(ImageError::Damaged("a PNG chunk is too long"))?;
        let (body, after) = after
            .split_at_checked(total)
            .ok_or(ImageError::Damaged("a PNG chunk is cut short"))?;
        if first && &kind != b"IHDR" {
            return Err(ImageError::Damaged("a PNG must start with IHDR"));
        }
        first = false;
        if PNG_KEPT.contains(&&kind) {
            out.extend_from_slice(head);
            out.extend_from_slice(body);
        }
        if &kind == b"IEND" {
            // Whatever follows the end is not part of the image.
            return Ok(out);
        }
        rest = after;
    }
}

fn strip_jpeg(bytes: &[u8]) -> Result<Vec<u8>, ImageError> {
    let mut out = vec![0xFF, 0xD8];
    let mut at = 2;
    loop {
        let marker = match (bytes.get(at), bytes.get(at + 1)) {
            (Some(0xFF), Some(m)) => *m,
            _ => {
                return Err(ImageError::Damaged(
                    "a JPEG segment does not start with a marker",
                ));
            }
        };
        // Fill bytes before a marker.
        if marker == 0xFF {
            at += 1;
            continue;
        }
        match marker {
            // The end of the image: nothing after it is kept.
            0xD9 => {
                out.extend_from_slice(&[0xFF, 0xD9]);
                return Ok(out);
            }
            // Markers with no length.
            0x01 | 0xD0..=0xD7 => {
                out.extend_from_slice(&[0xFF, marker]);
                at += 2;
            }
            _ => {
                let len = match (bytes.get(at + 2), bytes.get(at + 3)) {
                    (Some(a), Some(b)) => usize::from(u16::from_be_bytes([*a, *b])),
                    _ => return Err(ImageError::Damaged("a JPEG segment is cut short")),
                };
                if len < 2 {
                    return Err(ImageError::Damaged("a JPEG segment length is too short"));
                }
                let end = at + 2 + len;
                let segment = bytes
                    .get(at..end)
                    .ok_or(ImageError::Damaged("a JPEG segment is cut short"))?;
                // APPn (EXIF, XMP, JFIF, ICC…) and comments are metadata.
                let metadata = (0xE0..=0xEF).contains(&marker) || marker == 0xFE;
                if !metadata {
                    out.extend_from_slice(segment);
                }
                at = end;
                if marker == 0xDA {
                    // The scan's entropy-coded data runs to the next
                    // marker that is not a stuffed byte or a restart.
                    let start = at;
                    loop {
                        match (bytes.get(at), bytes.get(at + 1)) {
                            (Some(0xFF), Some(0x00 | 0xD0..=0xD7)) => at += 2,
                            (Some(0xFF), Some(_)) => break,
                            (Some(_), _) => at += 1,
                            (None, _) => {
                                return Err(ImageError::Damaged("a JPEG scan is cut short"));
                            }
                        }
                    }
                    out.extend_from_slice(&bytes[start..at]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is a failure

    use super::*;

    fn chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
        let mut c = (data.len() as u32).to_be_bytes().to_vec();
        c.extend_from_slice(kind);
        c.extend_from_slice(data);
        c.extend_from_slice(&[0, 0, 0, 0]);
        c
    }

    fn png(with_metadata: bool) -> Vec<u8> {
        let mut p = PNG_SIGNATURE.to_vec();
        p.extend(chunk(b"IHDR", &[0, 0, 0, 1, 0, 0, 0, 1, 8, 2, 0, 0, 0]));
        if with_metadata {
            p.extend(chunk(b"tEXt", b"Location\0secret-location 48.85,2.35"));
            p.extend(chunk(b"eXIf", b"MM\0*camera serial 1234"));
            p.extend(chunk(b"tIME", &[7, 233, 1, 2, 3, 4, 5]));
        }
        p.extend(chunk(b"IDAT", &[1, 2, 3, 4]));
        if with_metadata {
            p.extend(chunk(b"iTXt", b"Author\0\0\0\0\0secret-author"));
        }
        p.extend(chunk(b"IEND", &[]));
        p
    }

    fn jpeg(with_metadata: bool) -> Vec<u8> {
        let mut j = vec![0xFF, 0xD8];
        let segment = |marker: u8, data: &[u8]| {
            let mut s = vec![0xFF, marker];
            s.extend_from_slice(&((data.len() + 2) as u16).to_be_bytes());
            s.extend_from_slice(data);
            s
        };
        if with_metadata {
            j.extend(segment(0xE1, b"Exif\0\0secret-location GPS"));
            j.extend(segment(0xFE, b"secret comment"));
        }
        j.extend(segment(0xDB, &[0; 65]));
        j.extend(segment(0xC0, &[8, 0, 1, 0, 1, 1, 1, 0x11, 0]));
        j.extend(segment(0xDA, &[1, 1, 0, 0, 63, 0]));
        j.extend_from_slice(&[0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD0, 0x56]);
        j.extend_from_slice(&[0xFF, 0xD9]);
        j
    }

    #[test]
    fn metadata_goes_and_the_picture_stays() {
        for (dirty, clean, kind) in [
            (png(true), png(false), ImageKind::Png),
            (jpeg(true), jpeg(false), ImageKind::Jpeg),
        ] {
            let (k, stripped) = strip_metadata(&dirty).unwrap();
            assert_eq!((k, &stripped), (kind, &clean));
            assert!(!stripped.windows(6).any(|w| w == b"secret"));
            assert!(is_clean(kind, &stripped));
            assert!(!is_clean(kind, &dirty));
            // Stripping again changes nothing.
            assert_eq!(strip_metadata(&stripped).unwrap().1, stripped);
        }
        assert!(
            !is_clean(ImageKind::Jpeg, &png(false)),
            "the kind must match"
        );
    }

    #[test]
    fn what_is_not_a_whole_image_is_refused() {
        assert_eq!(strip_metadata(b"GIF89a"), Err(ImageError::UnknownKind));
        assert_eq!(strip_metadata(b""), Err(ImageError::UnknownKind));
        for bad in [png(false), jpeg(false)] {
            for cut in [bad.len() - 1, bad.len() / 2, 10] {
                assert!(strip_metadata(&bad[..cut]).is_err(), "cut at {cut}");
            }
        }
        // A chunk claiming 4 GiB, a PNG not starting with IHDR.
        let mut huge = PNG_SIGNATURE.to_vec();
        huge.extend_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF]);
        huge.extend_from_slice(b"IHDR");
        assert!(strip_metadata(&huge).is_err());
        let mut headless = PNG_SIGNATURE.to_vec();
        headless.extend(chunk(b"IDAT", &[1]));
        headless.extend(chunk(b"IEND", &[]));
        assert!(strip_metadata(&headless).is_err());
    }
}
