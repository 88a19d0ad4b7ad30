//! What users see of each other's keys and receipts across two Trellis servers (`hs-a`, `hs-b`):
//! - Complement's `TestDeviceListUpdates` (the cases with a remote user): `device_lists.changed`
//!   and `left` as users join, leave and rejoin, and `/keys/query` never answering from a
//!   cached device list that may have missed updates (after a leave, and after a rejoin whose
//!   user changed keys meanwhile);
//! - a local user's signature of a remote user's master key (`/keys/signatures/upload`) is
//!   stored and shown to the signer alone;
//! - Complement's `TestThreadReceiptsInSyncMSC4102`: an unthreaded and a threaded read receipt at
//!   one event show as the unthreaded one, locally and on the other server;
//! - a knock on a room of the other server is rescinded by leaving (room versions 10 and 12).

use serde_json::{Value, json};

use crate::{
    federation::start_pair,
    federation_edus::sync_until,
    federation_join::join_via,
    harness::{Session, TestServer, enc},
    keys::{SigningKey, cross_signing_key},
    room_helpers::{create_room, put_state, send_text},
};

fn next_batch(sync: &Value) -> String {
    sync["next_batch"].as_str().expect("next_batch").to_owned()
}

fn listed(sync: &Value, section: &str, user: &str) -> bool {
    sync["device_lists"][section].as_array().is_some_and(|users| users.iter().any(|u| u == user))
}

/// Whether a sync shows `user`'s join to `room` (in its timeline or state).
fn joined_member(sync: &Value, room: &str, user: &str) -> bool {
    ["timeline", "state"].iter().any(|section| {
        sync["rooms"]["join"][room][section]["events"]
            .as_array()
            .is_some_and(|events| events.iter().any(|e| e["state_key"] == user && e["content"]["membership"] == "join"))
    })
}

/// Uploads new device keys (a new ed25519 value each time, as Complement does) for the
/// session's device; returns the ed25519 value.
async fn upload_new_keys(server: &TestServer, session: &Session, round: u32) -> String {
    let device = &session.device_id;
    let ed25519 = format!("ed-{}-{round}", session.user_id);
    let body = json!({"device_keys": {
        "user_id": session.user_id, "device_id": device,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {format!("ed25519:{device}"): ed25519, format!("curve25519:{device}"): format!("curve-{round}")},
        "signatures": {},
    }});
    let (status, response) = server.post("/_matrix/client/v3/keys/upload", session.token(), body).await;
    assert_eq!(status, 200, "{response}");
    ed25519
}

/// `who`'s `/keys/query` of `user`'s device `device`: its ed25519 key.
async fn queried_key(server: &TestServer, who: &Session, user: &Session) -> Value {
    let body = json!({"device_keys": {user.user_id.as_str(): []}, "timeout": 5000});
    let (status, response) = server.post("/_matrix/client/v3/keys/query", who.token(), body).await;
    assert_eq!(status, 200, "{response}");
    response["device_keys"][&user.user_id][&user.device_id]["keys"][format!("ed25519:{}", user.device_id)].clone()
}

async fn leave(server: &TestServer, who: &Session, room: &str) {
    let (status, body) =
        server.post(&format!("/_matrix/client/v3/rooms/{}/leave", enc(room)), who.token(), json!({})).await;
    assert_eq!(status, 200, "{body}");
}

