//! Account moderation through Synapse's admin API and the spec's (v1.18) admin endpoints:
//! shadow-bans, locks and suspensions, each checked from another user's point of view; and
//! `trusted_proxies`, whose `X-Forwarded-For` names the client address that per-address login
//! limits and `whois` use.

use serde_json::{Value, json};

use crate::{
    admin_api::{synadm, synadm_available},
    harness::{Session, TestServer, assert_error, enc},
    room_helpers::{create_room, join, register_admin, send_text},
};

/// The bodies of the `m.room.message` events `who` can page back to in `room`.
async fn message_bodies(server: &TestServer, who: &Session, room: &str) -> Vec<String> {
    let path = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=100", enc(room));
    let (status, body) = server.get(&path, who.token()).await;
    assert_eq!(status, 200, "messages: {body}");
    bodies(&body["chunk"])
}

fn bodies(events: &Value) -> Vec<String> {
    events
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["type"] == "m.room.message")
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect()
}

/// An initial `/sync` of `who` (timelines of up to 100 events).
async fn initial_sync(server: &TestServer, who: &Session) -> Value {
    let filter = enc(&json!({"room": {"timeline": {"limit": 100}}}).to_string());
    let (status, body) = server.get(&format!("/_matrix/client/v3/sync?timeout=0&filter={filter}"), who.token()).await;
    assert_eq!(status, 200, "sync: {body}");
    body
}

async fn send_status(server: &TestServer, who: &Session, room: &str, text: &str) -> (u16, Value) {
    let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{}", enc(room), enc(text));
    server.put(&path, who.token(), json!({"msgtype": "m.text", "body": text})).await
}

fn user_path(version: &str, user: &str) -> String {
    format!("/_synapse/admin/{version}/users/{}", enc(user))
}

