//! Invites and leaves across servers: a user of `hs-a` invites one of `hs-b` (through
//! `/invite`, `hs-b` countersigning), the invitee sees the invite with its stripped state and
//! `is_direct` in `/sync`, and rejects it (through `make_leave`/`send_leave` on `hs-a`, or on
//! `hs-b` alone when `hs-a` is down). The fake server `hs-t` sends invites and leaves of its
//! own, well-formed and not (Complement's `TestIsDirectFlagFederation`,
//! `TestCannotSendNonLeaveViaSendLeaveV1/V2`, `TestFederationRoomsInvite`,
//! `TestFederationRejectInvite`).

use ruma::{CanonicalJsonObject, RoomVersionId};
use serde_json::{Value, json};

use crate::{
    federation::{FakeServer, assert_signed_by, federation_call, start_pair},
    harness::{Session, TestServer, assert_error, enc},
    room_helpers::create_room,
};

/// Syncs (long-polling, from `since`) until `done` holds for the response; returns it.
async fn sync_until(
    server: &TestServer,
    session: &Session,
    since: Option<&str>,
    filter: Option<&str>,
    done: impl Fn(&Value) -> bool,
) -> Value {
    for _ in 0..20 {
        let mut path = "/_matrix/client/v3/sync?timeout=500".to_owned();
        if let Some(since) = since {
            path.push_str(&format!("&since={}", enc(since)));
        }
        if let Some(filter) = filter {
            path.push_str(&format!("&filter={}", enc(filter)));
        }
        let (status, body) = server.get(&path, session.token()).await;
        assert_eq!(status, 200, "sync: {body}");
        if done(&body) {
            return body;
        }
    }
    panic!("sync never showed what was expected");
}

const INCLUDE_LEAVE: &str = r#"{"room":{"include_leave":true}}"#;

/// The member event of `user` in the room's state on `server`, as `session` reads it.
async fn member(server: &TestServer, session: &Session, room_id: &str, user: &str) -> (u16, Value) {
    let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.member/{}", enc(room_id), enc(user));
    server.get(&path, session.token()).await
}

fn invite_state<'a>(sync: &'a Value, room_id: &str) -> &'a Vec<Value> {
    sync["rooms"]["invite"][room_id]["invite_state"]["events"].as_array().expect("invite_state events")
}

fn left_with_leave(sync: &Value, room_id: &str, user: &str) -> bool {
    sync["rooms"]["leave"][room_id]["timeline"]["events"].as_array().is_some_and(|events| {
        events
            .iter()
            .any(|e| e["type"] == "m.room.member" && e["state_key"] == user && e["content"]["membership"] == "leave")
    })
}

