//! Rooms over HTTP: creation in room versions 1, 6, 10, 11 and 12, membership, messages,
//! state, redaction, history visibility, idempotent sends, pagination and the errors.

use serde_json::{Value, json};

use crate::harness::{Session, TestServer, assert_error, enc};

pub async fn create_room(server: &TestServer, who: &Session, body: Value) -> String {
    let (status, response) = server.post("/_matrix/client/v3/createRoom", who.token(), body).await;
    assert_eq!(status, 200, "createRoom: {response}");
    response["room_id"].as_str().unwrap().to_owned()
}

pub async fn send_text(server: &TestServer, who: &Session, room: &str, txn: &str, text: &str) -> (u16, Value) {
    server
        .put(
            &format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}", enc(room)),
            who.token(),
            json!({"msgtype": "m.text", "body": text}),
        )
        .await
}

pub async fn messages(server: &TestServer, who: &Session, room: &str, query: &str) -> (u16, Value) {
    server.get(&format!("/_matrix/client/v3/rooms/{}/messages?{query}", enc(room)), who.token()).await
}

fn bodies(chunk: &Value) -> Vec<String> {
    chunk["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .map(|e| e["content"]["body"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn join(server: &TestServer, who: &Session, room: &str) -> (u16, Value) {
    server.post(&format!("/_matrix/client/v3/rooms/{}/join", enc(room)), who.token(), json!({})).await
}

#[tokio::test]
async fn rooms_work_in_every_tested_version() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    for version in ["1", "6", "10", "11", "12"] {
        let room = create_room(
            &server,
            &alice,
            json!({"room_version": version, "preset": "public_chat", "name": format!("Room {version}"), "topic": "Testing"}),
        )
        .await;
        // Room IDs: `!x:server` before v12, derived from the create event (no server) from v12.
        assert_eq!(room.contains(':'), version != "12", "room id {room} in v{version}");
        assert_eq!(join(&server, &bob, &room).await.0, 200, "bob joins v{version}");

        let (status, sent) = send_text(&server, &alice, &room, &format!("t{version}"), "hello").await;
        assert_eq!(status, 200, "{sent}");
        let event_id = sent["event_id"].as_str().unwrap().to_owned();
        // Event IDs: `$x:server` in v1 and v2, reference hashes from v3.
        assert_eq!(event_id.contains(':'), version == "1", "event id {event_id} in v{version}");

        let (status, page) = messages(&server, &bob, &room, "dir=b&limit=5").await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(bodies(&page), vec!["hello"], "v{version}");

        let name =
            server.get(&format!("/_matrix/client/v3/rooms/{}/state/m.room.name/", enc(&room)), bob.token()).await;
        assert_eq!(name, (200, json!({"name": format!("Room {version}")})));
        // `topic` is written as a rich topic too.
        let topic =
            server.get(&format!("/_matrix/client/v3/rooms/{}/state/m.room.topic/", enc(&room)), bob.token()).await;
        let rich = json!({"m.text": [{"body": "Testing", "mimetype": "text/plain"}]});
        assert_eq!(topic, (200, json!({"topic": "Testing", "m.topic": rich})));
        let state = server.get(&format!("/_matrix/client/v3/rooms/{}/state", enc(&room)), bob.token()).await;
        let types: Vec<&str> = state.1.as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
        for expected in ["m.room.create", "m.room.power_levels", "m.room.join_rules", "m.room.topic", "m.room.member"] {
            assert!(types.contains(&expected), "v{version} state lacks {expected}: {types:?}");
        }
        let create = state.1.as_array().unwrap().iter().find(|e| e["type"] == "m.room.create").unwrap();
        assert_eq!(create["content"]["room_version"], version);

        let joined = server.get(&format!("/_matrix/client/v3/rooms/{}/joined_members", enc(&room)), bob.token()).await;
        assert_eq!(joined.1["joined"].as_object().unwrap().len(), 2, "{}", joined.1);

        // The event is served by ID, and redaction empties its content for everyone.
        let event_path = format!("/_matrix/client/v3/rooms/{}/event/{}", enc(&room), enc(&event_id));
        assert_eq!(server.get(&event_path, bob.token()).await.1["content"]["body"], "hello");
        let redact = server
            .put(
                &format!("/_matrix/client/v3/rooms/{}/redact/{}/r{version}", enc(&room), enc(&event_id)),
                alice.token(),
                json!({"reason": "oops"}),
            )
            .await;
        assert_eq!(redact.0, 200, "{}", redact.1);
        let redacted = server.get(&event_path, bob.token()).await;
        assert_eq!(redacted.1["content"], json!({}), "v{version}: {}", redacted.1);
        assert_eq!(redacted.1["unsigned"]["redacted_because"]["event_id"], redact.1["event_id"]);

        // Bob leaves and can no longer send.
        assert_eq!(
            server.post(&format!("/_matrix/client/v3/rooms/{}/leave", enc(&room)), bob.token(), json!({})).await.0,
            200
        );
        let (status, denied) = send_text(&server, &bob, &room, &format!("late{version}"), "still here?").await;
        assert_eq!(status, 403, "v{version}: {denied}");
        assert_eq!(denied["errcode"], "M_FORBIDDEN");
    }
    let rooms = server.get("/_matrix/client/v3/joined_rooms", alice.token()).await;
    assert_eq!(rooms.1["joined_rooms"].as_array().unwrap().len(), 5);
    assert_eq!(server.get("/_matrix/client/v3/joined_rooms", bob.token()).await.1["joined_rooms"], json!([]));
}

