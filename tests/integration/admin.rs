//! Synapse's shared-secret registration API.

use hmac::{Hmac, Mac};
use serde_json::json;
use sha1::Sha1;

use crate::harness::{SHARED_SECRET, TestServer, assert_error};

const PATH: &str = "/_synapse/admin/v1/register";

fn mac(secret: &str, nonce: &str, user: &str, password: &str, admin: bool) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).unwrap();
    let admin = if admin { "admin" } else { "notadmin" };
    mac.update(format!("{nonce}\0{user}\0{password}\0{admin}").as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

async fn nonce(server: &TestServer) -> String {
    let response = server.get(PATH, None).await;
    assert_eq!(response.0, 200, "{}", response.1);
    response.1["nonce"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn shared_secret_registration_creates_users_once_per_nonce() {
    let server = TestServer::start_with("allow_registration = false").await;
    let n = nonce(&server).await;
    let body = json!({"nonce": n, "username": "admin", "password": "pw", "admin": true, "displayname": "The Admin",
                      "mac": mac(SHARED_SECRET, &n, "admin", "pw", true)});
    let created = server.post(PATH, None, body.clone()).await;
    assert_eq!(created.0, 200, "{}", created.1);
    assert_eq!(created.1["user_id"], "@admin:localhost");
    assert_eq!(created.1["home_server"], "localhost");
    let token = created.1["access_token"].as_str().unwrap();
    assert_eq!(server.get("/_matrix/client/v3/account/whoami", Some(token)).await.1["user_id"], "@admin:localhost");
    let name = server.get("/_matrix/client/v3/profile/%40admin%3Alocalhost/displayname", None).await;
    assert_eq!(name.1["displayname"], "The Admin");
    assert_eq!(server.login("admin", "pw").await.0, 200);

    // A nonce is single-use.
    let replay = server.post(PATH, None, body).await;
    assert_eq!(replay.0, 400, "{}", replay.1);

    let n = nonce(&server).await;
    let forged = server
        .post(
            PATH,
            None,
            json!({"nonce": n, "username": "eve", "password": "pw", "mac": mac("wrong", &n, "eve", "pw", false)}),
        )
        .await;
    assert_error(&forged, 403, "M_FORBIDDEN");
    // The admin flag is covered by the MAC: claiming admin with a non-admin MAC fails.
    let n = nonce(&server).await;
    let escalated = server
        .post(PATH, None, json!({"nonce": n, "username": "eve", "password": "pw", "admin": true, "mac": mac(SHARED_SECRET, &n, "eve", "pw", false)}))
        .await;
    assert_error(&escalated, 403, "M_FORBIDDEN");

    let n = nonce(&server).await;
    let taken = server
        .post(PATH, None, json!({"nonce": n, "username": "admin", "password": "x", "mac": mac(SHARED_SECRET, &n, "admin", "x", false)}))
        .await;
    assert_error(&taken, 400, "M_USER_IN_USE");
    let bad_json = server.post(PATH, None, json!({"nonce": 1})).await;
    assert_error(&bad_json, 400, "M_BAD_JSON");
}

#[tokio::test]
async fn shared_secret_registration_is_off_without_a_secret() {
    let tempdir = tempfile::tempdir().unwrap();
    let text = crate::harness::config_text(tempdir.path(), "localhost", "")
        .replace(&format!("registration_shared_secret = \"{SHARED_SECRET}\"\n"), "");
    std::fs::write(tempdir.path().join("trellis.toml"), text).unwrap();
    let mut command = std::process::Command::new(crate::harness::trellis_bin());
    command.arg("--config").arg(tempdir.path().join("trellis.toml"));
    let server = TestServer::spawn(command, false).unwrap();
    assert_error(&server.get(PATH, None).await, 400, "M_UNKNOWN");
}
