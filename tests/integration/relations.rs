//! Relations over HTTP: `/relations` with its filters, both directions of pagination (also from
//! a sync token), recursion, access rules, and the bundled aggregations (`m.thread`,
//! `m.replace`, `m.reference`) on events served by `/event`, `/messages`, `/context`, `/sync`
//! and `/relations`, including what redactions take away. Complement's `TestRelations`,
//! `TestRelationsPagination` and `TestRelationsPaginationSync` are reproduced here.

use serde_json::{Value, json};

use crate::{
    harness::{Session, TestServer, assert_error, enc},
    room_helpers::{create_room, join, redact, send_event, send_text},
};

fn relations_path(room: &str, event: &str, tail: &str, query: &str) -> String {
    format!("/_matrix/client/v1/rooms/{}/relations/{}{tail}?{query}", enc(room), enc(event))
}

/// The event IDs of a response's `chunk`.
fn ids(body: &Value) -> Vec<String> {
    body["chunk"]
        .as_array()
        .map(|chunk| chunk.iter().map(|e| e["event_id"].as_str().unwrap_or("").to_owned()).collect())
        .unwrap_or_default()
}

async fn relations(server: &TestServer, who: &Session, room: &str, event: &str, tail: &str, query: &str) -> Value {
    let (status, body) = server.get(&relations_path(room, event, tail, query), who.token()).await;
    assert_eq!(status, 200, "relations{tail}?{query}: {body}");
    body
}

fn in_thread(root: &str, body: &str) -> Value {
    json!({"msgtype": "m.text", "body": body, "m.relates_to": {"rel_type": "m.thread", "event_id": root}})
}

fn edit(original: &str, body: &str) -> Value {
    json!({
        "msgtype": "m.text",
        "body": format!("* {body}"),
        "m.new_content": {"msgtype": "m.text", "body": body},
        "m.relates_to": {"rel_type": "m.replace", "event_id": original},
    })
}

async fn event(server: &TestServer, who: &Session, room: &str, event_id: &str) -> Value {
    let path = format!("/_matrix/client/v3/rooms/{}/event/{}", enc(room), enc(event_id));
    let (status, body) = server.get(&path, who.token()).await;
    assert_eq!(status, 200, "event: {body}");
    body
}

/// The event with `event_id` in a list of events.
fn find<'a>(events: &'a Value, event_id: &str) -> &'a Value {
    events
        .as_array()
        .and_then(|events| events.iter().find(|e| e["event_id"] == event_id))
        .unwrap_or_else(|| panic!("{event_id} not in {events}"))
}

#[tokio::test]
async fn relations_lists_children_by_relation_type_and_event_type() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    let root = send_text(&server, &alice, &room, "root").await;
    let reply = send_event(&server, &alice, &room, "m.room.message", in_thread(&root, "reply")).await;
    let dummy = send_event(
        &server,
        &alice,
        &room,
        "m.dummy",
        json!({"m.relates_to": {"rel_type": "m.thread", "event_id": root}}),
    )
    .await;
    let edited = send_event(&server, &alice, &room, "m.room.message", edit(&root, "edited root")).await;

    // Newest first by default.
    let all = relations(&server, &alice, &room, &root, "", "").await;
    assert_eq!(ids(&all), [edited.as_str(), dummy.as_str(), reply.as_str()], "{all}");
    assert!(all.get("next_batch").is_none(), "{all}");
    assert!(all.get("recursion_depth").is_none(), "{all}");
    let threaded = relations(&server, &alice, &room, &root, "/m.thread", "").await;
    assert_eq!(ids(&threaded), [dummy.as_str(), reply.as_str()], "{threaded}");
    let messages = relations(&server, &alice, &room, &root, "/m.thread/m.room.message", "").await;
    assert_eq!(ids(&messages), [reply.as_str()], "{messages}");
    let none = relations(&server, &alice, &room, &reply, "", "").await;
    assert_eq!(ids(&none), Vec::<String>::new(), "{none}");
}

