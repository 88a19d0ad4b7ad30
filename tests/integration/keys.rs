//! End-to-end encryption keys over HTTP: upload, query, claim (one-time keys first, then the
//! fallback key), changes, cross-signing keys and signatures, with real ed25519 signatures made
//! by ruma's signing code.

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue,
    serde::Base64,
    signatures::{Ed25519KeyPair, sign_json},
};
use serde_json::{Value, json};

use crate::harness::{Session, TestServer, assert_error};

pub struct SigningKey {
    pair: Ed25519KeyPair,
    public: String,
}

impl SigningKey {
    pub fn new() -> Self {
        let document = Ed25519KeyPair::generate();
        let probe = Ed25519KeyPair::from_der(&document, "probe".into()).unwrap();
        let public = Base64::<ruma::serde::base64::Standard, _>::new(probe.public_key().to_vec()).encode();
        // Cross-signing key IDs are the public key itself.
        let pair = Ed25519KeyPair::from_der(&document, public.clone()).unwrap();
        Self { pair, public }
    }
    pub fn key_id(&self) -> String {
        format!("ed25519:{}", self.public)
    }
    pub fn sign(&self, entity: &str, value: Value) -> Value {
        let mut object: CanonicalJsonObject = serde_json::from_value(value).unwrap();
        sign_json(entity, &self.pair, &mut object).unwrap();
        serde_json::to_value(CanonicalJsonValue::Object(object)).unwrap()
    }
}

pub fn cross_signing_key(user: &str, usage: &str, key: &SigningKey) -> Value {
    json!({"user_id": user, "usage": [usage], "keys": {key.key_id(): key.public}})
}

pub fn device_keys(session: &Session, device_key: &SigningKey) -> Value {
    let unsigned = json!({
        "user_id": session.user_id, "device_id": session.device_id,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {format!("curve25519:{}", session.device_id): "curve-key", format!("ed25519:{}", session.device_id): device_key.public},
    });
    let mut object: CanonicalJsonObject = serde_json::from_value(unsigned).unwrap();
    sign_json(&session.user_id, &device_key.pair, &mut object).unwrap();
    serde_json::to_value(CanonicalJsonValue::Object(object)).unwrap()
}

