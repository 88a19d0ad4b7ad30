//! Simplified sliding sync (MSC4186) over HTTP: connections and `pos` (`M_UNKNOWN_POS`),
//! long-polling, lists (ranges, counts, bump order, filters: `is_dm`, `is_encrypted`,
//! `is_invite`, room types, `spaces`, `tags`), required state (wildcards, `$LAZY`, `$ME`),
//! timelines and `prev_batch`, incremental answers, room subscriptions and `unsubscribe_rooms`,
//! and the extensions (to-device, E2EE, account data, receipts, typing) with their scoping.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{
    harness::{Session, TestServer, assert_error, enc},
    room_helpers::{create_room, join, put_state, send_text},
};

const PATH: &str = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";

/// One sliding sync request: `pos` and `timeout` in the query, the rest in the body.
async fn ss(server: &TestServer, who: &Session, pos: Option<&str>, timeout_ms: u64, body: Value) -> (u16, Value) {
    let mut path = format!("{PATH}?timeout={timeout_ms}");
    if let Some(pos) = pos {
        path.push_str(&format!("&pos={}", enc(pos)));
    }
    server.post_owned(path, who.token(), body).await
}

async fn ok(server: &TestServer, who: &Session, pos: Option<&str>, timeout_ms: u64, body: Value) -> Value {
    let (status, response) = ss(server, who, pos, timeout_ms, body).await;
    assert_eq!(status, 200, "sliding sync: {response}");
    assert!(response["pos"].is_string(), "pos in {response}");
    response
}

fn pos(response: &Value) -> String {
    response["pos"].as_str().expect("pos").to_owned()
}

fn list(ranges: Value, timeline_limit: u64, required_state: Value, filters: Value) -> Value {
    json!({"ranges": ranges, "timeline_limit": timeline_limit, "required_state": required_state, "filters": filters})
}

/// The room IDs of a response's rooms, ordered by bump stamp (newest first).
fn by_bump(response: &Value) -> Vec<String> {
    let mut rooms: Vec<(u64, String)> = response["rooms"]
        .as_object()
        .map(|rooms| rooms.iter().map(|(id, room)| (room["bump_stamp"].as_u64().unwrap_or(0), id.clone())).collect())
        .unwrap_or_default();
    rooms.sort_by(|a, b| b.cmp(a));
    rooms.into_iter().map(|(_, id)| id).collect()
}