#[tokio::test]
async fn membership_follows_join_rules_and_power() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = create_room(&server, &alice, json!({"preset": "private_chat"})).await;

    let denied = join(&server, &bob, &room).await;
    assert_error(&denied, 403, "M_FORBIDDEN");
    assert!(denied.1["error"].as_str().unwrap().contains("not authorised"), "{}", denied.1);

    let invite = server
        .post(
            &format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)),
            alice.token(),
            json!({"user_id": bob.user_id}),
        )
        .await;
    assert_eq!(invite.0, 200, "{}", invite.1);
    assert_eq!(join(&server, &bob, &room).await.0, 200);

    // Bob (power 0) cannot kick Alice; Alice kicks Bob with a reason.
    let bob_kicks = server
        .post(&format!("/_matrix/client/v3/rooms/{}/kick", enc(&room)), bob.token(), json!({"user_id": alice.user_id}))
        .await;
    assert_error(&bob_kicks, 403, "M_FORBIDDEN");
    let kick = server
        .post(
            &format!("/_matrix/client/v3/rooms/{}/kick", enc(&room)),
            alice.token(),
            json!({"user_id": bob.user_id, "reason": "bye"}),
        )
        .await;
    assert_eq!(kick.0, 200, "{}", kick.1);
    let members =
        server.get(&format!("/_matrix/client/v3/rooms/{}/members?membership=leave", enc(&room)), alice.token()).await;
    let left = &members.1["chunk"][0];
    assert_eq!(left["state_key"], bob.user_id);
    assert_eq!(left["content"]["reason"], "bye");

    // A ban keeps Bob out even when invited; unbanning lets an invite work again.
    let ban = server
        .post(&format!("/_matrix/client/v3/rooms/{}/ban", enc(&room)), alice.token(), json!({"user_id": bob.user_id}))
        .await;
    assert_eq!(ban.0, 200, "{}", ban.1);
    let invite_banned = server
        .post(
            &format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)),
            alice.token(),
            json!({"user_id": bob.user_id}),
        )
        .await;
    assert_error(&invite_banned, 403, "M_FORBIDDEN");
    let unban = server
        .post(&format!("/_matrix/client/v3/rooms/{}/unban", enc(&room)), alice.token(), json!({"user_id": bob.user_id}))
        .await;
    assert_eq!(unban.0, 200, "{}", unban.1);
    let unban_again = server
        .post(&format!("/_matrix/client/v3/rooms/{}/unban", enc(&room)), alice.token(), json!({"user_id": bob.user_id}))
        .await;
    assert_error(&unban_again, 403, "M_FORBIDDEN");
    assert_eq!(
        server
            .post(
                &format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)),
                alice.token(),
                json!({"user_id": bob.user_id})
            )
            .await
            .0,
        200
    );
    assert_eq!(join(&server, &bob, &room).await.0, 200);

    // Forget needs a leave first.
    let forget = server.post(&format!("/_matrix/client/v3/rooms/{}/forget", enc(&room)), bob.token(), json!({})).await;
    assert_eq!(forget.0, 400, "{}", forget.1);
    server.post(&format!("/_matrix/client/v3/rooms/{}/leave", enc(&room)), bob.token(), json!({})).await;
    assert_eq!(
        server.post(&format!("/_matrix/client/v3/rooms/{}/forget", enc(&room)), bob.token(), json!({})).await.0,
        200
    );
}

