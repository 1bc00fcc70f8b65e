//! SFrame (RFC 9605) with cipher suite `AES_128_GCM_SHA256_128`
//! (0x0004): each media frame sealed on its own, under the sending
//! device's key.
//!
//! ```text
//!   frame = header ‖ AES-128-GCM(key, salt XOR ctr, aad = header ‖ metadata, payload)
//!   header = config byte (X K K K Y C C C) ‖ KID ‖ CTR, each as short as it can be
//!   key, salt = HKDF-Expand(HKDF-Extract("", base_key),
//!                           "SFrame 1.0 Secret key|salt " ‖ KID (u64 BE) ‖ 0x0004, 16|12)
//! ```
//!
//! - A [`SendKey`] never uses a counter twice: it counts up from 0 and
//!   refuses to go past `u64::MAX` ([`SframeError::CounterExhausted`]).
//! - A [`ReceiveKeys`] holds one sender's current key and at most
//!   [`MAX_OLD_KEYS`] older ones (the oldest goes first), each with a
//!   replay window of [`REPLAY_WINDOW`] counters: a frame seen before, or
//!   older than the window, is refused ([`SframeError::Replay`]). A frame
//!   counts against the window only once it has opened, so forged frames
//!   cannot fill it.
//! - The metadata is bound in the AAD but not sent: a call binds its id
//!   there, so a frame of one call does not open in another.
//! - [`ratchet`] moves a base key one step forward (RFC 9605 §5.1,
//!   "SFrame 1.0 Ratchet"): one who holds the new key cannot get the old.

use std::collections::VecDeque;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes128Gcm, Nonce};
use hkdf::Hkdf;
use rand::RngCore;
use sha2::Sha256;
use zeroize::Zeroizing;

/// The cipher suite: `AES_128_GCM_SHA256_128`.
pub const CIPHER_SUITE: u16 = 0x0004;
/// The longest header: the config byte, an 8-byte KID and an 8-byte CTR.
pub const MAX_HEADER_BYTES: usize = 17;
/// What the AEAD adds: its tag.
pub const TAG_BYTES: usize = 16;
/// The largest sealed frame taken in (an Opus packet is at most 1275
/// bytes; a frame carries one and a few bytes more).
pub const MAX_FRAME_BYTES: usize = 4096;
/// Old keys a receiver keeps per sender, beside the current one.
pub const MAX_OLD_KEYS: usize = 5;
/// Counters a receiver remembers per key: a frame this far behind the
/// newest one seen is refused.
pub const REPLAY_WINDOW: u64 = 128;

const NK: usize = 16;
const NN: usize = 12;

/// Why a frame was not sealed or opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SframeError {
    /// The frame ends inside its header or tag.
    #[error("the frame is cut short")]
    Truncated,
    /// The frame is larger than any media frame.
    #[error("the frame is too large")]
    TooLarge,
    /// No key is held for the frame's KID.
    #[error("no key for this frame")]
    UnknownKey,
    /// The frame did not open: damaged, forged, or sealed for other
    /// metadata (another call).
    #[error("the frame does not open")]
    Decrypt,
    /// The frame was seen before, or is older than the replay window.
    #[error("the frame was replayed")]
    Replay,
    /// The key has sealed as many frames as a counter can number.
    #[error("the key's counter is exhausted")]
    CounterExhausted,
}

/// An SFrame header: which key, and which frame under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The key id.
    pub kid: u64,
    /// The frame counter.
    pub ctr: u64,
}

/// Bytes needed for `v` (at least one).
fn len_of(v: u64) -> usize {
    (8 - v.leading_zeros() as usize / 8).max(1)
}

