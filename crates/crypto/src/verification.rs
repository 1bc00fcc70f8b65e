//! Interactive device verification with a short authentication string (SAS).
//!
//! Two users, each holding one of the two devices (or both devices of one
//! user), check that the device certificates their clients fetched are the
//! real ones: each screen shows seven emoji (or three numbers) derived from
//! a fresh Diffie-Hellman exchange and from both devices' identities, and the
//! users compare them face to face or over a call. [`SasFlow`] is the state
//! machine of one side; it does no I/O, the caller carries the
//! [`Verification`] messages (Olm to-device events) and asks its user.
//!
//! The protocol, between an initiator I and a responder R:
//!
//! 1. I → R `Start`, with a random flow id that every later message repeats.
//! 2. R makes an ephemeral Curve25519 key and answers `Accept { commitment }`,
//!    the commitment being BLAKE3 (derive-key mode, context
//!    `"safemeet/v1/sas-commitment"`) of R's ephemeral key, the flow id and
//!    both devices' identities, initiator first.
//! 3. I makes its ephemeral key and sends it: `Key`.
//! 4. R reveals its ephemeral key: `Key`. I checks it against the commitment.
//! 5. Both sides compute the Diffie-Hellman secret and derive the short
//!    string from it with an info string naming the flow, both identities
//!    and both ephemeral keys in a fixed order ([`ShortAuthString`]).
//! 6. When its user confirms that the strings match, a side sends `Mac`:
//!    MACs under the shared secret of its own device key and master key. A
//!    side checks the other's MACs against the identity it was given at the
//!    start; the flow is [`SasState::Done`] once its own user confirmed and
//!    the other side's MACs verified.
//!
//! **Why the commitment.** Without it, a man in the middle who relays between
//! I and R with her own ephemeral keys would see I's key before choosing the
//! key she shows I, and R's key before choosing the key she shows R, so she
//! could try keys until the two short strings collide: 42 bits of emoji is
//! little against a grinding machine. With it, the key she shows I is fixed
//! before she sees I's key, and the key she shows R is revealed before R
//! reveals its own, so each string is a fresh random value she cannot steer
//! and she passes unnoticed with probability 2⁻⁴² per attempt.
//!
//! **What the MACs do and do not do.** They tie the confirmation to this
//! key exchange and to the identities both sides expect: a MAC relayed from
//! another exchange, or made for another key, is refused. They are made
//! with the ephemeral secret only, so they prove nothing about who holds a
//! device's Ed25519 key: a man in the middle knows both of her secrets and
//! can compute MACs for any identity. The users' comparison of the strings
//! is what stops her; a user who confirms strings that differ defeats the
//! protocol.
//!
//! Any message out of order, for another flow or in an unknown version, and
//! any `Cancel` received, moves the flow to [`SasState::Cancelled`] and
//! returns a [`VerificationError`]; no input panics. The ephemeral secrets
//! live in vodozemac types, which zeroize them, and are dropped as soon as
//! the flow is done or cancelled.

use std::fmt;

use safemeet_proto::event::{CancelReason, Verification, VerificationStep};
use safemeet_proto::identity::DeviceCertificate;
use safemeet_proto::{DeviceId, UserId};
use vodozemac::Curve25519PublicKey;
use vodozemac::sas::{EstablishedSas, Mac, Sas};

use crate::certificate::Verified;

/// The version of [`Verification`] messages this build sends and accepts.
const VERSION: u8 = 1;
/// BLAKE3 derive-key context of the responder's commitment.
const COMMITMENT_CONTEXT: &str = "safemeet/v1/sas-commitment";
/// Label opening the info string the short string is derived with.
const SAS_LABEL: &str = "SAFEMEET_SAS_V1";
/// Label opening the info strings the MAC keys are derived with.
const MAC_LABEL: &str = "SAFEMEET_MAC_V1";

