//! Reading around an event: `/context`, `/timestamp_to_event`, and reporting events.

use std::time::Duration;

use serde_json::{Value, json};

use crate::{
    harness::{TestServer, assert_error, enc},
    room_helpers::{create_room, join, send_text},
};

fn context_path(room_id: &str, event_id: &str, query: &str) -> String {
    format!("/_matrix/client/v3/rooms/{}/context/{}?{query}", enc(room_id), enc(event_id))
}

fn bodies(events: &Value) -> Vec<String> {
    events
        .as_array()
        .map(|events| events.iter().map(|e| e["content"]["body"].as_str().unwrap_or("").to_owned()).collect())
        .unwrap_or_default()
}

fn member_keys(state: &Value) -> Vec<String> {
    let mut keys: Vec<String> = state
        .as_array()
        .expect("state")
        .iter()
        .filter(|e| e["type"] == "m.room.member")
        .map(|e| e["state_key"].as_str().unwrap_or("").to_owned())
        .collect();
    keys.sort();
    keys
}

#[tokio::test]
async fn context_returns_events_around_an_event_with_tokens_and_state() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat", "name": "Context"})).await;
    join(&server, &bob, &room).await;
    let mut ids = Vec::new();
    for i in 0..10 {
        let sender = if i == 0 { &bob } else { &alice };
        ids.push(send_text(&server, sender, &room, &format!("m{i}")).await);
    }

    let context = server.get(&context_path(&room, &ids[5], "limit=4"), alice.token()).await;
    assert_eq!(context.0, 200, "{}", context.1);
    assert_eq!(context.1["event"]["event_id"], ids[5]);
    assert_eq!(bodies(&context.1["events_before"]), ["m4", "m3"]);
    assert_eq!(bodies(&context.1["events_after"]), ["m6", "m7"]);
    // The state at the last event returned, with every member.
    assert_eq!(member_keys(&context.1["state"]), ["@alice:localhost", "@bob:localhost"]);
    assert!(context.1["state"].as_array().unwrap().iter().any(|e| e["type"] == "m.room.name"));

    // The tokens continue with /messages in both directions.
    let start = context.1["start"].as_str().expect("start");
    let end = context.1["end"].as_str().expect("end");
    let messages = |from: &str, dir: &str| {
        format!("/_matrix/client/v3/rooms/{}/messages?from={from}&dir={dir}&limit=2", enc(&room))
    };
    let back = server.get(&messages(start, "b"), alice.token()).await;
    assert_eq!(bodies(&back.1["chunk"]), ["m2", "m1"], "{}", back.1);
    let forward = server.get(&messages(end, "f"), alice.token()).await;
    assert_eq!(bodies(&forward.1["chunk"]), ["m8", "m9"], "{}", forward.1);

    // The default limit (10) splits 5 before and 5 after; the ends of the room cut it short.
    let context = server.get(&context_path(&room, &ids[8], ""), alice.token()).await;
    assert_eq!(bodies(&context.1["events_after"]), ["m9"]);
    assert_eq!(context.1["events_before"].as_array().map(Vec::len), Some(5));
    let context = server.get(&context_path(&room, &ids[3], "limit=0"), alice.token()).await;
    assert_eq!(context.0, 200, "{}", context.1);
    assert!(context.1.get("events_before").is_none_or(|e| e == &json!([])), "{}", context.1);
    assert!(context.1.get("events_after").is_none_or(|e| e == &json!([])), "{}", context.1);

    // A filter applies to the surrounding events; lazy loading keeps only their senders.
    let filter = enc(&json!({"types": ["m.room.message"], "lazy_load_members": true}).to_string());
    let context = server.get(&context_path(&room, &ids[3], &format!("limit=4&filter={filter}")), alice.token()).await;
    assert_eq!(context.0, 200, "{}", context.1);
    assert_eq!(bodies(&context.1["events_before"]), ["m2", "m1"]);
    assert_eq!(member_keys(&context.1["state"]), ["@alice:localhost"]);
    let filter = enc(&json!({"types": ["m.room.message"], "lazy_load_members": true}).to_string());
    let context = server.get(&context_path(&room, &ids[1], &format!("limit=4&filter={filter}")), alice.token()).await;
    // Only one message before m1 (m0, bob's); the join events are filtered out.
    assert_eq!(bodies(&context.1["events_before"]), ["m0"]);
    assert_eq!(member_keys(&context.1["state"]), ["@alice:localhost", "@bob:localhost"]);
    let filter = enc(&json!({"not_senders": ["@alice:localhost"]}).to_string());
    let context = server.get(&context_path(&room, &ids[5], &format!("limit=2&filter={filter}")), alice.token()).await;
    assert_eq!(bodies(&context.1["events_before"]), ["m0"]);

    // Unknown events, events of another room and events the user may not see are not found.
    assert_error(&server.get(&context_path(&room, "$nope", ""), alice.token()).await, 404, "M_NOT_FOUND");
    let other = create_room(&server, &alice, json!({})).await;
    let elsewhere = send_text(&server, &alice, &other, "private").await;
    assert_error(&server.get(&context_path(&room, &elsewhere, ""), alice.token()).await, 404, "M_NOT_FOUND");
    assert_error(&server.get(&context_path(&other, &elsewhere, ""), bob.token()).await, 404, "M_NOT_FOUND");
    let bad = server.get(&context_path(&room, &ids[5], "filter=notjson"), alice.token()).await;
    assert_eq!(bad.0, 400, "{}", bad.1);
    assert_error(&server.get(&context_path(&room, &ids[5], ""), None).await, 401, "M_MISSING_TOKEN");
}