#[tokio::test]
async fn a_remote_invite_reaches_the_invitee_with_its_stripped_state_and_can_be_rejected() {
    let pair = start_pair().await;
    let (a, b) = (&pair.a, &pair.b);
    let alice = a.register("alice", "pw").await;
    let bob = b.register("bob", "pw").await;

    // createRoom with a remote invitee and is_direct.
    let room_id = create_room(
        a,
        &alice,
        json!({"preset": "private_chat", "name": "Invites room", "invite": [bob.user_id], "is_direct": true}),
    )
    .await;
    let sync = sync_until(b, &bob, None, None, |s| s["rooms"]["invite"][&room_id].is_object()).await;
    let state = invite_state(&sync, &room_id);
    let of = |kind: &str| state.iter().find(|e| e["type"] == kind).unwrap_or_else(|| panic!("{kind} in {state:?}"));
    assert_eq!(of("m.room.name")["content"]["name"], "Invites room");
    assert_eq!(of("m.room.join_rules")["content"]["join_rule"], "invite");
    assert_eq!(of("m.room.create")["sender"], alice.user_id.as_str());
    let invite = state.iter().find(|e| e["type"] == "m.room.member" && e["state_key"] == bob.user_id.as_str()).unwrap();
    assert_eq!(invite["content"]["membership"], "invite");
    assert_eq!(invite["content"]["is_direct"], true);
    assert_eq!(invite["sender"], alice.user_id.as_str());
    let since = sync["next_batch"].as_str().unwrap().to_owned();

    // On A the invite is in the room.
    let (status, content) = member(a, &alice, &room_id, &bob.user_id).await;
    assert_eq!((status, &content["membership"]), (200, &json!("invite")), "{content}");

    // Bob rejects it: the leave goes through A, whose room now says so.
    let left = b.post(&format!("/_matrix/client/v3/rooms/{}/leave", enc(&room_id)), bob.token(), json!({})).await;
    assert_eq!(left.0, 200, "{}", left.1);
    let (status, content) = member(a, &alice, &room_id, &bob.user_id).await;
    assert_eq!((status, &content["membership"]), (200, &json!("leave")), "{content}");
    let sync = sync_until(b, &bob, Some(&since), None, |s| left_with_leave(s, &room_id, &bob.user_id)).await;
    assert!(sync["rooms"]["invite"][&room_id].is_null(), "{sync}");
    // An initial sync no longer shows the invite.
    let initial = sync_until(b, &bob, None, None, |_| true).await;
    assert!(initial["rooms"]["invite"][&room_id].is_null(), "{initial}");

    // Invited again (several times works), through /invite this time.
    let invited = a
        .post(
            &format!("/_matrix/client/v3/rooms/{}/invite", enc(&room_id)),
            alice.token(),
            json!({"user_id": bob.user_id}),
        )
        .await;
    assert_eq!(invited.0, 200, "{}", invited.1);
    let sync = sync_until(b, &bob, None, None, |s| s["rooms"]["invite"][&room_id].is_object()).await;
    let invite = invite_state(&sync, &room_id)
        .iter()
        .find(|e| e["type"] == "m.room.member" && e["state_key"] == bob.user_id.as_str())
        .cloned()
        .unwrap();
    assert!(invite["content"]["is_direct"].is_null(), "{invite}");
}

#[tokio::test]
async fn an_invite_is_rejected_here_when_the_inviting_server_is_down() {
    let pair = start_pair().await;
    let bob = pair.b.register("bob", "pw").await;
    let alice = pair.a.register("alice", "pw").await;
    let room_id = create_room(&pair.a, &alice, json!({"preset": "private_chat"})).await;
    let invited = pair
        .a
        .post(
            &format!("/_matrix/client/v3/rooms/{}/invite", enc(&room_id)),
            alice.token(),
            json!({"user_id": bob.user_id}),
        )
        .await;
    assert_eq!(invited.0, 200, "{}", invited.1);
    let sync = sync_until(&pair.b, &bob, None, None, |s| s["rooms"]["invite"][&room_id].is_object()).await;
    let since = sync["next_batch"].as_str().unwrap().to_owned();

    let crate::federation::Pair { a, b, .. } = pair;
    a.stop();
    let left = b.post(&format!("/_matrix/client/v3/rooms/{}/leave", enc(&room_id)), bob.token(), json!({})).await;
    assert_eq!(left.0, 200, "{}", left.1);
    sync_until(&b, &bob, Some(&since), None, |s| left_with_leave(s, &room_id, &bob.user_id)).await;
    let initial = sync_until(&b, &bob, None, Some(INCLUDE_LEAVE), |_| true).await;
    assert!(left_with_leave(&initial, &room_id, &bob.user_id), "{initial}");
    assert!(initial["rooms"]["invite"][&room_id].is_null(), "{initial}");
    // Leaving again changes nothing and is no error for a second rejection.
    let forget = b.post(&format!("/_matrix/client/v3/rooms/{}/forget", enc(&room_id)), bob.token(), json!({})).await;
    assert_eq!(forget.0, 200, "{}", forget.1);
}

