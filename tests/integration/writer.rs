//! The event writer under concurrency: idempotent transaction IDs, rooms created at once,
//! state keys introduced by many rooms at once, writers whose clients disconnect mid-request,
//! and a room creation that fails half-way.

use std::{collections::HashSet, time::Duration};

use serde_json::{Value, json};

use crate::{
    harness::{Session, TestServer, enc},
    room_helpers::{create_room, send_text},
};

fn send_path(room_id: &str, txn: &str) -> String {
    format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}", enc(room_id))
}

#[tokio::test]
async fn one_transaction_id_sent_many_times_at_once_is_one_event() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let room = create_room(&server, &alice, json!({})).await;
    let other_room = create_room(&server, &alice, json!({})).await;

    let sends = (0..20).map(|i| {
        let (server, alice, room) = (&server, &alice, &room);
        async move {
            let body = json!({"msgtype": "m.text", "body": format!("attempt {i}")});
            server.put(&send_path(room, "same-txn"), alice.token(), body).await
        }
    });
    let results = futures_join_all(sends).await;
    let ids: HashSet<String> = results
        .iter()
        .map(|(status, body)| {
            assert_eq!(*status, 200, "send: {body}");
            body["event_id"].as_str().expect("event_id").to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 1, "20 sends of one transaction ID gave {} events", ids.len());
    let event_id = ids.into_iter().next().expect("one event");

    // The timeline holds it once.
    let (_, messages) =
        server.get(&format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=50", enc(&room)), alice.token()).await;
    let count = messages["chunk"].as_array().expect("chunk").iter().filter(|e| e["type"] == "m.room.message").count();
    assert_eq!(count, 1, "timeline: {messages}");

    // The same transaction ID in another room is another event (as Synapse scopes it).
    let (status, body) = server.put(&send_path(&other_room, "same-txn"), alice.token(), json!({"body": "x"})).await;
    assert_eq!(status, 200, "{body}");
    assert_ne!(body["event_id"].as_str(), Some(event_id.as_str()));

    // Another device's same transaction ID is a new event, and only the sending device sees
    // `unsigned.transaction_id`.
    let (status, login) = server.login("alice", "pw").await;
    assert_eq!(status, 200, "{login}");
    let second = Session::from_response(&login);
    let (status, body) = server.put(&send_path(&room, "same-txn"), second.token(), json!({"body": "y"})).await;
    assert_eq!(status, 200, "{body}");
    assert_ne!(body["event_id"].as_str(), Some(event_id.as_str()));
    let (_, sync) = server.get("/_matrix/client/v3/sync", alice.token()).await;
    let (_, sync_second) = server.get("/_matrix/client/v3/sync", second.token()).await;
    let find = |sync: &Value| -> Value {
        sync["rooms"]["join"][&room]["timeline"]["events"]
            .as_array()
            .expect("timeline")
            .iter()
            .find(|e| e["event_id"] == event_id.as_str())
            .cloned()
            .expect("the event in the timeline")
    };
    assert_eq!(find(&sync)["unsigned"]["transaction_id"], "same-txn");
    assert!(find(&sync_second)["unsigned"].get("transaction_id").is_none());
    // `GET /event` too (Complement's TestTxnInEvent).
    let path = format!("/_matrix/client/v3/rooms/{}/event/{}", enc(&room), enc(&event_id));
    let (_, event) = server.get(&path, alice.token()).await;
    assert_eq!(event["unsigned"]["transaction_id"], "same-txn", "{event}");
    let (_, event) = server.get(&path, second.token()).await;
    assert!(event["unsigned"].get("transaction_id").is_none(), "{event}");
}

#[tokio::test]
async fn rooms_created_at_once_by_one_user_are_different_working_rooms() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    for version in ["12", "10"] {
        let creates = (0..16).map(|_| {
            let (server, alice) = (&server, &alice);
            async move {
                server.post("/_matrix/client/v3/createRoom", alice.token(), json!({"room_version": version})).await
            }
        });
        let mut rooms = HashSet::new();
        for (status, body) in futures_join_all(creates).await {
            assert_eq!(status, 200, "createRoom v{version}: {body}");
            rooms.insert(body["room_id"].as_str().expect("room_id").to_owned());
        }
        assert_eq!(rooms.len(), 16, "v{version}: 16 creations gave {} rooms", rooms.len());
        for room in &rooms {
            send_text(&server, &alice, room, "works").await;
        }
    }
}

#[tokio::test]
async fn a_room_creation_that_fails_half_way_leaves_nothing_behind() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let (_, before) = server.get("/_matrix/client/v3/joined_rooms", alice.token()).await;
    // The name event comes after the create, member, power levels and preset events, and is
    // too big to be an event: the creation fails there.
    let body = json!({"name": "n".repeat(70_000), "room_alias_name": "half"});
    let (status, response) = server.post("/_matrix/client/v3/createRoom", alice.token(), body).await;
    assert_eq!(status, 413, "{response}");
    let (_, after) = server.get("/_matrix/client/v3/joined_rooms", alice.token()).await;
    assert_eq!(before, after, "a room was left behind");
    let (status, _) = server.get("/_matrix/client/v3/directory/room/%23half:localhost", alice.token()).await;
    assert_eq!(status, 404, "the alias was left behind");
    let (_, sync) = server.get("/_matrix/client/v3/sync", alice.token()).await;
    assert!(sync["rooms"]["join"].as_object().is_none_or(|rooms| rooms.is_empty()), "sync: {sync}");
    // And the alias is still free for a room that works.
    let room = create_room(&server, &alice, json!({"room_alias_name": "half"})).await;
    let (status, body) = server.get("/_matrix/client/v3/directory/room/%23half:localhost", alice.token()).await;
    assert_eq!((status, body["room_id"].as_str()), (200, Some(room.as_str())));
}