fn timestamp_path(room_id: &str, ts: u64, dir: &str) -> String {
    format!("/_matrix/client/v1/rooms/{}/timestamp_to_event?ts={ts}&dir={dir}", enc(room_id))
}

async fn event_ts(server: &TestServer, token: Option<&str>, room_id: &str, event_id: &str) -> u64 {
    let path = format!("/_matrix/client/v3/rooms/{}/event/{}", enc(room_id), enc(event_id));
    let (status, event) = server.get(&path, token).await;
    assert_eq!(status, 200, "{event}");
    event["origin_server_ts"].as_u64().expect("origin_server_ts")
}

#[tokio::test]
async fn timestamp_to_event_finds_the_closest_event_in_each_direction() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = create_room(&server, &alice, json!({})).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        ids.push(send_text(&server, &alice, &room, &format!("m{i}")).await);
    }
    let mut ts = Vec::new();
    for id in &ids {
        ts.push(event_ts(&server, alice.token(), &room, id).await);
    }

    let found = server.get(&timestamp_path(&room, ts[1], "f"), alice.token()).await;
    assert_eq!(found.0, 200, "{}", found.1);
    assert_eq!(found.1, json!({"event_id": ids[1], "origin_server_ts": ts[1]}));
    let found = server.get(&timestamp_path(&room, ts[1] + 1, "f"), alice.token()).await;
    assert_eq!(found.1["event_id"], ids[2]);
    let found = server.get(&timestamp_path(&room, ts[1], "b"), alice.token()).await;
    assert_eq!(found.1["event_id"], ids[1]);
    let found = server.get(&timestamp_path(&room, ts[1] - 1, "b"), alice.token()).await;
    assert_eq!(found.1["event_id"], ids[0]);
    let found = server.get(&timestamp_path(&room, ts[2] + 60_000, "b"), alice.token()).await;
    assert_eq!(found.1["event_id"], ids[2]);
    // The unstable path works too.
    let unstable = format!(
        "/_matrix/client/unstable/org.matrix.msc3030/rooms/{}/timestamp_to_event?ts={}&dir=f",
        enc(&room),
        ts[0]
    );
    assert_eq!(server.get(&unstable, alice.token()).await.1["event_id"], ids[0]);

    // Nothing in that direction, a user outside the room, an unknown room, a bad direction.
    assert_error(&server.get(&timestamp_path(&room, ts[2] + 60_000, "f"), alice.token()).await, 404, "M_NOT_FOUND");
    assert_error(&server.get(&timestamp_path(&room, 1, "b"), alice.token()).await, 404, "M_NOT_FOUND");
    assert_error(&server.get(&timestamp_path(&room, ts[1], "f"), bob.token()).await, 403, "M_FORBIDDEN");
    let unknown = server.get(&timestamp_path("!nope:localhost", ts[1], "f"), alice.token()).await;
    assert_error(&unknown, 404, "M_NOT_FOUND");
    let bad = server.get(&timestamp_path(&room, ts[1], "sideways"), alice.token()).await;
    assert_eq!(bad.0, 400, "{}", bad.1);
    let missing =
        server.get(&format!("/_matrix/client/v1/rooms/{}/timestamp_to_event?dir=f", enc(&room)), alice.token()).await;
    assert_eq!(missing.0, 400, "{}", missing.1);

    // With `joined` history visibility, a later member cannot see what came before their join.
    let hidden_room = create_room(
        &server,
        &alice,
        json!({"initial_state": [{"type": "m.room.history_visibility", "content": {"history_visibility": "joined"}}]}),
    )
    .await;
    let secret = send_text(&server, &alice, &hidden_room, "before bob").await;
    let secret_ts = event_ts(&server, alice.token(), &hidden_room, &secret).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let invite = format!("/_matrix/client/v3/rooms/{}/invite", enc(&hidden_room));
    assert_eq!(server.post(&invite, alice.token(), json!({"user_id": bob.user_id})).await.0, 200);
    join(&server, &bob, &hidden_room).await;
    // Bob finds only the room's first events, sent before `joined` visibility was set.
    let before = server.get(&timestamp_path(&hidden_room, secret_ts, "b"), bob.token()).await;
    assert_eq!(before.0, 200, "{}", before.1);
    assert_ne!(before.1["event_id"], secret);
    assert_eq!(server.get(&timestamp_path(&hidden_room, secret_ts, "b"), alice.token()).await.1["event_id"], secret);
    let after = server.get(&timestamp_path(&hidden_room, secret_ts, "f"), bob.token()).await;
    assert_eq!(after.0, 200, "{}", after.1);
    assert_ne!(after.1["event_id"], secret);
    assert_eq!(server.get(&timestamp_path(&hidden_room, secret_ts, "f"), alice.token()).await.1["event_id"], secret);
}