impl Header {
    /// Appends the header's encoding (each value as short as it can be).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut config = 0u8;
        let (kid_len, ctr_len) = (len_of(self.kid), len_of(self.ctr));
        if self.kid < 8 {
            config |= (self.kid as u8) << 4;
        } else {
            config |= 0x80 | (((kid_len - 1) as u8) << 4);
        }
        if self.ctr < 8 {
            config |= self.ctr as u8;
        } else {
            config |= 0x08 | (ctr_len - 1) as u8;
        }
        out.push(config);
        if self.kid >= 8 {
            out.extend_from_slice(&self.kid.to_be_bytes()[8 - kid_len..]);
        }
        if self.ctr >= 8 {
            out.extend_from_slice(&self.ctr.to_be_bytes()[8 - ctr_len..]);
        }
    }

    /// Reads a header from the front of `frame`; the header and its length.
    pub fn decode(frame: &[u8]) -> Result<(Header, usize), SframeError> {
        let (&config, _) = frame.split_first().ok_or(SframeError::Truncated)?;
        let mut used = 1;
        let mut field = |extended: bool, small: u8| -> Result<u64, SframeError> {
            if !extended {
                return Ok(u64::from(small));
            }
            let len = usize::from(small) + 1;
            let bytes = frame.get(used..used + len).ok_or(SframeError::Truncated)?;
            used += len;
            Ok(bytes.iter().fold(0u64, |v, b| (v << 8) | u64::from(*b)))
        };
        let kid = field(config & 0x80 != 0, (config >> 4) & 0x07)?;
        let ctr = field(config & 0x08 != 0, config & 0x07)?;
        Ok((Header { kid, ctr }, used))
    }
}

/// A base key: what a sending device hands each receiver (over Olm), and
/// from which the frame key of each KID is derived.
#[derive(Clone)]
pub struct BaseKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for BaseKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BaseKey(..)")
    }
}

impl BaseKey {
    /// A fresh random key.
    pub fn generate() -> Self {
        let mut key = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(&mut *key);
        Self(key)
    }

    /// A key from its bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// Its bytes (to be sent over an end-to-end encrypted channel only).
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

/// The frame key and salt of `kid` under `base_key` (RFC 9605 §4.4.2).
pub fn derive(base_key: &[u8], kid: u64) -> (Zeroizing<[u8; NK]>, [u8; NN]) {
    let hk = Hkdf::<Sha256>::new(None, base_key);
    let label = |prefix: &[u8]| {
        let mut l = Vec::with_capacity(prefix.len() + 10);
        l.extend_from_slice(prefix);
        l.extend_from_slice(&kid.to_be_bytes());
        l.extend_from_slice(&CIPHER_SUITE.to_be_bytes());
        l
    };
    let mut key = Zeroizing::new([0u8; NK]);
    let mut salt = [0u8; NN];
    // Both lengths are far below HKDF-SHA256's limit of 8160 bytes.
    let _ = hk.expand(&label(b"SFrame 1.0 Secret key "), &mut *key);
    let _ = hk.expand(&label(b"SFrame 1.0 Secret salt "), &mut salt);
    (key, salt)
}

/// The next base key after `base` (RFC 9605 §5.1): one-way.
pub fn ratchet(base: &BaseKey) -> BaseKey {
    let hk = Hkdf::<Sha256>::new(None, base.expose());
    let mut next = Zeroizing::new([0u8; 32]);
    let _ = hk.expand(b"SFrame 1.0 Ratchet", &mut *next);
    BaseKey(next)
}

/// The AAD, `header ‖ metadata`: on the stack when it is short (a call
/// id), else on the heap.
enum Aad {
    Short([u8; 64], usize),
    Long(Vec<u8>),
}

impl Aad {
    fn new(header: &[u8], metadata: &[u8]) -> Self {
        let len = header.len() + metadata.len();
        if len <= 64 {
            let mut buf = [0u8; 64];
            buf[..header.len()].copy_from_slice(header);
            buf[header.len()..len].copy_from_slice(metadata);
            Aad::Short(buf, len)
        } else {
            let mut v = Vec::with_capacity(len);
            v.extend_from_slice(header);
            v.extend_from_slice(metadata);
            Aad::Long(v)
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Aad::Short(buf, len) => &buf[..*len],
            Aad::Long(v) => v,
        }
    }
}

/// One KID's cipher and salt.
struct FrameKey {
    kid: u64,
    cipher: Aes128Gcm,
    salt: [u8; NN],
}

impl FrameKey {
    fn new(base: &[u8], kid: u64) -> Self {
        let (key, salt) = derive(base, kid);
        Self {
            kid,
            cipher: Aes128Gcm::new((&*key).into()),
            salt,
        }
    }

