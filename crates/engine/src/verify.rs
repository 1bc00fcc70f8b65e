//! Verifying a contact's device by SAS, over Olm to-device messages.
//!
//! `verify CONTACT` on both sides: the first to ask starts a flow with the
//! contact's device; the other, asking too, answers the `Start` it holds.
//! If both start at once, the flow of the lower device id goes on and the
//! other side answers it. Each side shows the short string once both
//! ephemeral keys are known; the users compare, and each confirms or
//! cancels. A confirmed flow whose other side's MACs verify marks the
//! device verified (see `CryptoMachine::mark_verified`).
//!
//! Flows and waiting `Start`s are bounded ([`MAX_FLOWS`]) and expire after
//! [`FLOW_TIMEOUT_MS`]: a contact who sends `Start` after `Start` can
//! neither grow this device's state nor keep a flow open.

use safemeet_crypto::verification::{SasFlow, SasState, ShortAuthString};
use safemeet_proto::event::{
    CancelReason, ToDeviceEvent, TrustNotice, Verification, VerificationStep,
};
use safemeet_proto::{DeviceId, UserId};
use safemeet_store::Store;
use serde::Serialize;

use crate::Error;
use crate::core::Core;

/// Most flows and waiting starts at once.
pub const MAX_FLOWS: usize = 8;
/// How long a flow or a waiting start lives.
pub(crate) const FLOW_TIMEOUT_MS: u64 = 10 * 60 * 1000;

/// A flow with a contact's device.
pub(crate) struct Flow {
    user: UserId,
    device: DeviceId,
    flow: SasFlow,
    started_ms: u64,
}

/// A `Start` from a contact's device, waiting for this user to agree.
pub(crate) struct Asked {
    user: UserId,
    device: DeviceId,
    start: Verification,
    at_ms: u64,
}

/// The flows of this device.
#[derive(Default)]
pub(crate) struct Verifications {
    flows: Vec<Flow>,
    asked: Vec<Asked>,
}

/// Where a verification with a contact stands, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct VerificationView {
    /// The contact.
    pub user_id: UserId,
    /// Their device being verified.
    pub device_id: DeviceId,
    /// `waiting` (for the other side), `asked` (they asked; run `verify`),
    /// `compare` (show the string), `confirmed` (waiting for their
    /// confirmation), `verified`, or `cancelled`.
    pub state: &'static str,
    /// Why it was cancelled.
    pub cancel_reason: Option<&'static str>,
    /// The seven emoji with their names, once both keys are known.
    pub emoji: Vec<(String, String)>,
    /// The three numbers, once both keys are known.
    pub decimals: Vec<u16>,
}

fn reason_name(r: CancelReason) -> &'static str {
    match r {
        CancelReason::User => "cancelled by a user",
        CancelReason::Mismatch => "the strings did not match",
        CancelReason::BadCommitment => "a key did not match its commitment",
        CancelReason::BadMac => "a MAC did not verify",
        CancelReason::UnexpectedStep => "a step came out of order",
        CancelReason::Timeout => "it took too long",
        _ => "cancelled",
    }
}

impl Flow {
    fn view(&self) -> VerificationView {
        let (state, cancel_reason) = match self.flow.state() {
            SasState::Started | SasState::Accepted => ("waiting", None),
            SasState::KeysExchanged => ("compare", None),
            SasState::Confirmed => ("confirmed", None),
            SasState::Done => ("verified", None),
            SasState::Cancelled(r) => ("cancelled", Some(reason_name(r))),
            _ => ("waiting", None),
        };
        let sas: Option<ShortAuthString> = self.flow.short_auth_string();
        VerificationView {
            user_id: self.user,
            device_id: self.device,
            state,
            cancel_reason,
            emoji: sas
                .map(|s| {
                    s.emoji
                        .iter()
                        .map(|e| (e.symbol.to_owned(), e.name.to_owned()))
                        .collect()
                })
                .unwrap_or_default(),
            decimals: sas.map(|s| s.decimals.to_vec()).unwrap_or_default(),
        }
    }
}

