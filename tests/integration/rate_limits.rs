//! Rate limits (Synapse's `rc_*`): flooding messages and logins meets `M_LIMIT_EXCEEDED` (429)
//! with a `retry_after_ms` and `Retry-After` that are enough to wait; another user is not
//! affected; failed logins and registrations have their own limits; application services
//! (unless registered with `rate_limited: true`) and admins are not limited.

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha1::Sha1;

use crate::harness::{SHARED_SECRET, Session, TestServer, enc};

/// A request that also returns the `Retry-After` header.
async fn call(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Value,
) -> (u16, Value, Option<u64>) {
    let mut request = server.http.request(method, server.url(path)).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("request sent");
    let status = response.status().as_u16();
    let retry_after =
        response.headers().get(reqwest::header::RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body, retry_after)
}

async fn send(server: &TestServer, who: &Session, room: &str, txn: &str) -> (u16, Value, Option<u64>) {
    let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}", enc(room));
    call(server, reqwest::Method::PUT, &path, Some(&who.access_token), json!({"msgtype": "m.text", "body": txn})).await
}

async fn login(server: &TestServer, user: &str, password: &str) -> (u16, Value, Option<u64>) {
    let body =
        json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": password});
    call(server, reqwest::Method::POST, "/_matrix/client/v3/login", None, body).await
}

/// Checks a refusal is the spec's and returns how long it says to wait (plus a margin).
fn refused_wait(result: &(u16, Value, Option<u64>), at_most_ms: u64) -> Duration {
    let (status, body, header) = result;
    assert_eq!(*status, 429, "{body}");
    assert_eq!(body["errcode"], "M_LIMIT_EXCEEDED", "{body}");
    let ms = body["retry_after_ms"].as_u64().expect("retry_after_ms");
    assert!(ms > 0 && ms <= at_most_ms, "retry_after_ms {ms}");
    let header = header.expect("Retry-After header");
    assert_eq!(header, ms.div_ceil(1000), "Retry-After is retry_after_ms in whole seconds, rounded up");
    Duration::from_millis(ms + 150)
}

async fn public_room(server: &TestServer, owner: &Session) -> String {
    let (status, body) =
        server.post("/_matrix/client/v3/createRoom", Some(&owner.access_token), json!({"preset": "public_chat"})).await;
    assert_eq!(status, 200, "{body}");
    body["room_id"].as_str().expect("room_id").to_owned()
}

#[tokio::test]
async fn floods_meet_the_default_limits_and_pass_after_the_wait() {
    let server = TestServer::start_with_default_limits("").await;
    let alice = server.register("alice", "pw-alice").await;
    let bob = server.register("bob", "pw-bob").await;
    let room = public_room(&server, &alice).await;
    let (status, body) =
        server.post_owned(format!("/_matrix/client/v3/join/{}", enc(&room)), Some(&bob.access_token), json!({})).await;
    assert_eq!(status, 200, "{body}");

    // Messages: a burst of 10, then one per 5 seconds.
    let mut refused = None;
    for i in 0..30 {
        let result = send(&server, &alice, &room, &format!("a{i}")).await;
        if result.0 != 200 {
            refused = Some((i, result));
            break;
        }
    }
    let (sent, result) = refused.expect("the flood is limited");
    assert!(sent >= 5, "only {sent} messages before the limit");
    let wait = refused_wait(&result, 5_000);
    // Bob is not limited by Alice's flood.
    for i in 0..5 {
        assert_eq!(send(&server, &bob, &room, &format!("b{i}")).await.0, 200);
    }
    // A retry of a transaction already sent is not a new message.
    assert_eq!(send(&server, &alice, &room, "a0").await.0, 200);
    tokio::time::sleep(wait).await;
    assert_eq!(send(&server, &alice, &room, "after-wait").await.0, 200);

    // Logins from one address: a burst of 10, then one per 20 seconds.
    let mut refused = None;
    for i in 0..30 {
        let result = login(&server, "alice", "pw-alice").await;
        if result.0 != 200 {
            refused = Some((i, result));
            break;
        }
    }
    let (logged_in, result) = refused.expect("the login flood is limited");
    assert!(logged_in >= 5, "only {logged_in} logins before the limit");
    let wait = refused_wait(&result, 20_000);
    // Bob's session keeps working while logins from the address wait.
    assert_eq!(send(&server, &bob, &room, "b-during-login-limit").await.0, 200);
    tokio::time::sleep(wait).await;
    assert_eq!(login(&server, "alice", "pw-alice").await.0, 200);
}