#[tokio::test]
async fn a_shadow_banned_user_is_answered_but_nobody_sees_what_they_do() {
    let server = TestServer::start().await;
    let admin = register_admin(&server, "boss").await;
    let alice = server.register("alice", "pw").await;
    let mallory = server.register("mallory", "pw").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat", "name": "Lobby"})).await;
    join(&server, &mallory, &room).await;

    // Only admins, only users of this server.
    let ban_path = format!("{}/shadow_ban", user_path("v1", &mallory.user_id));
    assert_error(&server.post(&ban_path, alice.token(), json!({})).await, 403, "M_FORBIDDEN");
    let remote = format!("{}/shadow_ban", user_path("v1", "@x:elsewhere"));
    assert_error(&server.post(&remote, admin.token(), json!({})).await, 400, "M_INVALID_PARAM");
    let ghost = format!("{}/shadow_ban", user_path("v1", "@ghost:localhost"));
    assert_error(&server.post(&ghost, admin.token(), json!({})).await, 404, "M_NOT_FOUND");
    let banned = server.post(&ban_path, admin.token(), json!({})).await;
    assert_eq!(banned, (200, json!({})));
    let details = server.get(&user_path("v2", &mallory.user_id), admin.token()).await.1;
    assert_eq!(details["shadow_banned"], true, "{details}");
    let listed = server.get("/_synapse/admin/v2/users", admin.token()).await.1;
    let mallory_listed =
        listed["users"].as_array().and_then(|u| u.iter().find(|u| u["name"] == mallory.user_id.as_str()));
    assert_eq!(mallory_listed.map(|u| u["shadow_banned"].clone()), Some(json!(true)), "{listed}");

    // A message: 200 with an event ID, which nobody can fetch.
    let (status, sent) = send_status(&server, &mallory, &room, "buy cheap pills").await;
    assert_eq!(status, 200, "{sent}");
    let fake = sent["event_id"].as_str().expect("event_id");
    assert!(fake.starts_with('$') && fake.len() > 40, "{fake}");
    let fetched =
        server.get(&format!("/_matrix/client/v3/rooms/{}/event/{}", enc(&room), enc(fake)), alice.token()).await;
    assert_error(&fetched, 404, "M_NOT_FOUND");
    // State: the topic stays as it was.
    let topic_path = format!("/_matrix/client/v3/rooms/{}/state/m.room.topic", enc(&room));
    let (status, put) = server.put(&topic_path, mallory.token(), json!({"topic": "pills here"})).await;
    assert_eq!(status, 200, "{put}");
    assert!(put["event_id"].is_string());
    assert_error(&server.get(&topic_path, alice.token()).await, 404, "M_NOT_FOUND");
    // Redacting alice's message: answered, and the message stays.
    let hello = send_text(&server, &alice, &room, "hello").await;
    let redact = format!("/_matrix/client/v3/rooms/{}/redact/{}/r1", enc(&room), enc(&hello));
    let (status, _) = server.put(&redact, mallory.token(), json!({})).await;
    assert_eq!(status, 200);
    // Invites, directly and with a new room: answered, and never delivered.
    let carol = server.register("carol", "pw").await;
    let invite_path = format!("/_matrix/client/v3/rooms/{}/invite", enc(&room));
    let invited = server.post(&invite_path, mallory.token(), json!({"user_id": carol.user_id})).await;
    assert_eq!(invited, (200, json!({})));
    let own_room = create_room(&server, &mallory, json!({"invite": [carol.user_id]})).await;
    // Typing: answered, and not shown.
    let typing = format!("/_matrix/client/v3/rooms/{}/typing/{}", enc(&room), enc(&mallory.user_id));
    let (status, _) = server.put(&typing, mallory.token(), json!({"typing": true, "timeout": 30000})).await;
    assert_eq!(status, 200);

    // What the others see.
    assert_eq!(message_bodies(&server, &alice, &room).await, vec!["hello".to_owned()]);
    let alice_sync = initial_sync(&server, &alice).await;
    let joined = &alice_sync["rooms"]["join"][room.as_str()];
    assert_eq!(bodies(&joined["timeline"]["events"]), vec!["hello".to_owned()], "{joined}");
    let typing_now: Vec<&Value> = joined["ephemeral"]["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["type"] == "m.typing")
        .flat_map(|e| e["content"]["user_ids"].as_array().into_iter().flatten())
        .collect();
    assert!(typing_now.is_empty(), "typing shown: {joined}");
    let carol_sync = initial_sync(&server, &carol).await;
    let invites = carol_sync["rooms"]["invite"].as_object().map_or(0, |m| m.len());
    assert_eq!(invites, 0, "carol was invited: {carol_sync}");
    let members = server.get(&format!("/_matrix/client/v3/rooms/{}/members", enc(&own_room)), mallory.token()).await.1;
    assert!(!members.to_string().contains(&carol.user_id), "{members}");

    // Lifted: the same things now reach alice and carol.
    let lifted = server.call("DELETE", &ban_path, admin.token(), None).await;
    assert_eq!(lifted, (200, json!({})));
    assert_eq!(server.get(&user_path("v2", &mallory.user_id), admin.token()).await.1["shadow_banned"], false);
    send_text(&server, &mallory, &room, "sorry").await;
    assert_eq!(message_bodies(&server, &alice, &room).await, vec!["sorry".to_owned(), "hello".to_owned()]);
    let own_invite = format!("/_matrix/client/v3/rooms/{}/invite", enc(&own_room));
    let invited = server.post(&own_invite, mallory.token(), json!({"user_id": carol.user_id})).await;
    assert_eq!(invited, (200, json!({})));
    let carol_sync = initial_sync(&server, &carol).await;
    assert!(carol_sync["rooms"]["invite"][own_room.as_str()].is_object(), "{carol_sync}");
}

#[tokio::test]
async fn a_locked_user_gets_soft_logout_until_unlocked() {
    let server = TestServer::start().await;
    let admin = register_admin(&server, "boss").await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;

    let modified = server.put(&user_path("v2", &bob.user_id), admin.token(), json!({"locked": true})).await;
    assert_eq!(modified.0, 200, "{}", modified.1);
    assert_eq!(modified.1["locked"], true);
    let locked = server.get("/_matrix/client/v3/account/whoami", bob.token()).await;
    assert_error(&locked, 401, "M_USER_LOCKED");
    assert_eq!(locked.1["soft_logout"], true, "{}", locked.1);
    assert_error(&send_status(&server, &bob, &room, "hi").await, 401, "M_USER_LOCKED");
    assert_error(&server.get("/_matrix/client/v3/sync?timeout=0", bob.token()).await, 401, "M_USER_LOCKED");
    // No new token either.
    let login = server.login(&bob.user_id, "pw").await;
    assert_error(&login, 401, "M_USER_LOCKED");
    // Synapse leaves locked users out of the list unless asked.
    let listed = server.get("/_synapse/admin/v2/users", admin.token()).await.1;
    assert!(!listed.to_string().contains(&bob.user_id), "{listed}");
    let with_locked = server.get("/_synapse/admin/v2/users?locked=true", admin.token()).await.1;
    let entry = with_locked["users"].as_array().and_then(|u| u.iter().find(|u| u["name"] == bob.user_id.as_str()));
    assert_eq!(entry.map(|u| u["locked"].clone()), Some(json!(true)), "{with_locked}");
    // Alice, meanwhile, is not affected, and sees nothing from bob.
    send_text(&server, &alice, &room, "anyone?").await;
    assert_eq!(message_bodies(&server, &alice, &room).await, vec!["anyone?".to_owned()]);

    // Unlocked: the same token works again (a lock does not log out).
    let unlocked = server.put(&user_path("v2", &bob.user_id), admin.token(), json!({"locked": false})).await;
    assert_eq!(unlocked.1["locked"], false, "{}", unlocked.1);
    assert_eq!(server.get("/_matrix/client/v3/account/whoami", bob.token()).await.0, 200);
    send_text(&server, &bob, &room, "back").await;
    assert_eq!(message_bodies(&server, &alice, &room).await, vec!["back".to_owned(), "anyone?".to_owned()]);

    // The spec's endpoints: admins only, local users only, not other admins.
    let lock_path = format!("/_matrix/client/v1/admin/lock/{}", enc(&bob.user_id));
    assert_error(&server.put(&lock_path, alice.token(), json!({"locked": true})).await, 403, "M_FORBIDDEN");
    assert_error(&server.get(&lock_path, alice.token()).await, 403, "M_FORBIDDEN");
    let remote = format!("/_matrix/client/v1/admin/lock/{}", enc("@x:elsewhere"));
    assert_error(&server.get(&remote, admin.token()).await, 400, "M_INVALID_PARAM");
    let other_admin = register_admin(&server, "chief").await;
    let admin_lock = format!("/_matrix/client/v1/admin/lock/{}", enc(&other_admin.user_id));
    assert_error(&server.put(&admin_lock, admin.token(), json!({"locked": true})).await, 403, "M_FORBIDDEN");
    let ghost = format!("/_matrix/client/v1/admin/lock/{}", enc("@ghost:localhost"));
    assert_error(&server.get(&ghost, admin.token()).await, 404, "M_NOT_FOUND");
    assert_eq!(server.put(&lock_path, admin.token(), json!({"locked": true})).await, (200, json!({"locked": true})));
    assert_eq!(server.get(&lock_path, admin.token()).await, (200, json!({"locked": true})));
    assert_error(&server.get("/_matrix/client/v3/account/whoami", bob.token()).await, 401, "M_USER_LOCKED");
    // Logging out is allowed while locked, and ends the session for good.
    assert_eq!(server.post("/_matrix/client/v3/logout", bob.token(), json!({})).await.0, 200);
    assert_eq!(server.put(&lock_path, admin.token(), json!({"locked": false})).await, (200, json!({"locked": false})));
    assert_error(&server.get("/_matrix/client/v3/account/whoami", bob.token()).await, 401, "M_UNKNOWN_TOKEN");
    assert_eq!(server.login(&bob.user_id, "pw").await.0, 200);

    // Admins are told they may lock and suspend; others are not.
    let capabilities = server.get("/_matrix/client/v3/capabilities", admin.token()).await.1;
    assert_eq!(capabilities["capabilities"]["m.account_moderation"], json!({"lock": true, "suspend": true}));
    let capabilities = server.get("/_matrix/client/v3/capabilities", alice.token()).await.1;
    assert!(capabilities["capabilities"].get("m.account_moderation").is_none(), "{capabilities}");
}

#[tokio::test]
async fn a_suspended_user_may_read_redact_their_own_and_leave_but_not_speak() {
    let server = TestServer::start().await;
    let admin = register_admin(&server, "boss").await;
    let alice = server.register("alice", "pw").await;
    let carol = server.register("carol", "pw").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    let other_room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &carol, &room).await;
    let carols = send_text(&server, &carol, &room, "my spam").await;
    let alices = send_text(&server, &alice, &room, "alice here").await;

    let suspend_path = format!("/_synapse/admin/v1/suspend/{}", enc(&carol.user_id));
    assert_error(&server.put(&suspend_path, alice.token(), json!({"suspend": true})).await, 403, "M_FORBIDDEN");
    let remote = format!("/_synapse/admin/v1/suspend/{}", enc("@x:elsewhere"));
    assert_error(&server.put(&remote, admin.token(), json!({"suspend": true})).await, 400, "M_INVALID_PARAM");
    let suspended = server.put(&suspend_path, admin.token(), json!({"suspend": true})).await;
    assert_eq!(suspended, (200, json!({"user_@carol:localhost_suspended": true})));
    assert_eq!(server.get(&user_path("v2", &carol.user_id), admin.token()).await.1["suspended"], true);
    let spec_path = format!("/_matrix/client/v1/admin/suspend/{}", enc(&carol.user_id));
    assert_eq!(server.get(&spec_path, admin.token()).await, (200, json!({"suspended": true})));

    // Refused: messages, state, joins, invites, new rooms, profile changes, uploads, and
    // redacting someone else's message.
    assert_error(&send_status(&server, &carol, &room, "more spam").await, 403, "M_USER_SUSPENDED");
    let topic = format!("/_matrix/client/v3/rooms/{}/state/m.room.topic", enc(&room));
    assert_error(&server.put(&topic, carol.token(), json!({"topic": "x"})).await, 403, "M_USER_SUSPENDED");
    let join_other = format!("/_matrix/client/v3/rooms/{}/join", enc(&other_room));
    assert_error(&server.post(&join_other, carol.token(), json!({})).await, 403, "M_USER_SUSPENDED");
    let invite = format!("/_matrix/client/v3/rooms/{}/invite", enc(&room));
    let invited = server.post(&invite, carol.token(), json!({"user_id": admin.user_id})).await;
    assert_error(&invited, 403, "M_USER_SUSPENDED");
    let created = server.post("/_matrix/client/v3/createRoom", carol.token(), json!({})).await;
    assert_error(&created, 403, "M_USER_SUSPENDED");
    let name = format!("/_matrix/client/v3/profile/{}/displayname", enc(&carol.user_id));
    assert_error(&server.put(&name, carol.token(), json!({"displayname": "Spammer"})).await, 403, "M_USER_SUSPENDED");
    let upload = server.call("POST", "/_matrix/media/v3/upload", carol.token(), Some(json!({"x": 1}))).await;
    assert_error(&upload, 403, "M_USER_SUSPENDED");
    let redact_alice = format!("/_matrix/client/v3/rooms/{}/redact/{}/r1", enc(&room), enc(&alices));
    assert_error(&server.put(&redact_alice, carol.token(), json!({})).await, 403, "M_USER_SUSPENDED");

    // Allowed: reading, redacting her own message, leaving.
    let carol_sync = initial_sync(&server, &carol).await;
    assert!(
        bodies(&carol_sync["rooms"]["join"][room.as_str()]["timeline"]["events"]).contains(&"alice here".to_owned())
    );
    let redact_own = format!("/_matrix/client/v3/rooms/{}/redact/{}/r2", enc(&room), enc(&carols));
    assert_eq!(server.put(&redact_own, carol.token(), json!({})).await.0, 200);
    let leave = format!("/_matrix/client/v3/rooms/{}/leave", enc(&room));
    assert_eq!(server.post(&leave, carol.token(), json!({})).await.0, 200);

    // What alice sees: no second message, the first one redacted, carol gone.
    assert_eq!(message_bodies(&server, &alice, &room).await, vec!["alice here".to_owned()]);
    let member = server
        .get(
            &format!("/_matrix/client/v3/rooms/{}/state/m.room.member/{}", enc(&room), enc(&carol.user_id)),
            alice.token(),
        )
        .await
        .1;
    assert_eq!(member["membership"], "leave", "{member}");
    let profile = server.get(&format!("/_matrix/client/v3/profile/{}", enc(&carol.user_id)), alice.token()).await.1;
    assert_ne!(profile["displayname"], "Spammer");

    // Lifted: carol joins again.
    let lifted = server.put(&suspend_path, admin.token(), json!({"suspend": false})).await;
    assert_eq!(lifted, (200, json!({"user_@carol:localhost_suspended": false})));
    assert_eq!(server.post(&join_other, carol.token(), json!({})).await.0, 200);
}

