//! An idle incremental `/sync` (one that read the user's rooms and streams and found nothing,
//! then waits) must still see every change that concerns it, although the server now keeps
//! things it read in memory (the user's room list) and skips reading what has not changed.
//! Each case below changes something the shortcut could miss while the user's sync waits or
//! right after an idle sync warmed the copies.

use serde_json::{Value, json};

use crate::{
    harness::{Session, TestServer, enc},
    room_helpers::create_room,
    sync::{events, join, joined, send, since, sync, wakes},
};

/// An idle sync (nothing new), which leaves the copies warm, and its token.
async fn idle(server: &TestServer, who: &Session, token: &str) -> String {
    let body = sync(server, who, &format!("since={token}&timeout=0")).await;
    assert!(body.get("rooms").is_none_or(|r| r["join"].as_object().is_none_or(|j| j.is_empty())), "{body}");
    since(&body)
}

fn membership_in_timeline(section: &Value, user: &str) -> Option<String> {
    events(section, "timeline")
        .iter()
        .rev()
        .find(|e| e["type"] == "m.room.member" && e["state_key"] == user)
        .and_then(|e| e["content"]["membership"].as_str().map(str::to_owned))
}

/// The user's room list changes through other users' requests (a kick, an invite, a ban) and
/// their own (`/forget`): each shows in the next sync although the list was read just before.
#[tokio::test]
async fn room_list_changes_made_by_others_reach_an_idle_sync() {
    let server = TestServer::start().await;
    let alice = server.register("idle_alice", "pw").await;
    let bob = server.register("idle_bob", "pw").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;
    let token = since(&sync(&server, &bob, "").await);
    let token = idle(&server, &bob, &token).await;

    // A kick by alice wakes bob's waiting sync, which shows the room as left.
    let kick = format!("/_matrix/client/v3/rooms/{}/kick", enc(&room));
    let (status, body) = wakes(&server, &bob, &token, async {
        server.post(&kick, alice.token(), json!({"user_id": bob.user_id, "reason": "test"})).await
    })
    .await
    .0;
    assert_eq!(status, 200, "{body}");
    let body = sync(&server, &bob, &format!("since={token}&timeout=0")).await;
    let left = &body["rooms"]["leave"][&room];
    assert_eq!(membership_in_timeline(left, &bob.user_id).as_deref(), Some("leave"), "{body}");
    let token = idle(&server, &bob, &since(&body)).await;

    // A message after the kick is not his to see.
    send(&server, &alice, &room, "after the kick").await;
    let token = idle(&server, &bob, &token).await;

    // An invite from alice shows at once.
    let invite = format!("/_matrix/client/v3/rooms/{}/invite", enc(&room));
    let ((status, _), body) =
        wakes(&server, &bob, &token, server.post(&invite, alice.token(), json!({"user_id": bob.user_id}))).await;
    assert_eq!(status, 200);
    assert!(body["rooms"]["invite"][&room].is_object(), "{body}");
    let token = idle(&server, &bob, &since(&body)).await;

    // He joins again, then is banned: both show.
    join(&server, &bob, &room).await;
    let body = sync(&server, &bob, &format!("since={token}&timeout=0")).await;
    assert!(joined(&body, &room).is_object(), "{body}");
    let token = idle(&server, &bob, &since(&body)).await;
    let ban = format!("/_matrix/client/v3/rooms/{}/ban", enc(&room));
    let ((status, _), body) =
        wakes(&server, &bob, &token, server.post(&ban, alice.token(), json!({"user_id": bob.user_id}))).await;
    assert_eq!(status, 200);
    assert_eq!(membership_in_timeline(&body["rooms"]["leave"][&room], &bob.user_id).as_deref(), Some("ban"), "{body}");
    let token = idle(&server, &bob, &since(&body)).await;

    // Forgetting the room takes it out of initial syncs that ask for left rooms.
    let include_leave = format!("filter={}", enc(&json!({"room": {"include_leave": true}}).to_string()));
    let body = sync(&server, &bob, &include_leave).await;
    assert!(body["rooms"]["leave"][&room].is_object(), "{body}");
    let forget = format!("/_matrix/client/v3/rooms/{}/forget", enc(&room));
    assert_eq!(server.post(&forget, bob.token(), json!({})).await.0, 200);
    let body = sync(&server, &bob, &include_leave).await;
    assert!(body["rooms"]["leave"].get(&room).is_none(), "{body}");
    idle(&server, &bob, &token).await;
}

