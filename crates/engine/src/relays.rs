//! Relays for other devices: where a delivery goes when its device cannot
//! be reached, and the relay lists contacts announce.
//!
//! When a direct delivery finds its device unreachable and the device
//! listed relays, the same padded frame is sealed to the device's mailbox
//! key of the current epoch (every copy is fresh bytes) and deposited on
//! each of them (at most [`Config::mailbox_copies`]). A relay's receipt
//! counts only if it is signed by the relay's own key and names this
//! mailbox and these bytes (checked by the actor's relay client); with
//! one, the device is done for that item and the message shows "stored at
//! relay until T".
//!
//! [`Config::mailbox_copies`]: crate::Config::mailbox_copies

use libp2p::{Multiaddr, PeerId};
use safemeet_crypto::EncryptedBatch;
use safemeet_proto::event::ToDeviceEvent;
use safemeet_proto::identity::{RelayList, Signed};
use safemeet_proto::{DeviceId, Timestamp, codec};
use safemeet_store::{Keyspace, Store};

use crate::Error;
use crate::core::Core;
use crate::events::Output;
use crate::mailbox::{DeviceMailbox, Relay};
use crate::outbox::{MAX_IN_FLIGHT, outbox_item};
use crate::records::{MAX_RECORD_BYTES, MessageState, OutboxMeta, VERSION, name};

impl<S: Store + Clone> Core<S> {
    /// Keeps a contact device's relay list (checked to be that device's,
    /// from an invite or over Olm) unless a list as new is kept already,
    /// and uses it for deliveries already waiting too.
    pub(crate) fn keep_relay_list(&mut self, signed: &Signed<RelayList>) -> Result<(), Error> {
        let list = signed.decode_body()?;
        let device = list.device_id;
        let key = name::relay_list(&device);
        if let Some(bytes) = self.store.get(Keyspace::Contacts, &key)? {
            let kept = Signed::<RelayList>::from_bytes(&bytes)?.decode_body()?;
            if kept.issued_at >= list.issued_at {
                return Ok(());
            }
        }
        self.store
            .put(Keyspace::Contacts, &key, &signed.to_bytes()?)?;
        let Some(info) = self.machine.device(&device)? else {
            return Ok(());
        };
        let cert = info.certificate.decode_body()?;
        if let Ok(peer) = PeerId::from_bytes(&cert.peer_id) {
            let relays = self.relay_list(&device)?;
            self.mailboxes.insert(
                peer,
                DeviceMailbox {
                    key: cert.mailbox_key,
                    relays,
                },
            );
        }
        Ok(())
    }

    /// Tells every contact device when this device's relays changed since
    /// it last did (or since its invites, which carry them): a signed
    /// list over Olm, delivered (or left on their relays) like a message.
    pub(crate) fn announce_relays(&mut self) -> Result<(), Error> {
        let relays: Vec<String> = self.own_relays.iter().map(|r| r.addr.to_string()).collect();
        let announced = match self.store.get(Keyspace::Contacts, name::OWN_RELAYS)? {
            Some(bytes) => codec::decode::<Vec<String>>(&bytes, MAX_RECORD_BYTES)?,
            None => Vec::new(),
        };
        if announced == relays {
            return Ok(());
        }
        // Relays dropped from the list are still drained for as long as
        // they keep mail: contacts may leave mail there until they hear.
        let keep_ms = self
            .config
            .mailbox_catch_up_epochs
            .saturating_add(1)
            .saturating_mul(safemeet_crypto::mailbox::EPOCH_MILLIS);
        let until = self.now.wall.as_millis().saturating_add(keep_ms);
        let mut former: Vec<(String, u64)> = self
            .former_relays
            .iter()
            .filter(|(addr, _)| !relays.contains(addr))
            .cloned()
            .collect();
        for addr in announced.iter().filter(|a| !relays.contains(a)) {
            if !former.iter().any(|(a, _)| a == addr) {
                former.push((addr.clone(), until));
            }
        }
        self.store.put(
            Keyspace::Contacts,
            name::FORMER_RELAYS,
            &codec::encode(&former)?,
        )?;
        self.former_relays = former;
        let signed = self
            .machine
            .sign_relay_list(relays.clone(), self.now.wall)?;
        let meta = codec::encode(&OutboxMeta {
            version: VERSION,
            timeline: None,
        })?;
        let now = self.now.mono_ms();
        for user in self.contact_index()?.users {
            for device in self.machine.user_devices(&user)? {
                let event = ToDeviceEvent::RelayList(signed.clone());
                let queued = self
                    .machine
                    .encrypt_to_device(
                        user,
                        device.device_id,
                        event,
                        EncryptedBatch::default(),
                        &meta,
                    )
                    .map_err(Error::from)
                    .and_then(|out| {
                        self.track(out.outbox_seq, outbox_item(&out, &meta), Some(now))
                    });
                if let Err(e) = queued {
                    tracing::warn!(error = %e, "a contact device was not told of the new relays");
                }
            }
        }
        self.store.put(
            Keyspace::Contacts,
            name::OWN_RELAYS,
            &codec::encode(&relays)?,
        )?;
        Ok(())
    }