/// One side of a verification: what a device is, as its certificate says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceIdentity {
    /// The device's user (its master public key).
    pub user_id: UserId,
    /// The device.
    pub device_id: DeviceId,
    /// The device's Olm Ed25519 identity key.
    pub ed25519_key: [u8; 32],
}

impl DeviceIdentity {
    /// Fixed-width encoding, so that concatenations are unambiguous.
    fn hash_into(&self, hasher: &mut blake3::Hasher) {
        hasher.update(self.user_id.as_bytes());
        hasher.update(self.device_id.as_bytes());
        hasher.update(&self.ed25519_key);
    }

    /// Text form for info strings. None of the parts contains `|`.
    fn info_part(&self) -> String {
        format!(
            "{}|{}|{}",
            self.user_id,
            self.device_id,
            hex(&self.ed25519_key)
        )
    }
}

impl From<&Verified<DeviceCertificate>> for DeviceIdentity {
    fn from(cert: &Verified<DeviceCertificate>) -> Self {
        Self {
            user_id: cert.user_id,
            device_id: cert.device_id,
            ed25519_key: cert.ed25519_key,
        }
    }
}

/// One emoji of a short authentication string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Emoji {
    /// The emoji itself.
    pub symbol: &'static str,
    /// Its English name, for reading aloud and for screens without emoji.
    pub name: &'static str,
}

const fn emoji(symbol: &'static str, name: &'static str) -> Emoji {
    Emoji { symbol, name }
}

/// The 64 SAS emoji, indexed by six bits of the derived bytes. This is the
/// table other SAS implementations use, so that users know the pictures.
const EMOJI: [Emoji; 64] = [
    emoji("\u{1F436}", "Dog"),
    emoji("\u{1F431}", "Cat"),
    emoji("\u{1F981}", "Lion"),
    emoji("\u{1F40E}", "Horse"),
    emoji("\u{1F984}", "Unicorn"),
    emoji("\u{1F437}", "Pig"),
    emoji("\u{1F418}", "Elephant"),
    emoji("\u{1F430}", "Rabbit"),
    emoji("\u{1F43C}", "Panda"),
    emoji("\u{1F413}", "Rooster"),
    emoji("\u{1F427}", "Penguin"),
    emoji("\u{1F422}", "Turtle"),
    emoji("\u{1F41F}", "Fish"),
    emoji("\u{1F419}", "Octopus"),
    emoji("\u{1F98B}", "Butterfly"),
    emoji("\u{1F337}", "Flower"),
    emoji("\u{1F333}", "Tree"),
    emoji("\u{1F335}", "Cactus"),
    emoji("\u{1F344}", "Mushroom"),
    emoji("\u{1F30F}", "Globe"),
    emoji("\u{1F319}", "Moon"),
    emoji("\u{2601}\u{FE0F}", "Cloud"),
    emoji("\u{1F525}", "Fire"),
    emoji("\u{1F34C}", "Banana"),
    emoji("\u{1F34E}", "Apple"),
    emoji("\u{1F353}", "Strawberry"),
    emoji("\u{1F33D}", "Corn"),
    emoji("\u{1F355}", "Pizza"),
    emoji("\u{1F382}", "Cake"),
    emoji("\u{2764}\u{FE0F}", "Heart"),
    emoji("\u{1F600}", "Smiley"),
    emoji("\u{1F916}", "Robot"),
    emoji("\u{1F3A9}", "Hat"),
    emoji("\u{1F453}", "Glasses"),
    emoji("\u{1F527}", "Spanner"),
    emoji("\u{1F385}", "Santa"),
    emoji("\u{1F44D}", "Thumbs Up"),
    emoji("\u{2602}\u{FE0F}", "Umbrella"),
    emoji("\u{231B}", "Hourglass"),
    emoji("\u{23F0}", "Clock"),
    emoji("\u{1F381}", "Gift"),
    emoji("\u{1F4A1}", "Light Bulb"),
    emoji("\u{1F4D5}", "Book"),
    emoji("\u{270F}\u{FE0F}", "Pencil"),
    emoji("\u{1F4CE}", "Paperclip"),
    emoji("\u{2702}\u{FE0F}", "Scissors"),
    emoji("\u{1F512}", "Lock"),
    emoji("\u{1F511}", "Key"),
    emoji("\u{1F528}", "Hammer"),
    emoji("\u{260E}\u{FE0F}", "Telephone"),
    emoji("\u{1F3C1}", "Flag"),
    emoji("\u{1F682}", "Train"),
    emoji("\u{1F6B2}", "Bicycle"),
    emoji("\u{2708}\u{FE0F}", "Aeroplane"),
    emoji("\u{1F680}", "Rocket"),
    emoji("\u{1F3C6}", "Trophy"),
    emoji("\u{26BD}", "Ball"),
    emoji("\u{1F3B8}", "Guitar"),
    emoji("\u{1F3BA}", "Trumpet"),
    emoji("\u{1F514}", "Bell"),
    emoji("\u{2693}", "Anchor"),
    emoji("\u{1F3A7}", "Headphones"),
    emoji("\u{1F4C1}", "Folder"),
    emoji("\u{1F4CC}", "Pin"),
];

