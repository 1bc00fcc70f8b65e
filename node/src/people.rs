//! The commands that decide whom to hear from: blocking, contact settings
//! and room invitations. Each is one API request (see `messenger`).

use safemeet_api::{
    BlockedUser, ContactBlocked, ContactSettings, ContactUnblocked, MessageRequest, Request,
    RequestAccepted, RequestDeclined, RoomDeclined, RoomInvitation, RoomJoined,
};

use crate::failure::Failure;
use crate::messenger::{Api, print_json, shown};

/// A command about whom to hear from.
#[derive(Debug)]
pub(crate) enum PeopleAction {
    Block {
        target: String,
    },
    Unblock {
        target: String,
    },
    Blocked,
    Set {
        target: String,
        auto_accept_invites: Option<bool>,
    },
    Invitations,
    Requests,
    Accept {
        target: String,
    },
    DeclineRequest {
        target: String,
    },
    Join {
        room: String,
    },
    Decline {
        room: String,
    },
}

pub(crate) async fn perform(
    api: &mut Api,
    json: bool,
    action: PeopleAction,
) -> Result<(), Failure> {
    match action {
        PeopleAction::Block { target } => {
            let done: ContactBlocked = api.call(Request::ContactBlock { target }).await?;
            if json {
                print_json(&done)?;
            } else {
                println!("blocked {}", done.blocked);
            }
        }
        PeopleAction::Unblock { target } => {
            let done: ContactUnblocked = api.call(Request::ContactUnblock { target }).await?;
            if json {
                print_json(&done)?;
            } else {
                println!("unblocked {}", done.unblocked);
            }
        }
        PeopleAction::Blocked => {
            let blocked: Vec<BlockedUser> = api.call(Request::ContactBlocked {}).await?;
            if json {
                print_json(&blocked)?;
            } else {
                for b in &blocked {
                    println!("{}", b.user_id);
                }
            }
        }
        PeopleAction::Set {
            target,
            auto_accept_invites,
        } => {
            let set: ContactSettings = api
                .call(Request::ContactSet {
                    target,
                    auto_accept_invites,
                })
                .await?;
            if json {
                print_json(&set)?;
            } else if let Some(on) = set.auto_accept_invites {
                let word = if on { "joined" } else { "asked about" };
                println!("room invitations from {} will be {word}", set.user_id);
            } else {
                println!("nothing to change for {}", set.user_id);
            }
        }
        PeopleAction::Invitations => {
            let invitations: Vec<RoomInvitation> = api.call(Request::RoomInvitations {}).await?;
            if json {
                print_json(&invitations)?;
            } else {
                for i in &invitations {
                    println!(
                        "{}\t{}\tfrom {}\t{} members",
                        shown(&i.name),
                        i.room_id,
                        i.from,
                        i.members.len()
                    );
                }
            }
        }
        PeopleAction::Requests => {
            let requests: Vec<MessageRequest> = api.call(Request::RequestList {}).await?;
            if json {
                print_json(&requests)?;
            } else {
                for r in &requests {
                    println!(
                        "{}\t{}\t{}\t{} frames",
                        r.username,
                        shown(&r.display_name),
                        r.user_id,
                        r.frames
                    );
                }
            }
        }
        PeopleAction::Accept { target } => {
            let accepted: RequestAccepted = api.call(Request::RequestAccept { target }).await?;
            if json {
                print_json(&accepted)?;
            } else {
                println!("accepted {} as a contact", accepted.user_id);
            }
        }
        PeopleAction::DeclineRequest { target } => {
            let declined: RequestDeclined = api.call(Request::RequestDecline { target }).await?;
            if json {
                print_json(&declined)?;
            } else {
                println!("declined the request of {}", declined.user_id);
            }
        }
        PeopleAction::Join { room } => {
            let joined: RoomJoined = api.call(Request::RoomJoin { room }).await?;
            if json {
                print_json(&joined)?;
            } else {
                println!("joined room {}", joined.room_id);
            }
        }
        PeopleAction::Decline { room } => {
            let declined: RoomDeclined = api.call(Request::RoomDecline { room }).await?;
            if json {
                print_json(&declined)?;
            } else {
                println!("declined room {}", declined.room_id);
            }
        }
    }
    Ok(())
}
