//! Sync filters beyond the basics: lazy-loaded members sent once per device (or every time
//! with `include_redundant_members`), `event_format`, `event_fields` and the per-section room
//! filters.

use serde_json::{Value, json};

use crate::{
    harness::TestServer,
    rooms::create_room,
    sync::{events, filter, join, joined, send, since, sync},
};

fn has_member(body: &Value, room: &str, user: &str) -> bool {
    events(joined(body, room), "state").iter().any(|e| e["type"] == "m.room.member" && e["state_key"] == user)
}

#[tokio::test]
async fn lazy_loading_sends_each_member_once_per_device() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;
    send(&server, &alice, &room, "hello").await;

    let lazy = filter(json!({"room": {"timeline": {"limit": 1}, "state": {"lazy_load_members": true}}}));
    let redundant = filter(json!({"room": {"timeline": {"limit": 1}, "state": {
        "lazy_load_members": true, "include_redundant_members": true}}}));
    let first = sync(&server, &alice, &lazy).await;
    assert!(has_member(&first, &room, &alice.user_id), "{first}");
    assert!(!has_member(&first, &room, &bob.user_id), "{first}");
    let mut token = since(&first);

    // Bob's member event comes with his first message, and not with the next ones.
    let mut seen = Vec::new();
    for text in ["b1", "b2", "b3"] {
        send(&server, &bob, &room, text).await;
        let body = sync(&server, &alice, &format!("since={token}&timeout=0&{lazy}")).await;
        assert_eq!(events(joined(&body, &room), "timeline").len(), 1, "{body}");
        seen.push(has_member(&body, &room, &bob.user_id));
        token = since(&body);
    }
    assert_eq!(seen, [true, false, false]);

    // With include_redundant_members it comes every time.
    for text in ["r1", "r2"] {
        send(&server, &bob, &room, text).await;
        let body = sync(&server, &alice, &format!("since={token}&timeout=0&{redundant}")).await;
        assert!(has_member(&body, &room, &bob.user_id), "{body}");
        token = since(&body);
    }

    // Another device of Alice's has its own record; an initial sync starts afresh.
    let (_, login) = server.login(&alice.user_id, "pw").await;
    let other = crate::harness::Session::from_response(&login);
    send(&server, &alice, &room, "last from alice").await;
    let body = sync(&server, &other, &lazy).await;
    assert!(!has_member(&body, &room, &bob.user_id), "{body}");
    let other_token = since(&body);
    send(&server, &bob, &room, "o1").await;
    let body = sync(&server, &other, &format!("since={other_token}&timeout=0&{lazy}")).await;
    assert!(has_member(&body, &room, &bob.user_id), "the other device gets it although the first one had it: {body}");
    let body = sync(&server, &alice, &lazy).await;
    assert!(has_member(&body, &room, &bob.user_id), "an initial sync sends it again: {body}");
}

#[tokio::test]
async fn event_format_and_event_fields_shape_events() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let room = create_room(&server, &alice, json!({"name": "Shapes"})).await;
    send(&server, &alice, &room, "shaped").await;
    let (status, _) = server
        .put(
            &format!("/_matrix/client/v3/user/{}/account_data/m.test", crate::harness::enc(&alice.user_id)),
            alice.token(),
            json!({"kept": 1, "dropped": 2}),
        )
        .await;
    assert_eq!(status, 200);

    // Federation format: the PDU as signed.
    let body = sync(&server, &alice, &filter(json!({"event_format": "federation"}))).await;
    let timeline = events(joined(&body, &room), "timeline");
    let message = timeline.iter().find(|e| e["type"] == "m.room.message").expect("the message");
    assert!(message["hashes"]["sha256"].is_string(), "{message}");
    assert!(message["signatures"]["localhost"].is_object(), "{message}");
    assert!(message["auth_events"].is_array() && message["prev_events"].is_array(), "{message}");
    assert!(message["depth"].is_u64(), "{message}");
    assert_eq!(message["room_id"], room.as_str());
    let state = events(joined(&body, &room), "state");
    assert!(state.iter().all(|e| e["hashes"].is_object()), "state in PDU form too: {body}");
    // The client format has none of that.
    let body = sync(&server, &alice, "").await;
    let message = events(joined(&body, &room), "timeline").into_iter().find(|e| e["type"] == "m.room.message");
    assert!(message.is_some_and(|m| m.get("hashes").is_none() && m.get("depth").is_none()));

    // event_fields keeps only the listed paths, in every kind of event.
    let fields = filter(json!({"event_fields": ["type", "content.body", "content.kept", r"content.m\.nothing"]}));
    let body = sync(&server, &alice, &fields).await;
    let timeline = events(joined(&body, &room), "timeline");
    let message = timeline.iter().find(|e| e["type"] == "m.room.message").expect("the message");
    assert_eq!(**message, json!({"type": "m.room.message", "content": {"body": "shaped"}}));
    for event in events(joined(&body, &room), "state") {
        let keys: Vec<&String> = event.as_object().unwrap().keys().collect();
        assert!(keys.iter().all(|k| *k == "type" || *k == "content"), "{event}");
    }
    let global = body["account_data"]["events"].as_array().unwrap();
    let test = global.iter().find(|e| e["type"] == "m.test").expect("the account data");
    assert_eq!(*test, json!({"type": "m.test", "content": {"kept": 1}}));
}

