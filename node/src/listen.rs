//! `safemeet listen`: events as they happen, as human lines or JSON.

use safemeet_api::{EventFeed, Request};

use crate::failure::Failure;
use crate::messenger::{Api, Names, api_failure, client_failure, local_time, print_json, shown};

impl Api {
    /// Prints every event after `since` as it happens, until interrupted.
    pub(crate) async fn listen(
        mut self,
        since: Option<u64>,
        json: bool,
        alerts: Option<crate::alerts::AlertOptions>,
    ) -> Result<(), Failure> {
        let mut alerts = match alerts {
            Some(options) => Some(crate::alerts::Alerts::new(&mut self, options).await?),
            None => None,
        };
        let since = match since {
            Some(s) => s,
            None => self.log_end().await?,
        };
        let names = if json {
            None
        } else {
            Some(self.names().await?)
        };
        let show = |event: &safemeet_api::Event| match &names {
            None => print_json(event),
            Some(names) => {
                println!("{}", event_line(event, names));
                Ok(())
            }
        };
        let interrupted = tokio::signal::ctrl_c();
        tokio::pin!(interrupted);
        match self {
            Api::Daemon(client) => {
                let mut sub = client.subscribe(since).await.map_err(client_failure)?;
                loop {
                    tokio::select! {
                        _ = &mut interrupted => return Ok(()),
                        next = sub.next() => match next.map_err(client_failure)? {
                            Some(event) => {
                                let typed = serde_json::from_value::<safemeet_api::Event>(event.clone());
                                match &typed {
                                    Ok(typed) if !json => show(typed)?,
                                    _ => print_json(&event)?,
                                }
                                if let (Some(alerts), Ok(typed)) = (alerts.as_mut(), &typed) {
                                    alerts.event(typed).await;
                                }
                            }
                            None => return Ok(()),
                        },
                    }
                }
            }
            Api::InProcess { engine, .. } => {
                let mut feed = EventFeed::new(&engine, since);
                loop {
                    tokio::select! {
                        _ = &mut interrupted => return Ok(()),
                        next = feed.next() => {
                            let event = next.map_err(api_failure)?;
                            show(&event)?;
                            if let Some(alerts) = alerts.as_mut() {
                                alerts.event(&event).await;
                            }
                        }
                    }
                }
            }
        }
    }

    /// The cursor of the last event so far: `listen` starts after it.
    async fn log_end(&mut self) -> Result<u64, Failure> {
        let mut end = 0;
        loop {
            let page: Vec<safemeet_api::Event> = self
                .call(Request::Events {
                    since: Some(end),
                    limit: Some(safemeet_api::MAX_LIMIT),
                })
                .await?;
            match page.last() {
                Some(last) => end = last.cursor,
                None => return Ok(end),
            }
        }
    }
}

/// An event as one human line.
fn event_line(event: &safemeet_api::Event, names: &Names) -> String {
    use safemeet_api::EventKind;
    match &event.kind {
        EventKind::Message { room_id, message } => format!(
            "{} {room_id} {}: {}",
            local_time(message.ts),
            names.of(&message.sender),
            crate::transfers::message_text(message)
        ),
        EventKind::Room {
            name,
            members,
            room_id,
        } => format!(
            "room {} ({room_id}): {} members",
            shown(name),
            members.len()
        ),
        EventKind::Delivered { event_id, .. } => format!("delivered {event_id}"),
        EventKind::StoredAtRelay {
            event_id,
            stored_until,
            ..
        } => format!(
            "stored at relay until {}: {event_id}",
            local_time(*stored_until)
        ),
        EventKind::Edited { message, .. } => {
            format!("edited {}: {}", message.event_id, shown(&message.text))
        }
        EventKind::Redacted { event_id, .. } => format!("deleted for everyone {event_id}"),
        EventKind::Expired { event_id, .. } => format!("expired {event_id}"),
        EventKind::RoomSettings {
            room_id,
            expire_after_ms,
            ..
        } => match expire_after_ms {
            Some(ms) => format!("{room_id}: messages now expire after {} s", ms / 1000),
            None => format!("{room_id}: messages are now kept"),
        },
        EventKind::Call {
            with,
            outgoing,
            outcome,
            at,
            duration_ms,
            ..
        } => {
            use safemeet_engine::CallOutcome as O;
            let who = names.of(with);
            let when = local_time(*at);
            match (outcome, outgoing) {
                (O::Missed, _) => format!("{when} missed call from {who}"),
                (O::Declined, true) => format!("{when} {who} declined your call"),
                (O::Declined, false) => format!("{when} you declined a call from {who}"),
                (O::NoAnswer, _) => format!("{when} {who} did not answer your call"),
                (_, true) => format!("{when} call to {who}, {} s", duration_ms / 1000),
                (_, false) => format!("{when} call from {who}, {} s", duration_ms / 1000),
            }
        }
        EventKind::Meeting {
            room_id,
            at,
            duration_ms,
            with,
            ..
        } => {
            let who: Vec<String> = with.iter().map(|u| names.of(u)).collect();
            format!(
                "{} meeting in {room_id}, {} s, with {}",
                local_time(*at),
                duration_ms / 1000,
                if who.is_empty() {
                    "nobody".to_owned()
                } else {
                    who.join(", ")
                }
            )
        }
        _ => format!("event {}", event.cursor),
    }
}