#[tokio::test]
async fn invites_of_unknown_users_are_refused_and_nothing_is_stored() {
    let pair = start_pair().await;
    let (a, b) = (&pair.a, &pair.b);
    let alice = a.register("alice", "pw").await;
    let room_id = create_room(a, &alice, json!({"preset": "private_chat"})).await;
    let invited = a
        .post(
            &format!("/_matrix/client/v3/rooms/{}/invite", enc(&room_id)),
            alice.token(),
            json!({"user_id": "@nobody:hs-b"}),
        )
        .await;
    assert_error(&invited, 404, "M_NOT_FOUND");
    assert_eq!(member(a, &alice, &room_id, "@nobody:hs-b").await.0, 404);
    // A server that cannot be reached: 502, nothing stored.
    let invited = a
        .post(
            &format!("/_matrix/client/v3/rooms/{}/invite", enc(&room_id)),
            alice.token(),
            json!({"user_id": "@someone:hs-x"}),
        )
        .await;
    assert_eq!(invited.0, 502, "{}", invited.1);
    assert_eq!(member(a, &alice, &room_id, "@someone:hs-x").await.0, 404);
    let _ = b;
}

/// An event from `hs-t` in `room_id` of version 10, hashed and signed with its key.
fn fake_event(fake: &FakeServer, room_id: &str, mut event: Value) -> (CanonicalJsonObject, String) {
    let object = event.as_object_mut().unwrap();
    object.insert("room_id".into(), json!(room_id));
    object.entry("origin_server_ts").or_insert(json!(1_700_000_000_000u64));
    object.entry("depth").or_insert(json!(7));
    object.entry("prev_events").or_insert(json!(["$prevprevprevprevprevprevprevprevprevprevpre"]));
    object.entry("auth_events").or_insert(json!(["$authauthauthauthauthauthauthauthauthauthaut"]));
    let rules = RoomVersionId::V10.rules().unwrap();
    let mut json: CanonicalJsonObject = serde_json::from_value(event).unwrap();
    ruma::signatures::hash_and_sign_event(FakeServer::NAME, &*fake.key_pair, &mut json, &rules.redaction).unwrap();
    let id = format!("${}", ruma::signatures::reference_hash(&json, &rules).unwrap());
    (json, id)
}

