//! Server-side search (`POST /search`): the behaviour Complement's `TestSearch` checks (search by
//! body, context around results, paging back with `next_batch`, upgraded rooms searched with
//! their predecessors, redacted events left out with either ordering), and visibility, keys,
//! filters, groupings, state, ranking and errors.

use serde_json::{Value, json};

use crate::{
    harness::{Session, TestServer, assert_error, enc},
    room_helpers::{create_room, join, put_state, send_text},
};

const SEARCH: &str = "/_matrix/client/v3/search";

async fn search(server: &TestServer, session: &Session, criteria: Value) -> Value {
    search_from(server, session, criteria, None).await
}

async fn search_from(server: &TestServer, session: &Session, criteria: Value, next_batch: Option<&str>) -> Value {
    let path = match next_batch {
        Some(batch) => format!("{SEARCH}?next_batch={}", enc(batch)),
        None => SEARCH.to_owned(),
    };
    let (status, body) =
        server.post(&path, session.token(), json!({"search_categories": {"room_events": criteria}})).await;
    assert_eq!(status, 200, "search: {body}");
    body["search_categories"]["room_events"].clone()
}

fn result_ids(room_events: &Value) -> Vec<String> {
    room_events["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["result"]["event_id"].as_str().expect("event_id").to_owned())
        .collect()
}

async fn private_room(server: &TestServer, session: &Session) -> String {
    create_room(server, session, json!({"preset": "private_chat"})).await
}

#[tokio::test]
async fn finds_an_event_by_body() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let room = private_room(&server, &alice).await;
    let event = send_text(&server, &alice, &room, "hello, world").await;
    send_text(&server, &alice, &room, "something else").await;

    let found =
        search(&server, &alice, json!({"keys": ["content.body"], "search_term": "hello", "filter": {"rooms": [room]}}))
            .await;
    assert_eq!(found["count"], 1, "{found}");
    let result = &found["results"][0]["result"];
    assert_eq!(result["event_id"], event);
    assert_eq!(result["room_id"], room);
    assert_eq!(result["type"], "m.room.message");
    assert_eq!(result["content"]["body"], "hello, world");
    assert!(found["results"][0]["rank"].is_number(), "{found}");
    assert_eq!(found["highlights"], json!(["hello"]));
    // Case and punctuation do not matter; every word must match.
    assert_eq!(search(&server, &alice, json!({"search_term": "WORLD!"})).await["count"], 1);
    assert_eq!(search(&server, &alice, json!({"search_term": "hello else"})).await["count"], 0);
    // Nothing to search for: no results, but the keys are there.
    let none = search(&server, &alice, json!({"search_term": "..."})).await;
    assert_eq!(none["count"], 0);
    assert_eq!(none["results"], json!([]));
}

#[tokio::test]
async fn returns_context_around_results() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let room = private_room(&server, &alice).await;
    put_state(
        &server,
        &alice,
        &room,
        "m.room.member/@alice:localhost",
        json!({"membership": "join", "displayname": "Al"}),
    )
    .await;
    for i in 1..=7 {
        send_text(&server, &alice, &room, &format!("Message number {i}")).await;
    }
    let found = search(
        &server,
        &alice,
        json!({"keys": ["content.body"], "search_term": "Message 4", "order_by": "recent",
               "filter": {"limit": 1, "rooms": [room]},
               "event_context": {"before_limit": 2, "after_limit": 2, "include_profile": true}}),
    )
    .await;
    assert_eq!(found["count"], 1, "{found}");
    assert!(found["next_batch"].is_string(), "{found}");
    let first = &found["results"][0];
    assert_eq!(first["result"]["room_id"], room);
    assert_eq!(first["result"]["content"]["body"], "Message number 4");
    let context = &first["context"];
    assert_eq!(context["events_before"][0]["content"]["body"], "Message number 3");
    assert_eq!(context["events_before"][1]["content"]["body"], "Message number 2");
    assert_eq!(context["events_after"][0]["content"]["body"], "Message number 5");
    assert_eq!(context["events_after"][1]["content"]["body"], "Message number 6");
    assert!(context["start"].is_string() && context["end"].is_string(), "{context}");
    assert_eq!(context["profile_info"]["@alice:localhost"]["displayname"], "Al", "{context}");

    // Without `event_context`, no context.
    let plain = search(&server, &alice, json!({"search_term": "number 4"})).await;
    assert!(plain["results"][0].get("context").is_none(), "{plain}");
}

