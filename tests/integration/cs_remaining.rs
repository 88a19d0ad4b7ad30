//! The last client-server items of issue #14 that are not MSCs: `limited` in every `/sync`
//! timeline, `state_after` (MSC4222, spec v1.16; Complement's msc4222 `TestSync`), room and user
//! reports, and what `/versions` and `/capabilities` advertise.

use serde_json::{Value, json};

use crate::{
    harness::{Session, TestServer, assert_error, enc},
    room_helpers::{create_room, join, put_state, send_text},
};

async fn sync(server: &TestServer, who: &Session, query: &str) -> Value {
    let (status, body) = server.get(&format!("/_matrix/client/v3/sync?{query}"), who.token()).await;
    assert_eq!(status, 200, "sync: {body}");
    body
}

fn filter(value: Value) -> String {
    format!("filter={}", enc(&value.to_string()))
}

/// Every joined and left room's timeline says `limited`, `false` included (ruma leaves `false`
/// out; Synapse always sends it).
#[tokio::test]
async fn every_sync_timeline_says_whether_it_is_limited() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    let left = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;
    join(&server, &bob, &left).await;

    let big = filter(json!({"room": {"timeline": {"limit": 50}}}));
    let first = sync(&server, &alice, &big).await;
    assert_eq!(first["rooms"]["join"][&room]["timeline"]["limited"], false, "{first}");
    let small = filter(json!({"room": {"timeline": {"limit": 1}}}));
    let limited = sync(&server, &alice, &small).await;
    assert_eq!(limited["rooms"]["join"][&room]["timeline"]["limited"], true, "{limited}");

    // Incremental: a new message, and a room bob leaves.
    let since = sync(&server, &bob, &big).await["next_batch"].as_str().unwrap().to_owned();
    send_text(&server, &alice, &room, "hello").await;
    let path = format!("/_matrix/client/v3/rooms/{}/leave", enc(&left));
    assert_eq!(server.post(&path, bob.token(), json!({})).await.0, 200);
    let next = sync(&server, &bob, &format!("since={since}&{big}")).await;
    assert_eq!(next["rooms"]["join"][&room]["timeline"]["limited"], false, "{next}");
    assert_eq!(next["rooms"]["leave"][&left]["timeline"]["limited"], false, "{next}");
}

/// The member events of a room's state whose sender is in `events`.
fn member_senders(events: &Value) -> Vec<String> {
    let mut senders: Vec<String> = events
        .as_array()
        .into_iter()
        .flatten()
        .filter(|event| event["type"] == "m.room.member")
        .filter_map(|event| event["sender"].as_str().map(str::to_owned))
        .collect();
    senders.sort();
    senders.dedup();
    senders
}

/// Complement's msc4222 `TestSync`: with `use_state_after` and lazy-loaded members, an initial
/// sync's `state_after` has the member event of every timeline sender, in public and private
/// rooms; and an incremental sync's `state_after` has the state changed in the timeline.
#[tokio::test]
async fn use_state_after_gives_the_state_at_the_end_of_the_timeline() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let public = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &public).await;
    let private = create_room(&server, &alice, json!({"preset": "private_chat"})).await;
    let invite = format!("/_matrix/client/v3/rooms/{}/invite", enc(&private));
    assert_eq!(server.post(&invite, alice.token(), json!({"user_id": bob.user_id})).await.0, 200);
    join(&server, &bob, &private).await;

    let lazy = filter(json!({"room": {"timeline": {"limit": 20}, "state": {"lazy_load_members": true}}}));
    for query in [format!("use_state_after=true&{lazy}"), format!("org.matrix.msc4222.use_state_after=true&{lazy}")] {
        let body = sync(&server, &alice, &query).await;
        for room in [&public, &private] {
            let joined = &body["rooms"]["join"][room];
            assert!(joined.get("state").is_none(), "no `state` with use_state_after: {joined}");
            let mut senders: Vec<String> = joined["timeline"]["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|event| event["sender"].as_str().unwrap().to_owned())
                .collect();
            senders.sort();
            senders.dedup();
            assert_eq!(senders, [alice.user_id.clone(), bob.user_id.clone()], "{joined}");
            assert_eq!(member_senders(&joined["state_after"]["events"]), senders, "{joined}");
        }
    }

    // Incremental: the topic set in the timeline is in `state_after` too; without the flag the
    // `state` before the timeline does not have it.
    let since = sync(&server, &alice, &lazy).await["next_batch"].as_str().unwrap().to_owned();
    put_state(&server, &alice, &public, "m.room.topic", json!({"topic": "after"})).await;
    let after = sync(&server, &alice, &format!("since={since}&use_state_after=true&{lazy}")).await;
    let state_after = &after["rooms"]["join"][&public]["state_after"]["events"];
    assert!(
        state_after.as_array().unwrap().iter().any(|e| e["type"] == "m.room.topic" && e["content"]["topic"] == "after"),
        "{after}"
    );
    let before = sync(&server, &alice, &format!("since={since}&{lazy}")).await;
    let state = &before["rooms"]["join"][&public]["state"]["events"];
    assert!(!state.as_array().into_iter().flatten().any(|e| e["type"] == "m.room.topic"), "{before}");
}

