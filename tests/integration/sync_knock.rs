//! Knocks in `/sync`: a room the user knocked on is under `rooms.knock` with its stripped state
//! (the user's own knock included), once, and leaves that section when the knock is accepted
//! (an invite, then `join`) or rejected (`leave`).

use serde_json::{Value, json};

use crate::{
    harness::{Session, TestServer, enc},
    rooms::create_room,
    sync::{join, since, sync},
};

async fn post(server: &TestServer, who: &Session, path: &str, body: Value) {
    let (status, response) = server.post(path, who.token(), body).await;
    assert_eq!(status, 200, "{path}: {response}");
}

fn knock_state(body: &Value, room: &str) -> Option<Vec<Value>> {
    body["rooms"]["knock"][room]["knock_state"]["events"].as_array().cloned()
}

#[tokio::test]
async fn knocks_appear_until_accepted_or_rejected() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let carol = server.register("carol", "pw").await;
    let room = create_room(
        &server,
        &alice,
        json!({
            "room_version": "10",
            "name": "Knock here",
            "initial_state": [{"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}],
        }),
    )
    .await;
    let bob_token = since(&sync(&server, &bob, "").await);
    let carol_token = since(&sync(&server, &carol, "").await);

    post(&server, &bob, &format!("/_matrix/client/v3/knock/{}", enc(&room)), json!({"reason": "let me in"})).await;
    post(&server, &carol, &format!("/_matrix/client/v3/knock/{}", enc(&room)), json!({})).await;

    // Incrementally and initially, the knock is there with its stripped state.
    let body = sync(&server, &bob, &format!("since={bob_token}&timeout=0")).await;
    let state = knock_state(&body, &room).unwrap_or_else(|| panic!("no knock: {body}"));
    let find = |kind: &str, key: &str| state.iter().find(|e| e["type"] == kind && e["state_key"] == key).cloned();
    let own = find("m.room.member", &bob.user_id).unwrap_or_else(|| panic!("own member event: {state:?}"));
    assert_eq!(own["content"]["membership"], "knock");
    assert_eq!(own["content"]["reason"], "let me in");
    assert_eq!(find("m.room.join_rules", "").unwrap()["content"]["join_rule"], "knock");
    assert_eq!(find("m.room.name", "").unwrap()["content"]["name"], "Knock here");
    assert!(body["rooms"]["join"].get(&room).is_none() && body["rooms"]["leave"].get(&room).is_none());
    let initial = sync(&server, &bob, "").await;
    assert!(knock_state(&initial, &room).is_some(), "{initial}");
    // Shown once.
    let bob_token = since(&body);
    let body = sync(&server, &bob, &format!("since={bob_token}&timeout=0")).await;
    assert!(knock_state(&body, &room).is_none(), "{body}");
    let bob_token = since(&body);

    // Accepted: an invite, then a join.
    post(&server, &alice, &format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)), json!({"user_id": bob.user_id}))
        .await;
    let body = sync(&server, &bob, &format!("since={bob_token}&timeout=0")).await;
    assert!(knock_state(&body, &room).is_none(), "{body}");
    assert!(body["rooms"]["invite"].get(&room).is_some(), "{body}");
    join(&server, &bob, &room).await;
    let body = sync(&server, &bob, &format!("since={}&timeout=0", since(&body))).await;
    assert!(body["rooms"]["join"].get(&room).is_some(), "{body}");
    assert!(knock_state(&body, &room).is_none(), "{body}");

    // Rejected: Carol's knock ends with a kick, and the room moves to `leave`.
    let body = sync(&server, &carol, &format!("since={carol_token}&timeout=0")).await;
    assert!(knock_state(&body, &room).is_some(), "{body}");
    post(&server, &alice, &format!("/_matrix/client/v3/rooms/{}/kick", enc(&room)), json!({"user_id": carol.user_id}))
        .await;
    let body = sync(&server, &carol, &format!("since={}&timeout=0", since(&body))).await;
    assert!(knock_state(&body, &room).is_none(), "{body}");
    let left = &body["rooms"]["leave"][&room];
    let timeline = left["timeline"]["events"].as_array().cloned().unwrap_or_default();
    assert!(
        timeline.iter().any(|e| e["type"] == "m.room.member" && e["content"]["membership"] == "leave"),
        "the rejection is in the left room's timeline: {body}"
    );
}