#[tokio::test]
async fn knocking_works_from_version_7() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let knock_state = json!([{"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}]);
    let old = create_room(&server, &alice, json!({"room_version": "6", "initial_state": knock_state})).await;
    let refused = server.post(&format!("/_matrix/client/v3/knock/{}", enc(&old)), bob.token(), json!({})).await;
    assert_error(&refused, 403, "M_FORBIDDEN");
    let room = create_room(&server, &alice, json!({"room_version": "10", "initial_state": knock_state})).await;
    let knock = server
        .post(&format!("/_matrix/client/v3/knock/{}", enc(&room)), bob.token(), json!({"reason": "let me in"}))
        .await;
    assert_eq!(knock.0, 200, "{}", knock.1);
    let members =
        server.get(&format!("/_matrix/client/v3/rooms/{}/members?membership=knock", enc(&room)), alice.token()).await;
    assert_eq!(members.1["chunk"][0]["state_key"], bob.user_id);
}

#[tokio::test]
async fn history_visibility_decides_what_members_see() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let carol = server.register("carol", "pw").await;
    let dave = server.register("dave", "pw").await;
    for (visibility, carol_sees_earlier) in
        [("joined", false), ("invited", false), ("shared", true), ("world_readable", true)]
    {
        let room = create_room(
            &server,
            &alice,
            json!({"preset": "public_chat", "initial_state": [{"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": visibility}}]}),
        )
        .await;
        let (_, early) = send_text(&server, &alice, &room, &format!("early-{visibility}"), "before carol").await;
        assert_eq!(join(&server, &carol, &room).await.0, 200);
        send_text(&server, &alice, &room, &format!("late-{visibility}"), "after carol").await;

        let page = messages(&server, &carol, &room, "dir=b&limit=50").await;
        let seen = bodies(&page.1);
        assert!(seen.contains(&"after carol".to_owned()), "{visibility}: {seen:?}");
        assert_eq!(seen.contains(&"before carol".to_owned()), carol_sees_earlier, "{visibility}: {seen:?}");
        let early_event = server
            .get(
                &format!("/_matrix/client/v3/rooms/{}/event/{}", enc(&room), enc(early["event_id"].as_str().unwrap())),
                carol.token(),
            )
            .await;
        assert_eq!(early_event.0 == 200, carol_sees_earlier, "{visibility}: {}", early_event.1);

        // Dave never joined: only a world-readable room lets him read.
        let outsider = messages(&server, &dave, &room, "dir=b&limit=50").await;
        if visibility == "world_readable" {
            assert_eq!(outsider.0, 200);
            assert_eq!(bodies(&outsider.1).len(), 2);
        } else {
            assert_error(&outsider, 403, "M_FORBIDDEN");
        }

        // After Carol leaves she keeps what she could see but not what came later.
        server.post(&format!("/_matrix/client/v3/rooms/{}/leave", enc(&room)), carol.token(), json!({})).await;
        send_text(&server, &alice, &room, &format!("gone-{visibility}"), "after carol left").await;
        let after = bodies(&messages(&server, &carol, &room, "dir=b&limit=50").await.1);
        assert!(after.contains(&"after carol".to_owned()), "{visibility}: {after:?}");
        // `shared` means joined at some point after the event: leaving does not take it away.
        assert_eq!(after.contains(&"before carol".to_owned()), carol_sees_earlier, "{visibility}: {after:?}");
        assert_eq!(
            after.contains(&"after carol left".to_owned()),
            visibility == "world_readable",
            "{visibility}: {after:?}"
        );
    }
}

