//! Erasure (issue #18): deactivation with `erase` removes the account's profile, media, account
//! data, devices, keys and pushers, and serves the user's past events redacted to a member who
//! joined later while one who was there still reads them; the admin's pruning then removes the
//! content of every event they sent for everyone, and after compaction no file under the
//! database or media directory holds any of the strings or file bytes they sent or uploaded.

use std::path::Path;

use serde_json::{Value, json};

use crate::{
    harness::{Session, TestServer, enc},
    room_helpers::{create_room, join, put_state, register_admin, send_event, send_text},
};

/// What the user sends or stores, each a string found nowhere else.
const MESSAGE: &str = "zqxmessage7731";
const TOPIC: &str = "zqxtopic8842";
const DISPLAY_NAME: &str = "zqxdisplay9953";
const ROOM_NAME: &str = "zqxroomname8831";
const THREAD_REPLY: &str = "zqxthreadreply6619";
const REACTION: &str = "zqxreaction7720";
const ACCOUNT_DATA: &str = "zqxaccount1164";
const DEVICE_KEY: &str = "zqxdevicekey3386";
const ONE_TIME_KEY: &str = "zqxonetimekey2275";
const BACKUP: &str = "zqxbackup4497";
const PUSHKEY: &str = "zqxpushkey5508";
const MEDIA: &[u8] = b"zqxmediafile9942: the bytes of a file only alice uploaded";

/// Which of `needles` some file under `dir` contains.
fn found_in_files(dir: &Path, needles: &[&[u8]]) -> Vec<String> {
    let found: std::collections::BTreeSet<String> =
        where_in_files(dir, needles).into_iter().map(|(needle, _)| needle).collect();
    found.into_iter().collect()
}

/// Each of `needles` some file under `dir` contains, with the file.
fn where_in_files(dir: &Path, needles: &[&[u8]]) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(path) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).expect("read dir").flatten() {
                stack.push(entry.path());
            }
            continue;
        }
        let Ok(bytes) = std::fs::read(&path) else { continue };
        for needle in needles {
            if bytes.windows(needle.len()).any(|w| w == *needle) {
                found.push((String::from_utf8_lossy(needle).into_owned(), path.display().to_string()));
            }
        }
    }
    found
}

fn event_path(room: &str, event: &str) -> String {
    format!("/_matrix/client/v3/rooms/{}/event/{}", enc(room), enc(event))
}

async fn body_of(server: &TestServer, who: &Session, room: &str, event: &str) -> Value {
    let (status, body) = server.get(&event_path(room, event), who.token()).await;
    assert_eq!(status, 200, "/event {event}: {body}");
    body["content"].clone()
}

async fn search_count(server: &TestServer, who: &Session, term: &str) -> u64 {
    let body = json!({"search_categories": {"room_events": {"search_term": term}}});
    let (status, response) = server.post("/_matrix/client/v3/search", who.token(), body).await;
    assert_eq!(status, 200, "search: {response}");
    response["search_categories"]["room_events"]["count"].as_u64().unwrap_or(0)
}

/// The event `id` in a list of client events.
fn find<'a>(events: &'a Value, id: &str) -> Option<&'a Value> {
    events.as_array()?.iter().find(|e| e["event_id"] == id)
}