#[tokio::test]
async fn invites_from_another_server_are_checked_countersigned_and_keep_is_direct() {
    let pair = start_pair().await;
    let (b, fake) = (&pair.b, &pair.fake);
    let client = pair.pki.client();
    let bob = b.register("bob", "pw").await;
    let (_, before) = b.get("/_matrix/client/v3/sync", bob.token()).await;
    let since = before["next_batch"].as_str().unwrap().to_owned();
    let room_id = "!dm:hs-t";
    let invite = |state_key: &str, sender: &str| {
        fake_event(
            fake,
            room_id,
            json!({"type": "m.room.member", "state_key": state_key, "sender": sender,
                   "content": {"membership": "invite", "is_direct": true}}),
        )
    };
    let send = |event_id: String, body: Value| {
        let uri = format!("/_matrix/federation/v2/invite/{}/{}", enc(room_id), enc(&event_id));
        let authorization = fake.sign("PUT", &uri, "hs-b", Some(&body));
        let client = client.clone();
        async move { federation_call(&client, b, "PUT", &uri, Some(&authorization), Some(&body)).await }
    };

    // Unsupported room version.
    let (event, id) = invite("@bob:hs-b", "@tess:hs-t");
    let body = json!({"room_version": "org.example.v99", "event": event, "invite_room_state": []});
    let answer = send(id.clone(), body).await;
    assert_error(&answer, 400, "M_INCOMPATIBLE_ROOM_VERSION");
    assert_eq!(answer.1["room_version"], "org.example.v99");
    // An event ID that is not the event's.
    let body = json!({"room_version": "10", "event": event, "invite_room_state": []});
    assert_eq!(send("$notthiseventnotthiseventnotthiseventnotthise".into(), body).await.0, 400);
    // A user that does not exist.
    let (event, id) = invite("@nobody:hs-b", "@tess:hs-t");
    let answer = send(id, json!({"room_version": "10", "event": event, "invite_room_state": []})).await;
    assert_error(&answer, 404, "M_NOT_FOUND");
    // A sender of another server than the one asking.
    let (event, id) = invite("@bob:hs-b", "@mallory:hs-a");
    let answer = send(id, json!({"room_version": "10", "event": event, "invite_room_state": []})).await;
    assert_error(&answer, 403, "M_FORBIDDEN");
    // Altered after signing.
    let (mut event, _) = invite("@bob:hs-b", "@tess:hs-t");
    event.insert("depth".into(), ruma::CanonicalJsonValue::Integer(9u32.into()));
    let rules = RoomVersionId::V10.rules().unwrap();
    let id = format!("${}", ruma::signatures::reference_hash(&event, &rules).unwrap());
    let answer = send(id, json!({"room_version": "10", "event": event, "invite_room_state": []})).await;
    assert_error(&answer, 403, "M_FORBIDDEN");
    // A join is not an invite.
    let (event, id) = fake_event(
        fake,
        room_id,
        json!({"type": "m.room.member", "state_key": "@bob:hs-b", "sender": "@tess:hs-t", "content": {"membership": "join"}}),
    );
    assert_eq!(send(id, json!({"room_version": "10", "event": event, "invite_room_state": []})).await.0, 400);

    // A good one, with a stripped name event: countersigned by hs-b and shown with is_direct.
    let (event, id) = invite("@bob:hs-b", "@tess:hs-t");
    let name = json!({"type": "m.room.name", "state_key": "", "sender": "@tess:hs-t", "content": {"name": "DM"}});
    let answer = send(id, json!({"room_version": "10", "event": event, "invite_room_state": [name]})).await;
    assert_eq!(answer.0, 200, "{}", answer.1);
    let signed = &answer.1["event"];
    // Events are signed in their redacted form.
    let rules = RoomVersionId::V10.rules().unwrap();
    let object: CanonicalJsonObject = serde_json::from_value(signed.clone()).unwrap();
    let redacted = ruma::canonical_json::redact(object, &rules.redaction, None).unwrap();
    assert_signed_by(&client, b, "hs-b", &serde_json::to_value(redacted).unwrap()).await;
    assert!(signed["signatures"]["hs-t"].is_object());
    assert_eq!(signed["content"], json!({"membership": "invite", "is_direct": true}));
    let sync = sync_until(b, &bob, Some(&since), None, |s| s["rooms"]["invite"][room_id].is_object()).await;
    let state = invite_state(&sync, room_id);
    let own = state.iter().find(|e| e["type"] == "m.room.member").unwrap();
    assert_eq!(own["content"]["is_direct"], true, "{state:?}");
    assert_eq!(own["sender"], "@tess:hs-t");
    assert!(state.iter().any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "DM"), "{state:?}");

    // hs-t serves no make_leave: the rejection is recorded here alone.
    let since = sync["next_batch"].as_str().unwrap().to_owned();
    let left = b.post(&format!("/_matrix/client/v3/rooms/{}/leave", enc(room_id)), bob.token(), json!({})).await;
    assert_eq!(left.0, 200, "{}", left.1);
    sync_until(b, &bob, Some(&since), None, |s| left_with_leave(s, room_id, "@bob:hs-b")).await;
}

