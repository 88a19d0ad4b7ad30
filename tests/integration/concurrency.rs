//! Writes racing each other and requests that clients abandon half-way: stream positions are
//! never reused and every committed change reaches sync; a logout racing a refresh or other
//! requests leaves no working token and no device behind.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::harness::{Session, TestServer, assert_error, enc};

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

async fn login_with_refresh(server: &TestServer, user: &str) -> (Session, String) {
    let body = json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user},
                      "password": "pw", "refresh_token": true});
    let (status, response) = server.post("/_matrix/client/v3/login", None, body).await;
    assert_eq!(status, 200, "{response}");
    let refresh = response["refresh_token"].as_str().expect("refresh_token").to_owned();
    (Session::from_response(&response), refresh)
}

async fn device_ids(server: &TestServer, who: &Session) -> BTreeSet<String> {
    let (status, body) = server.get("/_matrix/client/v3/devices", who.token()).await;
    assert_eq!(status, 200, "{body}");
    body["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .filter_map(|d| d["device_id"].as_str().map(str::to_owned))
        .collect()
}

/// A logout racing a refresh of the same device, many times. Either the refresh wins (the
/// logout's token is already replaced: 401, and the new tokens work) or the logout does, and
/// then no token of that device works (401 `M_UNKNOWN_TOKEN`: the refresh failed, or its new
/// token went with the device) and the device is gone.
#[tokio::test]
async fn a_logout_racing_a_refresh_leaves_no_working_token() {
    let server = Arc::new(TestServer::start().await);
    let watcher = server.register("erin", "pw").await;
    let whoami = |token: String| {
        let server = server.clone();
        async move { server.get("/_matrix/client/v3/account/whoami", Some(&token)).await }
    };
    for round in 0..60 {
        let (session, refresh) = login_with_refresh(&server, "erin").await;
        let (a, b) = (server.clone(), server.clone());
        let token = session.access_token.clone();
        let logout = tokio::spawn(async move { a.post("/_matrix/client/v3/logout", Some(&token), json!({})).await });
        let refreshed =
            tokio::spawn(
                async move { b.post("/_matrix/client/v3/refresh", None, json!({"refresh_token": refresh})).await },
            );
        let (logout, refreshed) = (logout.await.expect("logout"), refreshed.await.expect("refresh"));
        assert_error(&whoami(session.access_token.clone()).await, 401, "M_UNKNOWN_TOKEN");
        let new_token = refreshed.1["access_token"].as_str().map(str::to_owned);
        if logout.0 == 401 {
            // The refresh came first: the device lives on with its new token; log it out.
            let new_token = new_token.unwrap_or_else(|| panic!("round {round}: neither succeeded: {refreshed:?}"));
            assert_eq!(whoami(new_token.clone()).await.0, 200, "round {round}");
            assert_eq!(server.post("/_matrix/client/v3/logout", Some(&new_token), json!({})).await.0, 200);
            continue;
        }
        assert_eq!(logout.0, 200, "round {round}: {logout:?}");
        if let Some(new_token) = new_token {
            assert_error(&whoami(new_token).await, 401, "M_UNKNOWN_TOKEN");
            let new_refresh = refreshed.1["refresh_token"].as_str().expect("refresh_token");
            let again = server.post("/_matrix/client/v3/refresh", None, json!({"refresh_token": new_refresh})).await;
            assert_error(&again, 401, "M_UNKNOWN_TOKEN");
        }
        assert!(
            !device_ids(&server, &watcher).await.contains(&session.device_id),
            "round {round}: the logged-out device is still listed"
        );
    }
}

/// `logout/all` racing the first requests of several devices (each of which writes the
/// device's last-seen time): afterwards none of their tokens works and no device of theirs is
/// listed: a last-seen write never brings a deleted device back.
#[tokio::test]
async fn logout_all_racing_requests_leaves_no_device_or_token() {
    let server = Arc::new(TestServer::start().await);
    server.register("frank", "pw").await;
    for round in 0..40 {
        let mut sessions = Vec::new();
        for _ in 0..6 {
            let (status, body) = server.login("frank", "pw").await;
            assert_eq!(status, 200, "{body}");
            sessions.push(Session::from_response(&body));
        }
        let mut tasks = JoinSet::new();
        for session in &sessions[1..] {
            for _ in 0..3 {
                let (server, token) = (server.clone(), session.access_token.clone());
                tasks.spawn(async move {
                    server.get("/_matrix/client/v3/account/whoami", Some(&token)).await;
                });
            }
        }
        let (all, token) = (server.clone(), sessions[0].access_token.clone());
        tasks.spawn(async move {
            let (status, body) = all.post("/_matrix/client/v3/logout/all", Some(&token), json!({})).await;
            assert_eq!(status, 200, "{body}");
        });
        while let Some(result) = tasks.join_next().await {
            result.expect("request task");
        }
        for session in &sessions {
            let whoami = server.get("/_matrix/client/v3/account/whoami", session.token()).await;
            assert_error(&whoami, 401, "M_UNKNOWN_TOKEN");
        }
        let (status, body) = server.login("frank", "pw").await;
        assert_eq!(status, 200, "{body}");
        let fresh = Session::from_response(&body);
        let listed = device_ids(&server, &fresh).await;
        assert_eq!(listed, BTreeSet::from([fresh.device_id.clone()]), "round {round}: devices left behind");
        server.post("/_matrix/client/v3/logout", fresh.token(), json!({})).await;
    }
}
