//! The error paths of the key endpoints, with hand-written JSON: malformed device, one-time and
//! cross-signing keys, bad signatures, a different key under an existing one-time key ID, and
//! claims and queries for devices and users that do not exist.

use serde_json::{Value, json};

use crate::{
    harness::{Session, TestServer, assert_error},
    keys::{SigningKey, cross_signing_key, device_keys},
};

async fn upload(server: &TestServer, who: &Session, body: Value) -> (u16, Value) {
    server.post("/_matrix/client/v3/keys/upload", who.token(), body).await
}

async fn upload_signing(server: &TestServer, who: &Session, body: Value) -> (u16, Value) {
    server.post("/_matrix/client/v3/keys/device_signing/upload", who.token(), body).await
}

#[tokio::test]
async fn malformed_keys_are_refused_and_nothing_is_stored() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let device_key = SigningKey::new();

    // Device keys must name the uploading user and device, and be an object.
    let mut for_bob = device_keys(&alice, &device_key);
    for_bob["user_id"] = json!(bob.user_id);
    assert_error(&upload(&server, &alice, json!({"device_keys": for_bob})).await, 400, "M_BAD_JSON");
    let mut other_device = device_keys(&alice, &device_key);
    other_device["device_id"] = json!("SOMEONEELSE");
    assert_error(&upload(&server, &alice, json!({"device_keys": other_device})).await, 400, "M_BAD_JSON");
    assert_error(&upload(&server, &alice, json!({"device_keys": "not an object"})).await, 400, "M_BAD_JSON");
    // Floats are not canonical JSON.
    let mut with_float = device_keys(&alice, &device_key);
    with_float["extra"] = json!(1.5);
    assert_error(&upload(&server, &alice, json!({"device_keys": with_float})).await, 400, "M_BAD_JSON");

    // One-time and fallback keys: a key ID of the form algorithm:id, a string or key object.
    for bad in [
        json!({"one_time_keys": {"no-colon": {"key": "k"}}}),
        json!({"one_time_keys": {"signed_curve25519:AAAA": 42}}),
        json!({"one_time_keys": {"signed_curve25519:AAAA": {"no_key": "k"}}}),
        json!({"fallback_keys": {"signed_curve25519:FFFF": ["k"]}}),
    ] {
        let refused = upload(&server, &alice, bad.clone()).await;
        assert_eq!(refused.0, 400, "{bad} must be refused: {}", refused.1);
        assert_eq!(refused.1["errcode"], "M_BAD_JSON", "{bad}: {}", refused.1);
    }
    // A refused upload stores none of its keys, not even the well-formed ones.
    let mixed = json!({"one_time_keys": {"signed_curve25519:GOOD": {"key": "fine"}, "signed_curve25519:BAD": 7}});
    assert_error(&upload(&server, &alice, mixed).await, 400, "M_BAD_JSON");
    let counts = upload(&server, &alice, json!({})).await;
    assert_eq!(counts.0, 200, "{}", counts.1);
    assert_eq!(counts.1["one_time_key_counts"].get("signed_curve25519").and_then(Value::as_u64).unwrap_or(0), 0);
    let query = server
        .post("/_matrix/client/v3/keys/query", bob.token(), json!({"device_keys": {alice.user_id.clone(): []}}))
        .await;
    assert_eq!(query.1["device_keys"][&alice.user_id], json!({}), "no device keys were stored: {}", query.1);

    // A different key under an existing one-time key ID is refused; the same key is accepted.
    let first = json!({"one_time_keys": {"signed_curve25519:AAAA": {"key": "original"}}});
    assert_eq!(upload(&server, &alice, first.clone()).await.0, 200);
    assert_eq!(upload(&server, &alice, first).await.0, 200, "re-uploading the same key is fine");
    let different = json!({"one_time_keys": {"signed_curve25519:AAAA": {"key": "different"}}});
    assert_error(&upload(&server, &alice, different).await, 400, "M_INVALID_PARAM");
    let claim = server
        .post(
            "/_matrix/client/v3/keys/claim",
            bob.token(),
            json!({"one_time_keys": {alice.user_id.clone(): {alice.device_id.clone(): "signed_curve25519"}}}),
        )
        .await;
    assert_eq!(claim.1["one_time_keys"][&alice.user_id][&alice.device_id]["signed_curve25519:AAAA"]["key"], "original");

    // Cross-signing keys: the right usage, the uploader's user ID and an ed25519 key.
    let master = SigningKey::new();
    let mut wrong_usage = cross_signing_key(&alice.user_id, "master", &master);
    wrong_usage["usage"] = json!(["self_signing"]);
    let mut wrong_user = cross_signing_key(&alice.user_id, "master", &master);
    wrong_user["user_id"] = json!(bob.user_id);
    let no_ed25519 = json!({"user_id": alice.user_id, "usage": ["master"], "keys": {"curve25519:abc": "abc"}});
    for bad in [wrong_usage, wrong_user, no_ed25519] {
        assert_error(&upload_signing(&server, &alice, json!({"master_key": bad})).await, 400, "M_BAD_JSON");
    }
    // A self-signing key with no master key to check it against.
    let self_signing =
        master.sign(&alice.user_id, cross_signing_key(&alice.user_id, "self_signing", &SigningKey::new()));
    assert_error(
        &upload_signing(&server, &alice, json!({"self_signing_key": self_signing})).await,
        400,
        "M_MISSING_PARAM",
    );
    let query = server
        .post("/_matrix/client/v3/keys/query", bob.token(), json!({"device_keys": {alice.user_id.clone(): []}}))
        .await;
    assert!(query.1["master_keys"].get(&alice.user_id).is_none(), "no master key was stored: {}", query.1);
}

