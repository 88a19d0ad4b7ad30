//! Unread counts in `/sync` are kept per user and room up to the sync's snapshot and extended by
//! the notifications after it (`service::push::counts`), instead of counting every unread
//! notification again. These cases move what the counts depend on between syncs that warmed the
//! kept counts: new messages and mentions, read receipts (unthreaded and threaded), leaving and
//! joining again, the thread counts asked for or not, and an older token.

use serde_json::{Value, json};

use crate::{
    harness::{Session, TestServer, enc},
    room_helpers::{create_room, send_event, send_text},
    sync::{join, joined, since, sync},
};

/// (notification_count, highlight_count) of the room, and of thread `root` when listed.
fn counts(body: &Value, room: &str, root: Option<&str>) -> ((u64, u64), Option<(u64, u64)>) {
    let section = joined(body, room);
    let pair = |v: &Value| (v["notification_count"].as_u64().unwrap_or(0), v["highlight_count"].as_u64().unwrap_or(0));
    let thread = root.and_then(|root| section["unread_thread_notifications"].get(root)).map(pair);
    (pair(&section["unread_notifications"]), thread)
}

async fn receipt(server: &TestServer, who: &Session, room: &str, event: &str, body: Value) {
    let path = format!("/_matrix/client/v3/rooms/{}/receipt/m.read/{}", enc(room), enc(event));
    let (status, response) = server.post(&path, who.token(), body).await;
    assert_eq!(status, 200, "receipt: {response}");
}

fn mention(user: &str) -> Value {
    json!({"msgtype": "m.text", "body": "hey", "m.mentions": {"user_ids": [user]}})
}

fn in_thread(root: &str, body: &str) -> Value {
    json!({"msgtype": "m.text", "body": body, "m.relates_to": {"rel_type": "m.thread", "event_id": root}})
}

#[tokio::test]
async fn unread_counts_stay_right_across_incremental_syncs() {
    let server = TestServer::start().await;
    let alice = server.register("unread_alice", "pw").await;
    let bob = server.register("unread_bob", "pw").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;
    let body = sync(&server, &bob, "").await;
    assert_eq!(counts(&body, &room, None), ((0, 0), None), "{body}");
    let first_token = since(&body);
    let mut token = first_token.clone();

    // Each message counts once more, whether the sync is incremental or initial.
    let mut sent = Vec::new();
    for n in 1..=3u64 {
        sent.push(send_text(&server, &alice, &room, &format!("message {n}")).await);
        let body = sync(&server, &bob, &format!("since={token}&timeout=0")).await;
        assert_eq!(counts(&body, &room, None), ((n, 0), None), "{body}");
        token = since(&body);
    }
    let body = sync(&server, &bob, "").await;
    assert_eq!(counts(&body, &room, None), ((3, 0), None), "{body}");
    // Bob's own message does not count; a mention highlights.
    send_text(&server, &bob, &room, "bob's own").await;
    send_event(&server, &alice, &room, "m.room.message", mention(&bob.user_id)).await;
    let body = sync(&server, &bob, &format!("since={token}&timeout=0")).await;
    assert_eq!(counts(&body, &room, None), ((4, 1), None), "{body}");
    token = since(&body);

    // A receipt on the second message leaves the third and the mention.
    receipt(&server, &bob, &room, &sent[1], json!({})).await;
    let body = sync(&server, &bob, &format!("since={token}&timeout=0")).await;
    assert_eq!(counts(&body, &room, None), ((2, 1), None), "{body}");
    token = since(&body);
    send_text(&server, &alice, &room, "after the receipt").await;
    let body = sync(&server, &bob, &format!("since={token}&timeout=0")).await;
    assert_eq!(counts(&body, &room, None), ((3, 1), None), "{body}");
    token = since(&body);

    // A sync from an older token counts up to now as well.
    let body = sync(&server, &bob, &format!("since={first_token}&timeout=0")).await;
    assert_eq!(counts(&body, &room, None), ((3, 1), None), "{body}");

    // Leaving and joining again: only what came after the new join counts.
    let leave = format!("/_matrix/client/v3/rooms/{}/leave", enc(&room));
    assert_eq!(server.post(&leave, bob.token(), json!({})).await.0, 200);
    send_text(&server, &alice, &room, "while bob is away").await;
    join(&server, &bob, &room).await;
    let body = sync(&server, &bob, &format!("since={token}&timeout=0")).await;
    assert_eq!(counts(&body, &room, None), ((0, 0), None), "{body}");
    token = since(&body);
    send_text(&server, &alice, &room, "welcome back").await;
    let body = sync(&server, &bob, &format!("since={token}&timeout=0")).await;
    assert_eq!(counts(&body, &room, None), ((1, 0), None), "{body}");
}

#[tokio::test]
async fn thread_counts_stay_right_across_incremental_syncs() {
    let server = TestServer::start().await;
    let alice = server.register("unread_thread_alice", "pw").await;
    let bob = server.register("unread_thread_bob", "pw").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;
    let threaded = format!("filter={}", enc(r#"{"room":{"timeline":{"unread_thread_notifications":true}}}"#));
    let root = send_text(&server, &alice, &room, "root").await;
    let body = sync(&server, &bob, &threaded).await;
    assert_eq!(counts(&body, &room, Some(root.as_str())), ((1, 0), None), "{body}");
    let mut token = since(&body);

    // Replies count in their thread when thread counts are asked for, in the room otherwise;
    // the two kinds of sync take turns.
    let first = send_event(&server, &alice, &room, "m.room.message", in_thread(&root, "one")).await;
    let body = sync(&server, &bob, &format!("{threaded}&since={token}&timeout=0")).await;
    assert_eq!(counts(&body, &room, Some(root.as_str())), ((1, 0), Some((1, 0))), "{body}");
    token = since(&body);
    let body = sync(&server, &bob, "").await;
    assert_eq!(counts(&body, &room, Some(root.as_str())), ((2, 0), None), "{body}");
    send_event(&server, &alice, &room, "m.room.message", in_thread(&root, "two")).await;
    let body = sync(&server, &bob, &format!("{threaded}&since={token}&timeout=0")).await;
    assert_eq!(counts(&body, &room, Some(root.as_str())), ((1, 0), Some((2, 0))), "{body}");
    token = since(&body);
    let body = sync(&server, &bob, "").await;
    assert_eq!(counts(&body, &room, Some(root.as_str())), ((3, 0), None), "{body}");

    // A receipt in the thread on its first reply leaves the second; the main timeline is
    // untouched, then read by a receipt of its own.
    receipt(&server, &bob, &room, &first, json!({"thread_id": root})).await;
    let body = sync(&server, &bob, &format!("{threaded}&since={token}&timeout=0")).await;
    assert_eq!(counts(&body, &room, Some(root.as_str())), ((1, 0), Some((1, 0))), "{body}");
    token = since(&body);
    receipt(&server, &bob, &room, &root, json!({"thread_id": "main"})).await;
    let body = sync(&server, &bob, &format!("{threaded}&since={token}&timeout=0")).await;
    assert_eq!(counts(&body, &room, Some(root.as_str())), ((0, 0), Some((1, 0))), "{body}");
    token = since(&body);

    // A mention in the thread after all that.
    let mut reply = in_thread(&root, "three");
    reply["m.mentions"] = json!({"user_ids": [bob.user_id]});
    send_event(&server, &alice, &room, "m.room.message", reply).await;
    let body = sync(&server, &bob, &format!("{threaded}&since={token}&timeout=0")).await;
    assert_eq!(counts(&body, &room, Some(root.as_str())), ((0, 0), Some((2, 1))), "{body}");
}
