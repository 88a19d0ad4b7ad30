//! Spaces across servers: a space of `hs-a` whose rooms and subspaces live on both servers is
//! listed whole by `/hierarchy` (Complement's `TestFederatedClientSpaces`); a restricted room of
//! `hs-b` shows under a space of `hs-a` only once `hs-b` can tell the asking server's users may
//! join it, and only to users in the space (`TestRestrictedRoomsSpacesSummaryFederation`); and
//! `/_matrix/federation/v1/hierarchy` refuses unsigned and bad requests.

use serde_json::{Value, json};

use crate::{
    federation::{federation_call, start_pair},
    federation_join::{fake_call, join_via},
    harness::{Session, TestServer, assert_error, enc},
    room_helpers::{create_room, put_state},
};

fn world_readable(space: bool) -> Value {
    let mut body = json!({
        "preset": "public_chat",
        "initial_state": [{"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "world_readable"}}],
    });
    if space {
        body["creation_content"] = json!({"type": "m.space"});
    }
    body
}

async fn link(server: &TestServer, who: &Session, space: &str, child: &str, via: &str) {
    let path = format!("/_matrix/client/v3/rooms/{}/state/m.space.child/{}", enc(space), enc(child));
    let (status, body) = server.put(&path, who.token(), json!({"via": [via]})).await;
    assert_eq!(status, 200, "{body}");
}

async fn listed(server: &TestServer, who: &Session, space: &str) -> Vec<String> {
    let (status, body) = server.get(&format!("/_matrix/client/v1/rooms/{}/hierarchy", enc(space)), who.token()).await;
    assert_eq!(status, 200, "{body}");
    let mut ids: Vec<String> =
        body["rooms"].as_array().unwrap().iter().map(|room| room["room_id"].as_str().unwrap().to_owned()).collect();
    ids.sort();
    ids
}

fn sorted(ids: &[&String]) -> Vec<String> {
    let mut ids: Vec<String> = ids.iter().map(|id| (*id).clone()).collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn a_space_lists_its_rooms_on_both_servers() {
    let pair = start_pair().await;
    let (a, b) = (&pair.a, &pair.b);
    let alice = a.register("alice", "pw").await;
    let bob = b.register("bob", "pw").await;
    let root = create_room(a, &alice, world_readable(true)).await;
    let r1 = create_room(a, &alice, world_readable(false)).await;
    let ss1 = create_room(a, &alice, world_readable(true)).await;
    let r4 = create_room(a, &alice, world_readable(false)).await;
    let r2 = create_room(b, &bob, world_readable(false)).await;
    let ss2 = create_room(b, &bob, world_readable(true)).await;
    let r3 = create_room(b, &bob, world_readable(false)).await;
    link(a, &alice, &root, &r1, "hs-a").await;
    link(a, &alice, &root, &ss1, "hs-a").await;
    link(a, &alice, &root, &r2, "hs-b").await;
    link(a, &alice, &ss1, &ss2, "hs-b").await;
    link(a, &alice, &ss1, &r3, "hs-b").await;
    link(b, &bob, &ss2, &r4, "hs-a").await;
    assert_eq!(listed(a, &alice, &root).await, sorted(&[&root, &r1, &r2, &r3, &r4, &ss1, &ss2]));
}

#[tokio::test]
async fn a_restricted_room_of_another_server_shows_once_that_server_can_tell() {
    let pair = start_pair().await;
    let (a, b) = (&pair.a, &pair.b);
    let alice = a.register("alice", "pw").await;
    let bob = a.register("bob", "pw").await;
    let charlie = b.register("charlie", "pw").await;
    let mut space_body = world_readable(true);
    space_body["name"] = json!("Space");
    let space = create_room(a, &alice, space_body).await;
    let room = create_room(
        b,
        &charlie,
        json!({
            "preset": "public_chat", "name": "Room", "room_version": "8",
            "initial_state": [{"type": "m.room.join_rules", "state_key": "", "content": {
                "join_rule": "restricted",
                "allow": [{"type": "m.room_membership", "room_id": space, "via": ["hs-a"]}],
            }}],
        }),
    )
    .await;
    link(a, &alice, &space, &room, "hs-b").await;
    // hs-b is not in the space: it cannot tell whether hs-a's users may join.
    assert_eq!(listed(a, &alice, &space).await, vec![space.clone()]);
    assert_eq!(listed(a, &bob, &space).await, vec![space.clone()]);
    let joined = join_via(b, &charlie, &space, &["hs-a"]).await;
    assert_eq!(joined.0, 200, "{}", joined.1);
    // Now it can: alice, in the space, sees the room; bob, who is not, does not.
    assert_eq!(listed(a, &alice, &space).await, sorted(&[&space, &room]));
    assert_eq!(listed(a, &bob, &space).await, vec![space.clone()]);
}

#[tokio::test]
async fn federation_hierarchy_answers_what_the_asking_server_may_see() {
    let pair = start_pair().await;
    let a = &pair.a;
    let alice = a.register("alice", "pw").await;
    let space = create_room(a, &alice, world_readable(true)).await;
    let public = create_room(a, &alice, json!({"preset": "public_chat", "name": "Public"})).await;
    let private = create_room(a, &alice, json!({"preset": "private_chat", "name": "Private"})).await;
    link(a, &alice, &space, &public, "hs-a").await;
    link(a, &alice, &space, &private, "hs-a").await;
    put_state(a, &alice, &space, "m.room.name", json!({"name": "The space"})).await;
    let uri = |room: &str| format!("/_matrix/federation/v1/hierarchy/{}", enc(room));

    let answer = fake_call(&pair, a, "GET", &uri(&space), None).await;
    assert_eq!(answer.0, 200, "{}", answer.1);
    assert_eq!(answer.1["room"]["room_id"], space.as_str());
    assert_eq!(answer.1["room"]["name"], "The space");
    assert_eq!(answer.1["room"]["children_state"].as_array().unwrap().len(), 2, "{}", answer.1);
    let children: Vec<&str> =
        answer.1["children"].as_array().unwrap().iter().map(|c| c["room_id"].as_str().unwrap()).collect();
    assert_eq!(children, vec![public.as_str()]);
    assert_eq!(answer.1["inaccessible_children"], json!([private]));

    assert_error(&fake_call(&pair, a, "GET", &uri(&private), None).await, 404, "M_NOT_FOUND");
    assert_error(&fake_call(&pair, a, "GET", &uri("!unknown:hs-a"), None).await, 404, "M_NOT_FOUND");
    let bad = fake_call(&pair, a, "GET", &uri("not-a-room"), None).await;
    assert_eq!(bad.0, 400, "{}", bad.1);
    let bad_flag = fake_call(&pair, a, "GET", &format!("{}?suggested_only=maybe", uri(&space)), None).await;
    assert_eq!(bad_flag.0, 400, "{}", bad_flag.1);
    let unsigned = federation_call(&pair.pki.client(), a, "GET", &uri(&space), None, None).await;
    assert_error(&unsigned, 401, "M_UNAUTHORIZED");
}