impl<S: Store + Clone> Core<S> {
    fn expire_flows(&mut self) {
        let now = self.now.mono_ms();
        let live = |at: u64| now.saturating_sub(at) < FLOW_TIMEOUT_MS;
        self.verify.flows.retain(|f| live(f.started_ms));
        self.verify.asked.retain(|a| live(a.at_ms));
    }

    /// This user's active devices and the contacts' verified devices.
    pub(crate) fn verified_devices(&mut self) -> Result<Vec<DeviceId>, Error> {
        let me = self.user_id();
        let mut out: Vec<DeviceId> = vec![self.machine.account().device_id()];
        out.extend(self.machine.user_devices(&me)?.iter().map(|d| d.device_id));
        for c in self.contact_records()?.iter() {
            for d in self.machine.user_devices(&c.user_id)? {
                if d.trust == safemeet_crypto::machine::DeviceTrust::Verified {
                    out.push(d.device_id);
                }
            }
        }
        Ok(out)
    }

    /// `verify CONTACT`: answers their waiting `Start`, or starts a flow
    /// with their first device not verified yet (replacing a flow with
    /// them before).
    pub(crate) fn verify_start(&mut self, user: UserId) -> Result<VerificationView, Error> {
        self.expire_flows();
        if self.contact(&user)?.is_none() {
            return Err(Error::UnknownContact(user));
        }
        let own = self.machine.own_identity();
        if let Some(i) = self.verify.asked.iter().position(|a| a.user == user) {
            let asked = self.verify.asked.remove(i);
            let their = self.machine.device_identity(&asked.device)?;
            let (flow, accept) = SasFlow::respond(own, their, &asked.start)
                .map_err(|e| Error::InvalidInput(format!("the verification failed: {e}")))?;
            self.verify.flows.retain(|f| f.user != user);
            self.send_to_device(user, asked.device, ToDeviceEvent::Verification(accept));
            return Ok(self.keep_flow(user, asked.device, flow));
        }
        // Their first device not verified yet, else their first.
        let devices = self.machine.user_devices(&user)?;
        let device = devices
            .iter()
            .find(|d| d.trust != safemeet_crypto::machine::DeviceTrust::Verified)
            .or(devices.first())
            .map(|d| d.device_id)
            .ok_or_else(|| Error::InvalidInput("the contact has no device to verify".into()))?;
        let their = self.machine.device_identity(&device)?;
        let (flow, start) = SasFlow::start(own, their);
        self.verify.flows.retain(|f| f.user != user);
        self.send_to_device(user, device, ToDeviceEvent::Verification(start));
        Ok(self.keep_flow(user, device, flow))
    }

    fn keep_flow(&mut self, user: UserId, device: DeviceId, flow: SasFlow) -> VerificationView {
        if self.verify.flows.len() >= MAX_FLOWS {
            self.verify.flows.remove(0);
        }
        let flow = Flow {
            user,
            device,
            flow,
            started_ms: self.now.mono_ms(),
        };
        let view = flow.view();
        self.verify.flows.push(flow);
        view
    }

    /// Where the verification with `user` stands.
    pub(crate) fn verify_status(&mut self, user: UserId) -> Result<VerificationView, Error> {
        self.expire_flows();
        if let Some(f) = self.verify.flows.iter().find(|f| f.user == user) {
            return Ok(f.view());
        }
        if let Some(a) = self.verify.asked.iter().find(|a| a.user == user) {
            return Ok(VerificationView {
                user_id: user,
                device_id: a.device,
                state: "asked",
                cancel_reason: None,
                emoji: Vec::new(),
                decimals: Vec::new(),
            });
        }
        Err(Error::InvalidInput(
            "no verification with this contact: run `verify` first".into(),
        ))
    }

    /// This user says the strings match (`yes`) or not.
    pub(crate) fn verify_answer(
        &mut self,
        user: UserId,
        matches: bool,
    ) -> Result<VerificationView, Error> {
        self.expire_flows();
        let i = self
            .verify
            .flows
            .iter()
            .position(|f| f.user == user)
            .ok_or_else(|| Error::InvalidInput("no verification with this contact".into()))?;
        let device = self.verify.flows[i].device;
        let message = if matches {
            if self.verify.flows[i].flow.state() != SasState::KeysExchanged {
                return Err(Error::InvalidInput(
                    "there is nothing to compare yet".into(),
                ));
            }
            self.verify.flows[i]
                .flow
                .confirm()
                .map_err(|e| Error::InvalidInput(format!("the verification failed: {e}")))?
        } else {
            self.verify.flows[i].flow.cancel(CancelReason::Mismatch)
        };
        self.send_to_device(user, device, ToDeviceEvent::Verification(message));
        self.finish_flow(i)?;
        Ok(self.verify.flows[i].view())
    }