/// What the two users compare: seven emoji (42 bits) or, equivalently for
/// screens without emoji, three numbers from 1000 to 9191 (39 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShortAuthString {
    /// The emoji, in order.
    pub emoji: [Emoji; 7],
    /// The numbers, in order.
    pub decimals: [u16; 3],
}

impl ShortAuthString {
    fn derive(sas: &EstablishedSas, info: &str) -> Self {
        let bytes = sas.bytes(info);
        // Each index is six bits; the mask keeps the lookup in bounds anyway.
        let emoji = bytes.emoji_indices().map(|i| EMOJI[usize::from(i & 63)]);
        let (a, b, c) = bytes.decimals();
        Self {
            emoji,
            decimals: [a, b, c],
        }
    }
}

/// Two lines: the emoji with their names, then the numbers.
impl fmt::Display for ShortAuthString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.emoji.iter().enumerate() {
            if i > 0 {
                f.write_str("  ")?;
            }
            write!(f, "{} {}", e.symbol, e.name)?;
        }
        let [a, b, c] = self.decimals;
        write!(f, "\n{a} {b} {c}")
    }
}

/// Where a flow stands, as a user interface shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SasState {
    /// The initiator sent `Start` and waits for `Accept`.
    Started,
    /// `Accept` was sent (responder) or received (initiator); the ephemeral
    /// keys are being exchanged.
    Accepted,
    /// Both keys are known: show [`SasFlow::short_auth_string`] and ask the
    /// user whether it matches.
    KeysExchanged,
    /// Our user confirmed and our `Mac` went out; waiting for the other's.
    Confirmed,
    /// Verified: our user confirmed and the other side's MACs checked out.
    Done,
    /// Stopped, by either side, for this reason.
    Cancelled(CancelReason),
}

/// Why a verification step failed. Every error from [`SasFlow::receive`]
/// leaves the flow [`SasState::Cancelled`]; [`SasFlow::cancel`] then gives
/// the `Cancel` message to send.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerificationError {
    /// A message in a version this build does not know.
    #[error("verification message has unsupported version {0}")]
    UnsupportedVersion(u8),
    /// A message that carries another flow's id.
    #[error("verification message belongs to another flow")]
    WrongFlow,
    /// A message that is not the next step of the protocol.
    #[error("verification step came out of order")]
    UnexpectedStep,
    /// The responder revealed a key other than the one it committed to.
    #[error("the responder's key does not match its commitment")]
    BadCommitment,
    /// A MAC of the other side's keys did not verify.
    #[error("the other side's MAC did not verify")]
    BadMac,
    /// An ephemeral key that gives no shared secret (a low-order point).
    #[error("invalid ephemeral key")]
    InvalidKey,
    /// The other side cancelled.
    #[error("the other side cancelled the verification ({0:?})")]
    CancelledByThem(CancelReason),
    /// The flow had already stopped.
    #[error("the verification was cancelled ({0:?})")]
    Cancelled(CancelReason),
    /// [`SasFlow::confirm`] before the keys were exchanged, or twice.
    #[error("cannot confirm in state {0:?}")]
    CannotConfirm(SasState),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Initiator,
    Responder,
}

