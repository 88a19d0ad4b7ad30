//! `/sync` over HTTP: initial and incremental syncs, every event exactly once and in order,
//! gaps with `limited` and `prev_batch`, state inside a gap, lazy-loaded members, long-polling,
//! invites, leaves, account data and filters.

use std::time::Duration;

use serde_json::{Value, json};

use crate::{
    harness::{Session, TestServer, assert_error, enc},
    rooms::{create_room, messages, send_text},
};

pub(crate) async fn sync(server: &TestServer, who: &Session, query: &str) -> Value {
    let (status, body) = server.get(&format!("/_matrix/client/v3/sync?{query}"), who.token()).await;
    assert_eq!(status, 200, "sync?{query}: {body}");
    assert!(body["next_batch"].is_string(), "{body}");
    body
}

/// Starts a long-poll from `token`, checks that it is still waiting while nothing happens, then
/// runs `trigger` and returns its output with the sync response it woke. Had the sync timed out
/// instead, its response would hold nothing, so the callers' content checks prove the wake-up.
pub(crate) async fn wakes<T>(
    server: &TestServer,
    who: &Session,
    token: &str,
    trigger: impl std::future::Future<Output = T>,
) -> (T, Value) {
    let query = format!("since={token}&timeout=120000");
    let poll = sync(server, who, &query);
    tokio::pin!(poll);
    tokio::select! {
        body = &mut poll => panic!("the sync returned with nothing new: {body}"),
        () = tokio::time::sleep(Duration::from_millis(300)) => {}
    }
    tokio::join!(trigger, async {
        tokio::time::timeout(Duration::from_secs(60), &mut poll).await.expect("the sync returns after the trigger")
    })
}

pub(crate) fn since(body: &Value) -> String {
    body["next_batch"].as_str().unwrap().to_owned()
}

pub(crate) fn filter(filter: Value) -> String {
    format!("filter={}", enc(&filter.to_string()))
}

pub(crate) fn joined<'a>(body: &'a Value, room: &str) -> &'a Value {
    &body["rooms"]["join"][room]
}

pub(crate) fn events<'a>(section: &'a Value, part: &str) -> Vec<&'a Value> {
    section[part]["events"].as_array().map(|events| events.iter().collect()).unwrap_or_default()
}

