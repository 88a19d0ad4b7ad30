//! EDUs and keys between Trellis and a real Synapse: typing both ways, a to-device message from
//! Trellis to a Synapse device, and key uploads, queries and claims across the two, with each
//! side's `device_lists.changed` naming the other's user. Skipped without
//! `TRELLIS_SYNAPSE_PYTHON` (see `peer_synapse.rs`).

use serde_json::{Value, json};

use crate::{
    federation_edus::sync_until,
    harness::enc,
    peer_synapse::{Peers, Synapse, synapse_and_trellis},
    room_helpers::create_room,
};

/// Syncs on Synapse, each sync from the last one's `next_batch` (Synapse may answer a repeated
/// request from its cache), until `done` holds for a response; returns it.
async fn synapse_sync_until(
    synapse: &Synapse,
    token: &str,
    since: Option<&str>,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let mut since = since.map(str::to_owned);
    for _ in 0..60 {
        let mut path = "/_matrix/client/v3/sync?timeout=500".to_owned();
        if let Some(since) = &since {
            path.push_str(&format!("&since={}", enc(since)));
        }
        let (status, body) = synapse.client_get(&path, token).await;
        assert_eq!(status, 200, "Synapse sync: {body}");
        if done(&body) {
            return body;
        }
        since = body["next_batch"].as_str().map(str::to_owned);
    }
    panic!("Synapse sync never showed what was expected");
}