/// Both ephemeral keys are known.
struct Exchanged {
    sas: EstablishedSas,
    short: ShortAuthString,
    confirmed: bool,
    their_mac_verified: bool,
}

enum Phase {
    /// Initiator: sent `Start`.
    AwaitingAccept,
    /// Responder: sent `Accept`.
    AwaitingInitiatorKey(Sas),
    /// Initiator: got `Accept`, sent `Key`.
    AwaitingResponderKey {
        sas: Sas,
        commitment: [u8; 32],
    },
    KeysExchanged(Box<Exchanged>),
    Done(ShortAuthString),
    Cancelled(CancelReason),
}

/// One side of a SAS verification. See the [module docs](self) for the
/// protocol. `Debug` shows the role, flow id and state, never a secret.
pub struct SasFlow {
    role: Role,
    flow_id: [u8; 16],
    own: DeviceIdentity,
    their: DeviceIdentity,
    phase: Phase,
}

impl fmt::Debug for SasFlow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SasFlow")
            .field("role", &self.role)
            .field("flow_id", &hex(&self.flow_id))
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl SasFlow {
    /// Starts verifying `their` device from `own`, with a fresh random flow
    /// id. Send the returned `Start` to their device.
    pub fn start(own: DeviceIdentity, their: DeviceIdentity) -> (Self, Verification) {
        let flow = Self {
            role: Role::Initiator,
            flow_id: rand::random(),
            own,
            their,
            phase: Phase::AwaitingAccept,
        };
        let start = flow.message(VerificationStep::Start);
        (flow, start)
    }

    /// Answers a `Start` from `their` device; send the returned `Accept`.
    /// Call this only once the user agreed to verify.
    pub fn respond(
        own: DeviceIdentity,
        their: DeviceIdentity,
        start: &Verification,
    ) -> Result<(Self, Verification), VerificationError> {
        if start.version != VERSION {
            return Err(VerificationError::UnsupportedVersion(start.version));
        }
        if start.step != VerificationStep::Start {
            return Err(VerificationError::UnexpectedStep);
        }
        let sas = Sas::new();
        let mut flow = Self {
            role: Role::Responder,
            flow_id: start.flow_id,
            own,
            their,
            phase: Phase::Cancelled(CancelReason::UnexpectedStep),
        };
        let commitment = flow.commitment(sas.public_key().as_bytes());
        flow.phase = Phase::AwaitingInitiatorKey(sas);
        let accept = flow.message(VerificationStep::Accept {
            commitment: *commitment.as_bytes(),
        });
        Ok((flow, accept))
    }

    /// The id every message of this flow carries.
    pub fn flow_id(&self) -> [u8; 16] {
        self.flow_id
    }

    /// The device being verified, as given at the start.
    pub fn their_device(&self) -> &DeviceIdentity {
        &self.their
    }

    /// Where the flow stands.
    pub fn state(&self) -> SasState {
        match &self.phase {
            Phase::AwaitingAccept => SasState::Started,
            Phase::AwaitingInitiatorKey(_) | Phase::AwaitingResponderKey { .. } => {
                SasState::Accepted
            }
            Phase::KeysExchanged(x) if x.confirmed => SasState::Confirmed,
            Phase::KeysExchanged(_) => SasState::KeysExchanged,
            Phase::Done(_) => SasState::Done,
            Phase::Cancelled(reason) => SasState::Cancelled(*reason),
        }
    }

    /// The string to show the user, once both keys are known (until the
    /// flow is cancelled).
    pub fn short_auth_string(&self) -> Option<ShortAuthString> {
        match &self.phase {
            Phase::KeysExchanged(x) => Some(x.short),
            Phase::Done(short) => Some(*short),
            _ => None,
        }
    }

    /// The other device, verified: `Some` only when the flow is done.
    pub fn verified_device(&self) -> Option<&DeviceIdentity> {
        match self.phase {
            Phase::Done(_) => Some(&self.their),
            _ => None,
        }
    }

    /// Handles a message from the other device and returns the reply to
    /// send, if any. An error cancels the flow (see [`VerificationError`]).
    /// A done flow stays done and refuses further messages.
    pub fn receive(
        &mut self,
        msg: &Verification,
    ) -> Result<Option<Verification>, VerificationError> {
        match self.phase {
            Phase::Cancelled(reason) => return Err(VerificationError::Cancelled(reason)),
            Phase::Done(_) => return Err(VerificationError::UnexpectedStep),
            _ => {}
        }
        // Every early return below leaves the flow cancelled with this
        // reason unless it sets another.
        let phase = std::mem::replace(
            &mut self.phase,
            Phase::Cancelled(CancelReason::UnexpectedStep),
        );
        if msg.version != VERSION {
            return Err(VerificationError::UnsupportedVersion(msg.version));
        }
        if msg.flow_id != self.flow_id {
            return Err(VerificationError::WrongFlow);
        }
        match (self.role, phase, &msg.step) {
            (_, _, VerificationStep::Cancel { reason }) => {
                self.phase = Phase::Cancelled(*reason);
                Err(VerificationError::CancelledByThem(*reason))
            }
            (Role::Initiator, Phase::AwaitingAccept, VerificationStep::Accept { commitment }) => {
                let sas = Sas::new();
                let key = *sas.public_key().as_bytes();
                self.phase = Phase::AwaitingResponderKey {
                    sas,
                    commitment: *commitment,
                };
                Ok(Some(self.message(VerificationStep::Key { key })))
            }
            (Role::Responder, Phase::AwaitingInitiatorKey(sas), VerificationStep::Key { key }) => {
                let own_key = *sas.public_key().as_bytes();
                self.exchange(sas, *key)?;
                Ok(Some(self.message(VerificationStep::Key { key: own_key })))
            }
            (
                Role::Initiator,
                Phase::AwaitingResponderKey { sas, commitment },
                VerificationStep::Key { key },
            ) => {
                // `blake3::Hash` compares in constant time.
                if self.commitment(key) != commitment {
                    self.phase = Phase::Cancelled(CancelReason::BadCommitment);
                    return Err(VerificationError::BadCommitment);
                }
                self.exchange(sas, *key)?;
                Ok(None)
            }
            (
                _,
                Phase::KeysExchanged(mut x),
                VerificationStep::Mac {
                    device_key,
                    master_key,
                },
            ) if !x.their_mac_verified => {
                if !self.verify_their_macs(&x.sas, device_key, master_key) {
                    self.phase = Phase::Cancelled(CancelReason::BadMac);
                    return Err(VerificationError::BadMac);
                }
                x.their_mac_verified = true;
                self.phase = if x.confirmed {
                    Phase::Done(x.short)
                } else {
                    Phase::KeysExchanged(x)
                };
                Ok(None)
            }
            _ => Err(VerificationError::UnexpectedStep),
        }
    }

    /// Our user says the strings match: returns our `Mac` to send. The flow
    /// is done if the other side's MACs already verified.
    pub fn confirm(&mut self) -> Result<Verification, VerificationError> {
        let x = match &mut self.phase {
            Phase::KeysExchanged(x) if !x.confirmed => x,
            Phase::Cancelled(reason) => return Err(VerificationError::Cancelled(*reason)),
            _ => return Err(VerificationError::CannotConfirm(self.state())),
        };
        x.confirmed = true;
        let step = VerificationStep::Mac {
            device_key: mac_bytes(&x.sas.calculate_mac(
                &hex(&self.own.ed25519_key),
                &mac_info(&self.flow_id, &self.own, &self.their, "device_key"),
            )),
            master_key: mac_bytes(&x.sas.calculate_mac(
                &hex(self.own.user_id.as_bytes()),
                &mac_info(&self.flow_id, &self.own, &self.their, "master_key"),
            )),
        };
        if x.their_mac_verified {
            self.phase = Phase::Done(x.short);
        }
        Ok(self.message(step))
    }

    /// Stops the flow (the user declined, the strings differ, a timeout) and
    /// returns the `Cancel` to send. On a flow that is already cancelled the
    /// message carries the reason it was cancelled for.
    pub fn cancel(&mut self, reason: CancelReason) -> Verification {
        let reason = match self.phase {
            Phase::Cancelled(earlier) => earlier,
            _ => reason,
        };
        self.phase = Phase::Cancelled(reason);
        self.message(VerificationStep::Cancel { reason })
    }

    fn message(&self, step: VerificationStep) -> Verification {
        Verification {
            version: VERSION,
            flow_id: self.flow_id,
            step,
        }
    }

    fn initiator_and_responder(&self) -> (&DeviceIdentity, &DeviceIdentity) {
        match self.role {
            Role::Initiator => (&self.own, &self.their),
            Role::Responder => (&self.their, &self.own),
        }
    }

    /// The responder's commitment to its ephemeral key.
    fn commitment(&self, responder_key: &[u8; 32]) -> blake3::Hash {
        let (initiator, responder) = self.initiator_and_responder();
        let mut hasher = blake3::Hasher::new_derive_key(COMMITMENT_CONTEXT);
        hasher.update(responder_key);
        hasher.update(&self.flow_id);
        initiator.hash_into(&mut hasher);
        responder.hash_into(&mut hasher);
        hasher.finalize()
    }

    /// Diffie-Hellman with their ephemeral key; on success the flow moves to
    /// [`SasState::KeysExchanged`].
    fn exchange(&mut self, sas: Sas, their_key: [u8; 32]) -> Result<(), VerificationError> {
        let own_key = *sas.public_key().as_bytes();
        let sas = sas
            .diffie_hellman(Curve25519PublicKey::from_bytes(their_key))
            .map_err(|_| VerificationError::InvalidKey)?;
        let (initiator_key, responder_key) = match self.role {
            Role::Initiator => (own_key, their_key),
            Role::Responder => (their_key, own_key),
        };
        let (initiator, responder) = self.initiator_and_responder();
        let info = format!(
            "{SAS_LABEL}|{}|{}|{}|{}|{}",
            hex(&self.flow_id),
            initiator.info_part(),
            hex(&initiator_key),
            responder.info_part(),
            hex(&responder_key),
        );
        let short = ShortAuthString::derive(&sas, &info);
        self.phase = Phase::KeysExchanged(Box::new(Exchanged {
            sas,
            short,
            confirmed: false,
            their_mac_verified: false,
        }));
        Ok(())
    }

    /// Checks the other side's MACs against the identity we expect.
    fn verify_their_macs(
        &self,
        sas: &EstablishedSas,
        device_key: &[u8; 32],
        master_key: &[u8; 32],
    ) -> bool {
        let check = |input: &[u8], which: &str, tag: &[u8; 32]| {
            sas.verify_mac(
                &hex(input),
                &mac_info(&self.flow_id, &self.their, &self.own, which),
                &Mac::from_slice(tag),
            )
            .is_ok()
        };
        // Both are checked, so timing does not tell which one failed.
        let device_ok = check(&self.their.ed25519_key, "device_key", device_key);
        let master_ok = check(self.their.user_id.as_bytes(), "master_key", master_key);
        device_ok & master_ok
    }
}