#[tokio::test]
async fn relations_paginate_in_both_directions() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    let root = send_text(&server, &alice, &room, "root").await;
    let mut replies = Vec::new();
    for i in 0..10 {
        replies.push(send_event(&server, &alice, &room, "m.room.message", in_thread(&root, &format!("r{i}"))).await);
    }

    let page = relations(&server, &alice, &room, &root, "", "limit=3").await;
    assert_eq!(ids(&page), [replies[9].as_str(), replies[8].as_str(), replies[7].as_str()]);
    let next = page["next_batch"].as_str().expect("next_batch");
    let page = relations(&server, &alice, &room, &root, "", &format!("limit=3&from={next}")).await;
    assert_eq!(ids(&page), [replies[6].as_str(), replies[5].as_str(), replies[4].as_str()]);
    assert_eq!(page["prev_batch"], next, "{page}");

    let page = relations(&server, &alice, &room, &root, "", "limit=3&dir=f").await;
    assert_eq!(ids(&page), [replies[0].as_str(), replies[1].as_str(), replies[2].as_str()]);
    let next = page["next_batch"].as_str().expect("next_batch");
    let page = relations(&server, &alice, &room, &root, "", &format!("limit=3&dir=f&from={next}")).await;
    assert_eq!(ids(&page), [replies[3].as_str(), replies[4].as_str(), replies[5].as_str()]);

    // The last page has no next_batch; the default page holds 5.
    let next = page["next_batch"].as_str().expect("next_batch");
    let page = relations(&server, &alice, &room, &root, "", &format!("limit=10&dir=f&from={next}")).await;
    assert_eq!(ids(&page), &replies[6..]);
    assert!(page.get("next_batch").is_none(), "{page}");
    assert_eq!(ids(&relations(&server, &alice, &room, &root, "", "").await).len(), 5);

    // `to` bounds a page.
    let page = relations(&server, &alice, &room, &root, "", "limit=3").await;
    let to = page["next_batch"].as_str().expect("next_batch");
    let page = relations(&server, &alice, &room, &root, "", &format!("limit=10&dir=f&from={next}&to={to}")).await;
    assert_eq!(ids(&page), &replies[6..=7], "{page}");

    let bad = server.get(&relations_path(&room, &root, "", "from=nonsense"), alice.token()).await;
    assert_error(&bad, 400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn relations_paginate_from_a_sync_token() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    let root = send_text(&server, &alice, &room, "root").await;
    let mut before = Vec::new();
    for i in 0..5 {
        before.push(send_event(&server, &alice, &room, "m.room.message", in_thread(&root, &format!("b{i}"))).await);
    }
    let (status, sync) = server.get("/_matrix/client/v3/sync", alice.token()).await;
    assert_eq!(status, 200, "{sync}");
    let token = sync["next_batch"].as_str().expect("next_batch").to_owned();
    let mut after = Vec::new();
    for i in 0..5 {
        after.push(send_event(&server, &alice, &room, "m.room.message", in_thread(&root, &format!("a{i}"))).await);
    }

    let page = relations(&server, &alice, &room, &root, "", &format!("limit=3&dir=f&from={}", enc(&token))).await;
    assert_eq!(ids(&page), [after[0].as_str(), after[1].as_str(), after[2].as_str()], "{page}");
    let next = page["next_batch"].as_str().expect("next_batch");
    let page = relations(&server, &alice, &room, &root, "", &format!("limit=3&dir=f&from={next}")).await;
    assert_eq!(ids(&page), [after[3].as_str(), after[4].as_str()], "{page}");
    assert!(page.get("next_batch").is_none(), "{page}");

    // Backwards from the token: what the sync had delivered, newest first.
    let page = relations(&server, &alice, &room, &root, "", &format!("limit=3&from={}", enc(&token))).await;
    assert_eq!(ids(&page), [before[4].as_str(), before[3].as_str(), before[2].as_str()], "{page}");
}

#[tokio::test]
async fn relations_recurse_to_relations_of_relations() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    let root = send_text(&server, &alice, &room, "root").await;
    let reply = send_event(&server, &alice, &room, "m.room.message", in_thread(&root, "reply")).await;
    let reaction = send_event(
        &server,
        &alice,
        &room,
        "m.reaction",
        json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": reply, "key": "👍"}}),
    )
    .await;

    let direct = relations(&server, &alice, &room, &root, "", "").await;
    assert_eq!(ids(&direct), [reply.as_str()]);
    let deep = relations(&server, &alice, &room, &root, "", "recurse=true").await;
    assert_eq!(ids(&deep), [reaction.as_str(), reply.as_str()], "{deep}");
    assert_eq!(deep["recursion_depth"], 3, "{deep}");
    let annotations = relations(&server, &alice, &room, &root, "/m.annotation", "recurse=true").await;
    assert_eq!(ids(&annotations), [reaction.as_str()], "{annotations}");
    let forward = relations(&server, &alice, &room, &root, "", "recurse=true&dir=f&limit=1").await;
    assert_eq!(ids(&forward), [reply.as_str()], "{forward}");
    let next = forward["next_batch"].as_str().expect("next_batch");
    let forward = relations(&server, &alice, &room, &root, "", &format!("recurse=true&dir=f&from={next}")).await;
    assert_eq!(ids(&forward), [reaction.as_str()], "{forward}");
}

