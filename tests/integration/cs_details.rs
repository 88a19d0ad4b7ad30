//! Small client-server wire details real clients and Complement's client-server tests trip
//! over: kicking users who are not in the room, bodies that are not UTF-8, `/messages` of a
//! room that does not exist, the capabilities a client needs before it offers a feature.

use serde_json::{Value, json};

use crate::{
    harness::{TestServer, assert_error, enc},
    room_helpers::{create_room, join, send_text},
};

#[tokio::test]
async fn users_who_are_not_in_the_room_cannot_be_kicked() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let carol = server.register("carol", "pw").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    let kick = format!("/_matrix/client/v3/rooms/{}/kick", enc(&room));
    // Never in the room.
    let result = server.post(&kick, alice.token(), json!({"user_id": bob.user_id, "reason": "testing"})).await;
    assert_error(&result, 403, "M_FORBIDDEN");
    // In the room once, but left.
    join(&server, &carol, &room).await;
    let leave = format!("/_matrix/client/v3/rooms/{}/leave", enc(&room));
    assert_eq!(server.post(&leave, carol.token(), json!({})).await.0, 200);
    let result = server.post(&kick, alice.token(), json!({"user_id": carol.user_id})).await;
    assert_error(&result, 403, "M_FORBIDDEN");
    // A member can still be kicked.
    join(&server, &bob, &room).await;
    assert_eq!(server.post(&kick, alice.token(), json!({"user_id": bob.user_id})).await.0, 200);
}

#[tokio::test]
async fn a_body_that_is_not_utf8_is_not_json() {
    let server = TestServer::start().await;
    let response = reqwest::Client::new()
        .post(server.url("/_matrix/client/v3/register"))
        .header("content-type", "application/json")
        .body(b"{ \"test\":\"a\x81\" }".to_vec())
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status().as_u16(), 400);
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["errcode"], "M_NOT_JSON", "{body}");
}

#[tokio::test]
async fn messages_of_a_room_that_does_not_exist_are_forbidden() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let path = format!("/_matrix/client/v3/rooms/{}/messages?dir=b", enc("!does-not-exist:hs1"));
    let result = server.get(&path, alice.token()).await;
    assert_error(&result, 403, "M_FORBIDDEN");
}

#[tokio::test]
async fn capabilities_name_password_changes_and_room_versions_to_users_only() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let (status, body) = server.get("/_matrix/client/v3/capabilities", alice.token()).await;
    assert_eq!(status, 200, "{body}");
    let capabilities = &body["capabilities"];
    assert_eq!(capabilities["m.change_password"]["enabled"], true, "{body}");
    assert_eq!(capabilities["m.room_versions"]["default"], "12", "{body}");
    assert_eq!(capabilities["m.3pid_changes"]["enabled"], false, "{body}");
    assert_error(&server.get("/_matrix/client/v3/capabilities", None).await, 401, "M_MISSING_TOKEN");
}

