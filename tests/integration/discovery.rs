//! `/versions`, well-known documents, capabilities and the federation version endpoint.

use serde_json::json;

use crate::harness::{TestServer, assert_error};

#[tokio::test]
async fn versions_and_capabilities() {
    let server = TestServer::start().await;
    let versions = server.get("/_matrix/client/versions", None).await;
    assert_eq!(versions.0, 200);
    let list: Vec<&str> = versions.1["versions"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(list.contains(&"v1.1") && list.contains(&"v1.3"), "{list:?}");

    let alice = server.register("alice", "pw").await;
    assert_error(&server.get("/_matrix/client/v3/capabilities", None).await, 401, "M_MISSING_TOKEN");
    let caps = server.get("/_matrix/client/v3/capabilities", alice.token()).await;
    assert_eq!(caps.0, 200, "{}", caps.1);
    // Absent means enabled (the spec's default); it must not say false.
    assert_ne!(caps.1["capabilities"]["m.change_password"]["enabled"], false);
    assert_eq!(caps.1["capabilities"]["m.room_versions"]["default"], "12");
    let available = caps.1["capabilities"]["m.room_versions"]["available"].as_object().unwrap();
    // 1 to 12, and MSC3757's two unstable versions (see `owned_state.rs`).
    assert_eq!(available.len(), 14);
    assert_eq!(available["1"], "stable");
    assert_eq!(available["org.matrix.msc3757.11"], "unstable");
}

#[tokio::test]
async fn well_known_documents_follow_the_config() {
    let unconfigured = TestServer::start().await;
    assert_error(&unconfigured.get("/.well-known/matrix/client", None).await, 404, "M_NOT_FOUND");
    assert_error(&unconfigured.get("/.well-known/matrix/server", None).await, 404, "M_NOT_FOUND");

    let configured = TestServer::start_with(
        "[global.well_known]\nclient = \"https://matrix.example.org\"\nserver = \"matrix.example.org:443\"",
    )
    .await;
    let client = configured.get("/.well-known/matrix/client", None).await;
    assert_eq!(client, (200, json!({"m.homeserver": {"base_url": "https://matrix.example.org"}})));
    let server = configured.get("/.well-known/matrix/server", None).await;
    assert_eq!(server, (200, json!({"m.server": "matrix.example.org:443"})));
}

#[tokio::test]
async fn federation_version_names_the_server() {
    let server = TestServer::start().await;
    let version = server.get("/_matrix/federation/v1/version", None).await;
    assert_eq!(version.0, 200);
    assert_eq!(version.1["server"]["name"], "Trellis");
}

#[tokio::test]
async fn federation_can_be_switched_off() {
    let server = TestServer::start_with("allow_federation = false").await;
    assert_error(&server.get("/_matrix/federation/v1/version", None).await, 404, "M_UNRECOGNIZED");
    assert_eq!(server.get("/_matrix/client/versions", None).await.0, 200);
}