#[tokio::test]
async fn relations_need_access_to_the_room_and_the_parent() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = create_room(&server, &alice, json!({"preset": "private_chat"})).await;
    let root = send_text(&server, &alice, &room, "root").await;
    send_event(&server, &alice, &room, "m.room.message", in_thread(&root, "reply")).await;

    let outsider = server.get(&relations_path(&room, &root, "", ""), bob.token()).await;
    assert_error(&outsider, 403, "M_FORBIDDEN");
    let unknown_event = server.get(&relations_path(&room, "$nope:localhost", "", ""), alice.token()).await;
    assert_error(&unknown_event, 404, "M_NOT_FOUND");
    let unknown_room = server.get(&relations_path("!nope:localhost", &root, "", ""), alice.token()).await;
    assert_error(&unknown_room, 403, "M_FORBIDDEN");
    let threads = server.get(&format!("/_matrix/client/v1/rooms/{}/threads", enc(&room)), bob.token()).await;
    assert_error(&threads, 403, "M_FORBIDDEN");

    // History from before bob joined a `joined` room is hidden, and so is its parent.
    let room = create_room(
        &server,
        &alice,
        json!({"preset": "public_chat",
               "initial_state": [{"type": "m.room.history_visibility", "content": {"history_visibility": "joined"}}]}),
    )
    .await;
    let root = send_text(&server, &alice, &room, "root").await;
    send_event(&server, &alice, &room, "m.room.message", in_thread(&root, "early")).await;
    join(&server, &bob, &room).await;
    let late = send_event(&server, &alice, &room, "m.room.message", in_thread(&root, "late")).await;
    let hidden = server.get(&relations_path(&room, &root, "", ""), bob.token()).await;
    assert_error(&hidden, 404, "M_NOT_FOUND");
    assert_eq!(ids(&relations(&server, &alice, &room, &root, "", "").await).len(), 2);
    // The later reply is visible to bob, its parent is not.
    let late_event = event(&server, &bob, &room, &late).await;
    assert_eq!(late_event["content"]["body"], "late");
}