fn bodies(room: &Value) -> Vec<String> {
    room["timeline"]
        .as_array()
        .map(|events| events.iter().filter_map(|e| e["content"]["body"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

fn state_pairs(room: &Value) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = room["required_state"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .map(|e| {
                    (e["type"].as_str().unwrap_or("").to_owned(), e["state_key"].as_str().unwrap_or("").to_owned())
                })
                .collect()
        })
        .unwrap_or_default();
    pairs.sort();
    pairs
}

#[tokio::test]
async fn sliding_sync_is_advertised_and_refuses_unknown_positions() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let (status, versions) = server.get("/_matrix/client/versions", None).await;
    assert_eq!(status, 200);
    assert_eq!(versions["unstable_features"]["org.matrix.simplified_msc3575"], true, "{versions}");
    let (status, _) = server.post(PATH, None, json!({})).await;
    assert_eq!(status, 401, "a token is required");

    let first = ok(&server, &alice, None, 0, json!({"conn_id": "main"})).await;
    // A garbled position, one of another connection and one from the future are unknown.
    assert_error(&ss(&server, &alice, Some("nonsense"), 0, json!({"conn_id": "main"})).await, 400, "M_UNKNOWN_POS");
    assert_error(&ss(&server, &alice, Some(&pos(&first)), 0, json!({"conn_id": "other"})).await, 400, "M_UNKNOWN_POS");
    let future = format!("{}9", pos(&first));
    assert_error(&ss(&server, &alice, Some(&future), 0, json!({"conn_id": "main"})).await, 400, "M_UNKNOWN_POS");
    // The position works on its own connection, and may be repeated (a lost answer).
    let second = ok(&server, &alice, Some(&pos(&first)), 0, json!({"conn_id": "main"})).await;
    ok(&server, &alice, Some(&pos(&first)), 0, json!({"conn_id": "main"})).await;
    ok(&server, &alice, Some(&pos(&second)), 0, json!({"conn_id": "main"})).await;
    // Starting the connection afresh (no pos) forgets its positions.
    ok(&server, &alice, None, 0, json!({"conn_id": "main"})).await;
    assert_error(&ss(&server, &alice, Some(&pos(&second)), 0, json!({"conn_id": "main"})).await, 400, "M_UNKNOWN_POS");
    // Another device's position is unknown to this one.
    let (_, login) = server.login("alice", "pw").await;
    let other = Session::from_response(&login);
    let mine = ok(&server, &alice, None, 0, json!({})).await;
    assert_error(&ss(&server, &other, Some(&pos(&mine)), 0, json!({})).await, 400, "M_UNKNOWN_POS");
    // Bad bodies are Matrix errors.
    let (status, body) = server.post(PATH, alice.token(), json!({"lists": 5})).await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test]
async fn sliding_sync_lists_order_rooms_by_bump_and_cut_ranges() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let a = create_room(&server, &alice, json!({"name": "A"})).await;
    let b = create_room(&server, &alice, json!({"name": "B"})).await;
    let c = create_room(&server, &alice, json!({"name": "C"})).await;
    for i in 0..3 {
        send_text(&server, &alice, &a, &format!("a{i}")).await;
    }
    send_text(&server, &alice, &c, "c0").await;
    send_text(&server, &alice, &b, "b0").await;
    // A topic is not a bump event: A stays where its last message put it.
    put_state(&server, &alice, &a, "m.room.topic", json!({"topic": "quiet"})).await;

    let body = json!({"lists": {"all": list(json!([[0, 1]]), 1, json!([["m.room.create", ""], ["m.room.member", "$ME"]]), json!({}))}});
    let response = ok(&server, &alice, None, 0, body.clone()).await;
    assert_eq!(response["lists"]["all"]["count"], 3, "{response}");
    assert_eq!(by_bump(&response), vec![b.clone(), c.clone()], "the two newest bumps: {response}");
    let room_b = &response["rooms"][&b];
    assert_eq!(room_b["initial"], true);
    assert_eq!(room_b["name"], "B");
    assert_eq!(bodies(room_b), vec!["b0"]);
    assert_eq!(room_b["limited"], true);
    assert_eq!(room_b["joined_count"], 1);
    assert_eq!(room_b["num_live"], 0, "nothing is live on a new connection");
    assert_eq!(
        state_pairs(room_b),
        vec![("m.room.create".to_owned(), String::new()), ("m.room.member".to_owned(), alice.user_id.clone())]
    );

    // prev_batch pages back with /messages from just before the timeline.
    let prev = room_b["prev_batch"].as_str().expect("prev_batch");
    let (status, messages) = server
        .get(&format!("/_matrix/client/v3/rooms/{}/messages?dir=b&from={prev}&limit=50", enc(&b)), alice.token())
        .await;
    assert_eq!(status, 200, "{messages}");
    let types: Vec<&str> =
        messages["chunk"].as_array().expect("chunk").iter().filter_map(|e| e["type"].as_str()).collect();
    assert!(!types.is_empty() && types.contains(&"m.room.create"), "{messages}");
    assert!(
        messages["chunk"].as_array().expect("chunk").iter().all(|e| e["content"]["body"] != "b0"),
        "the timeline's events are not repeated: {messages}"
    );

    // A wider range reaches A; two ranges are merged.
    let wide = json!({"lists": {"all": list(json!([[0, 0], [2, 10]]), 2, json!([]), json!({}))}});
    let response = ok(&server, &alice, None, 0, wide).await;
    assert_eq!(by_bump(&response), vec![b.clone(), a.clone()], "{response}");
    // A's newest two events: its last message and the topic after it.
    assert_eq!(bodies(&response["rooms"][&a]), vec!["a2"]);
    assert_eq!(response["rooms"][&a]["timeline"][1]["type"], "m.room.topic");
    assert!(response["rooms"][&a]["bump_stamp"].as_u64() < response["rooms"][&b]["bump_stamp"].as_u64());
}