#[tokio::test]
async fn sends_are_idempotent_per_device_and_transaction() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let room = create_room(&server, &alice, json!({})).await;
    let first = send_text(&server, &alice, &room, "same", "once").await;
    let again = send_text(&server, &alice, &room, "same", "once").await;
    assert_eq!(first.1["event_id"], again.1["event_id"]);
    let other_device = Session::from_response(&server.login("alice", "pw").await.1);
    let third = send_text(&server, &other_device, &room, "same", "once").await;
    assert_ne!(third.1["event_id"], first.1["event_id"]);
    let page = messages(&server, &alice, &room, "dir=b&limit=50").await;
    assert_eq!(bodies(&page.1), vec!["once", "once"]);
}

#[tokio::test]
async fn messages_paginate_both_ways_without_gaps() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let room = create_room(&server, &alice, json!({})).await;
    for i in 0..25 {
        send_text(&server, &alice, &room, &format!("m{i}"), &format!("message {i}")).await;
    }
    let mut seen = Vec::new();
    let mut query = "dir=b&limit=10".to_owned();
    loop {
        let (status, page) = messages(&server, &alice, &room, &query).await;
        assert_eq!(status, 200, "{page}");
        seen.extend(bodies(&page));
        match page["end"].as_str() {
            Some(end) => query = format!("dir=b&limit=10&from={end}"),
            None => break,
        }
    }
    let expected: Vec<String> = (0..25).rev().map(|i| format!("message {i}")).collect();
    assert_eq!(seen, expected);

    // Forward from the beginning gives the same events in order.
    let (_, forward) = messages(&server, &alice, &room, "dir=f&limit=100").await;
    let mut expected_forward = expected.clone();
    expected_forward.reverse();
    assert_eq!(bodies(&forward), expected_forward);
}

#[tokio::test]
async fn room_errors_are_matrix_errors() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let unknown = send_text(&server, &alice, "!nowhere:localhost", "x", "hi").await;
    assert_error(&unknown, 404, "M_NOT_FOUND");
    let version = server.post("/_matrix/client/v3/createRoom", alice.token(), json!({"room_version": "99"})).await;
    assert_error(&version, 400, "M_UNSUPPORTED_ROOM_VERSION");

    let room = create_room(&server, &alice, json!({"room_alias_name": "taken"})).await;
    let taken = server.post("/_matrix/client/v3/createRoom", alice.token(), json!({"room_alias_name": "taken"})).await;
    assert_error(&taken, 400, "M_ROOM_IN_USE");

    let bad_pl = server
        .put(
            &format!("/_matrix/client/v3/rooms/{}/state/m.room.power_levels/", enc(&room)),
            alice.token(),
            json!({"ban": "lots"}),
        )
        .await;
    assert_error(&bad_pl, 400, "M_BAD_JSON");
    let bad_alias = server
        .put(
            &format!("/_matrix/client/v3/rooms/{}/state/m.room.canonical_alias/", enc(&room)),
            alice.token(),
            json!({"alias": "#elsewhere:localhost"}),
        )
        .await;
    assert_error(&bad_alias, 400, "M_BAD_ALIAS");
    for content in [json!({"alias": "%not_an_alias:localhost"}), json!({"alt_aliases": ["%nor_this:localhost"]})] {
        let invalid = server
            .put(
                &format!("/_matrix/client/v3/rooms/{}/state/m.room.canonical_alias/", enc(&room)),
                alice.token(),
                content,
            )
            .await;
        assert_error(&invalid, 400, "M_INVALID_PARAM");
    }

    let huge = send_text(&server, &alice, &room, "big", &"x".repeat(70_000)).await;
    assert_error(&huge, 413, "M_TOO_LARGE");

    // Bob is not in the room: sending, reading state and members are refused.
    let outsider = send_text(&server, &bob, &room, "x", "hi").await;
    assert_error(&outsider, 403, "M_FORBIDDEN");
    assert_error(
        &server.get(&format!("/_matrix/client/v3/rooms/{}/state", enc(&room)), bob.token()).await,
        403,
        "M_FORBIDDEN",
    );
    assert_error(
        &server.get(&format!("/_matrix/client/v3/rooms/{}/members", enc(&room)), bob.token()).await,
        403,
        "M_FORBIDDEN",
    );
    // Alice lacks nothing, but an unknown state key is not found.
    assert_error(
        &server.get(&format!("/_matrix/client/v3/rooms/{}/state/m.room.topic/", enc(&room)), alice.token()).await,
        404,
        "M_NOT_FOUND",
    );
}