/// A long-poll listens to the rooms of the room list it read: after the user joins another
/// room (a new list), a message there wakes their next long-poll, and one in a room they left
/// no longer concerns them.
#[tokio::test]
async fn a_long_poll_listens_to_the_rooms_of_the_current_room_list() {
    let server = TestServer::start().await;
    let alice = server.register("list_alice", "pw").await;
    let bob = server.register("list_bob", "pw").await;
    let first = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    let second = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &first).await;
    let token = since(&sync(&server, &bob, "").await);

    // A long-poll woken by the first room (its room list is indexed for the next one).
    let (_, body) = wakes(&server, &bob, &token, send(&server, &alice, &first, "one")).await;
    assert_eq!(events(joined(&body, &first), "timeline").len(), 1, "{body}");
    let token = idle(&server, &bob, &since(&body)).await;

    // He joins the second room: his next long-poll is woken by a message there.
    join(&server, &bob, &second).await;
    let body = sync(&server, &bob, &format!("since={token}&timeout=0")).await;
    assert!(joined(&body, &second).is_object(), "{body}");
    let token = idle(&server, &bob, &since(&body)).await;
    let (_, body) = wakes(&server, &bob, &token, send(&server, &alice, &second, "two")).await;
    let timeline = events(joined(&body, &second), "timeline");
    assert_eq!(timeline.last().map(|e| e["content"]["body"].clone()), Some(json!("two")), "{body}");
    let token = idle(&server, &bob, &since(&body)).await;

    // He leaves the first room; a message there leaves his sync empty, one in the second wakes it.
    let leave = format!("/_matrix/client/v3/rooms/{}/leave", enc(&first));
    assert_eq!(server.post(&leave, bob.token(), json!({})).await.0, 200);
    let token = since(&sync(&server, &bob, &format!("since={token}&timeout=0")).await);
    let token = idle(&server, &bob, &token).await;
    let (_, body) = wakes(&server, &bob, &token, async {
        send(&server, &alice, &first, "not for bob").await;
        send(&server, &alice, &second, "three").await;
    })
    .await;
    assert!(body["rooms"]["join"].get(&first).is_none(), "{body}");
    assert!(joined(&body, &second).is_object(), "{body}");
}

