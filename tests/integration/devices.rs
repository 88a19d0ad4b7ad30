//! Devices: list, get, rename, delete one or many behind user-interactive auth.

use serde_json::json;

use crate::harness::{TestServer, assert_error};

#[tokio::test]
async fn devices_can_be_listed_renamed_and_deleted() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let phone = server
        .post(
            "/_matrix/client/v3/login",
            None,
            json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": "pw",
                   "device_id": "PHONE", "initial_device_display_name": "Phone"}),
        )
        .await;
    let phone_token = phone.1["access_token"].as_str().unwrap().to_owned();
    server.login("alice", "pw").await;

    let list = server.get("/_matrix/client/v3/devices", alice.token()).await;
    assert_eq!(list.0, 200);
    let devices = list.1["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 3, "{}", list.1);
    let phone_entry = devices.iter().find(|d| d["device_id"] == "PHONE").expect("phone listed");
    assert_eq!(phone_entry["display_name"], "Phone");
    assert!(phone_entry["last_seen_ts"].as_u64().unwrap() > 0);
    assert_eq!(phone_entry["last_seen_ip"], "127.0.0.1");

    let renamed =
        server.put("/_matrix/client/v3/devices/PHONE", alice.token(), json!({"display_name": "Old phone"})).await;
    assert_eq!(renamed.0, 200, "{}", renamed.1);
    let got = server.get("/_matrix/client/v3/devices/PHONE", alice.token()).await;
    assert_eq!(got.1["display_name"], "Old phone");
    assert_error(&server.get("/_matrix/client/v3/devices/NOPE", alice.token()).await, 404, "M_NOT_FOUND");
    assert_error(
        &server.put("/_matrix/client/v3/devices/NOPE", alice.token(), json!({"display_name": "x"})).await,
        404,
        "M_NOT_FOUND",
    );

    // Deleting needs the password.
    let challenge = server.call("DELETE", "/_matrix/client/v3/devices/PHONE", alice.token(), Some(json!({}))).await;
    assert_eq!(challenge.0, 401, "{}", challenge.1);
    assert_eq!(challenge.1["flows"], json!([{"stages": ["m.login.password"]}]));
    let session = challenge.1["session"].as_str().unwrap();
    let auth = json!({"auth": {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": "pw", "session": session}});
    let deleted = server.call("DELETE", "/_matrix/client/v3/devices/PHONE", alice.token(), Some(auth)).await;
    assert_eq!(deleted.0, 200, "{}", deleted.1);
    assert_error(&server.get("/_matrix/client/v3/account/whoami", Some(&phone_token)).await, 401, "M_UNKNOWN_TOKEN");
    assert_error(&server.get("/_matrix/client/v3/devices/PHONE", alice.token()).await, 404, "M_NOT_FOUND");
}

#[tokio::test]
async fn delete_devices_removes_several_at_once() {
    let server = TestServer::start().await;
    let bob = server.register("bob", "pw").await;
    let a = server.login("bob", "pw").await.1["device_id"].as_str().unwrap().to_owned();
    let b = server.login("bob", "pw").await.1["device_id"].as_str().unwrap().to_owned();
    let request = json!({"devices": [a, b, "UNKNOWN"]});
    let challenge = server.post("/_matrix/client/v3/delete_devices", bob.token(), request.clone()).await;
    assert_eq!(challenge.0, 401);
    let session = challenge.1["session"].as_str().unwrap();
    let mut with_auth = request;
    with_auth["auth"] = json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "bob"}, "password": "pw", "session": session});
    let done = server.post("/_matrix/client/v3/delete_devices", bob.token(), with_auth).await;
    assert_eq!(done.0, 200, "{}", done.1);
    let list = server.get("/_matrix/client/v3/devices", bob.token()).await;
    let ids: Vec<&str> =
        list.1["devices"].as_array().unwrap().iter().map(|d| d["device_id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![bob.device_id.as_str()]);
}

#[tokio::test]
async fn devices_are_private_to_their_user() {
    let server = TestServer::start().await;
    let carol = server.register("carol", "pw").await;
    let dave = server.register("dave", "pw").await;
    let other = server.get(&format!("/_matrix/client/v3/devices/{}", carol.device_id), dave.token()).await;
    assert_error(&other, 404, "M_NOT_FOUND");
}
