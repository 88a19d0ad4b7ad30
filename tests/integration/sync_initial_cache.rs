//! What an initial `/sync` served (and so left in the event cache) is not served stale after
//! it changes: events pruned on disk (an erased user's, and the `prev_content` other state events
//! copied from them), a state change and a membership change. Redactions of a served event are
//! covered in `sync_served.rs`.

use serde_json::{Value, json};

use crate::{
    harness::{TestServer, enc},
    room_helpers::{create_room, join, put_state, register_admin, send_text},
    sync::{events, filter, joined, sync},
};

fn find<'a>(events: &[&'a Value], event_id: &str) -> &'a Value {
    events.iter().find(|e| e["event_id"] == event_id).copied().unwrap_or_else(|| panic!("{event_id} in {events:?}"))
}

/// A room's state and timeline events of a fresh initial sync, as `who` is served them.
async fn initial(server: &TestServer, who: &crate::harness::Session, room: &str) -> (Value, Vec<Value>) {
    let body = sync(server, who, &filter(json!({"room": {"timeline": {"limit": 50}}}))).await;
    let section = joined(&body, room);
    let all = events(section, "state").into_iter().chain(events(section, "timeline")).cloned().collect();
    (body.clone(), all)
}

#[tokio::test]
async fn events_pruned_on_disk_are_served_pruned_by_the_next_initial_sync() {
    let server = TestServer::start().await;
    let admin = register_admin(&server, "cacheadmin").await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = create_room(
        &server,
        &alice,
        json!({"preset": "public_chat", "power_level_content_override": {"events": {"m.room.topic": 0}}}),
    )
    .await;
    join(&server, &bob, &room).await;
    put_state(&server, &alice, &room, "m.room.topic", json!({"topic": "alice's topic"})).await;
    let message = send_text(&server, &alice, &room, "alice's words").await;
    // Bob's topic copies Alice's into its `unsigned.prev_content`.
    put_state(&server, &bob, &room, "m.room.topic", json!({"topic": "bob's topic"})).await;

    // Served whole first (and cached).
    let (_, all) = initial(&server, &bob, &room).await;
    assert_eq!(find(&all.iter().collect::<Vec<_>>(), &message)["content"]["body"], "alice's words");
    let bob_topic = all
        .iter()
        .find(|e| e["type"] == "m.room.topic" && e["sender"] == bob.user_id)
        .unwrap_or_else(|| panic!("bob's topic in {all:?}"));
    assert_eq!(bob_topic["unsigned"]["prev_content"]["topic"], "alice's topic", "{bob_topic}");
    let bob_topic_id = bob_topic["event_id"].as_str().expect("event_id").to_owned();

    // The admin erases Alice and prunes her events on disk.
    let (status, body) = server
        .post(
            &format!("/_synapse/admin/v1/deactivate/{}", enc(&alice.user_id)),
            admin.token(),
            json!({"erase": true, "prune_events": true}),
        )
        .await;
    assert_eq!(status, 200, "prune: {body}");

    let (body, all) = initial(&server, &bob, &room).await;
    let all: Vec<&Value> = all.iter().collect();
    assert_eq!(find(&all, &message)["content"], json!({}), "{body}");
    let topic = find(&all, &bob_topic_id);
    assert_eq!(topic["content"]["topic"], "bob's topic", "{topic}");
    assert!(topic["unsigned"]["prev_content"].get("topic").is_none(), "prev_content pruned too: {topic}");
}

#[tokio::test]
async fn state_and_membership_changes_reach_the_next_initial_sync() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let carol = server.register("carol", "pw").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat", "name": "first name"})).await;
    join(&server, &bob, &room).await;
    join(&server, &carol, &room).await;
    send_text(&server, &alice, &room, "hello").await;

    let name_of =
        |all: &[Value]| all.iter().rev().find(|e| e["type"] == "m.room.name").map(|e| e["content"]["name"].clone());
    let membership_of = |all: &[Value], who: &str| {
        all.iter()
            .rev()
            .find(|e| e["type"] == "m.room.member" && e["state_key"] == who)
            .map(|e| e["content"]["membership"].clone())
    };
    let (body, all) = initial(&server, &bob, &room).await;
    assert_eq!(name_of(&all), Some(json!("first name")), "{body}");
    assert_eq!(membership_of(&all, &carol.user_id), Some(json!("join")), "{body}");
    assert_eq!(joined(&body, &room)["summary"]["m.joined_member_count"], 3, "{body}");

    // The name changes and Carol leaves: the next initial sync shows both.
    put_state(&server, &alice, &room, "m.room.name", json!({"name": "second name"})).await;
    let leave = format!("/_matrix/client/v3/rooms/{}/leave", enc(&room));
    assert_eq!(server.post(&leave, carol.token(), json!({})).await.0, 200);
    let (body, all) = initial(&server, &bob, &room).await;
    assert_eq!(name_of(&all), Some(json!("second name")), "{body}");
    assert_eq!(membership_of(&all, &carol.user_id), Some(json!("leave")), "{body}");
    assert_eq!(joined(&body, &room)["summary"]["m.joined_member_count"], 2, "{body}");

    // A state-only (no filter) initial sync agrees.
    let body = sync(&server, &bob, "").await;
    let section = joined(&body, &room);
    let all: Vec<Value> = events(section, "state").into_iter().chain(events(section, "timeline")).cloned().collect();
    assert_eq!(name_of(&all), Some(json!("second name")), "{body}");
}