fn bodies(events: &[&Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .map(|e| e["content"]["body"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn has_state(section: &Value, kind: &str, state_key: &str) -> bool {
    events(section, "state").iter().any(|e| e["type"] == kind && e["state_key"] == state_key)
}

pub(crate) async fn join(server: &TestServer, who: &Session, room: &str) {
    let (status, body) =
        server.post(&format!("/_matrix/client/v3/rooms/{}/join", enc(room)), who.token(), json!({})).await;
    assert_eq!(status, 200, "join: {body}");
}

pub(crate) async fn send(server: &TestServer, who: &Session, room: &str, text: &str) {
    let (status, body) = send_text(server, who, room, text, text).await;
    assert_eq!(status, 200, "send {text}: {body}");
}

#[tokio::test]
async fn every_event_is_seen_once_and_in_order() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;

    let first = sync(&server, &bob, "").await;
    let section = joined(&first, &room);
    assert!(
        has_state(section, "m.room.create", "")
            || events(section, "timeline").iter().any(|e| e["type"] == "m.room.create")
    );
    assert_eq!(section["summary"]["m.joined_member_count"], 2, "{section}");
    assert_eq!(section["unread_notifications"]["notification_count"], 0);
    // Timeline events carry no room ID in the sync format.
    assert!(events(section, "timeline").iter().all(|e| e.get("room_id").is_none()));

    let big_timeline = filter(json!({"room": {"timeline": {"limit": 50}}}));
    let mut token = since(&first);
    let mut seen = Vec::new();
    let mut event_ids = Vec::new();
    for round in 0..4 {
        for i in 0..3 {
            send(&server, &alice, &room, &format!("m{round}-{i}")).await;
        }
        let body = sync(&server, &bob, &format!("since={token}&timeout=0&{big_timeline}")).await;
        let timeline = events(joined(&body, &room), "timeline");
        assert_eq!(joined(&body, &room)["timeline"]["limited"], json!(false), "{body}");
        seen.extend(bodies(&timeline));
        event_ids.extend(timeline.iter().map(|e| e["event_id"].as_str().unwrap().to_owned()));
        token = since(&body);
        // Nothing new: the room is not in the response.
        let empty = sync(&server, &bob, &format!("since={token}&timeout=0")).await;
        assert!(empty["rooms"]["join"].get(&room).is_none(), "{empty}");
        token = since(&empty);
    }
    let expected: Vec<String> = (0..4).flat_map(|r| (0..3).map(move |i| format!("m{r}-{i}"))).collect();
    assert_eq!(seen, expected);
    let mut unique = event_ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), event_ids.len(), "an event was sent twice");
}

#[tokio::test]
async fn a_gap_is_limited_and_prev_batch_fills_it() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let room = create_room(&server, &alice, json!({"name": "Before"})).await;
    let small = filter(json!({"room": {"timeline": {"limit": 5}}}));

    // The initial sync is limited too: the room has more than five events.
    let first = sync(&server, &alice, &small).await;
    let section = joined(&first, &room);
    assert_eq!(section["timeline"]["limited"], true, "{section}");
    assert_eq!(events(section, "timeline").len(), 5);
    assert!(has_state(section, "m.room.create", ""), "state before the timeline: {section}");

    // In the gap: a name change, then fifteen messages.
    let (status, _) = server
        .put(
            &format!("/_matrix/client/v3/rooms/{}/state/m.room.name/", enc(&room)),
            alice.token(),
            json!({"name": "In the gap"}),
        )
        .await;
    assert_eq!(status, 200);
    for i in 0..15 {
        send(&server, &alice, &room, &format!("g{i}")).await;
    }
    let body = sync(&server, &alice, &format!("since={}&{small}", since(&first))).await;
    let section = joined(&body, &room);
    assert_eq!(section["timeline"]["limited"], true, "{section}");
    let timeline = events(section, "timeline");
    assert_eq!(bodies(&timeline), (10..15).map(|i| format!("g{i}")).collect::<Vec<_>>());
    let name = events(section, "state").into_iter().find(|e| e["type"] == "m.room.name").cloned();
    assert_eq!(name.map(|e| e["content"]["name"].clone()), Some(json!("In the gap")), "{section}");
    // Only what changed is in the state: not the create event again.
    assert!(!has_state(section, "m.room.create", ""), "{section}");

    // /messages from prev_batch returns exactly the missing events, newest first.
    let prev_batch = section["timeline"]["prev_batch"].as_str().unwrap();
    let (status, page) = messages(&server, &alice, &room, &format!("dir=b&limit=11&from={prev_batch}")).await;
    assert_eq!(status, 200, "{page}");
    let chunk: Vec<&Value> = page["chunk"].as_array().unwrap().iter().collect();
    assert_eq!(bodies(&chunk), (0..10).rev().map(|i| format!("g{i}")).collect::<Vec<_>>());
    assert_eq!(chunk.len(), 11, "{page}");
    assert_eq!(chunk[10]["type"], "m.room.name");
    assert_eq!(chunk[10]["content"]["name"], "In the gap");
}

#[tokio::test]
async fn lazy_loading_sends_the_members_the_timeline_needs() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let carol = server.register("carol", "pw").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;
    join(&server, &carol, &room).await;
    send(&server, &carol, &room, "from carol").await;

    let lazy = filter(json!({"room": {"timeline": {"limit": 1}, "state": {"lazy_load_members": true}}}));
    let body = sync(&server, &alice, &lazy).await;
    let section = joined(&body, &room);
    assert_eq!(bodies(&events(section, "timeline")), vec!["from carol"]);
    assert!(has_state(section, "m.room.member", &carol.user_id), "the sender's member event: {section}");
    assert!(has_state(section, "m.room.member", &alice.user_id), "the user's own member event: {section}");
    assert!(!has_state(section, "m.room.member", &bob.user_id), "bob sent nothing in the timeline: {section}");
    assert!(has_state(section, "m.room.power_levels", ""), "other state is complete: {section}");

    // Without lazy-loading every member is there.
    let body = sync(&server, &alice, &filter(json!({"room": {"timeline": {"limit": 1}}}))).await;
    assert!(has_state(joined(&body, &room), "m.room.member", &bob.user_id));

    // Incrementally: bob speaks, and his member event comes with his message.
    let token = since(&body);
    send(&server, &bob, &room, "from bob").await;
    let body = sync(&server, &alice, &format!("since={token}&{lazy}")).await;
    let section = joined(&body, &room);
    assert_eq!(bodies(&events(section, "timeline")), vec!["from bob"]);
    assert!(has_state(section, "m.room.member", &bob.user_id), "{section}");
    assert!(!has_state(section, "m.room.member", &carol.user_id), "{section}");
}

