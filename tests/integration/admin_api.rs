//! Synapse's admin API: refused to non-admins, and driven by **synadm** (PyPI; `.ci/run`
//! installs it next to matrix-nio, `TRELLIS_PYTHON` names that interpreter) the way an admin
//! uses it — users listed, created, given a new password and deactivated; rooms listed,
//! described and deleted; registration tokens made, changed, used and deleted; content reports
//! read and deleted — each checked through the client API afterwards.

use std::process::Command;

use serde_json::{Value, json};

use crate::{
    harness::{Session, TestServer, assert_error, enc},
    room_helpers::{create_room, register_admin, send_text},
};

/// Runs synadm against `server` as `admin`; returns its JSON output.
pub(crate) fn synadm(server: &TestServer, admin: &Session, dir: &std::path::Path, args: &[&str]) -> Value {
    let config = dir.join("synadm.yaml");
    std::fs::write(
        &config,
        format!(
            "user: \"{user}\"\ntoken: \"{token}\"\nprotocol: http\nbase_url: \"{base}\"\nadmin_path: /_synapse/admin\n\
             matrix_path: /_matrix\nformat: json\ntimeout: 30\nserver_discovery: well-known\nhomeserver: localhost\n\
             ssl_verify: false\n",
            user = admin.user_id,
            token = admin.access_token,
            base = server.base_url,
        ),
    )
    .expect("write synadm config");
    let python = std::env::var("TRELLIS_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let output = Command::new(python)
        .args(["-m", "synadm", "--batch", "-o", "minified", "-c"])
        .arg(&config)
        .args(args)
        .output()
        .expect("run synadm");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "synadm {args:?} failed: {stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    // Some commands print a line of their own before the JSON; the last line is the answer.
    let last = stdout.lines().rfind(|line| line.starts_with('{') || line.starts_with('[')).unwrap_or("null");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("synadm {args:?} printed {stdout}: {e}"))
}

pub(crate) fn synadm_available() -> bool {
    let python = std::env::var("TRELLIS_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    Command::new(python).args(["-m", "synadm", "--version"]).output().is_ok_and(|o| o.status.success())
}

#[tokio::test]
async fn the_admin_api_refuses_everyone_but_admins() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    for (method, path) in [
        ("GET", "/_synapse/admin/v2/users"),
        ("GET", "/_synapse/admin/v2/users/@alice:localhost"),
        ("POST", "/_synapse/admin/v1/deactivate/@alice:localhost"),
        ("GET", "/_synapse/admin/v1/rooms"),
        ("GET", "/_synapse/admin/v1/registration_tokens"),
        ("POST", "/_synapse/admin/v1/registration_tokens/new"),
        ("GET", "/_synapse/admin/v1/event_reports"),
        ("DELETE", "/_synapse/admin/v2/rooms/!nope:localhost"),
    ] {
        let anonymous = server.call(method, path, None, Some(json!({}))).await;
        assert_error(&anonymous, 401, "M_MISSING_TOKEN");
        let refused = server.call(method, path, alice.token(), Some(json!({}))).await;
        assert_error(&refused, 403, "M_FORBIDDEN");
    }
    let version = server.get("/_synapse/admin/v1/server_version", None).await;
    assert_eq!(version.0, 200);
    assert!(version.1["server_version"].as_str().is_some_and(|v| v.starts_with("Trellis")));

    // An admin gets clear errors for bad input, never a 500.
    let admin = register_admin(&server, "boss").await;
    assert_error(&server.get("/_synapse/admin/v2/users/@ghost:localhost", admin.token()).await, 404, "M_NOT_FOUND");
    assert_error(&server.get("/_synapse/admin/v2/users/not-a-user", admin.token()).await, 400, "M_INVALID_PARAM");
    assert_error(&server.get("/_synapse/admin/v2/users/@x:elsewhere", admin.token()).await, 400, "M_INVALID_PARAM");
    assert_error(&server.get("/_synapse/admin/v2/users?limit=-1", admin.token()).await, 400, "M_INVALID_PARAM");
    assert_error(&server.get("/_synapse/admin/v1/rooms/!missing:localhost", admin.token()).await, 404, "M_NOT_FOUND");
    assert_error(&server.get("/_synapse/admin/v1/rooms?order_by=colour", admin.token()).await, 400, "M_INVALID_PARAM");
    let bad = server.call("PUT", "/_synapse/admin/v2/users/@new:localhost", admin.token(), None).await;
    assert_eq!(bad.0, 201, "an empty body creates the user: {}", bad.1);
    let not_json = reqwest::Client::new()
        .put(format!("{}/_synapse/admin/v2/users/@new:localhost", server.base_url))
        .bearer_auth(&admin.access_token)
        .body("{nope")
        .send()
        .await
        .expect("request");
    assert_eq!(not_json.status().as_u16(), 400);
    let body: Value = not_json.json().await.expect("json");
    assert_eq!(body["errcode"], "M_NOT_JSON");
    let token = json!({"token": "has space"});
    let refused = server.post("/_synapse/admin/v1/registration_tokens/new", admin.token(), token).await;
    assert_error(&refused, 400, "M_INVALID_PARAM");
    assert_error(&server.get("/_synapse/admin/v1/event_reports/x", admin.token()).await, 400, "M_INVALID_PARAM");
    assert_error(&server.get("/_synapse/admin/v1/event_reports/7", admin.token()).await, 404, "M_NOT_FOUND");
}