#[tokio::test]
async fn one_time_keys_are_claimed_once_then_the_fallback_key() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let device_key = SigningKey::new();
    let upload = server
        .post(
            "/_matrix/client/v3/keys/upload",
            alice.token(),
            json!({
                "device_keys": device_keys(&alice, &device_key),
                "one_time_keys": {"signed_curve25519:AAAA": {"key": "otk1"}, "signed_curve25519:AAAB": {"key": "otk2"}},
                "fallback_keys": {"signed_curve25519:FFFF": {"key": "fallback", "fallback": true}},
            }),
        )
        .await;
    assert_eq!(upload.0, 200, "{}", upload.1);
    assert_eq!(upload.1["one_time_key_counts"]["signed_curve25519"], 2);

    let conflict = server
        .post(
            "/_matrix/client/v3/keys/upload",
            alice.token(),
            json!({"one_time_keys": {"signed_curve25519:AAAA": {"key": "different"}}}),
        )
        .await;
    assert_error(&conflict, 400, "M_INVALID_PARAM");

    let query = server
        .post("/_matrix/client/v3/keys/query", bob.token(), json!({"device_keys": {alice.user_id.clone(): []}}))
        .await;
    assert_eq!(query.0, 200, "{}", query.1);
    let keys = &query.1["device_keys"][&alice.user_id][&alice.device_id];
    assert_eq!(keys["keys"][format!("ed25519:{}", alice.device_id)], device_key.public);
    assert!(keys["signatures"][&alice.user_id].is_object());

    let claim_body = json!({"one_time_keys": {alice.user_id.clone(): {alice.device_id.clone(): "signed_curve25519"}}});
    let mut claimed = Vec::new();
    for _ in 0..4 {
        let claim = server.post("/_matrix/client/v3/keys/claim", bob.token(), claim_body.clone()).await;
        assert_eq!(claim.0, 200, "{}", claim.1);
        let by_id = claim.1["one_time_keys"][&alice.user_id][&alice.device_id].as_object().unwrap().clone();
        claimed.push(by_id.values().next().unwrap()["key"].as_str().unwrap().to_owned());
    }
    claimed[..2].sort();
    assert_eq!(claimed, vec!["otk1", "otk2", "fallback", "fallback"]);
    let counts = server.post("/_matrix/client/v3/keys/upload", alice.token(), json!({})).await;
    assert_eq!(counts.1["one_time_key_counts"].get("signed_curve25519").and_then(Value::as_u64).unwrap_or(0), 0);

    let remote = server
        .post("/_matrix/client/v3/keys/query", bob.token(), json!({"device_keys": {"@eve:elsewhere.example": []}}))
        .await;
    assert!(remote.1["failures"]["elsewhere.example"].is_object(), "{}", remote.1);
    let unknown = server
        .post(
            "/_matrix/client/v3/keys/claim",
            bob.token(),
            json!({"one_time_keys": {alice.user_id.clone(): {"NODEVICE": "signed_curve25519"}}}),
        )
        .await;
    assert_eq!(unknown.0, 200);
    assert!(unknown.1["one_time_keys"].get(&alice.user_id).is_none(), "{}", unknown.1);

    // Deleting the device removes its keys; the change is reported.
    let challenge = server
        .call("DELETE", &format!("/_matrix/client/v3/devices/{}", alice.device_id), alice.token(), Some(json!({})))
        .await;
    let second = Session::from_response(&server.login("alice", "pw").await.1);
    let session = challenge.1["session"].as_str().unwrap();
    let auth = json!({"auth": {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": "pw", "session": session}});
    assert_eq!(
        server
            .call("DELETE", &format!("/_matrix/client/v3/devices/{}", alice.device_id), alice.token(), Some(auth))
            .await
            .0,
        200
    );
    let after = server
        .post("/_matrix/client/v3/keys/query", second.token(), json!({"device_keys": {alice.user_id.clone(): []}}))
        .await;
    assert!(after.1["device_keys"][&alice.user_id].get(&alice.device_id).is_none(), "{}", after.1);
    let changes = server.get("/_matrix/client/v3/keys/changes?from=0&to=1000000", second.token()).await;
    assert_eq!(changes.1["changed"], json!([alice.user_id]));
    assert_error(
        &server.get("/_matrix/client/v3/keys/changes?from=x&to=y", second.token()).await,
        400,
        "M_INVALID_PARAM",
    );
}

#[tokio::test]
async fn cross_signing_keys_are_checked_and_signatures_merged() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let device_key = SigningKey::new();
    server
        .post("/_matrix/client/v3/keys/upload", alice.token(), json!({"device_keys": device_keys(&alice, &device_key)}))
        .await;

    let (master, self_signing, user_signing) = (SigningKey::new(), SigningKey::new(), SigningKey::new());
    let unsigned_self = cross_signing_key(&alice.user_id, "self_signing", &self_signing);
    let bad = server
        .post(
            "/_matrix/client/v3/keys/device_signing/upload",
            alice.token(),
            json!({"master_key": cross_signing_key(&alice.user_id, "master", &master), "self_signing_key": unsigned_self}),
        )
        .await;
    assert_error(&bad, 400, "M_INVALID_SIGNATURE");

    let upload = json!({
        "master_key": cross_signing_key(&alice.user_id, "master", &master),
        "self_signing_key": master.sign(&alice.user_id, cross_signing_key(&alice.user_id, "self_signing", &self_signing)),
        "user_signing_key": master.sign(&alice.user_id, cross_signing_key(&alice.user_id, "user_signing", &user_signing)),
    });
    let first = server.post("/_matrix/client/v3/keys/device_signing/upload", alice.token(), upload.clone()).await;
    assert_eq!(first.0, 200, "the first upload needs no password: {}", first.1);
    let repeat = server.post("/_matrix/client/v3/keys/device_signing/upload", alice.token(), upload.clone()).await;
    assert_eq!(repeat.0, 200, "repeating the stored keys needs no password: {}", repeat.1);
    // A new user-signing key replaces a stored one: that needs the password.
    let mut upload = upload;
    upload["user_signing_key"] =
        master.sign(&alice.user_id, cross_signing_key(&alice.user_id, "user_signing", &SigningKey::new()));
    let replace = server.post("/_matrix/client/v3/keys/device_signing/upload", alice.token(), upload.clone()).await;
    assert_eq!(replace.0, 401, "replacing needs user-interactive auth: {}", replace.1);
    let mut with_auth = upload;
    with_auth["auth"] = json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": "pw", "session": replace.1["session"]});
    assert_eq!(server.post("/_matrix/client/v3/keys/device_signing/upload", alice.token(), with_auth).await.0, 200);

    // Alice signs her device with her self-signing key; a forged signature fails per key.
    let device = server
        .post("/_matrix/client/v3/keys/query", alice.token(), json!({"device_keys": {alice.user_id.clone(): []}}))
        .await;
    let mut device_object = device.1["device_keys"][&alice.user_id][&alice.device_id].clone();
    device_object.as_object_mut().unwrap().remove("unsigned");
    device_object.as_object_mut().unwrap().remove("signatures");
    let signed_device = self_signing.sign(&alice.user_id, device_object.clone());
    let forged_device = SigningKey::new().sign(&alice.user_id, device_object);
    let signatures = server
        .post(
            "/_matrix/client/v3/keys/signatures/upload",
            alice.token(),
            json!({alice.user_id.clone(): {alice.device_id.clone(): signed_device}}),
        )
        .await;
    assert_eq!(signatures.0, 200, "{}", signatures.1);
    assert!(signatures.1["failures"].as_object().is_none_or(|f| f.is_empty()), "{}", signatures.1);
    let forged = server
        .post(
            "/_matrix/client/v3/keys/signatures/upload",
            alice.token(),
            json!({alice.user_id.clone(): {alice.device_id.clone(): forged_device}}),
        )
        .await;
    assert_eq!(forged.0, 200);
    assert_eq!(forged.1["failures"][&alice.user_id][&alice.device_id]["errcode"], "M_INVALID_SIGNATURE");

    let seen_by_bob = server
        .post("/_matrix/client/v3/keys/query", bob.token(), json!({"device_keys": {alice.user_id.clone(): []}}))
        .await;
    let device_signatures =
        &seen_by_bob.1["device_keys"][&alice.user_id][&alice.device_id]["signatures"][&alice.user_id];
    assert!(device_signatures.get(self_signing.key_id()).is_some(), "cross-signed device: {device_signatures}");
    assert_eq!(seen_by_bob.1["master_keys"][&alice.user_id]["keys"][master.key_id()], master.public);
    assert!(seen_by_bob.1["self_signing_keys"][&alice.user_id].is_object());
    assert!(seen_by_bob.1["user_signing_keys"].get(&alice.user_id).is_none(), "only Alice sees her user-signing key");
    let seen_by_alice = server
        .post("/_matrix/client/v3/keys/query", alice.token(), json!({"device_keys": {alice.user_id.clone(): []}}))
        .await;
    assert!(seen_by_alice.1["user_signing_keys"][&alice.user_id].is_object());

    // Bob cross-signs Alice's master key with his user-signing key.
    let (bob_master, bob_user_signing) = (SigningKey::new(), SigningKey::new());
    let bob_upload = json!({
        "master_key": cross_signing_key(&bob.user_id, "master", &bob_master),
        "user_signing_key": bob_master.sign(&bob.user_id, cross_signing_key(&bob.user_id, "user_signing", &bob_user_signing)),
    });
    assert_eq!(server.post("/_matrix/client/v3/keys/device_signing/upload", bob.token(), bob_upload).await.0, 200);
    let alice_master = bob_user_signing.sign(&bob.user_id, cross_signing_key(&alice.user_id, "master", &master));
    let verified = server
        .post(
            "/_matrix/client/v3/keys/signatures/upload",
            bob.token(),
            json!({alice.user_id.clone(): {master.public.clone(): alice_master}}),
        )
        .await;
    assert!(verified.1["failures"].as_object().is_none_or(|f| f.is_empty()), "{}", verified.1);
    let master_now = server
        .post("/_matrix/client/v3/keys/query", bob.token(), json!({"device_keys": {alice.user_id.clone(): []}}))
        .await;
    assert!(
        master_now.1["master_keys"][&alice.user_id]["signatures"][&bob.user_id]
            .get(bob_user_signing.key_id())
            .is_some(),
        "{}",
        master_now.1
    );
    // Bob's user-signing signature is his alone: Alice does not see it on her own key.
    let for_alice = server
        .post("/_matrix/client/v3/keys/query", alice.token(), json!({"device_keys": {alice.user_id.clone(): []}}))
        .await;
    assert!(for_alice.1["master_keys"][&alice.user_id]["signatures"][&bob.user_id].is_null(), "{}", for_alice.1);
}

#[tokio::test]
async fn to_device_sends_are_idempotent_and_reach_every_device_with_star() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    server.login("bob", "pw").await;
    let body = json!({"messages": {bob.user_id.clone(): {"*": {"hello": "all"}}, "@eve:elsewhere.example": {"DEV": {"x": 1}}}});
    let path = "/_matrix/client/v3/sendToDevice/org.example.test/txn1";
    assert_eq!(server.put(path, alice.token(), body.clone()).await.0, 200);
    assert_eq!(server.put(path, alice.token(), body).await.0, 200, "a repeated transaction is accepted");
    let targeted = json!({"messages": {bob.user_id.clone(): {bob.device_id.clone(): {"hello": "one"}}}});
    assert_eq!(
        server.put("/_matrix/client/v3/sendToDevice/org.example.test/txn2", alice.token(), targeted).await.0,
        200
    );
    let bad = server
        .put("/_matrix/client/v3/sendToDevice/org.example.test/txn3", alice.token(), json!({"messages": 5}))
        .await;
    assert_error(&bad, 400, "M_BAD_JSON");
}