    /// A done flow marks the device verified, and this user's other
    /// devices learn it (cross-signing).
    fn finish_flow(&mut self, i: usize) -> Result<(), Error> {
        if self.verify.flows[i].flow.state() != SasState::Done {
            return Ok(());
        }
        self.machine
            .mark_verified(&self.verify.flows[i].flow, self.now.wall)?;
        tracing::info!("a contact device was verified");
        let (user, device) = (self.verify.flows[i].user, self.verify.flows[i].device);
        self.security("contact_device_verified", Some(device.to_string()));
        let trust = self.machine.user_trust(&user, &[device], self.now.wall)?;
        let notice = if self.machine.account().has_master_key() {
            TrustNotice::Signed(self.machine.sign_user_trust(&trust)?)
        } else {
            TrustNotice::Request(trust)
        };
        self.tell_own_devices(notice)
    }

    /// `contact verify INVITE`: the contact's invite, scanned from their
    /// screen or handed over in person, names the keys this device holds
    /// for them: those devices are verified (and cross-signed).
    pub(crate) fn verify_by_invite(
        &mut self,
        text: &str,
    ) -> Result<(UserId, Vec<DeviceId>), Error> {
        let invite = safemeet_proto::invite::Invite::from_text(text)?;
        let user = invite.device_list.decode_body()?.user_id;
        if self.contact(&user)?.is_none() {
            return Err(Error::InvalidInput(
                "this invite is not a contact's: add it with `contact add` first".into(),
            ));
        }
        let mut devices = Vec::new();
        for signed in &invite.certificates {
            let cert = safemeet_crypto::certificate::verify_device_certificate(signed, &user)?;
            let hash = safemeet_crypto::certificate::certificate_hash(signed)?;
            let held = self.machine.device(&cert.device_id)?;
            if held.is_some_and(|d| {
                safemeet_crypto::certificate::certificate_hash(&d.certificate).ok() == Some(hash)
            }) {
                devices.push(cert.device_id);
            }
        }
        if devices.is_empty() {
            return Err(Error::InvalidInput(
                "the invite's keys are not the keys held for this contact: do not trust them until you have checked face to face".into(),
            ));
        }
        let trust = self.machine.user_trust(&user, &devices, self.now.wall)?;
        self.machine.mark_trusted(&trust, self.now.wall)?;
        self.security("contact_verified_in_person", Some(user.to_string()));
        let notice = if self.machine.account().has_master_key() {
            TrustNotice::Signed(self.machine.sign_user_trust(&trust)?)
        } else {
            TrustNotice::Request(trust)
        };
        self.tell_own_devices(notice)?;
        Ok((user, devices))
    }

    /// Sends a trust notice to each other device of this user.
    fn tell_own_devices(&mut self, notice: TrustNotice) -> Result<(), Error> {
        let me = self.user_id();
        for d in self.machine.user_devices(&me)? {
            let event = ToDeviceEvent::Trust(Box::new(notice.clone()));
            self.send_to_device(me, d.device_id, event);
        }
        Ok(())
    }

    /// A trust notice from another device of this user (the crypto
    /// machine checked it came from one): signed trust is taken in; a
    /// request is signed here, on the device with the master key, and
    /// sent to every device of this user.
    pub(crate) fn trust_received(&mut self, notice: TrustNotice) -> Result<(), Error> {
        let signed = match notice {
            TrustNotice::Signed(signed) => signed,
            TrustNotice::Request(trust) => {
                if !self.machine.account().has_master_key() || trust.truster != self.user_id() {
                    return Ok(());
                }
                let signed = self.machine.sign_user_trust(&trust)?;
                self.tell_own_devices(TrustNotice::Signed(signed.clone()))?;
                signed
            }
        };
        let marked = self.machine.accept_user_trust(&signed, self.now.wall)?;
        if marked > 0 {
            self.security("contact_trusted_from_own_device", None);
        }
        tracing::info!(
            devices = marked,
            "trust from another device of this user taken in"
        );
        Ok(())
    }

