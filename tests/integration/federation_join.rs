//! Joins across servers: a user of one Trellis joins a room on another (room versions 1 to 12,
//! by ID with `via`, failing over past servers that can't help, restricted rooms), and the
//! resident side's checks of `make_join`/`send_join` against a fake server whose key the test
//! holds (Complement's `TestBannedUserCannotSendJoin`, `TestCannotSendNonJoinViaSendJoinV1/V2`).

use ruma::{CanonicalJsonObject, CanonicalJsonValue, RoomVersionId};
use serde_json::{Value, json};

use crate::{
    federation::{FakeServer, Pair, federation_call, start_pair},
    harness::{Session, TestServer, assert_error, enc},
    room_helpers::create_room,
};

/// The IDs of the room's current state events as `user` sees them on `server`, sorted.
pub(crate) async fn state_ids(server: &TestServer, user: &Session, room: &str) -> Vec<String> {
    let state = server.get(&format!("/_matrix/client/v3/rooms/{}/state", enc(room)), user.token()).await;
    assert_eq!(state.0, 200, "{}", state.1);
    let mut ids: Vec<String> =
        state.1.as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap().to_owned()).collect();
    ids.sort();
    ids
}

/// Joins `user` on `server` to `room` through `via`.
pub(crate) async fn join_via(server: &TestServer, user: &Session, room: &str, via: &[&str]) -> (u16, Value) {
    let query: String = via.iter().map(|v| format!("via={v}")).collect::<Vec<_>>().join("&");
    server.post(&format!("/_matrix/client/v3/join/{}?{query}", enc(room)), user.token(), json!({})).await
}

/// A signed request from the fake server `hs-t` to `server`.
pub(crate) async fn fake_call(
    pair: &Pair,
    server: &TestServer,
    method: &str,
    uri: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let destination = if std::ptr::eq(server, &pair.a) { "hs-a" } else { "hs-b" };
    let authorization = pair.fake.sign(method, uri, destination, body);
    federation_call(&pair.pki.client(), server, method, uri, Some(&authorization), body).await
}

/// A join template from `server` for `user` of `hs-t`, completed by `edit`, signed with
/// `hs-t`'s key: returns its event ID and JSON.
pub(crate) async fn fake_membership(
    pair: &Pair,
    room: &str,
    template_user: &str,
    edit: impl FnOnce(&mut CanonicalJsonObject),
) -> (String, Value) {
    let uri = format!(
        "/_matrix/federation/v1/make_join/{}/{}?ver=1&ver=6&ver=7&ver=10&ver=11&ver=12",
        enc(room),
        enc(template_user)
    );
    let template = fake_call(pair, &pair.a, "GET", &uri, None).await;
    assert_eq!(template.0, 200, "{}", template.1);
    let version: RoomVersionId = template.1["room_version"].as_str().unwrap().try_into().unwrap();
    let rules = version.rules().unwrap();
    let mut event: CanonicalJsonObject = serde_json::from_value(template.1["event"].clone()).unwrap();
    let ts = i64::try_from(u64::from(ruma::MilliSecondsSinceUnixEpoch::now().get())).unwrap();
    event.insert("origin_server_ts".into(), CanonicalJsonValue::Integer(ts.try_into().unwrap()));
    if event.contains_key("origin") {
        event.insert("origin".into(), CanonicalJsonValue::String(FakeServer::NAME.into()));
    }
    if version == RoomVersionId::V1 {
        event.insert("event_id".into(), CanonicalJsonValue::String(format!("$fake{ts}:{}", FakeServer::NAME)));
    }
    edit(&mut event);
    ruma::signatures::hash_and_sign_event(FakeServer::NAME, &*pair.fake.key_pair, &mut event, &rules.redaction)
        .unwrap();
    let event_id = match version {
        RoomVersionId::V1 => event["event_id"].as_str().unwrap().to_owned(),
        _ => format!("${}", ruma::signatures::reference_hash(&event, &rules).unwrap()),
    };
    (event_id, serde_json::to_value(&event).unwrap())
}

fn set_string(event: &mut CanonicalJsonObject, key: &str, value: &str) {
    event.insert(key.into(), CanonicalJsonValue::String(value.into()));
}

