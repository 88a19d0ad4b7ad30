//! Profiles, account data, filters and push rules.

use serde_json::json;

use crate::harness::{TestServer, assert_error, enc};

#[tokio::test]
async fn profile_fields_can_be_set_read_and_removed() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let me = enc(&alice.user_id);
    let set = server
        .put(&format!("/_matrix/client/v3/profile/{me}/displayname"), alice.token(), json!({"displayname": "Alice"}))
        .await;
    assert_eq!(set.0, 200, "{}", set.1);
    let avatar = server
        .put(
            &format!("/_matrix/client/v3/profile/{me}/avatar_url"),
            alice.token(),
            json!({"avatar_url": "mxc://localhost/abc"}),
        )
        .await;
    assert_eq!(avatar.0, 200, "{}", avatar.1);
    let custom = server
        .put(&format!("/_matrix/client/v3/profile/{me}/m.tz"), alice.token(), json!({"m.tz": "Europe/Paris"}))
        .await;
    assert_eq!(custom.0, 200, "{}", custom.1);

    // Profiles are public: no token needed.
    let profile = server.get(&format!("/_matrix/client/v3/profile/{me}"), None).await;
    assert_eq!(
        profile,
        (200, json!({"displayname": "Alice", "avatar_url": "mxc://localhost/abc", "m.tz": "Europe/Paris"}))
    );
    let name = server.get(&format!("/_matrix/client/v3/profile/{me}/displayname"), None).await;
    assert_eq!(name, (200, json!({"displayname": "Alice"})));

    let deleted =
        server.call("DELETE", &format!("/_matrix/client/v3/profile/{me}/avatar_url"), alice.token(), None).await;
    assert_eq!(deleted.0, 200, "{}", deleted.1);
    assert_error(&server.get(&format!("/_matrix/client/v3/profile/{me}/avatar_url"), None).await, 404, "M_NOT_FOUND");

    assert_error(
        &server.get(&format!("/_matrix/client/v3/profile/{}", enc("@nobody:localhost")), None).await,
        404,
        "M_NOT_FOUND",
    );
    let bob = server.register("bob", "pw").await;
    let not_yours = server
        .put(&format!("/_matrix/client/v3/profile/{me}/displayname"), bob.token(), json!({"displayname": "Bob"}))
        .await;
    assert_error(&not_yours, 403, "M_FORBIDDEN");

    let huge = "x".repeat(70 * 1024);
    let too_large = server
        .put(
            &format!("/_matrix/client/v3/profile/{me}/org.example.big"),
            alice.token(),
            json!({"org.example.big": huge}),
        )
        .await;
    assert_error(&too_large, 400, "M_PROFILE_TOO_LARGE");
}

#[tokio::test]
async fn account_data_is_stored_per_user_and_room() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let me = enc(&alice.user_id);
    let global = format!("/_matrix/client/v3/user/{me}/account_data/org.example.settings");
    assert_error(&server.get(&global, alice.token()).await, 404, "M_NOT_FOUND");
    assert_eq!(server.put(&global, alice.token(), json!({"theme": "dark"})).await.0, 200);
    assert_eq!(server.get(&global, alice.token()).await, (200, json!({"theme": "dark"})));
    assert_eq!(server.put(&global, alice.token(), json!({"theme": "light"})).await.0, 200);
    assert_eq!(server.get(&global, alice.token()).await, (200, json!({"theme": "light"})));

    let room = format!("/_matrix/client/v3/user/{me}/rooms/{}/account_data/org.example.note", enc("!room:localhost"));
    assert_eq!(server.put(&room, alice.token(), json!({"note": "hi"})).await.0, 200);
    assert_eq!(server.get(&room, alice.token()).await, (200, json!({"note": "hi"})));
    let other_room =
        format!("/_matrix/client/v3/user/{me}/rooms/{}/account_data/org.example.note", enc("!other:localhost"));
    assert_error(&server.get(&other_room, alice.token()).await, 404, "M_NOT_FOUND");

    let push_rules = format!("/_matrix/client/v3/user/{me}/account_data/m.push_rules");
    assert_error(&server.put(&push_rules, alice.token(), json!({})).await, 405, "M_BAD_JSON");
    assert_error(&server.put(&global, alice.token(), json!([1, 2])).await, 400, "M_BAD_JSON");

    let bob = server.register("bob", "pw").await;
    assert_error(&server.get(&global, bob.token()).await, 403, "M_FORBIDDEN");
    assert_error(&server.put(&global, bob.token(), json!({})).await, 403, "M_FORBIDDEN");
}

#[tokio::test]
async fn filters_round_trip() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let me = enc(&alice.user_id);
    let filter =
        json!({"room": {"timeline": {"limit": 10, "types": ["m.room.message"]}}, "presence": {"not_types": ["*"]}});
    let created = server.post(&format!("/_matrix/client/v3/user/{me}/filter"), alice.token(), filter.clone()).await;
    assert_eq!(created.0, 200, "{}", created.1);
    let id = created.1["filter_id"].as_str().unwrap();
    let got = server.get(&format!("/_matrix/client/v3/user/{me}/filter/{id}"), alice.token()).await;
    assert_eq!(got.0, 200);
    assert_eq!(got.1["room"]["timeline"]["limit"], 10);
    assert_eq!(got.1["room"]["timeline"]["types"], json!(["m.room.message"]));
    assert_error(
        &server.get(&format!("/_matrix/client/v3/user/{me}/filter/999"), alice.token()).await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &server.get(&format!("/_matrix/client/v3/user/{me}/filter/abc"), alice.token()).await,
        404,
        "M_NOT_FOUND",
    );
    let bob = server.register("bob", "pw").await;
    assert_error(
        &server.get(&format!("/_matrix/client/v3/user/{me}/filter/{id}"), bob.token()).await,
        403,
        "M_FORBIDDEN",
    );
}

#[tokio::test]
async fn push_rules_start_as_the_spec_defaults() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let rules = server.get("/_matrix/client/v3/pushrules/", alice.token()).await;
    assert_eq!(rules.0, 200, "{}", rules.1);
    let override_ids: Vec<&str> =
        rules.1["global"]["override"].as_array().unwrap().iter().map(|r| r["rule_id"].as_str().unwrap()).collect();
    assert_eq!(override_ids.first(), Some(&".m.rule.master"));
    assert!(override_ids.contains(&".m.rule.suppress_notices"));
    assert!(override_ids.contains(&".m.rule.is_user_mention"));
    let underride_ids: Vec<&str> =
        rules.1["global"]["underride"].as_array().unwrap().iter().map(|r| r["rule_id"].as_str().unwrap()).collect();
    assert!(underride_ids.contains(&".m.rule.message"), "{underride_ids:?}");
}
