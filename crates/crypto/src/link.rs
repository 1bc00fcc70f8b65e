//! The device-link channel: `Noise_XXpsk3_25519_ChaChaPoly_BLAKE2s` with
//! the link's one-time secret as the pre-shared key, sans I/O.
//!
//! The new device is the initiator, the device that showed the link the
//! responder. Both bind the handshake to the showing device's peer id (the
//! prologue), so a link shown by one device cannot be replayed against
//! another. The secret enters at the third message: a passive observer
//! learns nothing it could test guesses against, and an active one that
//! does not hold the secret fails there, before either side has sent
//! anything but ephemeral and static Noise keys. With a 256-bit secret
//! there is nothing to guess (a short typed code would need a PAKE).
//!
//! After the handshake each side seals its messages with
//! [`LinkChannel::seal`]; the channel numbers them, so a dropped,
//! repeated or reordered frame fails to open.

use zeroize::Zeroizing;

use crate::Error;

/// The Noise protocol of the link.
pub const LINK_NOISE_PARAMS: &str = "Noise_XXpsk3_25519_ChaChaPoly_BLAKE2s";
/// Largest Noise message.
pub const MAX_LINK_FRAME: usize = 65_535;
/// Largest plaintext one sealed frame carries.
pub const MAX_LINK_PLAINTEXT: usize = MAX_LINK_FRAME - 16;
/// Bound into the handshake with the showing device's peer id.
const PROLOGUE: &[u8] = b"safemeet/v1/device-link";

/// One side of the link handshake.
pub struct LinkHandshake {
    state: Box<snow::HandshakeState>,
}

impl std::fmt::Debug for LinkHandshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkHandshake").finish_non_exhaustive()
    }
}

fn failed(_: snow::Error) -> Error {
    Error::Link("the handshake failed (a wrong, used or expired secret, or a damaged message)")
}

impl LinkHandshake {
    fn build(secret: &[u8; 32], showing_peer: &[u8], initiator: bool) -> Result<Self, Error> {
        let params = LINK_NOISE_PARAMS
            .parse()
            .map_err(|_| Error::Link("the Noise parameters do not parse"))?;
        let builder = snow::Builder::new(params);
        let keys = builder.generate_keypair().map_err(failed)?;
        let private = Zeroizing::new(keys.private);
        let mut prologue = PROLOGUE.to_vec();
        prologue.extend_from_slice(showing_peer);
        let builder = builder
            .local_private_key(&private)
            .and_then(|b| b.psk(3, secret))
            .and_then(|b| b.prologue(&prologue))
            .map_err(failed)?;
        let state = if initiator {
            builder.build_initiator()
        } else {
            builder.build_responder()
        }
        .map_err(failed)?;
        Ok(Self {
            state: Box::new(state),
        })
    }

    /// The new device's side.
    pub fn initiator(secret: &[u8; 32], showing_peer: &[u8]) -> Result<Self, Error> {
        Self::build(secret, showing_peer, true)
    }

    /// The showing device's side.
    pub fn responder(secret: &[u8; 32], showing_peer: &[u8]) -> Result<Self, Error> {
        Self::build(secret, showing_peer, false)
    }

    /// The next handshake message, carrying `payload` (small).
    pub fn write(&mut self, payload: &[u8]) -> Result<Vec<u8>, Error> {
        let mut out = vec![0; MAX_LINK_FRAME];
        let n = self
            .state
            .write_message(payload, &mut out)
            .map_err(failed)?;
        out.truncate(n);
        Ok(out)
    }

    /// Reads the other side's handshake message; returns its payload.
    pub fn read(&mut self, message: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
        if message.len() > MAX_LINK_FRAME {
            return Err(Error::Link("a handshake message is too large"));
        }
        let mut out = Zeroizing::new(vec![0; MAX_LINK_FRAME]);
        let n = self.state.read_message(message, &mut out).map_err(failed)?;
        out.truncate(n);
        Ok(out)
    }

    /// The channel, once the three messages have passed.
    pub fn finish(self) -> Result<LinkChannel, Error> {
        if !self.state.is_handshake_finished() {
            return Err(Error::Link("the handshake is not finished"));
        }
        let state = self.state.into_transport_mode().map_err(failed)?;
        Ok(LinkChannel {
            state: Box::new(state),
        })
    }
}

