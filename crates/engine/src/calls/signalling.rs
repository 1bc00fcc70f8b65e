//! The call service, continued: what the other side's signals and
//! media streams do to the call on now.

use super::*;

impl Service {
    pub(super) async fn signal(&mut self, incoming: IncomingCallSignal) {
        let id = incoming.signal.call_id();
        let for_meeting = matches!(
            incoming.signal,
            CallSignal::Join { .. } | CallSignal::Here { .. } | CallSignal::Leave { .. }
        ) || self.meeting.as_ref().is_some_and(|m| m.id() == id);
        if for_meeting {
            self.meeting_signal(incoming).await;
            return;
        }
        let IncomingCallSignal {
            user,
            device,
            peer,
            addrs,
            signal,
        } = incoming;
        if let CallSignal::Invite { call_id } = signal {
            if self.current.as_ref().is_some_and(|c| c.id == call_id) {
                return;
            }
            if self.busy() {
                let busy = CallSignal::Hangup {
                    call_id,
                    reason: HangupReason::Busy,
                };
                self.send(user, Some(device), busy).await;
                return;
            }
            let now = SystemClock.instant();
            self.current = Some(Call {
                id: call_id,
                with: user,
                outgoing: false,
                state: CallState::Ringing,
                at: SystemClock.now(),
                rang_at: now,
                invited: Vec::new(),
                other: Some(Other {
                    device,
                    peer,
                    addrs,
                    index: 0,
                }),
                media: None,
                answered: None,
                audio: CallAudio::default(),
                early_key: None,
                last_report: now,
                heard_by_other: false,
                path: None,
            });
            self.send(user, Some(device), CallSignal::Ringing { call_id })
                .await;
            return;
        }
        // Anything else is about the call on now, from its other end.
        let Some(call) = self
            .current
            .as_mut()
            .filter(|c| c.id == id && c.with == user)
        else {
            return;
        };
        let from_other = call.other.as_ref().is_some_and(|o| o.device == device);
        let from_invited = call.invited.iter().any(|(d, _)| *d == device);
        match signal {
            CallSignal::Invite { .. } | CallSignal::Ringing { .. } => {}
            CallSignal::Accept { .. } if call.state == CallState::Calling && from_invited => {
                if let Err(e) = self.answered(device, peer, addrs).await {
                    tracing::warn!(error = %e, "an answered call could not start");
                    self.end_for_all(HangupReason::Lost, CallOutcome::Answered, "media failed")
                        .await;
                }
            }
            CallSignal::Decline { .. } if call.state == CallState::Calling && from_invited => {
                self.end(CallOutcome::Declined, "declined").await;
            }
            CallSignal::Hangup { reason, .. } if from_other || from_invited => {
                let (outcome, why) = match (call.state, reason) {
                    (CallState::Ringing, HangupReason::AnsweredElsewhere) => {
                        (CallOutcome::Answered, "answered on another device")
                    }
                    (CallState::Ringing, _) => (CallOutcome::Missed, "missed"),
                    (CallState::Calling, HangupReason::Busy) => (CallOutcome::NoAnswer, "busy"),
                    (CallState::Calling, _) => (CallOutcome::NoAnswer, "no answer"),
                    (_, HangupReason::Lost) => (CallOutcome::Answered, "lost"),
                    _ => (CallOutcome::Answered, "hung up by the other side"),
                };
                self.end(outcome, why).await;
            }
            CallSignal::Key {
                index, epoch, key, ..
            } if from_other && call.other.as_ref().is_some_and(|o| o.index == index) => {
                let base = BaseKey::from_bytes(key.0);
                match &call.media {
                    Some(media) => media.learn_key(&peer, epoch, base),
                    None => call.early_key = Some((device, index, epoch, base)),
                }
            }
            // The callee's key may come before its answer (two deliveries,
            // either may be first): kept for when the answer comes.
            CallSignal::Key {
                index, epoch, key, ..
            } if call.state == CallState::Calling && from_invited && index == 1 => {
                call.early_key = Some((device, index, epoch, BaseKey::from_bytes(key.0)));
            }
            CallSignal::Report { loss_permille, .. } if from_other => {
                call.heard_by_other = true;
                if let Some(media) = &call.media {
                    let percent = u8::try_from(loss_permille.min(1000).div_ceil(10)).unwrap_or(100);
                    media.set_expected_loss(percent);
                }
            }
            _ => {}
        }
    }

    /// A callee's device answered this user's call.
    pub(super) async fn answered(
        &mut self,
        device: DeviceId,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
    ) -> Result<(), Error> {
        let Some(call) = self.current.as_mut() else {
            return Ok(());
        };
        let other = Other {
            device,
            peer,
            addrs,
            index: 1,
        };
        let mut media = Media::start(
            call.id,
            0,
            &call.audio,
            self.net.clone(),
            self.cancel.child_token(),
        )?;
        media.add_peer(other.index, other.peer, other.addrs.clone())?;
        if let Some((_, _, epoch, base)) = call.early_key.take().filter(|k| k.0 == device) {
            media.learn_key(&peer, epoch, base);
        }
        let (index, epoch, base) = media.own_key();
        let others: Vec<DeviceId> = call
            .invited
            .iter()
            .map(|(d, _)| *d)
            .filter(|d| *d != device)
            .collect();
        yield_files(&self.handle, Some(other.peer));
        call.media = Some(media);
        call.other = Some(other);
        call.state = CallState::Active;
        let now = SystemClock.instant();
        call.answered = Some(now);
        call.last_report = now;
        let (id, with) = (call.id, call.with);
        self.send(with, Some(device), key_signal(id, index, epoch, &base))
            .await;
        for d in others {
            let elsewhere = CallSignal::Hangup {
                call_id: id,
                reason: HangupReason::AnsweredElsewhere,
            };
            self.send(with, Some(d), elsewhere).await;
        }
        Ok(())
    }

    /// Whether a media stream from `peer` may be for the call on now.
    pub(super) fn expects(&self, peer: &PeerId) -> bool {
        if self.meeting.as_ref().is_some_and(|m| m.expects(peer)) {
            return true;
        }
        self.current.as_ref().is_some_and(|c| {
            c.state == CallState::Active && c.other.as_ref().is_some_and(|o| o.peer == *peer)
        })
    }

    /// A media stream named its call and sender: attached if both are
    /// the call's on now, from the device on the other end.
    pub(super) fn attach(&mut self, peer: PeerId, id: CallId, index: u8, stream: libp2p::Stream) {
        if let Some(m) = self.meeting.as_mut().filter(|m| m.id() == id) {
            m.attach(peer, id, index, stream);
            return;
        }
        if let Some(call) = self.current.as_mut().filter(|c| c.id == id)
            && call
                .other
                .as_ref()
                .is_some_and(|o| o.peer == peer && o.index == index)
            && let Some(media) = &mut call.media
        {
            media.attach(peer, stream);
        }
    }
}