/// The cases of Complement's `TestDeviceListUpdates` with alice on `hs-a` and bob on `hs-b`.
#[tokio::test]
async fn remote_device_lists_follow_joins_leaves_and_rejoins() {
    let pair = start_pair().await;
    let (a, b) = (&pair.a, &pair.b);

    // Bob joins Alice's room, then changes keys.
    let (alice, bob) = (a.register("alice1", "pw").await, b.register("bob1", "pw").await);
    let mut key = upload_new_keys(b, &bob, 1).await;
    let room = create_room(a, &alice, json!({"preset": "public_chat"})).await;
    let since = next_batch(&sync_until(a, &alice, None, |_| true).await);
    assert_eq!(join_via(b, &bob, &room, &["hs-a"]).await.0, 200);
    let sync = sync_until(a, &alice, Some(&since), |s| {
        joined_member(s, &room, &bob.user_id) && listed(s, "changed", &bob.user_id)
    })
    .await;
    assert_eq!(queried_key(a, &alice, &bob).await, key);
    key = upload_new_keys(b, &bob, 2).await;
    sync_until(a, &alice, Some(&next_batch(&sync)), |s| listed(s, "changed", &bob.user_id)).await;
    assert_eq!(queried_key(a, &alice, &bob).await, key);

    // Alice joins Bob's room, then Bob changes keys.
    let (alice, bob) = (a.register("alice2", "pw").await, b.register("bob2", "pw").await);
    let mut key = upload_new_keys(b, &bob, 1).await;
    let room = create_room(b, &bob, json!({"preset": "public_chat"})).await;
    let since = next_batch(&sync_until(a, &alice, None, |_| true).await);
    assert_eq!(join_via(a, &alice, &room, &["hs-b"]).await.0, 200);
    let sync = sync_until(a, &alice, Some(&since), |s| listed(s, "changed", &bob.user_id)).await;
    assert_eq!(queried_key(a, &alice, &bob).await, key);
    key = upload_new_keys(b, &bob, 2).await;
    sync_until(a, &alice, Some(&next_batch(&sync)), |s| listed(s, "changed", &bob.user_id)).await;
    assert_eq!(queried_key(a, &alice, &bob).await, key);

    // Bob leaves Alice's room (then Alice leaves Bob's): Alice's sync lists him in `left`; his
    // later keys come from hs-b, not from a stale cache, and are not announced to her.
    for bob_leaves in [true, false] {
        let n = if bob_leaves { 3 } else { 4 };
        let (alice, bob) = (a.register(&format!("alice{n}"), "pw").await, b.register(&format!("bob{n}"), "pw").await);
        let key = upload_new_keys(b, &bob, 1).await;
        let room = if bob_leaves {
            let room = create_room(a, &alice, json!({"preset": "public_chat"})).await;
            assert_eq!(join_via(b, &bob, &room, &["hs-a"]).await.0, 200);
            room
        } else {
            let room = create_room(b, &bob, json!({"preset": "public_chat"})).await;
            assert_eq!(join_via(a, &alice, &room, &["hs-b"]).await.0, 200);
            room
        };
        let sync = sync_until(a, &alice, None, |s| joined_member(s, &room, &bob.user_id)).await;
        assert_eq!(queried_key(a, &alice, &bob).await, key);
        if bob_leaves {
            leave(b, &bob, &room).await;
        } else {
            leave(a, &alice, &room).await;
        }
        let sync = sync_until(a, &alice, Some(&next_batch(&sync)), |s| listed(s, "left", &bob.user_id)).await;
        let key = upload_new_keys(b, &bob, 2).await;
        assert_eq!(queried_key(a, &alice, &bob).await, key, "bob_leaves: {bob_leaves}");
        let (_, after) =
            a.get(&format!("/_matrix/client/v3/sync?timeout=0&since={}", next_batch(&sync)), alice.token()).await;
        assert!(!listed(&after, "changed", &bob.user_id), "no shared room, no announcement: {after}");
    }

    // Bob leaves, changes keys while away, and rejoins: Alice is told, and her query must not
    // answer from the list cached before he left.
    let (alice, bob) = (a.register("alice5", "pw").await, b.register("bob5", "pw").await);
    let key = upload_new_keys(b, &bob, 1).await;
    let room = create_room(a, &alice, json!({"preset": "public_chat"})).await;
    assert_eq!(join_via(b, &bob, &room, &["hs-a"]).await.0, 200);
    let sync = sync_until(a, &alice, None, |s| joined_member(s, &room, &bob.user_id)).await;
    assert_eq!(queried_key(a, &alice, &bob).await, key);
    leave(b, &bob, &room).await;
    let sync = sync_until(a, &alice, Some(&next_batch(&sync)), |s| listed(s, "left", &bob.user_id)).await;
    let key = upload_new_keys(b, &bob, 2).await;
    assert_eq!(join_via(b, &bob, &room, &["hs-a"]).await.0, 200);
    sync_until(a, &alice, Some(&next_batch(&sync)), |s| listed(s, "changed", &bob.user_id)).await;
    assert_eq!(queried_key(a, &alice, &bob).await, key, "the list cached before Bob left was dropped");
}