#[tokio::test]
async fn create_room_options_shape_the_room() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = create_room(
        &server,
        &alice,
        json!({"room_version": "10", "preset": "trusted_private_chat", "invite": [bob.user_id], "is_direct": true,
               "power_level_content_override": {"events_default": 10},
               "initial_state": [{"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}]}),
    )
    .await;
    let state = server.get(&format!("/_matrix/client/v3/rooms/{}/state", enc(&room)), alice.token()).await.1;
    let find = |kind: &str, key: &str| {
        state.as_array().unwrap().iter().find(|e| e["type"] == kind && e["state_key"] == key).cloned().unwrap()
    };
    let power = find("m.room.power_levels", "");
    assert_eq!(power["content"]["users"][&bob.user_id], 100, "trusted_private_chat gives invitees the creator's level");
    assert_eq!(power["content"]["events_default"], 10);
    assert_eq!(find("m.room.join_rules", "")["content"]["join_rule"], "invite");
    assert_eq!(find("m.room.guest_access", "")["content"]["guest_access"], "can_join");
    assert_eq!(find("m.room.encryption", "")["content"]["algorithm"], "m.megolm.v1.aes-sha2");
    let invite = find("m.room.member", &bob.user_id);
    assert_eq!(invite["content"]["membership"], "invite");
    assert_eq!(invite["content"]["is_direct"], true);

    // In v12 invitees of a trusted private chat become additional creators instead.
    let v12 = create_room(
        &server,
        &alice,
        json!({"room_version": "12", "preset": "trusted_private_chat", "invite": [bob.user_id]}),
    )
    .await;
    let create =
        server.get(&format!("/_matrix/client/v3/rooms/{}/state/m.room.create/", enc(&v12)), alice.token()).await.1;
    assert_eq!(create["additional_creators"], json!([bob.user_id]));
    let power = server
        .get(&format!("/_matrix/client/v3/rooms/{}/state/m.room.power_levels/", enc(&v12)), alice.token())
        .await
        .1;
    assert!(power["users"].get(&alice.user_id).is_none(), "creators are not listed in v12: {power}");
    assert_eq!(power["events"]["m.room.tombstone"], 150);
}

#[tokio::test]
async fn profile_changes_reach_member_events_and_deactivation_leaves_rooms() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    assert_eq!(join(&server, &bob, &room).await.0, 200);
    let set = server
        .put(
            &format!("/_matrix/client/v3/profile/{}/displayname", enc(&bob.user_id)),
            bob.token(),
            json!({"displayname": "Bobby"}),
        )
        .await;
    assert_eq!(set.0, 200, "{}", set.1);
    let member = server
        .get(
            &format!("/_matrix/client/v3/rooms/{}/state/m.room.member/{}", enc(&room), enc(&bob.user_id)),
            alice.token(),
        )
        .await;
    assert_eq!(member.1, json!({"membership": "join", "displayname": "Bobby"}));
    let joined = server.get(&format!("/_matrix/client/v3/rooms/{}/joined_members", enc(&room)), alice.token()).await;
    assert_eq!(joined.1["joined"][&bob.user_id]["display_name"], "Bobby");

    let challenge = server.post("/_matrix/client/v3/account/deactivate", bob.token(), json!({})).await;
    let session = challenge.1["session"].as_str().unwrap();
    let auth = json!({"auth": {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "bob"}, "password": "pw", "session": session}});
    assert_eq!(server.post("/_matrix/client/v3/account/deactivate", bob.token(), auth).await.0, 200);
    let member = server
        .get(
            &format!("/_matrix/client/v3/rooms/{}/state/m.room.member/{}", enc(&room), enc(&bob.user_id)),
            alice.token(),
        )
        .await;
    assert_eq!(member.1["membership"], "leave", "{}", member.1);
}

#[tokio::test]
async fn filtered_message_pages_are_full() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let room = create_room(&server, &alice, json!({})).await;
    for i in 0..12 {
        send_text(&server, &alice, &room, &format!("m{i}"), &format!("message {i}")).await;
        server
            .put(
                &format!("/_matrix/client/v3/rooms/{}/send/org.example.noise/n{i}", enc(&room)),
                alice.token(),
                json!({"n": i}),
            )
            .await;
    }
    let filter = enc(r#"{"types":["m.room.message"]}"#);
    let (status, page) = messages(&server, &alice, &room, &format!("dir=b&limit=5&filter={filter}")).await;
    assert_eq!(status, 200, "{page}");
    let chunk = page["chunk"].as_array().unwrap();
    assert_eq!(chunk.len(), 5, "the filter is applied before the limit: {page}");
    assert!(chunk.iter().all(|e| e["type"] == "m.room.message"));
    assert_eq!(bodies(&page), (7..12).rev().map(|i| format!("message {i}")).collect::<Vec<_>>());
}

#[tokio::test]
async fn restricted_rooms_admit_members_of_allowed_rooms() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let carol = server.register("carol", "pw").await;
    for version in ["10", "12"] {
        let space = create_room(&server, &alice, json!({"room_version": version, "preset": "public_chat"})).await;
        let restricted = create_room(
            &server,
            &alice,
            json!({"room_version": version, "initial_state": [{"type": "m.room.join_rules", "state_key": "",
                   "content": {"join_rule": "restricted", "allow": [{"type": "m.room_membership", "room_id": space}]}}]}),
        )
        .await;
        assert_eq!(join(&server, &bob, &space).await.0, 200);
        let joined = join(&server, &bob, &restricted).await;
        assert_eq!(joined.0, 200, "v{version}: {}", joined.1);
        let member = server
            .get(
                &format!("/_matrix/client/v3/rooms/{}/state/m.room.member/{}", enc(&restricted), enc(&bob.user_id)),
                alice.token(),
            )
            .await;
        assert_eq!(member.1["join_authorised_via_users_server"], alice.user_id, "v{version}: {}", member.1);
        let refused = join(&server, &carol, &restricted).await;
        assert_error(&refused, 403, "M_FORBIDDEN");
    }
}