fn mac(nonce: &str, user: &str, password: &str) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(SHARED_SECRET.as_bytes()).expect("key");
    mac.update(format!("{nonce}\0{user}\0{password}\0admin").as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// An admin, through Synapse's shared-secret registration (which is not rate limited).
async fn register_admin(server: &TestServer, user: &str) -> Session {
    let path = "/_synapse/admin/v1/register";
    let nonce = server.get(path, None).await.1["nonce"].as_str().expect("nonce").to_owned();
    let body = json!({"nonce": nonce, "username": user, "password": "pw", "admin": true,
                      "mac": mac(&nonce, user, "pw")});
    let (status, body) = server.post(path, None, body).await;
    assert_eq!(status, 200, "{body}");
    Session::from_response(&body)
}

fn registration(id: &str, token: &str, bot: &str, rate_limited: bool) -> String {
    format!(
        "id: {id}\nurl: null\nas_token: {token}\nhs_token: hs-{token}\nsender_localpart: {bot}\n\
         rate_limited: {rate_limited}\nnamespaces:\n  users:\n    - exclusive: true\n      regex: \"@{bot}_.*:localhost\"\n\
         \x20 aliases: []\n  rooms: []\n"
    )
}

#[tokio::test]
async fn failed_logins_registrations_services_and_admins() {
    let dir = tempfile::tempdir().expect("tempdir");
    let free = dir.path().join("free.yaml");
    let limited = dir.path().join("limited.yaml");
    std::fs::write(&free, registration("free", "free-token", "freebot", false)).expect("write");
    std::fs::write(&limited, registration("limited", "limited-token", "limitbot", true)).expect("write");
    let extra = format!(
        "app_service_config_files = [\"{}\", \"{}\"]\n\
         rc_message = {{ per_second = 0.5, burst_count = 3 }}\n\
         rc_registration = {{ per_second = 0.5, burst_count = 2 }}\n\
         rc_login = {{ failed_attempts = {{ per_second = 0.5, burst_count = 2 }} }}\n",
        free.display(),
        limited.display()
    );
    let server = TestServer::start_in(dir.path(), "localhost", &extra).expect("server starts");

    // Registration per address: two, then a wait of up to 2 s.
    let carol = server.register("carol", "pw-carol").await;
    server.register("dave", "pw-dave").await;
    let body = json!({"username": "erin", "password": "pw", "auth": {"type": "m.login.dummy"}});
    let result = call(&server, reqwest::Method::POST, "/_matrix/client/v3/register", None, body.clone()).await;
    let wait = refused_wait(&result, 2_000);
    tokio::time::sleep(wait).await;
    assert_eq!(call(&server, reqwest::Method::POST, "/_matrix/client/v3/register", None, body).await.0, 200);

    // Failed logins per account: two wrong passwords, then even the right one waits.
    for _ in 0..2 {
        assert_eq!(login(&server, "carol", "wrong").await.0, 403);
    }
    let wait = refused_wait(&login(&server, "carol", "pw-carol").await, 2_000);
    // Another account from the same address is not affected.
    assert_eq!(login(&server, "dave", "pw-dave").await.0, 200);
    tokio::time::sleep(wait).await;
    assert_eq!(login(&server, "carol", "pw-carol").await.0, 200);

    // An application service registers users beyond the address's limit and sends beyond the
    // message limit: it is exempt.
    for i in 0..4 {
        let body =
            json!({"type": "m.login.application_service", "username": format!("freebot_{i}"), "inhibit_login": true});
        let result =
            call(&server, reqwest::Method::POST, "/_matrix/client/v3/register", Some("free-token"), body).await;
        assert_eq!(result.0, 200, "{}", result.1);
    }
    let bot =
        Session { user_id: "@freebot:localhost".into(), access_token: "free-token".into(), device_id: String::new() };
    let room = public_room(&server, &bot).await;
    for i in 0..8 {
        let result = send(&server, &bot, &room, &format!("bot{i}")).await;
        assert_eq!(result.0, 200, "{}", result.1);
    }
    // One registered with `rate_limited: true` is limited like a user.
    let limited_bot = Session {
        user_id: "@limitbot:localhost".into(),
        access_token: "limited-token".into(),
        device_id: String::new(),
    };
    let room = public_room(&server, &limited_bot).await;
    let mut statuses = Vec::new();
    for i in 0..6 {
        statuses.push(send(&server, &limited_bot, &room, &format!("lim{i}")).await.0);
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429, 429]);

    // An admin is not limited either.
    let admin = register_admin(&server, "boss").await;
    let room = public_room(&server, &admin).await;
    for i in 0..8 {
        assert_eq!(send(&server, &admin, &room, &format!("boss{i}")).await.0, 200);
    }
    // ...while a user meets the message limit after its burst of 3.
    let room = public_room(&server, &carol).await;
    let statuses: Vec<u16> = {
        let mut out = Vec::new();
        for i in 0..5 {
            out.push(send(&server, &carol, &room, &format!("c{i}")).await.0);
        }
        out
    };
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
}
