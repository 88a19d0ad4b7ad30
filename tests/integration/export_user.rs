//! Export of a user's data (`trellis export-user`, `POST /_trellis/admin/v1/users/{u}/export`):
//! a user with rooms, messages, account data, push rules, media and two devices is exported,
//! through the running server and then with the server stopped, and every file is checked
//! against what the client API returns.

use std::path::Path;

use serde_json::{Value, json};

use crate::{
    backup_restore::{args, cli, download, text},
    harness::{Session, TestServer, assert_error, config_text, enc},
    room_helpers::{create_room, join, register_admin, send_text},
};

fn read(dir: &Path, name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))).unwrap()
}

/// Alice's events of a room, in order, as `/messages` shows them to her.
async fn sent_by(server: &TestServer, session: &Session, room_id: &str) -> Vec<Value> {
    let path = format!("/_matrix/client/v3/rooms/{}/messages?dir=f&limit=1000", enc(room_id));
    let (status, page) = server.get(&path, session.token()).await;
    assert_eq!(status, 200, "{page}");
    page["chunk"].as_array().unwrap().iter().filter(|e| e["sender"] == session.user_id.as_str()).cloned().collect()
}

/// The parts of an event that must match between the export and the client API.
fn essence(event: &Value) -> Value {
    json!([
        event["event_id"],
        event["type"],
        event["content"],
        event["room_id"],
        event["origin_server_ts"],
        event["state_key"]
    ])
}