fn typing_users(sync: &Value, room: &str) -> Vec<String> {
    sync["rooms"]["join"][room]["ephemeral"]["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["type"] == "m.typing")
        .flat_map(|e| e["content"]["user_ids"].as_array().cloned().unwrap_or_default())
        .filter_map(|u| u.as_str().map(str::to_owned))
        .collect()
}

fn changed(sync: &Value) -> Vec<String> {
    sync["device_lists"]["changed"]
        .as_array()
        .map(|users| users.iter().filter_map(|u| u.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

fn device_keys(user: &str, device: &str, otk: &str) -> Value {
    json!({
        "device_keys": {
            "user_id": user, "device_id": device,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": { format!("curve25519:{device}"): format!("curve-{device}"), format!("ed25519:{device}"): format!("ed-{device}") },
            "signatures": { user: { format!("ed25519:{device}"): "sig" } },
        },
        "one_time_keys": { format!("signed_curve25519:{otk}"): { "key": format!("otk-{otk}"), "signatures": {} } },
    })
}

#[tokio::test]
async fn synapse_and_trellis_exchange_typing_to_device_messages_and_keys() {
    let Some(Peers { synapse, trellis, trellis_name, .. }) = synapse_and_trellis().await else { return };
    let alice = trellis.register("alice", "pw").await;
    let sam = synapse.register("sam").await;
    let sam_id = format!("@sam:{}", synapse.server_name);
    let (_, whoami) = synapse.client_get("/_matrix/client/v3/account/whoami", &sam).await;
    let sam_device = whoami["device_id"].as_str().expect("device_id").to_owned();

    let room = create_room(&trellis, &alice, json!({"preset": "public_chat"})).await;
    let alice_since = sync_until(&trellis, &alice, None, |_| true).await["next_batch"].as_str().unwrap().to_owned();
    let joined = synapse
        .client_post(&format!("/_matrix/client/v3/join/{}?server_name={trellis_name}", enc(&room)), &sam, json!({}))
        .await;
    assert_eq!(joined.0, 200, "{}", joined.1);
    // Sam's join puts him in alice's `changed`.
    let sync = sync_until(&trellis, &alice, Some(&alice_since), |s| changed(s).contains(&sam_id)).await;
    let alice_since = sync["next_batch"].as_str().unwrap().to_owned();
    let sam_since =
        synapse_sync_until(&synapse, &sam, None, |s| s["rooms"]["join"][&room].is_object()).await["next_batch"]
            .as_str()
            .unwrap()
            .to_owned();

    // Typing: Synapse to Trellis, and Trellis to Synapse.
    let path = format!("/_matrix/client/v3/rooms/{}/typing/{}", enc(&room), enc(&sam_id));
    assert_eq!(synapse.client_put(&path, &sam, json!({"typing": true, "timeout": 20000})).await.0, 200);
    sync_until(&trellis, &alice, Some(&alice_since), |s| typing_users(s, &room).contains(&sam_id)).await;
    let path = format!("/_matrix/client/v3/rooms/{}/typing/{}", enc(&room), enc(&alice.user_id));
    assert_eq!(trellis.put(&path, alice.token(), json!({"typing": true, "timeout": 20000})).await.0, 200);
    let sync =
        synapse_sync_until(&synapse, &sam, Some(&sam_since), |s| typing_users(s, &room).contains(&alice.user_id)).await;
    let sam_since = sync["next_batch"].as_str().unwrap().to_owned();

    // A to-device message from Trellis to Sam's device, delivered once.
    let body = json!({"messages": {sam_id.as_str(): {sam_device.as_str(): {"hello": "sam"}}}});
    let (status, response) =
        trellis.put("/_matrix/client/v3/sendToDevice/org.example.test/txn1", alice.token(), body).await;
    assert_eq!(status, 200, "{response}");
    let sync = synapse_sync_until(&synapse, &sam, Some(&sam_since), |s| {
        s["to_device"]["events"].as_array().is_some_and(|events| !events.is_empty())
    })
    .await;
    let events = sync["to_device"]["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!((&events[0]["sender"], &events[0]["content"]["hello"]), (&json!(alice.user_id), &json!("sam")));
    let sam_since = sync["next_batch"].as_str().unwrap().to_owned();

    // Sam uploads keys: alice's sync names him, and her query and claim reach Synapse.
    let (status, response) =
        synapse.client_post("/_matrix/client/v3/keys/upload", &sam, device_keys(&sam_id, &sam_device, "SAM1")).await;
    assert_eq!(status, 200, "{response}");
    sync_until(&trellis, &alice, Some(&alice_since), |s| changed(s).contains(&sam_id)).await;
    let query = json!({"device_keys": {sam_id.as_str(): []}});
    let (status, keys) = trellis.post("/_matrix/client/v3/keys/query", alice.token(), query).await;
    assert_eq!(status, 200, "{keys}");
    assert_eq!(
        keys["device_keys"][&sam_id][&sam_device]["keys"][format!("curve25519:{sam_device}")],
        format!("curve-{sam_device}"),
        "{keys}"
    );
    let claim = json!({"one_time_keys": {sam_id.as_str(): {sam_device.as_str(): "signed_curve25519"}}});
    let (status, claimed) = trellis.post("/_matrix/client/v3/keys/claim", alice.token(), claim).await;
    assert_eq!(status, 200, "{claimed}");
    assert_eq!(
        claimed["one_time_keys"][&sam_id][&sam_device]["signed_curve25519:SAM1"]["key"], "otk-SAM1",
        "{claimed}"
    );

    // Alice uploads keys: Sam's sync names her (Synapse took the device list update), and his
    // query and claim reach Trellis.
    let (status, response) = trellis
        .post("/_matrix/client/v3/keys/upload", alice.token(), device_keys(&alice.user_id, &alice.device_id, "ALI1"))
        .await;
    assert_eq!(status, 200, "{response}");
    synapse_sync_until(&synapse, &sam, Some(&sam_since), |s| changed(s).contains(&alice.user_id)).await;
    let query = json!({"device_keys": {alice.user_id.as_str(): []}});
    let (status, keys) = synapse.client_post("/_matrix/client/v3/keys/query", &sam, query).await;
    assert_eq!(status, 200, "{keys}");
    assert!(keys["device_keys"][&alice.user_id][&alice.device_id].is_object(), "{keys}");
    let claim = json!({"one_time_keys": {alice.user_id.as_str(): {alice.device_id.as_str(): "signed_curve25519"}}});
    let (status, claimed) = synapse.client_post("/_matrix/client/v3/keys/claim", &sam, claim).await;
    assert_eq!(status, 200, "{claimed}");
    assert_eq!(
        claimed["one_time_keys"][&alice.user_id][&alice.device_id]["signed_curve25519:ALI1"]["key"], "otk-ALI1",
        "{claimed}"
    );
}