#[tokio::test]
async fn per_section_room_filters_are_honoured() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat", "name": "Sections"})).await;
    let other = create_room(&server, &alice, json!({"name": "Other"})).await;
    join(&server, &bob, &room).await;
    send(&server, &alice, &room, "from alice").await;
    send(&server, &bob, &room, "from bob").await;
    let (status, _) = server
        .put(
            &format!(
                "/_matrix/client/v3/user/{}/rooms/{}/account_data/m.kept",
                crate::harness::enc(&alice.user_id),
                crate::harness::enc(&room)
            ),
            alice.token(),
            json!({"a": 1}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = server
        .put(
            &format!(
                "/_matrix/client/v3/user/{}/rooms/{}/account_data/m.dropped",
                crate::harness::enc(&alice.user_id),
                crate::harness::enc(&room)
            ),
            alice.token(),
            json!({"b": 2}),
        )
        .await;
    assert_eq!(status, 200);

    let sections = filter(json!({"room": {
        "not_rooms": [other],
        "timeline": {"senders": [bob.user_id], "limit": 5},
        "state": {"types": ["m.room.name", "m.room.create"]},
        "account_data": {"not_types": ["m.dropped"]},
    }}));
    let body = sync(&server, &alice, &sections).await;
    assert!(body["rooms"]["join"].get(&other).is_none(), "not_rooms: {body}");
    let section = joined(&body, &room);
    let timeline = events(section, "timeline");
    assert!(!timeline.is_empty() && timeline.iter().all(|e| e["sender"] == bob.user_id.as_str()), "{section}");
    let state = events(section, "state");
    assert!(state.iter().all(|e| e["type"] == "m.room.name" || e["type"] == "m.room.create"), "{section}");
    assert!(state.iter().any(|e| e["type"] == "m.room.name"), "{section}");
    let data: Vec<&Value> = events(section, "account_data");
    assert!(data.iter().any(|e| e["type"] == "m.kept"), "{section}");
    assert!(!data.iter().any(|e| e["type"] == "m.dropped"), "{section}");

    // Ephemeral: typing is filtered by type, and by the section's own room list.
    let (status, _) = server
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/typing/{}",
                crate::harness::enc(&room),
                crate::harness::enc(&bob.user_id)
            ),
            bob.token(),
            json!({"typing": true, "timeout": 30000}),
        )
        .await;
    assert_eq!(status, 200);
    let typing_of = |body: &Value| events(joined(body, &room), "ephemeral").iter().any(|e| e["type"] == "m.typing");
    let body = sync(&server, &alice, "").await;
    assert!(typing_of(&body), "{body}");
    let body = sync(&server, &alice, &filter(json!({"room": {"ephemeral": {"not_types": ["m.typing"]}}}))).await;
    assert!(!typing_of(&body), "{body}");
    let body = sync(&server, &alice, &filter(json!({"room": {"ephemeral": {"not_rooms": [room]}}}))).await;
    assert!(!typing_of(&body), "{body}");
}