fn set_membership(event: &mut CanonicalJsonObject, membership: &str) {
    if let Some(CanonicalJsonValue::Object(content)) = event.get_mut("content") {
        content.insert("membership".into(), CanonicalJsonValue::String(membership.into()));
    }
}

#[tokio::test]
async fn users_join_rooms_on_another_server_in_every_event_format() {
    let pair = start_pair().await;
    let (a, b) = (&pair.a, &pair.b);
    let alice = a.register("alice", "pw").await;
    let bob = b.register("bob", "pw").await;
    b.put("/_matrix/client/v3/profile/@bob:hs-b/displayname", bob.token(), json!({"displayname": "Bob of B"})).await;
    for version in ["1", "6", "10", "11", "12"] {
        let room = create_room(
            a,
            &alice,
            json!({"preset": "public_chat", "room_version": version, "name": format!("Room v{version}")}),
        )
        .await;
        let joined = join_via(b, &bob, &room, &["hs-a"]).await;
        assert_eq!(joined, (200, json!({"room_id": room})), "v{version}");

        // Both servers hold the same state, with Bob joined under his profile.
        let on_a = state_ids(a, &alice, &room).await;
        assert_eq!(state_ids(b, &bob, &room).await, on_a, "v{version}: the servers agree on the state");
        let member = format!("/_matrix/client/v3/rooms/{}/state/m.room.member/{}", enc(&room), enc("@bob:hs-b"));
        assert_eq!(a.get(&member, alice.token()).await.1["displayname"], "Bob of B", "v{version}");
        let name = b.get(&format!("/_matrix/client/v3/rooms/{}/state/m.room.name/", enc(&room)), bob.token()).await;
        assert_eq!(name, (200, json!({"name": format!("Room v{version}")})), "v{version}");

        // Bob's sync on B shows the room as joined, its state and his join.
        let sync = b.get("/_matrix/client/v3/sync", bob.token()).await;
        let joined_room = &sync.1["rooms"]["join"][&room];
        assert!(joined_room.is_object(), "v{version}: {}", sync.1);
        let mut events: Vec<&Value> =
            joined_room["state"]["events"].as_array().map(|list| list.iter().collect()).unwrap_or_default();
        events.extend(joined_room["timeline"]["events"].as_array().unwrap());
        assert!(
            events.iter().any(|e| e["type"] == "m.room.member" && e["state_key"] == "@bob:hs-b"),
            "v{version}: {joined_room}"
        );
        assert!(events.iter().any(|e| e["type"] == "m.room.create"), "v{version}: {joined_room}");
        let joined_rooms = b.get("/_matrix/client/v3/joined_rooms", bob.token()).await;
        assert!(joined_rooms.1["joined_rooms"].as_array().unwrap().contains(&json!(room)), "v{version}");
    }
}

#[tokio::test]
async fn joins_fail_over_to_the_next_server_and_report_refusals() {
    let pair = start_pair().await;
    let (a, b) = (&pair.a, &pair.b);
    let alice = a.register("alice", "pw").await;
    let bob = b.register("bob", "pw").await;
    let room = create_room(a, &alice, json!({"preset": "public_chat"})).await;
    // hs-x is named but nothing listens there; hs-t answers but is not in the room.
    let failover = join_via(b, &bob, &room, &["hs-x", "hs-t", "hs-a"]).await;
    assert_eq!(failover.0, 200, "{}", failover.1);

    // An invite-only room refuses the join at make_join: the client gets the resident's 403.
    let private = create_room(a, &alice, json!({"preset": "private_chat"})).await;
    assert_error(&join_via(b, &bob, &private, &["hs-a"]).await, 403, "M_FORBIDDEN");
    // No server can help: not found, or unreachable.
    let unknown = "!nowhere:hs-a";
    assert_eq!(join_via(b, &bob, unknown, &["hs-a"]).await.0, 404);
    assert_eq!(join_via(b, &bob, &private, &["hs-x"]).await.0, 502);
    // A room nobody names a server for.
    assert_error(&join_via(b, &bob, "!lonely", &[]).await, 404, "M_NOT_FOUND");
}

