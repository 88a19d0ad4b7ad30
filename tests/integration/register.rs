//! Registration: user-interactive auth, tokens, guests, name rules, `inhibit_login`.

use serde_json::json;

use crate::harness::{TestServer, assert_error};

const REGISTER: &str = "/_matrix/client/v3/register";

#[tokio::test]
async fn registration_walks_the_dummy_flow_with_a_session() {
    let server = TestServer::start().await;
    let first = server.post(REGISTER, None, json!({"username": "alice", "password": "pw-alice"})).await;
    assert_eq!(first.0, 401, "{}", first.1);
    assert_eq!(first.1["flows"], json!([{"stages": ["m.login.dummy"]}]));
    let session = first.1["session"].as_str().expect("session").to_owned();

    let done = server
        .post(
            REGISTER,
            None,
            json!({"username": "alice", "password": "pw-alice", "auth": {"type": "m.login.dummy", "session": session}}),
        )
        .await;
    assert_eq!(done.0, 200, "{}", done.1);
    assert_eq!(done.1["user_id"], "@alice:localhost");
    let token = done.1["access_token"].as_str().unwrap();
    let whoami = server.get("/_matrix/client/v3/account/whoami", Some(token)).await;
    assert_eq!(whoami.0, 200);
    assert_eq!(whoami.1["user_id"], "@alice:localhost");
    assert_eq!(whoami.1["device_id"], done.1["device_id"]);
    assert_ne!(whoami.1["is_guest"], true);

    // The completed session cannot be used again.
    let reuse = server
        .post(
            REGISTER,
            None,
            json!({"username": "alice2", "password": "x", "auth": {"type": "m.login.dummy", "session": session}}),
        )
        .await;
    assert_eq!(reuse.0, 400, "{}", reuse.1);
}

#[tokio::test]
async fn registration_options_are_honoured() {
    let server = TestServer::start().await;
    let inhibited = server
        .post(
            REGISTER,
            None,
            json!({"username": "quiet", "password": "pw", "inhibit_login": true, "auth": {"type": "m.login.dummy"}}),
        )
        .await;
    assert_eq!(inhibited.0, 200, "{}", inhibited.1);
    assert_eq!(inhibited.1["user_id"], "@quiet:localhost");
    assert!(inhibited.1.get("access_token").is_none(), "{}", inhibited.1);
    assert!(inhibited.1.get("device_id").is_none_or(|d| d.is_null()), "{}", inhibited.1);

    let named = server
        .post(
            REGISTER,
            None,
            json!({"username": "bob", "password": "pw", "device_id": "BOBPHONE", "initial_device_display_name": "Bob's phone",
                   "refresh_token": true, "auth": {"type": "m.login.dummy"}}),
        )
        .await;
    assert_eq!(named.0, 200, "{}", named.1);
    assert_eq!(named.1["device_id"], "BOBPHONE");
    assert!(named.1["refresh_token"].is_string(), "{}", named.1);
    assert!(named.1["expires_in_ms"].as_u64().unwrap() > 0);
    let token = named.1["access_token"].as_str().unwrap();
    let device = server.get("/_matrix/client/v3/devices/BOBPHONE", Some(token)).await;
    assert_eq!(device.0, 200, "{}", device.1);
    assert_eq!(device.1["display_name"], "Bob's phone");

    // Without a username the server picks one.
    let anonymous = server.post(REGISTER, None, json!({"password": "pw", "auth": {"type": "m.login.dummy"}})).await;
    assert_eq!(anonymous.0, 200, "{}", anonymous.1);
    assert!(anonymous.1["user_id"].as_str().unwrap().ends_with(":localhost"));
}