#[tokio::test]
async fn pages_back_with_next_batch() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let room = private_room(&server, &alice).await;
    let mut events = Vec::new();
    for i in 0..20 {
        events.push(send_text(&server, &alice, &room, &format!("Message number {i}")).await);
    }
    let criteria = json!({"keys": ["content.body"], "search_term": "Message", "order_by": "recent",
                          "filter": {"limit": 10, "rooms": [room]}});
    let first = search(&server, &alice, criteria.clone()).await;
    assert_eq!(first["count"], 20);
    let expected: Vec<String> = events.iter().rev().cloned().collect();
    assert_eq!(result_ids(&first), expected[..10]);
    let batch = first["next_batch"].as_str().expect("next_batch").to_owned();

    // A message sent meanwhile does not shift the pages.
    send_text(&server, &alice, &room, "unrelated").await;
    let second = search_from(&server, &alice, criteria.clone(), Some(&batch)).await;
    assert_eq!(second["count"], 20);
    assert_eq!(result_ids(&second), expected[10..]);
    let batch = second["next_batch"].as_str().expect("next_batch on a full page").to_owned();

    let third = search_from(&server, &alice, criteria.clone(), Some(&batch)).await;
    assert_eq!(third["count"], 20);
    assert_eq!(third["results"], json!([]), "{third}");
    assert!(third.get("next_batch").is_none(), "{third}");

    // Rank order pages by offset.
    let ranked = json!({"search_term": "Message", "order_by": "rank", "filter": {"limit": 15, "rooms": [room]}});
    let first = search(&server, &alice, ranked.clone()).await;
    let batch = first["next_batch"].as_str().expect("next_batch").to_owned();
    let second = search_from(&server, &alice, ranked.clone(), Some(&batch)).await;
    let mut all = result_ids(&first);
    all.extend(result_ids(&second));
    all.sort();
    let mut sorted = events.clone();
    sorted.sort();
    assert_eq!(all, sorted);

    // A next_batch of the other ordering, or garbage, is refused.
    let (status, body) = server
        .post(
            &format!("{SEARCH}?next_batch={}", enc(&batch)),
            alice.token(),
            json!({"search_categories": {"room_events": criteria}}),
        )
        .await;
    assert_error(&(status, body), 400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn searches_an_upgraded_room_with_its_predecessor() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let old = create_room(&server, &alice, json!({"preset": "private_chat", "room_version": "8"})).await;
    let before = send_text(&server, &alice, &old, "Message before upgrade").await;
    let (status, body) = server
        .post(&format!("/_matrix/client/v3/rooms/{}/upgrade", enc(&old)), alice.token(), json!({"new_version": "9"}))
        .await;
    assert_eq!(status, 200, "upgrade: {body}");
    let new = body["replacement_room"].as_str().expect("replacement_room").to_owned();
    let after = send_text(&server, &alice, &new, "Message after upgrade").await;

    for rooms in [json!([old, new]), json!([new])] {
        let found = search(
            &server,
            &alice,
            json!({"keys": ["content.body"], "search_term": "upgrade", "filter": {"rooms": rooms}}),
        )
        .await;
        assert_eq!(found["count"], 2, "{found}");
        let mut ids = result_ids(&found);
        ids.sort();
        let mut expected = vec![before.clone(), after.clone()];
        expected.sort();
        assert_eq!(ids, expected);
        for result in found["results"].as_array().expect("results") {
            assert_eq!(result["result"]["type"], "m.room.message");
        }
    }
    // `not_rooms` leaves the predecessor out.
    let found = search(&server, &alice, json!({"search_term": "upgrade", "filter": {"not_rooms": [old]}})).await;
    assert_eq!(result_ids(&found), [after]);
}

#[tokio::test]
async fn leaves_out_redacted_events_with_either_ordering() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;
    let redacted = send_text(&server, &alice, &room, "This message is going to be redacted").await;
    let visible = send_text(&server, &alice, &room, "This message is not going to be redacted").await;
    // Bob's message redacted by the room's admin (judged when serving, not at indexing).
    let by_admin = send_text(&server, &bob, &room, "Bob's message will be redacted too").await;
    for (event, txn) in [(&redacted, "r1"), (&by_admin, "r2")] {
        let path = format!("/_matrix/client/v3/rooms/{}/redact/{}/{txn}", enc(&room), enc(event));
        let (status, body) = server.put(&path, alice.token(), json!({"reason": "testing"})).await;
        assert_eq!(status, 200, "redact: {body}");
    }
    for order in ["rank", "recent"] {
        let found = search(
            &server,
            &alice,
            json!({"keys": ["content.body"], "order_by": order, "search_term": "redacted", "filter": {"rooms": [room]}}),
        )
        .await;
        assert_eq!(result_ids(&found), std::slice::from_ref(&visible), "{order}: {found}");
        assert_eq!(found["results"][0]["result"]["content"]["body"], "This message is not going to be redacted");
    }
}

