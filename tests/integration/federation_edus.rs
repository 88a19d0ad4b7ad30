//! EDUs and end-to-end encryption keys across two Trellis servers (`hs-a`, `hs-b`) and the fake
//! server `hs-t`: typing, receipts (threaded), presence and to-device messages reach the other
//! server's `/sync` (Complement's `TestRemoteTyping`, `TestRemotePresence`,
//! `TestToDeviceMessagesOverFederation`); EDUs speaking for another server's users, or from a
//! server the room's ACL denies, are dropped (`TestACLsForEDUs`); a to-device message ID is
//! delivered once; device list changes show in `device_lists.changed`, a remote user joining a
//! shared room too (`TestDeviceListsUpdateOverFederation`,
//! `TestUserAppearsInChangedDeviceListOnJoinOverFederation`); `/keys/query` and `/keys/claim`
//! reach the other server and report unreachable ones in `failures`
//! (`TestFederationKeyUploadQuery`).

use serde_json::{Value, json};

use crate::{
    federation::{Pair, federation_call, start_pair},
    federation_join::{fake_call, join_via},
    harness::{Session, TestServer, enc},
    room_helpers::{create_room, put_state, send_text},
};

/// Syncs (long-polling, from `since`) until `done` holds for the response; returns it.
pub(crate) async fn sync_until(
    server: &TestServer,
    session: &Session,
    since: Option<&str>,
    done: impl Fn(&Value) -> bool,
) -> Value {
    for _ in 0..60 {
        let mut path = "/_matrix/client/v3/sync?timeout=500".to_owned();
        if let Some(since) = since {
            path.push_str(&format!("&since={}", enc(since)));
        }
        let (status, body) = server.get(&path, session.token()).await;
        assert_eq!(status, 200, "sync: {body}");
        if done(&body) {
            return body;
        }
    }
    panic!("sync never showed what was expected");
}

fn next_batch(sync: &Value) -> String {
    sync["next_batch"].as_str().expect("next_batch").to_owned()
}

/// Who is typing in `room` according to a sync, if the sync says.
fn typing(sync: &Value, room: &str) -> Option<Vec<String>> {
    sync["rooms"]["join"][room]["ephemeral"]["events"]
        .as_array()?
        .iter()
        .find(|e| e["type"] == "m.typing")
        .map(|e| e["content"]["user_ids"].as_array().unwrap().iter().map(|u| u.as_str().unwrap().to_owned()).collect())
}