#[tokio::test]
async fn sliding_sync_incremental_answers_send_what_changed_and_long_poll() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = create_room(&server, &alice, json!({"name": "Chat", "preset": "public_chat"})).await;
    join(&server, &bob, &room).await;
    send_text(&server, &alice, &room, "hello").await;
    let body = json!({"lists": {"all": list(json!([[0, 9]]), 5, json!([["m.room.name", ""]]), json!({}))}});
    let first = ok(&server, &alice, None, 0, body.clone()).await;
    assert_eq!(first["rooms"][&room]["initial"], true);
    assert_eq!(first["rooms"][&room]["joined_count"], 2);

    // Nothing new: no rooms, the same list.
    let quiet = ok(&server, &alice, Some(&pos(&first)), 0, body.clone()).await;
    assert!(quiet["rooms"].as_object().is_none_or(|rooms| rooms.is_empty()), "{quiet}");
    assert_eq!(quiet["lists"]["all"]["count"], 1);

    // A long poll returns when bob speaks, with only the new event.
    let started = Instant::now();
    let waiting = {
        let body = body.clone();
        let p = pos(&quiet);
        let server = &server;
        let alice = &alice;
        async move { ok(server, alice, Some(&p), 10_000, body).await }
    };
    let speaking = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        send_text(&server, &bob, &room, "are you there").await;
    };
    let (live, ()) = tokio::join!(waiting, speaking);
    assert!(started.elapsed() < Duration::from_secs(8), "the long poll woke up");
    let entry = &live["rooms"][&room];
    assert_eq!(bodies(entry), vec!["are you there"], "{live}");
    assert!(entry.get("initial").is_none(), "{entry}");
    assert_eq!(entry["num_live"], 1);
    assert_eq!(entry["limited"], Value::Null, "not limited: {entry}");
    assert_eq!(entry["notification_count"], 1, "bob's message is unread: {entry}");
    assert!(state_pairs(entry).is_empty(), "no state changed: {entry}");

    // A state change comes as required state and in the timeline.
    put_state(&server, &alice, &room, "m.room.name", json!({"name": "Renamed"})).await;
    let renamed = ok(&server, &alice, Some(&pos(&live)), 0, body.clone()).await;
    let entry = &renamed["rooms"][&room];
    assert_eq!(entry["name"], "Renamed");
    assert_eq!(state_pairs(entry), vec![("m.room.name".to_owned(), String::new())]);

    // A read receipt clears the count.
    let last = entry["timeline"][0]["event_id"].as_str().expect("event_id").to_owned();
    let receipt = format!("/_matrix/client/v3/rooms/{}/receipt/m.read/{}", enc(&room), enc(&last));
    assert_eq!(server.post(&receipt, alice.token(), json!({})).await.0, 200);
    let read = ok(&server, &alice, Some(&pos(&renamed)), 0, body.clone()).await;
    assert_eq!(read["rooms"][&room]["notification_count"], 0, "{read}");

    // A long poll with nothing to say returns after its timeout, with a new position.
    let started = Instant::now();
    let empty = ok(&server, &alice, Some(&pos(&read)), 1_000, body.clone()).await;
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert!(empty["rooms"].as_object().is_none_or(|rooms| rooms.is_empty()), "{empty}");

    // Leaving shows the leave once.
    let leave = format!("/_matrix/client/v3/rooms/{}/leave", enc(&room));
    assert_eq!(server.post(&leave, alice.token(), json!({})).await.0, 200);
    let left = ok(&server, &alice, Some(&pos(&empty)), 0, body.clone()).await;
    let entry = &left["rooms"][&room];
    let last = entry["timeline"].as_array().and_then(|t| t.last()).cloned().unwrap_or_default();
    assert_eq!(
        (last["type"].as_str(), last["content"]["membership"].as_str()),
        (Some("m.room.member"), Some("leave")),
        "{left}"
    );
    let after = ok(&server, &alice, Some(&pos(&left)), 0, body).await;
    assert_eq!(after["lists"]["all"]["count"], 0, "{after}");
}

