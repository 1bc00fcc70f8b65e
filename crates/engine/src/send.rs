//! Sending: an event is encrypted and committed to the outbox together
//! with this device's timeline and event-log entries, then queued for
//! delivery.
//!
//! Sends that arrive together form a group (up to [`MAX_GROUP`]) that
//! shares one flush (`CryptoMachine::release`); no ciphertext can leave
//! before it, because the machine wraps it in `Unflushed` until then.

use std::sync::Arc;

use safemeet_crypto::EncryptedBatch;
use safemeet_crypto::machine::{Destination, RoomMessage, RoomSend, Unflushed};
use safemeet_proto::event::{EventContent, Message, MessageText};
use safemeet_proto::{EventId, codec};
use safemeet_store::Store;

use crate::Error;
use crate::core::{Core, Target};
use crate::events::{Output, RequestId, Response};
use crate::outbox::outbox_item;
use crate::placement::FollowUp;
use crate::records::{MessageState, OutboxMeta, Revision, RoomRecord, TimelineEntry, VERSION};
use crate::revisions::{Change, stage_change};
use crate::rooms::stage_room;
use crate::timeline::stage_message;

/// Most sends that share one flush.
pub(crate) const MAX_GROUP: usize = 64;

impl<S: Store + Clone> Core<S> {
    /// The room a send goes to.
    pub(crate) fn send_room(&mut self, target: &Target) -> Result<RoomRecord, Error> {
        match target {
            Target::Room(room) => self.group_room(room),
            Target::User(user) => {
                if self.contact(user)?.is_none() {
                    return Err(Error::UnknownContact(*user));
                }
                if self.is_deleted(user) {
                    return Err(Error::InvalidInput(
                        "this contact deleted their account: nothing can be sent to it".into(),
                    ));
                }
                self.dm(*user)
            }
        }
    }

    /// Sends texts, [`MAX_GROUP`] at a time with one flush each: each is
    /// encrypted and committed in turn, then the group is released
    /// together. Each request gets its own answer.
    pub(crate) fn send_texts(&mut self, sends: Vec<(RequestId, Target, String)>) {
        self.client_active();
        let mut sends = sends.into_iter().peekable();
        while sends.peek().is_some() {
            let group: Vec<_> = sends.by_ref().take(MAX_GROUP).collect();
            self.send_group(group);
        }
    }

    fn send_group(&mut self, group: Vec<(RequestId, Target, String)>) {
        let mut staged = Vec::with_capacity(group.len());
        let mut waiting = Vec::with_capacity(group.len());
        for (id, target, text) in group {
            let result = self
                .send_room(&target)
                .and_then(|room| self.stage_text(room, &text));
            match result {
                Ok((unflushed, meta)) => {
                    staged.push(unflushed);
                    waiting.push((id, meta));
                }
                Err(e) => self.out.push(Output::Reply(id, Err(e))),
            }
        }
        if staged.is_empty() {
            return;
        }
        match self.machine.release(staged) {
            Ok(sent) => {
                self.log_durable = self.log_next;
                for (sent, (id, meta)) in sent.iter().zip(waiting) {
                    let result = self
                        .queue_sent(sent, &meta)
                        .map(|()| Response::Sent(sent.event_id));
                    self.out.push(Output::Reply(id, result));
                }
            }
            Err(e) => {
                let e = Arc::new(e);
                for (id, _) in waiting {
                    self.out
                        .push(Output::Reply(id, Err(Error::Commit(e.clone()))));
                }
            }
        }
    }

    fn stage_text(
        &mut self,
        room: RoomRecord,
        text: &str,
    ) -> Result<(Unflushed<RoomSend>, Vec<u8>), Error> {
        if text.trim().is_empty() {
            return Err(Error::InvalidInput("a message cannot be empty".into()));
        }
        let body = MessageText::new(text).map_err(|e| Error::InvalidInput(e.to_string()))?;
        self.stage_event(
            room,
            EventContent::Message(Message {
                body,
                reply_to: None,
            }),
            None,
        )
    }

    /// Encrypts an event for a room and commits it with its timeline entry
    /// (for messages) and event-log entry, flushed, then queues its delivery.
    pub(crate) fn send_event(
        &mut self,
        room: RoomRecord,
        content: EventContent,
    ) -> Result<EventId, Error> {
        self.send_change(room, content, None)
    }