#[tokio::test]
async fn respects_history_visibility() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    put_state(&server, &alice, &room, "m.room.history_visibility", json!({"history_visibility": "joined"})).await;
    send_text(&server, &alice, &room, "secret before bob").await;

    // Not a member: nothing, even when naming the room.
    let found = search(&server, &bob, json!({"search_term": "secret", "filter": {"rooms": [room]}})).await;
    assert_eq!(found["count"], 0, "{found}");

    join(&server, &bob, &room).await;
    let later = send_text(&server, &alice, &room, "secret after bob").await;
    let found = search(&server, &bob, json!({"search_term": "secret"})).await;
    assert_eq!(result_ids(&found), [later], "{found}");
    assert_eq!(search(&server, &alice, json!({"search_term": "secret"})).await["count"], 2);
}

#[tokio::test]
async fn keys_filters_groupings_state_and_rank() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat", "name": "Gardening club"})).await;
    let other = create_room(&server, &alice, json!({"preset": "public_chat", "topic": "All about gardening"})).await;
    join(&server, &bob, &room).await;
    let once = send_text(&server, &alice, &room, "gardening is fun").await;
    let twice = send_text(&server, &bob, &room, "gardening gardening every day").await;
    let elsewhere = send_text(&server, &alice, &other, "gardening elsewhere").await;

    // Keys: only names, only topics, only bodies.
    let names = search(&server, &alice, json!({"search_term": "gardening", "keys": ["content.name"]})).await;
    assert_eq!(names["count"], 1, "{names}");
    assert_eq!(names["results"][0]["result"]["type"], "m.room.name");
    let topics = search(&server, &alice, json!({"search_term": "gardening", "keys": ["content.topic"]})).await;
    assert_eq!(topics["results"][0]["result"]["type"], "m.room.topic", "{topics}");
    let bodies = search(&server, &alice, json!({"search_term": "gardening", "keys": ["content.body"]})).await;
    assert_eq!(bodies["count"], 3);

    // Rank: the message saying it twice (and shorter relative to its matches) first.
    let ranked = search(
        &server,
        &alice,
        json!({"search_term": "gardening", "keys": ["content.body"],
                                                  "order_by": "rank", "filter": {"rooms": [room]}}),
    )
    .await;
    assert_eq!(result_ids(&ranked), [twice.clone(), once.clone()], "{ranked}");

    // Filters: senders, types.
    let from_bob =
        search(&server, &alice, json!({"search_term": "gardening", "filter": {"senders": ["@bob:localhost"]}})).await;
    assert_eq!(result_ids(&from_bob), std::slice::from_ref(&twice));
    let not_messages =
        search(&server, &alice, json!({"search_term": "gardening", "filter": {"not_types": ["m.room.message"]}})).await;
    assert_eq!(not_messages["count"], 2, "{not_messages}");

    // Groupings and state.
    let grouped = search(
        &server,
        &alice,
        json!({"search_term": "gardening", "keys": ["content.body"], "order_by": "recent", "include_state": true,
               "groupings": {"group_by": [{"key": "room_id"}, {"key": "sender"}]}}),
    )
    .await;
    assert_eq!(result_ids(&grouped), [elsewhere.clone(), twice.clone(), once.clone()]);
    let by_room = &grouped["groups"]["room_id"];
    assert_eq!(by_room[&room]["results"], json!([twice, once]), "{grouped}");
    assert_eq!(by_room[&other]["results"], json!([elsewhere]));
    assert_eq!(by_room[&other]["order"], 1);
    assert_eq!(grouped["groups"]["sender"]["@bob:localhost"]["results"], json!([twice]));
    let state = grouped["state"][&room].as_array().expect("state of the room");
    assert!(state.iter().any(|e| e["type"] == "m.room.name"), "{state:?}");

    // Errors.
    let (status, body) = server
        .post(
            SEARCH,
            alice.token(),
            json!({"search_categories": {"room_events": {"search_term": "x", "order_by": "nope"}}}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let many: Vec<String> = (0..17).map(|i| format!("w{i}")).collect();
    let (status, body) = server
        .post(SEARCH, alice.token(), json!({"search_categories": {"room_events": {"search_term": many.join(" ")}}}))
        .await;
    assert_error(&(status, body), 400, "M_BAD_JSON");
    let (status, body) = server.post(SEARCH, None, json!({"search_categories": {}})).await;
    assert_error(&(status, body), 401, "M_MISSING_TOKEN");
}
