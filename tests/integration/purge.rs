//! Purging history (issue #17): Synapse's `purge_history` takes older events out of a room's
//! timeline and their content off the disk while the room keeps working, and deleting a room
//! with `purge` does the same to all of its events.

use std::path::Path;

use serde_json::{Value, json};

use crate::{
    harness::{Session, TestServer, assert_error, enc},
    room_helpers::{create_room, join, register_admin, send_text},
};

/// Whether some file under `dir` contains `needle`.
fn on_disk(dir: &Path, needle: &str) -> bool {
    let mut stack = vec![dir.to_owned()];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            stack.extend(std::fs::read_dir(&path).expect("read dir").flatten().map(|e| e.path()));
        } else if let Ok(bytes) = std::fs::read(&path)
            && bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
        {
            return true;
        }
    }
    false
}

/// Polls `path` until its `status` is no longer `active`; returns the last answer.
async fn wait_done(server: &TestServer, admin: &Session, path: &str) -> Value {
    let mut answer = Value::Null;
    for _ in 0..600 {
        answer = server.get(path, admin.token()).await.1;
        if answer["status"] != "active" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    answer
}

async fn bodies(server: &TestServer, who: &Session, room: &str) -> Vec<String> {
    let path = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=100", enc(room));
    let (status, page) = server.get(&path, who.token()).await;
    assert_eq!(status, 200, "{page}");
    page["chunk"]
        .as_array()
        .expect("chunk")
        .iter()
        .filter_map(|e| e["content"]["body"].as_str())
        .map(Into::into)
        .collect()
}

#[tokio::test]
async fn purge_history_and_room_purge_remove_events_from_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start_in(dir.path(), "localhost", "").expect("server starts");
    let admin = register_admin(&server, "purgeadmin").await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat", "name": "kept room"})).await;
    join(&server, &bob, &room).await;
    send_text(&server, &alice, &room, "zqxpurgeold1").await;
    send_text(&server, &bob, &room, "zqxpurgeold2").await;
    let point = send_text(&server, &alice, &room, "zqxpurgepoint").await;
    send_text(&server, &bob, &room, "zqxpurgenew").await;
    assert!(on_disk(dir.path(), "zqxpurgeold1") && on_disk(dir.path(), "zqxpurgeold2"), "found before purging");

    // Refused: non-admins, no purge point, an event of no such room; unknown purge IDs.
    let purge = format!("/_synapse/admin/v1/purge_history/{}", enc(&room));
    assert_error(&server.post(&purge, bob.token(), json!({"purge_up_to_ts": 1})).await, 403, "M_FORBIDDEN");
    assert_error(&server.post(&purge, admin.token(), json!({})).await, 400, "M_INVALID_PARAM");
    let unknown_event = json!({"purge_up_to_event_id": "$nope"});
    assert_error(&server.post(&purge, admin.token(), unknown_event).await, 404, "M_NOT_FOUND");
    let unknown = server.get("/_synapse/admin/v1/purge_history_status/nope", admin.token()).await;
    assert_error(&unknown, 404, "M_NOT_FOUND");

    // Without delete_local_events, events of this server's users stay.
    let (status, started) = server.post(&purge, admin.token(), json!({"purge_up_to_event_id": point})).await;
    assert_eq!(status, 200, "{started}");
    let status_path = format!("/_synapse/admin/v1/purge_history_status/{}", started["purge_id"].as_str().expect("id"));
    assert_eq!(wait_done(&server, &admin, &status_path).await, json!({"status": "complete"}));
    assert_eq!(bodies(&server, &bob, &room).await, ["zqxpurgenew", "zqxpurgepoint", "zqxpurgeold2", "zqxpurgeold1"]);

    let path = format!("{purge}/{}", enc(&point));
    let (status, started) = server.post(&path, admin.token(), json!({"delete_local_events": true})).await;
    assert_eq!(status, 200, "{started}");
    let status_path = format!("/_synapse/admin/v1/purge_history_status/{}", started["purge_id"].as_str().expect("id"));
    assert_eq!(wait_done(&server, &admin, &status_path).await, json!({"status": "complete"}));

    // The older messages are gone from the timeline, search and disk; the room keeps its state
    // and works on.
    assert_eq!(bodies(&server, &bob, &room).await, ["zqxpurgenew", "zqxpurgepoint"]);
    let search = json!({"search_categories": {"room_events": {"search_term": "zqxpurgeold1"}}});
    let (_, found) = server.post("/_matrix/client/v3/search", bob.token(), search).await;
    assert_eq!(found["search_categories"]["room_events"]["count"], 0, "{found}");
    assert!(!on_disk(dir.path(), "zqxpurgeold1") && !on_disk(dir.path(), "zqxpurgeold2"), "gone after purging");
    let name = format!("/_matrix/client/v3/rooms/{}/state/m.room.name", enc(&room));
    assert_eq!(server.get(&name, bob.token()).await.1["name"], "kept room");
    send_text(&server, &alice, &room, "after the purge").await;
    assert_eq!(bodies(&server, &bob, &room).await[0], "after the purge");

    // A room deleted with purge (Synapse's default) loses all its events.
    let doomed = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    send_text(&server, &alice, &doomed, "zqxdoomedroom").await;
    assert!(on_disk(dir.path(), "zqxdoomedroom"), "found before the deletion");
    let (status, started) = server
        .call("DELETE", &format!("/_synapse/admin/v2/rooms/{}", enc(&doomed)), admin.token(), Some(json!({})))
        .await;
    assert_eq!(status, 200, "{started}");
    let delete_id = started["delete_id"].as_str().expect("delete_id");
    let done = wait_done(&server, &admin, &format!("/_synapse/admin/v2/rooms/delete_status/{delete_id}")).await;
    assert_eq!(done["status"], "complete", "{done}");
    assert!(!on_disk(dir.path(), "zqxdoomedroom"), "gone after the deletion with purge");
}