    fn nonce(&self, ctr: u64) -> [u8; NN] {
        let mut nonce = self.salt;
        for (n, c) in nonce[NN - 8..].iter_mut().zip(ctr.to_be_bytes()) {
            *n ^= c;
        }
        nonce
    }
}

/// A sending device's key for one KID.
pub struct SendKey {
    key: FrameKey,
    next: Option<u64>,
}

impl std::fmt::Debug for SendKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendKey")
            .field("kid", &self.key.kid)
            .finish_non_exhaustive()
    }
}

impl SendKey {
    /// A key for `kid` under `base`, counting from 0.
    pub fn new(base: &BaseKey, kid: u64) -> Self {
        Self::with_base(base.expose(), kid, 0)
    }

    /// A key for `kid` under any base key bytes, counting from `first`
    /// (for the RFC's test vectors).
    pub fn with_base(base: &[u8], kid: u64, first: u64) -> Self {
        Self {
            key: FrameKey::new(base, kid),
            next: Some(first),
        }
    }

    /// Its KID.
    pub fn kid(&self) -> u64 {
        self.key.kid
    }

    /// A key for `kid` under `base` that counts on from where `previous`
    /// stopped: a sender's frames stay numbered in one sequence across its
    /// keys (receivers order and time them by it), and no counter is used
    /// twice under any key.
    pub fn following(previous: &SendKey, base: &BaseKey, kid: u64) -> Self {
        Self {
            key: FrameKey::new(base.expose(), kid),
            next: previous.next,
        }
    }

    /// Seals `payload` as the next frame, binding `metadata`.
    pub fn encrypt(&mut self, metadata: &[u8], payload: &[u8]) -> Result<Vec<u8>, SframeError> {
        let ctr = self.next.ok_or(SframeError::CounterExhausted)?;
        self.next = ctr.checked_add(1);
        let mut frame = Vec::with_capacity(MAX_HEADER_BYTES + payload.len() + TAG_BYTES);
        Header {
            kid: self.key.kid,
            ctr,
        }
        .encode(&mut frame);
        let aad = Aad::new(&frame, metadata);
        let sealed = self
            .key
            .cipher
            .encrypt(
                Nonce::from_slice(&self.key.nonce(ctr)),
                Payload {
                    msg: payload,
                    aad: aad.bytes(),
                },
            )
            .map_err(|_| SframeError::TooLarge)?;
        frame.extend_from_slice(&sealed);
        Ok(frame)
    }
}

/// The counters seen under one key, within the window.
#[derive(Debug, Default)]
struct ReplayWindow {
    /// The newest counter seen.
    newest: Option<u64>,
    /// Bit `i`: counter `newest - i` was seen.
    seen: u128,
}

impl ReplayWindow {
    fn is_fresh(&self, ctr: u64) -> bool {
        match self.newest {
            None => true,
            Some(newest) if ctr > newest => true,
            Some(newest) => {
                let behind = newest - ctr;
                behind < REPLAY_WINDOW && self.seen & (1u128 << behind) == 0
            }
        }
    }

    fn mark(&mut self, ctr: u64) {
        match self.newest {
            Some(newest) if ctr <= newest => self.seen |= 1u128 << (newest - ctr),
            Some(newest) => {
                let ahead = ctr - newest;
                self.seen = if ahead >= 128 { 0 } else { self.seen << ahead };
                self.seen |= 1;
                self.newest = Some(ctr);
            }
            None => {
                self.seen = 1;
                self.newest = Some(ctr);
            }
        }
    }
}

