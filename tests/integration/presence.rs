//! Presence over HTTP: `GET`/`PUT /presence/{userId}/status`, `set_presence` on `/sync`, the
//! top-level `presence` of syncs (each change once), long-polls woken by presence, the idle and
//! offline timeouts, and the `allow_local_presence` switch.

use serde_json::{Value, json};

use crate::{
    harness::{Session, TestServer, assert_error, enc},
    rooms::create_room,
    sync::{join, since, sync, wakes},
};

fn status_path(user: &str) -> String {
    format!("/_matrix/client/v3/presence/{}/status", enc(user))
}

async fn set_status(server: &TestServer, who: &Session, body: Value) {
    let (status, response) = server.put(&status_path(&who.user_id), who.token(), body).await;
    assert_eq!(status, 200, "{response}");
}

/// The `m.presence` events of a sync response about `user`.
fn presence_of(body: &Value, user: &str) -> Vec<Value> {
    body["presence"]["events"]
        .as_array()
        .map(|events| events.iter().filter(|e| e["sender"] == user).cloned().collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn presence_reaches_room_members_once_and_wakes_long_polls() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let carol = server.register("carol", "pw").await;
    let dave = server.register("dave", "pw").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;
    join(&server, &dave, &room).await;

    // Alice's own sync brings her online; she sees herself, and nobody else is online yet.
    let first = sync(&server, &alice, "").await;
    let own = presence_of(&first, &alice.user_id);
    assert_eq!(own.len(), 1, "{first}");
    assert_eq!(own[0]["content"]["presence"], "online");
    assert!(presence_of(&first, &bob.user_id).is_empty(), "{first}");

    // Bob sets his presence: Alice's long-poll wakes with it.
    let token = since(&first);
    let (_, body) =
        wakes(&server, &alice, &token, set_status(&server, &bob, json!({"presence": "online", "status_msg": "lunch"})))
            .await;
    let bobs = presence_of(&body, &bob.user_id);
    assert_eq!(bobs.len(), 1, "{body}");
    let content = &bobs[0]["content"];
    assert_eq!(content["presence"], "online");
    assert_eq!(content["status_msg"], "lunch");
    assert_eq!(content["currently_active"], true);
    assert!(content["last_active_ago"].is_u64(), "{content}");

    // Unchanged presence is not sent again.
    let token = since(&body);
    let body = sync(&server, &alice, &format!("since={token}&timeout=0")).await;
    assert!(presence_of(&body, &bob.user_id).is_empty(), "{body}");
    assert!(presence_of(&body, &alice.user_id).is_empty(), "{body}");
    let token = since(&body);

    // GET: for yourself and for someone sharing a room.
    let (status, got) = server.get(&status_path(&bob.user_id), alice.token()).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!((got["presence"].clone(), got["status_msg"].clone()), (json!("online"), json!("lunch")));
    assert_eq!(got["currently_active"], true);
    let (status, got) = server.get(&status_path(&alice.user_id), alice.token()).await;
    assert_eq!((status, got["presence"].clone()), (200, json!("online")), "{got}");

    // set_presence=unavailable through sync.
    sync(&server, &bob, "set_presence=unavailable").await;
    let body = sync(&server, &alice, &format!("since={token}&timeout=0")).await;
    let bobs = presence_of(&body, &bob.user_id);
    assert_eq!(bobs.len(), 1, "{body}");
    assert_eq!(bobs[0]["content"]["presence"], "unavailable");
    assert_eq!(bobs[0]["content"]["status_msg"], "lunch", "the status message stays");
    let token = since(&body);
    let (_, got) = server.get(&status_path(&bob.user_id), bob.token()).await;
    assert_eq!(got["presence"], "unavailable");

    // set_presence=offline does not bring Dave online.
    sync(&server, &dave, "set_presence=offline").await;
    let body = sync(&server, &alice, &format!("since={token}&timeout=0")).await;
    assert!(presence_of(&body, &dave.user_id).is_empty(), "{body}");
    let (_, got) = server.get(&status_path(&dave.user_id), alice.token()).await;
    assert_eq!(got["presence"], "offline");

    // Strangers and other users' presence.
    assert_error(&server.get(&status_path(&bob.user_id), carol.token()).await, 403, "M_FORBIDDEN");
    assert_error(&server.get(&status_path("@nobody:localhost"), carol.token()).await, 404, "M_NOT_FOUND");
    assert_error(
        &server.put(&status_path(&bob.user_id), carol.token(), json!({"presence": "offline"})).await,
        403,
        "M_FORBIDDEN",
    );
    // Carol shares no room with Bob: his changes never reach her syncs.
    let carol_first = sync(&server, &carol, "").await;
    assert!(presence_of(&carol_first, &bob.user_id).is_empty(), "{carol_first}");
    set_status(&server, &bob, json!({"presence": "online"})).await;
    let body = sync(&server, &carol, &format!("since={}&timeout=0", since(&carol_first))).await;
    assert!(presence_of(&body, &bob.user_id).is_empty(), "{body}");
}

#[tokio::test]
async fn idle_users_become_unavailable_then_offline() {
    let server = TestServer::start_with("presence_idle_timeout_s = 1\npresence_offline_timeout_s = 4").await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;
    set_status(&server, &bob, json!({"presence": "online"})).await;

    // Alice follows Bob's presence through long-polls (set_presence=offline keeps her own
    // presence out of it) until he is offline.
    let mut token = since(&sync(&server, &alice, "set_presence=offline").await);
    let mut seen = Vec::new();
    while seen.last() != Some(&"offline".to_owned()) && seen.len() < 10 {
        let body = sync(&server, &alice, &format!("since={token}&timeout=30000&set_presence=offline")).await;
        for event in presence_of(&body, &bob.user_id) {
            seen.push(event["content"]["presence"].as_str().unwrap_or_default().to_owned());
        }
        token = since(&body);
    }
    seen.dedup();
    // The initial sync may already have shown him online.
    seen.retain(|s| s != "online");
    assert_eq!(seen, ["unavailable", "offline"]);
    let (_, got) = server.get(&status_path(&bob.user_id), alice.token()).await;
    assert_eq!(got["presence"], "offline");
}

#[tokio::test]
async fn presence_can_be_turned_off() {
    let server = TestServer::start_with("allow_local_presence = false").await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;
    set_status(&server, &bob, json!({"presence": "online", "status_msg": "here"})).await;
    let (status, got) = server.get(&status_path(&bob.user_id), alice.token()).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["presence"], "offline");
    assert!(got.get("status_msg").is_none(), "{got}");
    let body = sync(&server, &alice, "").await;
    assert!(body["presence"]["events"].as_array().is_none_or(|e| e.is_empty()), "{body}");
}