#[tokio::test]
async fn restricted_rooms_are_joined_through_a_resident_who_may_invite() {
    let pair = start_pair().await;
    let (a, b) = (&pair.a, &pair.b);
    let alice = a.register("alice", "pw").await;
    let bob = b.register("bob", "pw").await;
    let space = create_room(a, &alice, json!({"preset": "public_chat", "room_version": "10"})).await;
    let restricted = create_room(
        a,
        &alice,
        json!({
            "room_version": "10",
            "initial_state": [{
                "type": "m.room.join_rules", "state_key": "",
                "content": {"join_rule": "restricted", "allow": [{"type": "m.room_membership", "room_id": space}]}
            }]
        }),
    )
    .await;
    // Not in the allowed room yet: refused.
    assert_error(&join_via(b, &bob, &restricted, &["hs-a"]).await, 403, "M_FORBIDDEN");
    assert_eq!(join_via(b, &bob, &space, &["hs-a"]).await.0, 200);
    assert_eq!(join_via(b, &bob, &restricted, &["hs-a"]).await.0, 200);
    let member = format!("/_matrix/client/v3/rooms/{}/state/m.room.member/{}", enc(&restricted), enc("@bob:hs-b"));
    let content = a.get(&member, alice.token()).await;
    assert_eq!(content.1["membership"], "join", "{}", content.1);
    assert_eq!(content.1["join_authorised_via_users_server"], "@alice:hs-a", "{}", content.1);
    assert_eq!(state_ids(b, &bob, &restricted).await, state_ids(a, &alice, &restricted).await);
}

#[tokio::test]
async fn make_join_refuses_what_the_room_would_refuse() {
    let pair = start_pair().await;
    let a = &pair.a;
    let alice = a.register("alice", "pw").await;
    let room = create_room(a, &alice, json!({"preset": "public_chat", "room_version": "11"})).await;
    let uri = |room: &str, user: &str, ver: &str| {
        format!("/_matrix/federation/v1/make_join/{}/{}{ver}", enc(room), enc(user))
    };
    // A template for a user of the asking server, with the room's version.
    let template = fake_call(&pair, a, "GET", &uri(&room, "@carol:hs-t", "?ver=11"), None).await;
    assert_eq!(template.0, 200, "{}", template.1);
    assert_eq!(template.1["room_version"], "11");
    assert_eq!(template.1["event"]["type"], "m.room.member");
    assert_eq!(template.1["event"]["content"]["membership"], "join");
    assert!(template.1["event"].get("signatures").is_none(), "{}", template.1);
    // Versions the joining server lacks, a user of another server, an unknown room.
    let incompatible = fake_call(&pair, a, "GET", &uri(&room, "@carol:hs-t", "?ver=1&ver=2"), None).await;
    assert_error(&incompatible, 400, "M_INCOMPATIBLE_ROOM_VERSION");
    assert_eq!(incompatible.1["room_version"], "11", "{}", incompatible.1);
    let no_ver = fake_call(&pair, a, "GET", &uri(&room, "@carol:hs-t", ""), None).await;
    assert_error(&no_ver, 400, "M_INCOMPATIBLE_ROOM_VERSION");
    assert_error(&fake_call(&pair, a, "GET", &uri(&room, "@carol:hs-b", "?ver=11"), None).await, 403, "M_FORBIDDEN");
    assert_error(
        &fake_call(&pair, a, "GET", &uri("!unknown:hs-a", "@carol:hs-t", "?ver=11"), None).await,
        404,
        "M_NOT_FOUND",
    );
    // A banned user gets no template.
    let ban = format!("/_matrix/client/v3/rooms/{}/ban", enc(&room));
    assert_eq!(a.post(&ban, alice.token(), json!({"user_id": "@dave:hs-t"})).await.0, 200);
    assert_error(&fake_call(&pair, a, "GET", &uri(&room, "@dave:hs-t", "?ver=11"), None).await, 403, "M_FORBIDDEN");
}

