//! Requests to the simulated devices, and what tests read back from them.

use libp2p::PeerId;
use safemeet_engine::{
    Command, Error, Input, LogEntry, MessageState, NetInput, RequestId, Response, RoomInfo,
    TimelineEntry,
};
use safemeet_proto::event::EventContent;
use safemeet_proto::room::RoomTopic;
use safemeet_proto::{EventId, RoomId};

use super::Sim;

impl Sim {
    /// Issues a request to node `i` now; its answer is [`reply`](Self::reply).
    pub fn command(&mut self, i: usize, command: Command) -> RequestId {
        let id = self.nodes[i].next_request;
        self.nodes[i].next_request += 1;
        self.feed(i, Input::Commands(vec![(id, command)]));
        id
    }

    /// The answer to request `id` of node `i`, if it came.
    pub fn reply(&self, i: usize, id: RequestId) -> Option<&Result<Response, Error>> {
        self.nodes[i].replies.get(&id)
    }

    /// Issues a request and returns its answer (which comes at once for
    /// every request the core answers itself).
    pub fn ask(&mut self, i: usize, command: Command) -> Result<Response, String> {
        let id = self.command(i, command);
        match self.nodes[i].replies.remove(&id) {
            Some(Ok(r)) => Ok(r),
            Some(Err(e)) => Err(e.to_string()),
            None => Err("no answer".into()),
        }
    }

    /// Node `of`'s invite, naming a memory address for it.
    pub fn invite(&mut self, of: usize) -> String {
        let addrs = vec![format!("/memory/{of}").parse().expect("a valid address")];
        match self.ask(of, Command::Invite { addrs }) {
            Ok(Response::Invite(text)) => text,
            other => panic!("no invite: {other:?}"),
        }
    }

    /// Node `adder` accepts node `of`'s invite (one way).
    pub fn add_contact(&mut self, adder: usize, of: usize) {
        let invite = self.invite(of);
        let command = Command::AddContact {
            invite,
            pet_name: None,
        };
        if let Err(e) = self.ask(adder, command) {
            panic!("the invite was refused: {e}");
        }
    }

    /// Makes nodes `a` and `b` contacts of each other.
    pub fn befriend(&mut self, a: usize, b: usize) {
        self.add_contact(a, b);
        self.add_contact(b, a);
    }

    /// Node `from` sends a DM to node `to`; returns the request.
    pub fn send_dm(&mut self, from: usize, to: usize, text: &str) -> RequestId {
        let to = self.nodes[to].user;
        self.command(
            from,
            Command::SendDm {
                to,
                text: text.to_owned(),
            },
        )
    }

    /// Node `i`'s DM timeline with node `with`.
    pub fn dm_timeline(&mut self, i: usize, with: usize) -> Vec<TimelineEntry> {
        let with = self.nodes[with].user;
        match self.ask(i, Command::DmMessages { with, limit: 1000 }) {
            Ok(Response::Messages(m)) => m,
            other => panic!("no timeline: {other:?}"),
        }
    }

    /// Delivers `frame` to node `to` from a peer outside the simulation
    /// (a stranger, or a hostile node), now; its answer is in the trace
    /// (`answer …` on `to`'s line).
    pub fn inject(&mut self, to: usize, from: PeerId, frame: Vec<u8>) {
        let reply = self.token();
        self.feed(
            to,
            Input::Network(vec![NetInput::Delivery {
                peer: from,
                frame,
                reply,
            }]),
        );
    }

    /// The delivery state of node `i`'s message `text` in its DM with node
    /// `with`, if it holds one.
    pub fn dm_state(&mut self, i: usize, with: usize, text: &str) -> Option<MessageState> {
        self.dm_timeline(i, with)
            .into_iter()
            .find(|m| m.text == text)
            .map(|m| m.state)
    }

    /// Node `admin` creates a group room with these nodes.
    pub fn create_room(&mut self, admin: usize, name: &str, members: &[usize]) -> RoomId {
        let members = members.iter().map(|m| self.nodes[*m].user).collect();
        let command = Command::CreateRoom {
            name: name.into(),
            members,
        };
        match self.ask(admin, command) {
            Ok(Response::Room(id)) => id,
            other => panic!("no room: {other:?}"),
        }
    }

    /// The group rooms node `i` is in.
    pub fn rooms(&mut self, i: usize) -> Vec<RoomInfo> {
        match self.ask(i, Command::Rooms) {
            Ok(Response::Rooms(r)) => r,
            other => panic!("no rooms: {other:?}"),
        }
    }

    /// How many members node `i` sees in `room` (`None`: not in it).
    pub fn room_members(&mut self, i: usize, room: RoomId) -> Option<usize> {
        self.rooms(i)
            .into_iter()
            .find(|r| r.room_id == room)
            .map(|r| r.members.len())
    }

    /// The texts and states of node `i`'s messages in `room`.
    pub fn room_texts(&mut self, i: usize, room: RoomId) -> Vec<(String, MessageState)> {
        match self.ask(i, Command::RoomMessages { room, limit: 1000 }) {
            Ok(Response::Messages(m)) => m.into_iter().map(|m| (m.text, m.state)).collect(),
            other => panic!("no messages: {other:?}"),
        }
    }

    /// Node `i` sends `text` to `room`; the send must be committed.
    pub fn send_room(&mut self, i: usize, room: RoomId, text: &str) {
        let id = self.command(
            i,
            Command::SendRoom {
                room,
                text: text.into(),
            },
        );
        assert!(
            matches!(self.reply(i, id), Some(Ok(Response::Sent(_)))),
            "the send was refused"
        );
    }

    /// Node `i` sends `content` in `room` to these nodes with none of the
    /// engine's checks (a hostile member; see `Core::send_unchecked`).
    pub fn send_unchecked(
        &mut self,
        i: usize,
        room: RoomId,
        to: &[usize],
        content: EventContent,
    ) -> Result<EventId, Error> {
        let members = to.iter().map(|m| self.nodes[*m].user).collect();
        let sent = self.nodes[i].core.send_unchecked(room, members, content);
        // Carries out what the send queued.
        self.feed(i, Input::Timer);
        sent
    }

    /// The gossip topic of `room` on node `i`, if it is in the room.
    pub fn room_topic(&mut self, i: usize, room: RoomId) -> Option<RoomTopic> {
        self.nodes[i].core.room_topic(&room).ok()
    }

    /// Node `i`'s event log.
    pub fn log(&mut self, i: usize) -> Vec<LogEntry> {
        let command = Command::Events {
            cursor: 0,
            limit: 10_000,
        };
        match self.ask(i, command) {
            Ok(Response::Events(e)) => e.into_iter().map(|(_, e)| e).collect(),
            other => panic!("no events: {other:?}"),
        }
    }
}
