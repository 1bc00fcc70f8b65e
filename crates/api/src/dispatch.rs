//! [`dispatch`]: serves one request with the engine. Every transport (the
//! Unix socket, the CLI's in-process path, later HTTP) calls this, so a
//! method behaves the same whichever way it is reached.
//!
//! Names are resolved here (see [`resolve`](crate::resolve)) and the engine
//! is called with ids.

use std::time::Duration;

use safemeet_engine::{Handle as EngineHandle, TimelineEntry};

use crate::message::cursor_of;
use crate::page::{PAGE_BYTES, page};
use crate::request::{DEFAULT_EVENTS_LIMIT, DEFAULT_MESSAGES_LIMIT, MAX_LIMIT, MessageCursor};
use crate::resolve::{self, Target};
use crate::response::{
    BlockedUser, Changed, ContactAdded, ContactBlocked, ContactRemoved, ContactSettings,
    ContactUnblocked, InviteText, RequestAccepted, RequestDeclined, RoomBanned, RoomCreated,
    RoomDeclined, RoomInvited, RoomJoined, RoomLeft, RoomRemoved, RoomSettingsView, Sent,
    SettingsView, Whoami,
};
use crate::{Error, Identity, Request, Response};
use crate::{Event, Message};

/// Longest a request may wait for the engine. The engine answers a send
/// once the message is committed, a read once it is read from the store:
/// a minute means it is stuck, and the caller hears so instead of waiting
/// for ever.
pub const DISPATCH_TIMEOUT: Duration = Duration::from_secs(60);

/// Serves `request` with `engine`; `identity` is what `whoami` reports
/// (the engine handle does not hold the profile).
///
/// `messages` and `events` answer one page (see [`page`](crate::page)):
/// ask again after the last entry's cursor until a page is empty.
/// `subscribe` streams, so it is [`Error::NeedsStream`] here; see
/// [`EventFeed`](crate::EventFeed).
pub async fn dispatch(
    engine: &EngineHandle,
    identity: &Identity,
    request: Request,
) -> Result<Response, Error> {
    let method = request.method().name();
    tokio::time::timeout(DISPATCH_TIMEOUT, serve(engine, identity, request))
        .await
        .unwrap_or(Err(Error::Timeout {
            method,
            secs: DISPATCH_TIMEOUT.as_secs(),
        }))
}