/// The info string a MAC key is derived with: which flow, who sends to
/// whom, and which key is MACed.
fn mac_info(
    flow_id: &[u8; 16],
    sender: &DeviceIdentity,
    recipient: &DeviceIdentity,
    which: &str,
) -> String {
    format!(
        "{MAC_LABEL}|{}|{}|{}|{}|{}|{which}",
        hex(flow_id),
        sender.user_id,
        sender.device_id,
        recipient.user_id,
        recipient.device_id,
    )
}

/// The 32 bytes of an HMAC-SHA-256 tag. Were vodozemac ever to return
/// another length, the padded or cut tag would simply fail to verify.
fn mac_bytes(mac: &Mac) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (o, b) in out.iter_mut().zip(mac.as_bytes()) {
        *o = *b;
    }
    out
}

/// Lowercase hex, for info strings and `Debug`.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::device_id_for;

    fn identity(seed: u8) -> DeviceIdentity {
        let key = [seed; 32];
        DeviceIdentity {
            user_id: UserId::from_bytes([seed.wrapping_add(1); 32]),
            device_id: device_id_for(&key),
            ed25519_key: key,
        }
    }

    /// Runs two flows up to the point where both keys are known.
    fn exchanged() -> (SasFlow, SasFlow) {
        let (mut i, start) = SasFlow::start(identity(1), identity(2));
        let (mut r, accept) = SasFlow::respond(identity(2), identity(1), &start).unwrap();
        let key_i = i.receive(&accept).unwrap().unwrap();
        let key_r = r.receive(&key_i).unwrap().unwrap();
        assert_eq!(i.receive(&key_r).unwrap(), None);
        (i, r)
    }

    fn macs(flow: &SasFlow) -> (&EstablishedSas, &DeviceIdentity, &DeviceIdentity) {
        match &flow.phase {
            Phase::KeysExchanged(x) => (&x.sas, &flow.own, &flow.their),
            _ => panic!("keys not exchanged"),
        }
    }

    #[test]
    fn a_mac_of_another_device_key_is_refused() {
        let (i, mut r) = exchanged();
        let (sas, own, their) = macs(&i);
        let other = identity(9);
        // A MAC, under the right secret and info, of a key R does not expect.
        let forged = |input: &[u8], which| {
            mac_bytes(&sas.calculate_mac(&hex(input), &mac_info(&i.flow_id, own, their, which)))
        };
        let mac = i.message(VerificationStep::Mac {
            device_key: forged(&other.ed25519_key, "device_key"),
            master_key: forged(own.user_id.as_bytes(), "master_key"),
        });
        assert!(matches!(r.receive(&mac), Err(VerificationError::BadMac)));
        assert_eq!(r.state(), SasState::Cancelled(CancelReason::BadMac));
    }

    #[test]
    fn a_mac_of_the_right_key_under_the_wrong_label_is_refused() {
        let (i, mut r) = exchanged();
        let (sas, own, their) = macs(&i);
        let device_key = mac_bytes(&sas.calculate_mac(
            &hex(&own.ed25519_key),
            &mac_info(&i.flow_id, own, their, "master_key"),
        ));
        let master_key = mac_bytes(&sas.calculate_mac(
            &hex(own.user_id.as_bytes()),
            &mac_info(&i.flow_id, own, their, "master_key"),
        ));
        let mac = i.message(VerificationStep::Mac {
            device_key,
            master_key,
        });
        assert!(matches!(r.receive(&mac), Err(VerificationError::BadMac)));
    }

    #[test]
    fn hex_is_lowercase_and_two_digits_a_byte() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
    }

    #[test]
    fn the_emoji_table_has_64_distinct_names() {
        let mut names: Vec<_> = EMOJI.iter().map(|e| e.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 64);
        assert_eq!(EMOJI[0], emoji("🐶", "Dog"));
        assert_eq!(EMOJI[21], emoji("☁\u{FE0F}", "Cloud"));
        assert_eq!(EMOJI[36], emoji("👍", "Thumbs Up"));
        assert_eq!(EMOJI[63], emoji("📌", "Pin"));
    }
}