    /// The relays a contact device listed, as far as they parse.
    pub(crate) fn relay_list(&mut self, device: &DeviceId) -> Result<Vec<Relay>, Error> {
        let Some(bytes) = self
            .store
            .get(Keyspace::Contacts, &name::relay_list(device))?
        else {
            return Ok(Vec::new());
        };
        let signed = Signed::<RelayList>::from_bytes(&bytes)?;
        let list = self.machine.verify_relay_list(&signed)?;
        Ok(list
            .relays
            .iter()
            .filter_map(|a| a.parse::<Multiaddr>().ok())
            .filter_map(|a| Relay::from_addr(&a))
            .take(self.config.mailbox_copies)
            .collect())
    }

    /// Leaves an item for `peer`, which could not be reached, on its
    /// relays. Returns false when it has none (or too much is in flight).
    pub(crate) fn deposit(&mut self, seq: u64, peer: PeerId) -> bool {
        use safemeet_crypto::mailbox::{
            deposit_check_key, epoch_of, epoch_public_key, mailbox_id, seal,
        };
        let Some(mailbox) = self.mailboxes.get(&peer) else {
            return false;
        };
        if mailbox.relays.is_empty() || self.outbox.in_flight >= MAX_IN_FLIGHT {
            return false;
        }
        let Some(pending) = self.outbox.pending.get_mut(&seq) else {
            return false;
        };
        // Sealed to this epoch's mailbox key: every copy is fresh bytes.
        let epoch = epoch_of(self.now.wall);
        let check = deposit_check_key(&mailbox.key, epoch);
        let sealed = epoch_public_key(&mailbox.key, epoch).and_then(|key| {
            let frame = pending.item.frame()?;
            Ok((mailbox_id(&key), seal(&key, &frame)?))
        });
        let Ok((id, frame)) = sealed else {
            return false;
        };
        pending.in_flight.insert(peer);
        self.outbox.in_flight += 1;
        self.out.push(Output::Deposit {
            seq,
            peer,
            mailbox: id,
            relays: mailbox.relays.clone(),
            frame,
            check,
        });
        true
    }

    /// Records the outcome of a deposit on relays.
    pub(crate) fn deposit_done(&mut self, seq: u64, peer: PeerId, until: Option<Timestamp>) {
        self.outbox.in_flight = self.outbox.in_flight.saturating_sub(1);
        let Some(pending) = self.outbox.pending.get_mut(&seq) else {
            return;
        };
        pending.in_flight.remove(&peer);
        let Some(until) = until else {
            self.retry_later(seq);
            // Acknowledged meanwhile by its last device (over gossip).
            self.finish_if_done(seq);
            return;
        };
        pending.targets.retain(|t| t.peer != peer);
        let event = pending.event_id;
        if !pending.delivered_once {
            self.record_state(&[seq], MessageState::StoredAtRelay { until });
        }
        self.finish_if_done(seq);
        self.schedule_parked(seq);
        // A file message: its file follows it to the relays.
        if let Some(event) = event {
            self.file_left_on_relays(event, peer);
        }
    }
}