/// One sender's keys, as a receiver holds them: the newest and at most
/// [`MAX_OLD_KEYS`] older ones.
#[derive(Default)]
pub struct ReceiveKeys {
    keys: VecDeque<(FrameKey, ReplayWindow)>,
}

impl std::fmt::Debug for ReceiveKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiveKeys")
            .field("kids", &self.kids())
            .finish()
    }
}

impl ReceiveKeys {
    /// No keys yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the sender's key for `kid` under `base` as its newest (the
    /// oldest beyond [`MAX_OLD_KEYS`] goes). A KID already held is kept
    /// as it is (its replay window too).
    pub fn add(&mut self, base: &BaseKey, kid: u64) {
        self.add_base(base.expose(), kid);
    }

    /// [`add`](Self::add) for any base key bytes.
    pub fn add_base(&mut self, base: &[u8], kid: u64) {
        if self.keys.iter().any(|(k, _)| k.kid == kid) {
            return;
        }
        self.keys
            .push_back((FrameKey::new(base, kid), ReplayWindow::default()));
        while self.keys.len() > MAX_OLD_KEYS + 1 {
            self.keys.pop_front();
        }
    }

    /// Opens a frame with a key for its KID derived from `base`, one not
    /// held yet (say, the sender's key ratcheted forward); the key is kept
    /// only if the frame opens with it.
    pub fn decrypt_with(
        &mut self,
        base: &[u8],
        frame: &[u8],
        metadata: &[u8],
    ) -> Result<(Header, Zeroizing<Vec<u8>>), SframeError> {
        let (header, _) = Header::decode(frame)?;
        if self.keys.iter().any(|(k, _)| k.kid == header.kid) {
            return self.decrypt(frame, metadata);
        }
        let mut trial = ReceiveKeys::new();
        trial.add_base(base, header.kid);
        let opened = trial.decrypt(frame, metadata)?;
        if let Some(entry) = trial.keys.pop_front() {
            self.keys.push_back(entry);
            while self.keys.len() > MAX_OLD_KEYS + 1 {
                self.keys.pop_front();
            }
        }
        Ok(opened)
    }

    /// Forgets every key.
    pub fn clear(&mut self) {
        self.keys.clear();
    }

    /// Whether a key for `kid` is held.
    pub fn holds(&self, kid: u64) -> bool {
        self.keys.iter().any(|(k, _)| k.kid == kid)
    }

    /// The KIDs held, oldest first.
    pub fn kids(&self) -> Vec<u64> {
        self.keys.iter().map(|(k, _)| k.kid).collect()
    }

    /// Opens a frame sealed with `metadata`: its header and payload.
    pub fn decrypt(
        &mut self,
        frame: &[u8],
        metadata: &[u8],
    ) -> Result<(Header, Zeroizing<Vec<u8>>), SframeError> {
        if frame.len() > MAX_FRAME_BYTES {
            return Err(SframeError::TooLarge);
        }
        let (header, used) = Header::decode(frame)?;
        if frame.len() < used + TAG_BYTES {
            return Err(SframeError::Truncated);
        }
        let (key, window) = self
            .keys
            .iter_mut()
            .find(|(k, _)| k.kid == header.kid)
            .ok_or(SframeError::UnknownKey)?;
        if !window.is_fresh(header.ctr) {
            return Err(SframeError::Replay);
        }
        let aad = Aad::new(&frame[..used], metadata);
        let payload = key
            .cipher
            .decrypt(
                Nonce::from_slice(&key.nonce(header.ctr)),
                Payload {
                    msg: &frame[used..],
                    aad: aad.bytes(),
                },
            )
            .map_err(|_| SframeError::Decrypt)?;
        window.mark(header.ctr);
        Ok((header, Zeroizing::new(payload)))
    }
}