#[tokio::test]
async fn send_leave_takes_only_the_senders_own_leave() {
    let pair = start_pair().await;
    let (a, fake) = (&pair.a, &pair.fake);
    let client = pair.pki.client();
    let alice = a.register("alice", "pw").await;
    let room_id = create_room(a, &alice, json!({"preset": "public_chat", "room_version": "10"})).await;
    let send = |version: &str, event: (CanonicalJsonObject, String)| {
        let uri = format!("/_matrix/federation/{version}/send_leave/{}/{}", enc(&room_id), enc(&event.1));
        let body = serde_json::to_value(&event.0).unwrap();
        let authorization = fake.sign("PUT", &uri, "hs-a", Some(&body));
        let client = client.clone();
        async move { federation_call(&client, a, "PUT", &uri, Some(&authorization), Some(&body)).await }
    };
    let member = |state_key: Option<&str>, content: Value| {
        let mut event = json!({"type": "m.room.member", "sender": "@charlie:hs-t", "content": content});
        if let Some(key) = state_key {
            event["state_key"] = json!(key);
        }
        fake_event(fake, &room_id, event)
    };
    // The room's real create and power levels events and newest event, for a leave that
    // reaches the auth rules.
    let (_, state) = a.get(&format!("/_matrix/client/v3/rooms/{}/state", enc(&room_id)), alice.token()).await;
    let id_of = |kind: &str| {
        state.as_array().unwrap().iter().find(|e| e["type"] == kind).map(|e| e["event_id"].clone()).unwrap()
    };
    let auth = json!([id_of("m.room.create"), id_of("m.room.power_levels"), id_of("m.room.join_rules")]);
    let path = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=1", enc(&room_id));
    let (_, messages) = a.get(&path, alice.token()).await;
    let latest = messages["chunk"][0]["event_id"].clone();
    for version in ["v1", "v2"] {
        let message = fake_event(
            fake,
            &room_id,
            json!({"type": "m.room.message", "sender": "@charlie:hs-t", "content": {"body": "bzz"}}),
        );
        assert_eq!(send(version, message).await.0, 400, "{version} message");
        assert_eq!(send(version, member(None, json!({"body": "bzz"}))).await.0, 400, "{version} stateless");
        for membership in ["join", "knock", "invite"] {
            let event = member(Some("@charlie:hs-t"), json!({"membership": membership}));
            let answer = send(version, event).await;
            assert_eq!(answer.0, 400, "{version} {membership}: {}", answer.1);
        }
        let answer = send(version, member(Some("@doris:hs-t"), json!({"membership": "leave"}))).await;
        assert_eq!(answer.0, 400, "{version} mismatched state key: {}", answer.1);
        // The right form, from a user who never joined: refused by the auth rules.
        let mut leave = json!({"type": "m.room.member", "sender": "@charlie:hs-t", "state_key": "@charlie:hs-t",
                               "content": {"membership": "leave"}, "prev_events": [latest], "auth_events": auth});
        leave["depth"] = json!(20);
        let answer = send(version, fake_event(fake, &room_id, leave)).await;
        assert_eq!(answer.0, 403, "{version} leave of a stranger: {}", answer.1);
    }

    // make_leave: only for the asking server's users, only for known rooms.
    let get = |uri: String| {
        let authorization = fake.sign("GET", &uri, "hs-a", None);
        let client = client.clone();
        async move { federation_call(&client, a, "GET", &uri, Some(&authorization), None).await }
    };
    let uri = format!("/_matrix/federation/v1/make_leave/{}/{}", enc(&room_id), enc(&alice.user_id));
    assert_error(&get(uri).await, 403, "M_FORBIDDEN");
    let uri = format!("/_matrix/federation/v1/make_leave/{}/{}", enc("!nowhere:hs-a"), enc("@charlie:hs-t"));
    assert_error(&get(uri).await, 404, "M_NOT_FOUND");
    // charlie is not in the room: no leave to make.
    let uri = format!("/_matrix/federation/v1/make_leave/{}/{}", enc(&room_id), enc("@charlie:hs-t"));
    assert_error(&get(uri.clone()).await, 403, "M_FORBIDDEN");
    // A server the room's ACL denies is turned away before anything else.
    let acl = json!({"allow": ["*"], "deny": ["hs-t"], "allow_ip_literals": false});
    let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.server_acl/", enc(&room_id));
    assert_eq!(a.put(&path, alice.token(), acl).await.0, 200);
    let denied = get(uri).await;
    assert_error(&denied, 403, "M_FORBIDDEN");
    assert!(denied.1["error"].as_str().unwrap().contains("ACL"), "{}", denied.1);
}