/// `/rooms/{roomId}/report` (v1.13) and `/users/{userId}/report` (v1.14), as Synapse answers:
/// an unknown room is 404, a report of any user is 200 (unknown and remote users included, so
/// reports say nothing about who exists), and an overlong reason is 400.
#[tokio::test]
async fn rooms_and_users_can_be_reported() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;

    let report_room = |room: &str| format!("/_matrix/client/v3/rooms/{}/report", enc(room));
    let done = server.post(&report_room(&room), bob.token(), json!({"reason": "spam"})).await;
    assert_eq!(done, (200, json!({})));
    let unknown = server.post(&report_room("!unknown:localhost"), bob.token(), json!({"reason": "spam"})).await;
    assert_error(&unknown, 404, "M_NOT_FOUND");
    let no_reason = server.post(&report_room(&room), bob.token(), json!({})).await;
    assert_eq!(no_reason.0, 200, "a missing reason reads as empty: {}", no_reason.1);
    let too_long = server.post(&report_room(&room), bob.token(), json!({"reason": "x".repeat(1001)})).await;
    assert_error(&too_long, 400, "M_BAD_JSON");
    let anonymous = server.post(&report_room(&room), None, json!({"reason": "spam"})).await;
    assert_error(&anonymous, 401, "M_MISSING_TOKEN");

    let report_user = |user: &str| format!("/_matrix/client/v3/users/{}/report", enc(user));
    for user in [alice.user_id.as_str(), "@nobody:localhost", "@someone:elsewhere.example"] {
        let done = server.post(&report_user(user), bob.token(), json!({"reason": "abuse"})).await;
        assert_eq!(done, (200, json!({})), "reporting {user}");
    }
    let too_long = server.post(&report_user(&alice.user_id), bob.token(), json!({"reason": "x".repeat(1001)})).await;
    assert_error(&too_long, 400, "M_BAD_JSON");
}

/// `/versions` lists only the spec versions whose required endpoints are served (up to v1.16),
/// and the MSCs implemented, under Synapse's names; `/capabilities` has `m.profile_fields`.
#[tokio::test]
async fn versions_and_capabilities_advertise_what_is_implemented() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let (status, versions) = server.get("/_matrix/client/versions", None).await;
    assert_eq!(status, 200);
    let listed: Vec<&str> = versions["versions"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    for version in ["v1.1", "v1.11", "v1.13", "v1.14", "v1.16"] {
        assert!(listed.contains(&version), "{version} in {versions}");
    }
    for version in ["v1.17", "v1.18", "v1.19"] {
        assert!(!listed.contains(&version), "{version} not in {versions}");
    }
    for feature in ["org.matrix.msc3391", "org.matrix.msc3874", "org.matrix.msc4155", "org.matrix.simplified_msc3575"] {
        assert_eq!(versions["unstable_features"][feature], true, "{feature} in {versions}");
    }
    let (_, capabilities) = server.get("/_matrix/client/v3/capabilities", alice.token()).await;
    assert_eq!(capabilities["capabilities"]["m.profile_fields"]["enabled"], true, "{capabilities}");

    // The endpoints of the versions listed are served: none answers "unrecognised".
    let room = create_room(&server, &alice, json!({})).await;
    let room_report = server
        .post(&format!("/_matrix/client/v3/rooms/{}/report", enc(&room)), alice.token(), json!({"reason": ""}))
        .await;
    assert_eq!(room_report.0, 200, "{}", room_report.1);
    let summary = server.get(&format!("/_matrix/client/v1/room_summary/{}", enc(&room)), alice.token()).await;
    assert_eq!(summary.0, 200, "{}", summary.1);
}