#[tokio::test]
async fn a_long_poll_wakes_on_another_users_message() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;
    let token = since(&sync(&server, &bob, "").await);

    // A short timeout with nothing new returns an empty sync with a usable token.
    let empty = sync(&server, &bob, &format!("since={token}&timeout=50")).await;
    assert!(empty.get("rooms").is_none_or(|rooms| rooms["join"].get(&room).is_none()), "{empty}");
    let token = since(&empty);

    let (_, body) = wakes(&server, &bob, &token, send(&server, &alice, &room, "wake up")).await;
    // Had it timed out, the sync would hold nothing: the message proves it was woken.
    assert_eq!(bodies(&events(joined(&body, &room), "timeline")), vec!["wake up"], "{body}");
}

#[tokio::test]
async fn invites_joins_and_leaves_appear() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = create_room(&server, &alice, json!({"name": "Invite only"})).await;
    let token = since(&sync(&server, &bob, "").await);

    let (status, body) = server
        .post(
            &format!("/_matrix/client/v3/rooms/{}/invite", enc(&room)),
            alice.token(),
            json!({"user_id": bob.user_id}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let body = sync(&server, &bob, &format!("since={token}")).await;
    let invite = &body["rooms"]["invite"][&room]["invite_state"]["events"];
    let invite: Vec<&Value> = invite.as_array().unwrap_or_else(|| panic!("no invite: {body}")).iter().collect();
    let find = |kind: &str, key: &str| invite.iter().find(|e| e["type"] == kind && e["state_key"] == key).copied();
    assert_eq!(find("m.room.member", &bob.user_id).unwrap()["content"]["membership"], "invite");
    assert_eq!(find("m.room.member", &alice.user_id).unwrap()["content"]["membership"], "join");
    assert_eq!(find("m.room.name", "").unwrap()["content"]["name"], "Invite only");
    assert!(find("m.room.create", "").is_some() && find("m.room.join_rules", "").is_some());
    assert!(body["rooms"]["join"].get(&room).is_none());
    let token = since(&body);
    // The invite is shown once.
    let body = sync(&server, &bob, &format!("since={token}&timeout=0")).await;
    assert!(body["rooms"]["invite"].get(&room).is_none(), "{body}");

    // After joining (with no request body at all, as matrix-nio sends it), the room comes
    // with its full state.
    let (status, body) =
        server.call("POST", &format!("/_matrix/client/v3/rooms/{}/join", enc(&room)), bob.token(), None).await;
    assert_eq!(status, 200, "join without a body: {body}");
    let body = sync(&server, &bob, &format!("since={token}")).await;
    let section = joined(&body, &room);
    assert!(body["rooms"]["invite"].get(&room).is_none(), "{body}");
    assert!(has_state(section, "m.room.create", "") && has_state(section, "m.room.name", ""), "{section}");
    let token = since(&body);

    // Leaving: a leave section whose timeline ends with the leave.
    send(&server, &alice, &room, "before the leave").await;
    let (status, _) =
        server.post(&format!("/_matrix/client/v3/rooms/{}/leave", enc(&room)), bob.token(), json!({})).await;
    assert_eq!(status, 200);
    send(&server, &alice, &room, "after the leave").await;
    let body = sync(&server, &bob, &format!("since={token}")).await;
    assert!(body["rooms"]["join"].get(&room).is_none(), "{body}");
    let left = &body["rooms"]["leave"][&room];
    let timeline = events(left, "timeline");
    assert_eq!(bodies(&timeline), vec!["before the leave"], "{left}");
    let last = timeline.last().unwrap();
    assert_eq!(
        (last["type"].as_str(), last["state_key"].as_str()),
        (Some("m.room.member"), Some(bob.user_id.as_str()))
    );
    assert_eq!(last["content"]["membership"], "leave");
    let token = since(&body);
    send(&server, &alice, &room, "later").await;
    let body = sync(&server, &bob, &format!("since={token}&timeout=0")).await;
    assert!(
        body.get("rooms").is_none_or(|r| r["leave"].get(&room).is_none() && r["join"].get(&room).is_none()),
        "{body}"
    );

    // Initial syncs show left rooms only when asked.
    let body = sync(&server, &bob, "").await;
    assert!(body["rooms"]["leave"].get(&room).is_none(), "{body}");
    let body = sync(&server, &bob, &filter(json!({"room": {"include_leave": true}}))).await;
    assert_eq!(bodies(&events(&body["rooms"]["leave"][&room], "timeline")), vec!["before the leave"], "{body}");
}

#[tokio::test]
async fn account_data_appears_once() {
    let server = TestServer::start().await;
    let bob = server.register("bob", "pw").await;
    let room = create_room(&server, &bob, json!({})).await;
    let user = enc(&bob.user_id);
    let global_path = format!("/_matrix/client/v3/user/{user}/account_data/org.example.test");
    let put_global = |value: i64| server.put(&global_path, bob.token(), json!({"v": value}));
    assert_eq!(put_global(1).await.0, 200);
    let (status, _) = server
        .put(
            &format!("/_matrix/client/v3/user/{user}/rooms/{}/account_data/org.example.room", enc(&room)),
            bob.token(),
            json!({"r": true}),
        )
        .await;
    assert_eq!(status, 200);

    let global = |body: &Value| -> Vec<Value> {
        body["account_data"]["events"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e["type"] == "org.example.test")
            .collect()
    };
    let body = sync(&server, &bob, "").await;
    assert_eq!(global(&body), vec![json!({"type": "org.example.test", "content": {"v": 1}})]);
    let room_data = events(joined(&body, &room), "account_data");
    assert_eq!(room_data, vec![&json!({"type": "org.example.room", "content": {"r": true}})]);

    let body = sync(&server, &bob, &format!("since={}&timeout=0", since(&body))).await;
    assert!(global(&body).is_empty() && body["rooms"]["join"].get(&room).is_none(), "{body}");
    let token = since(&body);
    assert_eq!(put_global(2).await.0, 200);
    assert_eq!(put_global(3).await.0, 200);
    let body = sync(&server, &bob, &format!("since={token}")).await;
    assert_eq!(global(&body), vec![json!({"type": "org.example.test", "content": {"v": 3}})]);
    let body = sync(&server, &bob, &format!("since={}&timeout=0", since(&body))).await;
    assert!(global(&body).is_empty(), "{body}");

    // Account data filters.
    let none = filter(json!({"account_data": {"not_types": ["org.example.*"]}}));
    assert!(global(&sync(&server, &bob, &none).await).is_empty());
}

#[tokio::test]
async fn filters_by_id_and_inline_and_bad_parameters() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let room = create_room(&server, &alice, json!({"name": "Filtered"})).await;
    let other = create_room(&server, &alice, json!({})).await;
    for i in 0..3 {
        send(&server, &alice, &room, &format!("f{i}")).await;
    }
    let (status, created) = server
        .post(
            &format!("/_matrix/client/v3/user/{}/filter", enc(&alice.user_id)),
            alice.token(),
            json!({"room": {"timeline": {"limit": 2, "types": ["m.room.message"]}, "state": {"types": ["m.room.name"]}}}),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let id = created["filter_id"].as_str().unwrap();
    let body = sync(&server, &alice, &format!("filter={id}")).await;
    let section = joined(&body, &room);
    let timeline = events(section, "timeline");
    assert_eq!(bodies(&timeline), vec!["f1", "f2"]);
    assert_eq!(timeline.len(), 2);
    assert_eq!(section["timeline"]["limited"], true);
    let state = events(section, "state");
    assert!(!state.is_empty() && state.iter().all(|e| e["type"] == "m.room.name"), "{section}");

    let not_other = filter(json!({"room": {"not_rooms": [other]}}));
    let body = sync(&server, &alice, &not_other).await;
    assert!(body["rooms"]["join"].get(&other).is_none() && body["rooms"]["join"].get(&room).is_some());
    let only_other = filter(json!({"room": {"rooms": [other], "timeline": {"not_senders": [alice.user_id]}}}));
    let body = sync(&server, &alice, &only_other).await;
    assert!(body["rooms"]["join"].get(&room).is_none());
    assert!(events(joined(&body, &other), "timeline").is_empty(), "{body}");

    for bad in ["since=nonsense", "since=s1_x", "filter=999", "filter=abc", "filter=%7Bbroken"] {
        let result = server.get(&format!("/_matrix/client/v3/sync?{bad}"), alice.token()).await;
        assert_error(&result, 400, "M_INVALID_PARAM");
    }
    let result = server.get("/_matrix/client/v3/sync", None).await;
    assert_error(&result, 401, "M_MISSING_TOKEN");
    // full_state returns the room even with nothing new.
    let token = since(&sync(&server, &alice, "").await);
    let body = sync(&server, &alice, &format!("since={token}&full_state=true")).await;
    assert!(has_state(joined(&body, &room), "m.room.create", ""), "{body}");
}

#[tokio::test]
async fn shutdown_ends_a_long_poll_with_a_response() {
    let server = TestServer::start().await;
    let bob = server.register("bob", "pw").await;
    let token = since(&sync(&server, &bob, "").await);
    let request = server
        .http
        .get(server.url(&format!("/_matrix/client/v3/sync?since={token}&timeout=300000")))
        .bearer_auth(bob.access_token.clone())
        .send();
    let poll = tokio::spawn(async move {
        let response = request.await.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let body: Value = response.json().await.map_err(|e| e.to_string())?;
        Ok::<_, String>((status, body))
    });
    // Let the sync start waiting, then stop the server.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!poll.is_finished(), "the sync must wait while nothing happens");
    let code = tokio::task::spawn_blocking(move || server.stop()).await.unwrap();
    assert_eq!(code, Some(0));
    // Without the wake-up the grace period would run out and the connection be cut.
    let (status, body) = poll.await.unwrap().expect("the sync is answered before the server exits");
    assert_eq!(status, 200, "{body}");
    assert!(body["next_batch"].is_string(), "{body}");
}

#[tokio::test]
async fn to_device_messages_device_lists_and_key_counts() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let carol = server.register("carol", "pw").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;

    let otk = json!({"one_time_keys": {"signed_curve25519:AAAAAQ": {"key": "k1"}, "signed_curve25519:AAAAAg": {"key": "k2"}}});
    assert_eq!(server.post("/_matrix/client/v3/keys/upload", bob.token(), otk).await.0, 200);
    let first = sync(&server, &bob, "").await;
    assert_eq!(first["device_one_time_keys_count"]["signed_curve25519"], 2, "{first}");
    let token = since(&first);

    // A to-device message wakes a waiting sync.
    let message = json!({"messages": {bob.user_id.clone(): {bob.device_id.clone(): {"secret": 1}}}});
    let (sent, body) = wakes(
        &server,
        &bob,
        &token,
        server.put("/_matrix/client/v3/sendToDevice/org.example.ping/t1", alice.token(), message),
    )
    .await;
    assert_eq!(sent.0, 200, "{}", sent.1);
    assert_eq!(
        body["to_device"]["events"],
        json!([{"type": "org.example.ping", "sender": alice.user_id, "content": {"secret": 1}}]),
        "{body}"
    );
    // Delivered once: the next sync acknowledges it.
    let body = sync(&server, &bob, &format!("since={}&timeout=0", since(&body))).await;
    assert!(body["to_device"]["events"].as_array().is_none_or(|e| e.is_empty()), "{body}");
    let token = since(&body);

    // Key changes of users sharing a room show in device_lists; others' do not.
    for who in [&alice, &carol] {
        let keys = json!({"device_keys": {"user_id": who.user_id, "device_id": who.device_id, "algorithms": ["m.olm.v1.curve25519-aes-sha2"], "keys": {}}});
        assert_eq!(server.post("/_matrix/client/v3/keys/upload", who.token(), keys).await.0, 200);
    }
    let body = sync(&server, &bob, &format!("since={token}&timeout=0")).await;
    assert_eq!(body["device_lists"]["changed"], json!([alice.user_id]), "{body}");
    // `/keys/changes` reads the key position of sync tokens.
    let changes =
        server.get(&format!("/_matrix/client/v3/keys/changes?from={token}&to={}", since(&body)), bob.token()).await;
    assert_eq!(changes.0, 200, "{}", changes.1);
    assert_eq!(changes.1["changed"], json!([alice.user_id]));
}

