//! What an SFrame frame of a call carries: the capture time and the
//! codec's packet, padded to a fixed size class.
//!
//! ```text
//!   capture time (µs since the Unix epoch, u64 BE) ‖ packet length (u16 BE)
//!   ‖ packet ‖ zeros to the class size
//! ```
//!
//! Padding hides how much each frame carried (speech or silence, and so
//! when someone talks) from anyone who sees the sealed frames: almost
//! every frame of a call at 32 kbit/s fills the smallest class. The
//! capture time is inside the seal: only participants see it.

/// Payload sizes a frame is padded to.
pub const CLASSES: [usize; 5] = [128, 256, 512, 1024, 1536];
const HEADER: usize = 10;

/// The class a packet of `len` bytes fills (`None`: too long).
pub fn class_of(len: usize) -> Option<usize> {
    CLASSES.iter().copied().find(|c| len + HEADER <= *c)
}

/// A frame's payload (`None`: the packet is longer than the largest class
/// holds).
pub fn pack(capture_us: u64, packet: &[u8]) -> Option<Vec<u8>> {
    let class = class_of(packet.len())?;
    let mut out = Vec::with_capacity(class);
    out.extend_from_slice(&capture_us.to_be_bytes());
    out.extend_from_slice(&u16::try_from(packet.len()).ok()?.to_be_bytes());
    out.extend_from_slice(packet);
    out.resize(class, 0);
    Some(out)
}

/// The capture time and packet of a payload: `None` unless it is one of
/// the classes, its length fits, and the padding is zeros.
pub fn unpack(payload: &[u8]) -> Option<(u64, &[u8])> {
    if !CLASSES.contains(&payload.len()) {
        return None;
    }
    let capture = u64::from_be_bytes(payload.get(..8)?.try_into().ok()?);
    let len = usize::from(u16::from_be_bytes(payload.get(8..10)?.try_into().ok()?));
    let packet = payload.get(HEADER..HEADER + len)?;
    if len == 0 || payload[HEADER + len..].iter().any(|b| *b != 0) {
        return None;
    }
    Some((capture, packet))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_fill_fixed_classes_and_come_back_whole() {
        for (len, class) in [(1, 128), (80, 128), (118, 128), (119, 256), (1275, 1536)] {
            let packet: Vec<u8> = (0..len).map(|i| (i % 251) as u8 + 1).collect();
            let payload = pack(42, &packet).unwrap_or_default();
            assert_eq!(payload.len(), class, "{len}");
            assert_eq!(unpack(&payload), Some((42, &packet[..])));
        }
        assert_eq!(pack(1, &[7u8; 1527]), None);
    }

    #[test]
    fn odd_sizes_lengths_and_padding_are_refused() {
        let good = pack(9, &[5u8; 40]).unwrap_or_default();
        assert!(unpack(&good[..127]).is_none());
        let mut long = good.clone();
        long[9] = 200;
        assert!(unpack(&long).is_none());
        let mut empty = good.clone();
        empty[8] = 0;
        empty[9] = 0;
        assert!(unpack(&empty).is_none());
        let mut dirty = good;
        dirty[127] = 1;
        assert!(unpack(&dirty).is_none());
    }
}
