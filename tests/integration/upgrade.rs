//! Room upgrades: the replacement room, the tombstone, moved aliases and the restricted old room.

use serde_json::{Value, json};

use crate::{
    harness::{Session, TestServer, assert_error, enc},
    room_helpers::{create_room, join, put_state, send_text, state},
};

fn upgrade_path(room_id: &str) -> String {
    format!("/_matrix/client/v3/rooms/{}/upgrade", enc(room_id))
}

async fn content(server: &TestServer, session: &Session, room_id: &str, kind: &str) -> Value {
    let (status, body) = state(server, session, room_id, kind).await;
    assert_eq!(status, 200, "{kind} in {room_id}: {body}");
    body
}

/// Creates a room of version `from` with state worth copying, upgrades it to `to` and checks
/// both rooms.
async fn check_upgrade(from: &str, to: &str) {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let alias = format!("#up{}to{}:localhost", from, to);
    let old = create_room(
        &server,
        &alice,
        json!({"room_version": from, "preset": "public_chat", "visibility": "public", "name": "Old name",
               "topic": "Old topic", "room_alias_name": format!("up{from}to{to}"),
               "creation_content": {"m.federate": false}}),
    )
    .await;
    put_state(&server, &alice, &old, "m.room.avatar", json!({"url": "mxc://localhost/avatar"})).await;
    put_state(&server, &alice, &old, "m.room.guest_access", json!({"guest_access": "can_join"})).await;
    put_state(&server, &alice, &old, "m.room.history_visibility", json!({"history_visibility": "joined"})).await;
    put_state(&server, &alice, &old, "m.room.encryption", json!({"algorithm": "m.megolm.v1.aes-sha2"})).await;
    put_state(&server, &alice, &old, "m.room.server_acl", json!({"allow": ["*"], "deny": ["bad.example"]})).await;
    join(&server, &bob, &old).await;
    let mut power = content(&server, &alice, &old, "m.room.power_levels").await;
    power["users"]["@bob:localhost"] = json!(10);
    power["events"]["m.room.topic"] = json!(10);
    put_state(&server, &alice, &old, "m.room.power_levels", power).await;
    let last = send_text(&server, &alice, &old, "last words").await;

    // Bob lacks the power to send m.room.tombstone.
    let refused = server.post(&upgrade_path(&old), bob.token(), json!({"new_version": to})).await;
    assert_error(&refused, 403, "M_FORBIDDEN");

    let upgraded = server.post(&upgrade_path(&old), alice.token(), json!({"new_version": to})).await;
    assert_eq!(upgraded.0, 200, "{}", upgraded.1);
    let new = upgraded.1["replacement_room"].as_str().expect("replacement_room").to_owned();
    assert_ne!(new, old);

    // The replacement room: version, predecessor, copied state, alice joined.
    let create = content(&server, &alice, &new, "m.room.create").await;
    assert_eq!(create["room_version"], to);
    assert_eq!(create["predecessor"]["room_id"], old);
    assert_eq!(create["predecessor"]["event_id"], last);
    assert_eq!(create["m.federate"], false);
    assert_eq!(create.get("creator").is_some(), to.parse::<u32>().unwrap() < 11, "{create}");
    assert_eq!(content(&server, &alice, &new, "m.room.name").await["name"], "Old name");
    assert_eq!(content(&server, &alice, &new, "m.room.topic").await["topic"], "Old topic");
    assert_eq!(content(&server, &alice, &new, "m.room.avatar").await["url"], "mxc://localhost/avatar");
    assert_eq!(content(&server, &alice, &new, "m.room.join_rules").await["join_rule"], "public");
    assert_eq!(content(&server, &alice, &new, "m.room.guest_access").await["guest_access"], "can_join");
    assert_eq!(content(&server, &alice, &new, "m.room.history_visibility").await["history_visibility"], "joined");
    assert_eq!(content(&server, &alice, &new, "m.room.encryption").await["algorithm"], "m.megolm.v1.aes-sha2");
    assert_eq!(content(&server, &alice, &new, "m.room.server_acl").await["deny"], json!(["bad.example"]));
    assert_eq!(content(&server, &alice, &new, "m.room.canonical_alias").await["alias"], alias);
    let new_power = content(&server, &alice, &new, "m.room.power_levels").await;
    assert_eq!(new_power["users"]["@bob:localhost"], 10);
    assert_eq!(new_power["events"]["m.room.topic"], 10);
    if to == "12" {
        assert!(new_power["users"].get("@alice:localhost").is_none(), "{new_power}");
    } else {
        assert_eq!(new_power["users"]["@alice:localhost"], 100);
    }
    let joined = server.get("/_matrix/client/v3/joined_rooms", alice.token()).await;
    assert!(joined.1["joined_rooms"].as_array().unwrap().contains(&json!(new)), "{}", joined.1);
    // Alice can use her power in the new room; bob can join it.
    put_state(&server, &alice, &new, "m.room.name", json!({"name": "New name"})).await;
    join(&server, &bob, &new).await;

    // The old room: tombstone, no canonical alias, restricted power levels.
    let tombstone = content(&server, &alice, &old, "m.room.tombstone").await;
    assert_eq!(tombstone["replacement_room"], new);
    assert!(tombstone["body"].is_string());
    assert!(content(&server, &alice, &old, "m.room.canonical_alias").await.get("alias").is_none());
    let old_power = content(&server, &alice, &old, "m.room.power_levels").await;
    assert_eq!(old_power["events_default"], 50);
    assert_eq!(old_power["invite"], 50);
    let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/late", enc(&old));
    let late = server.put(&path, bob.token(), json!({"msgtype": "m.text", "body": "too late"})).await;
    assert_error(&late, 403, "M_FORBIDDEN");

    // The alias and the directory listing moved.
    let resolved = server.get(&format!("/_matrix/client/v3/directory/room/{}", enc(&alias)), None).await;
    assert_eq!(resolved.1["room_id"], new);
    let aliases = server.get(&format!("/_matrix/client/v3/rooms/{}/aliases", enc(&new)), alice.token()).await;
    assert_eq!(aliases.1["aliases"], json!([alias]));
    let listed = |room: &str| format!("/_matrix/client/v3/directory/list/room/{}", enc(room));
    assert_eq!(server.get(&listed(&new), None).await.1["visibility"], "public");
    assert_eq!(server.get(&listed(&old), None).await.1["visibility"], "private");
}