#[tokio::test]
async fn the_sending_device_sees_its_transaction_ids() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let (status, login) = server.login("alice", "pw").await;
    assert_eq!(status, 200, "{login}");
    let other_device = Session::from_response(&login);
    let bob = server.register("bob", "pw").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;
    let (status, sent) = send_text(&server, &alice, &room, "txn-hello", "hello").await;
    assert_eq!(status, 200, "{sent}");
    let (status, redacted) = server
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/redact/{}/txn-redact",
                enc(&room),
                enc(sent["event_id"].as_str().unwrap())
            ),
            alice.token(),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{redacted}");

    let txn_of = |body: &Value, event_id: &Value| -> Value {
        let timeline = events(joined(body, &room), "timeline");
        let event = timeline.iter().find(|e| e["event_id"] == *event_id).unwrap_or_else(|| panic!("{body}"));
        event["unsigned"]["transaction_id"].clone()
    };
    let body = sync(&server, &alice, "").await;
    assert_eq!(txn_of(&body, &sent["event_id"]), "txn-hello");
    assert_eq!(txn_of(&body, &redacted["event_id"]), "txn-redact");
    for (who, body) in
        [("bob", sync(&server, &bob, "").await), ("alice's other device", sync(&server, &other_device, "").await)]
    {
        assert_eq!(txn_of(&body, &sent["event_id"]), Value::Null, "{who} must not see the transaction ID");
    }
}

