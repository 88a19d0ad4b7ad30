//! Password change and deactivation, both behind user-interactive auth.

use serde_json::json;

use crate::harness::{TestServer, assert_error};

const PASSWORD: &str = "/_matrix/client/v3/account/password";
const DEACTIVATE: &str = "/_matrix/client/v3/account/deactivate";
const WHOAMI: &str = "/_matrix/client/v3/account/whoami";

fn password_auth(user: &str, password: &str, session: &str) -> serde_json::Value {
    json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": password, "session": session})
}

#[tokio::test]
async fn password_change_requires_the_old_password_and_logs_out_other_devices() {
    let server = TestServer::start().await;
    let main = server.register("alice", "old-pw").await;
    let other = server.login("alice", "old-pw").await.1["access_token"].as_str().unwrap().to_owned();

    let challenge = server.post(PASSWORD, main.token(), json!({"new_password": "new-pw"})).await;
    assert_eq!(challenge.0, 401, "{}", challenge.1);
    assert_eq!(challenge.1["flows"], json!([{"stages": ["m.login.password"]}]));
    let session = challenge.1["session"].as_str().unwrap();

    let wrong = server
        .post(
            PASSWORD,
            main.token(),
            json!({"new_password": "new-pw", "auth": password_auth("alice", "guess", session)}),
        )
        .await;
    assert_eq!(wrong.0, 401, "{}", wrong.1);
    assert_eq!(wrong.1["errcode"], "M_FORBIDDEN");
    // Nothing completed: `completed` is empty, which ruma (like the spec's default) omits.
    assert!(wrong.1.get("completed").is_none_or(|c| c == &json!([])), "{}", wrong.1);

    let done = server
        .post(
            PASSWORD,
            main.token(),
            json!({"new_password": "new-pw", "auth": password_auth("alice", "old-pw", session)}),
        )
        .await;
    assert_eq!(done.0, 200, "{}", done.1);
    assert_eq!(server.get(WHOAMI, main.token()).await.0, 200, "the requesting device stays logged in");
    assert_error(&server.get(WHOAMI, Some(&other)).await, 401, "M_UNKNOWN_TOKEN");
    assert_error(&server.login("alice", "old-pw").await, 403, "M_FORBIDDEN");
    assert_eq!(server.login("alice", "new-pw").await.0, 200);
}

#[tokio::test]
async fn password_change_can_keep_other_devices() {
    let server = TestServer::start().await;
    let main = server.register("bob", "pw1").await;
    let other = server.login("bob", "pw1").await.1["access_token"].as_str().unwrap().to_owned();
    let challenge = server.post(PASSWORD, main.token(), json!({"new_password": "pw2"})).await;
    let session = challenge.1["session"].as_str().unwrap();
    let done = server
        .post(
            PASSWORD,
            main.token(),
            json!({"new_password": "pw2", "logout_devices": false, "auth": password_auth("@bob:localhost", "pw1", session)}),
        )
        .await;
    assert_eq!(done.0, 200, "{}", done.1);
    assert_eq!(server.get(WHOAMI, Some(&other)).await.0, 200);
}

#[tokio::test]
async fn password_stage_must_name_the_authenticated_user() {
    let server = TestServer::start().await;
    let alice = server.register("carol", "pw-c").await;
    server.register("mallory", "pw-m").await;
    let challenge = server.post(PASSWORD, alice.token(), json!({"new_password": "x"})).await;
    let session = challenge.1["session"].as_str().unwrap();
    // Mallory's own correct password does not authorise a change to Carol's account: refused
    // outright (403, as Synapse answers), and Carol's password is unchanged.
    let result = server
        .post(PASSWORD, alice.token(), json!({"new_password": "x", "auth": password_auth("mallory", "pw-m", session)}))
        .await;
    assert_eq!(result.0, 403, "{}", result.1);
    assert_eq!(result.1["errcode"], "M_FORBIDDEN");
    assert_eq!(server.login("carol", "pw-c").await.0, 200);
}

#[tokio::test]
async fn deactivation_ends_every_session_and_keeps_the_name_taken() {
    let server = TestServer::start().await;
    let dave = server.register("dave", "pw").await;
    let other = server.login("dave", "pw").await.1["access_token"].as_str().unwrap().to_owned();
    server
        .put(
            &format!("/_matrix/client/v3/profile/{}/displayname", crate::harness::enc(&dave.user_id)),
            dave.token(),
            json!({"displayname": "Dave"}),
        )
        .await;

    let challenge = server.post(DEACTIVATE, dave.token(), json!({"erase": true})).await;
    assert_eq!(challenge.0, 401, "{}", challenge.1);
    let session = challenge.1["session"].as_str().unwrap();
    let done = server
        .post(DEACTIVATE, dave.token(), json!({"erase": true, "auth": password_auth("dave", "pw", session)}))
        .await;
    assert_eq!(done.0, 200, "{}", done.1);
    assert_eq!(done.1["id_server_unbind_result"], "no-support");

    assert_error(&server.get(WHOAMI, dave.token()).await, 401, "M_UNKNOWN_TOKEN");
    assert_error(&server.get(WHOAMI, Some(&other)).await, 401, "M_UNKNOWN_TOKEN");
    assert_error(&server.login("dave", "pw").await, 403, "M_USER_DEACTIVATED");
    let again = server
        .post(
            "/_matrix/client/v3/register",
            None,
            json!({"username": "dave", "password": "pw", "auth": {"type": "m.login.dummy"}}),
        )
        .await;
    assert_error(&again, 400, "M_USER_IN_USE");
    // Erasure removed the profile.
    let profile =
        server.get(&format!("/_matrix/client/v3/profile/{}", crate::harness::enc("@dave:localhost")), None).await;
    assert_eq!(profile.0, 200, "{}", profile.1);
    assert!(profile.1.get("displayname").is_none(), "{}", profile.1);
}
