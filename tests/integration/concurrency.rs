//! Writes racing each other and requests that clients abandon half-way: stream positions are
//! never reused and every committed change reaches sync.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::harness::{TestServer, enc};

/// A request with its own client (so a short timeout aborts only it); `None` when it was cut.
async fn request(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: Option<String>,
    body: Option<Value>,
) -> Option<(u16, Value)> {
    let mut builder = client.request(method, url);
    if let Some(token) = token {
        builder = builder.bearer_auth(token);
    }
    if let Some(body) = body {
        builder = builder.json(&body);
    }
    let response = builder.send().await.ok()?;
    let status = response.status().as_u16();
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    Some((status, body))
}

fn account_data_types(sync: &Value) -> BTreeSet<String> {
    sync["account_data"]["events"]
        .as_array()
        .map(|events| events.iter().filter_map(|e| e["type"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// Many clients write account data at once, half of them giving up after 20 to 270 ms (some
/// while their write waits for the lock or runs). Every write that was committed (answered
/// 200, or readable afterwards) shows in an incremental sync from before them all: a dropped
/// request never lets a second writer take the same stream position. A later write is seen by
/// a sync from the newest token. (The race is narrow: on the old code this failed in about
/// half the runs.)
#[tokio::test]
async fn account_data_positions_survive_abandoned_requests() {
    let server = Arc::new(TestServer::start().await);
    let alice = server.register("alice", "pw").await;
    let (status, first) = server.get("/_matrix/client/v3/sync?timeout=0", alice.token()).await;
    assert_eq!(status, 200, "{first}");
    let since = first["next_batch"].as_str().expect("next_batch").to_owned();

    const CLIENTS: usize = 50;
    const WRITES: usize = 24;
    // Large values make each commit take longer: more time for a request to be abandoned
    // while its write runs.
    const PADDING: usize = 256 * 1024;
    let mut tasks = JoinSet::new();
    for client_index in 0..CLIENTS {
        let (server, alice) = (server.clone(), alice.clone());
        tasks.spawn(async move {
            let impatient = client_index % 2 == 0;
            let patient = reqwest::Client::new();
            let mut answered = Vec::new();
            for write in 0..WRITES {
                let millis = 20 + ((client_index * 37 + write * 53) % 250) as u64;
                let client = if impatient {
                    reqwest::Client::builder().timeout(Duration::from_millis(millis)).build().expect("client")
                } else {
                    patient.clone()
                };
                let kind = format!("org.example.c{client_index}.w{write}");
                let url = server.url(&format!("/_matrix/client/v3/user/{}/account_data/{kind}", enc(&alice.user_id)));
                let body = json!({"client": client_index, "write": write, "padding": "x".repeat(PADDING)});
                let result = request(&client, reqwest::Method::PUT, url, Some(alice.access_token.clone()), Some(body));
                if let Some((200, _)) = result.await {
                    answered.push(kind);
                }
            }
            answered
        });
    }
    let mut answered = BTreeSet::new();
    while let Some(result) = tasks.join_next().await {
        answered.extend(result.expect("client task"));
    }
    assert!(!answered.is_empty());

    // What is stored: every write answered 200, and maybe some of the abandoned ones.
    let mut stored = BTreeSet::new();
    for client_index in 0..CLIENTS {
        for write in 0..WRITES {
            let kind = format!("org.example.c{client_index}.w{write}");
            let path = format!("/_matrix/client/v3/user/{}/account_data/{kind}", enc(&alice.user_id));
            let (status, body) = server.get(&path, alice.token()).await;
            if status == 200 {
                assert_eq!((&body["client"], &body["write"]), (&json!(client_index), &json!(write)));
                stored.insert(kind);
            }
        }
    }
    assert!(answered.is_subset(&stored), "answered writes missing: {:?}", answered.difference(&stored));

    let (status, incremental) =
        server.get(&format!("/_matrix/client/v3/sync?timeout=0&since={since}"), alice.token()).await;
    assert_eq!(status, 200, "{incremental}");
    let seen = account_data_types(&incremental);
    let missing: Vec<_> = stored.difference(&seen).collect();
    assert!(missing.is_empty(), "committed writes an incremental sync does not show: {missing:?}");

    // The stream goes on after the newest position: a new write is the only thing the next
    // incremental sync shows.
    let next = incremental["next_batch"].as_str().expect("next_batch").to_owned();
    let path = format!("/_matrix/client/v3/user/{}/account_data/org.example.last", enc(&alice.user_id));
    assert_eq!(server.put(&path, alice.token(), json!({"last": true})).await.0, 200);
    let (_, after) = server.get(&format!("/_matrix/client/v3/sync?timeout=0&since={next}"), alice.token()).await;
    assert_eq!(account_data_types(&after), BTreeSet::from(["org.example.last".to_owned()]), "{after}");
}
