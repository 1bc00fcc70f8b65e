//! Name resolution: what a user typed → a [`UserId`] or a [`RoomId`].
//!
//! The engine takes ids only; names are the API's business. A contact is
//! found by the name this user gave them (pet name), then by their
//! username, then by user id text; a room by its name or room id text. A
//! name that fits several contacts or rooms is an error that says what to
//! type instead, never a guess.
//!
//! Well-formed id text is taken as that id even when no contact or listed
//! room has it: a room this user left is still read by its id, and the
//! engine says what it thinks of an id it does not know. Only
//! [`EngineHandle::contacts`] and [`EngineHandle::rooms`] are used; the
//! `*_among` functions do the matching on lists, without an engine.

use safemeet_engine::{Contact, Handle as EngineHandle, RoomInfo};
use safemeet_proto::{RoomId, UserId};

use crate::Error;

/// What a TARGET (of `send`, `messages`) names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A contact: the direct conversation with them.
    User(UserId),
    /// A group room.
    Room(RoomId),
}

/// The contact `name` names.
pub async fn user(engine: &EngineHandle, name: &str) -> Result<UserId, Error> {
    user_among(&engine.contacts().await?, name)
}

/// The room `name` names.
pub async fn room(engine: &EngineHandle, name: &str) -> Result<RoomId, Error> {
    room_among(&engine.rooms().await?, name)
}

/// The room of the pending invitation `name` names: by room id text or
/// by the room's name in the invitation.
pub async fn invitation(engine: &EngineHandle, name: &str) -> Result<RoomId, Error> {
    let rooms: Vec<RoomInfo> = engine
        .invitations()
        .await?
        .into_iter()
        .map(|i| RoomInfo {
            room_id: i.room_id,
            name: i.name,
            members: i.members,
            admins: Vec::new(),
        })
        .collect();
    room_among(&rooms, name)
}

/// The user of the message request `name` names: by username (if one
/// request has it) or user id text. Usernames are chosen by the
/// requesters themselves, so two may claim the same one: then only the
/// user id names either.
pub async fn requester(engine: &EngineHandle, name: &str) -> Result<UserId, Error> {
    let requests = engine.requests().await?;
    let by_username: Vec<UserId> = requests
        .iter()
        .filter(|r| r.username == name)
        .map(|r| r.user_id)
        .collect();
    match by_username.as_slice() {
        [one] => Ok(*one),
        [] => name
            .parse::<UserId>()
            .map_err(|_| Error::UnknownContact(name.to_owned())),
        _ => Err(Error::Ambiguous {
            what: "message requests",
            name: name.to_owned(),
            instead: "the user id",
        }),
    }
}