async fn serve(
    engine: &EngineHandle,
    identity: &Identity,
    request: Request,
) -> Result<Response, Error> {
    Ok(match request {
        Request::Whoami {} => {
            // The profile as it is now: it may have changed since start.
            let profile = engine.profile().await?;
            let identity = Identity {
                display_name: profile.display_name.as_str().to_owned(),
                emails: profile
                    .emails
                    .iter()
                    .map(|e| e.as_str().to_owned())
                    .collect(),
                ..identity.clone()
            };
            let listen_addrs = engine
                .listen_addrs()
                .await?
                .iter()
                .map(|a| safemeet_net::dialable(a, engine.peer_id()).to_string())
                .collect();
            Response::Whoami(Whoami {
                identity,
                listen_addrs,
            })
        }
        Request::Status {} => {
            let net = engine.net_status().await?;
            let listen = net
                .listen
                .iter()
                .map(|a| safemeet_net::dialable(a, engine.peer_id()).to_string())
                .collect();
            Response::Status(crate::status::Status::of(&net, listen))
        }
        Request::DeviceList {} => Response::Devices(
            engine
                .devices()
                .await?
                .into_iter()
                .map(Into::into)
                .collect(),
        ),
        Request::DeviceLink { with_master } => {
            let shown = engine.link_offer(with_master).await?;
            Response::DeviceLink(crate::DeviceLink {
                link: shown.link,
                expires_at: shown.expires_at.as_millis(),
            })
        }
        Request::DeviceRevoke { device_id } => {
            let device: safemeet_proto::DeviceId = device_id.parse().map_err(|_| {
                safemeet_engine::Error::InvalidInput(format!("not a device id: {device_id}"))
            })?;
            let devices = engine.devices().await?;
            match devices.iter().find(|d| d.device_id == device) {
                None => {
                    return Err(safemeet_engine::Error::InvalidInput(format!(
                        "no device {device_id} in this user's device list"
                    ))
                    .into());
                }
                Some(d) if d.this_device => {
                    return Err(safemeet_engine::Error::InvalidInput(
                        "this is the device you are running the command on: a device cannot revoke itself; revoke it from the device that holds the master key".into(),
                    )
                    .into());
                }
                Some(_) => {}
            }
            engine.revoke_device(device).await?;
            Response::DeviceRevoked(crate::DeviceRevoked { revoked: device_id })
        }
        Request::ProfileShow {} => Response::Profile(profile_view(engine).await?),
        Request::ExportReadable { dir } => {
            let profile = profile_view(engine).await?;
            let done = crate::export::export_readable(engine, profile, &dir).await?;
            engine.note_security("export_readable", None).await?;
            Response::Exported(done)
        }
        Request::ProfileSet {
            display_name,
            avatar,
            remove_avatar,
        } => {
            let invalid = |m: String| Error::Engine(safemeet_engine::Error::InvalidInput(m));
            if display_name.is_none() && avatar.is_none() && !remove_avatar {
                return Err(invalid(
                    "nothing to change: give display_name, avatar or remove_avatar".into(),
                ));
            }
            if avatar.is_some() && remove_avatar {
                return Err(invalid("avatar and remove_avatar together".into()));
            }
            // Checked before anything changes.
            let image = avatar.map(|b64| avatar_image(&b64)).transpose()?;
            if let Some(name) = display_name {
                let name = name
                    .parse::<safemeet_proto::DisplayName>()
                    .map_err(|e| invalid(format!("{e}")))?;
                let change = safemeet_engine::ProfileChange::display_name(name);
                engine.change_profile(change).await?;
            }
            if image.is_some() || remove_avatar {
                engine.set_avatar(image).await?;
            }
            Response::Profile(profile_view(engine).await?)
        }
        Request::EmailAdd { email } => {
            let change = safemeet_engine::ProfileChange::add_email(parse_email(&email)?);
            engine.change_profile(change).await?;
            Response::Profile(profile_view(engine).await?)
        }
        Request::EmailRemove { email } => {
            let change = safemeet_engine::ProfileChange::remove_email(parse_email(&email)?);
            engine.change_profile(change).await?;
            Response::Profile(profile_view(engine).await?)
        }
        Request::DeviceRename { device_id, name } => {
            let device: safemeet_proto::DeviceId = device_id.parse().map_err(|_| {
                safemeet_engine::Error::InvalidInput(format!("not a device id: {device_id}"))
            })?;
            engine.rename_device(device, name.clone()).await?;
            Response::DeviceRenamed(crate::DeviceRenamed { device_id, name })
        }
        Request::VerifyStart { target } => {
            let user = resolve::user(engine, &target).await?;
            Response::Verification(engine.verify_start(user).await?.into())
        }
        Request::ContactVerify { invite } => {
            let (user, devices) = engine.verify_invite(&invite).await?;
            Response::ContactVerified(crate::ContactVerified {
                user_id: user.to_string(),
                verified: devices.iter().map(ToString::to_string).collect(),
            })
        }
        Request::VerifyStatus { target } => {
            let user = resolve::user(engine, &target).await?;
            Response::Verification(engine.verify_status(user).await?.into())
        }
        Request::VerifyAnswer { target, matches } => {
            let user = resolve::user(engine, &target).await?;
            Response::Verification(engine.verify_answer(user, matches).await?.into())
        }
        Request::Invite {} => Response::Invite(InviteText {
            invite: engine.invite().await?,
        }),
        Request::ContactAdd { invite, name } => Response::ContactAdded(ContactAdded {
            user_id: engine.add_contact(&invite, name).await?,
        }),
        Request::ContactList {} => Response::Contacts(
            engine
                .contacts()
                .await?
                .into_iter()
                .map(|c| {
                    let room_id = safemeet_engine::dm_room_id(&engine.user_id(), &c.user_id);
                    crate::Contact {
                        room_id: Some(room_id),
                        ..c.into()
                    }
                })
                .collect(),
        ),
        Request::ContactRemove { target } => {
            let user = resolve::user(engine, &target).await?;
            engine.remove_contact(user).await?;
            Response::ContactRemoved(ContactRemoved { removed: user })
        }
        Request::ContactBlock { target } => {
            let user = resolve::user(engine, &target).await?;
            engine.block(user).await?;
            Response::ContactBlocked(ContactBlocked { blocked: user })
        }
        Request::ContactUnblock { target } => {
            let user = resolve::user(engine, &target).await?;
            engine.unblock(user).await?;
            Response::ContactUnblocked(ContactUnblocked { unblocked: user })
        }
        Request::ContactBlocked {} => Response::Blocked(
            engine
                .blocked()
                .await?
                .into_iter()
                .map(|user_id| BlockedUser { user_id })
                .collect(),
        ),
        Request::ContactSet {
            target,
            auto_accept_invites,
        } => {
            let user = resolve::user(engine, &target).await?;
            if let Some(on) = auto_accept_invites {
                engine.set_auto_accept(user, on).await?;
            }
            Response::ContactSettings(ContactSettings {
                user_id: user,
                auto_accept_invites,
            })
        }
        Request::RequestList {} => Response::Requests(
            engine
                .requests()
                .await?
                .into_iter()
                .map(Into::into)
                .collect(),
        ),
        Request::RequestAccept { target } => {
            let user_id = resolve::requester(engine, &target).await?;
            engine.accept_request(user_id).await?;
            Response::RequestAccepted(RequestAccepted { user_id })
        }
        Request::RequestDecline { target } => {
            let user_id = resolve::requester(engine, &target).await?;
            engine.decline_request(user_id).await?;
            Response::RequestDeclined(RequestDeclined { user_id })
        }
        Request::Send {
            target,
            text,
            file: Some(file),
        } => Response::Sent(Sent {
            event_id: crate::files::send_file(engine, &target, &file, &text).await?,
        }),
        Request::Send {
            target,
            text,
            file: None,
        } => {
            let event_id = match resolve::target(engine, &target).await? {
                Target::User(user) => engine.send_dm(user, &text).await?,
                Target::Room(room) => engine.send_room(room, &text).await?,
            };
            Response::Sent(Sent { event_id })
        }
        Request::Download { event_id, path } => {
            Response::Downloaded(crate::files::download(engine, event_id, &path).await?)
        }
        Request::Files {} => Response::Files(crate::files::transfers(engine)),
        Request::SignalsSet {
            presence,
            typing,
            read_receipts,
        } => Response::Signals(
            engine
                .set_signals(presence, typing, read_receipts)
                .await?
                .into(),
        ),
        Request::SignalsCounts {} => Response::SignalCounts(engine.signal_counts().await?),
        Request::Presence {} => Response::Presence(crate::signals::presence(engine).await?),
        Request::Typing { target, typing } => {
            let conversation = crate::signals::conversation(engine, &target).await?;
            engine.typing(conversation, typing).await?;
            Response::Signaled(crate::signals::Signaled { target })
        }
        Request::Call {
            target,
            wav_in,
            wav_out,
        } => {
            let user = crate::resolve::user(engine, &target).await?;
            let audio = crate::calls::audio(wav_in, wav_out)?;
            Response::Call(engine.call(user, audio).await?)
        }
        Request::CallAccept { wav_in, wav_out } => {
            let audio = crate::calls::audio(wav_in, wav_out)?;
            Response::Call(engine.call_accept(audio).await?)
        }
        Request::Meet {
            room,
            wav_in,
            wav_out,
        } => {
            let room = crate::resolve::room(engine, &room).await?;
            let audio = crate::calls::audio(wav_in, wav_out)?;
            Response::Call(engine.meet(room, audio).await?)
        }
        Request::CallDecline {} => Response::Call(engine.call_decline().await?),
        Request::CallHangup {} => Response::Call(engine.call_hangup().await?),
        Request::CallStatus {} => Response::Calls(engine.calls().await?),
        Request::TypingList { target } => {
            let conversation = crate::signals::conversation(engine, &target).await?;
            Response::Typers(engine.typers(conversation).await?)
        }
        Request::Mute { target, muted } => {
            let conversation = crate::signals::conversation(engine, &target).await?;
            Response::Muted(engine.set_muted(conversation, muted).await?)
        }
        Request::MuteList {} => Response::Muted(engine.muted().await?),
        Request::Read { target } => {
            let conversation = crate::signals::conversation(engine, &target).await?;
            engine.mark_read(conversation).await?;
            Response::Signaled(crate::signals::Signaled { target })
        }
        Request::ExportArchive { file, passphrase } => {
            let done = crate::export::export_archive(engine, &file, passphrase).await?;
            Response::ArchiveExported(done)
        }
        Request::MessageRedact { event_id } => {
            let change_id = engine.redact(event_id).await?;
            Response::Changed(Changed {
                event_id,
                change_id,
            })
        }
        Request::MessageEdit { event_id, text } => {
            let change_id = engine.edit(event_id, &text).await?;
            Response::Changed(Changed {
                event_id,
                change_id,
            })
        }
        Request::RoomSet {
            target,
            expire_after_ms,
        } => {
            let (conversation, room_id) = conversation(engine, &target).await?;
            engine
                .set_expiry(conversation, expire_after_ms.map(Duration::from_millis))
                .await?;
            Response::RoomSettings(RoomSettingsView {
                room_id,
                expire_after_ms,
            })
        }
        Request::RoomSettings { target } => {
            let (conversation, room_id) = conversation(engine, &target).await?;
            let expire = engine.expiry(conversation).await?;
            Response::RoomSettings(RoomSettingsView {
                room_id,
                expire_after_ms: expire.map(duration_ms),
            })
        }
        Request::SettingsSet { retention_ms } => {
            let retention = engine
                .set_retention(retention_ms.map(Duration::from_millis))
                .await?;
            Response::Settings(SettingsView {
                retention_ms: retention.map(duration_ms),
                signals: Some(engine.signals().await?.into()),
            })
        }
        Request::SettingsShow {} => Response::Settings(SettingsView {
            retention_ms: engine.retention().await?.map(duration_ms),
            signals: Some(engine.signals().await?.into()),
        }),
        Request::Messages {
            target,
            limit,
            after,
        } => {
            let limit = limit_of(limit, DEFAULT_MESSAGES_LIMIT);
            let conversation = crate::signals::conversation(engine, &target).await?;
            let entries = match conversation {
                safemeet_engine::Conversation::Dm(user) => engine.dm_messages(user, limit).await?,
                safemeet_engine::Conversation::Room(room) => {
                    engine.room_messages(room, limit).await?
                }
            };
            let verified = engine.verified_devices().await?;
            let mut messages = messages_after(&entries, after);
            for m in &mut messages {
                m.verified = verified.contains(&m.sender_device);
                if let Some(file) = &mut m.file {
                    file.transfer = engine
                        .transfer(&m.event_id)
                        .map(crate::files::FileTransfer::from);
                }
            }
            crate::signals::add_read_by(engine, conversation, &mut messages).await?;
            let (page, _) = page(messages, PAGE_BYTES)?;
            Response::Messages(page)
        }
        Request::RoomCreate { name, members } => {
            let contacts = engine.contacts().await?;
            let members = members
                .iter()
                .map(|m| resolve::user_among(&contacts, m))
                .collect::<Result<Vec<_>, _>>()?;
            let room_id = engine.create_room(&name, members).await?;
            Response::RoomCreated(RoomCreated { room_id })
        }
        Request::RoomInvite { room, target } => {
            let room = resolve::room(engine, &room).await?;
            let user = resolve::user(engine, &target).await?;
            engine.room_invite(room, user).await?;
            Response::RoomInvited(RoomInvited { invited: true })
        }
        Request::RoomLeave { room } => {
            let room = resolve::room(engine, &room).await?;
            engine.room_leave(room).await?;
            Response::RoomLeft(RoomLeft { left: true })
        }
        Request::RoomRemove { room, target } => {
            let room = resolve::room(engine, &room).await?;
            let user = resolve::user(engine, &target).await?;
            engine.room_remove(room, user).await?;
            Response::RoomRemoved(RoomRemoved { removed: true })
        }
        Request::RoomBan { room, target } => {
            let room = resolve::room(engine, &room).await?;
            let user = resolve::user(engine, &target).await?;
            engine.room_ban(room, user).await?;
            Response::RoomBanned(RoomBanned { banned: true })
        }
        Request::RoomList {} => {
            Response::Rooms(engine.rooms().await?.into_iter().map(Into::into).collect())
        }
        Request::RoomInvitations {} => Response::Invitations(
            engine
                .invitations()
                .await?
                .into_iter()
                .map(Into::into)
                .collect(),
        ),
        Request::RoomJoin { room } => {
            let room_id = resolve::invitation(engine, &room).await?;
            engine.room_join(room_id).await?;
            Response::RoomJoined(RoomJoined { room_id })
        }
        Request::RoomDecline { room } => {
            let room_id = resolve::invitation(engine, &room).await?;
            engine.room_decline(room_id).await?;
            Response::RoomDeclined(RoomDeclined { room_id })
        }
        Request::Events { since, limit } => {
            let limit = limit_of(limit, DEFAULT_EVENTS_LIMIT);
            let events = engine
                .events(since.unwrap_or(0), limit)
                .await?
                .iter()
                .map(|(cursor, entry)| Event::from_log(*cursor, entry))
                .collect();
            let (page, _) = page(events, PAGE_BYTES)?;
            Response::Events(page)
        }
        Request::Subscribe { .. } => return Err(Error::NeedsStream("subscribe")),
    })
}

