//! A network split between two Trellis servers in one room: each changes the room's state while
//! the other is down (a ban, a power level change, a topic on each side); once both are up
//! again, their queued events cross, each resolves the fork, and both end with the same state.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{
    federation::{Pair, start_federating, start_pair},
    federation_join::{join_via, state_ids},
    harness::{Session, TestServer, enc},
    room_helpers::create_room,
};

async fn put_state(server: &TestServer, who: &Session, room: &str, kind: &str, key: &str, content: Value) {
    let path = format!("/_matrix/client/v3/rooms/{}/state/{kind}/{}", enc(room), enc(key));
    let (status, body) = server.put(&path, who.token(), content).await;
    assert_eq!(status, 200, "{kind}: {body}");
}

async fn content(server: &TestServer, who: &Session, room: &str, kind: &str, key: &str) -> Value {
    let path = format!("/_matrix/client/v3/rooms/{}/state/{kind}/{}", enc(room), enc(key));
    server.get(&path, who.token()).await.1
}

/// Waits until `check` holds, for at most `secs` seconds.
async fn until(secs: u64, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn after_a_split_both_servers_resolve_the_room_to_the_same_state() {
    for version in ["10", "12"] {
        let pair = start_pair().await;
        let Pair { a, b, pki, peers, _dirs, .. } = pair;
        let port = |name: &str| peers.iter().find(|(peer, _)| *peer == name).unwrap().1;
        let alice = a.register("alice", "pw").await;
        let carol = a.register("carol", "pw").await;
        let bob = b.register("bob", "pw").await;
        let dave = b.register("dave", "pw").await;
        let room = create_room(
            &a,
            &alice,
            // From v12 the creator's power is implied and may not be listed.
            json!({"preset": "public_chat", "room_version": version,
            "power_level_content_override": {"users": if version == "12" {
                json!({bob.user_id.clone(): 100})
            } else {
                json!({alice.user_id.clone(): 100, bob.user_id.clone(): 100})
            }}}),
        )
        .await;
        assert_eq!(join_via(&a, &carol, &room, &[]).await.0, 200);
        for user in [&bob, &dave] {
            assert_eq!(join_via(&b, user, &room, &["hs-a"]).await.0, 200, "v{version}");
        }
        until(20, "both servers to agree before the split", async || {
            state_ids(&a, &alice, &room).await == state_ids(&b, &bob, &room).await
        })
        .await;

        // hs-b goes down; hs-a bans Dave and sets its topic. Then hs-a goes down.
        assert_eq!(b.stop(), Some(0));
        let ban = format!("/_matrix/client/v3/rooms/{}/ban", enc(&room));
        assert_eq!(a.post(&ban, alice.token(), json!({"user_id": dave.user_id})).await.0, 200);
        put_state(&a, &alice, &room, "m.room.topic", "", json!({"topic": "topic of hs-a"})).await;
        assert_eq!(a.stop(), Some(0));

        // hs-b comes back alone: it bans Carol, changes the power levels and sets its topic.
        let b = start_federating(&pki, _dirs.1.path(), "hs-b", port("hs-b"), &peers, "");
        assert_eq!(b.post(&ban, bob.token(), json!({"user_id": carol.user_id})).await.0, 200);
        let mut levels = content(&b, &bob, &room, "m.room.power_levels", "").await;
        levels["events_default"] = json!(10);
        put_state(&b, &bob, &room, "m.room.power_levels", "", levels).await;
        put_state(&b, &bob, &room, "m.room.topic", "", json!({"topic": "topic of hs-b"})).await;

        // hs-a comes back: the queued events cross and both resolve the fork.
        let a = start_federating(&pki, _dirs.0.path(), "hs-a", port("hs-a"), &peers, "");
        until(45, "both servers to agree after the split", async || {
            let on_a = state_ids(&a, &alice, &room).await;
            on_a == state_ids(&b, &bob, &room).await && on_a.len() >= 8
        })
        .await;
        for (kind, key) in [
            ("m.room.topic", ""),
            ("m.room.power_levels", ""),
            ("m.room.member", dave.user_id.as_str()),
            ("m.room.member", carol.user_id.as_str()),
        ] {
            let (on_a, on_b) = (content(&a, &alice, &room, kind, key).await, content(&b, &bob, &room, kind, key).await);
            assert_eq!(on_a, on_b, "v{version}: {kind} {key}");
        }
        // Both bans stand: neither side's change undoes the other's.
        assert_eq!(content(&a, &alice, &room, "m.room.member", &dave.user_id).await["membership"], "ban");
        assert_eq!(content(&a, &alice, &room, "m.room.member", &carol.user_id).await["membership"], "ban");
        assert_eq!(content(&a, &alice, &room, "m.room.power_levels", "").await["events_default"], 10, "v{version}");
    }
}