#[tokio::test]
async fn send_join_takes_only_a_join_of_the_senders_own_user() {
    let pair = start_pair().await;
    let a = &pair.a;
    let alice = a.register("alice", "pw").await;
    let room = create_room(a, &alice, json!({"preset": "public_chat", "room_version": "12"})).await;
    let send_join = |version: &str, event_id: &str| {
        format!("/_matrix/federation/{version}/send_join/{}/{}", enc(&room), enc(event_id))
    };

    // Anything but a join of the sender, through either version.
    for version in ["v1", "v2"] {
        for membership in ["leave", "knock", "invite", "ban"] {
            let (id, event) = fake_membership(&pair, &room, "@charlie:hs-t", |e| set_membership(e, membership)).await;
            let answer = fake_call(&pair, a, "PUT", &send_join(version, &id), Some(&event)).await;
            assert_eq!(answer.0, 400, "{version} {membership}: {}", answer.1);
        }
        let (id, event) =
            fake_membership(&pair, &room, "@charlie:hs-t", |e| set_string(e, "state_key", "@doris:hs-t")).await;
        assert_eq!(fake_call(&pair, a, "PUT", &send_join(version, &id), Some(&event)).await.0, 400, "{version}");
        let (id, event) = fake_membership(&pair, &room, "@charlie:hs-t", |e| {
            set_string(e, "type", "m.room.message");
            e.remove("state_key");
        })
        .await;
        assert_eq!(fake_call(&pair, a, "PUT", &send_join(version, &id), Some(&event)).await.0, 400, "{version}");
        // The ID in the path must be the event's.
        let (_, event) = fake_membership(&pair, &room, "@charlie:hs-t", |_| {}).await;
        let wrong = fake_call(&pair, a, "PUT", &send_join(version, "$notthisone"), Some(&event)).await;
        assert_eq!(wrong.0, 400, "{version}: {}", wrong.1);
    }
    // A join of a user of another server than the one asking.
    let (id, event) = fake_membership(&pair, &room, "@charlie:hs-t", |e| {
        set_string(e, "sender", "@eve:hs-b");
        set_string(e, "state_key", "@eve:hs-b");
    })
    .await;
    assert_error(&fake_call(&pair, a, "PUT", &send_join("v2", &id), Some(&event)).await, 403, "M_FORBIDDEN");

    // A banned user can't slip a join in on a template made for someone else.
    let ban = format!("/_matrix/client/v3/rooms/{}/ban", enc(&room));
    assert_eq!(a.post(&ban, alice.token(), json!({"user_id": "@charlie:hs-t"})).await.0, 200);
    let (id, event) = fake_membership(&pair, &room, "@charlie2:hs-t", |e| {
        set_string(e, "sender", "@charlie:hs-t");
        set_string(e, "state_key", "@charlie:hs-t");
    })
    .await;
    assert_error(&fake_call(&pair, a, "PUT", &send_join("v2", &id), Some(&event)).await, 403, "M_FORBIDDEN");
    let member = format!("/_matrix/client/v3/rooms/{}/state/m.room.member/{}", enc(&room), enc("@charlie:hs-t"));
    assert_eq!(a.get(&member, alice.token()).await.1["membership"], "ban");

    // A real join works through v1 (answered `[200, state]`) and v2, and the state comes back.
    let (id, event) = fake_membership(&pair, &room, "@frank:hs-t", |_| {}).await;
    let v1 = fake_call(&pair, a, "PUT", &send_join("v1", &id), Some(&event)).await;
    assert_eq!(v1.0, 200, "{}", v1.1);
    assert_eq!(v1.1[0], 200, "{}", v1.1);
    let state = v1.1[1]["state"].as_array().unwrap();
    assert!(state.iter().any(|e| e["type"] == "m.room.create"), "{}", v1.1);
    assert!(state.iter().any(|e| e["state_key"] == "@alice:hs-a"), "{}", v1.1);
    assert!(!v1.1[1]["auth_chain"].as_array().unwrap().is_empty(), "{}", v1.1);
    let (id, event) = fake_membership(&pair, &room, "@grace:hs-t", |_| {}).await;
    let v2 = fake_call(&pair, a, "PUT", &send_join("v2", &id), Some(&event)).await;
    assert_eq!(v2.0, 200, "{}", v2.1);
    assert!(v2.1["state"].as_array().unwrap().iter().any(|e| e["state_key"] == "@frank:hs-t"), "{}", v2.1);
    let members = a.get(&format!("/_matrix/client/v3/rooms/{}/joined_members", enc(&room)), alice.token()).await;
    let joined = members.1["joined"].as_object().unwrap();
    assert!(joined.contains_key("@frank:hs-t") && joined.contains_key("@grace:hs-t"), "{}", members.1);
}