/// A requested `limit`, defaulted and capped at [`MAX_LIMIT`].
fn limit_of(limit: Option<u64>, default: u64) -> usize {
    // MAX_LIMIT fits in any usize.
    limit.unwrap_or(default).min(MAX_LIMIT) as usize
}

/// The messages of `entries` (in timeline order) after `after`.
fn messages_after(entries: &[TimelineEntry], after: Option<MessageCursor>) -> Vec<Message> {
    entries
        .iter()
        .filter(|m| after.is_none_or(|a| cursor_of(m) > a))
        .map(Message::from)
        .collect()
}

fn parse_email(text: &str) -> Result<safemeet_proto::Email, safemeet_engine::Error> {
    text.parse::<safemeet_proto::Email>()
        .map_err(|e| safemeet_engine::Error::InvalidInput(format!("{e}")))
}

/// The conversation a target names, and its room id.
async fn conversation(
    engine: &EngineHandle,
    target: &str,
) -> Result<(safemeet_engine::Conversation, safemeet_proto::RoomId), Error> {
    Ok(match resolve::target(engine, target).await? {
        Target::User(user) => (
            safemeet_engine::Conversation::Dm(user),
            safemeet_engine::dm_room_id(&engine.user_id(), &user),
        ),
        Target::Room(room) => (safemeet_engine::Conversation::Room(room), room),
    })
}