#[tokio::test]
async fn upgrade_from_10_to_11() {
    check_upgrade("10", "11").await;
}

#[tokio::test]
async fn upgrade_from_11_to_12() {
    check_upgrade("11", "12").await;
}

#[tokio::test]
async fn upgrade_from_1_to_12() {
    check_upgrade("1", "12").await;
}

#[tokio::test]
async fn upgrade_from_12_to_12_with_additional_creators_and_bans() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let eve = server.register("eve", "pw").await;
    let old = create_room(&server, &alice, json!({"room_version": "12", "preset": "public_chat"})).await;
    join(&server, &eve, &old).await;
    let ban = format!("/_matrix/client/v3/rooms/{}/ban", enc(&old));
    assert_eq!(server.post(&ban, alice.token(), json!({"user_id": eve.user_id, "reason": "spam"})).await.0, 200);

    let body = json!({"new_version": "12", "additional_creators": [bob.user_id]});
    let upgraded = server.post(&upgrade_path(&old), alice.token(), body).await;
    assert_eq!(upgraded.0, 200, "{}", upgraded.1);
    let new = upgraded.1["replacement_room"].as_str().unwrap().to_owned();
    let create = content(&server, &alice, &new, "m.room.create").await;
    assert_eq!(create["additional_creators"], json!([bob.user_id]));
    let power = content(&server, &alice, &new, "m.room.power_levels").await;
    assert!(power["users"].get("@bob:localhost").is_none(), "{power}");
    let eve_member = state(&server, &alice, &new, &format!("m.room.member/{}", enc(&eve.user_id))).await;
    assert_eq!(eve_member.1["membership"], "ban", "{}", eve_member.1);
    let path = format!("/_matrix/client/v3/rooms/{}/join", enc(&new));
    assert_error(&server.post(&path, eve.token(), json!({})).await, 403, "M_FORBIDDEN");
}

#[tokio::test]
async fn upgrade_errors() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = create_room(&server, &alice, json!({"room_version": "10"})).await;

    let unknown_version = server.post(&upgrade_path(&room), alice.token(), json!({"new_version": "999"})).await;
    assert_error(&unknown_version, 400, "M_UNSUPPORTED_ROOM_VERSION");
    let unknown_room = server.post(&upgrade_path("!nope:localhost"), alice.token(), json!({"new_version": "11"})).await;
    assert_error(&unknown_room, 404, "M_NOT_FOUND");
    let outsider = server.post(&upgrade_path(&room), bob.token(), json!({"new_version": "11"})).await;
    assert_error(&outsider, 403, "M_FORBIDDEN");
    let missing = server.post(&upgrade_path(&room), alice.token(), json!({})).await;
    assert_error(&missing, 400, "M_BAD_JSON");
    let no_token = server.post(&upgrade_path(&room), None, json!({"new_version": "11"})).await;
    assert_error(&no_token, 401, "M_MISSING_TOKEN");
    // Nothing was changed by the refused attempts.
    let tombstone = state(&server, &alice, &room, "m.room.tombstone").await;
    assert_error(&tombstone, 404, "M_NOT_FOUND");
}

/// Two identical upgrade requests at once (a client retrying) make one replacement room: the
/// second waits for the first and gets its answer. A later upgrade to another version is a new
/// upgrade.
#[tokio::test]
async fn concurrent_identical_upgrades_make_one_replacement_room() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let old = create_room(&server, &alice, json!({"room_version": "11"})).await;
    let path = upgrade_path(&old);
    let body = json!({"new_version": "12"});
    let (first, second) =
        tokio::join!(server.post(&path, alice.token(), body.clone()), server.post(&path, alice.token(), body));
    assert_eq!(first.0, 200, "{}", first.1);
    assert_eq!(second.0, 200, "{}", second.1);
    assert_eq!(first.1["replacement_room"], second.1["replacement_room"]);
    let tombstone = content(&server, &alice, &old, "m.room.tombstone").await;
    assert_eq!(tombstone["replacement_room"], first.1["replacement_room"]);
    // Alice is in exactly one replacement room (plus the old one).
    let (status, rooms) = server.get("/_matrix/client/v3/joined_rooms", alice.token()).await;
    assert_eq!(status, 200, "{rooms}");
    assert_eq!(rooms["joined_rooms"].as_array().map(Vec::len), Some(2), "{rooms}");
}