/// Token login (v1.7, MSC3882; Element's QR code sign-in): a logged-in device gets a token after
/// the password, and a new device logs in with it once; the flow and capability are advertised.
#[tokio::test]
async fn a_login_token_from_an_existing_session_logs_a_new_device_in_once() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "secret-pw").await;
    let (_, flows) = server.get("/_matrix/client/v3/login", None).await;
    let token_flow = flows["flows"].as_array().unwrap().iter().find(|f| f["type"] == "m.login.token").cloned();
    assert_eq!(token_flow, Some(json!({"type": "m.login.token", "get_login_token": true})), "{flows}");
    let (_, capabilities) = server.get("/_matrix/client/v3/capabilities", alice.token()).await;
    assert_eq!(capabilities["capabilities"]["m.get_login_token"]["enabled"], true, "{capabilities}");

    const GET_TOKEN: &str = "/_matrix/client/v1/login/get_token";
    let challenge = server.post(GET_TOKEN, alice.token(), json!({})).await;
    assert_eq!(challenge.0, 401, "the password is asked first: {}", challenge.1);
    assert!(challenge.1["flows"].is_array(), "{}", challenge.1);
    let auth = |password: &str| {
        json!({"auth": {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": alice.user_id},
                        "password": password, "session": challenge.1["session"]}})
    };
    assert_eq!(server.post(GET_TOKEN, alice.token(), auth("wrong")).await.0, 401);
    let (status, issued) = server.post(GET_TOKEN, alice.token(), auth("secret-pw")).await;
    assert_eq!(status, 200, "{issued}");
    let token = issued["login_token"].as_str().unwrap().to_owned();
    assert!(issued["expires_in_ms"].as_u64().unwrap() > 0, "{issued}");

    let login = |token: &str| json!({"type": "m.login.token", "token": token, "initial_device_display_name": "new"});
    let (status, new) = server.post("/_matrix/client/v3/login", None, login(&token)).await;
    assert_eq!(status, 200, "{new}");
    assert_eq!(new["user_id"], alice.user_id);
    assert_ne!(new["device_id"], alice.device_id.as_str());
    let new = Session::from_response(&new);
    let (_, whoami) = server.get("/_matrix/client/v3/account/whoami", new.token()).await;
    assert_eq!((&whoami["user_id"], &whoami["device_id"]), (&json!(alice.user_id), &json!(new.device_id)));

    assert_error(&server.post("/_matrix/client/v3/login", None, login(&token)).await, 403, "M_FORBIDDEN");
    assert_error(&server.post("/_matrix/client/v3/login", None, login("made-up")).await, 403, "M_FORBIDDEN");
    assert_error(&server.post(GET_TOKEN, None, json!({})).await, 401, "M_MISSING_TOKEN");
}

/// Complement's `TestPushRuleRoomUpgrade` (local users): a room's push rule is copied to its
/// upgrade, for the user who upgrades and for one who joins the new room later.
#[tokio::test]
async fn room_push_rules_carry_over_to_an_upgraded_room() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let alice2 = server.register("alice2", "pw").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat", "room_version": "10"})).await;
    join(&server, &alice2, &room).await;
    for who in [&alice, &alice2] {
        let path = format!("/_matrix/client/v3/pushrules/global/room/{}", enc(&room));
        assert_eq!(server.put(&path, who.token(), json!({"actions": ["dont_notify"]})).await.0, 200);
    }
    let upgrade = format!("/_matrix/client/v3/rooms/{}/upgrade", enc(&room));
    let (status, upgraded) = server.post(&upgrade, alice.token(), json!({"new_version": "11"})).await;
    assert_eq!(status, 200, "{upgraded}");
    let new_room = upgraded["replacement_room"].as_str().unwrap().to_owned();
    join(&server, &alice2, &new_room).await;
    for who in [&alice, &alice2] {
        let (_, rules) = server.get("/_matrix/client/v3/pushrules/", who.token()).await;
        let room_rules = rules["global"]["room"].as_array().unwrap();
        for id in [&room, &new_room] {
            let rule = room_rules.iter().find(|rule| rule["rule_id"] == json!(id));
            assert_eq!(
                rule.map(|rule| &rule["actions"][0]),
                Some(&json!("dont_notify")),
                "{id} for {}: {rules}",
                who.user_id
            );
        }
    }
}