/// A login from `forwarded` (sent as `X-Forwarded-For`).
async fn login_from(server: &TestServer, user: &str, forwarded: &str) -> u16 {
    let body = json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": "pw"});
    let response = reqwest::Client::new()
        .post(server.url("/_matrix/client/v3/login"))
        .header("X-Forwarded-For", forwarded)
        .json(&body)
        .send()
        .await
        .expect("login sent");
    response.status().as_u16()
}

async fn whois_ips(server: &TestServer, admin: &Session, user: &str) -> String {
    let (status, body) = server.get(&format!("/_synapse/admin/v1/whois/{}", enc(user)), admin.token()).await;
    assert_eq!(status, 200, "{body}");
    body.to_string()
}

#[tokio::test]
async fn x_forwarded_for_counts_only_from_a_trusted_proxy() {
    // Two logins per address, and plenty per account.
    const LIMITS: &str = "rc_login = { address = { per_second = 0.001, burst_count = 2 }, \
                          account = { per_second = 1000, burst_count = 1000 }, \
                          failed_attempts = { per_second = 1000, burst_count = 1000 } }\n";
    let proxied = TestServer::start_with(&format!("{LIMITS}trusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\"]\n")).await;
    let admin = register_admin(&proxied, "boss").await;
    proxied.register("dave", "pw").await;
    assert_eq!(login_from(&proxied, "dave", "203.0.113.5").await, 200);
    assert_eq!(login_from(&proxied, "dave", "203.0.113.5").await, 200);
    assert_eq!(login_from(&proxied, "dave", "203.0.113.5").await, 429);
    // Another client behind the same proxy has its own allowance.
    assert_eq!(login_from(&proxied, "dave", "203.0.113.6").await, 200);
    // What a client claims left of the proxy's entry does not help it; proxies in the chain
    // are skipped.
    assert_eq!(login_from(&proxied, "dave", "198.51.100.1, 203.0.113.5").await, 429);
    assert_eq!(login_from(&proxied, "dave", "203.0.113.5, 10.1.1.1").await, 429);
    let ips = whois_ips(&proxied, &admin, "@dave:localhost").await;
    assert!(ips.contains("203.0.113.6") && ips.contains("203.0.113.5"), "{ips}");

    // Without trusted proxies the header is ignored: every login comes from 127.0.0.1.
    let direct = TestServer::start_with(LIMITS).await;
    let admin = register_admin(&direct, "boss").await;
    direct.register("dave", "pw").await;
    assert_eq!(login_from(&direct, "dave", "203.0.113.5").await, 200);
    assert_eq!(login_from(&direct, "dave", "203.0.113.6").await, 200);
    assert_eq!(login_from(&direct, "dave", "203.0.113.7").await, 429);
    let ips = whois_ips(&direct, &admin, "@dave:localhost").await;
    assert!(ips.contains("127.0.0.1") && !ips.contains("203.0.113"), "{ips}");
}

