//! A call's keys: this device's sending key, and the keys it holds of
//! each other participant's.
//!
//! - Every participant device has an index in the call (0–255) and sends
//!   under its own base key, in epochs: the KID is `epoch << 8 | index`
//!   ([`kid`]), so a frame names its sender and the key it was sealed
//!   with, and a counter never repeats under a KID ([`SendKey`]). The
//!   counter goes on across a sender's keys: it numbers the sender's
//!   frames, which receivers order and time by.
//! - A base key goes to each other participant's device over Olm, one to
//!   one (never over the room's Megolm session: a removed device still
//!   holds those). This module makes the keys; carrying them is the
//!   caller's.
//! - **Someone joins:** each sender ratchets its key one step
//!   ([`OwnKey::ratchet_for_join`]) and hands the new key to the joiner
//!   only. The others follow without a message: a frame under the next
//!   epochs is opened with the key they hold ratcheted forward (at most
//!   [`MAX_RATCHET_AHEAD`] steps), kept only if the frame opens. The
//!   joiner cannot go back to the keys before it came.
//! - **Someone leaves:** each sender makes a fresh key
//!   ([`OwnKey::rotate_for_leave`]), hands it to those who stay, and
//!   seals with it from [`OwnKey::switch`] on, [`LEAVE_SWITCH`] later, so
//!   it has reached them first. The one who left holds nothing that
//!   opens what follows.

use std::time::Duration;

use crate::sframe::{BaseKey, Header, ReceiveKeys, SendKey, SframeError, ratchet};
use zeroize::Zeroizing;

/// How long after handing out a fresh key (someone left) a sender starts
/// sealing with it.
pub const LEAVE_SWITCH: Duration = Duration::from_secs(1);
/// How many epochs ahead of the key it holds a receiver ratchets to open
/// a frame.
pub const MAX_RATCHET_AHEAD: u32 = 8;

/// The KID of participant `index`'s key in `epoch`.
pub fn kid(index: u8, epoch: u32) -> u64 {
    (u64::from(epoch) << 8) | u64::from(index)
}

/// The participant index and epoch a KID names (`None`: not a KID this
/// scheme makes).
pub fn split_kid(kid: u64) -> Option<(u8, u32)> {
    let epoch = u32::try_from(kid >> 8).ok()?;
    Some(((kid & 0xff) as u8, epoch))
}

/// This device's sending side of a call.
pub struct OwnKey {
    index: u8,
    epoch: u32,
    base: BaseKey,
    send: SendKey,
    /// A fresh key handed out, not sealed with yet.
    pending: Option<(u32, BaseKey)>,
}

impl std::fmt::Debug for OwnKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnKey")
            .field("index", &self.index)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl OwnKey {
    /// A fresh key for participant `index`, epoch 0.
    pub fn new(index: u8) -> Self {
        let base = BaseKey::generate();
        Self {
            index,
            epoch: 0,
            send: SendKey::new(&base, kid(index, 0)),
            base,
            pending: None,
        }
    }

    /// The key sealed with now: its epoch and base (what a participant
    /// who is already in the call is handed).
    pub fn current(&self) -> (u32, BaseKey) {
        (self.epoch, self.base.clone())
    }

    /// The participant index.
    pub fn index(&self) -> u8 {
        self.index
    }

    /// Someone joined: the key moves one step on (sealing with it at
    /// once); the new epoch and base go to the joiner only.
    pub fn ratchet_for_join(&mut self) -> (u32, BaseKey) {
        let next = ratchet(&self.base);
        self.set(self.epoch.wrapping_add(1), next);
        self.current()
    }

    /// Someone left: a fresh key for those who stay, sealed with from
    /// [`switch`](Self::switch) on.
    pub fn rotate_for_leave(&mut self) -> (u32, BaseKey) {
        let epoch = self
            .pending
            .as_ref()
            .map_or(self.epoch, |(e, _)| *e)
            .wrapping_add(1);
        let fresh = BaseKey::generate();
        self.pending = Some((epoch, fresh.clone()));
        (epoch, fresh)
    }

    /// Starts sealing with the fresh key handed out, if there is one.
    pub fn switch(&mut self) {
        if let Some((epoch, base)) = self.pending.take() {
            self.set(epoch, base);
        }
    }

    fn set(&mut self, epoch: u32, base: BaseKey) {
        self.epoch = epoch;
        self.send = SendKey::following(&self.send, &base, kid(self.index, epoch));
        self.base = base;
    }

    /// Seals a frame's payload, binding `metadata` (the call's id).
    pub fn seal(&mut self, metadata: &[u8], payload: &[u8]) -> Result<Vec<u8>, SframeError> {
        self.send.encrypt(metadata, payload)
    }
}

/// What this device holds of one other participant's keys.
#[derive(Debug)]
pub struct PeerKeys {
    index: u8,
    /// The newest key handed over, and its epoch.
    latest: Option<(u32, BaseKey)>,
    keys: ReceiveKeys,
}

impl PeerKeys {
    /// Nothing held yet of participant `index`.
    pub fn new(index: u8) -> Self {
        Self {
            index,
            latest: None,
            keys: ReceiveKeys::new(),
        }
    }

    /// A key the participant handed over (over Olm): its epoch and base.
    pub fn learn(&mut self, epoch: u32, base: BaseKey) {
        self.keys.add(&base, kid(self.index, epoch));
        if self.latest.as_ref().is_none_or(|(e, _)| epoch > *e) {
            self.latest = Some((epoch, base));
        }
    }

    /// The newest epoch of the participant's keys held.
    pub fn latest_epoch(&self) -> Option<u32> {
        self.latest.as_ref().map(|(e, _)| *e)
    }

    /// Opens one of the participant's frames sealed with `metadata`.
    pub fn open(
        &mut self,
        frame: &[u8],
        metadata: &[u8],
    ) -> Result<(Header, Zeroizing<Vec<u8>>), SframeError> {
        let (header, _) = Header::decode(frame)?;
        let (index, epoch) = split_kid(header.kid).ok_or(SframeError::UnknownKey)?;
        if index != self.index {
            return Err(SframeError::UnknownKey);
        }
        if self.keys.holds(header.kid) {
            return self.keys.decrypt(frame, metadata);
        }
        // A later epoch: the key held, ratcheted forward (someone joined).
        let Some((held, base)) = &self.latest else {
            return Err(SframeError::UnknownKey);
        };
        let ahead = epoch
            .checked_sub(*held)
            .filter(|a| (1..=MAX_RATCHET_AHEAD).contains(a));
        let Some(ahead) = ahead else {
            return Err(SframeError::UnknownKey);
        };
        let mut next = base.clone();
        for _ in 0..ahead {
            next = ratchet(&next);
        }
        let opened = self.keys.decrypt_with(next.expose(), frame, metadata)?;
        self.latest = Some((epoch, next));
        Ok(opened)
    }
}