/// synadm drives users, rooms, registration tokens and reports; the client API shows the effect.
#[tokio::test]
async fn synadm_manages_users_rooms_tokens_and_reports() {
    if !synadm_available() {
        eprintln!("skipped: synadm is not installed next to TRELLIS_PYTHON (.ci/run installs it)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start().await;
    let admin = register_admin(&server, "boss").await;
    let alice = server.register("alice", "pw").await;

    // Users: list, create, details, new password, deactivate.
    let listed = synadm(&server, &admin, dir.path(), &["user", "list"]);
    let names: Vec<&str> =
        listed["users"].as_array().expect("users").iter().filter_map(|u| u["name"].as_str()).collect();
    assert!(names.contains(&"@alice:localhost") && names.contains(&"@boss:localhost"), "{listed}");
    assert_eq!(listed["total"], 2);
    synadm(
        &server,
        &admin,
        dir.path(),
        &["user", "modify", "@carol:localhost", "--password", "first-pw", "--display-name", "Carol"],
    );
    assert_eq!(server.login("@carol:localhost", "first-pw").await.0, 200);
    let carol = synadm(&server, &admin, dir.path(), &["user", "details", "@carol:localhost"]);
    assert_eq!(carol["displayname"], "Carol");
    assert_eq!(carol["admin"], false);
    synadm(&server, &admin, dir.path(), &["user", "password", "@carol:localhost", "--password", "second-pw"]);
    assert_eq!(server.login("@carol:localhost", "first-pw").await.0, 403);
    assert_eq!(server.login("@carol:localhost", "second-pw").await.0, 200);
    let searched = synadm(&server, &admin, dir.path(), &["user", "list", "--name", "caro"]);
    assert_eq!(searched["total"], 1, "{searched}");

    // Rooms: alice's room is listed and described; carol joins; deleting it makes both leave.
    let room = create_room(
        &server,
        &alice,
        json!({"preset": "public_chat", "visibility": "public", "name": "Lobby", "room_alias_name": "lobby"}),
    )
    .await;
    let carol_session = Session::from_response(&server.login("@carol:localhost", "second-pw").await.1);
    let joined =
        server.post(&format!("/_matrix/client/v3/join/{}", enc(&room)), carol_session.token(), json!({})).await;
    assert_eq!(joined.0, 200, "{}", joined.1);
    let rooms = synadm(&server, &admin, dir.path(), &["room", "list"]);
    let lobby = rooms["rooms"]
        .as_array()
        .expect("rooms")
        .iter()
        .find(|r| r["room_id"] == room.as_str())
        .cloned()
        .expect("listed");
    assert_eq!(lobby["name"], "Lobby");
    assert_eq!(lobby["joined_local_members"], 2);
    assert_eq!(lobby["canonical_alias"], "#lobby:localhost");
    let details = synadm(&server, &admin, dir.path(), &["room", "details", &room]);
    assert_eq!(details["creator"], alice.user_id.as_str());
    assert_eq!(details["public"], true);
    let members = synadm(&server, &admin, dir.path(), &["room", "members", &room]);
    assert_eq!(members["total"], 2);

    // A report on the room, read and deleted through synadm's raw requests.
    let event = send_text(&server, &alice, &room, "report me").await;
    let report = format!("/_matrix/client/v3/rooms/{}/report/{}", enc(&room), enc(&event));
    assert_eq!(server.post(&report, carol_session.token(), json!({"reason": "spam"})).await.0, 200);
    let reports = synadm(&server, &admin, dir.path(), &["raw", "-m", "get", "v1/event_reports"]);
    assert_eq!(reports["total"], 1, "{reports}");
    let first = &reports["event_reports"][0];
    assert_eq!(first["reason"], "spam");
    assert_eq!(first["user_id"], "@carol:localhost");
    assert_eq!(first["sender"], alice.user_id.as_str());
    assert_eq!(first["name"], "Lobby");
    let id = first["id"].as_u64().expect("id").to_string();
    let one = synadm(&server, &admin, dir.path(), &["raw", "-m", "get", &format!("v1/event_reports/{id}")]);
    assert_eq!(one["event_json"]["content"]["body"], "report me");
    synadm(&server, &admin, dir.path(), &["raw", "-m", "delete", &format!("v1/event_reports/{id}")]);
    assert_eq!(server.get("/_synapse/admin/v1/event_reports", admin.token()).await.1["total"], 0);

    let started = synadm(&server, &admin, dir.path(), &["room", "delete", &room, "--block"]);
    let delete_id = started["delete_id"].as_str().expect("delete_id").to_owned();
    let mut status = Value::Null;
    for _ in 0..100 {
        status = synadm(&server, &admin, dir.path(), &["room", "delete-status", "--delete-id", &delete_id]);
        if status["status"] == "complete" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(status["status"], "complete", "{status}");
    let mut kicked: Vec<&str> =
        status["shutdown_room"]["kicked_users"].as_array().expect("kicked").iter().filter_map(Value::as_str).collect();
    kicked.sort();
    assert_eq!(kicked, ["@alice:localhost", "@carol:localhost"]);
    let alias = server.get("/_matrix/client/v3/directory/room/%23lobby:localhost", alice.token()).await;
    assert_error(&alias, 404, "M_NOT_FOUND");
    let rejoin = server.post(&format!("/_matrix/client/v3/rooms/{}/join", enc(&room)), alice.token(), json!({})).await;
    assert_error(&rejoin, 403, "M_FORBIDDEN");

    // Registration tokens: made, listed, changed; registration needs one and uses it up.
    let made =
        synadm(&server, &admin, dir.path(), &["regtok", "new", "--token", "welcome-2026", "--uses-allowed", "1"]);
    assert_eq!(made["token"], "welcome-2026");
    assert_eq!(made["uses_allowed"], 1);
    let listed = synadm(&server, &admin, dir.path(), &["regtok", "list"]);
    assert_eq!(
        listed.as_array().map(Vec::len).or_else(|| listed["registration_tokens"].as_array().map(Vec::len)),
        Some(1),
        "{listed}"
    );
    let flows = server.post("/_matrix/client/v3/register", None, json!({"username": "dave", "password": "pw"})).await;
    assert_eq!(flows.0, 401);
    assert_eq!(flows.1["flows"][0]["stages"], json!(["m.login.registration_token"]));
    let session = flows.1["session"].as_str().expect("session").to_owned();
    let with_token = json!({"username": "dave", "password": "pw",
        "auth": {"type": "m.login.registration_token", "token": "welcome-2026", "session": session}});
    let registered = server.post("/_matrix/client/v3/register", None, with_token).await;
    assert_eq!(registered.0, 200, "{}", registered.1);
    let used = synadm(&server, &admin, dir.path(), &["regtok", "details", "welcome-2026"]);
    assert_eq!(used["completed"], 1);
    let validity =
        server.get("/_matrix/client/v1/register/m.login.registration_token/validity?token=welcome-2026", None).await;
    assert_eq!(validity.1["valid"], false, "used up");
    synadm(&server, &admin, dir.path(), &["regtok", "update", "welcome-2026", "--uses-allowed", "2"]);
    let validity =
        server.get("/_matrix/client/v1/register/m.login.registration_token/validity?token=welcome-2026", None).await;
    assert_eq!(validity.1["valid"], true, "one more use");
    synadm(&server, &admin, dir.path(), &["regtok", "delete", "welcome-2026"]);
    let validity =
        server.get("/_matrix/client/v1/register/m.login.registration_token/validity?token=welcome-2026", None).await;
    assert_eq!(validity.1["valid"], false, "deleted");

    // Deactivation: carol can no longer log in and has left her rooms.
    synadm(&server, &admin, dir.path(), &["user", "deactivate", "@carol:localhost"]);
    assert_eq!(server.login("@carol:localhost", "second-pw").await.0, 403);
    let carol = server.get("/_synapse/admin/v2/users/@carol:localhost", admin.token()).await;
    assert_eq!(carol.1["deactivated"], true);
    let listed = server.get("/_synapse/admin/v2/users?deactivated=true", admin.token()).await;
    assert_eq!(listed.1["total"], 4, "{}", listed.1);
    let listed = server.get("/_synapse/admin/v2/users", admin.token()).await;
    assert_eq!(listed.1["total"], 3, "deactivated users are left out by default: {}", listed.1);
}

/// Server notices: off by default; with a system user configured, a notice lands in a room of
/// the user's own, tagged `m.server_notice`, sent by the system user; later notices reuse it,
/// and a user who left is invited back.
#[tokio::test]
async fn server_notices_reach_the_user_in_a_room_of_their_own() {
    let off = TestServer::start().await;
    let admin = register_admin(&off, "boss").await;
    let alice = off.register("alice", "pw").await;
    let notice = json!({"user_id": alice.user_id, "content": {"msgtype": "m.text", "body": "hello"}});
    let refused = off.post("/_synapse/admin/v1/send_server_notice", admin.token(), notice).await;
    assert_error(&refused, 400, "M_INVALID_PARAM");

    let server = TestServer::start_with("server_notices = { system_mxid_localpart = \"notices\" }\n").await;
    let admin = register_admin(&server, "boss").await;
    let alice = server.register("alice", "pw").await;
    let send = |body: &str| json!({"user_id": alice.user_id, "content": {"msgtype": "m.server_notice", "body": body}});
    let first = server.post("/_synapse/admin/v1/send_server_notice", admin.token(), send("maintenance tonight")).await;
    assert_eq!(first.0, 200, "{}", first.1);
    let sync = server.get("/_matrix/client/v3/sync", alice.token()).await;
    let invites = sync.1["rooms"]["invite"].as_object().expect("invites").clone();
    assert_eq!(invites.len(), 1, "{}", sync.1);
    let room = invites.keys().next().expect("room").clone();
    let joined = server.post(&format!("/_matrix/client/v3/rooms/{}/join", enc(&room)), alice.token(), json!({})).await;
    assert_eq!(joined.0, 200, "{}", joined.1);
    let second = server.post("/_synapse/admin/v1/send_server_notice", admin.token(), send("done")).await;
    assert_eq!(second.0, 200, "{}", second.1);

    let sync = server.get("/_matrix/client/v3/sync", alice.token()).await;
    let joined_room = &sync.1["rooms"]["join"][&room];
    let tags = joined_room["account_data"]["events"]
        .as_array()
        .expect("account data")
        .iter()
        .find(|e| e["type"] == "m.tag")
        .cloned();
    assert!(tags.is_some_and(|t| t["content"]["tags"]["m.server_notice"].is_object()), "{joined_room}");
    let notices: Vec<(&str, &str)> = joined_room["timeline"]["events"]
        .as_array()
        .expect("timeline")
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .map(|e| (e["sender"].as_str().unwrap_or_default(), e["content"]["body"].as_str().unwrap_or_default()))
        .collect();
    assert_eq!(notices, [("@notices:localhost", "maintenance tonight"), ("@notices:localhost", "done")]);
    // Alice cannot write there, and the system user cannot log in.
    let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/t1", enc(&room));
    let write = server.put(&path, alice.token(), json!({"msgtype": "m.text", "body": "hi"})).await;
    assert_error(&write, 403, "M_FORBIDDEN");

    // After she leaves, the next notice invites her back to the same room.
    assert_eq!(
        server.post(&format!("/_matrix/client/v3/rooms/{}/leave", enc(&room)), alice.token(), json!({})).await.0,
        200
    );
    let third = server.post("/_synapse/admin/v1/send_server_notice", admin.token(), send("again")).await;
    assert_eq!(third.0, 200, "{}", third.1);
    let sync = server.get("/_matrix/client/v3/sync", alice.token()).await;
    assert!(sync.1["rooms"]["invite"][&room].is_object(), "{}", sync.1["rooms"]);
    // A user of another server, and an unknown one, are refused.
    let remote = json!({"user_id": "@bob:elsewhere", "content": {"body": "x"}});
    assert_error(
        &server.post("/_synapse/admin/v1/send_server_notice", admin.token(), remote).await,
        400,
        "M_INVALID_PARAM",
    );
    let unknown = json!({"user_id": "@nobody:localhost", "content": {"body": "x"}});
    assert_error(
        &server.post("/_synapse/admin/v1/send_server_notice", admin.token(), unknown).await,
        404,
        "M_NOT_FOUND",
    );
}