#[tokio::test]
async fn an_invitee_joins_through_the_inviting_server() {
    let pair = start_pair().await;
    let (a, b) = (&pair.a, &pair.b);
    let alice = a.register("alice", "pw").await;
    let bob = b.register("bob", "pw").await;
    let bob2 = b.register("bob2", "pw").await;
    // Version 12: the room ID names no server, so the join finds the room through the invite.
    let room_id = create_room(
        a,
        &alice,
        json!({"preset": "private_chat", "room_version": "12", "invite": [bob.user_id], "is_direct": true}),
    )
    .await;
    sync_until(b, &bob, None, None, |s| s["rooms"]["invite"][&room_id].is_object()).await;
    let joined = b.post(&format!("/_matrix/client/v3/join/{}", enc(&room_id)), bob.token(), json!({})).await;
    assert_eq!(joined.0, 200, "{}", joined.1);
    let (status, content) = member(a, &alice, &room_id, &bob.user_id).await;
    assert_eq!((status, &content["membership"]), (200, &json!("join")), "{content}");
    let sync = sync_until(b, &bob, None, None, |s| s["rooms"]["join"][&room_id].is_object()).await;
    assert!(sync["rooms"]["invite"][&room_id].is_null(), "{sync}");
    let events = sync["rooms"]["join"][&room_id]["timeline"]["events"].as_array().unwrap();
    assert!(
        events.iter().any(|e| e["type"] == "m.room.member" && e["state_key"] == bob.user_id.as_str()),
        "bob's join in {events:?}"
    );
    // (Complement also wants the invite's content as the join's `unsigned.prev_content`, which
    // Trellis gives no state event yet.)

    // hs-b is in the room now: a second invite arrives as one of the room's events, and its
    // rejection is an ordinary leave from hs-b.
    let invited = a
        .post(
            &format!("/_matrix/client/v3/rooms/{}/invite", enc(&room_id)),
            alice.token(),
            json!({"user_id": bob2.user_id}),
        )
        .await;
    assert_eq!(invited.0, 200, "{}", invited.1);
    let sync = sync_until(b, &bob2, None, None, |s| s["rooms"]["invite"][&room_id].is_object()).await;
    let state = invite_state(&sync, &room_id);
    assert!(state.iter().any(|e| e["type"] == "m.room.member" && e["state_key"] == bob2.user_id.as_str()), "{state:?}");
    let (status, content) = member(b, &bob, &room_id, &bob2.user_id).await;
    assert_eq!((status, &content["membership"]), (200, &json!("invite")), "{content}");
    let left = b.post(&format!("/_matrix/client/v3/rooms/{}/leave", enc(&room_id)), bob2.token(), json!({})).await;
    assert_eq!(left.0, 200, "{}", left.1);
    let (status, content) = member(b, &bob, &room_id, &bob2.user_id).await;
    assert_eq!((status, &content["membership"]), (200, &json!("leave")), "{content}");
}

#[tokio::test]
async fn deactivation_rejects_invites_from_other_servers() {
    let pair = start_pair().await;
    let (a, b) = (&pair.a, &pair.b);
    let alice = a.register("alice", "pw").await;
    let bob = b.register("bob", "pw").await;
    let room_id = create_room(a, &alice, json!({"preset": "private_chat", "invite": [bob.user_id]})).await;
    sync_until(b, &bob, None, None, |s| s["rooms"]["invite"][&room_id].is_object()).await;
    let challenge = b.post("/_matrix/client/v3/account/deactivate", bob.token(), json!({})).await;
    let session = challenge.1["session"].as_str().unwrap();
    let auth = json!({"auth": {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "bob"},
                               "password": "pw", "session": session}});
    assert_eq!(b.post("/_matrix/client/v3/account/deactivate", bob.token(), auth).await.0, 200);
    let (status, content) = member(a, &alice, &room_id, &bob.user_id).await;
    assert_eq!((status, &content["membership"]), (200, &json!("leave")), "{content}");
}