    /// [`send_event`](Self::send_event), with a change this device makes
    /// to its own records in the same commit (see `revisions`).
    pub(crate) fn send_change(
        &mut self,
        room: RoomRecord,
        content: EventContent,
        change: impl Into<Option<Change>>,
    ) -> Result<EventId, Error> {
        let (unflushed, meta) = self.stage_event(room, content, change.into())?;
        let mut sent = self.machine.release(vec![unflushed])?;
        self.log_durable = self.log_next;
        let sent = sent.pop().ok_or(Error::Stopped)?;
        self.queue_sent(&sent, &meta)?;
        Ok(sent.event_id)
    }

    /// Encrypts an event for a room and commits it (not flushed) with its
    /// timeline entry (for messages) and event-log entry. Returns it with
    /// its outbox meta, to be released.
    fn stage_event(
        &mut self,
        mut room: RoomRecord,
        content: EventContent,
        change: Option<Change>,
    ) -> Result<(Unflushed<RoomSend>, Vec<u8>), Error> {
        if room.left {
            return Err(Error::InvalidInput("you left this room".into()));
        }
        let (text, file) = match &content {
            EventContent::Message(m) => (Some(m.body.as_str().to_owned()), None),
            EventContent::File(f) => (Some(f.caption.as_str().to_owned()), Some(f.file.clone())),
            _ => (None, None),
        };
        room.lamport = room.lamport.saturating_add(1);
        if matches!(content, EventContent::RoomState(_)) {
            room.state_lamport = room.lamport;
        }
        let seq = room.next_seq;
        if text.is_some() {
            room.next_seq += 1;
        }
        let me = self.machine.account().user_id();
        let device = self.machine.account().device_id();
        let ts = self.now.wall;
        let meta = codec::encode(&OutboxMeta {
            version: VERSION,
            timeline: text.as_ref().map(|_| (room.room_id, seq)),
        })?;
        let store = self.store.clone();
        let log_seq = self.log_next;
        let change_log = change.as_ref().map_or(0, Change::log_entries);
        let room_for_writes = room.clone();
        let members = room.members.clone();
        let writes = |event_id: &EventId| -> Result<EncryptedBatch, safemeet_crypto::Error> {
            let mut batch = store.batch();
            match &text {
                Some(text) => {
                    let entry = TimelineEntry {
                        event_id: *event_id,
                        sender: me,
                        sender_device: device,
                        lamport: room_for_writes.lamport,
                        ts,
                        text: text.clone(),
                        state: MessageState::Sent,
                        revision: Revision::Original,
                        received_at: ts,
                        file: file.clone(),
                    };
                    stage_message(&store, &mut batch, &room_for_writes, seq, &entry, log_seq)?;
                }
                None => stage_room(&store, &mut batch, &room_for_writes)?,
            }
            if let Some(change) = &change {
                stage_change(&store, &mut batch, change, log_seq)?;
            }
            Ok(batch)
        };
        let header = crate::headers::key_of(&room);
        let unflushed = self.machine.encrypt_room_event_deferred(
            RoomMessage {
                room_id: room.room_id,
                topic: room.topic.clone(),
                header: &header,
                members: &members,
                content,
                lamport: room.lamport,
            },
            ts,
            writes,
            &meta,
        )?;
        let room_id = room.room_id;
        if text.is_some() {
            self.log_next += 1;
            self.follow_up([FollowUp::Message(room_id, ts.as_millis())]);
        }
        self.log_next += change_log;
        self.rooms.insert(room_id, room);
        Ok((unflushed, meta))
    }

    /// Queues the envelopes of a released send for delivery. A message in
    /// a gossip room (see `topics`) is published on the room's topic (once
    /// the gossip window has room), and delivered directly only to the
    /// members that have not acknowledged it a gossip grace after it was
    /// published; everything else goes to every recipient device at once.
    fn queue_sent(&mut self, sent: &RoomSend, meta: &[u8]) -> Result<(), Error> {
        let now = self.now.mono_ms();
        for out in &sent.key_shares {
            self.track(out.outbox_seq, outbox_item(out, meta), Some(now))?;
        }
        let message = &sent.message;
        let is_text = codec::decode::<OutboxMeta>(meta, 64)?.timeline.is_some();
        let topic = match message.destination {
            Destination::Room(room) if is_text && self.uses_gossip(&room) => {
                self.rooms.get(&room).map(|r| r.topic.clone())
            }
            _ => None,
        };
        // A gossip message is not due until published; see `publish_due`.
        let due = if topic.is_some() { None } else { Some(now) };
        let tracked = self.track(message.outbox_seq, outbox_item(message, meta), due)?;
        if let Some(topic) = topic
            && tracked
        {
            self.gossip.queue.push_back((message.outbox_seq, topic));
        }
        Ok(())
    }
}
