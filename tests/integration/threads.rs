//! Threads over HTTP: `/threads` (newest activity first, `include=participated`, pagination)
//! and threaded read receipts with per-thread unread counts. Complement's
//! `TestThreadsEndpoint` and `TestThreadedReceipts` are reproduced here.

use serde_json::{Value, json};

use crate::{
    harness::{Session, TestServer, enc},
    room_helpers::{create_room, join, send_event, send_text},
};

fn in_thread(root: &str, body: &str) -> Value {
    json!({"msgtype": "m.text", "body": body, "m.relates_to": {"rel_type": "m.thread", "event_id": root}})
}

async fn threads(server: &TestServer, who: &Session, room: &str, query: &str) -> Value {
    let path = format!("/_matrix/client/v1/rooms/{}/threads?{query}", enc(room));
    let (status, body) = server.get(&path, who.token()).await;
    assert_eq!(status, 200, "threads?{query}: {body}");
    body
}

/// (root, latest reply) of each thread listed.
fn listed(body: &Value) -> Vec<(String, String)> {
    body["chunk"]
        .as_array()
        .expect("chunk")
        .iter()
        .map(|root| {
            let latest = &root["unsigned"]["m.relations"]["m.thread"]["latest_event"]["event_id"];
            (root["event_id"].as_str().unwrap_or("").to_owned(), latest.as_str().unwrap_or("").to_owned())
        })
        .collect()
}

fn pair(root: &str, latest: &str) -> (String, String) {
    (root.to_owned(), latest.to_owned())
}

#[tokio::test]
async fn threads_are_listed_by_latest_activity() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    let first = send_text(&server, &alice, &room, "Thread 1 Root").await;
    let second = send_text(&server, &alice, &room, "Thread 2 Root").await;
    let reply1 = send_event(&server, &alice, &room, "m.room.message", in_thread(&first, "Thread 1 Reply")).await;
    let reply2 = send_event(&server, &alice, &room, "m.room.message", in_thread(&second, "Thread 2 Reply")).await;

    let body = threads(&server, &alice, &room, "").await;
    assert_eq!(listed(&body), [pair(&second, &reply2), pair(&first, &reply1)], "{body}");

    let reply3 = send_event(&server, &alice, &room, "m.room.message", in_thread(&first, "Thread 1 Reply 2")).await;
    let body = threads(&server, &alice, &room, "").await;
    assert_eq!(listed(&body), [pair(&first, &reply3), pair(&second, &reply2)], "{body}");
    assert_eq!(body["chunk"][0]["unsigned"]["m.relations"]["m.thread"]["count"], 2);
    assert!(body.get("next_batch").is_none(), "{body}");
}

#[tokio::test]
async fn threads_filter_by_participation_and_paginate() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;
    // Bob replied to t1, started t3, and has nothing to do with t2.
    let t1 = send_text(&server, &alice, &room, "t1").await;
    let t2 = send_text(&server, &alice, &room, "t2").await;
    let t3 = send_text(&server, &bob, &room, "t3").await;
    let r1 = send_event(&server, &bob, &room, "m.room.message", in_thread(&t1, "r1")).await;
    let r2 = send_event(&server, &alice, &room, "m.room.message", in_thread(&t2, "r2")).await;
    let r3 = send_event(&server, &alice, &room, "m.room.message", in_thread(&t3, "r3")).await;

    let all = threads(&server, &bob, &room, "include=all").await;
    assert_eq!(listed(&all), [pair(&t3, &r3), pair(&t2, &r2), pair(&t1, &r1)]);
    let mine = threads(&server, &bob, &room, "include=participated").await;
    assert_eq!(listed(&mine), [pair(&t3, &r3), pair(&t1, &r1)], "{mine}");
    for root in mine["chunk"].as_array().expect("chunk") {
        assert_eq!(root["unsigned"]["m.relations"]["m.thread"]["current_user_participated"], true);
    }

    let page = threads(&server, &bob, &room, "limit=2").await;
    assert_eq!(listed(&page), [pair(&t3, &r3), pair(&t2, &r2)]);
    let next = page["next_batch"].as_str().expect("next_batch");
    let page = threads(&server, &bob, &room, &format!("limit=2&from={next}")).await;
    assert_eq!(listed(&page), [pair(&t1, &r1)], "{page}");
    assert!(page.get("next_batch").is_none(), "{page}");
    // A room without threads lists none.
    let empty = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    assert_eq!(threads(&server, &alice, &empty, "").await["chunk"], json!([]));
}

async fn sync(server: &TestServer, who: &Session, filter: Option<&str>) -> Value {
    let query = filter.map(|f| format!("?filter={}", enc(f))).unwrap_or_default();
    let (status, body) = server.get(&format!("/_matrix/client/v3/sync{query}"), who.token()).await;
    assert_eq!(status, 200, "sync: {body}");
    body
}

async fn receipt(server: &TestServer, who: &Session, room: &str, event: &str, body: Value) {
    let path = format!("/_matrix/client/v3/rooms/{}/receipt/m.read/{}", enc(room), enc(event));
    let (status, response) = server.post(&path, who.token(), body).await;
    assert_eq!(status, 200, "receipt: {response}");
}

