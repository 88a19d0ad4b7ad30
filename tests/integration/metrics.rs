//! Prometheus metrics: a separate listener, off by default, whose counters move with traffic;
//! the metrics path is not served on the client listener.

use std::time::Duration;

use serde_json::json;

use crate::harness::{TestServer, enc};

async fn scrape(server: &TestServer) -> String {
    let url = server.metrics_url.as_deref().expect("metrics listener");
    let response = server.http.get(url).send().await.expect("scrape");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap_or_default().to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    response.text().await.expect("body")
}

/// The value of the first sample whose line starts with `name` and contains every one of
/// `labels` (0 when there is none).
fn sample(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| line.split(['{', ' ']).next() == Some(name))
        .find(|line| labels.iter().all(|label| line.contains(label)))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn counters_move_with_traffic_on_their_own_listener() {
    // Off by default.
    assert!(TestServer::start().await.metrics_url.is_none());

    let server = TestServer::start_with("[global.metrics]\nenabled = true\nport = 0\n").await;
    let url = server.metrics_url.clone().expect("metrics listener");
    assert!(url.starts_with("http://127.0.0.1:"), "loopback by default: {url}");
    // Not on the client listener.
    let (status, body) = server.get("/metrics", None).await;
    assert_eq!(status, 404);
    assert_eq!(body["errcode"], "M_UNRECOGNIZED");

    let before = scrape(&server).await;
    let send = ["method=\"PUT\"", "endpoint=\"/_matrix/client/v3/rooms/{room_id}/send/{event_type}/{txn_id}\""];
    assert_eq!(sample(&before, "trellis_http_requests_total", &send), 0.0);

    let alice = server.register("alice", "pw").await;
    let token = Some(alice.access_token.as_str());
    let (_, room) = server.post("/_matrix/client/v3/createRoom", token, json!({})).await;
    let room = room["room_id"].as_str().expect("room_id").to_owned();
    for i in 0..3 {
        let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/t{i}", enc(&room));
        assert_eq!(server.put(&path, token, json!({"msgtype": "m.text", "body": "hi"})).await.0, 200);
    }
    let (_, first) = server.get("/_matrix/client/v3/sync?timeout=0", token).await;
    let since = first["next_batch"].as_str().expect("next_batch").to_owned();

    // A long-poll stays open while it waits.
    let waiting = {
        let (http, url, token) = (
            server.http.clone(),
            server.url(&format!("/_matrix/client/v3/sync?timeout=1500&since={since}")),
            alice.access_token.clone(),
        );
        tokio::spawn(async move { http.get(url).bearer_auth(token).send().await.map(|r| r.status().as_u16()) })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let during = scrape(&server).await;
    assert_eq!(sample(&during, "trellis_syncs_open", &[]), 1.0, "{during}");
    assert_eq!(waiting.await.expect("join").expect("sync"), 200);

    let after = scrape(&server).await;
    assert_eq!(sample(&after, "trellis_http_requests_total", &[send[0], send[1], "status=\"200\""]), 3.0, "{after}");
    assert_eq!(sample(&after, "trellis_http_request_duration_seconds_count", &send), 3.0);
    assert!(sample(&after, "trellis_http_requests_total", &["endpoint=\"/_matrix/client/v3/register\""]) >= 1.0);
    // The room's creation events and the three messages.
    assert!(sample(&after, "trellis_events_persisted_total", &["origin=\"local\""]) >= 8.0, "{after}");
    assert_eq!(sample(&after, "trellis_sync_duration_seconds_count", &[]), 2.0);
    assert_eq!(sample(&after, "trellis_syncs_open", &[]), 0.0);
    // The store and the process.
    assert!(after.contains("trellis_db_estimated_keys{table=\"users\"}"), "{after}");
    assert!(after.contains("trellis_federation_send_queue"));
    assert!(after.contains("trellis_push_queue"));
    assert!(sample(&after, "process_resident_memory_bytes", &[]) > 1e6);
    assert!(sample(&after, "process_cpu_seconds_total", &[]) > 0.0);
    assert!(sample(&after, "process_open_fds", &[]) > 0.0);
    // Paths that matched no route are counted together, not by path.
    server.get("/_matrix/client/v3/no/such/thing", None).await;
    let last = scrape(&server).await;
    assert_eq!(sample(&last, "trellis_http_requests_total", &["endpoint=\"unmatched\"", "status=\"404\""]), 2.0);
}