#[tokio::test]
async fn usernames_are_checked() {
    let server = TestServer::start().await;
    server.register("carol", "pw").await;
    let dummy = json!({"type": "m.login.dummy"});
    for bad in ["has space", "_reserved", "12345", "ünïcode", "user-É", ""] {
        let result = server.post(REGISTER, None, json!({"username": bad, "password": "pw", "auth": dummy})).await;
        assert_error(&result, 400, "M_INVALID_USERNAME");
    }
    let long = "a".repeat(260);
    let result = server.post(REGISTER, None, json!({"username": long, "password": "pw", "auth": dummy})).await;
    assert_error(&result, 400, "M_INVALID_USERNAME");
    let taken = server.post(REGISTER, None, json!({"username": "carol", "password": "pw", "auth": dummy})).await;
    assert_error(&taken, 400, "M_USER_IN_USE");
    // Capitals are folded, as Synapse does: "CAROL" is carol, "User-UPPER" is user-upper.
    let taken = server.post(REGISTER, None, json!({"username": "CAROL", "password": "pw", "auth": dummy})).await;
    assert_error(&taken, 400, "M_USER_IN_USE");
    let (status, body) =
        server.post(REGISTER, None, json!({"username": "User-UPPER", "password": "pw", "auth": dummy})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], "@user-upper:localhost");

    let available = server.get("/_matrix/client/v3/register/available?username=dave", None).await;
    assert_eq!(available, (200, json!({"available": true})));
    let unavailable = server.get("/_matrix/client/v3/register/available?username=carol", None).await;
    assert_error(&unavailable, 400, "M_USER_IN_USE");
    let invalid = server.get("/_matrix/client/v3/register/available?username=Not%20Valid", None).await;
    assert_error(&invalid, 400, "M_INVALID_USERNAME");
}

#[tokio::test]
async fn registration_token_is_required_when_configured() {
    let server = TestServer::start_with("registration_token = \"letmein\"").await;
    let first = server.post(REGISTER, None, json!({"username": "erin", "password": "pw"})).await;
    assert_eq!(first.0, 401);
    assert_eq!(first.1["flows"], json!([{"stages": ["m.login.registration_token"]}]));
    let session = first.1["session"].as_str().unwrap();

    // A dummy stage does not satisfy the token flow.
    let dummy = server
        .post(
            REGISTER,
            None,
            json!({"username": "erin", "password": "pw", "auth": {"type": "m.login.dummy", "session": session}}),
        )
        .await;
    assert_eq!(dummy.0, 401, "{}", dummy.1);

    let wrong = server
        .post(
            REGISTER,
            None,
            json!({"username": "erin", "password": "pw", "auth": {"type": "m.login.registration_token", "token": "nope", "session": session}}),
        )
        .await;
    assert_eq!(wrong.0, 401, "{}", wrong.1);
    assert_eq!(wrong.1["errcode"], "M_FORBIDDEN");
    assert_eq!(wrong.1["session"], session);

    let right = server
        .post(
            REGISTER,
            None,
            json!({"username": "erin", "password": "pw", "auth": {"type": "m.login.registration_token", "token": "letmein", "session": session}}),
        )
        .await;
    assert_eq!(right.0, 200, "{}", right.1);

    let validity = "/_matrix/client/v1/register/m.login.registration_token/validity";
    assert_eq!(server.get(&format!("{validity}?token=letmein"), None).await, (200, json!({"valid": true})));
    assert_eq!(server.get(&format!("{validity}?token=wrong"), None).await, (200, json!({"valid": false})));
}

#[tokio::test]
async fn closed_registration_is_forbidden() {
    let server = TestServer::start_with("allow_registration = false\nallow_guest_registration = false").await;
    let result = server
        .post(REGISTER, None, json!({"username": "frank", "password": "pw", "auth": {"type": "m.login.dummy"}}))
        .await;
    assert_error(&result, 403, "M_FORBIDDEN");
    let guest = server.post(&format!("{REGISTER}?kind=guest"), None, json!({})).await;
    assert_error(&guest, 403, "M_FORBIDDEN");
}

#[tokio::test]
async fn guests_get_numeric_ids_and_limited_access() {
    let server = TestServer::start().await;
    let guest = server.post(&format!("{REGISTER}?kind=guest"), None, json!({})).await;
    assert_eq!(guest.0, 200, "{}", guest.1);
    let user_id = guest.1["user_id"].as_str().unwrap();
    let localpart = user_id.trim_start_matches('@').split(':').next().unwrap();
    assert!(localpart.bytes().all(|b| b.is_ascii_digit()), "{user_id}");
    let token = guest.1["access_token"].as_str().unwrap();

    let whoami = server.get("/_matrix/client/v3/account/whoami", Some(token)).await;
    assert_eq!(whoami.0, 200);
    assert_eq!(whoami.1["is_guest"], true);
    let password = server.post("/_matrix/client/v3/account/password", Some(token), json!({"new_password": "x"})).await;
    assert_error(&password, 403, "M_GUEST_ACCESS_FORBIDDEN");

    let second = server.post(&format!("{REGISTER}?kind=guest"), None, json!({})).await;
    assert_ne!(second.1["user_id"], guest.1["user_id"]);
}