/// What a TARGET names: a contact if one is called so, else a room.
pub async fn target(engine: &EngineHandle, name: &str) -> Result<Target, Error> {
    match user_among(&engine.contacts().await?, name) {
        Ok(user) => Ok(Target::User(user)),
        Err(Error::UnknownContact(_)) => match room_among(&engine.rooms().await?, name) {
            Ok(room) => Ok(Target::Room(room)),
            Err(Error::UnknownRoom(name)) => Err(Error::NotFound(name)),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    }
}

/// The contact `name` names among `contacts`: by pet name, then username,
/// then user id text.
pub fn user_among(contacts: &[Contact], name: &str) -> Result<UserId, Error> {
    let ambiguous = || Error::Ambiguous {
        what: "contacts",
        name: name.to_owned(),
        instead: "the user id",
    };
    let by_pet: Vec<&Contact> = contacts
        .iter()
        .filter(|c| c.pet_name.as_deref() == Some(name))
        .collect();
    match by_pet.as_slice() {
        [one] => return Ok(one.user_id),
        [] => {}
        _ => return Err(ambiguous()),
    }
    let by_username: Vec<&Contact> = contacts.iter().filter(|c| c.username == name).collect();
    match by_username.as_slice() {
        [one] => return Ok(one.user_id),
        [] => {}
        _ => return Err(ambiguous()),
    }
    name.parse::<UserId>()
        .map_err(|_| Error::UnknownContact(name.to_owned()))
}

/// The room `name` names among `rooms`: by room id text or name.
pub fn room_among(rooms: &[RoomInfo], name: &str) -> Result<RoomId, Error> {
    let id = name.parse::<RoomId>().ok();
    let found: Vec<&RoomInfo> = rooms
        .iter()
        .filter(|r| Some(r.room_id) == id || r.name == name)
        .collect();
    match (found.as_slice(), id) {
        ([one], _) => Ok(one.room_id),
        ([], Some(id)) => Ok(id),
        ([], None) => Err(Error::UnknownRoom(name.to_owned())),
        (_, _) => Err(Error::Ambiguous {
            what: "rooms",
            name: name.to_owned(),
            instead: "the room id",
        }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

    use super::*;

    fn contact(n: u8, pet: Option<&str>, username: &str) -> Contact {
        Contact {
            user_id: UserId::from_bytes([n; 32]),
            pet_name: pet.map(str::to_owned),
            username: username.to_owned(),
            display_name: username.to_owned(),
            emails: vec![],
            relays: vec![],
            devices: vec![],
            new_device_warning: false,
            deleted: false,
            avatar: None,
        }
    }

    fn room(n: u8, name: &str) -> RoomInfo {
        RoomInfo {
            room_id: RoomId::from_bytes([n; 16]),
            name: name.to_owned(),
            members: vec![],
            admins: vec![],
        }
    }

    #[test]
    fn a_contact_is_found_by_pet_name_then_username_then_id() {
        let contacts = [
            contact(1, Some("bob"), "robert"),
            contact(2, None, "bob"),
            contact(3, None, "carol"),
        ];
        let id = |n: u8| UserId::from_bytes([n; 32]);
        // The pet name wins over another contact's username.
        assert_eq!(user_among(&contacts, "bob").unwrap(), id(1));
        assert_eq!(user_among(&contacts, "robert").unwrap(), id(1));
        assert_eq!(user_among(&contacts, "carol").unwrap(), id(3));
        assert_eq!(user_among(&contacts, &id(2).to_string()).unwrap(), id(2));
        // Id text of someone who is no contact is still that id.
        assert_eq!(user_among(&contacts, &id(9).to_string()).unwrap(), id(9));
        let e = user_among(&contacts, "dave").unwrap_err();
        assert!(
            matches!(e, Error::UnknownContact(ref n) if n == "dave"),
            "{e}"
        );
        // A room id is not a user id.
        let r = RoomId::from_bytes([1; 16]).to_string();
        assert!(matches!(
            user_among(&contacts, &r),
            Err(Error::UnknownContact(_))
        ));
    }

    #[test]
    fn an_ambiguous_contact_name_is_an_error_not_a_guess() {
        let twins = [contact(1, None, "sam"), contact(2, None, "sam")];
        let e = user_among(&twins, "sam").unwrap_err();
        assert_eq!(e.kind(), "ambiguous");
        assert!(e.to_string().contains("user id"), "{e}");
        let pets = [contact(1, Some("x"), "a"), contact(2, Some("x"), "b")];
        assert_eq!(user_among(&pets, "x").unwrap_err().kind(), "ambiguous");
        // Each is still reachable by what names it alone.
        assert_eq!(
            user_among(&twins, &UserId::from_bytes([2; 32]).to_string()).unwrap(),
            UserId::from_bytes([2; 32])
        );
    }

    #[test]
    fn a_room_is_found_by_name_or_id() {
        let rooms = [room(1, "club"), room(2, "work"), room(3, "work")];
        let id = |n: u8| RoomId::from_bytes([n; 16]);
        assert_eq!(room_among(&rooms, "club").unwrap(), id(1));
        assert_eq!(room_among(&rooms, &id(2).to_string()).unwrap(), id(2));
        assert_eq!(room_among(&rooms, "work").unwrap_err().kind(), "ambiguous");
        // A room left (no longer listed) is still named by its id.
        assert_eq!(room_among(&rooms, &id(7).to_string()).unwrap(), id(7));
        assert_eq!(
            room_among(&rooms, "gone").unwrap_err().kind(),
            "unknown_room"
        );
        // A room named like another room's id is ambiguous.
        let tricky = [room(1, "a"), room(2, &id(1).to_string())];
        assert_eq!(
            room_among(&tricky, &id(1).to_string()).unwrap_err().kind(),
            "ambiguous"
        );
    }
}
