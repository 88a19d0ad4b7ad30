//! The room directory: aliases, room visibility and `/publicRooms`.

use serde_json::{Value, json};

use crate::{
    harness::{TestServer, assert_error, enc},
    room_helpers::{create_room, join, put_state, register_admin, state},
};

fn alias_path(alias: &str) -> String {
    format!("/_matrix/client/v3/directory/room/{}", enc(alias))
}

fn aliases_path(room_id: &str) -> String {
    format!("/_matrix/client/v3/rooms/{}/aliases", enc(room_id))
}

#[tokio::test]
async fn aliases_are_created_resolved_listed_and_deleted_with_permission() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let admin = register_admin(&server, "root").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;

    let put = server.put(&alias_path("#main:localhost"), alice.token(), json!({"room_id": room})).await;
    assert_eq!(put.0, 200, "{}", put.1);
    let got = server.get(&alias_path("#main:localhost"), None).await;
    assert_eq!(got.0, 200, "{}", got.1);
    assert_eq!(got.1["room_id"], room);
    assert_eq!(got.1["servers"], json!(["localhost"]));

    // Taken, foreign, unknown room, not a member, unknown alias.
    let taken = server.put(&alias_path("#main:localhost"), alice.token(), json!({"room_id": room})).await;
    assert_error(&taken, 409, "M_ROOM_IN_USE");
    let foreign = server.put(&alias_path("#main:elsewhere.example"), alice.token(), json!({"room_id": room})).await;
    assert_error(&foreign, 400, "M_INVALID_PARAM");
    let unknown_room =
        server.put(&alias_path("#ghost:localhost"), alice.token(), json!({"room_id": "!nope:localhost"})).await;
    assert_error(&unknown_room, 404, "M_NOT_FOUND");
    let outsider = server.put(&alias_path("#bobs:localhost"), bob.token(), json!({"room_id": room})).await;
    assert_error(&outsider, 403, "M_FORBIDDEN");
    assert_error(&server.get(&alias_path("#missing:localhost"), None).await, 404, "M_NOT_FOUND");
    let no_token = server.put(&alias_path("#x:localhost"), None, json!({"room_id": room})).await;
    assert_error(&no_token, 401, "M_MISSING_TOKEN");

    // Guests may resolve aliases but not manage them.
    let guest = server.post("/_matrix/client/v3/register?kind=guest", None, json!({})).await;
    assert_eq!(guest.0, 200, "{}", guest.1);
    let guest_token = guest.1["access_token"].as_str().expect("guest token");
    assert_eq!(server.get(&alias_path("#main:localhost"), Some(guest_token)).await.1["room_id"], room);
    let by_guest = server.put(&alias_path("#guest:localhost"), Some(guest_token), json!({"room_id": room})).await;
    assert_error(&by_guest, 403, "M_GUEST_ACCESS_FORBIDDEN");
    let by_guest = server.call("DELETE", &alias_path("#main:localhost"), Some(guest_token), None).await;
    assert_error(&by_guest, 403, "M_GUEST_ACCESS_FORBIDDEN");

    // Listing a room's aliases needs membership (the room is not world-readable).
    let listed = server.get(&aliases_path(&room), alice.token()).await;
    assert_eq!(listed.0, 200, "{}", listed.1);
    assert_eq!(listed.1["aliases"], json!(["#main:localhost"]));
    assert_error(&server.get(&aliases_path(&room), bob.token()).await, 403, "M_FORBIDDEN");

    // A member may add an alias; without power they may delete only their own.
    join(&server, &bob, &room).await;
    assert_eq!(server.put(&alias_path("#bobs:localhost"), bob.token(), json!({"room_id": room})).await.0, 200);
    assert_eq!(server.put(&alias_path("#bobs2:localhost"), bob.token(), json!({"room_id": room})).await.0, 200);
    let listed = server.get(&aliases_path(&room), bob.token()).await;
    assert_eq!(listed.1["aliases"].as_array().map(Vec::len), Some(3), "{}", listed.1);
    let refused = server.call("DELETE", &alias_path("#main:localhost"), bob.token(), None).await;
    assert_error(&refused, 403, "M_FORBIDDEN");
    assert_eq!(server.call("DELETE", &alias_path("#bobs:localhost"), bob.token(), None).await.0, 200);
    // The room's admin (power to send m.room.canonical_alias) may delete bob's other alias.
    assert_eq!(server.call("DELETE", &alias_path("#bobs2:localhost"), alice.token(), None).await.0, 200);
    // A server admin may delete any alias, without being in the room.
    assert_eq!(server.call("DELETE", &alias_path("#main:localhost"), admin.token(), None).await.0, 200);
    assert_error(&server.get(&alias_path("#main:localhost"), None).await, 404, "M_NOT_FOUND");
    let gone = server.call("DELETE", &alias_path("#main:localhost"), admin.token(), None).await;
    assert_error(&gone, 404, "M_NOT_FOUND");
    assert_eq!(server.get(&aliases_path(&room), alice.token()).await.1["aliases"], json!([]));

    // Deleting the canonical alias removes it from the room's m.room.canonical_alias event.
    assert_eq!(server.put(&alias_path("#canon:localhost"), alice.token(), json!({"room_id": room})).await.0, 200);
    put_state(&server, &alice, &room, "m.room.canonical_alias", json!({"alias": "#canon:localhost"})).await;
    assert_eq!(server.call("DELETE", &alias_path("#canon:localhost"), alice.token(), None).await.0, 200);
    let canonical = state(&server, &alice, &room, "m.room.canonical_alias").await;
    assert_eq!(canonical.0, 200, "{}", canonical.1);
    assert!(canonical.1.get("alias").is_none(), "{}", canonical.1);

    // World-readable rooms list their aliases to anyone.
    let readable = create_room(
        &server,
        &alice,
        json!({"room_alias_name": "readable", "initial_state": [
            {"type": "m.room.history_visibility", "content": {"history_visibility": "world_readable"}}]}),
    )
    .await;
    let carol = server.register("carol", "pw").await;
    let listed = server.get(&aliases_path(&readable), carol.token()).await;
    assert_eq!(listed.1["aliases"], json!(["#readable:localhost"]), "{}", listed.1);
}

