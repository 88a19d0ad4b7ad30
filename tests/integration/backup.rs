//! Server-side key backup over HTTP: versions, the rule for which copy of a session wins,
//! etags and counts, the current-version check, and deletion.

use serde_json::{Value, json};

use crate::harness::{TestServer, assert_error, enc};

fn algorithm(key: &str) -> Value {
    json!({"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "auth_data": {"public_key": key, "signatures": {}}})
}

fn session(first_index: u64, forwarded: u64, verified: bool, tag: &str) -> Value {
    json!({"first_message_index": first_index, "forwarded_count": forwarded, "is_verified": verified,
           "session_data": {"ephemeral": "ZXBo", "ciphertext": tag, "mac": "bWFj"}})
}

#[tokio::test]
async fn key_backup_keeps_the_best_copy_of_each_session() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    assert_error(&server.get("/_matrix/client/v3/room_keys/version", alice.token()).await, 404, "M_NOT_FOUND");

    let created = server.post("/_matrix/client/v3/room_keys/version", alice.token(), algorithm("key1")).await;
    assert_eq!(created, (200, json!({"version": "1"})));
    let info = server.get("/_matrix/client/v3/room_keys/version", alice.token()).await.1;
    assert_eq!((info["version"].clone(), info["count"].clone()), (json!("1"), json!(0)));
    assert_eq!(info["auth_data"]["public_key"], "key1");
    assert_error(&server.get("/_matrix/client/v3/room_keys/version", bob.token()).await, 404, "M_NOT_FOUND");

    let room = "!room:localhost";
    let session_path = format!("/_matrix/client/v3/room_keys/keys/{}/sess1?version=1", enc(room));
    let first = server.put(&session_path, alice.token(), session(5, 1, false, "first")).await;
    assert_eq!(first.0, 200, "{}", first.1);
    assert_eq!(first.1["count"], 1);
    let etag = first.1["etag"].clone();

    // A worse copy (later first message index) is ignored; the etag stays.
    let worse = server.put(&session_path, alice.token(), session(9, 0, false, "worse")).await;
    assert_eq!(worse.1["etag"], etag);
    // A verified copy wins over an unverified one, whatever its index.
    let verified = server.put(&session_path, alice.token(), session(20, 3, true, "verified")).await;
    assert_ne!(verified.1["etag"], etag);
    // Among verified copies, the lower first message index wins.
    server.put(&session_path, alice.token(), session(2, 0, true, "best")).await;
    let stored = server.get(&session_path, alice.token()).await;
    assert_eq!(stored.1["session_data"]["ciphertext"], "best", "{}", stored.1);

    let many = json!({"rooms": {room: {"sessions": {"sess2": session(0, 0, false, "two")}},
                                "!other:localhost": {"sessions": {"sess3": session(0, 0, false, "three")}}}});
    let put_all = server.put("/_matrix/client/v3/room_keys/keys?version=1", alice.token(), many).await;
    assert_eq!(put_all.1["count"], 3, "{}", put_all.1);
    let all = server.get("/_matrix/client/v3/room_keys/keys?version=1", alice.token()).await;
    assert_eq!(all.1["rooms"][room]["sessions"].as_object().unwrap().len(), 2);
    let one_room =
        server.get(&format!("/_matrix/client/v3/room_keys/keys/{}?version=1", enc(room)), alice.token()).await;
    assert_eq!(one_room.1["sessions"].as_object().unwrap().len(), 2);

    // A new version becomes current: keys for the old one are refused with the current one named.
    assert_eq!(
        server.post("/_matrix/client/v3/room_keys/version", alice.token(), algorithm("key2")).await.1["version"],
        "2"
    );
    let stale = server.put(&session_path, alice.token(), session(0, 0, true, "stale")).await;
    assert_error(&stale, 403, "M_WRONG_ROOM_KEYS_VERSION");
    assert_eq!(stale.1["current_version"], "2");

    let update = server.put("/_matrix/client/v3/room_keys/version/2", alice.token(), algorithm("key2b")).await;
    assert_eq!(update.0, 200, "{}", update.1);
    assert_eq!(
        server.get("/_matrix/client/v3/room_keys/version/2", alice.token()).await.1["auth_data"]["public_key"],
        "key2b"
    );
    let other_algorithm = json!({"algorithm": "org.example.other", "auth_data": {}});
    assert_error(
        &server.put("/_matrix/client/v3/room_keys/version/2", alice.token(), other_algorithm).await,
        400,
        "M_INVALID_PARAM",
    );

    // Deleting keys by session, room, then all, on version 1.
    let deleted = server.call("DELETE", &session_path, alice.token(), None).await;
    assert_eq!(deleted.1["count"], 2, "{}", deleted.1);
    let deleted_room = server
        .call("DELETE", &format!("/_matrix/client/v3/room_keys/keys/{}?version=1", enc(room)), alice.token(), None)
        .await;
    assert_eq!(deleted_room.1["count"], 1);
    let deleted_all = server.call("DELETE", "/_matrix/client/v3/room_keys/keys?version=1", alice.token(), None).await;
    assert_eq!(deleted_all.1["count"], 0);
    assert_error(&server.get(&session_path, alice.token()).await, 404, "M_NOT_FOUND");

    // Deleting version 2 makes 1 current again; numbers are never reused.
    assert_eq!(server.call("DELETE", "/_matrix/client/v3/room_keys/version/2", alice.token(), None).await.0, 200);
    assert_error(&server.get("/_matrix/client/v3/room_keys/version/2", alice.token()).await, 404, "M_NOT_FOUND");
    assert_eq!(server.get("/_matrix/client/v3/room_keys/version", alice.token()).await.1["version"], "1");
    assert_eq!(
        server.post("/_matrix/client/v3/room_keys/version", alice.token(), algorithm("key3")).await.1["version"],
        "3"
    );
    assert_error(&server.get("/_matrix/client/v3/room_keys/version/abc", alice.token()).await, 404, "M_NOT_FOUND");
}
