//! Tests of the request types.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use safemeet_proto::UserId;
use serde_json::json;

use super::*;

#[test]
fn requests_parse_as_documented() {
    assert_eq!(
        Request::from_parts("whoami", None).unwrap(),
        Request::Whoami {}
    );
    assert_eq!(
        Request::from_parts("room.list", Some(json!({}))).unwrap(),
        Request::RoomList {}
    );
    assert_eq!(
        Request::from_parts("send", Some(json!({"target": "bob", "text": "hi"}))).unwrap(),
        Request::Send {
            target: "bob".into(),
            text: "hi".into(),
            file: None,
        }
    );
    assert_eq!(
        Request::from_parts("messages", Some(json!({"target": "bob", "limit": null}))).unwrap(),
        Request::Messages {
            target: "bob".into(),
            limit: None,
            after: None
        }
    );
    assert_eq!(
        Request::from_parts(
            "room.create",
            Some(json!({"name": "club", "members": null}))
        )
        .unwrap(),
        Request::RoomCreate {
            name: "club".into(),
            members: vec![]
        }
    );
    assert_eq!(
        Request::from_parts("room.ban", Some(json!({"room": "club", "target": "eve"}))).unwrap(),
        Request::RoomBan {
            room: "club".into(),
            target: "eve".into()
        }
    );
    assert!(Request::from_parts("room.remove", Some(json!({"room": "club"}))).is_err());
    assert_eq!(
        Request::from_parts("events", Some(json!({"since": 3}))).unwrap(),
        Request::Events {
            since: Some(3),
            limit: None
        }
    );
}

#[test]
fn unknown_methods_and_bad_params_are_told_apart() {
    let e = Request::from_parts("no.such", None).unwrap_err();
    assert_eq!(e.code(), -32601);
    for (method, params) in [
        ("send", json!({})),
        ("send", json!({"target": 1, "text": "x"})),
        ("messages", json!({"target": "bob", "limit": -1})),
        ("messages", json!({"target": "bob", "limit": "ten"})),
        ("messages", json!({"target": "bob", "after": "nonsense"})),
        ("room.create", json!({"name": "x", "members": "bob"})),
        ("room.create", json!({"name": "x", "members": [1]})),
        ("events", json!({"since": 1.5})),
        ("whoami", json!([1, 2])),
    ] {
        let e = Request::from_parts(method, Some(params.clone())).unwrap_err();
        assert_eq!(e.code(), -32602, "{method} {params}: {e}");
    }
}

#[test]
fn a_hostile_method_name_is_not_echoed_whole() {
    let e = Request::from_parts(&"x".repeat(100_000), None).unwrap_err();
    assert!(e.to_string().len() < 100, "{e}");
}

#[test]
fn requests_serialize_back_to_method_and_params() {
    let r = Request::Messages {
        target: "bob".into(),
        limit: Some(2),
        after: None,
    };
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(
        v,
        json!({"method": "messages", "params": {"target": "bob", "limit": 2}})
    );
    assert_eq!(
        serde_json::to_value(Request::Whoami {}).unwrap(),
        json!({"method": "whoami", "params": {}})
    );
    for m in Method::ALL {
        assert_eq!(Method::from_name(m.name()), Some(m));
    }
}

#[test]
fn message_cursors_round_trip_and_refuse_the_rest() {
    let c = MessageCursor {
        lamport: 12,
        sender: UserId::from_bytes([1; 32]),
        event_id: EventId::from_bytes([2; 32]),
    };
    let text = c.to_string();
    assert_eq!(text.parse::<MessageCursor>().unwrap(), c);
    assert_eq!(
        serde_json::from_value::<MessageCursor>(serde_json::to_value(c).unwrap()).unwrap(),
        c
    );
    let (sender, event) = (c.sender, c.event_id);
    for bad in [
        String::new(),
        "12".into(),
        format!("012.{sender}.{event}"),
        format!("+12.{sender}.{event}"),
        format!("12.{event}.{sender}"),
        format!("12.{sender}.{event}.1"),
        format!("99999999999999999999.{sender}.{event}"),
    ] {
        assert!(bad.parse::<MessageCursor>().is_err(), "{bad}");
    }
}