fn changed(sync: &Value) -> Vec<String> {
    sync["device_lists"]["changed"]
        .as_array()
        .map(|users| users.iter().map(|u| u.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

fn to_device_events(sync: &Value) -> Vec<Value> {
    sync["to_device"]["events"].as_array().cloned().unwrap_or_default()
}

/// A room on `hs-a` made by alice with bob of `hs-b` joined; both see the join.
async fn shared_room(pair: &Pair) -> (Session, Session, String) {
    let (a, b) = (&pair.a, &pair.b);
    let alice = a.register("alice", "pw").await;
    let bob = b.register("bob", "pw").await;
    let room = create_room(a, &alice, json!({"preset": "public_chat"})).await;
    let joined = join_via(b, &bob, &room, &["hs-a"]).await;
    assert_eq!(joined.0, 200, "{}", joined.1);
    let bob_id = bob.user_id.clone();
    sync_until(a, &alice, None, |s| {
        s["rooms"]["join"][&room]["timeline"]["events"]
            .as_array()
            .is_some_and(|events| events.iter().any(|e| e["state_key"] == bob_id.as_str()))
    })
    .await;
    (alice, bob, room)
}

async fn set_typing(server: &TestServer, session: &Session, room: &str, typing: bool) {
    let path = format!("/_matrix/client/v3/rooms/{}/typing/{}", enc(room), enc(&session.user_id));
    let body = if typing { json!({"typing": true, "timeout": 20000}) } else { json!({"typing": false}) };
    let (status, response) = server.put(&path, session.token(), body).await;
    assert_eq!(status, 200, "{response}");
}

/// A transaction of EDUs from the fake server `hs-t` to `server`.
async fn fake_edus(pair: &Pair, server: &TestServer, txn: &str, edus: Value) -> (u16, Value) {
    let body = json!({ "origin": "hs-t", "origin_server_ts": 1, "pdus": [], "edus": edus });
    fake_call(pair, server, "PUT", &format!("/_matrix/federation/v1/send/{txn}"), Some(&body)).await
}

#[tokio::test]
async fn typing_receipts_and_presence_reach_the_other_server() {
    let pair = start_pair().await;
    let (a, b) = (&pair.a, &pair.b);
    let (alice, bob, room) = shared_room(&pair).await;
    let bob_since = next_batch(&sync_until(b, &bob, None, |s| s["rooms"]["join"][&room].is_object()).await);

    // Typing, both ways, and its end.
    set_typing(a, &alice, &room, true).await;
    let sync = sync_until(b, &bob, Some(&bob_since), |s| {
        typing(s, &room).is_some_and(|users| users == [alice.user_id.clone()])
    })
    .await;
    set_typing(a, &alice, &room, false).await;
    let bob_since = next_batch(
        &sync_until(b, &bob, Some(&next_batch(&sync)), |s| typing(s, &room).is_some_and(|users| users.is_empty()))
            .await,
    );
    set_typing(b, &bob, &room, true).await;
    let sync = sync_until(a, &alice, None, |s| typing(s, &room).is_some_and(|u| u == [bob.user_id.clone()])).await;
    let alice_since = next_batch(&sync);

    // A threaded read receipt of bob reaches alice with its thread; a private one does not.
    let event = send_text(a, &alice, &room, "read me").await;
    sync_until(b, &bob, Some(&bob_since), |s| {
        s["rooms"]["join"][&room]["timeline"]["events"].to_string().contains(&event)
    })
    .await;
    let path = format!("/_matrix/client/v3/rooms/{}/receipt/m.read.private/{}", enc(&room), enc(&event));
    assert_eq!(b.post(&path, bob.token(), json!({})).await.0, 200);
    let path = format!("/_matrix/client/v3/rooms/{}/receipt/m.read/{}", enc(&room), enc(&event));
    let (status, response) = b.post(&path, bob.token(), json!({"thread_id": "main"})).await;
    assert_eq!(status, 200, "{response}");
    let sync = sync_until(a, &alice, Some(&alice_since), |s| {
        s["rooms"]["join"][&room]["ephemeral"]["events"].as_array().is_some_and(|events| {
            events.iter().any(|e| e["type"] == "m.receipt" && e["content"][&event]["m.read"][&bob.user_id].is_object())
        })
    })
    .await;
    let receipt = sync["rooms"]["join"][&room]["ephemeral"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "m.receipt")
        .unwrap()
        .clone();
    assert_eq!(receipt["content"][&event]["m.read"][&bob.user_id]["thread_id"], "main", "{receipt}");
    assert!(receipt["content"][&event]["m.read.private"].is_null(), "{receipt}");
    let alice_since = next_batch(&sync);

    // Presence with a status message.
    let path = format!("/_matrix/client/v3/presence/{}/status", enc(&bob.user_id));
    let (status, response) =
        b.put(&path, bob.token(), json!({"presence": "online", "status_msg": "across servers"})).await;
    assert_eq!(status, 200, "{response}");
    let sync = sync_until(a, &alice, Some(&alice_since), |s| {
        s["presence"]["events"].as_array().is_some_and(|events| {
            events.iter().any(|e| e["sender"] == bob.user_id.as_str() && e["content"]["status_msg"] == "across servers")
        })
    })
    .await;
    let event = sync["presence"]["events"].as_array().unwrap().iter().find(|e| e["sender"] == bob.user_id.as_str());
    assert_eq!(event.unwrap()["content"]["presence"], "online");
    let (status, presence) = a.get(&path, alice.token()).await;
    assert_eq!((status, &presence["status_msg"]), (200, &json!("across servers")), "{presence}");
}

#[tokio::test]
async fn to_device_messages_cross_once_and_edus_only_speak_for_their_origin() {
    let pair = start_pair().await;
    let (a, b) = (&pair.a, &pair.b);
    let (alice, bob, room) = shared_room(&pair).await;
    let bob_since = next_batch(&sync_until(b, &bob, None, |_| true).await);

    // alice sends bob's device a message (and repeats the request: one delivery).
    let path = "/_matrix/client/v3/sendToDevice/org.example.test/txn1";
    let body = json!({"messages": {bob.user_id.as_str(): {bob.device_id.as_str(): {"hello": "bob"}}}});
    assert_eq!(a.put(path, alice.token(), body.clone()).await.0, 200);
    assert_eq!(a.put(path, alice.token(), body).await.0, 200);
    let sync = sync_until(b, &bob, Some(&bob_since), |s| !to_device_events(s).is_empty()).await;
    let events = to_device_events(&sync);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["sender"], alice.user_id.as_str());
    assert_eq!(events[0]["type"], "org.example.test");
    assert_eq!(events[0]["content"]["hello"], "bob");
    let bob_since = next_batch(&sync);

    // From hs-t: the same message ID in two transactions is delivered once; a message claiming
    // a sender of hs-a is dropped; to all devices (`*`) works.
    let message = |sender: &str, id: &str, device: &str| {
        json!([{ "edu_type": "m.direct_to_device", "content": {
            "sender": sender, "type": "org.example.fake", "message_id": id,
            "messages": { bob.user_id.as_str(): { device: { "n": id } } },
        }}])
    };
    assert_eq!(fake_edus(&pair, b, "t1", message("@eve:hs-t", "m1", &bob.device_id)).await.0, 200);
    assert_eq!(fake_edus(&pair, b, "t2", message("@eve:hs-t", "m1", &bob.device_id)).await.0, 200);
    assert_eq!(fake_edus(&pair, b, "t3", message("@mallory:hs-a", "m2", "*")).await.0, 200);
    assert_eq!(fake_edus(&pair, b, "t4", message("@eve:hs-t", "m3", "*")).await.0, 200);
    let sync =
        sync_until(b, &bob, Some(&bob_since), |s| to_device_events(s).iter().any(|e| e["content"]["n"] == "m3")).await;
    let events = to_device_events(&sync);
    let ids: Vec<&str> = events.iter().map(|e| e["content"]["n"].as_str().unwrap()).collect();
    assert_eq!(ids, ["m1", "m3"], "{sync}");
    let bob_since = next_batch(&sync);

    // hs-t speaking for alice (typing, receipt, presence) or for its own user who is not in
    // the room: all dropped, the transaction still answered 200.
    let edus = json!([
        {"edu_type": "m.typing", "content": {"room_id": room, "user_id": alice.user_id, "typing": true}},
        {"edu_type": "m.typing", "content": {"room_id": room, "user_id": "@eve:hs-t", "typing": true}},
        {"edu_type": "m.presence", "content": {"push": [{"user_id": alice.user_id, "presence": "online",
            "status_msg": "forged", "last_active_ago": 1}]}},
        {"edu_type": "m.receipt", "content": {room.as_str(): {"m.read": {alice.user_id.as_str(): {
            "data": {"ts": 1}, "event_ids": ["$forged"]}}}}},
        {"edu_type": "m.device_list_update", "content": {"user_id": alice.user_id, "device_id": "FORGED",
            "stream_id": 1, "prev_id": [], "deleted": false}},
        {"edu_type": "m.unknown", "content": {}},
        "not an object",
    ]);
    let (status, response) = fake_edus(&pair, b, "t5", edus).await;
    assert_eq!(status, 200, "{response}");
    // The EDUs of a transaction are handled before it is answered.
    let sync = sync_until(b, &bob, Some(&bob_since), |_| true).await;
    assert!(typing(&sync, &room).is_none_or(|users| users.is_empty()), "{sync}");
    assert!(!changed(&sync).contains(&alice.user_id), "{sync}");
    assert!(!sync.to_string().contains("forged"), "{sync}");
    let path = format!("/_matrix/client/v3/presence/{}/status", enc(&alice.user_id));
    let (_, presence) = b.get(&path, bob.token()).await;
    assert!(presence["status_msg"].is_null(), "{presence}");
}

#[tokio::test]
async fn edus_from_a_server_the_room_acl_denies_are_dropped() {
    let pair = start_pair().await;
    let (a, b) = (&pair.a, &pair.b);
    let (alice, bob, room) = shared_room(&pair).await;
    // A sentinel room without an ACL.
    let sentinel = create_room(a, &alice, json!({"preset": "public_chat"})).await;
    assert_eq!(join_via(b, &bob, &sentinel, &["hs-a"]).await.0, 200);
    put_state(a, &alice, &room, "m.room.server_acl", json!({"allow": ["*"], "deny": ["hs-b"]})).await;
    let alice_since = next_batch(&sync_until(a, &alice, None, |_| true).await);

    set_typing(b, &bob, &room, true).await;
    set_typing(b, &bob, &sentinel, true).await;
    let sync = sync_until(a, &alice, Some(&alice_since), |s| typing(s, &sentinel).is_some()).await;
    assert_eq!(typing(&sync, &sentinel).unwrap(), std::slice::from_ref(&bob.user_id));
    assert!(typing(&sync, &room).is_none_or(|users| users.is_empty()), "{sync}");
}

/// Uploads device keys (and one one-time key) for the session's device.
async fn upload_keys(server: &TestServer, session: &Session, otk: &str) {
    let device = &session.device_id;
    let body = json!({
        "device_keys": {
            "user_id": session.user_id, "device_id": device,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": { format!("curve25519:{device}"): format!("curve-{device}"), format!("ed25519:{device}"): format!("ed-{device}") },
            "signatures": { session.user_id.as_str(): { format!("ed25519:{device}"): "sig" } },
        },
        "one_time_keys": { format!("signed_curve25519:{otk}"): { "key": format!("otk-{otk}"), "signatures": {} } },
    });
    let (status, response) = server.post("/_matrix/client/v3/keys/upload", session.token(), body).await;
    assert_eq!(status, 200, "{response}");
}

async fn query_keys(server: &TestServer, session: &Session, user: &str) -> Value {
    let body = json!({"device_keys": {user: []}, "timeout": 5000});
    let (status, response) = server.post("/_matrix/client/v3/keys/query", session.token(), body).await;
    assert_eq!(status, 200, "{response}");
    response
}

#[tokio::test]
async fn device_lists_and_keys_cross_servers() {
    let pair = start_pair().await;
    let (a, b) = (&pair.a, &pair.b);
    let alice = a.register("alice", "pw").await;
    let bob = b.register("bob", "pw").await;
    let room = create_room(a, &alice, json!({"preset": "public_chat"})).await;
    let alice_since = next_batch(&sync_until(a, &alice, None, |_| true).await);

    // bob of hs-b, who uploaded keys before, joins: alice sees him in `changed` and gets his
    // keys from hs-b (TestUserAppearsInChangedDeviceListOnJoinOverFederation).
    upload_keys(b, &bob, "DDDD").await;
    assert_eq!(join_via(b, &bob, &room, &["hs-a"]).await.0, 200);
    sync_until(a, &alice, Some(&alice_since), |s| changed(s).contains(&bob.user_id)).await;
    let keys = query_keys(a, &alice, &bob.user_id).await;
    assert!(keys["device_keys"][&bob.user_id][&bob.device_id].is_object(), "{keys}");
    let sync = sync_until(b, &bob, None, |s| s["rooms"]["join"][&room].is_object()).await;
    let bob_since = next_batch(&sync);

    // alice uploads keys: bob's sync lists her, and his query and claim reach hs-a.
    upload_keys(a, &alice, "AAAA").await;
    let sync = sync_until(b, &bob, Some(&bob_since), |s| changed(s).contains(&alice.user_id)).await;
    let bob_since = next_batch(&sync);
    let keys = query_keys(b, &bob, &alice.user_id).await;
    let device = &keys["device_keys"][&alice.user_id][&alice.device_id];
    assert_eq!(device["keys"][format!("curve25519:{}", alice.device_id)], format!("curve-{}", alice.device_id));
    assert!(keys["failures"].as_object().is_none_or(|f| f.is_empty()), "{keys}");
    let claim = json!({"one_time_keys": {alice.user_id.as_str(): {alice.device_id.as_str(): "signed_curve25519"}}});
    let (status, claimed) = b.post("/_matrix/client/v3/keys/claim", bob.token(), claim.clone()).await;
    assert_eq!(status, 200, "{claimed}");
    assert_eq!(
        claimed["one_time_keys"][&alice.user_id][&alice.device_id]["signed_curve25519:AAAA"]["key"], "otk-AAAA",
        "{claimed}"
    );
    let (_, again) = b.post("/_matrix/client/v3/keys/claim", bob.token(), claim).await;
    assert!(again["one_time_keys"][&alice.user_id].is_null(), "{again}");

    // A new device of alice: bob sees the change, and his (cached) query has both devices.
    let (status, login) = a
        .post(
            "/_matrix/client/v3/login",
            None,
            json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"},
                   "password": "pw", "device_id": "NEWDEVICE"}),
        )
        .await;
    assert_eq!(status, 200, "{login}");
    let alice2 = Session::from_response(&login);
    upload_keys(a, &alice2, "BBBB").await;
    let sync = sync_until(b, &bob, Some(&bob_since), |s| changed(s).contains(&alice.user_id)).await;
    let bob_since = next_batch(&sync);
    let keys = query_keys(b, &bob, &alice.user_id).await;
    let devices = keys["device_keys"][&alice.user_id].as_object().unwrap();
    assert!(devices.contains_key(&alice.device_id) && devices.contains_key("NEWDEVICE"), "{keys}");

    // A display name change crosses too (TestFederationKeyUploadQuery).
    let path = format!("/_matrix/client/v3/devices/{}", alice.device_id);
    assert_eq!(a.put(&path, alice.token(), json!({"display_name": "Alice's phone"})).await.0, 200);
    sync_until(b, &bob, Some(&bob_since), |s| changed(s).contains(&alice.user_id)).await;
    let keys = query_keys(b, &bob, &alice.user_id).await;
    assert_eq!(
        keys["device_keys"][&alice.user_id][&alice.device_id]["unsigned"]["device_display_name"], "Alice's phone",
        "{keys}"
    );

    // The device is deleted: gone from the query too.
    let (status, _) = a.post("/_matrix/client/v3/logout", alice2.token(), json!({})).await;
    assert_eq!(status, 200);
    let mut gone = false;
    for _ in 0..40 {
        let keys = query_keys(b, &bob, &alice.user_id).await;
        if !keys["device_keys"][&alice.user_id].as_object().unwrap().contains_key("NEWDEVICE") {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert!(gone, "the deleted device is still listed");

    // A server that cannot be reached is reported in `failures`.
    let body = json!({"device_keys": {"@zed:hs-x": []}, "timeout": 2000});
    let (status, keys) = b.post("/_matrix/client/v3/keys/query", bob.token(), body).await;
    assert_eq!(status, 200, "{keys}");
    assert!(keys["failures"]["hs-x"].is_object(), "{keys}");
    let body = json!({"one_time_keys": {"@zed:hs-x": {"DEV": "signed_curve25519"}}, "timeout": 2000});
    let (status, claimed) = b.post("/_matrix/client/v3/keys/claim", bob.token(), body).await;
    assert_eq!(status, 200, "{claimed}");
    assert!(claimed["failures"]["hs-x"].is_object(), "{claimed}");
}

#[tokio::test]
async fn user_key_endpoints_answer_signed_requests_and_refuse_others() {
    let pair = start_pair().await;
    let a = &pair.a;
    let alice = a.register("alice", "pw").await;
    upload_keys(a, &alice, "CCCC").await;
    let client = pair.pki.client();
    let devices = format!("/_matrix/federation/v1/user/devices/{}", enc(&alice.user_id));

    // Unsigned: refused.
    let unsigned = federation_call(&client, a, "GET", &devices, None, None).await;
    assert_eq!((unsigned.0, unsigned.1["errcode"].as_str()), (401, Some("M_UNAUTHORIZED")), "{}", unsigned.1);

    let (status, answer) = fake_call(&pair, a, "GET", &devices, None).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["user_id"], alice.user_id.as_str());
    assert_eq!(answer["devices"][0]["device_id"], alice.device_id.as_str(), "{answer}");
    assert!(answer["stream_id"].is_u64(), "{answer}");

    let body = json!({"device_keys": {alice.user_id.as_str(): [], "@other:hs-t": []}});
    let (status, answer) = fake_call(&pair, a, "POST", "/_matrix/federation/v1/user/keys/query", Some(&body)).await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer["device_keys"][&alice.user_id][&alice.device_id].is_object(), "{answer}");
    assert!(answer["device_keys"]["@other:hs-t"].is_null(), "{answer}");

    let body = json!({"one_time_keys": {alice.user_id.as_str(): {alice.device_id.as_str(): "signed_curve25519"}}});
    let (status, answer) = fake_call(&pair, a, "POST", "/_matrix/federation/v1/user/keys/claim", Some(&body)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["one_time_keys"][&alice.user_id][&alice.device_id]["signed_curve25519:CCCC"]["key"], "otk-CCCC");

    // Bad input: Matrix errors, never a 500.
    let (status, answer) = fake_call(&pair, a, "GET", "/_matrix/federation/v1/user/devices/not-a-user", None).await;
    assert!((400..500).contains(&status), "{status} {answer}");
    let (status, _) = fake_call(&pair, a, "GET", "/_matrix/federation/v1/user/devices/@nobody:hs-a", None).await;
    assert_eq!(status, 404);
    let (status, _) = fake_call(&pair, a, "GET", "/_matrix/federation/v1/user/devices/@someone:hs-t", None).await;
    assert_eq!(status, 400);
    let body = json!({"device_keys": "nope"});
    let (status, answer) = fake_call(&pair, a, "POST", "/_matrix/federation/v1/user/keys/query", Some(&body)).await;
    assert_eq!((status, answer["errcode"].as_str()), (400, Some("M_BAD_JSON")), "{answer}");
}