#[tokio::test]
async fn synadm_shadow_bans_locks_and_suspends() {
    if !synadm_available() {
        eprintln!("skipped: synadm is not installed next to TRELLIS_PYTHON (.ci/run installs it)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start().await;
    let admin = register_admin(&server, "boss").await;
    let alice = server.register("alice", "pw").await;
    let erin = server.register("erin", "pw").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &erin, &room).await;

    synadm(&server, &admin, dir.path(), &["user", "shadow-ban", "@erin:localhost"]);
    let details = synadm(&server, &admin, dir.path(), &["user", "details", "@erin:localhost"]);
    assert_eq!(details["shadow_banned"], true, "{details}");
    assert_eq!(send_status(&server, &erin, &room, "unseen").await.0, 200);
    assert!(message_bodies(&server, &alice, &room).await.is_empty());
    synadm(&server, &admin, dir.path(), &["user", "shadow-ban", "--unban", "@erin:localhost"]);

    synadm(&server, &admin, dir.path(), &["user", "suspend", "@erin:localhost"]);
    let details = synadm(&server, &admin, dir.path(), &["user", "details", "@erin:localhost"]);
    assert_eq!(details["suspended"], true, "{details}");
    assert_error(&send_status(&server, &erin, &room, "refused").await, 403, "M_USER_SUSPENDED");
    synadm(&server, &admin, dir.path(), &["user", "suspend", "--unsuspend", "@erin:localhost"]);

    synadm(&server, &admin, dir.path(), &["user", "modify", "@erin:localhost", "--lock"]);
    let listed = synadm(&server, &admin, dir.path(), &["user", "list", "--locked"]);
    let entry = listed["users"].as_array().and_then(|u| u.iter().find(|u| u["name"] == "@erin:localhost"));
    assert_eq!(entry.map(|u| u["locked"].clone()), Some(json!(true)), "{listed}");
    assert_error(&send_status(&server, &erin, &room, "locked").await, 401, "M_USER_LOCKED");
    synadm(&server, &admin, dir.path(), &["user", "modify", "@erin:localhost", "--unlock"]);
    assert_eq!(send_status(&server, &erin, &room, "seen").await.0, 200);
    assert_eq!(message_bodies(&server, &alice, &room).await, vec!["seen".to_owned()]);
}