#[tokio::test]
async fn erasure_redacts_for_later_members_and_pruning_leaves_nothing_on_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start_in(dir.path(), "localhost", "").expect("server starts");
    let admin = register_admin(&server, "eraseadmin").await;
    let alice = server.register("alice", "alice-password").await;
    let bob = server.register("bob", "bob-password").await;
    let carol = server.register("carol", "carol-password").await;
    let token = alice.token();

    // Alice's profile, room, messages, media, account data, keys, backup and pusher.
    let profile = format!("/_matrix/client/v3/profile/{}/displayname", enc(&alice.user_id));
    assert_eq!(server.put(&profile, token, json!({"displayname": DISPLAY_NAME})).await.0, 200);
    let room = create_room(
        &server,
        &alice,
        json!({"preset": "public_chat", "name": ROOM_NAME,
        "power_level_content_override": {"events": {"m.room.topic": 0}}}),
    )
    .await;
    join(&server, &bob, &room).await;
    put_state(&server, &alice, &room, "m.room.topic", json!({"topic": TOPIC})).await;
    let message = send_text(&server, &alice, &room, MESSAGE).await;
    let root = send_text(&server, &bob, &room, "bob starts a thread").await;
    let reply = send_event(
        &server,
        &alice,
        &room,
        "m.room.message",
        json!({"msgtype": "m.text", "body": THREAD_REPLY, "m.relates_to": {"rel_type": "m.thread", "event_id": root}}),
    )
    .await;
    send_event(
        &server,
        &alice,
        &room,
        "m.reaction",
        json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": root, "key": REACTION}}),
    )
    .await;
    // Bob changes the topic: his event copies Alice's topic into its `prev_content`.
    put_state(&server, &bob, &room, "m.room.topic", json!({"topic": "bob's topic"})).await;

    let upload = server
        .http
        .post(server.url("/_matrix/media/v3/upload?filename=secret.txt"))
        .bearer_auth(&alice.access_token)
        .header("content-type", "text/plain")
        .body(MEDIA.to_vec())
        .send()
        .await
        .expect("upload");
    let uploaded: Value = upload.json().await.expect("upload body");
    let media_id = uploaded["content_uri"].as_str().expect("content_uri").rsplit('/').next().expect("id").to_owned();
    let account_data = format!("/_matrix/client/v3/user/{}/account_data/org.example.secret", enc(&alice.user_id));
    assert_eq!(server.put(&account_data, token, json!({"secret": ACCOUNT_DATA})).await.0, 200);
    let device_keys = json!({
        "user_id": alice.user_id, "device_id": alice.device_id,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2"],
        "keys": {format!("curve25519:{}", alice.device_id): DEVICE_KEY},
        "signatures": {},
    });
    let one_time = json!({"signed_curve25519:AAAAAQ": {"key": ONE_TIME_KEY, "signatures": {}}});
    let (status, body) = server
        .post("/_matrix/client/v3/keys/upload", token, json!({"device_keys": device_keys, "one_time_keys": one_time}))
        .await;
    assert_eq!(status, 200, "keys/upload: {body}");
    let (status, body) = server
        .post(
            "/_matrix/client/v3/room_keys/version",
            token,
            json!({"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "auth_data": {"public_key": BACKUP}}),
        )
        .await;
    assert_eq!(status, 200, "room_keys/version: {body}");
    let pusher = json!({"kind": "http", "app_id": "org.example.app", "pushkey": PUSHKEY,
        "app_display_name": "app", "device_display_name": "phone", "lang": "en",
        "data": {"url": "https://push.example.invalid/_matrix/push/v1/notify"}});
    let (status, body) = server.post("/_matrix/client/v3/pushers/set", token, pusher).await;
    assert_eq!(status, 200, "pushers/set: {body}");

    let db_dir = dir.path().join("db");
    assert_eq!(found_in_files(&db_dir, &[MEDIA]).len(), 1, "the uploaded file is on disk");

    // Alice deactivates her account with erase, through the client API.
    let auth = json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": alice.user_id},
        "password": "alice-password"});
    let (status, body) =
        server.post("/_matrix/client/v3/account/deactivate", token, json!({"auth": auth, "erase": true})).await;
    assert_eq!(status, 200, "deactivate: {body}");

    // Her account's data is gone, as the API shows it.
    let admin_token = admin.token();
    let user = enc(&alice.user_id);
    let (_, details) = server.get(&format!("/_synapse/admin/v2/users/{user}"), admin_token).await;
    assert_eq!(details["erased"], true, "{details}");
    assert_eq!(details["deactivated"], true, "{details}");
    assert!(details["displayname"].is_null(), "{details}");
    let (_, profile) = server.get(&format!("/_matrix/client/v3/profile/{user}"), bob.token()).await;
    assert!(profile.get("displayname").is_none_or(Value::is_null), "{profile}");
    let (status, _) = server.get(&format!("/_matrix/client/v1/media/download/localhost/{media_id}"), bob.token()).await;
    assert_eq!(status, 404, "the media is gone");
    assert!(found_in_files(&db_dir, &[MEDIA]).is_empty(), "the file is deleted");
    let (_, data) = server.get(&format!("/_synapse/admin/v1/users/{user}/accountdata"), admin_token).await;
    assert_eq!(data["account_data"], json!({"global": {}, "rooms": {}}), "{data}");
    let (_, devices) = server.get(&format!("/_synapse/admin/v2/users/{user}/devices"), admin_token).await;
    assert_eq!(devices["total"], 0, "{devices}");
    let (_, pushers) = server.get(&format!("/_synapse/admin/v1/users/{user}/pushers"), admin_token).await;
    assert_eq!(pushers["total"], 0, "{pushers}");
    let (_, keys) = server
        .post("/_matrix/client/v3/keys/query", bob.token(), json!({"device_keys": {alice.user_id.clone(): []}}))
        .await;
    assert!(keys["device_keys"][&alice.user_id].as_object().is_none_or(|d| d.is_empty()), "{keys}");

    // Carol joins after the erasure: she is served Alice's events redacted, on every path; Bob,
    // who was there, still reads them.
    join(&server, &carol, &room).await;
    assert_eq!(body_of(&server, &bob, &room, &message).await["body"], MESSAGE);
    assert_eq!(body_of(&server, &carol, &room, &message).await, json!({}));
    let messages = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=100", enc(&room));
    let (_, page) = server.get(&messages, carol.token()).await;
    assert_eq!(find(&page["chunk"], &message).expect("in carol's page")["content"], json!({}));
    assert_eq!(find(&page["chunk"], &reply).expect("reply in carol's page")["content"], json!({}));
    let (_, page) = server.get(&messages, bob.token()).await;
    assert_eq!(find(&page["chunk"], &message).expect("in bob's page")["content"]["body"], MESSAGE);
    let context = format!("/_matrix/client/v3/rooms/{}/context/{}?limit=2", enc(&room), enc(&message));
    let (_, around) = server.get(&context, carol.token()).await;
    assert_eq!(around["event"]["content"], json!({}), "{around}");
    let relations = format!("/_matrix/client/v1/rooms/{}/relations/{}", enc(&room), enc(&root));
    let (_, children) = server.get(&relations, carol.token()).await;
    assert!(find(&children["chunk"], &reply).is_none_or(|e| e["content"].get("body").is_none()), "{children}");
    assert_eq!(search_count(&server, &carol, MESSAGE).await, 0, "carol cannot find alice's words");
    assert_eq!(search_count(&server, &bob, MESSAGE).await, 1, "bob still finds them");
    let filter = enc(&json!({"room": {"timeline": {"limit": 50}}}).to_string());
    let (_, sync) = server.get(&format!("/_matrix/client/v3/sync?filter={filter}"), carol.token()).await;
    let timeline = &sync["rooms"]["join"][&room]["timeline"]["events"];
    assert_eq!(find(timeline, &message).expect("in carol's sync")["content"], json!({}), "{timeline}");
    let (_, sync) = server.get(&format!("/_matrix/client/v3/sync?filter={filter}"), bob.token()).await;
    let timeline = &sync["rooms"]["join"][&room]["timeline"]["events"];
    assert_eq!(find(timeline, &message).expect("in bob's sync")["content"]["body"], MESSAGE);

    // Until the admin prunes, the database files still hold what she sent (so the scan below
    // can fail).
    let strings = [
        MESSAGE,
        TOPIC,
        DISPLAY_NAME,
        ROOM_NAME,
        THREAD_REPLY,
        REACTION,
        ACCOUNT_DATA,
        DEVICE_KEY,
        ONE_TIME_KEY,
        BACKUP,
        PUSHKEY,
    ];
    let mut needles: Vec<&[u8]> = strings.iter().map(|s| s.as_bytes()).collect();
    needles.push(MEDIA);
    assert_eq!(found_in_files(&db_dir, &needles).len(), strings.len(), "before pruning");

    // The admin prunes: Alice's events lose their content for everyone, on disk.
    let (status, body) = server
        .post(
            &format!("/_synapse/admin/v1/deactivate/{user}"),
            admin_token,
            json!({"erase": true, "prune_events": true}),
        )
        .await;
    assert_eq!(status, 200, "prune: {body}");
    assert!(body["pruned_events"].as_u64().is_some_and(|n| n >= 6), "{body}");
    assert_eq!(body_of(&server, &bob, &room, &message).await, json!({}));
    assert_eq!(search_count(&server, &bob, MESSAGE).await, 0, "nothing to find any more");
    let leftovers = where_in_files(dir.path(), &needles);
    assert!(leftovers.is_empty(), "still on disk after pruning and compaction: {leftovers:?}");

    // The room keeps working.
    let after = send_text(&server, &bob, &room, "still here").await;
    assert_eq!(body_of(&server, &carol, &room, &after).await["body"], "still here");
    let (status, _) = server.get(&messages, carol.token()).await;
    assert_eq!(status, 200);
}