#[tokio::test]
async fn bad_signatures_are_refused() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let device_key = SigningKey::new();
    assert_eq!(upload(&server, &alice, json!({"device_keys": device_keys(&alice, &device_key)})).await.0, 200);
    let (master, self_signing) = (SigningKey::new(), SigningKey::new());

    // A self-signing key signed by some other key than the master key.
    let forged =
        SigningKey::new().sign(&alice.user_id, cross_signing_key(&alice.user_id, "self_signing", &self_signing));
    let refused = upload_signing(
        &server,
        &alice,
        json!({"master_key": cross_signing_key(&alice.user_id, "master", &master), "self_signing_key": forged}),
    )
    .await;
    assert_error(&refused, 400, "M_INVALID_SIGNATURE");
    // A signature that does not verify (the object changed after signing).
    let mut tampered = master.sign(&alice.user_id, cross_signing_key(&alice.user_id, "self_signing", &self_signing));
    tampered["usage"] = json!(["self_signing", "extra"]);
    let refused = upload_signing(
        &server,
        &alice,
        json!({"master_key": cross_signing_key(&alice.user_id, "master", &master), "self_signing_key": tampered}),
    )
    .await;
    assert_error(&refused, 400, "M_INVALID_SIGNATURE");

    let good = json!({
        "master_key": cross_signing_key(&alice.user_id, "master", &master),
        "self_signing_key": master.sign(&alice.user_id, cross_signing_key(&alice.user_id, "self_signing", &self_signing)),
    });
    assert_eq!(upload_signing(&server, &alice, good).await.0, 200);

    // /keys/signatures/upload reports failures per key: a signature of a device that does not
    // exist, and Bob signing Alice's device (only her own keys may sign it).
    let ghost = self_signing.sign(&alice.user_id, json!({"user_id": alice.user_id, "device_id": "GHOST", "keys": {}}));
    let query = server
        .post("/_matrix/client/v3/keys/query", alice.token(), json!({"device_keys": {alice.user_id.clone(): []}}))
        .await;
    let mut device_object = query.1["device_keys"][&alice.user_id][&alice.device_id].clone();
    device_object.as_object_mut().unwrap().remove("unsigned");
    let by_bob = SigningKey::new().sign(&bob.user_id, device_object);
    let signatures = server
        .post(
            "/_matrix/client/v3/keys/signatures/upload",
            alice.token(),
            json!({alice.user_id.clone(): {"GHOST": ghost}}),
        )
        .await;
    assert_eq!(signatures.0, 200, "{}", signatures.1);
    assert_eq!(signatures.1["failures"][&alice.user_id]["GHOST"]["errcode"], "M_INVALID_SIGNATURE");
    let signatures = server
        .post(
            "/_matrix/client/v3/keys/signatures/upload",
            bob.token(),
            json!({alice.user_id.clone(): {alice.device_id.clone(): by_bob}}),
        )
        .await;
    assert_eq!(signatures.0, 200, "{}", signatures.1);
    assert_eq!(signatures.1["failures"][&alice.user_id][&alice.device_id]["errcode"], "M_INVALID_SIGNATURE");
    let query = server
        .post("/_matrix/client/v3/keys/query", bob.token(), json!({"device_keys": {alice.user_id.clone(): []}}))
        .await;
    let device_signatures = &query.1["device_keys"][&alice.user_id][&alice.device_id]["signatures"];
    assert!(device_signatures.get(&bob.user_id).is_none(), "Bob's signature was not stored: {device_signatures}");
}

#[tokio::test]
async fn claims_and_queries_for_unknown_devices_and_users_find_nothing() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    // Alice's device exists but has uploaded no keys.
    let claim = server
        .post(
            "/_matrix/client/v3/keys/claim",
            bob.token(),
            json!({"one_time_keys": {
                alice.user_id.clone(): {alice.device_id.clone(): "signed_curve25519", "NODEVICE": "signed_curve25519"},
                "@nobody:localhost": {"ANY": "signed_curve25519"},
            }}),
        )
        .await;
    assert_eq!(claim.0, 200, "{}", claim.1);
    assert_eq!(claim.1["one_time_keys"], json!({}), "{}", claim.1);
    assert!(claim.1["failures"].as_object().is_none_or(|f| f.is_empty()), "{}", claim.1);

    let query = server
        .post(
            "/_matrix/client/v3/keys/query",
            bob.token(),
            json!({"device_keys": {alice.user_id.clone(): ["NODEVICE"], "@nobody:localhost": []}}),
        )
        .await;
    assert_eq!(query.0, 200, "{}", query.1);
    assert_eq!(query.1["device_keys"][&alice.user_id], json!({}), "{}", query.1);
    assert!(query.1["device_keys"]["@nobody:localhost"].as_object().is_none_or(|d| d.is_empty()), "{}", query.1);
}