#[tokio::test]
async fn dehydrated_devices_hold_keys_and_collect_to_device_messages() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let base = "/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device";
    assert_error(&server.get(base, alice.token()).await, 404, "M_NOT_FOUND");

    let device_key = SigningKey::new();
    let dehydrated =
        Session { user_id: alice.user_id.clone(), access_token: String::new(), device_id: "DEHYDRATED1".into() };
    let body = |device: &Session| {
        json!({"device_id": device.device_id, "initial_device_display_name": "Dehydrated",
               "device_data": {"algorithm": "org.matrix.msc3814.v2", "device_pickle": "pickle", "nonce": "nonce"},
               "device_keys": device_keys(device, &device_key),
               "one_time_keys": {"signed_curve25519:D1": {"key": "dehydrated-otk"}}})
    };
    let put = server.put(base, alice.token(), body(&dehydrated)).await;
    assert_eq!(put, (200, json!({"device_id": "DEHYDRATED1"})));
    let got = server.get(base, alice.token()).await;
    assert_eq!(got.1["device_id"], "DEHYDRATED1");
    assert_eq!(got.1["device_data"]["device_pickle"], "pickle");
    let query = server
        .post(
            "/_matrix/client/v3/keys/query",
            bob.token(),
            json!({"device_keys": {alice.user_id.clone(): ["DEHYDRATED1"]}}),
        )
        .await;
    assert!(query.1["device_keys"][&alice.user_id]["DEHYDRATED1"].is_object(), "{}", query.1);

    // Using the ID of a live device is refused.
    let live = Session { device_id: alice.device_id.clone(), ..dehydrated.clone() };
    assert_error(&server.put(base, alice.token(), body(&live)).await, 400, "M_INVALID_PARAM");

    // Messages sent to it while no device is online wait for it, and are acknowledged by token.
    let message = json!({"messages": {alice.user_id.clone(): {"DEHYDRATED1": {"room_key": "k"}}}});
    assert_eq!(server.put("/_matrix/client/v3/sendToDevice/m.room.encrypted/d1", bob.token(), message).await.0, 200);
    let events_path = format!("{base}/DEHYDRATED1/events");
    let first = server.post(&events_path, alice.token(), json!({})).await;
    assert_eq!(first.0, 200, "{}", first.1);
    assert_eq!(first.1["events"][0]["sender"], bob.user_id);
    assert_eq!(first.1["events"][0]["content"]["room_key"], "k");
    let next = first.1["next_batch"].as_str().unwrap().to_owned();
    let second = server.post(&events_path, alice.token(), json!({"next_batch": next})).await;
    assert_eq!(second.1["events"], json!([]));
    assert_error(&server.post(&format!("{base}/OTHER/events"), alice.token(), json!({})).await, 404, "M_NOT_FOUND");

    // A new dehydrated device replaces the old one, whose keys go with it.
    let replacement = Session { device_id: "DEHYDRATED2".into(), ..dehydrated.clone() };
    assert_eq!(server.put(base, alice.token(), body(&replacement)).await.0, 200);
    let query = server
        .post("/_matrix/client/v3/keys/query", bob.token(), json!({"device_keys": {alice.user_id.clone(): []}}))
        .await;
    assert!(query.1["device_keys"][&alice.user_id].get("DEHYDRATED1").is_none(), "{}", query.1);
    assert_eq!(server.call("DELETE", base, alice.token(), None).await, (200, json!({"device_id": "DEHYDRATED2"})));
    assert_error(&server.get(base, alice.token()).await, 404, "M_NOT_FOUND");
}