/// A user joins a restricted room through their own server, which is in the room but has no
/// user who may invite: the join goes through the other server, whose user may
/// (Complement's `TestRestrictedRoomsRemoteJoinLocalUser`).
#[tokio::test]
async fn a_restricted_join_no_local_user_may_authorise_goes_through_another_server() {
    let pair = start_pair().await;
    let (a, b) = (&pair.a, &pair.b);
    let charlie = b.register("charlie", "pw").await;
    let (alice, bob) = (a.register("alice", "pw").await, a.register("bob", "pw").await);
    let space = create_room(b, &charlie, json!({"preset": "public_chat", "room_version": "10"})).await;
    let room = create_room(
        b,
        &charlie,
        json!({
            "preset": "public_chat",
            "room_version": "10",
            "initial_state": [{
                "type": "m.room.join_rules", "state_key": "",
                "content": {"join_rule": "restricted", "allow": [{"type": "m.room_membership", "room_id": space}]}
            }]
        }),
    )
    .await;
    for user in [&alice, &bob] {
        assert_eq!(join_via(a, user, &space, &["hs-b"]).await.0, 200);
    }
    assert_eq!(join_via(a, &alice, &room, &["hs-b"]).await.0, 200);
    // hs-a is in the room now, but Alice may not invite: Bob's join goes to hs-b.
    let joined = join_via(a, &bob, &room, &["hs-a"]).await;
    assert_eq!(joined.0, 200, "{}", joined.1);
    let member = format!("/_matrix/client/v3/rooms/{}/state/m.room.member/{}", enc(&room), enc("@bob:hs-a"));
    let on_b = b.get(&member, charlie.token()).await;
    assert_eq!(on_b.1["membership"], "join", "{}", on_b.1);
    assert_eq!(on_b.1["join_authorised_via_users_server"], "@charlie:hs-b", "{}", on_b.1);
    assert_eq!(a.get(&member, bob.token()).await.1["membership"], "join");
}

/// Aliases of another server: looked up there (`/directory/room` and `/join` by alias), with the
/// servers in the room to join through; an alias it doesn't have is not found.
#[tokio::test]
async fn rooms_are_found_and_joined_by_an_alias_of_another_server() {
    let pair = start_pair().await;
    let (a, b) = (&pair.a, &pair.b);
    let alice = a.register("alice", "pw").await;
    let bob = b.register("bob", "pw").await;
    let room = create_room(a, &alice, json!({"preset": "public_chat", "room_alias_name": "lobby"})).await;
    let lookup = b.get(&format!("/_matrix/client/v3/directory/room/{}", enc("#lobby:hs-a")), bob.token()).await;
    assert_eq!(lookup, (200, json!({"room_id": room, "servers": ["hs-a"]})));
    let joined = b.post(&format!("/_matrix/client/v3/join/{}", enc("#lobby:hs-a")), bob.token(), json!({})).await;
    assert_eq!(joined, (200, json!({"room_id": room})));
    // Now both servers are in the room, and hs-a says so.
    let lookup = b.get(&format!("/_matrix/client/v3/directory/room/{}", enc("#lobby:hs-a")), bob.token()).await;
    assert_eq!(lookup.1["servers"], json!(["hs-a", "hs-b"]), "{}", lookup.1);
    assert_error(
        &b.get(&format!("/_matrix/client/v3/directory/room/{}", enc("#nowhere:hs-a")), bob.token()).await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &b.post(&format!("/_matrix/client/v3/join/{}", enc("#nowhere:hs-a")), bob.token(), json!({})).await,
        404,
        "M_NOT_FOUND",
    );
}