#[tokio::test]
async fn events_carry_bundled_aggregations_that_redactions_update() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let carol = server.register("carol", "pw").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;
    join(&server, &carol, &room).await;
    let root = send_text(&server, &alice, &room, "root").await;
    let bob_reply = send_event(&server, &bob, &room, "m.room.message", in_thread(&root, "bob says")).await;
    let alice_reply = send_event(&server, &alice, &room, "m.room.message", in_thread(&root, "alice says")).await;
    // Bob cannot edit alice's event; alice's newest edit wins.
    send_event(&server, &bob, &room, "m.room.message", edit(&root, "bob's edit")).await;
    let first_edit = send_event(&server, &alice, &room, "m.room.message", edit(&root, "first")).await;
    let second_edit = send_event(&server, &alice, &room, "m.room.message", edit(&root, "second")).await;
    let reference = send_event(
        &server,
        &bob,
        &room,
        "m.room.message",
        json!({"msgtype": "m.text", "body": "see", "m.relates_to": {"rel_type": "m.reference", "event_id": root}}),
    )
    .await;

    let served = event(&server, &alice, &room, &root).await;
    let bundle = &served["unsigned"]["m.relations"];
    assert_eq!(bundle["m.thread"]["count"], 2, "{served}");
    assert_eq!(bundle["m.thread"]["latest_event"]["event_id"], alice_reply, "{served}");
    assert_eq!(bundle["m.thread"]["latest_event"]["content"]["body"], "alice says", "{served}");
    assert_eq!(bundle["m.thread"]["current_user_participated"], true);
    assert_eq!(bundle["m.replace"]["event_id"], second_edit, "{served}");
    assert_eq!(bundle["m.replace"]["content"]["m.new_content"]["body"], "second", "{served}");
    assert_eq!(bundle["m.reference"]["chunk"], json!([{"event_id": reference}]), "{served}");
    let for_bob = event(&server, &bob, &room, &root).await;
    assert_eq!(for_bob["unsigned"]["m.relations"]["m.thread"]["current_user_participated"], true);
    let for_carol = event(&server, &carol, &room, &root).await;
    assert_eq!(for_carol["unsigned"]["m.relations"]["m.thread"]["current_user_participated"], false);
    // An event without relations has none.
    let plain = event(&server, &alice, &room, &bob_reply).await;
    assert!(plain["unsigned"].get("m.relations").is_none(), "{plain}");

    // The same bundle on /messages, /context, /sync and /relations.
    let thread_count = |event: &Value| event["unsigned"]["m.relations"]["m.thread"]["count"].clone();
    let path = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=20", enc(&room));
    let (_, messages) = server.get(&path, alice.token()).await;
    assert_eq!(thread_count(find(&messages["chunk"], &root)), 2, "{messages}");
    let path = format!("/_matrix/client/v3/rooms/{}/context/{}?limit=2", enc(&room), enc(&root));
    let (_, context) = server.get(&path, alice.token()).await;
    assert_eq!(thread_count(&context["event"]), 2, "{context}");
    let filter = enc(&json!({"room": {"timeline": {"limit": 50}}}).to_string());
    let (_, sync) = server.get(&format!("/_matrix/client/v3/sync?filter={filter}"), alice.token()).await;
    let timeline = &sync["rooms"]["join"][&room]["timeline"]["events"];
    assert_eq!(thread_count(find(timeline, &root)), 2, "{sync}");
    let in_sync = &find(timeline, &root)["unsigned"]["m.relations"];
    assert_eq!(in_sync["m.replace"]["event_id"], second_edit, "{sync}");
    // Bundled events take the sync format (no room_id) there.
    assert!(in_sync["m.replace"].get("room_id").is_none(), "{sync}");
    assert!(in_sync["m.thread"]["latest_event"].get("room_id").is_none(), "{sync}");
    assert_eq!(bundle["m.thread"]["latest_event"]["room_id"], room.as_str());
    let listed = relations(&server, &alice, &room, &root, "/m.thread", "").await;
    assert_eq!(ids(&listed), [alice_reply.as_str(), bob_reply.as_str()]);

    // Redactions take children out: the thread falls back to bob's reply, the edit to the first.
    redact(&server, &alice, &room, &alice_reply).await;
    redact(&server, &alice, &room, &second_edit).await;
    let served = event(&server, &alice, &room, &root).await;
    let bundle = &served["unsigned"]["m.relations"];
    assert_eq!(bundle["m.thread"]["count"], 1, "{served}");
    assert_eq!(bundle["m.thread"]["latest_event"]["event_id"], bob_reply, "{served}");
    assert_eq!(bundle["m.replace"]["event_id"], first_edit, "{served}");
    let listed = relations(&server, &alice, &room, &root, "/m.thread", "").await;
    assert_eq!(ids(&listed), [bob_reply.as_str()]);
    // Alice still takes part, as the root's sender. Bob may not redact alice's edit (he is no
    // moderator): the redaction is stored but applies to nothing.
    let served = event(&server, &alice, &room, &root).await;
    assert_eq!(served["unsigned"]["m.relations"]["m.thread"]["current_user_participated"], true, "root sender");
    redact(&server, &bob, &room, &first_edit).await;
    let served = event(&server, &alice, &room, &root).await;
    assert_eq!(served["unsigned"]["m.relations"]["m.replace"]["event_id"], first_edit, "{served}");
    redact(&server, &bob, &room, &reference).await;
    let served = event(&server, &alice, &room, &root).await;
    assert!(served["unsigned"]["m.relations"].get("m.reference").is_none(), "{served}");
    redact(&server, &bob, &room, &bob_reply).await;
    let served = event(&server, &carol, &room, &root).await;
    assert!(served["unsigned"]["m.relations"].get("m.thread").is_none(), "{served}");
}

#[tokio::test]
async fn threads_off_relations_and_duplicate_annotations_are_refused() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;
    let root = send_text(&server, &alice, &room, "root").await;
    let reply = send_event(&server, &alice, &room, "m.room.message", in_thread(&root, "reply")).await;

    // A thread cannot start from an event that relates to another.
    let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/nested", enc(&room));
    let nested = server.put(&path, alice.token(), in_thread(&reply, "nested")).await;
    assert_error(&nested, 400, "M_UNKNOWN");

    // One annotation per (sender, type, key), until it is redacted.
    let react = |key: &str| json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": root, "key": key}});
    let first = send_event(&server, &bob, &room, "m.reaction", react("👍")).await;
    let path = format!("/_matrix/client/v3/rooms/{}/send/m.reaction/again", enc(&room));
    let again = server.put(&path, bob.token(), react("👍")).await;
    assert_error(&again, 400, "M_DUPLICATE_ANNOTATION");
    send_event(&server, &bob, &room, "m.reaction", react("🎉")).await;
    send_event(&server, &alice, &room, "m.reaction", react("👍")).await;
    redact(&server, &bob, &room, &first).await;
    send_event(&server, &bob, &room, "m.reaction", react("👍")).await;
    let annotations = relations(&server, &alice, &room, &root, "/m.annotation", "").await;
    assert_eq!(ids(&annotations).len(), 3, "{annotations}");
    // Annotations are not aggregated.
    let served = event(&server, &alice, &room, &root).await;
    assert!(served["unsigned"]["m.relations"].get("m.annotation").is_none(), "{served}");
}
