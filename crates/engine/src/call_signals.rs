//! Call signalling in the core: [`CallSignal`]s go to a contact's
//! devices over Olm and come back to the call service (`calls`).
//!
//! - Sent like presence and typing (tried once, directly, never left on
//!   a relay: a call is now or never), but not behind any setting: a
//!   call is something the user does, not something shared in the
//!   background. They count against the same bound of signals in flight.
//! - Taken only from a contact or a member of one of this device's rooms
//!   (a meeting's) that this user does not refuse (blocked, removed,
//!   deleted), and only when the frame came straight from the
//!   peer the sending device's certificate names: a call signal replayed
//!   from a relay or handed on by another peer is dropped.
//! - At most [`MAX_QUEUED`] wait for the call service; past it they are
//!   dropped (counted), so a flood of invites costs a bounded queue.

use libp2p::{Multiaddr, PeerId};
use safemeet_proto::signal::{CallId, CallSignal, Signal};
use safemeet_proto::{DeviceId, RoomId, Timestamp, UserId};
use safemeet_store::Store;
use serde::{Deserialize, Serialize};

use crate::core::Core;
use crate::event_log::LogRecord;
use crate::events::{Command, Output, Response};
use crate::{Error, Handle};

/// Call signals waiting for the call service at most.
pub(crate) const MAX_QUEUED: usize = 64;

/// A call signal from a contact's device, for the call service.
#[derive(Debug, Clone)]
pub struct IncomingCallSignal {
    /// The sending user.
    pub user: UserId,
    /// The sending device.
    pub device: DeviceId,
    /// The device's peer (it delivered the signal itself).
    pub peer: PeerId,
    /// Where the peer may be found.
    pub addrs: Vec<Multiaddr>,
    /// The signal.
    pub signal: CallSignal,
}

/// How a call ended, as the event log keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallOutcome {
    /// It was answered (here, or on another device of this user).
    Answered,
    /// It rang here and nobody answered: a missed call.
    Missed,
    /// Declined (by this user, or by the one called).
    Declined,
    /// This user called and nobody answered, or no device could be
    /// reached.
    NoAnswer,
}

/// A call as the event log keeps it (nothing of its media).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRecord {
    /// The contact on the other end.
    pub with: UserId,
    /// The call.
    pub call_id: CallId,
    /// This user called.
    pub outgoing: bool,
    /// How it ended.
    pub outcome: CallOutcome,
    /// When it started ringing.
    pub at: Timestamp,
    /// How long it was answered for (ms; 0 unless answered).
    pub duration_ms: u64,
}

/// Users a meeting's record names at most (a long meeting with people
/// coming and going: the first ones met).
pub const MAX_MET: usize = 64;

/// A meeting this device was in, as the event log keeps it (nothing of
/// its media).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeetingRecord {
    /// The room.
    pub room_id: RoomId,
    /// The meeting.
    pub call_id: CallId,
    /// When this device joined it.
    pub at: Timestamp,
    /// How long this device was in it (ms).
    pub duration_ms: u64,
    /// Who else this device met in it, in the order they came (at most
    /// [`MAX_MET`]).
    pub with: Vec<UserId>,
}

/// What the call service writes into the event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallLog {
    /// A call with a contact ended.
    Call(CallRecord),
    /// This device left a meeting.
    Meeting(MeetingRecord),
}

impl<S: Store + Clone> Core<S> {
    /// Whether calls go to and come from `user`: a contact, or a member of
    /// a room this device is in (a meeting's participants need not all be
    /// contacts; the call service checks each signal against its call).
    fn may_call(&mut self, user: &UserId) -> Result<bool, Error> {
        if self.contact(user)?.is_some() {
            return Ok(true);
        }
        Ok(self.rooms_list()?.iter().any(|r| r.members.contains(user)))
    }

    /// A call command of the API's.
    pub(crate) fn call_command(&mut self, command: Command) -> Result<Response, Error> {
        Ok(match command {
            Command::CallSignal {
                user,
                device,
                signal,
            } => Response::CallSent(self.send_call_signal(user, device, signal)?),
            Command::NoteCall(CallLog::Call(record)) => {
                self.note_call(&LogRecord::Call(record))?;
                Response::Done
            }
            Command::NoteCall(CallLog::Meeting(record)) => {
                self.note_call(&LogRecord::Meeting(record))?;
                Response::Done
            }
            _ => return Err(Error::InvalidInput("not a call command".into())),
        })
    }

    /// Writes an ended call or meeting into the event log.
    fn note_call(&mut self, record: &LogRecord) -> Result<(), Error> {
        let mut batch = self.store.batch();
        crate::timeline::stage_log_at(&self.store, &mut batch, self.log_next, record)?;
        self.store.apply(batch)?;
        self.store.flush()?;
        self.log_next += 1;
        self.log_durable = self.log_next;
        Ok(())
    }

    /// Sends `signal` to `user`'s devices (or one of them), directly and
    /// once; the devices it went to (none: not a contact, or no device
    /// could be reached with a session).
    pub(crate) fn send_call_signal(
        &mut self,
        user: UserId,
        device: Option<DeviceId>,
        signal: CallSignal,
    ) -> Result<Vec<(DeviceId, PeerId)>, Error> {
        if user == self.user_id() || self.refuses(&user) || !self.may_call(&user)? {
            return Ok(Vec::new());
        }
        let mut sent = Vec::new();
        for info in self.machine.user_devices(&user)? {
            if device.is_some_and(|d| d != info.device_id) {
                continue;
            }
            let call = Signal::Call(signal.clone());
            if let Some(peer) = self.deliver_signal(user, info.device_id, call)? {
                sent.push((info.device_id, peer));
            }
        }
        Ok(sent)
    }

    /// A call signal arrived in a to-device message from `user`'s
    /// `device`, delivered by `from` (`None`: not directly).
    pub(crate) fn call_signal_received(
        &mut self,
        user: UserId,
        device: DeviceId,
        from: Option<PeerId>,
        signal: CallSignal,
    ) -> Result<bool, Error> {
        if self.refuses(&user) || !self.may_call(&user)? {
            return Ok(false);
        }
        let Some((peer, addrs)) = self.target(&user, &device)? else {
            return Ok(false);
        };
        if from != Some(peer) {
            return Ok(false);
        }
        self.out
            .push(Output::CallSignal(Box::new(IncomingCallSignal {
                user,
                device,
                peer,
                addrs,
                signal,
            })));
        Ok(true)
    }
}

impl Handle {
    /// Sends a call signal to `user`'s devices (or only `device`),
    /// directly and once; the devices it went to, with their peers.
    pub async fn send_call_signal(
        &self,
        user: UserId,
        device: Option<DeviceId>,
        signal: CallSignal,
    ) -> Result<Vec<(DeviceId, PeerId)>, Error> {
        match self
            .core(Command::CallSignal {
                user,
                device,
                signal,
            })
            .await?
        {
            Response::CallSent(sent) => Ok(sent),
            _ => Err(Error::InvalidInput("unexpected answer".into())),
        }
    }

    /// Writes an ended call into the event log (a missed call shows there).
    pub async fn note_call(&self, record: CallRecord) -> Result<(), Error> {
        self.core(Command::NoteCall(CallLog::Call(record)))
            .await
            .map(|_| ())
    }

    /// Writes a meeting this device left into the event log.
    pub async fn note_meeting(&self, record: MeetingRecord) -> Result<(), Error> {
        self.core(Command::NoteCall(CallLog::Meeting(record)))
            .await
            .map(|_| ())
    }
}