#[tokio::test]
async fn a_history_visibility_change_is_judged_by_the_state_before_or_after_it() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let dave = server.register("dave", "pw").await;
    let room = create_room(
        &server,
        &alice,
        json!({"preset": "public_chat", "initial_state": [{"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "world_readable"}}]}),
    )
    .await;
    let (_, open) = send_text(&server, &alice, &room, "open", "while world readable").await;
    let change = server
        .put(
            &format!("/_matrix/client/v3/rooms/{}/state/m.room.history_visibility/", enc(&room)),
            alice.token(),
            json!({"history_visibility": "joined"}),
        )
        .await;
    assert_eq!(change.0, 200, "{}", change.1);
    let (_, closed) = send_text(&server, &alice, &room, "closed", "after closing").await;
    let event = |id: &Value| format!("/_matrix/client/v3/rooms/{}/event/{}", enc(&room), enc(id.as_str().unwrap()));
    // Dave never joined. The change itself was allowed by the state before it (world readable).
    assert_eq!(server.get(&event(&open["event_id"]), dave.token()).await.0, 200);
    assert_eq!(server.get(&event(&change.1["event_id"]), dave.token()).await.0, 200);
    assert_error(&server.get(&event(&closed["event_id"]), dave.token()).await, 404, "M_NOT_FOUND");
}

#[tokio::test]
async fn messages_accept_sync_tokens_as_from_and_to() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let room = create_room(&server, &alice, json!({})).await;
    send_text(&server, &alice, &room, "a", "first").await;
    let since = server.get("/_matrix/client/v3/sync?timeout=0", alice.token()).await.1["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    send_text(&server, &alice, &room, "b", "second").await;
    send_text(&server, &alice, &room, "c", "third").await;
    let now = server.get(&format!("/_matrix/client/v3/sync?timeout=0&since={}", enc(&since)), alice.token()).await.1["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();
    // Backwards from the newest sync token, down to the older one: exactly what came between.
    let (status, page) =
        messages(&server, &alice, &room, &format!("dir=b&from={}&to={}", enc(&now), enc(&since))).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(bodies(&page), vec!["third", "second"]);
    // Forwards from the older token.
    let (_, forward) = messages(&server, &alice, &room, &format!("dir=f&from={}", enc(&since))).await;
    assert_eq!(bodies(&forward), vec!["second", "third"]);
}
