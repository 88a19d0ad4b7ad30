//! Login, refresh tokens, logout and token handling.

use serde_json::json;

use crate::harness::{TestServer, assert_error};

const LOGIN: &str = "/_matrix/client/v3/login";
const WHOAMI: &str = "/_matrix/client/v3/account/whoami";

#[tokio::test]
async fn password_login_accepts_every_identifier_form() {
    let server = TestServer::start().await;
    server.register("alice", "correct horse").await;

    let flows = server.get(LOGIN, None).await;
    assert_eq!(flows.0, 200);
    assert!(flows.1["flows"].as_array().unwrap().iter().any(|f| f["type"] == "m.login.password"), "{}", flows.1);

    for user in ["alice", "@alice:localhost"] {
        let (status, body) = server.login(user, "correct horse").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["user_id"], "@alice:localhost");
        assert_eq!(body["home_server"], "localhost");
        let token = body["access_token"].as_str().unwrap();
        assert_eq!(server.get(WHOAMI, Some(token)).await.0, 200);
    }
    // The legacy `user` field that many tools still send.
    let legacy = server
        .post(LOGIN, None, json!({"type": "m.login.password", "user": "alice", "password": "correct horse"}))
        .await;
    assert_eq!(legacy.0, 200, "{}", legacy.1);

    assert_error(&server.login("alice", "wrong").await, 403, "M_FORBIDDEN");
    assert_error(&server.login("nobody", "whatever").await, 403, "M_FORBIDDEN");
    let unsupported = server.post(LOGIN, None, json!({"type": "org.example.unknown", "token": "abc"})).await;
    assert_eq!(unsupported.0, 400, "{}", unsupported.1);
}

#[tokio::test]
async fn login_with_an_existing_device_id_replaces_its_token() {
    let server = TestServer::start().await;
    server.register("bob", "pw").await;
    let body = json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "bob"}, "password": "pw", "device_id": "LAPTOP"});
    let first = server.post(LOGIN, None, body.clone()).await;
    let second = server.post(LOGIN, None, body).await;
    assert_eq!(second.1["device_id"], "LAPTOP");
    let old = first.1["access_token"].as_str().unwrap();
    let new = second.1["access_token"].as_str().unwrap();
    assert_error(&server.get(WHOAMI, Some(old)).await, 401, "M_UNKNOWN_TOKEN");
    assert_eq!(server.get(WHOAMI, Some(new)).await.0, 200);
}

#[tokio::test]
async fn tokens_are_required_and_checked() {
    let server = TestServer::start().await;
    let session = server.register("carol", "pw").await;
    assert_error(&server.get(WHOAMI, None).await, 401, "M_MISSING_TOKEN");
    let unknown = server.get(WHOAMI, Some("not-a-token")).await;
    assert_error(&unknown, 401, "M_UNKNOWN_TOKEN");
    // A revoked or unknown token is a hard logout: `soft_logout` is absent or false.
    assert_ne!(unknown.1["soft_logout"], true);
    // The older query parameter form.
    let query = server.get(&format!("{WHOAMI}?access_token={}", session.access_token), None).await;
    assert_eq!(query.0, 200, "{}", query.1);
}

#[tokio::test]
async fn logout_revokes_one_device_and_logout_all_every_device() {
    let server = TestServer::start().await;
    let first = server.register("dave", "pw").await;
    let second_login = server.login("dave", "pw").await;
    let third_login = server.login("dave", "pw").await;
    let second = second_login.1["access_token"].as_str().unwrap();
    let third = third_login.1["access_token"].as_str().unwrap();

    assert_eq!(server.post("/_matrix/client/v3/logout", first.token(), json!({})).await.0, 200);
    assert_error(&server.get(WHOAMI, first.token()).await, 401, "M_UNKNOWN_TOKEN");
    assert_eq!(server.get(WHOAMI, Some(second)).await.0, 200);
    let devices = server.get("/_matrix/client/v3/devices", Some(second)).await;
    assert_eq!(devices.1["devices"].as_array().unwrap().len(), 2, "the logged-out device is gone: {}", devices.1);

    assert_eq!(server.post("/_matrix/client/v3/logout/all", Some(second), json!({})).await.0, 200);
    assert_error(&server.get(WHOAMI, Some(second)).await, 401, "M_UNKNOWN_TOKEN");
    assert_error(&server.get(WHOAMI, Some(third)).await, 401, "M_UNKNOWN_TOKEN");
    // The password still works after logging out everywhere.
    assert_eq!(server.login("dave", "pw").await.0, 200);
}

#[tokio::test]
async fn refresh_tokens_rotate_and_expired_tokens_are_soft_logged_out() {
    let server = TestServer::start_with("refreshable_access_token_lifetime_secs = 1").await;
    server.register("erin", "pw").await;
    let login = server
        .post(
            LOGIN,
            None,
            json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "erin"}, "password": "pw", "refresh_token": true}),
        )
        .await;
    assert_eq!(login.0, 200, "{}", login.1);
    assert_eq!(login.1["expires_in_ms"], 1000);
    let access = login.1["access_token"].as_str().unwrap().to_owned();
    let refresh = login.1["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(server.get(WHOAMI, Some(&access)).await.0, 200);

    // Wait past the one-second lifetime: the token is expired, not revoked.
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    let expired = server.get(WHOAMI, Some(&access)).await;
    assert_error(&expired, 401, "M_UNKNOWN_TOKEN");
    assert_eq!(expired.1["soft_logout"], true);

    let refreshed = server.post("/_matrix/client/v3/refresh", None, json!({"refresh_token": refresh})).await;
    assert_eq!(refreshed.0, 200, "{}", refreshed.1);
    let new_access = refreshed.1["access_token"].as_str().unwrap();
    let new_refresh = refreshed.1["refresh_token"].as_str().unwrap();
    assert_ne!(new_refresh, refresh);
    assert_eq!(server.get(WHOAMI, Some(new_access)).await.1["device_id"], login.1["device_id"]);

    // The old refresh token is spent.
    let reused = server.post("/_matrix/client/v3/refresh", None, json!({"refresh_token": refresh})).await;
    assert_error(&reused, 401, "M_UNKNOWN_TOKEN");
}