/// A duration in whole milliseconds (saturating).
fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// This user's profile as it now is, with its avatar.
async fn profile_view(engine: &EngineHandle) -> Result<crate::ProfileView, Error> {
    let mut view: crate::ProfileView = engine.profile().await?.into();
    view.avatar = engine.avatar_info(engine.user_id()).await?.map(Into::into);
    Ok(view)
}

/// An avatar from base64: a PNG or JPEG, its metadata removed, within the
/// size limit.
fn avatar_image(b64: &str) -> Result<safemeet_proto::identity::AvatarImage, Error> {
    use safemeet_proto::identity::MAX_AVATAR_BYTES;
    let invalid = |m: String| Error::Engine(safemeet_engine::Error::InvalidInput(m));
    // Base64 of the largest image a caller may send before stripping.
    if b64.len() > 4 * MAX_AVATAR_BYTES * 4 {
        return Err(invalid("the avatar is too large".into()));
    }
    let raw = data_encoding::BASE64
        .decode(b64.as_bytes())
        .map_err(|e| invalid(format!("the avatar is not base64: {e}")))?;
    let (kind, bytes) = safemeet_proto::image::strip_metadata(&raw)
        .map_err(|e| invalid(format!("the avatar: {e}")))?;
    if bytes.len() > MAX_AVATAR_BYTES {
        return Err(invalid(format!(
            "the avatar is {} bytes without its metadata; the limit is {} KiB",
            bytes.len(),
            MAX_AVATAR_BYTES / 1024
        )));
    }
    Ok(safemeet_proto::identity::AvatarImage { kind, bytes })
}