/// The link's encrypted channel.
pub struct LinkChannel {
    state: Box<snow::TransportState>,
}

impl std::fmt::Debug for LinkChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkChannel").finish_non_exhaustive()
    }
}

impl LinkChannel {
    /// Seals one message of at most [`MAX_LINK_PLAINTEXT`] bytes.
    pub fn seal(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, Error> {
        if plaintext.len() > MAX_LINK_PLAINTEXT {
            return Err(Error::Link("a message is too large for one frame"));
        }
        let mut out = vec![0; plaintext.len() + 16];
        let n = self
            .state
            .write_message(plaintext, &mut out)
            .map_err(|_| Error::Link("a message could not be sealed"))?;
        out.truncate(n);
        Ok(out)
    }

    /// Opens the next sealed frame.
    pub fn open(&mut self, frame: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
        if frame.len() > MAX_LINK_FRAME || frame.len() < 16 {
            return Err(Error::Link("a frame has an impossible size"));
        }
        let mut out = Zeroizing::new(vec![0; frame.len()]);
        let n = self
            .state
            .read_message(frame, &mut out)
            .map_err(|_| Error::Link("a frame does not open (damaged, replayed or reordered)"))?;
        out.truncate(n);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: &[u8] = b"showing-peer";

    fn handshake(
        theirs: &[u8; 32],
        ours: &[u8; 32],
        peer_i: &[u8],
        peer_r: &[u8],
    ) -> Result<(LinkChannel, LinkChannel, Vec<u8>), Error> {
        let mut new = LinkHandshake::initiator(theirs, peer_i)?;
        let mut old = LinkHandshake::responder(ours, peer_r)?;
        let m1 = new.write(&[])?;
        old.read(&m1)?;
        let m2 = old.write(&[])?;
        new.read(&m2)?;
        let m3 = new.write(b"hello")?;
        let hello = old.read(&m3)?.to_vec();
        Ok((new.finish()?, old.finish()?, hello))
    }

    #[test]
    fn the_same_secret_opens_a_channel_both_ways() {
        let (mut new, mut old, hello) = handshake(&[1; 32], &[1; 32], PEER, PEER).unwrap();
        assert_eq!(hello, b"hello");
        let big = vec![9u8; MAX_LINK_PLAINTEXT];
        let sealed = old.seal(&big).unwrap();
        assert_eq!(new.open(&sealed).unwrap().as_slice(), big.as_slice());
        let back = new.seal(b"done").unwrap();
        assert_eq!(old.open(&back).unwrap().as_slice(), b"done");
        assert!(old.seal(&vec![0; MAX_LINK_PLAINTEXT + 1]).is_err());
    }

    #[test]
    fn a_wrong_secret_fails_at_the_third_message() {
        let err = handshake(&[1; 32], &[2; 32], PEER, PEER).unwrap_err();
        assert!(matches!(err, Error::Link(_)), "{err}");
    }

    #[test]
    fn a_link_of_another_device_fails() {
        assert!(handshake(&[1; 32], &[1; 32], b"other-peer", PEER).is_err());
    }

    #[test]
    fn damaged_replayed_and_reordered_frames_do_not_open() {
        let open = || handshake(&[3; 32], &[3; 32], PEER, PEER).unwrap();
        // Reordered.
        let (mut new, mut old, _) = open();
        let _first = old.seal(b"first").unwrap();
        let second = old.seal(b"second").unwrap();
        assert!(new.open(&second).is_err());
        // Damaged.
        let (mut new, mut old, _) = open();
        let mut bad = old.seal(b"first").unwrap();
        bad[0] ^= 1;
        assert!(new.open(&bad).is_err());
        // Replayed.
        let (mut new, mut old, _) = open();
        let first = old.seal(b"first").unwrap();
        assert_eq!(new.open(&first).unwrap().as_slice(), b"first");
        assert!(new.open(&first).is_err());
        // Too short to be a frame.
        assert!(new.open(&[0; 8]).is_err());
    }
}