#[tokio::test]
async fn typing_notifications_reach_syncs() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;
    let token = since(&sync(&server, &bob, "").await);
    let typing_path = format!("/_matrix/client/v3/rooms/{}/typing/{}", enc(&room), enc(&alice.user_id));

    // Typing wakes a waiting sync.
    let (typed, body) = wakes(
        &server,
        &bob,
        &token,
        server.put(&typing_path, alice.token(), json!({"typing": true, "timeout": 30000})),
    )
    .await;
    assert_eq!(typed.0, 200, "{}", typed.1);
    let typing =
        |body: &Value| events(joined(body, &room), "ephemeral").into_iter().find(|e| e["type"] == "m.typing").cloned();
    assert_eq!(typing(&body).map(|e| e["content"]["user_ids"].clone()), Some(json!([alice.user_id])), "{body}");
    let token = since(&body);
    let body = sync(&server, &bob, &format!("since={token}&timeout=0")).await;
    assert!(body["rooms"]["join"].get(&room).is_none(), "shown once: {body}");

    // Stopping is an empty list.
    assert_eq!(server.put(&typing_path, alice.token(), json!({"typing": false})).await.0, 200);
    let body = sync(&server, &bob, &format!("since={}", since(&body))).await;
    assert_eq!(typing(&body).map(|e| e["content"]["user_ids"].clone()), Some(json!([])), "{body}");

    // A notification expires by itself, and the expiry wakes a waiting sync.
    let token = since(&body);
    assert_eq!(server.put(&typing_path, alice.token(), json!({"typing": true, "timeout": 1500})).await.0, 200);
    let body = sync(&server, &bob, &format!("since={token}")).await;
    assert_eq!(typing(&body).map(|e| e["content"]["user_ids"].clone()), Some(json!([alice.user_id])), "{body}");
    let body = sync(&server, &bob, &format!("since={}&timeout=60000", since(&body))).await;
    assert_eq!(typing(&body).map(|e| e["content"]["user_ids"].clone()), Some(json!([])), "expired: {body}");

    // Only for oneself, and only in joined rooms.
    let bobs_path = format!("/_matrix/client/v3/rooms/{}/typing/{}", enc(&room), enc(&bob.user_id));
    assert_error(
        &server.put(&bobs_path, alice.token(), json!({"typing": true, "timeout": 1000})).await,
        403,
        "M_FORBIDDEN",
    );
    let carol = server.register("carol", "pw").await;
    let carols_path = format!("/_matrix/client/v3/rooms/{}/typing/{}", enc(&room), enc(&carol.user_id));
    assert_error(
        &server.put(&carols_path, carol.token(), json!({"typing": true, "timeout": 1000})).await,
        403,
        "M_FORBIDDEN",
    );
}