#[tokio::test]
async fn a_join_keeps_the_content_the_client_sent() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let carol = server.register("carol", "pw").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat", "room_alias_name": "custom"})).await;
    let path = format!("/_matrix/client/v3/join/{}", enc(&room));
    let (status, body) = server.post(&path, bob.token(), json!({"foo": "bar", "reason": "hi"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["room_id"], room.as_str());
    let state = |user: &str| format!("/_matrix/client/v3/rooms/{}/state/m.room.member/{}", enc(&room), enc(user));
    let (_, content) = server.get(&state(&bob.user_id), alice.token()).await;
    assert_eq!(content["membership"], "join", "{content}");
    assert_eq!(content["foo"], "bar", "{content}");
    assert_eq!(content["reason"], "hi", "{content}");
    // By alias, with a per-room display name that wins over the profile's.
    let path = format!("/_matrix/client/v3/join/{}", enc("#custom:localhost"));
    let (status, body) = server.post(&path, carol.token(), json!({"foo": "baz", "displayname": "Carol here"})).await;
    assert_eq!(status, 200, "{body}");
    let (_, content) = server.get(&state(&carol.user_id), alice.token()).await;
    assert_eq!((content["foo"].as_str(), content["displayname"].as_str()), (Some("baz"), Some("Carol here")));
    // A body that is not an object is still a plain join.
    let (status, body) =
        server.post(&format!("/_matrix/client/v3/rooms/{}/join", enc(&room)), alice.token(), json!({})).await;
    assert_eq!(status, 200, "{body}");
}

/// Pushers belong to the session that set them: a password change stops those of the other
/// sessions, a logout or device deletion those of that device.
#[tokio::test]
async fn pushers_go_with_their_sessions() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "superuser").await;
    let (status, other) = server.login("alice", "superuser").await;
    assert_eq!(status, 200, "{other}");
    let other_token = other["access_token"].as_str().expect("token").to_owned();
    let pusher = |pushkey: &str| {
        json!({"kind": "http", "app_id": "complement", "pushkey": pushkey, "app_display_name": "a",
               "device_display_name": "d", "lang": "en", "data": {"url": "https://dummy.url/_matrix/push/v1/notify"}})
    };
    let pushkeys = |body: serde_json::Value| -> Vec<String> {
        body["pushers"]
            .as_array()
            .expect("pushers")
            .iter()
            .map(|p| p["pushkey"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    assert_eq!(server.post("/_matrix/client/v3/pushers/set", Some(&other_token), pusher("other")).await.0, 200);
    assert_eq!(server.post("/_matrix/client/v3/pushers/set", alice.token(), pusher("mine")).await.0, 200);
    let change = json!({"new_password": "second", "logout_devices": false,
        "auth": {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": alice.user_id}, "password": "superuser"}});
    let (status, body) = server.post("/_matrix/client/v3/account/password", alice.token(), change).await;
    assert_eq!(status, 200, "{body}");
    // The other session still works (logout_devices: false) but its pusher is gone.
    let (status, body) = server.get("/_matrix/client/v3/pushers", Some(&other_token)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(pushkeys(body), ["mine"]);
    // A logout takes the session's pushers with it.
    assert_eq!(server.post("/_matrix/client/v3/pushers/set", Some(&other_token), pusher("other")).await.0, 200);
    assert_eq!(server.post("/_matrix/client/v3/logout", Some(&other_token), json!({})).await.0, 200);
    let (_, body) = server.get("/_matrix/client/v3/pushers", alice.token()).await;
    assert_eq!(pushkeys(body), ["mine"]);
}

/// An initial sync carries the user's push rules even when they never changed them.
#[tokio::test]
async fn push_rules_come_down_in_an_initial_sync() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let push_rules = |body: &serde_json::Value| {
        body["account_data"]["events"]
            .as_array()
            .and_then(|events| events.iter().find(|e| e["type"] == "m.push_rules"))
            .map(|e| e["content"]["global"].clone())
    };
    let (status, body) = server.get("/_matrix/client/v3/sync", alice.token()).await;
    assert_eq!(status, 200, "{body}");
    let rules = push_rules(&body).expect("push rules in the initial sync");
    assert!(rules["override"].as_array().is_some_and(|o| !o.is_empty()), "{rules}");
    // An incremental sync with no change carries none.
    let since = body["next_batch"].as_str().expect("next_batch");
    let (_, body) = server.get(&format!("/_matrix/client/v3/sync?since={since}&timeout=0"), alice.token()).await;
    assert!(push_rules(&body).is_none(), "{body}");
}

/// Deleting a device asks for the password with the spec's full challenge (`params` too); a
/// wrong password is a failed stage (401, `M_FORBIDDEN`), another user's password a refusal.
#[tokio::test]
async fn deleting_a_device_needs_the_owners_password() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "superuser").await;
    let bob = server.register("bob", "bobspassword").await;
    let (_, other) = server.login("alice", "superuser").await;
    let device = other["device_id"].as_str().expect("device_id").to_owned();
    let path = format!("/_matrix/client/v3/devices/{}", enc(&device));
    let (status, body) = server.call("DELETE", &path, alice.token(), Some(json!({}))).await;
    assert_eq!(status, 401, "{body}");
    for key in ["session", "flows", "params"] {
        assert!(body.get(key).is_some(), "{key} in {body}");
    }
    let auth = |user: &str, password: &str| json!({"auth": {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": password}});
    let (status, body) = server.call("DELETE", &path, alice.token(), Some(auth(&alice.user_id, "wrong"))).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["errcode"], "M_FORBIDDEN", "{body}");
    assert!(body.get("params").is_some() && body.get("session").is_some(), "{body}");
    let result = server.call("DELETE", &path, alice.token(), Some(auth(&bob.user_id, "bobspassword"))).await;
    assert_error(&result, 403, "M_FORBIDDEN");
    assert_eq!(server.get(&path, alice.token()).await.0, 200, "the device is still there");
    let (status, body) = server.call("DELETE", &path, alice.token(), Some(auth(&alice.user_id, "superuser"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(server.get(&path, alice.token()).await.0, 404);
}

/// Forgetting a room: only once left; its history can no longer be paged; initial syncs leave it
/// out while an incremental sync from before the leave still shows the leave; a rejoin after a
/// new invite brings the history back.
#[tokio::test]
async fn a_forgotten_room_stays_out_of_the_way() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = create_room(&server, &alice, json!({"preset": "private_chat"})).await;
    let forget = format!("/_matrix/client/v3/rooms/{}/forget", enc(&room));
    assert_error(&server.post(&forget, alice.token(), json!({})).await, 400, "M_UNKNOWN");

    let invite = format!("/_matrix/client/v3/rooms/{}/invite", enc(&room));
    assert_eq!(server.post(&invite, alice.token(), json!({"user_id": bob.user_id})).await.0, 200);
    join(&server, &bob, &room).await;
    let before = crate::room_helpers::send_text(&server, &alice, &room, "Before leave").await;
    let (_, synced) = server.get("/_matrix/client/v3/sync", bob.token()).await;
    let token = synced["next_batch"].as_str().expect("next_batch").to_owned();
    let leave = format!("/_matrix/client/v3/rooms/{}/leave", enc(&room));
    assert_eq!(server.post(&leave, bob.token(), json!({})).await.0, 200);
    assert_eq!(server.post(&forget, bob.token(), json!({})).await.0, 200);

    let messages = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=100", enc(&room));
    assert_error(&server.get(&messages, bob.token()).await, 403, "M_FORBIDDEN");
    let include_leave = enc(r#"{"room":{"include_leave":true}}"#);
    let (_, initial) = server.get(&format!("/_matrix/client/v3/sync?filter={include_leave}"), bob.token()).await;
    assert!(initial["rooms"]["leave"].get(&room).is_none(), "{initial}");
    let path = format!("/_matrix/client/v3/sync?filter={include_leave}&since={token}&timeout=0");
    let (_, incremental) = server.get(&path, bob.token()).await;
    assert!(incremental["rooms"]["leave"].get(&room).is_some(), "{incremental}");

    // Invited again and joined: the history is there again.
    assert_eq!(server.post(&invite, alice.token(), json!({"user_id": bob.user_id})).await.0, 200);
    join(&server, &bob, &room).await;
    let (status, page) = server.get(&messages, bob.token()).await;
    assert_eq!(status, 200, "{page}");
    assert!(page["chunk"].as_array().expect("chunk").iter().any(|e| e["event_id"] == before.as_str()), "{page}");
}

/// Every event a client gets carries the user's membership at it (`unsigned.membership`,
/// MSC4115): "leave" before their join, "join" from their join on (Complement's
/// `TestMembershipOnEvents`).
#[tokio::test]
async fn events_carry_the_users_membership_at_them() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    let prejoin = crate::room_helpers::send_text(&server, &alice, &room, "prejoin").await;
    join(&server, &bob, &room).await;
    let postjoin = crate::room_helpers::send_text(&server, &alice, &room, "postjoin").await;

    let (_, synced) = server.get("/_matrix/client/v3/sync", bob.token()).await;
    let events = synced["rooms"]["join"][&room]["timeline"]["events"].as_array().expect("timeline").clone();
    let ids: Vec<&str> = events.iter().filter_map(|e| e["event_id"].as_str()).collect();
    assert!(ids.contains(&prejoin.as_str()) && ids.contains(&postjoin.as_str()), "{synced}");
    let mut joined = false;
    for event in &events {
        joined |= event["type"] == "m.room.member" && event["state_key"] == bob.user_id.as_str();
        let expected = if joined { "join" } else { "leave" };
        assert_eq!(event["unsigned"]["membership"], expected, "{event}");
    }
    let path = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=50", enc(&room));
    let (_, page) = server.get(&path, bob.token()).await;
    let membership_of = |id: &str| {
        page["chunk"]
            .as_array()
            .and_then(|c| c.iter().find(|e| e["event_id"] == id))
            .map(|e| e["unsigned"]["membership"].clone())
    };
    assert_eq!(membership_of(&prejoin), Some(json!("leave")), "{page}");
    assert_eq!(membership_of(&postjoin), Some(json!("join")), "{page}");
    let path = format!("/_matrix/client/v3/rooms/{}/event/{}", enc(&room), enc(&prejoin));
    let (_, event) = server.get(&path, alice.token()).await;
    assert_eq!(event["unsigned"]["membership"], "join", "alice was joined: {event}");
}

/// Third-party identifiers are not supported: the list is empty, adding, binding and token
/// requests are refused with `M_THREEPID_DENIED`, removing removes nothing, and the
/// capabilities say so.
#[tokio::test]
async fn third_party_identifiers_are_refused_clearly() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    assert_eq!(server.get("/_matrix/client/v3/account/3pid", alice.token()).await, (200, json!({"threepids": []})));
    let token_request = json!({"client_secret": "secret", "email": "a@example.org", "send_attempt": 1});
    for path in [
        "/_matrix/client/v3/account/3pid/email/requestToken",
        "/_matrix/client/v3/register/email/requestToken",
        "/_matrix/client/v3/account/password/email/requestToken",
    ] {
        assert_error(&server.post(path, alice.token(), token_request.clone()).await, 400, "M_THREEPID_DENIED");
    }
    let phone = json!({"client_secret": "secret", "country": "GB", "phone_number": "0770", "send_attempt": 1});
    assert_error(
        &server.post("/_matrix/client/v3/account/3pid/msisdn/requestToken", alice.token(), phone).await,
        400,
        "M_THREEPID_DENIED",
    );
    let add = json!({"client_secret": "secret", "sid": "1"});
    assert_error(
        &server.post("/_matrix/client/v3/account/3pid/add", alice.token(), add).await,
        400,
        "M_THREEPID_DENIED",
    );
    let bind = json!({"client_secret": "secret", "sid": "1", "id_server": "id.example", "id_access_token": "t"});
    assert_error(
        &server.post("/_matrix/client/v3/account/3pid/bind", alice.token(), bind).await,
        400,
        "M_THREEPID_DENIED",
    );
    let removal = json!({"medium": "email", "address": "a@example.org"});
    for path in ["/_matrix/client/v3/account/3pid/delete", "/_matrix/client/v3/account/3pid/unbind"] {
        assert_eq!(
            server.post(path, alice.token(), removal.clone()).await,
            (200, json!({"id_server_unbind_result": "no-support"}))
        );
    }
    let capabilities = server.get("/_matrix/client/v3/capabilities", alice.token()).await;
    assert_eq!(capabilities.1["capabilities"]["m.3pid_changes"]["enabled"], false);
}

/// `m.ignored_user_list`: invites from ignored users stay out of `/sync` (Complement's
/// `TestInviteFromIgnoredUsersDoesNotAppearInSync`), and their messages out of the sync
/// timeline, `/messages` and `/context`.
#[tokio::test]
async fn ignored_users_invites_and_messages_are_hidden() {
    let server = TestServer::start().await;
    let (alice, bob, chris) = (
        server.register("alice", "pw").await,
        server.register("bob", "pw").await,
        server.register("chris", "pw").await,
    );
    let shared = create_room(&server, &chris, json!({"preset": "public_chat"})).await;
    for who in [&alice, &bob] {
        join(&server, who, &shared).await;
    }
    let ignore = json!({"ignored_users": {bob.user_id.clone(): {}}});
    let path = format!("/_matrix/client/v3/user/{}/account_data/m.ignored_user_list", enc(&alice.user_id));
    assert_eq!(server.put(&path, alice.token(), ignore).await.0, 200);
    let since = server.get("/_matrix/client/v3/sync", alice.token()).await.1["next_batch"].as_str().unwrap().to_owned();

    let bob_room = create_room(&server, &bob, json!({"preset": "private_chat", "invite": [alice.user_id]})).await;
    let chris_room = create_room(&server, &chris, json!({"preset": "private_chat", "invite": [alice.user_id]})).await;
    send_text(&server, &chris, &shared, "from chris").await;
    send_text(&server, &bob, &shared, "from bob").await;
    let last = send_text(&server, &chris, &shared, "chris again").await;

    let texts = |events: &Value| -> Vec<String> {
        events.as_array().unwrap().iter().filter_map(|e| e["content"]["body"].as_str().map(ToOwned::to_owned)).collect()
    };
    for query in [format!("since={since}&timeout=0"), String::new()] {
        let sync = server.get(&format!("/_matrix/client/v3/sync?{query}"), alice.token()).await.1;
        assert!(sync["rooms"]["invite"].get(&bob_room).is_none(), "{sync}");
        assert!(sync["rooms"]["invite"].get(&chris_room).is_some(), "{sync}");
        assert_eq!(texts(&sync["rooms"]["join"][&shared]["timeline"]["events"]), ["from chris", "chris again"]);
    }
    let messages =
        server.get(&format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=20", enc(&shared)), alice.token()).await;
    assert_eq!(texts(&messages.1["chunk"]), ["chris again", "from chris"]);
    let context =
        server.get(&format!("/_matrix/client/v3/rooms/{}/context/{}", enc(&shared), enc(&last)), alice.token()).await;
    assert_eq!(texts(&context.1["events_before"]), ["from chris"], "{}", context.1);
    // Bob's own view is untouched.
    let own = server.get(&format!("/_matrix/client/v3/rooms/{}/messages?dir=b", enc(&shared)), bob.token()).await;
    assert_eq!(texts(&own.1["chunk"]), ["chris again", "from bob", "from chris"]);
}
