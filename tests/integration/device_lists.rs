//! Device lists driven by membership, in `/sync`'s `device_lists` and in `/keys/changes`: a user
//! who starts sharing a room with the syncing user (either side joined) is in `changed`; one who
//! stops sharing every room (either side left, was kicked or was banned) is in `left` and not in
//! `changed`; one who still shares another room is in neither.

use serde_json::{Value, json};

use crate::{
    harness::{Session, TestServer, enc},
    room_helpers::{create_room, join},
};

async fn sync(server: &TestServer, who: &Session, since: Option<&str>) -> Value {
    let query = since.map_or_else(String::new, |token| format!("since={token}&timeout=0"));
    let (status, body) = server.get(&format!("/_matrix/client/v3/sync?{query}"), who.token()).await;
    assert_eq!(status, 200, "sync: {body}");
    body
}

fn next_batch(body: &Value) -> String {
    body["next_batch"].as_str().expect("next_batch").to_owned()
}

/// `device_lists.changed` and `device_lists.left` of a sync response, as sorted user IDs.
fn device_lists(body: &Value) -> (Vec<String>, Vec<String>) {
    let users = |part: &str| {
        let mut users: Vec<String> = body["device_lists"][part]
            .as_array()
            .map(|users| users.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default();
        users.sort();
        users
    };
    (users("changed"), users("left"))
}

/// `/keys/changes` between two sync tokens, as sorted (changed, left).
async fn key_changes(server: &TestServer, who: &Session, from: &str, to: &str) -> (Vec<String>, Vec<String>) {
    let (status, body) = server.get(&format!("/_matrix/client/v3/keys/changes?from={from}&to={to}"), who.token()).await;
    assert_eq!(status, 200, "/keys/changes: {body}");
    let users = |part: &str| {
        let mut users: Vec<String> =
            body[part].as_array().expect(part).iter().filter_map(Value::as_str).map(str::to_owned).collect();
        users.sort();
        users
    };
    (users("changed"), users("left"))
}

/// Uploads (unsigned) device keys with `curve` as the curve25519 key, so the user has keys.
async fn upload_device_keys(server: &TestServer, who: &Session, curve: &str) {
    let keys = json!({"device_keys": {"user_id": who.user_id, "device_id": who.device_id,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2"], "keys": {format!("curve25519:{}", who.device_id): curve}}});
    assert_eq!(server.post("/_matrix/client/v3/keys/upload", who.token(), keys).await.0, 200);
}

async fn membership_action(server: &TestServer, who: &Session, room: &str, action: &str, target: &Session) {
    let path = format!("/_matrix/client/v3/rooms/{}/{action}", enc(room));
    let (status, body) = server.post(&path, who.token(), json!({"user_id": target.user_id})).await;
    assert_eq!(status, 200, "{action}: {body}");
}

async fn leave(server: &TestServer, who: &Session, room: &str) {
    let (status, body) =
        server.post(&format!("/_matrix/client/v3/rooms/{}/leave", enc(room)), who.token(), json!({})).await;
    assert_eq!(status, 200, "leave: {body}");
}

fn encrypted_public_room() -> Value {
    json!({"preset": "public_chat", "initial_state": [
        {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}
    ]})
}

#[tokio::test]
async fn joining_makes_the_members_devices_known_to_both_sides() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let carol = server.register("carol", "pw").await;
    for who in [&alice, &bob, &carol] {
        upload_device_keys(&server, who, "first").await;
    }
    let room = create_room(&server, &alice, encrypted_public_room()).await;
    // Tokens taken after every key upload: what follows can only come from the join.
    let alice_before = next_batch(&sync(&server, &alice, None).await);
    let bob_before = next_batch(&sync(&server, &bob, None).await);

    join(&server, &bob, &room).await;
    // An invite shares no room yet: Carol is in neither list.
    membership_action(&server, &alice, &room, "invite", &carol).await;

    let alice_after = sync(&server, &alice, Some(&alice_before)).await;
    assert_eq!(device_lists(&alice_after), (vec![bob.user_id.clone()], vec![]), "{alice_after}");
    let bob_after = sync(&server, &bob, Some(&bob_before)).await;
    assert_eq!(device_lists(&bob_after), (vec![alice.user_id.clone()], vec![]), "{bob_after}");

    // `/keys/changes` between the same tokens says the same.
    let alice_window = key_changes(&server, &alice, &alice_before, &next_batch(&alice_after)).await;
    assert_eq!(alice_window, (vec![bob.user_id.clone()], vec![]));
    let bob_window = key_changes(&server, &bob, &bob_before, &next_batch(&bob_after)).await;
    assert_eq!(bob_window, (vec![alice.user_id.clone()], vec![]));

    // A later sync does not repeat it.
    let again = sync(&server, &alice, Some(&next_batch(&alice_after))).await;
    assert_eq!(device_lists(&again), (vec![], vec![]), "{again}");
}

#[tokio::test]
async fn users_who_stop_sharing_every_room_are_left() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let carol = server.register("carol", "pw").await;
    let dave = server.register("dave", "pw").await;
    let erin = server.register("erin", "pw").await;
    for who in [&alice, &bob, &carol, &dave, &erin] {
        upload_device_keys(&server, who, "first").await;
    }
    let main = create_room(&server, &alice, encrypted_public_room()).await;
    let other = create_room(&server, &alice, encrypted_public_room()).await;
    for who in [&bob, &carol, &dave, &erin] {
        join(&server, who, &main).await;
    }
    join(&server, &erin, &other).await;
    let alice_before = next_batch(&sync(&server, &alice, None).await);
    let bob_before = next_batch(&sync(&server, &bob, None).await);
    let carol_before = next_batch(&sync(&server, &carol, None).await);
    let dave_before = next_batch(&sync(&server, &dave, None).await);

    // Bob leaves, Carol is kicked, Dave is banned; Erin leaves too but still shares `other`.
    leave(&server, &bob, &main).await;
    membership_action(&server, &alice, &main, "kick", &carol).await;
    membership_action(&server, &alice, &main, "ban", &dave).await;
    leave(&server, &erin, &main).await;
    // Keys that change in the same window do not put a departed user in `changed`.
    upload_device_keys(&server, &bob, "second").await;

    let alice_after = sync(&server, &alice, Some(&alice_before)).await;
    let departed = {
        let mut users = vec![bob.user_id.clone(), carol.user_id.clone(), dave.user_id.clone()];
        users.sort();
        users
    };
    assert_eq!(device_lists(&alice_after), (vec![], departed.clone()), "{alice_after}");
    assert_eq!(key_changes(&server, &alice, &alice_before, &next_batch(&alice_after)).await, (vec![], departed));

    // Each side sees it: the leaver, the kicked and the banned user no longer share a room with
    // anyone in `main`.
    for (who, before) in [(&bob, &bob_before), (&carol, &carol_before), (&dave, &dave_before)] {
        let after = sync(&server, who, Some(before)).await;
        let (changed, left) = device_lists(&after);
        assert!(left.contains(&alice.user_id) && left.contains(&erin.user_id), "{} left: {after}", who.user_id);
        assert!(!changed.contains(&alice.user_id), "{} changed: {after}", who.user_id);
        let (changed, left) = key_changes(&server, who, before, &next_batch(&after)).await;
        assert!(left.contains(&alice.user_id) && !changed.contains(&alice.user_id), "{}: {left:?}", who.user_id);
    }
}
