//! Paging through history that is mostly hidden or filtered: `/messages` stops after a bounded
//! scan and hands back a token to go on from, and `/timestamp_to_event` answers from its index
//! in rooms with many events.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::{
    harness::{Session, TestServer, enc},
    room_helpers::{create_room, send_text},
};

/// Sends `count` events of a custom type, a few requests at a time.
async fn send_noise(server: &Arc<TestServer>, session: &Session, room: &str, count: usize) {
    const SENDERS: usize = 8;
    let mut tasks = tokio::task::JoinSet::new();
    for sender in 0..SENDERS {
        let (server, session, room) = (server.clone(), session.clone(), room.to_owned());
        tasks.spawn(async move {
            for i in (sender..count).step_by(SENDERS) {
                let path = format!("/_matrix/client/v3/rooms/{}/send/org.example.noise/noise{i}", enc(&room));
                let (status, body) = server.put(&path, session.token(), json!({"i": i})).await;
                assert_eq!(status, 200, "noise {i}: {body}");
            }
        });
    }
    while let Some(result) = tasks.join_next().await {
        result.expect("sender task");
    }
}

/// One `/messages` page: (chunk, end token).
async fn page(server: &TestServer, session: &Session, room: &str, query: &str) -> (Vec<Value>, Option<String>) {
    let path = format!("/_matrix/client/v3/rooms/{}/messages?{query}", enc(room));
    let (status, body) = server.get(&path, session.token()).await;
    assert_eq!(status, 200, "{body}");
    let chunk = body["chunk"].as_array().cloned().unwrap_or_default();
    (chunk, body["end"].as_str().map(str::to_owned))
}

/// Follows `end` tokens from `query` (without `from`) until the chunk holds an event or `end`
/// is absent; returns the pages read and the events found.
async fn follow(server: &TestServer, session: &Session, room: &str, query: &str) -> (Vec<Option<String>>, Vec<Value>) {
    let mut ends = Vec::new();
    let mut from: Option<String> = None;
    loop {
        let query = match &from {
            Some(from) => format!("{query}&from={from}"),
            None => query.to_owned(),
        };
        let (chunk, end) = page(server, session, room, &query).await;
        ends.push(end.clone());
        assert!(ends.len() <= 10, "paging does not end: {ends:?}");
        if !chunk.is_empty() || end.is_none() {
            return (ends, chunk);
        }
        from = end;
    }
}

#[tokio::test]
async fn messages_scan_a_bounded_number_of_events_and_continue_from_there() {
    let server = Arc::new(TestServer::start().await);
    let alice = server.register("alice", "pw").await;
    let room = create_room(&server, &alice, json!({})).await;
    let needle = send_text(&server, &alice, &room, "needle").await;
    send_noise(&server, &alice, &room, 2_000).await;

    // Backwards, only messages: the first pages stop early, empty but with a token, and
    // following the tokens reaches the one message under the noise.
    let messages = enc(&json!({"types": ["m.room.message"]}).to_string());
    let (ends, chunk) = follow(&server, &alice, &room, &format!("dir=b&limit=10&filter={messages}")).await;
    assert!(ends.len() >= 3, "2,000 filtered events were scanned in one request: {ends:?}");
    assert_eq!(chunk.len(), 1, "{chunk:?}");
    assert_eq!(chunk[0]["event_id"], needle);
    // Nothing older is a message. As in Synapse (and Complement's `TestRoomImageRoundtrip`),
    // a page that holds events has an `end`; the page after it is empty and has none.
    let end = ends.last().cloned().flatten().expect("a page with events has an end");
    let (chunk, end) = page(&server, &alice, &room, &format!("dir=b&limit=10&filter={messages}&from={end}")).await;
    assert!(chunk.is_empty() && end.is_none(), "{chunk:?} {end:?}");

    // A filter that matches nothing ends (no `end`) at the start of the room, either way.
    let nothing = enc(&json!({"types": ["org.example.nothing"]}).to_string());
    for dir in ["b", "f"] {
        let (ends, chunk) = follow(&server, &alice, &room, &format!("dir={dir}&limit=5&filter={nothing}")).await;
        assert!(chunk.is_empty());
        assert!(ends.len() >= 3, "dir={dir}: {ends:?}");
        assert_eq!(ends.last(), Some(&None), "dir={dir}");
    }

    // Without a filter nothing changes: full pages, in order.
    let (chunk, end) = page(&server, &alice, &room, "dir=b&limit=50").await;
    assert_eq!(chunk.len(), 50);
    assert!(chunk.iter().all(|e| e["type"] == "org.example.noise"));
    assert!(end.is_some());
}

/// The expected answer by definition: among `events` (timeline order, with timestamps), the
/// first at or after `ts` (`forward`), or the last at or before it, by (timestamp, order).
fn expected_at(events: &[(String, u64)], ts: u64, forward: bool) -> Option<(String, u64)> {
    let mut candidates: Vec<(u64, usize)> = events
        .iter()
        .enumerate()
        .filter(|(_, (_, t))| if forward { *t >= ts } else { *t <= ts })
        .map(|(i, (_, t))| (*t, i))
        .collect();
    candidates.sort_unstable();
    let (t, i) = if forward { *candidates.first()? } else { *candidates.last()? };
    Some((events[i].0.clone(), t))
}

#[tokio::test]
async fn timestamp_to_event_is_right_in_both_directions_over_many_events() {
    let server = Arc::new(TestServer::start().await);
    let alice = server.register("alice", "pw").await;
    let room = create_room(&server, &alice, json!({})).await;
    for i in 0..300 {
        send_text(&server, &alice, &room, &format!("m{i}")).await;
        if i % 50 == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        }
    }
    // Every event of the room in timeline order, with its timestamp.
    let (chunk, end) = page(&server, &alice, &room, "dir=f&limit=1000").await;
    let end = end.expect("a page with events has an end");
    let (rest, end) = page(&server, &alice, &room, &format!("dir=f&limit=1000&from={end}")).await;
    assert!(rest.is_empty() && end.is_none(), "{rest:?} {end:?}");
    let events: Vec<(String, u64)> = chunk
        .iter()
        .map(|e| (e["event_id"].as_str().unwrap().to_owned(), e["origin_server_ts"].as_u64().unwrap()))
        .collect();
    assert!(events.len() > 300);

    let mut probes: Vec<u64> = events.iter().flat_map(|(_, t)| [t - 1, *t, t + 1]).collect();
    probes.sort_unstable();
    probes.dedup();
    for ts in probes {
        for (dir, forward) in [("f", true), ("b", false)] {
            let path = format!("/_matrix/client/v1/rooms/{}/timestamp_to_event?ts={ts}&dir={dir}", enc(&room));
            let (status, found) = server.get(&path, alice.token()).await;
            match expected_at(&events, ts, forward) {
                Some((event_id, event_ts)) => {
                    assert_eq!(status, 200, "ts={ts} dir={dir}: {found}");
                    assert_eq!(found, json!({"event_id": event_id, "origin_server_ts": event_ts}), "ts={ts} dir={dir}");
                }
                None => assert_eq!(status, 404, "ts={ts} dir={dir}: {found}"),
            }
        }
    }
}
