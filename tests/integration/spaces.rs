//! Spaces: `/hierarchy` walks a space depth first with its links, `max_depth`,
//! `suggested_only`, paging and what each user may see (Complement's `TestClientSpacesSummary`,
//! `TestClientSpacesSummaryJoinRules`, `TestRestrictedRoomsSpacesSummaryLocal`); and
//! `/room_summary` (`TestRoomSummaryAllowedRoomIDs`).

use serde_json::{Value, json};

use crate::{
    harness::{Session, TestServer, assert_error, enc},
    room_helpers::{create_room, join},
};

async fn link(server: &TestServer, who: &Session, parent: &str, child: &str, content: Value) {
    let path = format!("/_matrix/client/v3/rooms/{}/state/m.space.child/{}", enc(parent), enc(child));
    let (status, body) = server.put(&path, who.token(), content).await;
    assert_eq!(status, 200, "{body}");
}

async fn hierarchy(server: &TestServer, who: &Session, root: &str, query: &str) -> Value {
    let (status, body) =
        server.get(&format!("/_matrix/client/v1/rooms/{}/hierarchy?{query}", enc(root)), who.token()).await;
    assert_eq!(status, 200, "{body}");
    body
}

fn room_ids(page: &Value) -> Vec<String> {
    page["rooms"].as_array().unwrap().iter().map(|r| r["room_id"].as_str().unwrap().to_owned()).collect()
}

/// The children each room lists, as `child` IDs in order, keyed by room.
fn links(page: &Value, room: &str) -> Vec<String> {
    let entry = page["rooms"].as_array().unwrap().iter().find(|r| r["room_id"] == room).unwrap();
    entry["children_state"].as_array().unwrap().iter().map(|c| c["state_key"].as_str().unwrap().to_owned()).collect()
}

fn owned(list: &[&String]) -> Vec<String> {
    list.iter().map(|s| (*s).clone()).collect()
}

fn space(name: &str) -> Value {
    json!({"preset": "public_chat", "name": name, "creation_content": {"type": "m.space"}})
}

#[tokio::test]
async fn the_hierarchy_is_walked_depth_first_with_depth_suggestions_and_pages() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let root = create_room(&server, &alice, space("Root")).await;
    let r1 = create_room(&server, &alice, json!({"preset": "public_chat", "name": "R1"})).await;
    let ss1 = create_room(&server, &alice, space("Sub-Space 1")).await;
    let r2 = create_room(&server, &alice, json!({"preset": "public_chat", "name": "R2"})).await;
    let ss2 = create_room(&server, &alice, space("SS2")).await;
    let r3 = create_room(&server, &alice, json!({"preset": "public_chat", "name": "R3"})).await;
    let r4 = create_room(
        &server,
        &bob,
        json!({"preset": "public_chat", "name": "R4", "initial_state": [
            {"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "world_readable"}}
        ]}),
    )
    .await;
    let r5 = create_room(&server, &bob, json!({"preset": "public_chat", "name": "R5"})).await;
    let via = json!(["localhost"]);
    link(&server, &alice, &root, &r1, json!({"via": via, "suggested": true})).await;
    link(&server, &alice, &root, &ss1, json!({"via": via})).await;
    link(&server, &alice, &root, &r2, json!({"via": via, "suggested": true})).await;
    // R2 is no space: its link is not followed.
    link(&server, &alice, &r2, &r5, json!({"via": via})).await;
    link(&server, &alice, &ss1, &ss2, json!({"via": via})).await;
    link(&server, &alice, &ss2, &r3, json!({"via": via})).await;
    link(&server, &alice, &ss2, &r4, json!({"via": via})).await;

    let whole = hierarchy(&server, &alice, &root, "").await;
    assert_eq!(room_ids(&whole), owned(&[&root, &r1, &ss1, &ss2, &r3, &r4, &r2]), "{whole}");
    assert!(whole.get("next_batch").is_none(), "{whole}");
    assert_eq!(links(&whole, &root), owned(&[&r1, &ss1, &r2]));
    assert_eq!(links(&whole, &ss2), owned(&[&r3, &r4]));
    assert_eq!(links(&whole, &r2), Vec::<String>::new(), "only spaces list children");
    let ss1_entry = &whole["rooms"][2];
    assert_eq!(ss1_entry["name"], "Sub-Space 1");
    assert_eq!(ss1_entry["room_type"], "m.space");
    assert_eq!(ss1_entry["num_joined_members"], 1);
    assert_eq!(ss1_entry["children_state"][0]["type"], "m.space.child");
    assert_eq!(ss1_entry["children_state"][0]["content"]["via"], via);
    assert!(ss1_entry["children_state"][0]["origin_server_ts"].is_u64(), "{ss1_entry}");

    let shallow = hierarchy(&server, &alice, &root, "max_depth=1").await;
    assert_eq!(room_ids(&shallow), owned(&[&root, &r1, &ss1, &r2]));
    assert_eq!(links(&shallow, &ss1), owned(&[&ss2]), "the links of the last level are still there");

    let suggested = hierarchy(&server, &alice, &root, "suggested_only=true").await;
    assert_eq!(room_ids(&suggested), owned(&[&root, &r1, &r2]));
    assert_eq!(links(&suggested, &root), owned(&[&r1, &r2]));

    let first = hierarchy(&server, &alice, &root, "limit=4").await;
    assert_eq!(room_ids(&first), owned(&[&root, &r1, &ss1, &ss2]));
    let from = first["next_batch"].as_str().unwrap();
    let second = hierarchy(&server, &alice, &root, &format!("from={from}")).await;
    assert_eq!(room_ids(&second), owned(&[&r3, &r4, &r2]));
    assert!(second.get("next_batch").is_none(), "{second}");

    // A link emptied (its `via` gone) is no link.
    link(&server, &alice, &root, &ss1, json!({})).await;
    let cut = hierarchy(&server, &alice, &root, "").await;
    assert_eq!(room_ids(&cut), owned(&[&root, &r1, &r2]));
    assert_eq!(links(&cut, &root), owned(&[&r1, &r2]));

    assert_error(
        &server.get(&format!("/_matrix/client/v1/rooms/{}/hierarchy?from=x", enc(&root)), alice.token()).await,
        400,
        "M_INVALID_PARAM",
    );
}