/// Alice (hs-a) signs the master key of Bob (hs-b) with her user-signing key: hs-a keeps the
/// signature and shows it to Alice alone; Carol (hs-a) and Bob do not see it.
#[tokio::test]
async fn signatures_of_remote_master_keys_are_kept_for_the_signer() {
    let pair = start_pair().await;
    let (a, b) = (&pair.a, &pair.b);
    let alice = a.register("alice", "pw").await;
    let carol = a.register("carol", "pw").await;
    let bob = b.register("bob", "pw").await;
    let room = create_room(a, &alice, json!({"preset": "public_chat"})).await;
    for (server, who, via) in [(a, &carol, "hs-a"), (b, &bob, "hs-a")] {
        assert_eq!(join_via(server, who, &room, &[via]).await.0, 200);
    }
    let (alice_master, alice_usk, bob_master) = (SigningKey::new(), SigningKey::new(), SigningKey::new());
    let upload = json!({
        "master_key": cross_signing_key(&alice.user_id, "master", &alice_master),
        "user_signing_key": alice_master.sign(&alice.user_id, cross_signing_key(&alice.user_id, "user_signing", &alice_usk)),
    });
    assert_eq!(a.post("/_matrix/client/v3/keys/device_signing/upload", alice.token(), upload).await.0, 200);
    let upload = json!({"master_key": cross_signing_key(&bob.user_id, "master", &bob_master)});
    assert_eq!(b.post("/_matrix/client/v3/keys/device_signing/upload", bob.token(), upload).await.0, 200);

    let query = json!({"device_keys": {bob.user_id.as_str(): []}, "timeout": 5000});
    let mut seen = Value::Null;
    for _ in 0..40 {
        seen = a.post("/_matrix/client/v3/keys/query", alice.token(), query.clone()).await.1;
        if seen["master_keys"][&bob.user_id].is_object() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert!(seen["master_keys"][&bob.user_id].is_object(), "{seen}");

    let signed = alice_usk.sign(&alice.user_id, cross_signing_key(&bob.user_id, "master", &bob_master));
    let bob_key_id = bob_master.key_id();
    let public = bob_key_id.strip_prefix("ed25519:").unwrap();
    let (status, answer) = a
        .post(
            "/_matrix/client/v3/keys/signatures/upload",
            alice.token(),
            json!({bob.user_id.as_str(): {public: signed}}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer["failures"].as_object().is_none_or(|f| f.is_empty()), "{answer}");

    let by_alice = |answer: &Value| answer["master_keys"][&bob.user_id]["signatures"][&alice.user_id].clone();
    let for_alice = a.post("/_matrix/client/v3/keys/query", alice.token(), query.clone()).await.1;
    assert!(by_alice(&for_alice).get(alice_usk.key_id()).is_some(), "{for_alice}");
    let for_carol = a.post("/_matrix/client/v3/keys/query", carol.token(), query.clone()).await.1;
    assert!(for_carol["master_keys"][&bob.user_id].is_object(), "{for_carol}");
    assert!(by_alice(&for_carol).is_null(), "only the signer sees it: {for_carol}");
    let for_bob = b.post("/_matrix/client/v3/keys/query", bob.token(), query).await.1;
    assert!(by_alice(&for_bob).is_null(), "the signature never leaves hs-a: {for_bob}");

    // A signature by a key that is not Alice's user-signing key is refused.
    let forged = SigningKey::new().sign(&alice.user_id, cross_signing_key(&bob.user_id, "master", &bob_master));
    let (status, answer) = a
        .post(
            "/_matrix/client/v3/keys/signatures/upload",
            alice.token(),
            json!({bob.user_id.as_str(): {public: forged}}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["failures"][&bob.user_id][public]["errcode"], "M_INVALID_SIGNATURE", "{answer}");
}

/// Complement's `TestThreadReceiptsInSyncMSC4102`.
#[tokio::test]
async fn an_unthreaded_receipt_wins_over_a_threaded_one_at_the_same_event() {
    let pair = start_pair().await;
    let (a, b) = (&pair.a, &pair.b);
    let alice = a.register("alice", "pw").await;
    let bob = b.register("bob", "pw").await;
    let room = create_room(a, &alice, json!({"preset": "public_chat"})).await;
    assert_eq!(join_via(b, &bob, &room, &["hs-a"]).await.0, 200);
    let root = send_text(a, &alice, &room, "Hello world!").await;
    let (status, sent) = a
        .put(
            &format!("/_matrix/client/v3/rooms/{}/send/m.room.message/thread", enc(&room)),
            alice.token(),
            json!({"msgtype": "m.text", "body": "Start thread!", "m.relates_to": {"event_id": root, "rel_type": "m.thread"}}),
        )
        .await;
    assert_eq!(status, 200, "{sent}");
    let in_thread = sent["event_id"].as_str().unwrap().to_owned();
    let receipt = format!("/_matrix/client/v3/rooms/{}/receipt/m.read/{}", enc(&room), enc(&in_thread));
    assert_eq!(a.post(&receipt, alice.token(), json!({})).await.0, 200);
    assert_eq!(a.post(&receipt, alice.token(), json!({"thread_id": root})).await.0, 200);

    let unthreaded = |sync: &Value| {
        sync["rooms"]["join"][&room]["ephemeral"]["events"].as_array().is_some_and(|events| {
            events.iter().any(|e| {
                let receipt = &e["content"][&in_thread]["m.read"][&alice.user_id];
                e["type"] == "m.receipt" && receipt.is_object() && receipt.get("thread_id").is_none()
            })
        })
    };
    sync_until(a, &alice, None, unthreaded).await;
    sync_until(b, &bob, None, unthreaded).await;
}

/// A user of hs-b knocks on a room of hs-a and takes the knock back by leaving; hs-a records the
/// leave, and the user may knock again.
#[tokio::test]
async fn a_knock_on_a_room_of_another_server_is_rescinded_by_leaving() {
    let pair = start_pair().await;
    let (a, b) = (&pair.a, &pair.b);
    let alice = a.register("alice", "pw").await;
    let charlie = b.register("charlie", "pw").await;
    for version in ["10", "12"] {
        let room = create_room(a, &alice, json!({"preset": "private_chat", "room_version": version})).await;
        put_state(a, &alice, &room, "m.room.join_rules", json!({"join_rule": "knock"})).await;
        let knock = format!("/_matrix/client/v3/knock/{}?via=hs-a", enc(&room));
        assert_eq!(b.post(&knock, charlie.token(), json!({})).await.0, 200, "v{version}");
        let member = format!("/_matrix/client/v3/rooms/{}/state/m.room.member/{}", enc(&room), enc(&charlie.user_id));
        assert_eq!(a.get(&member, alice.token()).await.1["membership"], "knock", "v{version}");

        let since = sync_until(b, &charlie, None, |s| s["rooms"]["knock"][&room].is_object()).await;
        leave(b, &charlie, &room).await;
        assert_eq!(a.get(&member, alice.token()).await.1["membership"], "leave", "v{version}: hs-a has the leave");
        sync_until(b, &charlie, Some(&next_batch(&since)), |s| s["rooms"]["leave"][&room].is_object()).await;
        assert_eq!(b.post(&knock, charlie.token(), json!({})).await.0, 200, "v{version}: knocking again");
        assert_eq!(a.get(&member, alice.token()).await.1["membership"], "knock", "v{version}");
    }
}
