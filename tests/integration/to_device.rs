//! `sendToDevice`: transaction IDs are scoped to the sending device and checked in the same
//! locked commit as the messages, so concurrent or abandoned repeats deliver once; messages for
//! users of other servers are accepted into the outbound queue along with local ones.

use std::{sync::Arc, time::Duration};

use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::harness::{Session, TestServer};

/// Every to-device event bob's device gets from now on (syncing until nothing more comes).
async fn received(server: &TestServer, who: &Session) -> Vec<Value> {
    let mut events = Vec::new();
    let mut since: Option<String> = None;
    loop {
        let query = since.as_ref().map(|s| format!("&since={s}")).unwrap_or_default();
        let (status, body) = server.get(&format!("/_matrix/client/v3/sync?timeout=0{query}"), who.token()).await;
        assert_eq!(status, 200, "{body}");
        let batch = body["to_device"]["events"].as_array().cloned().unwrap_or_default();
        since = body["next_batch"].as_str().map(str::to_owned);
        if batch.is_empty() {
            return events;
        }
        events.extend(batch);
    }
}

#[tokio::test]
async fn transaction_ids_are_per_device_and_repeats_deliver_once() {
    let server = Arc::new(TestServer::start().await);
    let alice = server.register("alice", "pw").await;
    let (_, second) = server.login("alice", "pw").await;
    let alice2 = Session::from_response(&second);
    let bob = server.register("bob", "pw").await;
    let to_bob = |n: u32| json!({"messages": {bob.user_id.clone(): {bob.device_id.clone(): {"n": n}}}});

    // The same transaction ID from two devices of one user: two transactions.
    let path = "/_matrix/client/v3/sendToDevice/org.example.test/t1";
    assert_eq!(server.put(path, alice.token(), to_bob(1)).await.0, 200);
    assert_eq!(server.put(path, alice2.token(), to_bob(2)).await.0, 200);
    assert_eq!(server.put(path, alice.token(), to_bob(1)).await.0, 200, "a repeat is accepted");

    // Many concurrent repeats of one transaction, some abandoned by their clients: once.
    let mut tasks = JoinSet::new();
    for i in 0..20u64 {
        let (server, token, body) = (server.clone(), alice.access_token.clone(), to_bob(3));
        tasks.spawn(async move {
            let timeout = Duration::from_millis(if i % 2 == 0 { 1 + i % 5 } else { 30_000 });
            let client = reqwest::Client::builder().timeout(timeout).build().expect("client");
            let url = server.url("/_matrix/client/v3/sendToDevice/org.example.test/t2");
            client.put(url).bearer_auth(token).json(&body).send().await.map(|r| r.status().as_u16()).ok()
        });
    }
    let mut answered = false;
    while let Some(status) = tasks.join_next().await {
        answered |= status.expect("task") == Some(200);
    }
    assert!(answered);
    // The abandoned ones finish on the server even so; give them a moment.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut numbers: Vec<u64> =
        received(&server, &bob).await.iter().filter_map(|e| e["content"]["n"].as_u64()).collect();
    numbers.sort_unstable();
    assert_eq!(numbers, [1, 2, 3]);
}

#[tokio::test]
async fn messages_for_other_servers_are_accepted_beside_local_ones() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    // Only remote recipients: queued for federation, not an error.
    let remote = json!({"messages": {"@eve:elsewhere.example": {"DEVICE": {"x": 1}, "*": {"x": 2}}}});
    let (status, body) = server.put("/_matrix/client/v3/sendToDevice/org.example.test/r1", alice.token(), remote).await;
    assert_eq!(status, 200, "{body}");
    let mixed = json!({"messages": {"@eve:elsewhere.example": {"DEVICE": {"x": 3}},
                                    bob.user_id.clone(): {bob.device_id.clone(): {"x": 4}}}});
    let (status, body) = server.put("/_matrix/client/v3/sendToDevice/org.example.test/r2", alice.token(), mixed).await;
    assert_eq!(status, 200, "{body}");
    let events = received(&server, &bob).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["content"], json!({"x": 4}));
    assert_eq!(events[0]["sender"], alice.user_id.as_str());
}