    /// A verification step from a contact's device.
    pub(crate) fn verification_received(
        &mut self,
        user: UserId,
        device: DeviceId,
        message: Verification,
    ) -> Result<(), Error> {
        self.expire_flows();
        let own_device = self.machine.account().device_id();
        if message.step == VerificationStep::Start {
            if self.contact(&user)?.is_none() {
                return Ok(());
            }
            // Both started: the lower device id's flow goes on.
            let ours = self
                .verify
                .flows
                .iter()
                .position(|f| f.user == user && f.flow.state() == SasState::Started);
            if let Some(i) = ours {
                if own_device < device {
                    return Ok(());
                }
                self.verify.flows.remove(i);
                let own = self.machine.own_identity();
                let their = self.machine.device_identity(&device)?;
                let (flow, accept) = SasFlow::respond(own, their, &message)
                    .map_err(|e| Error::InvalidInput(format!("the verification failed: {e}")))?;
                self.send_to_device(user, device, ToDeviceEvent::Verification(accept));
                self.keep_flow(user, device, flow);
                return Ok(());
            }
            self.verify.asked.retain(|a| a.user != user);
            if self.verify.asked.len() >= MAX_FLOWS {
                self.verify.asked.remove(0);
            }
            self.verify.asked.push(Asked {
                user,
                device,
                start: message,
                at_ms: self.now.mono_ms(),
            });
            return Ok(());
        }
        let Some(i) = self.verify.flows.iter().position(|f| {
            f.user == user && f.device == device && f.flow.flow_id() == message.flow_id
        }) else {
            return Ok(());
        };
        match self.verify.flows[i].flow.receive(&message) {
            Ok(Some(reply)) => {
                self.send_to_device(user, device, ToDeviceEvent::Verification(reply));
            }
            Ok(None) => {}
            Err(e) => {
                tracing::info!(error = %e, "a verification was cancelled");
                if !matches!(message.step, VerificationStep::Cancel { .. }) {
                    let cancel = self.verify.flows[i]
                        .flow
                        .cancel(CancelReason::UnexpectedStep);
                    self.send_to_device(user, device, ToDeviceEvent::Verification(cancel));
                }
            }
        }
        self.finish_flow(i)
    }
}

/// The verification an answer carries.
fn verification(answer: crate::events::Response) -> Result<VerificationView, Error> {
    match answer {
        crate::events::Response::Verification(v) => Ok(v),
        _ => Err(Error::InvalidInput("unexpected answer".into())),
    }
}

impl crate::Handle {
    /// Starts or answers a SAS verification with a contact's device.
    pub async fn verify_start(&self, user: UserId) -> Result<VerificationView, Error> {
        verification(self.core(crate::events::Command::VerifyStart(user)).await?)
    }

    /// Verifies a contact from their invite (scanned or pasted in person):
    /// the devices it names whose keys match those held are verified.
    pub async fn verify_invite(&self, invite: &str) -> Result<(UserId, Vec<DeviceId>), Error> {
        let command = crate::events::Command::VerifyInvite(invite.to_owned());
        match self.core(command).await? {
            crate::events::Response::UserDevices(u, d) => Ok((u, d)),
            _ => Err(Error::InvalidInput("unexpected answer".into())),
        }
    }

    /// Where the verification with a contact stands.
    pub async fn verify_status(&self, user: UserId) -> Result<VerificationView, Error> {
        verification(
            self.core(crate::events::Command::VerifyStatus(user))
                .await?,
        )
    }

    /// This user compared the strings: they match (confirm) or not (cancel).
    pub async fn verify_answer(
        &self,
        user: UserId,
        matches: bool,
    ) -> Result<VerificationView, Error> {
        let command = crate::events::Command::VerifyAnswer { user, matches };
        verification(self.core(command).await?)
    }
}