/// (notification_count, highlight_count) of the room, and of thread `root` if listed.
fn counts(body: &Value, room: &str, root: &str) -> ((u64, u64), Option<(u64, u64)>) {
    let joined = &body["rooms"]["join"][room];
    let pair = |v: &Value| (v["notification_count"].as_u64().unwrap_or(0), v["highlight_count"].as_u64().unwrap_or(0));
    let thread = joined["unread_thread_notifications"].get(root).map(pair);
    (pair(&joined["unread_notifications"]), thread)
}

/// The receipt (its `thread_id`, or "" when unthreaded) `user` has on `event` in the sync's
/// ephemeral events.
fn receipt_thread(body: &Value, room: &str, event: &str, user: &str) -> Option<String> {
    let ephemeral = body["rooms"]["join"][room]["ephemeral"]["events"].as_array()?;
    ephemeral.iter().filter(|e| e["type"] == "m.receipt").find_map(|e| {
        let receipt = e["content"][event]["m.read"].get(user)?;
        Some(receipt.get("thread_id").and_then(Value::as_str).unwrap_or("").to_owned())
    })
}

#[tokio::test]
async fn threaded_receipts_clear_their_own_thread() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let bob_id = "@bob:localhost";
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;

    // A <- B <- C <- E in a thread on A; D in the main timeline; F references A; G annotates F.
    // C and D mention bob in the body only, as Complement does: they highlight through the
    // legacy `.m.rule.contains_user_name` rule, which Synapse keeps and so does Trellis
    // (`push/defaults.rs`).
    let a = send_text(&server, &alice, &room, "Hello world!").await;
    let b = send_event(&server, &alice, &room, "m.room.message", in_thread(&a, "Start thread!")).await;
    let mention = in_thread(&a, &format!("Thread response {bob_id}!"));
    send_event(&server, &alice, &room, "m.room.message", mention).await;
    let mention = json!({"msgtype": "m.text", "body": format!("Hello {bob_id}!")});
    let d = send_event(&server, &alice, &room, "m.room.message", mention).await;
    send_event(&server, &alice, &room, "m.room.message", in_thread(&a, "End thread")).await;
    let f = send_event(
        &server,
        &alice,
        &room,
        "m.room.message",
        json!({"msgtype": "m.text", "body": "Reference!", "m.relates_to": {"rel_type": "m.reference", "event_id": a}}),
    )
    .await;
    let g = send_event(
        &server,
        &alice,
        &room,
        "m.reaction",
        json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": f, "key": "test"}}),
    )
    .await;
    let threaded = r#"{"room":{"timeline":{"unread_thread_notifications":true}}}"#;

    let body = sync(&server, &bob, None).await;
    assert_eq!(counts(&body, &room, &a), ((6, 2), None), "{body}");
    let body = sync(&server, &bob, Some(threaded)).await;
    assert_eq!(counts(&body, &room, &a), ((3, 1), Some((3, 1))), "{body}");

    // A threaded receipt on the main timeline reads A only.
    receipt(&server, &bob, &room, &a, json!({"thread_id": "main"})).await;
    let body = sync(&server, &bob, None).await;
    assert_eq!(receipt_thread(&body, &room, &a, bob_id).as_deref(), Some("main"), "{body}");
    assert_eq!(counts(&body, &room, &a), ((5, 2), None), "{body}");
    let body = sync(&server, &bob, Some(threaded)).await;
    assert_eq!(counts(&body, &room, &a), ((2, 1), Some((3, 1))), "{body}");

    // A receipt in the thread on B reads B only.
    receipt(&server, &bob, &room, &b, json!({"thread_id": a})).await;
    let body = sync(&server, &bob, None).await;
    assert_eq!(receipt_thread(&body, &room, &a, bob_id).as_deref(), Some("main"), "{body}");
    assert_eq!(receipt_thread(&body, &room, &b, bob_id).as_deref(), Some(a.as_str()), "{body}");
    assert_eq!(counts(&body, &room, &a), ((4, 2), None), "{body}");
    let body = sync(&server, &bob, Some(threaded)).await;
    assert_eq!(counts(&body, &room, &a), ((2, 1), Some((2, 1))), "{body}");

    // An unthreaded receipt on D reads everything up to D, threads included.
    receipt(&server, &bob, &room, &d, json!({})).await;
    let body = sync(&server, &bob, None).await;
    assert_eq!(receipt_thread(&body, &room, &d, bob_id).as_deref(), Some(""), "{body}");
    assert_eq!(counts(&body, &room, &a), ((2, 0), None), "{body}");
    let body = sync(&server, &bob, Some(threaded)).await;
    assert_eq!(counts(&body, &room, &a), ((1, 0), Some((1, 0))), "{body}");

    // A receipt in the thread on G (an annotation of a main-timeline event, newer than the
    // whole thread) reads the rest of the thread, and leaves the main timeline alone.
    receipt(&server, &bob, &room, &g, json!({"thread_id": a})).await;
    let body = sync(&server, &bob, None).await;
    assert_eq!(receipt_thread(&body, &room, &d, bob_id).as_deref(), Some(""), "{body}");
    assert_eq!(counts(&body, &room, &a), ((1, 0), None), "{body}");
    let body = sync(&server, &bob, Some(threaded)).await;
    assert_eq!(counts(&body, &room, &a), ((1, 0), None), "{body}");
}