#[tokio::test]
async fn sliding_sync_filters_invites_dms_encryption_spaces_and_tags() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let plain = create_room(&server, &alice, json!({"name": "Plain"})).await;
    let encrypted = create_room(
        &server,
        &alice,
        json!({"name": "Secret", "initial_state": [{"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}]}),
    )
    .await;
    let space = create_room(&server, &alice, json!({"name": "Space", "creation_content": {"type": "m.space"}})).await;
    let child = format!("/_matrix/client/v3/rooms/{}/state/m.space.child/{}", enc(&space), enc(&plain));
    assert_eq!(server.put(&child, alice.token(), json!({"via": ["localhost"]})).await.0, 200);
    let displayname = format!("/_matrix/client/v3/profile/{}/displayname", enc(&bob.user_id));
    assert_eq!(server.put(&displayname, bob.token(), json!({"displayname": "Bob"})).await.0, 200);
    // A DM with bob (m.direct), and an invite from bob marked is_direct.
    let dm = create_room(&server, &alice, json!({"is_direct": true, "invite": [bob.user_id]})).await;
    join(&server, &bob, &dm).await;
    let direct = format!("/_matrix/client/v3/user/{}/account_data/m.direct", enc(&alice.user_id));
    assert_eq!(server.put(&direct, alice.token(), json!({bob.user_id.clone(): [dm]})).await.0, 200);
    let invite =
        create_room(&server, &bob, json!({"name": "Bob's", "is_direct": true, "invite": [alice.user_id]})).await;
    let tags = format!("/_matrix/client/v3/user/{}/rooms/{}/tags/m.favourite", enc(&alice.user_id), enc(&encrypted));
    assert_eq!(server.put(&tags, alice.token(), json!({"order": 0.5})).await.0, 200);

    let lists = json!({
        "invites": list(json!([[0, 9]]), 0, json!([]), json!({"is_invite": true})),
        "joined": list(json!([[0, 9]]), 0, json!([]), json!({"is_invite": false})),
        "dms": list(json!([[0, 9]]), 0, json!([]), json!({"is_dm": true})),
        "groups": list(json!([[0, 9]]), 0, json!([]), json!({"is_dm": false, "not_room_types": ["m.space"]})),
        "encrypted": list(json!([[0, 9]]), 0, json!([]), json!({"is_encrypted": true})),
        "spaces": list(json!([[0, 9]]), 0, json!([]), json!({"room_types": ["m.space"]})),
        "plain_types": list(json!([[0, 9]]), 0, json!([]), json!({"room_types": [null]})),
        "in_space": list(json!([[0, 9]]), 0, json!([]), json!({"spaces": [space]})),
        "favourites": list(json!([[0, 9]]), 0, json!([]), json!({"tags": ["m.favourite"]})),
        "not_favourites": list(json!([[0, 9]]), 0, json!([]), json!({"not_tags": ["m.favourite"]})),
    });
    let response = ok(&server, &alice, None, 0, json!({"lists": lists})).await;
    let count = |name: &str| response["lists"][name]["count"].as_u64().unwrap_or(99);
    assert_eq!(count("invites"), 1, "{response}");
    assert_eq!(count("joined"), 4);
    assert_eq!(count("dms"), 2, "the m.direct room and the is_direct invite");
    assert_eq!(count("groups"), 2, "plain and encrypted");
    assert_eq!(count("encrypted"), 1);
    assert_eq!(count("spaces"), 1);
    assert_eq!(count("plain_types"), 4, "every room but the space (an invite's type counts as known here)");
    assert_eq!(count("in_space"), 1);
    assert_eq!(count("favourites"), 1);
    assert_eq!(count("not_favourites"), 4);

    let invited = &response["rooms"][&invite];
    assert_eq!(invited["initial"], true);
    assert_eq!(invited["is_dm"], true);
    let stripped = invited["invite_state"].as_array().expect("invite_state");
    assert!(stripped.iter().any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Bob's"), "{invited}");
    assert!(invited.get("timeline").is_none(), "an invite has no timeline: {invited}");
    // The DM has no name: its heroes name it.
    let dm_room = &response["rooms"][&dm];
    assert_eq!(dm_room["is_dm"], true);
    assert_eq!(dm_room["heroes"][0]["user_id"], bob.user_id, "{dm_room}");
    assert_eq!(dm_room["heroes"][0]["displayname"], "Bob");

    // Joining the invite moves it from one list to the other and sends it whole.
    join(&server, &alice, &invite).await;
    let joined = ok(&server, &alice, Some(&pos(&response)), 0, json!({"lists": lists})).await;
    assert_eq!(joined["lists"]["invites"]["count"], 0, "{joined}");
    assert_eq!(joined["lists"]["joined"]["count"], 5);
    assert_eq!(joined["rooms"][&invite]["initial"], true);
}

#[tokio::test]
async fn sliding_sync_required_state_wildcards_lazy_members_and_me() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let carol = server.register("carol", "pw").await;
    let room = create_room(&server, &alice, json!({"name": "Big", "topic": "T", "preset": "public_chat"})).await;
    join(&server, &bob, &room).await;
    join(&server, &carol, &room).await;
    send_text(&server, &bob, &room, "from bob").await;

    // Each request names its own connection, so they do not restart each other.
    let sub = |required: Value, limit: u64| {
        let conn_id = required.to_string();
        json!({"conn_id": conn_id, "room_subscriptions": {room.clone(): {"timeline_limit": limit, "required_state": required}}})
    };
    let all = ok(&server, &alice, None, 0, sub(json!([["*", "*"]]), 1)).await;
    let pairs = state_pairs(&all["rooms"][&room]);
    for kind in ["m.room.create", "m.room.name", "m.room.topic", "m.room.power_levels", "m.room.join_rules"] {
        assert!(pairs.iter().any(|(k, _)| k == kind), "{kind} in {pairs:?}");
    }
    assert_eq!(pairs.iter().filter(|(k, _)| k == "m.room.member").count(), 3);

    // $LAZY: the member events of the timeline's senders; $ME: the user's own.
    let lazy = ok(&server, &alice, None, 0, sub(json!([["m.room.member", "$LAZY"], ["m.room.name", ""]]), 1)).await;
    assert_eq!(
        state_pairs(&lazy["rooms"][&room]),
        vec![("m.room.member".to_owned(), bob.user_id.clone()), ("m.room.name".to_owned(), String::new())]
    );
    let me = ok(&server, &alice, None, 0, sub(json!([["m.room.member", "$ME"]]), 1)).await;
    assert_eq!(state_pairs(&me["rooms"][&room]), vec![("m.room.member".to_owned(), alice.user_id.clone())]);
    // [type, "*"]: every state key of the type.
    let members = ok(&server, &alice, None, 0, sub(json!([["m.room.member", "*"]]), 1)).await;
    assert_eq!(state_pairs(&members["rooms"][&room]).len(), 3);

    // Incrementally, a new sender's member event comes with their first message, once.
    send_text(&server, &carol, &room, "from carol").await;
    let next =
        ok(&server, &alice, Some(&pos(&lazy)), 0, sub(json!([["m.room.member", "$LAZY"], ["m.room.name", ""]]), 1))
            .await;
    assert_eq!(state_pairs(&next["rooms"][&room]), vec![("m.room.member".to_owned(), carol.user_id.clone())], "{next}");
    send_text(&server, &carol, &room, "again").await;
    let again =
        ok(&server, &alice, Some(&pos(&next)), 0, sub(json!([["m.room.member", "$LAZY"], ["m.room.name", ""]]), 1))
            .await;
    assert!(state_pairs(&again["rooms"][&room]).is_empty(), "{again}");
}

#[tokio::test]
async fn sliding_sync_room_subscriptions_and_unsubscribe() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let old = create_room(&server, &alice, json!({"name": "Old"})).await;
    for i in 0..4 {
        send_text(&server, &alice, &old, &format!("old{i}")).await;
    }
    let new = create_room(&server, &alice, json!({"name": "New"})).await;
    send_text(&server, &alice, &new, "new").await;
    let bobs = create_room(&server, &bob, json!({"name": "Private"})).await;

    // The list shows only the newest room; a subscription adds the old one with its own limit.
    let body = json!({
        "lists": {"top": list(json!([[0, 0]]), 1, json!([]), json!({}))},
        "room_subscriptions": {
            old.clone(): {"timeline_limit": 3, "required_state": [["m.room.name", ""]]},
            bobs.clone(): {"timeline_limit": 3},
        },
    });
    let first = ok(&server, &alice, None, 0, body.clone()).await;
    assert_eq!(bodies(&first["rooms"][&new]), vec!["new"]);
    assert_eq!(bodies(&first["rooms"][&old]), vec!["old1", "old2", "old3"], "{first}");
    assert_eq!(state_pairs(&first["rooms"][&old]), vec![("m.room.name".to_owned(), String::new())]);
    assert!(first["rooms"].get(&bobs).is_none(), "a room the user is not in is not shown: {first}");

    // While subscribed, new events come incrementally.
    send_text(&server, &alice, &old, "old4").await;
    let second = ok(&server, &alice, Some(&pos(&first)), 0, body.clone()).await;
    assert_eq!(bodies(&second["rooms"][&old]), vec!["old4"]);
    assert!(second["rooms"][&old].get("initial").is_none());

    // New moves back to the top of the list; unsubscribing from Old forgets what was sent: a
    // later subscription sends the room whole again.
    send_text(&server, &alice, &new, "new2").await;
    let none = json!({"lists": {"top": list(json!([[0, 0]]), 1, json!([]), json!({}))}, "unsubscribe_rooms": [old]});
    let third = ok(&server, &alice, Some(&pos(&second)), 0, none).await;
    assert!(third["rooms"].get(&old).is_none(), "{third}");
    let fourth = ok(&server, &alice, Some(&pos(&third)), 0, body).await;
    assert_eq!(fourth["rooms"][&old]["initial"], true, "{fourth}");
    assert_eq!(bodies(&fourth["rooms"][&old]), vec!["old2", "old3", "old4"]);
}

#[tokio::test]
async fn sliding_sync_extensions_deliver_device_data_account_data_receipts_and_typing() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = create_room(&server, &alice, json!({"name": "Shared", "preset": "public_chat"})).await;
    let other = create_room(&server, &alice, json!({"name": "Other", "preset": "public_chat"})).await;
    join(&server, &bob, &room).await;
    join(&server, &bob, &other).await;
    // Alice's one-time and fallback keys.
    let keys = json!({
        "one_time_keys": {"signed_curve25519:AAAA": {"key": "k1", "signatures": {}}, "signed_curve25519:AAAB": {"key": "k2", "signatures": {}}},
        "fallback_keys": {"signed_curve25519:FFFF": {"key": "f", "fallback": true, "signatures": {}}},
    });
    let (status, uploaded) = server.post("/_matrix/client/v3/keys/upload", alice.token(), keys).await;
    assert_eq!(status, 200, "{uploaded}");

    let extensions = json!({
        "to_device": {"enabled": true},
        "e2ee": {"enabled": true},
        "account_data": {"enabled": true},
        "receipts": {"enabled": true},
        "typing": {"enabled": true, "rooms": [room.clone()], "lists": []},
    });
    let body = json!({
        "lists": {"all": list(json!([[0, 9]]), 1, json!([]), json!({}))},
        "room_subscriptions": {room.clone(): {"timeline_limit": 1}},
        "extensions": extensions,
    });
    let first = ok(&server, &alice, None, 0, body.clone()).await;
    let ext = &first["extensions"];
    assert_eq!(ext["e2ee"]["device_one_time_keys_count"]["signed_curve25519"], 2, "{ext}");
    assert_eq!(ext["e2ee"]["device_unused_fallback_key_types"], json!(["signed_curve25519"]));
    assert!(
        ext["account_data"]["global"].as_array().expect("global").iter().any(|e| e["type"] == "m.push_rules"),
        "the push rules come on a new connection: {ext}"
    );
    let since = ext["to_device"]["next_batch"].as_str().expect("to_device next_batch").to_owned();

    // Bob sends alice's device a to-device message, changes his keys, reads, types in both
    // rooms; alice tags the room and sets global account data.
    let to_device = json!({"messages": {alice.user_id.clone(): {alice.device_id.clone(): {"secret": 1}}}});
    assert_eq!(server.put("/_matrix/client/v3/sendToDevice/org.example.test/t1", bob.token(), to_device).await.0, 200);
    let device_keys = json!({"device_keys": {"user_id": bob.user_id, "device_id": bob.device_id,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2"], "keys": {format!("curve25519:{}", bob.device_id): "bobkey"}}});
    assert_eq!(server.post("/_matrix/client/v3/keys/upload", bob.token(), device_keys).await.0, 200);
    let event = send_text(&server, &alice, &room, "read me").await;
    let receipt = format!("/_matrix/client/v3/rooms/{}/receipt/m.read/{}", enc(&room), enc(&event));
    assert_eq!(server.post(&receipt, bob.token(), json!({})).await.0, 200);
    for r in [&room, &other] {
        let typing = format!("/_matrix/client/v3/rooms/{}/typing/{}", enc(r), enc(&bob.user_id));
        assert_eq!(server.put(&typing, bob.token(), json!({"typing": true, "timeout": 30000})).await.0, 200);
    }
    let tags = format!("/_matrix/client/v3/user/{}/rooms/{}/tags/u.work", enc(&alice.user_id), enc(&room));
    assert_eq!(server.put(&tags, alice.token(), json!({})).await.0, 200);
    let global = format!("/_matrix/client/v3/user/{}/account_data/org.example.setting", enc(&alice.user_id));
    assert_eq!(server.put(&global, alice.token(), json!({"on": true})).await.0, 200);

    let mut body = body;
    body["extensions"]["to_device"]["since"] = json!(since);
    let second = ok(&server, &alice, Some(&pos(&first)), 0, body.clone()).await;
    let ext = &second["extensions"];
    let messages = ext["to_device"]["events"].as_array().expect("to_device events");
    assert_eq!(messages.len(), 1, "{ext}");
    assert_eq!(messages[0]["content"]["secret"], 1);
    assert_eq!(messages[0]["sender"], bob.user_id);
    assert!(ext["e2ee"]["device_lists"]["changed"].as_array().expect("changed").contains(&json!(bob.user_id)), "{ext}");
    assert!(
        ext["account_data"]["global"].as_array().expect("global").iter().any(|e| e["type"] == "org.example.setting")
    );
    assert!(
        ext["account_data"]["global"].as_array().expect("global").iter().all(|e| e["type"] != "m.push_rules"),
        "unchanged push rules are not repeated: {ext}"
    );
    let room_data = ext["account_data"]["rooms"][&room].as_array().expect("room account data");
    assert!(room_data.iter().any(|e| e["type"] == "m.tag" && e["content"]["tags"]["u.work"].is_object()), "{ext}");
    let receipt = &ext["receipts"]["rooms"][&room];
    assert_eq!(receipt["type"], "m.receipt");
    assert!(receipt["content"][&event]["m.read"][&bob.user_id].is_object(), "{receipt}");
    // Typing is scoped to the one room asked for.
    assert_eq!(ext["typing"]["rooms"][&room]["content"]["user_ids"], json!([bob.user_id]), "{ext}");
    assert!(ext["typing"]["rooms"].get(&other).is_none(), "typing scoped to its rooms: {ext}");

    // The acknowledged to-device message is not sent again; nothing else changed either.
    body["extensions"]["to_device"]["since"] = ext["to_device"]["next_batch"].clone();
    let third = ok(&server, &alice, Some(&pos(&second)), 0, body).await;
    let ext = &third["extensions"];
    assert!(ext["to_device"]["events"].as_array().is_none_or(|events| events.is_empty()), "{ext}");
    assert!(ext["receipts"].as_object().is_none_or(|r| r.get("rooms").is_none()), "{ext}");
    assert!(ext["typing"].as_object().is_none_or(|t| t.get("rooms").is_none()), "{ext}");

    // Key counts alone are no news: a long poll with only the device extensions (as the SDK's
    // encryption connection) waits, and a to-device message wakes it.
    let device_only =
        json!({"conn_id": "encryption", "extensions": {"to_device": {"enabled": true}, "e2ee": {"enabled": true}}});
    let start = ok(&server, &alice, None, 0, device_only.clone()).await;
    let started = Instant::now();
    let idle = ok(&server, &alice, Some(&pos(&start)), 1_000, device_only.clone()).await;
    assert!(started.elapsed() >= Duration::from_millis(900), "waited for news: {idle}");
    let started = Instant::now();
    let idle_pos = pos(&idle);
    let waiting = ok(&server, &alice, Some(&idle_pos), 10_000, device_only);
    let sending = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let message = json!({"messages": {alice.user_id.clone(): {alice.device_id.clone(): {"wake": true}}}});
        assert_eq!(
            server.put("/_matrix/client/v3/sendToDevice/org.example.test/t2", bob.token(), message).await.0,
            200
        );
    };
    let (woken, ()) = tokio::join!(waiting, sending);
    assert!(started.elapsed() < Duration::from_secs(8), "the to-device message woke the poll");
    assert_eq!(woken["extensions"]["to_device"]["events"][0]["content"]["wake"], true, "{woken}");
}

#[tokio::test]
async fn sliding_sync_lists_a_knock_with_its_stripped_state_until_it_is_accepted() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = create_room(
        &server,
        &alice,
        json!({"name": "Knock here", "initial_state": [{"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}]}),
    )
    .await;
    let knock = server.post_owned(format!("/_matrix/client/v3/knock/{}", enc(&room)), bob.token(), json!({})).await;
    assert_eq!(knock.0, 200, "{knock:?}");

    let lists = json!({"all": list(json!([[0, 9]]), 1, json!([["m.room.name", ""]]), json!({}))});
    let response = ok(&server, &bob, None, 0, json!({"lists": lists})).await;
    assert_eq!(response["lists"]["all"]["count"], 1, "{response}");
    let knocked = &response["rooms"][&room];
    assert_eq!(knocked["initial"], true, "{knocked}");
    assert_eq!(knocked["name"], "Knock here");
    assert!(knocked.get("timeline").is_none(), "a knock has no timeline: {knocked}");
    // The stripped state is under `knock_state` and, as Synapse sends it and matrix-rust-sdk
    // reads it, under `invite_state`; the user's own member event says `knock`.
    for field in ["knock_state", "invite_state"] {
        let stripped = knocked[field].as_array().unwrap_or_else(|| panic!("no {field}: {knocked}"));
        let own = stripped.iter().find(|e| e["type"] == "m.room.member" && e["state_key"] == bob.user_id.as_str());
        assert_eq!(own.map(|e| e["content"]["membership"].clone()), Some(json!("knock")), "{field}: {knocked}");
        assert!(stripped.iter().any(|e| e["type"] == "m.room.join_rules" && e["content"]["join_rule"] == "knock"));
    }

    // Accepted (invited by the admin, then joined): the room is sent whole, as a joined room.
    let invite = format!("/_matrix/client/v3/rooms/{}/invite", enc(&room));
    assert_eq!(server.post(&invite, alice.token(), json!({"user_id": bob.user_id})).await.0, 200);
    join(&server, &bob, &room).await;
    let joined = ok(&server, &bob, Some(&pos(&response)), 0, json!({"lists": lists})).await;
    let entry = &joined["rooms"][&room];
    assert_eq!(entry["initial"], true, "{joined}");
    assert!(entry.get("knock_state").is_none() && entry.get("invite_state").is_none(), "{entry}");
    assert_eq!(state_pairs(entry), vec![("m.room.name".to_owned(), String::new())]);
}

/// An incremental answer reads again only the rooms with events since the connection's last
/// answer; what changes without an event in a room (`m.direct`, the ignore list, an invite, a
/// leave) must still change the lists.
#[tokio::test]
async fn sliding_sync_lists_follow_changes_that_come_without_room_events() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let quiet = create_room(&server, &alice, json!({"name": "Quiet"})).await;
    let busy = create_room(&server, &alice, json!({"name": "Busy"})).await;
    let body = json!({"lists": {
        "all": list(json!([[0, 9]]), 1, json!([["m.room.name", ""]]), json!({})),
        "dms": list(json!([[0, 9]]), 1, json!([]), json!({"is_dm": true})),
    }});
    let first = ok(&server, &alice, None, 0, body.clone()).await;
    assert_eq!((first["lists"]["all"]["count"].as_u64(), first["lists"]["dms"]["count"].as_u64()), (Some(2), Some(0)));

    // `m.direct` names the quiet room: it becomes a DM with no event in it.
    let direct = format!("/_matrix/client/v3/user/{}/account_data/m.direct", enc(&alice.user_id));
    assert_eq!(server.put(&direct, alice.token(), json!({"@bob:localhost": [quiet]})).await.0, 200);
    let dm = ok(&server, &alice, Some(&pos(&first)), 0, body.clone()).await;
    assert_eq!(dm["lists"]["dms"]["count"], 1, "{dm}");

    // An invite to a third room: listed, with the inviter's name for it.
    let invited = create_room(&server, &bob, json!({"name": "Bob's"})).await;
    let invite = format!("/_matrix/client/v3/rooms/{}/invite", enc(&invited));
    assert_eq!(server.post(&invite, bob.token(), json!({"user_id": alice.user_id})).await.0, 200);
    let with_invite = ok(&server, &alice, Some(&pos(&dm)), 0, body.clone()).await;
    assert_eq!(with_invite["lists"]["all"]["count"], 3, "{with_invite}");
    assert_eq!(with_invite["rooms"][&invited]["name"], "Bob's", "{with_invite}");

    // A message in the busy room moves it first; the quiet room keeps its facts.
    send_text(&server, &alice, &busy, "news").await;
    let moved = ok(&server, &alice, Some(&pos(&with_invite)), 0, body.clone()).await;
    assert_eq!(bodies(&moved["rooms"][&busy]), vec!["news"], "{moved}");
    assert!(moved["rooms"].get(&quiet).is_none(), "nothing new in the quiet room: {moved}");
    assert_eq!((moved["lists"]["all"]["count"].as_u64(), moved["lists"]["dms"]["count"].as_u64()), (Some(3), Some(1)));

    // Ignoring bob hides his invite, though nothing happened in its room.
    let ignore = format!("/_matrix/client/v3/user/{}/account_data/m.ignored_user_list", enc(&alice.user_id));
    let ignored = json!({"ignored_users": {bob.user_id.as_str(): {}}});
    assert_eq!(server.put(&ignore, alice.token(), ignored).await.0, 200);
    let hidden = ok(&server, &alice, Some(&pos(&moved)), 0, body.clone()).await;
    assert_eq!(hidden["lists"]["all"]["count"], 2, "{hidden}");

    // Leaving the quiet room: shown once as left, then gone from the lists.
    let leave = format!("/_matrix/client/v3/rooms/{}/leave", enc(&quiet));
    assert_eq!(server.post(&leave, alice.token(), json!({})).await.0, 200);
    let left = ok(&server, &alice, Some(&pos(&hidden)), 0, body.clone()).await;
    assert!(left["rooms"].get(&quiet).is_some(), "the leave is sent: {left}");
    let after = ok(&server, &alice, Some(&pos(&left)), 0, body).await;
    assert_eq!(after["lists"]["all"]["count"], 1, "{after}");
    assert_eq!(after["lists"]["dms"]["count"], 0, "{after}");
}
