//! The state of a room with a large state (more than 200 events), which an initial `/sync`
//! writes straight from the stored events when they are not in the event cache: each event is
//! the one `/rooms/{id}/state` serves (which parses it), apart from `room_id`, and stays so
//! after a redaction, a state change, a membership change and a profile change; filters still
//! apply to it.

use std::collections::HashMap;

use serde_json::{Value, json};

use crate::{
    harness::{Session, TestServer, enc},
    room_helpers::{create_room, join, put_state, redact},
    sync::{events, filter, joined, sync},
};

/// Custom state events set besides the room's own, so the state is over the large-state mark.
const EXTRA_STATE: usize = 205;

/// `/rooms/{id}/state`, by event ID, without `room_id` (which the sync format leaves out).
async fn served_state(server: &TestServer, who: &Session, room: &str) -> HashMap<String, Value> {
    let (status, body) = server.get(&format!("/_matrix/client/v3/rooms/{}/state", enc(room)), who.token()).await;
    assert_eq!(status, 200, "state: {body}");
    let list = body.as_array().unwrap_or_else(|| panic!("state list: {body}"));
    list.iter()
        .map(|event| {
            let mut event = event.clone();
            if let Some(object) = event.as_object_mut() {
                object.remove("room_id");
            }
            (event["event_id"].as_str().expect("event_id").to_owned(), event)
        })
        .collect()
}

/// The state part of an initial sync without a filter but for a timeline of one event, and the
/// timeline's event.
async fn initial_state(server: &TestServer, who: &Session, room: &str) -> (Vec<Value>, Vec<Value>) {
    let body = sync(server, who, &filter(json!({"room": {"timeline": {"limit": 1}}}))).await;
    let section = joined(&body, room);
    let state = events(section, "state").into_iter().cloned().collect();
    let timeline = events(section, "timeline").into_iter().cloned().collect();
    (state, timeline)
}

/// Every state event the initial sync serves is the one `/state` serves (but the one the
/// timeline's state event replaces), and there are as many: the newest event, in the timeline,
/// must replace a state event.
async fn assert_same_state(server: &TestServer, who: &Session, room: &str) -> Vec<Value> {
    // The sync first: `/state` parses every event into the event cache.
    let (state, timeline) = initial_state(server, who, room).await;
    let expected = served_state(server, who, room).await;
    let [newest] = timeline.as_slice() else { panic!("one timeline event: {timeline:?}") };
    for event in &state {
        if event["type"] == newest["type"] && event["state_key"] == newest["state_key"] {
            continue;
        }
        let id = event["event_id"].as_str().expect("event_id");
        let Some(served) = expected.get(id) else { panic!("{id} is not in the current state: {event}") };
        assert_eq!(event, served, "served by /sync and by /state");
    }
    assert_eq!(state.len(), expected.len(), "the whole state is served");
    state
}

fn find<'a>(state: &'a [Value], kind: &str, key: &str) -> &'a Value {
    state
        .iter()
        .find(|e| e["type"] == kind && e["state_key"] == key)
        .unwrap_or_else(|| panic!("{kind} {key} in the state"))
}

async fn put_keyed(server: &TestServer, who: &Session, room: &str, kind: &str, key: &str, content: Value) -> String {
    let path = format!("/_matrix/client/v3/rooms/{}/state/{kind}/{}", enc(room), enc(key));
    let (status, body) = server.put(&path, who.token(), content).await;
    assert_eq!(status, 200, "put {kind} {key}: {body}");
    body["event_id"].as_str().expect("event_id").to_owned()
}

#[tokio::test]
async fn a_large_state_is_served_as_stored_and_follows_changes() {
    large_state_scenario(&TestServer::start().await).await;
}

/// The same without the event cache: every state event of the sync is written from storage.
#[tokio::test]
async fn a_large_state_is_served_as_stored_without_the_event_cache() {
    large_state_scenario(&TestServer::start_with("event_cache_capacity_mb = 0").await).await;
}