#[tokio::test]
async fn the_hierarchy_shows_only_rooms_the_user_may_join_or_see() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let root = create_room(&server, &alice, space("Root")).await;
    let r1 = create_room(&server, &alice, json!({"preset": "private_chat", "name": "R1"})).await;
    let ss1 = create_room(
        &server,
        &alice,
        json!({"preset": "private_chat", "name": "Sub-Space 1", "creation_content": {"type": "m.space"}}),
    )
    .await;
    let r2 = create_room(
        &server,
        &alice,
        json!({"preset": "public_chat", "name": "R2", "initial_state": [
            {"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "world_readable"}}
        ]}),
    )
    .await;
    let r3 = create_room(&server, &alice, json!({"preset": "private_chat", "name": "R3"})).await;
    let via = json!({"via": ["localhost"]});
    for (parent, child) in [(&root, &r1), (&root, &ss1), (&ss1, &r2), (&ss1, &r3)] {
        link(&server, &alice, parent, child, via.clone()).await;
    }
    // A private space is not Bob's to see.
    assert_error(
        &server.get(&format!("/_matrix/client/v1/rooms/{}/hierarchy", enc(&ss1)), bob.token()).await,
        403,
        "M_FORBIDDEN",
    );
    join(&server, &bob, &root).await;
    let page = hierarchy(&server, &bob, &root, "").await;
    assert_eq!(room_ids(&page), owned(&[&root]));
    assert_eq!(links(&page, &root), owned(&[&r1, &ss1]), "the links themselves are the root's state");

    let invite = |room: &str| format!("/_matrix/client/v3/rooms/{}/invite", enc(room));
    for room in [&r1, &r3] {
        assert_eq!(server.post(&invite(room), alice.token(), json!({"user_id": bob.user_id})).await.0, 200);
    }
    assert_eq!(room_ids(&hierarchy(&server, &bob, &root, "").await), owned(&[&root, &r1]));
    assert_eq!(server.post(&invite(&ss1), alice.token(), json!({"user_id": bob.user_id})).await.0, 200);
    assert_eq!(room_ids(&hierarchy(&server, &bob, &root, "").await), owned(&[&root, &r1, &ss1, &r2, &r3]));
}

#[tokio::test]
async fn restricted_rooms_show_to_members_of_the_allowed_room_and_summaries_name_it() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let space_id = create_room(
        &server,
        &alice,
        json!({"preset": "public_chat", "name": "Space", "creation_content": {"type": "m.space"}, "initial_state": [
            {"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "world_readable"}}
        ]}),
    )
    .await;
    let room = create_room(
        &server,
        &alice,
        json!({"preset": "public_chat", "name": "Room", "room_version": "8", "initial_state": [{
            "type": "m.room.join_rules", "state_key": "",
            "content": {"join_rule": "restricted", "allow": [{"type": "m.room_membership", "room_id": space_id}]}
        }]}),
    )
    .await;
    link(&server, &alice, &space_id, &room, json!({"via": ["localhost"]})).await;
    assert_eq!(room_ids(&hierarchy(&server, &bob, &space_id, "").await), owned(&[&space_id]));
    join(&server, &bob, &space_id).await;
    assert_eq!(room_ids(&hierarchy(&server, &bob, &space_id, "").await), owned(&[&space_id, &room]));

    // Summaries: a restricted room names the rooms it allows; others have no such field.
    let summary = |room: &str| format!("/_matrix/client/v1/room_summary/{}", enc(room));
    let restricted = server.get(&summary(&room), alice.token()).await;
    assert_eq!(restricted.0, 200, "{}", restricted.1);
    assert_eq!(restricted.1["room_id"], room);
    assert_eq!(restricted.1["join_rule"], "restricted");
    assert_eq!(restricted.1["allowed_room_ids"], json!([space_id]));
    assert_eq!(restricted.1["membership"], "join");
    assert_eq!(restricted.1["room_version"], "8");
    let private = create_room(&server, &alice, json!({"preset": "private_chat", "name": "Secret"})).await;
    let own = server.get(&summary(&private), alice.token()).await;
    assert_eq!(own.0, 200, "{}", own.1);
    assert!(own.1.get("allowed_room_ids").is_none(), "{}", own.1);
    assert_eq!(own.1["name"], "Secret");
    // Not Bob's to see, the same as unknown; anyone may see the public space's summary.
    assert_error(&server.get(&summary(&private), bob.token()).await, 404, "M_NOT_FOUND");
    assert_error(&server.get(&summary("!unknown:localhost"), bob.token()).await, 404, "M_NOT_FOUND");
    let anonymous = server.get(&summary(&space_id), None).await;
    assert_eq!(anonymous.0, 200, "{}", anonymous.1);
    assert_eq!(anonymous.1["room_type"], "m.space");
    let unstable = format!("/_matrix/client/unstable/im.nheko.summary/rooms/{}/summary", enc(&space_id));
    assert_eq!(server.get(&unstable, bob.token()).await.0, 200);
}