/// One-time keys are claimed in the order they were uploaded, whatever their IDs (MSC4225,
/// Complement's `TestKeyClaimOrdering`).
#[tokio::test]
async fn one_time_keys_are_claimed_oldest_upload_first() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let upload =
        |key_id: &str, key: &str| json!({"one_time_keys": {format!("signed_curve25519:{key_id}"): {"key": key}}});
    for (key_id, key) in [("ZZZ", "first"), ("AAA", "second"), ("MMM", "third")] {
        assert_eq!(server.post("/_matrix/client/v3/keys/upload", alice.token(), upload(key_id, key)).await.0, 200);
    }
    let claim_body = json!({"one_time_keys": {alice.user_id.clone(): {alice.device_id.clone(): "signed_curve25519"}}});
    let mut claimed = Vec::new();
    for _ in 0..3 {
        let claim = server.post("/_matrix/client/v3/keys/claim", bob.token(), claim_body.clone()).await;
        assert_eq!(claim.0, 200, "{}", claim.1);
        let by_id = claim.1["one_time_keys"][&alice.user_id][&alice.device_id].as_object().unwrap().clone();
        claimed.push(by_id.values().next().unwrap()["key"].as_str().unwrap().to_owned());
    }
    assert_eq!(claimed, ["first", "second", "third"]);
    let none = server.post("/_matrix/client/v3/keys/claim", bob.token(), claim_body).await;
    assert!(none.1["one_time_keys"].get(&alice.user_id).is_none(), "{}", none.1);
}