async fn large_state_scenario(server: &TestServer) {
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let carol = server.register("carol", "pw").await;
    let room = create_room(server, &alice, json!({"preset": "public_chat", "name": "big"})).await;
    join(server, &bob, &room).await;
    join(server, &carol, &room).await;
    // A display name with escapes and non-ASCII text, and a state key with a quote and a
    // backslash (written out as escapes in the stored JSON).
    let profile = format!("/_matrix/client/v3/rooms/{}/state/m.room.member/{}", enc(&room), enc(&bob.user_id));
    let member = json!({"membership": "join", "displayname": "Bob \"the\" Builder \u{2713}\n"});
    assert_eq!(server.put(&profile, bob.token(), member).await.0, 200);
    let odd_key = "odd \"key\" \\ here";
    put_keyed(server, &alice, &room, "org.example.s", odd_key, json!({"odd": true})).await;
    let mut redacted = String::new();
    for i in 0..EXTRA_STATE {
        let id = put_keyed(server, &alice, &room, "org.example.s", &format!("k{i}"), json!({"n": i})).await;
        if i == 7 {
            redacted = id;
        }
    }
    // A replaced state event: its successor carries `unsigned.replaces_state` and `prev_content`.
    put_keyed(server, &alice, &room, "org.example.s", "k3", json!({"n": "three"})).await;
    put_state(server, &alice, &room, "m.room.topic", json!({"topic": "first"})).await;
    put_state(server, &alice, &room, "m.room.topic", json!({"topic": "second"})).await;

    let state = assert_same_state(server, &bob, &room).await;
    assert!(state.len() > EXTRA_STATE, "{}", state.len());
    assert_eq!(find(&state, "org.example.s", "k3")["content"]["n"], "three");
    assert_eq!(find(&state, "org.example.s", odd_key)["content"]["odd"], true);
    let bob_member = find(&state, "m.room.member", &bob.user_id);
    assert_eq!(bob_member["content"]["displayname"], "Bob \"the\" Builder \u{2713}\n", "{bob_member}");
    // Served twice in a row, the same (a second sync reads through whatever the first cached).
    assert_eq!(assert_same_state(server, &bob, &room).await, state);

    // A redaction, a state change, a leave and a profile change: the next initial sync has
    // them, and still agrees with /state.
    redact(server, &alice, &room, &redacted).await;
    put_keyed(server, &alice, &room, "org.example.s", "k9", json!({"n": "nine"})).await;
    let leave = format!("/_matrix/client/v3/rooms/{}/leave", enc(&room));
    assert_eq!(server.post(&leave, carol.token(), json!({})).await.0, 200);
    let member = json!({"membership": "join", "displayname": "Bob again"});
    assert_eq!(server.put(&profile, bob.token(), member).await.0, 200);
    // The newest event, the timeline of one, replaces a state event.
    put_state(server, &alice, &room, "m.room.topic", json!({"topic": "third"})).await;

    let state = assert_same_state(server, &alice, &room).await;
    let k7 = find(&state, "org.example.s", "k7");
    assert_eq!(k7["content"], json!({}), "redacted: {k7}");
    assert!(k7["unsigned"]["redacted_because"].is_object(), "{k7}");
    assert_eq!(find(&state, "org.example.s", "k9")["content"]["n"], "nine");
    assert_eq!(find(&state, "m.room.member", &carol.user_id)["content"]["membership"], "leave");
    assert_eq!(find(&state, "m.room.member", &bob.user_id)["content"]["displayname"], "Bob again");

    // A state filter still narrows a large state.
    let body = sync(server, &alice, &filter(json!({"room": {"state": {"types": ["m.room.member"]}}}))).await;
    let members = events(joined(&body, &room), "state");
    assert!(!members.is_empty() && members.iter().all(|e| e["type"] == "m.room.member"), "{body}");
    let body = sync(server, &alice, &filter(json!({"room": {"state": {"not_senders": [alice.user_id]}}}))).await;
    let others = events(joined(&body, &room), "state");
    assert!(!others.is_empty() && others.iter().all(|e| e["sender"] != alice.user_id.as_str()), "{body}");
}