/// Changes that do not move the room event stream, or move it in one room out of hundreds,
/// reach a sync made right after an idle one: a state change (in the timeline), a room tag
/// (room account data), and a new member whose devices become known (`device_lists.changed`,
/// found from the membership changes of the window).
#[tokio::test]
async fn state_room_account_data_and_membership_driven_device_lists_reach_an_idle_sync() {
    let server = TestServer::start().await;
    let alice = server.register("quiet_alice", "pw").await;
    let bob = server.register("quiet_bob", "pw").await;
    let carol = server.register("quiet_carol", "pw").await;
    let mut rooms = Vec::new();
    for _ in 0..3 {
        let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
        join(&server, &bob, &room).await;
        rooms.push(room);
    }
    let room = rooms[1].clone();
    let token = since(&sync(&server, &bob, "").await);
    let token = idle(&server, &bob, &token).await;

    // A topic: the state event in the room's timeline.
    let topic = format!("/_matrix/client/v3/rooms/{}/state/m.room.topic", enc(&room));
    let ((status, _), body) =
        wakes(&server, &bob, &token, server.put(&topic, alice.token(), json!({"topic": "news"}))).await;
    assert_eq!(status, 200);
    let timeline = events(joined(&body, &room), "timeline");
    assert!(timeline.iter().any(|e| e["type"] == "m.room.topic" && e["content"]["topic"] == "news"), "{body}");
    let token = idle(&server, &bob, &since(&body)).await;

    // A tag: the room's account data.
    let tag = format!("/_matrix/client/v3/user/{}/rooms/{}/tags/u.work", enc(&bob.user_id), enc(&room));
    let ((status, _), body) = wakes(&server, &bob, &token, server.put(&tag, bob.token(), json!({"order": 0.5}))).await;
    assert_eq!(status, 200);
    let account_data = events(joined(&body, &room), "account_data");
    assert!(account_data.iter().any(|e| e["type"] == "m.tag" && e["content"]["tags"]["u.work"].is_object()), "{body}");
    let token = idle(&server, &bob, &since(&body)).await;

    // Carol, who has keys and shared no room with bob, joins one of his rooms: her devices
    // are now his to track.
    let keys = json!({"device_keys": {"user_id": carol.user_id, "device_id": carol.device_id,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2"], "keys": {}}});
    assert_eq!(server.post("/_matrix/client/v3/keys/upload", carol.token(), keys).await.0, 200);
    let token = idle(&server, &bob, &token).await;
    let ((), body) = wakes(&server, &bob, &token, join(&server, &carol, &room)).await;
    let changed = body["device_lists"]["changed"].as_array().cloned().unwrap_or_default();
    assert!(changed.contains(&json!(carol.user_id)), "{body}");
}

/// A woken sync whose room state did not change since its token skips the state (unless
/// lazy-loading asks for the timeline's senders): the state before a limited timeline must still
/// show what changed in the gap, and lazy-loading still sends the senders' member events.
#[tokio::test]
async fn state_before_the_timeline_follows_changes_when_messages_wake_a_sync() {
    let server = TestServer::start().await;
    let alice = server.register("state_alice", "pw").await;
    let bob = server.register("state_bob", "pw").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;
    let limit_one = crate::sync::filter(json!({"room": {"timeline": {"limit": 1}}}));
    let state = |body: &Value| -> Vec<(String, String)> {
        events(joined(body, &room), "state")
            .iter()
            .map(|e| (e["type"].as_str().unwrap_or("").to_owned(), e["state_key"].as_str().unwrap_or("").to_owned()))
            .collect()
    };
    let token = since(&sync(&server, &bob, &limit_one).await);
    let token = idle(&server, &bob, &token).await;

    // Messages only: the timeline has them and the state part is empty.
    let ((), body) = wakes(&server, &bob, &token, send(&server, &alice, &room, "one")).await;
    assert_eq!(events(joined(&body, &room), "timeline").len(), 1, "{body}");
    assert!(state(&body).is_empty(), "{body}");
    let token = since(&body);

    // A topic then a message, seen through a one-event timeline: the topic is in the state.
    let topic = format!("/_matrix/client/v3/rooms/{}/state/m.room.topic", enc(&room));
    assert_eq!(server.put(&topic, alice.token(), json!({"topic": "news"})).await.0, 200);
    send(&server, &alice, &room, "two").await;
    let body = sync(&server, &bob, &format!("{limit_one}&since={token}&timeout=0")).await;
    assert_eq!(joined(&body, &room)["timeline"]["limited"], true, "{body}");
    assert_eq!(state(&body), vec![("m.room.topic".to_owned(), String::new())], "{body}");
    let token = since(&body);

    // A message again: nothing in the state; with lazy-loading, the sender's member event.
    send(&server, &alice, &room, "three").await;
    let body = sync(&server, &bob, &format!("{limit_one}&since={token}&timeout=0")).await;
    assert!(state(&body).is_empty(), "{body}");
    let lazy = crate::sync::filter(
        json!({"room": {"timeline": {"limit": 1}, "state": {"lazy_load_members": true, "include_redundant_members": true}}}),
    );
    let body = sync(&server, &bob, &format!("{lazy}&since={token}&timeout=0")).await;
    assert_eq!(state(&body), vec![("m.room.member".to_owned(), alice.user_id.clone())], "{body}");
}