#[tokio::test]
async fn invites_of_room_version_1_come_through_invite_v1() {
    let pair = start_pair().await;
    let (b, fake) = (&pair.b, &pair.fake);
    let client = pair.pki.client();
    let bob = b.register("bob", "pw").await;
    let room_id = "!old:hs-t";
    let event_id = "$invite1:hs-t";
    let reference = json!(["$prev1:hs-t", {"sha256": "aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g"}]);
    let mut event: CanonicalJsonObject = serde_json::from_value(json!({
        "event_id": event_id, "room_id": room_id, "type": "m.room.member", "state_key": "@bob:hs-b",
        "sender": "@tess:hs-t", "origin": "hs-t", "origin_server_ts": 1_700_000_000_000u64, "depth": 3,
        "content": {"membership": "invite"}, "prev_events": [reference], "auth_events": [reference],
        "prev_state": [],
    }))
    .unwrap();
    let rules = RoomVersionId::V1.rules().unwrap();
    ruma::signatures::hash_and_sign_event(FakeServer::NAME, &*fake.key_pair, &mut event, &rules.redaction).unwrap();
    let mut body = serde_json::to_value(&event).unwrap();
    body["unsigned"] = json!({"invite_room_state": [
        {"type": "m.room.name", "state_key": "", "sender": "@tess:hs-t", "content": {"name": "Old"}}
    ]});
    let uri = format!("/_matrix/federation/v1/invite/{}/{}", enc(room_id), enc(event_id));
    let authorization = fake.sign("PUT", &uri, "hs-b", Some(&body));
    let answer = federation_call(&client, b, "PUT", &uri, Some(&authorization), Some(&body)).await;
    assert_eq!(answer.0, 200, "{}", answer.1);
    assert_eq!(answer.1[0], 200, "{}", answer.1);
    assert_eq!(answer.1[1]["event"]["event_id"], event_id, "{}", answer.1);
    assert!(answer.1[1]["event"]["signatures"]["hs-b"].is_object(), "{}", answer.1);
    let sync = sync_until(b, &bob, None, None, |s| s["rooms"]["invite"][room_id].is_object()).await;
    let state = invite_state(&sync, room_id);
    assert!(state.iter().any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Old"), "{state:?}");
}

/// The inviter rescinds an invite (kicks the invitee before they answered): the kick reaches
/// the invitee's server, which is not in the room, through a transaction, and the invite
/// leaves the invitee's `/sync`. A kick by anyone else would not be taken there.
#[tokio::test]
async fn an_inviter_rescinds_an_invite_across_servers() {
    let pair = start_pair().await;
    let (a, b) = (&pair.a, &pair.b);
    let alice = a.register("alice", "pw").await;
    let bob = b.register("bob", "pw").await;
    let room_id = create_room(a, &alice, json!({"preset": "private_chat", "invite": [bob.user_id]})).await;
    let sync = sync_until(b, &bob, None, None, |s| s["rooms"]["invite"][&room_id].is_object()).await;
    let since = sync["next_batch"].as_str().unwrap().to_owned();

    let kick = a
        .post(
            &format!("/_matrix/client/v3/rooms/{}/kick", enc(&room_id)),
            alice.token(),
            json!({"user_id": bob.user_id, "reason": "wrong person"}),
        )
        .await;
    assert_eq!(kick.0, 200, "{}", kick.1);
    let sync = sync_until(b, &bob, Some(&since), None, |s| s["rooms"]["leave"][&room_id].is_object()).await;
    assert!(sync["rooms"]["invite"][&room_id].is_null(), "{sync}");
    let initial = sync_until(b, &bob, None, None, |_| true).await;
    assert!(initial["rooms"]["invite"][&room_id].is_null(), "{initial}");
}
