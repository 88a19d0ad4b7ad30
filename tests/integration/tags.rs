//! Room tags over HTTP: `GET`, `PUT` and `DELETE /user/{userId}/rooms/{roomId}/tags`, only for
//! yourself, and their `m.tag` room account data in sync.

use serde_json::{Value, json};

use crate::{
    harness::{TestServer, assert_error, enc},
    rooms::create_room,
    sync::{joined, since, sync},
};

fn tag_events(body: &Value, room: &str) -> Vec<Value> {
    joined(body, room)["account_data"]["events"]
        .as_array()
        .map(|events| events.iter().filter(|e| e["type"] == "m.tag").cloned().collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn tags_are_set_read_deleted_and_synced() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = create_room(&server, &alice, json!({})).await;
    let tags = format!("/_matrix/client/v3/user/{}/rooms/{}/tags", enc(&alice.user_id), enc(&room));
    let token = since(&sync(&server, &alice, "").await);

    let (status, body) = server.get(&tags, alice.token()).await;
    assert_eq!((status, body.clone()), (200, json!({"tags": {}})), "{body}");
    let (status, body) = server.put(&format!("{tags}/m.favourite"), alice.token(), json!({"order": 0.25})).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server.put(&format!("{tags}/u.work"), alice.token(), json!({})).await;
    assert_eq!(status, 200, "{body}");
    let (_, body) = server.get(&tags, alice.token()).await;
    assert_eq!(body, json!({"tags": {"m.favourite": {"order": 0.25}, "u.work": {}}}));

    // The tags reach sync as the room's m.tag account data, once.
    let synced = sync(&server, &alice, &format!("since={token}&timeout=0")).await;
    let events = tag_events(&synced, &room);
    assert_eq!(events.len(), 1, "{synced}");
    assert_eq!(events[0]["content"], json!({"tags": {"m.favourite": {"order": 0.25}, "u.work": {}}}));
    let token = since(&synced);
    let quiet = sync(&server, &alice, &format!("since={token}&timeout=0")).await;
    assert!(tag_events(&quiet, &room).is_empty(), "{quiet}");

    // Another user can neither read nor change them.
    assert_error(&server.get(&tags, bob.token()).await, 403, "M_FORBIDDEN");
    assert_error(&server.put(&format!("{tags}/u.x"), bob.token(), json!({})).await, 403, "M_FORBIDDEN");
    assert_error(&server.call("DELETE", &format!("{tags}/u.work"), bob.token(), None).await, 403, "M_FORBIDDEN");

    let (status, body) = server.call("DELETE", &format!("{tags}/u.work"), alice.token(), None).await;
    assert_eq!(status, 200, "{body}");
    let (_, body) = server.get(&tags, alice.token()).await;
    assert_eq!(body, json!({"tags": {"m.favourite": {"order": 0.25}}}));
    let synced = sync(&server, &alice, &format!("since={}&timeout=0", since(&quiet))).await;
    assert_eq!(tag_events(&synced, &room)[0]["content"], json!({"tags": {"m.favourite": {"order": 0.25}}}));
}