#[tokio::test]
async fn rooms_introducing_one_new_state_key_at_once_each_read_it_back() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let mut rooms = Vec::new();
    for _ in 0..16 {
        rooms.push(create_room(&server, &alice, json!({})).await);
    }
    // Each round a state type no room has used, set in all 16 rooms at once.
    for round in 0..20 {
        let kind = format!("com.example.brand.new.{round}");
        let writes = rooms.iter().enumerate().map(|(i, room)| {
            let (server, alice, kind) = (&server, &alice, &kind);
            async move {
                let path = format!("/_matrix/client/v3/rooms/{}/state/{kind}/k", enc(room));
                server.put(&path, alice.token(), json!({"room": i})).await
            }
        });
        for (status, body) in futures_join_all(writes).await {
            assert_eq!(status, 200, "{body}");
        }
        for (i, room) in rooms.iter().enumerate() {
            let path = format!("/_matrix/client/v3/rooms/{}/state/{kind}/k", enc(room));
            let (status, body) = server.get(&path, alice.token()).await;
            assert_eq!((status, body), (200, json!({"room": i})), "round {round}, room {i}");
            // A second write to the key replaces the first: a room that interned the pair
            // under an id of its own would now hold it twice.
            let (status, body) = server.put(&path, alice.token(), json!({"room": i, "second": true})).await;
            assert_eq!(status, 200, "{body}");
            let (_, state) = server.get(&format!("/_matrix/client/v3/rooms/{}/state", enc(room)), alice.token()).await;
            let events: Vec<&Value> =
                state.as_array().expect("state").iter().filter(|e| e["type"] == kind.as_str()).collect();
            assert_eq!(events.len(), 1, "round {round}, room {i}: {events:?}");
            assert_eq!(events[0]["content"], json!({"room": i, "second": true}));
        }
    }
}

#[tokio::test]
async fn writers_that_disconnect_leave_the_room_consistent_and_writable() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let room = create_room(&server, &alice, json!({})).await;
    // Clients that give up after a few milliseconds, mid-request. Over HTTP/2 a client that
    // gives up resets its stream, and the server drops the request's future at once.
    let impatient =
        reqwest::Client::builder().http2_prior_knowledge().timeout(Duration::from_millis(4)).build().expect("client");
    let token = alice.token().expect("token").to_owned();
    for round in 0..50 {
        let writes = (0..10).map(|i| {
            let client = if i % 2 == 0 { impatient.clone() } else { server.http.clone() };
            let url = server.url(&format!("/_matrix/client/v3/rooms/{}/state/com.example.key/{}", enc(&room), i % 3));
            let token = token.clone();
            async move {
                let _ = client.put(url).bearer_auth(token).json(&json!({"round": round, "writer": i})).send().await;
            }
        });
        futures_join_all(writes).await;
    }
    // Let abandoned writes finish, then check: the room's events form one chain (each names
    // the one before it as its only prev event: no two writers ever built on the same
    // extremities), and each state key holds the newest of its events in the timeline.
    tokio::time::sleep(Duration::from_millis(200)).await;
    send_text(&server, &alice, &room, "still writable").await;
    let filter = json!({"room": {"timeline": {"limit": 1000}}, "event_format": "federation"});
    let path = format!("/_matrix/client/v3/sync?filter={}", enc(&filter.to_string()));
    let (status, sync) = server.get(&path, alice.token()).await;
    assert_eq!(status, 200, "{sync}");
    let timeline = sync["rooms"]["join"][&room]["timeline"]["events"].as_array().expect("timeline").clone();
    let last = timeline.last().expect("an event");
    assert_eq!(last["content"]["body"], "still writable");
    assert!(sync["rooms"]["join"][&room]["timeline"]["limited"] != true, "the timeline should be whole");
    for pair in timeline.windows(2) {
        let (before, after) = (&pair[0], &pair[1]);
        // v12 events carry no event_id in federation format: compare by the reference the
        // next event makes, which must be exactly the previous event's.
        assert_eq!(after["prev_events"].as_array().map(Vec::len), Some(1), "a fork: {after}");
        if let Some(id) = before.get("event_id") {
            assert_eq!(after["prev_events"][0], *id, "a fork");
        }
        assert_eq!(after["depth"].as_u64(), before["depth"].as_u64().map(|d| d + 1), "a fork: {after}");
    }
    for key in ["0", "1", "2"] {
        let newest = timeline
            .iter()
            .rev()
            .find(|e| e["type"] == "com.example.key" && e["state_key"] == key)
            .expect("a write to the key");
        let path = format!("/_matrix/client/v3/rooms/{}/state/com.example.key/{key}", enc(&room));
        let (_, current) = server.get(&path, alice.token()).await;
        assert_eq!(current, newest["content"], "state key {key}");
    }
}

/// Runs futures concurrently on this task and collects their outputs in order.
async fn futures_join_all<F: std::future::Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let handles: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = handles.iter().map(|_| None).collect();
    let mut pending: Vec<(usize, _)> = handles.into_iter().enumerate().collect();
    std::future::poll_fn(|cx| {
        pending.retain_mut(|(i, future)| match future.as_mut().poll(cx) {
            std::task::Poll::Ready(output) => {
                outputs[*i] = Some(output);
                false
            }
            std::task::Poll::Pending => true,
        });
        if pending.is_empty() { std::task::Poll::Ready(()) } else { std::task::Poll::Pending }
    })
    .await;
    outputs.into_iter().flatten().collect()
}
