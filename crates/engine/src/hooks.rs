//! Test hooks (feature `test-hooks`, for `safemeet-test-utils` only): let
//! a test play a hostile member that sends what the engine's own commands
//! never would, through the production encryption and delivery.

use safemeet_proto::event::EventContent;
use safemeet_proto::room::RoomTopic;
use safemeet_proto::{EventId, RoomId, UserId};
use safemeet_store::Store;

use crate::Error;
use crate::core::Core;
use crate::records::RoomRecord;

impl<S: Store + Clone> Core<S> {
    /// Sends `content` in room `room_id` to the devices of `members`,
    /// with none of the checks of the engine's own commands (this device
    /// need not know the room, be a member or be an admin). The
    /// deliveries come out of the next [`handle`](Self::handle) call.
    pub fn send_unchecked(
        &mut self,
        room_id: RoomId,
        members: Vec<UserId>,
        content: EventContent,
    ) -> Result<EventId, Error> {
        let mut room = self.room(&room_id)?.unwrap_or_else(|| {
            RoomRecord::fresh(room_id, None, Vec::new(), RoomTopic::from_bytes([0; 32]))
        });
        room.members = members;
        room.left = false;
        self.send_event(room, content)
    }
}