fn visibility_path(room_id: &str) -> String {
    format!("/_matrix/client/v3/directory/list/room/{}", enc(room_id))
}

fn names(response: &Value) -> Vec<String> {
    let mut names: Vec<String> = response["chunk"]
        .as_array()
        .expect("chunk")
        .iter()
        .map(|room| room["name"].as_str().unwrap_or("").to_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn directory_visibility_and_public_rooms() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;

    // Visibility of one room.
    let room = create_room(&server, &alice, json!({"preset": "public_chat", "name": "Quiet"})).await;
    let visibility = server.get(&visibility_path(&room), None).await;
    assert_eq!(visibility.1, json!({"visibility": "private"}));
    assert_error(&server.get(&visibility_path("!nope:localhost"), None).await, 404, "M_NOT_FOUND");
    let refused = server.put(&visibility_path(&room), bob.token(), json!({"visibility": "public"})).await;
    assert_error(&refused, 403, "M_FORBIDDEN");
    join(&server, &bob, &room).await;
    let refused = server.put(&visibility_path(&room), bob.token(), json!({"visibility": "public"})).await;
    assert_error(&refused, 403, "M_FORBIDDEN");
    let unknown = server.put(&visibility_path("!nope:localhost"), alice.token(), json!({"visibility": "public"})).await;
    assert_error(&unknown, 404, "M_NOT_FOUND");
    assert_eq!(server.put(&visibility_path(&room), alice.token(), json!({"visibility": "public"})).await.0, 200);
    assert_eq!(server.get(&visibility_path(&room), None).await.1, json!({"visibility": "public"}));

    // More published rooms: one with every summary field, a space, and an invite-only room,
    // which the directory does not list.
    let alpha = create_room(
        &server,
        &alice,
        json!({"visibility": "public", "preset": "public_chat", "name": "Alpha", "topic": "All about cats",
               "room_alias_name": "alpha"}),
    )
    .await;
    put_state(&server, &alice, &alpha, "m.room.avatar", json!({"url": "mxc://localhost/cat"})).await;
    put_state(&server, &alice, &alpha, "m.room.guest_access", json!({"guest_access": "can_join"})).await;
    put_state(&server, &alice, &alpha, "m.room.history_visibility", json!({"history_visibility": "world_readable"}))
        .await;
    join(&server, &bob, &alpha).await;
    let carol = server.register("carol", "pw").await;
    join(&server, &carol, &alpha).await;
    create_room(
        &server,
        &alice,
        json!({"visibility": "public", "preset": "public_chat", "name": "Space", "creation_content": {"type": "m.space"}}),
    )
    .await;
    create_room(&server, &alice, json!({"visibility": "public", "preset": "private_chat", "name": "Hidden"})).await;

    let all = server.get("/_matrix/client/v3/publicRooms", None).await;
    assert_eq!(all.0, 200, "{}", all.1);
    assert_eq!(names(&all.1), ["Alpha", "Quiet", "Space"]);
    assert_eq!(all.1["total_room_count_estimate"], 3);
    let chunk = all.1["chunk"].as_array().unwrap().iter().find(|r| r["name"] == "Alpha").unwrap().clone();
    assert_eq!(chunk["room_id"], alpha);
    assert_eq!(chunk["topic"], "All about cats");
    assert_eq!(chunk["canonical_alias"], "#alpha:localhost");
    assert_eq!(chunk["avatar_url"], "mxc://localhost/cat");
    assert_eq!(chunk["num_joined_members"], 3);
    assert_eq!(chunk["world_readable"], true);
    assert_eq!(chunk["guest_can_join"], true);
    // `join_rule` defaults to "public", so ruma leaves it out.
    assert!(chunk.get("join_rule").is_none_or(|rule| rule == "public"), "{chunk}");
    assert!(chunk.get("room_type").is_none(), "{chunk}");
    let space = all.1["chunk"].as_array().unwrap().iter().find(|r| r["name"] == "Space").unwrap().clone();
    assert_eq!(space["room_type"], "m.space");
    assert_eq!(space["world_readable"], false);
    assert_eq!(space["guest_can_join"], false);

    // Paging: the biggest room first, tokens both ways.
    let first = server.get("/_matrix/client/v3/publicRooms?limit=1", None).await;
    assert_eq!(names(&first.1), ["Alpha"]);
    assert!(first.1.get("prev_batch").is_none(), "{}", first.1);
    let next = first.1["next_batch"].as_str().expect("next_batch").to_owned();
    let second = server.get(&format!("/_matrix/client/v3/publicRooms?limit=1&since={next}"), None).await;
    assert_eq!(second.1["chunk"].as_array().map(Vec::len), Some(1));
    assert_ne!(names(&second.1), ["Alpha"]);
    let prev = second.1["prev_batch"].as_str().expect("prev_batch").to_owned();
    let back = server.get(&format!("/_matrix/client/v3/publicRooms?limit=1&since={prev}"), None).await;
    assert_eq!(names(&back.1), ["Alpha"]);
    let last = server.post("/_matrix/client/v3/publicRooms", alice.token(), json!({"limit": 2, "since": next})).await;
    assert_eq!(last.1["chunk"].as_array().map(Vec::len), Some(2), "{}", last.1);
    assert!(last.1.get("next_batch").is_none(), "{}", last.1);

    // Filters.
    let post = |body: Value| server.post("/_matrix/client/v3/publicRooms", alice.token(), body);
    assert_eq!(names(&post(json!({"filter": {"generic_search_term": "CATS"}})).await.1), ["Alpha"]);
    assert_eq!(names(&post(json!({"filter": {"generic_search_term": "#alpha:"}})).await.1), ["Alpha"]);
    assert_eq!(names(&post(json!({"filter": {"generic_search_term": "quiet"}})).await.1), ["Quiet"]);
    assert_eq!(names(&post(json!({"filter": {"room_types": ["m.space"]}})).await.1), ["Space"]);
    assert_eq!(names(&post(json!({"filter": {"room_types": [null]}})).await.1), ["Alpha", "Quiet"]);
    let filtered = post(json!({"filter": {"generic_search_term": "nothing matches"}})).await;
    assert_eq!(filtered.1["chunk"], json!([]));
    assert_eq!(filtered.1["total_room_count_estimate"], 3);
    let third_party = post(json!({"third_party_instance_id": "irc"})).await;
    assert_eq!(third_party.1["chunk"], json!([]), "{}", third_party.1);

    // Errors: POST needs a token, tokens must be ours.
    let anonymous = server.post("/_matrix/client/v3/publicRooms", None, json!({})).await;
    assert_error(&anonymous, 401, "M_MISSING_TOKEN");
    // Other servers' directories are asked over federation (federation_directory.rs).
    let local = server.get("/_matrix/client/v3/publicRooms?server=localhost", None).await;
    assert_eq!(local.0, 200, "{}", local.1);
    let bad = server.get("/_matrix/client/v3/publicRooms?since=garbage", None).await;
    assert_error(&bad, 400, "M_INVALID_PARAM");

    // Unpublishing removes the room.
    assert_eq!(server.put(&visibility_path(&alpha), alice.token(), json!({"visibility": "private"})).await.0, 200);
    assert_eq!(names(&server.get("/_matrix/client/v3/publicRooms", None).await.1), ["Quiet", "Space"]);
}
