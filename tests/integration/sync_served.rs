//! Events as `/sync` serves them after the event cache and the room-at-a-time concurrency of
//! initial syncs: an event an earlier sync served is served redacted once redacted (by `/sync`,
//! `/messages` and `/event`), and an initial sync over many rooms gives every room its own
//! timeline, state and `unsigned` fields.

use serde_json::{Value, json};

use crate::{
    harness::{TestServer, enc},
    room_helpers::{join, put_state},
    rooms::{create_room, messages, send_text},
    sync::{events, joined, since, sync},
};

fn find<'a>(events: &[&'a Value], event_id: &Value) -> &'a Value {
    events.iter().find(|e| e["event_id"] == *event_id).copied().unwrap_or_else(|| panic!("{event_id} in {events:?}"))
}

#[tokio::test]
async fn an_event_served_before_its_redaction_is_served_redacted_after_it() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    put_state(&server, &alice, &room, "m.room.topic", json!({"topic": "secret topic"})).await;
    join(&server, &bob, &room).await;
    let (status, sent) = send_text(&server, &alice, &room, "t1", "secret message").await;
    assert_eq!(status, 200, "{sent}");
    let message_id = sent["event_id"].clone();

    // Served (and cached) whole first.
    let body = sync(&server, &bob, "").await;
    let timeline = events(joined(&body, &room), "timeline");
    assert_eq!(find(&timeline, &message_id)["content"]["body"], "secret message", "{body}");
    let state = events(joined(&body, &room), "state");
    let topic = state.iter().find(|e| e["type"] == "m.room.topic").map(|e| e["content"].clone());
    let topic = topic.or_else(|| timeline.iter().find(|e| e["type"] == "m.room.topic").map(|e| e["content"].clone()));
    assert_eq!(topic, Some(json!({"topic": "secret topic"})), "{body}");
    let token = since(&body);
    let (status, first_page) = messages(&server, &bob, &room, "dir=b&limit=10").await;
    assert_eq!(status, 200, "{first_page}");

    let (_, full_state) = server.get(&format!("/_matrix/client/v3/rooms/{}/state", enc(&room)), bob.token()).await;
    let topic_id = full_state
        .as_array()
        .and_then(|all| all.iter().find(|e| e["type"] == "m.room.topic"))
        .map(|e| e["event_id"].clone())
        .unwrap_or_else(|| panic!("{full_state}"));

    let mut redactions = Vec::new();
    for (txn, target) in [("r1", &message_id), ("r2", &topic_id)] {
        let path = format!("/_matrix/client/v3/rooms/{}/redact/{}/{txn}", enc(&room), enc(target.as_str().unwrap()));
        let (status, redaction) = server.put(&path, alice.token(), json!({"reason": "oops"})).await;
        assert_eq!(status, 200, "{redaction}");
        redactions.push(redaction["event_id"].clone());
    }

    // A fresh initial sync: both served redacted, with the redaction in `unsigned`.
    let body = sync(&server, &bob, "").await;
    let timeline = events(joined(&body, &room), "timeline");
    let message = find(&timeline, &message_id);
    assert_eq!(message["content"], json!({}), "{body}");
    assert_eq!(message["unsigned"]["redacted_because"]["event_id"], redactions[0], "{message}");
    assert_eq!(message["unsigned"]["membership"], "join", "{message}");
    let all: Vec<&Value> = events(joined(&body, &room), "state").into_iter().chain(timeline.iter().copied()).collect();
    let topic = find(&all, &topic_id);
    assert_eq!(topic["content"], json!({}), "{topic}");

    // The same through an incremental sync (full state), `/messages` and `/event`.
    let body = sync(&server, &bob, &format!("since={token}&full_state=true&timeout=0")).await;
    let all: Vec<&Value> =
        events(joined(&body, &room), "state").into_iter().chain(events(joined(&body, &room), "timeline")).collect();
    assert_eq!(find(&all, &topic_id)["content"], json!({}), "{body}");
    let (_, page) = messages(&server, &bob, &room, "dir=b&limit=10").await;
    let chunk: Vec<&Value> = page["chunk"].as_array().map(|c| c.iter().collect()).unwrap_or_default();
    assert_eq!(find(&chunk, &message_id)["content"], json!({}), "{page}");
    let (status, event) = server
        .get(
            &format!("/_matrix/client/v3/rooms/{}/event/{}", enc(&room), enc(message_id.as_str().unwrap())),
            bob.token(),
        )
        .await;
    assert_eq!(status, 200, "{event}");
    assert_eq!(event["content"], json!({}), "{event}");
}

#[tokio::test]
async fn an_initial_sync_over_many_rooms_gives_each_room_its_own_events() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let mut rooms = Vec::new();
    for n in 0..12 {
        let room = create_room(&server, &alice, json!({"preset": "public_chat", "name": format!("room {n}")})).await;
        join(&server, &bob, &room).await;
        for m in 0..3 {
            let (status, sent) = send_text(&server, &alice, &room, &format!("t{n}-{m}"), &format!("{n}/{m}")).await;
            assert_eq!(status, 200, "{sent}");
        }
        let (status, sent) = send_text(&server, &bob, &room, &format!("b{n}"), &format!("bob in {n}")).await;
        assert_eq!(status, 200, "{sent}");
        rooms.push(room);
    }
    let body = sync(&server, &bob, "filter=%7B%22room%22%3A%7B%22timeline%22%3A%7B%22limit%22%3A4%7D%7D%7D").await;
    assert_eq!(body["rooms"]["join"].as_object().map(|r| r.len()), Some(12), "{body}");
    for (n, room) in rooms.iter().enumerate() {
        let section = joined(&body, room);
        let timeline = events(section, "timeline");
        let texts: Vec<&str> = timeline.iter().filter_map(|e| e["content"]["body"].as_str()).collect();
        assert_eq!(texts, [format!("{n}/0"), format!("{n}/1"), format!("{n}/2"), format!("bob in {n}")], "{section}");
        for event in &timeline {
            assert!(event.get("room_id").is_none(), "{event}");
            assert_eq!(event["unsigned"]["membership"], "join", "{event}");
        }
        let own = timeline.last().unwrap();
        assert_eq!(own["unsigned"]["transaction_id"], format!("b{n}"), "{own}");
        assert!(timeline[0]["unsigned"].get("transaction_id").is_none(), "{}", timeline[0]);
        let state = events(section, "state");
        let name = state.iter().find(|e| e["type"] == "m.room.name").unwrap_or_else(|| panic!("{section}"));
        assert_eq!(name["content"]["name"], format!("room {n}"), "{section}");
        assert_eq!(section["summary"]["m.joined_member_count"], 2, "{section}");
    }
    // Nothing new: an incremental sync shows no room.
    let quiet = sync(&server, &bob, &format!("since={}&timeout=0", since(&body))).await;
    assert!(quiet["rooms"]["join"].as_object().is_none_or(|r| r.is_empty()), "{quiet}");
}