#[tokio::test]
async fn export_user_matches_the_client_api() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("server");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("trellis.toml");
    // A fixed port, so the command finds the running server from the config alone.
    let port = crate::federation::free_port();
    std::fs::write(&config, config_text(&dir, "localhost", &format!("port = {port}"))).unwrap();
    let server = TestServer::start_text(&dir, &std::fs::read_to_string(&config).unwrap()).unwrap();
    let admin = register_admin(&server, "admin").await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;

    // Profile, a second device, account data (global and per room), a push rule.
    server
        .put(
            "/_matrix/client/v3/profile/@alice:localhost/displayname",
            alice.token(),
            json!({"displayname": "Alice A."}),
        )
        .await;
    let (status, login) = server
        .post(
            "/_matrix/client/v3/login",
            None,
            json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"},
                   "password": "pw", "initial_device_display_name": "Alice's phone"}),
        )
        .await;
    assert_eq!(status, 200, "{login}");
    let room_a = create_room(&server, &alice, json!({"preset": "public_chat", "name": "A"})).await;
    let room_b = create_room(&server, &bob, json!({"preset": "public_chat"})).await;
    join(&server, &alice, &room_b).await;
    join(&server, &bob, &room_a).await;
    let mut sent = Vec::new();
    for i in 0..5 {
        sent.push(send_text(&server, &alice, &room_a, &format!("alice in A {i}")).await);
        send_text(&server, &bob, &room_a, &format!("bob in A {i}")).await;
    }
    sent.push(send_text(&server, &alice, &room_b, "alice in B").await);
    let global_path = "/_matrix/client/v3/user/@alice:localhost/account_data/org.example.settings";
    assert_eq!(server.put(global_path, alice.token(), json!({"theme": "dark"})).await.0, 200);
    let room_path =
        format!("/_matrix/client/v3/user/@alice:localhost/rooms/{}/account_data/org.example.draft", enc(&room_a));
    assert_eq!(server.put(&room_path, alice.token(), json!({"text": "unsent"})).await.0, 200);
    let rule = server
        .put(
            "/_matrix/client/v3/pushrules/global/content/mention-cats",
            alice.token(),
            json!({"pattern": "cats", "actions": ["notify"]}),
        )
        .await;
    assert_eq!(rule.0, 200, "{}", rule.1);
    let response = server
        .http
        .post(server.url("/_matrix/media/v3/upload?filename=cat.png"))
        .bearer_auth(&alice.access_token)
        .header("content-type", "image/png")
        .body(&b"not really a png"[..])
        .send()
        .await
        .unwrap();
    let content_uri = response.json::<Value>().await.unwrap()["content_uri"].as_str().unwrap().to_owned();

    // Through the running server, found at the config's address and port; it needs a token.
    let out = work.path().join("export");
    let export_args = args(&[&"--config", &config, &"export-user", &"@alice:localhost", &"--to", &out]);
    let refused = cli(export_args.clone(), None).await;
    assert!(!refused.status.success() && text(&refused).contains("TRELLIS_ADMIN_TOKEN"), "{}", text(&refused));
    assert!(!out.exists());
    let exported = cli(export_args, admin.token()).await;
    assert!(exported.status.success(), "{}", text(&exported));

    let index = read(&out, "export.json");
    assert_eq!(
        (index["format"].clone(), index["user_id"].clone()),
        (json!("org.trellis.user_export"), json!("@alice:localhost"))
    );
    for file in index["files"].as_object().unwrap().values() {
        assert!(out.join(file.as_str().unwrap()).is_file(), "{file}");
    }

    let profile = server.get("/_matrix/client/v3/profile/@alice:localhost", alice.token()).await.1;
    assert_eq!(read(&out, "profile.json"), profile);

    let devices = server.get("/_matrix/client/v3/devices", alice.token()).await.1;
    let mut api_devices: Vec<Value> =
        devices["devices"].as_array().unwrap().iter().map(|d| json!([d["device_id"], d["display_name"]])).collect();
    let exported_devices = read(&out, "devices.json");
    let mut export_devices: Vec<Value> =
        exported_devices.as_array().unwrap().iter().map(|d| json!([d["device_id"], d["display_name"]])).collect();
    api_devices.sort_by_key(|d| d.to_string());
    export_devices.sort_by_key(|d| d.to_string());
    assert_eq!(export_devices, api_devices);
    assert_eq!(export_devices.len(), 2);
    let raw_devices = std::fs::read_to_string(out.join("devices.json")).unwrap();
    assert!(!raw_devices.contains("token") && !raw_devices.contains(&alice.access_token), "{raw_devices}");

    let account_data = read(&out, "account_data.json");
    assert_eq!(account_data["global"]["org.example.settings"], server.get(global_path, alice.token()).await.1);
    assert_eq!(account_data["rooms"][&room_a]["org.example.draft"], server.get(&room_path, alice.token()).await.1);

    assert_eq!(read(&out, "push_rules.json"), server.get("/_matrix/client/v3/pushrules/", alice.token()).await.1);

    let joined = server.get("/_matrix/client/v3/joined_rooms", alice.token()).await.1;
    let mut joined: Vec<String> =
        joined["joined_rooms"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_owned()).collect();
    let rooms = read(&out, "rooms.json");
    let mut export_joined: Vec<String> = rooms
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["membership"] == "join")
        .map(|r| r["room_id"].as_str().unwrap().to_owned())
        .collect();
    joined.sort();
    export_joined.sort();
    assert_eq!(export_joined, joined);

    let events = read(&out, "events.json");
    let events = events.as_array().unwrap();
    assert!(events.iter().all(|e| e["sender"] == "@alice:localhost"));
    for room in [&room_a, &room_b] {
        let api: Vec<Value> = sent_by(&server, &alice, room).await.iter().map(essence).collect();
        let export: Vec<Value> = events.iter().filter(|e| e["room_id"] == room.as_str()).map(essence).collect();
        assert_eq!(export, api, "events of {room}");
    }
    for id in &sent {
        assert!(events.iter().any(|e| e["event_id"] == id.as_str()), "{id} missing");
    }

    let media = read(&out, "media.json");
    let media = media.as_array().unwrap();
    assert_eq!(media.len(), 1, "{media:?}");
    assert_eq!(media[0]["content_uri"], content_uri.as_str());
    assert_eq!(
        (media[0]["content_type"].clone(), media[0]["filename"].clone()),
        (json!("image/png"), json!("cat.png"))
    );
    let file = std::fs::read(out.join(media[0]["file"].as_str().unwrap())).unwrap();
    assert_eq!((200, file), download(&server, &alice, &content_uri).await);

    // Errors: not an admin, an existing export directory, a user of another server.
    let path = "/_trellis/admin/v1/users/@alice:localhost/export";
    assert_error(
        &server.post(path, alice.token(), json!({"directory": work.path().join("x")})).await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(&server.post(path, admin.token(), json!({"directory": out})).await, 400, "M_INVALID_PARAM");
    let remote = "/_trellis/admin/v1/users/@alice:elsewhere.example/export";
    assert_error(
        &server.post(remote, admin.token(), json!({"directory": work.path().join("y")})).await,
        400,
        "M_INVALID_PARAM",
    );
    let unknown = "/_trellis/admin/v1/users/@nobody:localhost/export";
    assert_error(
        &server.post(unknown, admin.token(), json!({"directory": work.path().join("z")})).await,
        404,
        "M_NOT_FOUND",
    );

    // With the server stopped, the command reads the database itself; same content.
    assert_eq!(server.stop(), Some(0));
    let offline = work.path().join("offline");
    let exported =
        cli(args(&[&"--config", &config, &"export-user", &"@alice:localhost", &"--to", &offline]), None).await;
    assert!(exported.status.success(), "{}", text(&exported));
    for name in ["profile.json", "account_data.json", "push_rules.json", "rooms.json", "events.json", "media.json"] {
        assert_eq!(read(&offline, name), read(&out, name), "{name}");
    }
    // (Devices' last-seen times moved on with the requests since.)
    let ids = |devices: Value| {
        let mut ids: Vec<String> =
            devices.as_array().unwrap().iter().map(|d| d["device_id"].as_str().unwrap().to_owned()).collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(read(&offline, "devices.json")), ids(read(&out, "devices.json")));
}