#[tokio::test]
async fn receipts_and_read_markers_reach_syncs() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;
    let (status, sent) = send_text(&server, &alice, &room, "r1", "read me").await;
    assert_eq!(status, 200);
    let event_id = sent["event_id"].as_str().unwrap().to_owned();
    let token = since(&sync(&server, &alice, "").await);

    let receipt_path =
        |kind: &str| format!("/_matrix/client/v3/rooms/{}/receipt/{kind}/{}", enc(&room), enc(&event_id));
    assert_eq!(server.post(&receipt_path("m.read"), bob.token(), json!({})).await.0, 200);
    assert_eq!(server.post(&receipt_path("m.read.private"), bob.token(), json!({})).await.0, 200);
    let receipt =
        |body: &Value| events(joined(body, &room), "ephemeral").into_iter().find(|e| e["type"] == "m.receipt").cloned();
    let body = sync(&server, &alice, &format!("since={token}")).await;
    let content = receipt(&body).unwrap_or_else(|| panic!("no receipt: {body}"))["content"].clone();
    assert!(content[&event_id]["m.read"][&bob.user_id]["ts"].is_u64(), "{content}");
    assert!(content[&event_id].get("m.read.private").is_none(), "bob's private receipt is his: {content}");
    // Shown once; bob sees his private one in an initial sync.
    let body = sync(&server, &alice, &format!("since={}&timeout=0", since(&body))).await;
    assert!(body["rooms"]["join"].get(&room).is_none(), "{body}");
    let body = sync(&server, &bob, "").await;
    let content = receipt(&body).unwrap_or_else(|| panic!("no receipt: {body}"))["content"].clone();
    assert!(content[&event_id]["m.read.private"][&bob.user_id].is_object(), "{content}");

    // Read markers: m.fully_read is room account data.
    let markers = json!({"m.fully_read": event_id, "m.read": event_id});
    let path = format!("/_matrix/client/v3/rooms/{}/read_markers", enc(&room));
    assert_eq!(server.post(&path, bob.token(), markers).await.0, 200);
    let body = sync(&server, &bob, &format!("since={}", since(&body))).await;
    let data = events(joined(&body, &room), "account_data");
    assert_eq!(data, vec![&json!({"type": "m.fully_read", "content": {"event_id": event_id}})], "{body}");

    // Errors: unknown event, a room one is not in.
    let unknown = format!("/_matrix/client/v3/rooms/{}/receipt/m.read/{}", enc(&room), enc("$nope"));
    assert_error(&server.post(&unknown, bob.token(), json!({})).await, 404, "M_NOT_FOUND");
    let carol = server.register("carol", "pw").await;
    assert_error(&server.post(&receipt_path("m.read"), carol.token(), json!({})).await, 403, "M_FORBIDDEN");
}

