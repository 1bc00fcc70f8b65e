//! Files, the core's side: sending a file message, and answering the
//! file service (`files`) about the files the timelines hold: whom one
//! may be served to, where one comes from, which are still to fetch.
//!
//! A file message is a message like a text one: stored in the timeline
//! with its [`FileRef`] (the key, hash, size, name and type), edited,
//! redacted and expired the same way. Its sealed chunks are not in the
//! store: they are the file service's, in the blob store, named after the
//! message's event id.

use libp2p::{Multiaddr, PeerId};
use safemeet_proto::event::EventContent;
use safemeet_proto::file::{FileMessage, FileRef};
use safemeet_proto::{EventId, RoomId};
use safemeet_store::{Keyspace, Store};

use crate::core::{Core, Target};
use crate::events::{Command, Response};
use crate::records::name;
use crate::revisions::locate;
use crate::{Conversation, Error, TimelineEntry};

/// A file message this device holds, as the file service sees it.
#[derive(Debug, Clone)]
pub struct FileEntry {
    /// The message.
    pub event_id: EventId,
    /// Its conversation.
    pub room_id: RoomId,
    /// The file.
    pub file: FileRef,
    /// This device sent it (it holds the whole file from the start).
    pub sent_here: bool,
}

/// Where to fetch a file from: the device that sent it.
#[derive(Debug, Clone)]
pub struct FileSource {
    /// The message and its file.
    pub entry: FileEntry,
    /// The sending device's peer and the addresses it is known at; `None`
    /// when this device sent it, or the sender's device is unknown.
    pub from: Option<(PeerId, Vec<Multiaddr>)>,
}

impl<S: Store + Clone> Core<S> {
    /// Serves a command about files.
    pub(crate) fn file_command(&mut self, command: Command) -> Result<Response, Error> {
        Ok(match command {
            Command::SendFile(conversation, file) => {
                self.client_active();
                Response::Sent(self.send_file(conversation, *file)?)
            }
            Command::FileForPeer(event, peer) => Response::File(self.file_for_peer(&event, &peer)?),
            Command::FileSource(event) => Response::FileSource(self.file_source(&event)?),
            Command::FileEntries => Response::Files(self.file_entries()?),
            Command::PieceJobs => Response::PieceJobs(self.piece_jobs()?),
            Command::PiecesLeft { event, peer, next } => {
                self.pieces_left(event, peer, next)?;
                Response::Done
            }
            _ => return Err(Error::InvalidInput("not a file command".into())),
        })
    }

    /// Sends a file message; its chunks are already sealed in the blob
    /// store.
    pub(crate) fn send_file(
        &mut self,
        conversation: Conversation,
        file: FileMessage,
    ) -> Result<EventId, Error> {
        file.file
            .check()
            .map_err(|e| Error::InvalidInput(e.to_string()))?;
        let target = match conversation {
            Conversation::Dm(user) => Target::User(user),
            Conversation::Room(room) => Target::Room(room),
        };
        let room = self.send_room(&target)?;
        self.send_event(room, EventContent::File(Box::new(file)))
    }

    /// The file of a message, if it is a file message still held.
    fn file_entry(&mut self, event: &EventId) -> Result<Option<(FileEntry, TimelineEntry)>, Error> {
        let Some((room_id, _, entry)) = locate(&self.store, event)? else {
            return Ok(None);
        };
        let Some(file) = entry.file.clone() else {
            return Ok(None);
        };
        let sent_here = entry.sender_device == self.machine.account().device_id();
        Ok(Some((
            FileEntry {
                event_id: *event,
                room_id,
                file,
                sent_here,
            },
            entry,
        )))
    }

    /// The file of message `event`, if `peer` may have it: it is an
    /// active device of a member of the message's conversation (a DM's
    /// two users, a group room's current members).
    pub(crate) fn file_for_peer(
        &mut self,
        event: &EventId,
        peer: &PeerId,
    ) -> Result<Option<FileEntry>, Error> {
        let Some((entry, _)) = self.file_entry(event)? else {
            return Ok(None);
        };
        let Some(room) = self.room(&entry.room_id)? else {
            return Ok(None);
        };
        if room.left {
            return Ok(None);
        }
        let me = self.machine.account().user_id();
        for user in &room.members {
            if self.is_deleted(user) {
                continue;
            }
            let devices = if *user == me {
                self.machine.user_devices(&me)?
            } else {
                self.machine.user_devices(user)?
            };
            for info in devices {
                let cert = info.certificate.decode_body()?;
                if PeerId::from_bytes(&cert.peer_id).is_ok_and(|p| p == *peer) {
                    return Ok(Some(entry));
                }
            }
        }
        Ok(None)
    }

    /// Where the file of message `event` comes from.
    pub(crate) fn file_source(&mut self, event: &EventId) -> Result<Option<FileSource>, Error> {
        let Some((entry, timeline)) = self.file_entry(event)? else {
            return Ok(None);
        };
        let from = if entry.sent_here {
            None
        } else {
            self.target(&timeline.sender, &timeline.sender_device)?
        };
        Ok(Some(FileSource { entry, from }))
    }

    /// Every file message in the timelines of this device's conversations.
    pub(crate) fn file_entries(&mut self) -> Result<Vec<FileEntry>, Error> {
        let me = self.machine.account().user_id();
        let mut rooms: Vec<RoomId> = self.room_index()?.rooms;
        for contact in self.contacts()? {
            rooms.push(crate::rooms::dm_room_id(&me, &contact.user_id));
        }
        let device = self.machine.account().device_id();
        let mut out = Vec::new();
        for room_id in rooms {
            let tl = name::timeline(&room_id);
            let mut after = None;
            loop {
                let page = self
                    .store
                    .scan_ordered(Keyspace::Timeline, &tl, after, 256)?;
                let Some((last, _)) = page.last() else {
                    break;
                };
                after = Some(*last);
                let full = page.len() == 256;
                for (_, bytes) in page {
                    let entry = TimelineEntry::decode(&bytes)?;
                    if let Some(file) = entry.file {
                        out.push(FileEntry {
                            event_id: entry.event_id,
                            room_id,
                            file,
                            sent_here: entry.sender_device == device,
                        });
                    }
                }
                if !full {
                    break;
                }
            }
        }
        Ok(out)
    }
}