fn report_path(room_id: &str, event_id: &str) -> String {
    format!("/_matrix/client/v3/rooms/{}/report/{}", enc(room_id), enc(event_id))
}

#[tokio::test]
async fn reporting_needs_a_visible_event_in_a_joined_room() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    let event = send_text(&server, &alice, &room, "rude").await;

    let reported = server.post(&report_path(&room, &event), alice.token(), json!({"reason": "rude"})).await;
    assert_eq!(reported, (200, json!({})));
    // `reason` is optional, and the removed `score` is ignored.
    let again = server.post(&report_path(&room, &event), alice.token(), json!({"score": -100})).await;
    assert_eq!(again.0, 200, "{}", again.1);

    // Not joined, unknown event, event of another room: all M_NOT_FOUND.
    let outsider = server.post(&report_path(&room, &event), bob.token(), json!({"reason": "x"})).await;
    assert_error(&outsider, 404, "M_NOT_FOUND");
    join(&server, &bob, &room).await;
    assert_eq!(server.post(&report_path(&room, &event), bob.token(), json!({"reason": "x"})).await.0, 200);
    let unknown = server.post(&report_path(&room, "$nope"), bob.token(), json!({})).await;
    assert_error(&unknown, 404, "M_NOT_FOUND");
    let other = create_room(&server, &alice, json!({})).await;
    let elsewhere = send_text(&server, &alice, &other, "hidden").await;
    let wrong_room = server.post(&report_path(&room, &elsewhere), alice.token(), json!({})).await;
    assert_error(&wrong_room, 404, "M_NOT_FOUND");
    let hidden = server.post(&report_path(&other, &elsewhere), bob.token(), json!({})).await;
    assert_error(&hidden, 404, "M_NOT_FOUND");
    let unknown_room = server.post(&report_path("!nope:localhost", &event), alice.token(), json!({})).await;
    assert_error(&unknown_room, 404, "M_NOT_FOUND");
    let no_token = server.post(&report_path(&room, &event), None, json!({})).await;
    assert_error(&no_token, 401, "M_MISSING_TOKEN");
}