#[tokio::test]
async fn unread_counts_follow_push_rules_and_receipts() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;
    let counts = |body: &Value| {
        let unread = &joined(body, &room)["unread_notifications"];
        (unread["notification_count"].as_u64(), unread["highlight_count"].as_u64())
    };
    assert_eq!(counts(&sync(&server, &bob, "").await), (Some(0), Some(0)));

    send(&server, &alice, &room, "one").await;
    send(&server, &alice, &room, "two").await;
    send(&server, &bob, &room, "bob's own").await;
    let mention = json!({"msgtype": "m.text", "body": "hey", "m.mentions": {"user_ids": [bob.user_id]}});
    let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/mention", enc(&room));
    let (status, sent) = server.put(&path, alice.token(), mention).await;
    assert_eq!(status, 200, "{sent}");
    let body = sync(&server, &bob, "").await;
    assert_eq!(counts(&body), (Some(3), Some(1)), "{body}");

    // A read receipt on the newest event clears them.
    let receipt =
        format!("/_matrix/client/v3/rooms/{}/receipt/m.read/{}", enc(&room), enc(sent["event_id"].as_str().unwrap()));
    assert_eq!(server.post(&receipt, bob.token(), json!({})).await.0, 200);
    let body = sync(&server, &bob, &format!("since={}", since(&body))).await;
    assert_eq!(counts(&body), (Some(0), Some(0)), "{body}");
}
