//! Federation transactions, both ways, between a Trellis server (`hs-a`) and a fake server in
//! this process (`hs-r`) whose signing key the tests hold: it signs requests and events, records
//! the transactions `hs-a` sends it (or refuses them while "down"), and answers
//! `/get_missing_events`, `/event` and `/state_ids` from what the test gives it.

use std::{
    collections::HashMap,
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    extract::{Path as UrlPath, Query, State},
    http::StatusCode,
    routing::{get, post, put},
};
use ruma::{CanonicalJsonObject, RoomVersionId, signatures::Ed25519KeyPair};
use serde_json::{Value, json};

use crate::{
    federation::{Pki, federation_call, free_port, key_document, new_key_pair, serve_tls, sign_with, start_federating},
    harness::{Session, TestServer, assert_error, enc},
    room_helpers::{create_room, send_text},
};

const REMOTE: &str = "hs-r";
const BOB: &str = "@bob:hs-r";

/// What the fake server saw and will answer.
#[derive(Default)]
struct Recorded {
    /// (txn ID, body) of every `/send` attempt, refused ones included.
    attempts: Vec<(String, Value)>,
    /// Bodies of the `/send` transactions it accepted.
    accepted: Vec<(String, Value)>,
    /// Bodies of `/get_missing_events` requests, and the events it answers with.
    missing_requests: Vec<Value>,
    missing_answer: Vec<Value>,
    /// Events served by `/event/{id}`, and `/state_ids` answers by event ID (`*`: any).
    events: HashMap<String, Value>,
    state_ids: HashMap<String, Value>,
    state_ids_requests: Vec<String>,
    /// `/event_auth` answers by event ID.
    event_auth: HashMap<String, Vec<Value>>,
}

struct FakeRemote {
    key_pair: Arc<Ed25519KeyPair>,
    port: u16,
    down: Arc<AtomicBool>,
    seen: Arc<Mutex<Recorded>>,
}

#[derive(Clone)]
struct FakeState {
    key_pair: Arc<Ed25519KeyPair>,
    down: Arc<AtomicBool>,
    seen: Arc<Mutex<Recorded>>,
}

impl FakeRemote {
    async fn start(pki: &Pki, listener: Option<tokio::net::TcpListener>) -> Self {
        let listener = match listener {
            Some(listener) => listener,
            None => tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        };
        let port = listener.local_addr().unwrap().port();
        let state = FakeState {
            key_pair: Arc::new(new_key_pair("r1")),
            down: Arc::new(AtomicBool::new(false)),
            seen: Arc::default(),
        };
        let acceptor = trellis::server::tls_acceptor(&pki.path("server.crt"), &pki.path("server.key")).unwrap();
        let app = Router::new()
            .route(
                "/_matrix/key/v2/server",
                get(|State(state): State<FakeState>| async move {
                    Json(serde_json::to_value(key_document(REMOTE, &state.key_pair, 3_600_000)).unwrap())
                }),
            )
            .route(
                "/_matrix/federation/v1/send/{txn}",
                put(|State(state): State<FakeState>, UrlPath(txn): UrlPath<String>, Json(body): Json<Value>| async move {
                    let mut seen = state.seen.lock().unwrap();
                    seen.attempts.push((txn.clone(), body.clone()));
                    if state.down.load(Ordering::SeqCst) {
                        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"errcode": "M_UNKNOWN"})));
                    }
                    seen.accepted.push((txn, body));
                    (StatusCode::OK, Json(json!({"pdus": {}})))
                }),
            )
            .route(
                "/_matrix/federation/v1/get_missing_events/{room}",
                post(|State(state): State<FakeState>, Json(body): Json<Value>| async move {
                    let mut seen = state.seen.lock().unwrap();
                    seen.missing_requests.push(body);
                    Json(json!({"events": seen.missing_answer.clone()}))
                }),
            )
            .route(
                "/_matrix/federation/v1/event/{id}",
                get(|State(state): State<FakeState>, UrlPath(id): UrlPath<String>| async move {
                    match state.seen.lock().unwrap().events.get(&id) {
                        Some(event) => (
                            StatusCode::OK,
                            Json(json!({"origin": REMOTE, "origin_server_ts": 0, "pdus": [event]})),
                        ),
                        None => (StatusCode::NOT_FOUND, Json(json!({"errcode": "M_NOT_FOUND"}))),
                    }
                }),
            )
            .route(
                "/_matrix/federation/v1/state_ids/{room}",
                get(|State(state): State<FakeState>, Query(query): Query<HashMap<String, String>>| async move {
                    let id = query.get("event_id").cloned().unwrap_or_default();
                    let mut seen = state.seen.lock().unwrap();
                    seen.state_ids_requests.push(id.clone());
                    match seen.state_ids.get(&id).or_else(|| seen.state_ids.get("*")) {
                        Some(answer) => (StatusCode::OK, Json(answer.clone())),
                        None => (StatusCode::NOT_FOUND, Json(json!({"errcode": "M_NOT_FOUND"}))),
                    }
                }),
            )
            .route(
                "/_matrix/federation/v1/event_auth/{room}/{id}",
                get(|State(state): State<FakeState>, UrlPath((_, id)): UrlPath<(String, String)>| async move {
                    match state.seen.lock().unwrap().event_auth.get(&id) {
                        Some(chain) => (StatusCode::OK, Json(json!({"auth_chain": chain}))),
                        None => (StatusCode::NOT_FOUND, Json(json!({"errcode": "M_NOT_FOUND"}))),
                    }
                }),
            )
            .with_state(state.clone());
        serve_tls(listener, acceptor, app);
        Self { key_pair: state.key_pair, port, down: state.down, seen: state.seen }
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Recorded> {
        self.seen.lock().unwrap()
    }

    /// Sends a transaction to `server` signed by `hs-r`; returns status and body.
    async fn send(&self, pki: &Pki, server: &TestServer, txn: &str, body: &Value) -> (u16, Value) {
        let uri = format!("/_matrix/federation/v1/send/{txn}");
        let authorization = sign_with(&self.key_pair, REMOTE, "PUT", &uri, "hs-a", Some(body));
        federation_call(&pki.client(), server, "PUT", &uri, Some(&authorization), Some(body)).await
    }

    async fn send_pdus(&self, pki: &Pki, server: &TestServer, txn: &str, pdus: Vec<Value>) -> (u16, Value) {
        let body = json!({"origin": REMOTE, "origin_server_ts": now_ms(), "pdus": pdus});
        self.send(pki, server, txn, &body).await
    }
}

fn now_ms() -> u64 {
    u64::from(ruma::MilliSecondsSinceUnixEpoch::now().get())
}

/// A room on `hs-a` as the fake server builds events for it (room version 10).
struct RemoteRoom {
    room_id: String,
    create: String,
    power_levels: String,
    join_rules: String,
    bob_member: Option<String>,
    latest: String,
    depth: u64,
}

impl RemoteRoom {
    async fn read(server: &TestServer, session: &Session, room_id: &str) -> Self {
        let (status, state) =
            server.get(&format!("/_matrix/client/v3/rooms/{}/state", enc(room_id)), session.token()).await;
        assert_eq!(status, 200, "{state}");
        let id_of = |kind: &str| {
            state.as_array().unwrap().iter().find(|e| e["type"] == kind).unwrap()["event_id"]
                .as_str()
                .unwrap()
                .to_owned()
        };
        Self {
            room_id: room_id.to_owned(),
            create: id_of("m.room.create"),
            power_levels: id_of("m.room.power_levels"),
            join_rules: id_of("m.room.join_rules"),
            bob_member: None,
            latest: newest_event(server, session, room_id).await,
            depth: 100,
        }
    }

    /// A signed event from `@bob:hs-r` after `prev` (the newest event known by default).
    fn event(
        &mut self,
        remote: &FakeRemote,
        kind: &str,
        state_key: Option<&str>,
        content: Value,
        prev: Option<Vec<String>>,
        auth: Option<Vec<String>>,
    ) -> (String, Value) {
        self.depth += 1;
        let auth = auth.unwrap_or_else(|| {
            let mut auth = vec![self.create.clone(), self.power_levels.clone()];
            if let Some(member) = &self.bob_member {
                auth.push(member.clone());
            }
            if kind == "m.room.member" {
                auth.push(self.join_rules.clone());
            }
            auth
        });
        let mut event = json!({
            "room_id": self.room_id,
            "sender": BOB,
            "origin_server_ts": now_ms(),
            "type": kind,
            "content": content,
            "prev_events": prev.unwrap_or_else(|| vec![self.latest.clone()]),
            "auth_events": auth,
            "depth": self.depth,
        });
        if let Some(state_key) = state_key {
            event["state_key"] = json!(state_key);
        }
        let (id, event) = sign_event(&remote.key_pair, event);
        self.latest = id.clone();
        (id, event)
    }
}

fn sign_event(key_pair: &Ed25519KeyPair, event: Value) -> (String, Value) {
    let rules = RoomVersionId::V10.rules().unwrap();
    let mut event: CanonicalJsonObject = serde_json::from_value(event).unwrap();
    ruma::signatures::hash_and_sign_event(REMOTE, key_pair, &mut event, &rules.redaction).unwrap();
    let id = format!("${}", ruma::signatures::reference_hash(&event, &rules).unwrap());
    (id, serde_json::to_value(event).unwrap())
}

async fn newest_event(server: &TestServer, session: &Session, room_id: &str) -> String {
    timeline(server, session, room_id).await.last().unwrap()["event_id"].as_str().unwrap().to_owned()
}

/// The room's timeline as `hs-a` serves it, oldest first.
async fn timeline(server: &TestServer, session: &Session, room_id: &str) -> Vec<Value> {
    let (status, page) = server
        .get(&format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=50", enc(room_id)), session.token())
        .await;
    assert_eq!(status, 200, "{page}");
    let mut events = page["chunk"].as_array().unwrap().clone();
    events.reverse();
    events
}

async fn timeline_ids(server: &TestServer, session: &Session, room_id: &str) -> Vec<String> {
    timeline(server, session, room_id).await.iter().map(|e| e["event_id"].as_str().unwrap().to_owned()).collect()
}

/// Waits until `check` holds, for at most `secs` seconds.
async fn eventually(secs: u64, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    check()
}

/// The IDs of the PDUs in the transactions the fake server accepted.
fn delivered_pdus(remote: &FakeRemote) -> Vec<String> {
    delivered_from(remote, "hs-a")
}

/// The IDs of the PDUs in the transactions the fake server accepted from `origin`.
fn delivered_from(remote: &FakeRemote, origin: &str) -> Vec<String> {
    let rules = RoomVersionId::V10.rules().unwrap();
    remote
        .seen()
        .accepted
        .iter()
        .filter(|(_, body)| body["origin"] == origin)
        .flat_map(|(_, body)| body["pdus"].as_array().cloned().unwrap_or_default())
        .map(|pdu| {
            let json: CanonicalJsonObject = serde_json::from_value(pdu).unwrap();
            format!("${}", ruma::signatures::reference_hash(&json, &rules).unwrap())
        })
        .collect()
}

struct Setup {
    pki: Pki,
    remote: FakeRemote,
    a: TestServer,
    port_a: u16,
    peers: Vec<(&'static str, u16)>,
    dir: tempfile::TempDir,
    alice: Session,
    room: RemoteRoom,
}

fn start_a(pki: &Pki, dir: &Path, port: u16, peers: &[(&str, u16)]) -> TestServer {
    start_federating(pki, dir, "hs-a", port, peers, "default_room_version = \"10\"\nlog = \"info,trellis=debug\"")
}

/// `hs-a` with alice's public room, which `@bob:hs-r` has joined over `/send`.
async fn setup() -> Setup {
    let pki = Pki::new(&["hs-a", REMOTE]);
    let remote = FakeRemote::start(&pki, None).await;
    let port_a = free_port();
    let peers = vec![("hs-a", port_a), (REMOTE, remote.port)];
    let dir = tempfile::tempdir().unwrap();
    let a = start_a(&pki, dir.path(), port_a, &peers);
    let alice = a.register("alice", "pw").await;
    let room = room_with_bob(&pki, &remote, &a, &alice).await;
    Setup { pki, remote, a, port_a, peers, dir, alice, room }
}

/// A public room of alice's on `a` that `@bob:hs-r` joined over `/send`.
async fn room_with_bob(pki: &Pki, remote: &FakeRemote, a: &TestServer, alice: &Session) -> RemoteRoom {
    let room_id = create_room(a, alice, json!({"preset": "public_chat", "room_version": "10"})).await;
    let mut room = RemoteRoom::read(a, alice, &room_id).await;
    let (join_id, join) = room.event(remote, "m.room.member", Some(BOB), json!({"membership": "join"}), None, None);
    let (status, body) = remote.send_pdus(pki, a, "join", vec![join]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["pdus"][&join_id], json!({}), "{body}");
    room.bob_member = Some(join_id);
    room
}

#[tokio::test]
async fn transactions_carry_events_both_ways_and_repeats_are_not_processed_again() {
    let Setup { pki, remote, a, alice, mut room, .. } = setup().await;
    let room_id = room.room_id.clone();
    let (status, members) =
        a.get(&format!("/_matrix/client/v3/rooms/{}/joined_members", enc(&room_id)), alice.token()).await;
    assert_eq!(status, 200);
    assert!(members["joined"].get(BOB).is_some(), "bob joined over /send: {members}");

    // Inbound: a message from bob reaches alice's timeline and /sync.
    let (hello_id, hello) =
        room.event(&remote, "m.room.message", None, json!({"msgtype": "m.text", "body": "hi"}), None, None);
    let (status, body) = remote.send_pdus(&pki, &a, "t1", vec![hello]).await;
    assert_eq!((status, &body["pdus"][&hello_id]), (200, &json!({})), "{body}");
    let (_, sync) = a.get("/_matrix/client/v3/sync", alice.token()).await;
    let events = &sync["rooms"]["join"][&room_id]["timeline"]["events"];
    assert!(events.as_array().unwrap().iter().any(|e| e["event_id"] == hello_id.as_str()), "{sync}");

    // The same transaction ID again, with another event: the first answer, nothing processed.
    let (other_id, other) =
        room.event(&remote, "m.room.message", None, json!({"msgtype": "m.text", "body": "x"}), None, None);
    let (status, again) = remote.send_pdus(&pki, &a, "t1", vec![other]).await;
    assert_eq!(status, 200);
    assert_eq!(again, body, "a repeated transaction gets the first answer");
    assert!(!timeline_ids(&a, &alice, &room_id).await.contains(&other_id));

    // Outbound: alice's message goes to hs-r in a transaction from hs-a.
    let sent = send_text(&a, &alice, &room_id, "hello bob").await;
    assert!(eventually(10, || delivered_pdus(&remote).contains(&sent)).await, "alice's event reached hs-r");
    let seen = remote.seen();
    let (_, txn) = seen.accepted.iter().find(|(_, body)| body.to_string().contains("hello bob")).unwrap();
    assert_eq!(txn["origin"], "hs-a");
    assert!(txn["pdus"].as_array().unwrap().len() <= 50);
}

#[tokio::test]
async fn bad_transactions_are_refused_and_store_nothing() {
    let Setup { pki, remote, a, alice, mut room, .. } = setup().await;
    let room_id = room.room_id.clone();
    let client = pki.client();
    let uri = "/_matrix/federation/v1/send/bad1";

    // Unsigned.
    let body = json!({"origin": REMOTE, "origin_server_ts": 1, "pdus": []});
    let result = federation_call(&client, &a, "PUT", uri, None, Some(&body)).await;
    assert_error(&result, 401, "M_UNAUTHORIZED");

    // An `origin` that is not the signer.
    let body = json!({"origin": "hs-x", "origin_server_ts": 1, "pdus": []});
    assert_error(&remote.send(&pki, &a, "bad2", &body).await, 403, "M_FORBIDDEN");

    // Too many PDUs, too many EDUs.
    let stored = room.latest.clone();
    let (_, message) = room.event(&remote, "m.room.message", None, json!({"body": "x"}), None, None);
    room.latest = stored;
    let body = json!({"origin": REMOTE, "origin_server_ts": 1, "pdus": vec![message.clone(); 51]});
    assert_error(&remote.send(&pki, &a, "bad3", &body).await, 400, "M_TOO_LARGE");
    let edu = json!({"edu_type": "m.typing", "content": {}});
    let body = json!({"origin": REMOTE, "origin_server_ts": 1, "pdus": [], "edus": vec![edu; 101]});
    assert_error(&remote.send(&pki, &a, "bad4", &body).await, 400, "M_TOO_LARGE");

    // Not JSON; JSON of the wrong shape.
    let authorization = sign_with(&remote.key_pair, REMOTE, "PUT", "/_matrix/federation/v1/send/bad5", "hs-a", None);
    let response = client
        .put(format!("{}/_matrix/federation/v1/send/bad5", a.federation_url.as_deref().unwrap()))
        .header("authorization", authorization)
        .body("{not json")
        .send()
        .await
        .unwrap();
    // (The signature covers the body, so a body that is not JSON cannot be signed either.)
    let status = response.status().as_u16();
    let error: Value = response.json().await.unwrap();
    assert!(matches!(status, 400 | 401) && error["errcode"].is_string(), "{status} {error}");
    let body = json!({"origin": REMOTE, "origin_server_ts": 1, "pdus": "nope"});
    let result = remote.send(&pki, &a, "bad6", &body).await;
    assert_eq!(result.0, 400, "{result:?}");

    // PDUs that are garbage or for a room this server is not in get no result; the rest of
    // the transaction is still processed.
    let (good_id, good) = room.event(&remote, "m.room.message", None, json!({"body": "good"}), None, None);
    let mut elsewhere = message.clone();
    elsewhere["room_id"] = json!("!unknown:hs-r");
    let (elsewhere_id, elsewhere) = sign_event(&remote.key_pair, strip_signed(elsewhere));
    let (status, body) =
        remote.send_pdus(&pki, &a, "bad7", vec![json!("garbage"), json!({"type": 3}), elsewhere, good]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["pdus"][&good_id], json!({}));
    assert!(body["pdus"].get(&elsewhere_id).is_none(), "{body}");

    // A forged signature (another key claiming to be hs-r's): a per-PDU error, nothing stored.
    let impostor = new_key_pair("r1");
    let (forged_id, forged) = room.event(&remote, "m.room.message", None, json!({"body": "forged"}), None, None);
    room.latest = good_id.clone();
    let (_, forged) = sign_event(&impostor, strip_signed(forged));
    let (status, body) = remote.send_pdus(&pki, &a, "bad8", vec![forged]).await;
    assert_eq!(status, 200);
    assert!(body["pdus"][&forged_id]["error"].is_string(), "{body}");
    let (status, _) =
        a.get(&format!("/_matrix/client/v3/rooms/{}/event/{}", enc(&room_id), enc(&forged_id)), alice.token()).await;
    assert_eq!(status, 404);

    // Unknown auth events that the origin cannot give: a per-PDU error, nothing stored.
    let bogus = "$aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".to_owned();
    let auth = vec![room.create.clone(), room.power_levels.clone(), bogus];
    let (orphan_id, orphan) = room.event(&remote, "m.room.message", None, json!({"body": "orphan"}), None, Some(auth));
    room.latest = good_id.clone();
    let (status, body) = remote.send_pdus(&pki, &a, "bad9", vec![orphan]).await;
    assert_eq!(status, 200);
    assert!(body["pdus"][&orphan_id]["error"].is_string(), "{body}");
    let (status, _) =
        a.get(&format!("/_matrix/client/v3/rooms/{}/event/{}", enc(&room_id), enc(&orphan_id)), alice.token()).await;
    assert_eq!(status, 404);

    // An event whose auth events include a rejected one is rejected too: bob may not change
    // the power levels, and a message citing that change is refused.
    let (bad_pl_id, bad_pl) =
        room.event(&remote, "m.room.power_levels", Some(""), json!({"users": {BOB: 100}}), None, None);
    let (cite_id, cite) = room.event(
        &remote,
        "m.room.message",
        None,
        json!({"body": "cites a rejected event"}),
        None,
        Some(vec![room.create.clone(), bad_pl_id.clone(), room.bob_member.clone().unwrap()]),
    );
    let (status, body) = remote.send_pdus(&pki, &a, "bad10", vec![bad_pl, cite]).await;
    assert_eq!(status, 200);
    assert!(body["pdus"][&bad_pl_id]["error"].is_string(), "{body}");
    assert!(body["pdus"][&cite_id]["error"].is_string(), "{body}");
    let ids = timeline_ids(&a, &alice, &room_id).await;
    assert!(!ids.contains(&bad_pl_id) && !ids.contains(&cite_id) && ids.contains(&good_id));
}

/// An event without its hashes and signatures, to be signed again.
fn strip_signed(mut event: Value) -> Value {
    let object = event.as_object_mut().unwrap();
    object.remove("hashes");
    object.remove("signatures");
    event
}

#[tokio::test]
async fn events_wait_for_a_destination_that_is_down_across_a_restart_and_go_when_it_is_back() {
    let Setup { pki, remote, a, port_a, peers, dir, alice, room, .. } = setup().await;
    let room_id = room.room_id.clone();
    remote.down.store(true, Ordering::SeqCst);
    let first = send_text(&a, &alice, &room_id, "one").await;
    assert!(eventually(10, || !remote.seen().attempts.is_empty()).await, "hs-a tried to send");
    let second = send_text(&a, &alice, &room_id, "two").await;
    // Retries (1 s, then 2 s) repeat the first transaction's ID.
    assert!(eventually(10, || remote.seen().attempts.len() >= 2).await);
    let first_txn = remote.seen().attempts[0].0.clone();
    assert!(remote.seen().attempts.iter().all(|(txn, _)| *txn == first_txn), "retries keep the transaction ID");

    // Restart hs-a while hs-r is still down: the queue survives.
    assert_eq!(a.stop(), Some(0));
    let a = start_a(&pki, dir.path(), port_a, &peers);
    assert!(eventually(10, || remote.seen().attempts.len() >= 3).await, "sending resumes after the restart");
    assert_eq!(remote.seen().attempts.last().unwrap().0, first_txn, "the same transaction after the restart");

    // hs-r comes back and talks to hs-a: the backoff ends at once, and everything arrives.
    // Let the backoff grow beyond what the test waits below: tries at about 0, 1, 3 and 7 s
    // after the restart, the next at 15 s; the ping comes at 8 s.
    tokio::time::sleep(Duration::from_secs(8)).await;
    remote.down.store(false, Ordering::SeqCst);
    let body = json!({"origin": REMOTE, "origin_server_ts": now_ms(), "pdus": []});
    let (status, _) = remote.send(&pki, &a, "ping", &body).await;
    assert_eq!(status, 200);
    let woke = Instant::now();
    assert!(
        eventually(20, || {
            let delivered = delivered_pdus(&remote);
            delivered.contains(&first) && delivered.contains(&second)
        })
        .await
    );
    assert!(woke.elapsed() < Duration::from_secs(3), "delivered when hs-r was seen, not after the backoff");
    assert_eq!(remote.seen().accepted[0].0, first_txn);
    let _ = alice;
}

#[tokio::test]
async fn a_gap_is_filled_with_get_missing_events_in_order() {
    let Setup { pki, remote, a, alice, mut room, .. } = setup().await;
    let room_id = room.room_id.clone();
    let last_shared = room.latest.clone();
    let mut missing = Vec::new();
    let mut missing_ids = Vec::new();
    for i in 1..=5 {
        let (id, event) = room.event(
            &remote,
            "m.room.message",
            None,
            json!({"msgtype": "m.text", "body": format!("missing {i}")}),
            None,
            None,
        );
        missing_ids.push(id);
        missing.push(event);
    }
    let (recent_id, recent) = room.event(&remote, "m.room.message", None, json!({"body": "most recent"}), None, None);
    remote.seen().missing_answer = missing.into_iter().rev().collect();
    let (status, body) = remote.send_pdus(&pki, &a, "gap", vec![recent]).await;
    assert_eq!((status, &body["pdus"][&recent_id]), (200, &json!({})), "{body}");

    let request = remote.seen().missing_requests[0].clone();
    assert_eq!(request["earliest_events"], json!([last_shared]));
    assert_eq!(request["latest_events"], json!([recent_id]));
    assert!(remote.seen().state_ids_requests.is_empty(), "no /state_ids when the gap is filled");
    let ids = timeline_ids(&a, &alice, &room_id).await;
    let start = ids.iter().position(|id| *id == last_shared).unwrap();
    let mut expected = vec![last_shared];
    expected.extend(missing_ids);
    expected.push(recent_id);
    assert_eq!(ids[start..], expected[..], "the missing events in order, then the new one");
}

#[tokio::test]
async fn state_at_a_gap_comes_from_state_ids_and_bad_missing_events_are_ignored() {
    let Setup { pki, remote, a, alice, mut room, .. } = setup().await;
    let room_id = room.room_id.clone();
    let (_, state) = a.get(&format!("/_matrix/client/v3/rooms/{}/state", enc(&room_id)), alice.token()).await;
    let state_before: Vec<String> =
        state.as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap().to_owned()).collect();

    // A state change hs-a never hears of (bob's display name), a message after it that
    // /get_missing_events gives, and the message pushed after that.
    let content = json!({"membership": "join", "displayname": "Bob R"});
    let (change_id, change) = room.event(&remote, "m.room.member", Some(BOB), content, None, None);
    let (pulled_id, pulled) = room.event(&remote, "m.room.message", None, json!({"body": "pulled"}), None, None);
    let (pushed_id, pushed) = room.event(&remote, "m.room.message", None, json!({"body": "pushed"}), None, None);

    // A missing event with bad JSON for the room version (a float) is ignored, and a pushed
    // event whose prev events stay missing is refused, without asking for the state there.
    let mut bad = pulled.clone();
    bad["content"]["bad_val"] = json!(1.1);
    remote.seen().missing_answer = vec![bad];
    let (status, body) = remote.send_pdus(&pki, &a, "gap1", vec![pushed.clone()]).await;
    assert_eq!(status, 200);
    assert!(body["pdus"][&pushed_id]["error"].is_string(), "{body}");
    assert!(remote.seen().state_ids_requests.is_empty());
    assert!(!timeline_ids(&a, &alice, &room_id).await.contains(&pushed_id));

    // The pulled event's missing prev gets its state from /state_ids and /event; then both
    // events are placed, on a state with bob's new display name.
    {
        let mut seen = remote.seen();
        seen.missing_answer = vec![pulled];
        seen.events.insert(change_id.clone(), change);
        seen.state_ids.insert(change_id.clone(), json!({"pdu_ids": state_before, "auth_chain_ids": []}));
    }
    let (status, body) = remote.send_pdus(&pki, &a, "gap2", vec![pushed]).await;
    assert_eq!((status, &body["pdus"][&pushed_id]), (200, &json!({})), "{body}");
    assert_eq!(remote.seen().state_ids_requests, vec![change_id.clone()]);
    let ids = timeline_ids(&a, &alice, &room_id).await;
    assert_eq!(ids[ids.len() - 2..], [pulled_id, pushed_id]);
    let (status, member) =
        a.get(&format!("/_matrix/client/v3/rooms/{}/state/m.room.member/{BOB}", enc(&room_id)), alice.token()).await;
    assert_eq!((status, &member["displayname"]), (200, &json!("Bob R")), "{member}");
}

#[tokio::test]
async fn a_kick_reaches_the_kicked_server_and_nothing_follows_it() {
    let Setup { remote, a, alice, room, .. } = setup().await;
    let room_id = room.room_id.clone();
    let (status, body) = a
        .post(&format!("/_matrix/client/v3/rooms/{}/kick", enc(&room_id)), alice.token(), json!({"user_id": BOB}))
        .await;
    assert_eq!(status, 200, "{body}");
    let kick = newest_event(&a, &alice, &room_id).await;
    assert!(eventually(10, || delivered_pdus(&remote).contains(&kick)).await, "the kick reached hs-r");
    let after = send_text(&a, &alice, &room_id, "bob is gone").await;
    // Something hs-r must still hear of shows the queue is moving past it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!delivered_pdus(&remote).contains(&after), "no events for a server that left the room");
}

/// Two Trellis servers: `alice` on `hs-a` made a room, `bob` on `hs-b` joined it.
async fn joined_pair() -> (crate::federation::Pair, Session, Session, String) {
    let pair = crate::federation::start_pair().await;
    let alice = pair.a.register("alice", "pw").await;
    let bob = pair.b.register("bob", "pw").await;
    let room = create_room(&pair.a, &alice, json!({"preset": "public_chat", "room_version": "10"})).await;
    let joined = crate::federation_join::join_via(&pair.b, &bob, &room, &["hs-a"]).await;
    assert_eq!(joined.0, 200, "{}", joined.1);
    (pair, alice, bob, room)
}

/// Whether `session` on `server` sees an event with body `text` in the room's /sync timeline.
async fn sync_has(server: &TestServer, session: &Session, room: &str, text: &str) -> bool {
    let (status, sync) = server.get("/_matrix/client/v3/sync", session.token()).await;
    status == 200
        && sync["rooms"]["join"][room]["timeline"]["events"]
            .as_array()
            .is_some_and(|events| events.iter().any(|e| e["content"]["body"] == text))
}

async fn eventually_syncs(server: &TestServer, session: &Session, room: &str, text: &str, secs: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if sync_has(server, session, room, text).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

#[tokio::test]
async fn messages_flow_both_ways_between_two_trellis_servers() {
    let (pair, alice, bob, room) = joined_pair().await;
    send_text(&pair.a, &alice, &room, "hello from a").await;
    assert!(eventually_syncs(&pair.b, &bob, &room, "hello from a", 15).await, "a's message in b's /sync");
    send_text(&pair.b, &bob, &room, "hello from b").await;
    assert!(eventually_syncs(&pair.a, &alice, &room, "hello from b", 15).await, "b's message in a's /sync");
    assert_eq!(
        crate::federation_join::state_ids(&pair.a, &alice, &room).await,
        crate::federation_join::state_ids(&pair.b, &bob, &room).await
    );
}

#[tokio::test]
async fn events_sent_while_a_server_is_stopped_arrive_once_it_is_back() {
    let (pair, alice, bob, room) = joined_pair().await;
    let crate::federation::Pair { a, b, pki, peers, _dirs, .. } = pair;
    let port_b = peers.iter().find(|(name, _)| *name == "hs-b").unwrap().1;
    assert_eq!(b.stop(), Some(0));
    send_text(&a, &alice, &room, "while b was away 1").await;
    send_text(&a, &alice, &room, "while b was away 2").await;
    // Let hs-a fail a few times, so its next try is seconds away.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let b = start_federating(&pki, _dirs.1.path(), "hs-b", port_b, &peers, "");
    // Bob speaks: hs-b's transaction also tells hs-a that hs-b is back (the timing of that
    // wake-up is checked against the fake server above; here the events must simply arrive).
    send_text(&b, &bob, &room, "b is back").await;
    assert!(eventually_syncs(&a, &alice, &room, "b is back", 15).await);
    assert!(eventually_syncs(&b, &bob, &room, "while b was away 2", 5).await, "queued events arrived");
    let (_, page) =
        b.get(&format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=20", enc(&room)), bob.token()).await;
    let bodies: Vec<&str> =
        page["chunk"].as_array().unwrap().iter().filter_map(|e| e["content"]["body"].as_str()).collect();
    assert!(bodies.contains(&"while b was away 1") && bodies.contains(&"while b was away 2"), "{bodies:?}");
}

#[tokio::test]
async fn a_gap_longer_than_get_missing_events_gives_is_bridged_with_the_state_there() {
    // Complement's TestSyncTimelineGap: 30 missing events, of which /get_missing_events gives
    // the newest 10; the state before the oldest of those comes from /state_ids.
    let Setup { pki, remote, a, alice, mut room, .. } = setup().await;
    let room_id = room.room_id.clone();
    let (_, state) = a.get(&format!("/_matrix/client/v3/rooms/{}/state", enc(&room_id)), alice.token()).await;
    let state_now: Vec<String> =
        state.as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap().to_owned()).collect();
    let mut missing = Vec::new();
    for i in 0..30 {
        let body = json!({"msgtype": "m.text", "body": format!("remote {i}")});
        missing.push(room.event(&remote, "m.room.message", None, body, None, None));
    }
    let (last_id, last) = room.event(&remote, "m.room.message", None, json!({"body": "End"}), None, None);
    // Alice's sync before the gap, and a message of hers before it.
    let filter = enc(r#"{"room":{"timeline":{"limit":50}}}"#);
    let (_, before) = a.get(&format!("/_matrix/client/v3/sync?filter={filter}"), alice.token()).await;
    let since = before["next_batch"].as_str().unwrap().to_owned();
    send_text(&a, &alice, &room_id, "Hi from Alice").await;
    {
        let mut seen = remote.seen();
        seen.missing_answer = missing[20..].iter().map(|(_, event)| event.clone()).collect();
        seen.events = missing.iter().cloned().collect();
        seen.state_ids.insert("*".into(), json!({"pdu_ids": state_now, "auth_chain_ids": []}));
    }
    let (status, body) = remote.send_pdus(&pki, &a, "long-gap", vec![last]).await;
    assert_eq!((status, &body["pdus"][&last_id]), (200, &json!({})), "{body}");
    assert_eq!(remote.seen().state_ids_requests, vec![missing[19].0.clone()], "one /state_ids, at the gap");

    let ids = timeline_ids(&a, &alice, &room_id).await;
    let mut expected: Vec<String> = missing[20..].iter().map(|(id, _)| id.clone()).collect();
    expected.push(last_id);
    assert_eq!(ids[ids.len() - expected.len()..], expected[..], "the pulled events in order, then the new one");
    assert!(!ids.contains(&missing[19].0), "events before the gap are not in the timeline");

    // Alice's next sync starts at the gap and says it is limited: her own message, from before
    // the gap, is not shown joined to the remote ones (Complement's `TestSyncTimelineGap`).
    let (_, after) =
        a.get(&format!("/_matrix/client/v3/sync?filter={filter}&since={}", enc(&since)), alice.token()).await;
    let timeline = &after["rooms"]["join"][&room_id]["timeline"];
    assert_eq!(timeline["limited"], true, "{timeline}");
    let synced: Vec<&str> =
        timeline["events"].as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap()).collect();
    assert_eq!(synced, expected.iter().map(String::as_str).collect::<Vec<_>>(), "{timeline}");
}

#[tokio::test]
async fn an_event_from_before_a_partition_comes_in_sync_order_and_messages_miss_nothing() {
    // Complement's TestNetworkPartitionOrdering: hs-r's 1' (after the shared event 0) arrives
    // after hs-a's 1-4; then 5-7. /sync's last 4 are [1', 5, 6, 7], and /messages back from
    // its prev_batch gives 4, 3, 2, 1.
    let Setup { pki, remote, a, alice, mut room, .. } = setup().await;
    let room_id = room.room_id.clone();
    let (late_id, late) =
        room.event(&remote, "m.room.message", None, json!({"msgtype": "m.text", "body": "1'"}), None, None);
    let mut local = Vec::new();
    for i in 1..=4 {
        local.push(send_text(&a, &alice, &room_id, &i.to_string()).await);
    }
    let (status, body) = remote.send_pdus(&pki, &a, "partition", vec![late]).await;
    assert_eq!((status, &body["pdus"][&late_id]), (200, &json!({})), "{body}");
    let mut after = Vec::new();
    for i in 5..=7 {
        after.push(send_text(&a, &alice, &room_id, &i.to_string()).await);
    }
    let filter = enc(r#"{"room":{"timeline":{"limit":4}}}"#);
    let (status, sync) = a.get(&format!("/_matrix/client/v3/sync?filter={filter}"), alice.token()).await;
    assert_eq!(status, 200);
    let timeline = &sync["rooms"]["join"][&room_id]["timeline"];
    let ids: Vec<&str> =
        timeline["events"].as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap()).collect();
    let mut expected = vec![late_id.as_str()];
    expected.extend(after.iter().map(String::as_str));
    assert_eq!(ids, expected);
    let from = enc(timeline["prev_batch"].as_str().unwrap());
    let (status, page) = a
        .get(&format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=4&from={from}", enc(&room_id)), alice.token())
        .await;
    assert_eq!(status, 200, "{page}");
    let ids: Vec<&str> = page["chunk"].as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap()).collect();
    let expected: Vec<&str> = local.iter().rev().map(String::as_str).collect();
    assert_eq!(ids, expected, "/messages gives 4, 3, 2, 1");
}

#[tokio::test]
async fn state_whose_auth_chain_cannot_be_fetched_is_not_used() {
    // Complement's TestCorruptedAuthChain: bob's member events A <- B <- C <- D <- E, each
    // authorised by the one before; /state_ids names them all but /event cannot give B. C, D
    // and E must not be stored, and bob's member event stays his first join.
    let Setup { pki, remote, a, alice, mut room, .. } = setup().await;
    let room_id = room.room_id.clone();
    let (_, state) = a.get(&format!("/_matrix/client/v3/rooms/{}/state", enc(&room_id)), alice.token()).await;
    let original_join = room.bob_member.clone().unwrap();
    let mut chain: Vec<(String, Value)> = Vec::new();
    for name in ["A", "B", "C", "D", "E"] {
        let content = json!({"membership": "join", "displayname": name});
        let event = room.event(&remote, "m.room.member", Some(BOB), content, None, None);
        room.bob_member = Some(event.0.clone());
        chain.push(event);
    }
    let (state_ids_event_id, state_ids_event) =
        room.event(&remote, "m.room.message", None, json!({"body": "for /state_ids"}), None, None);
    let (_, gme_event) = room.event(&remote, "m.room.message", None, json!({"body": "for gme"}), None, None);
    let (pushed_id, pushed) = room.event(&remote, "m.room.message", None, json!({"body": "for /send"}), None, None);
    {
        let mut seen = remote.seen();
        seen.missing_answer = vec![gme_event];
        for (index, (id, event)) in chain.iter().enumerate() {
            if index != 1 {
                seen.events.insert(id.clone(), event.clone());
            }
        }
        seen.events.insert(state_ids_event_id.clone(), state_ids_event);
        let mut pdu_ids: Vec<String> = state
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["state_key"] != BOB)
            .map(|e| e["event_id"].as_str().unwrap().to_owned())
            .collect();
        pdu_ids.push(chain[4].0.clone());
        let auth_chain_ids: Vec<String> = chain[..4].iter().map(|(id, _)| id.clone()).collect();
        seen.state_ids
            .insert(state_ids_event_id.clone(), json!({"pdu_ids": pdu_ids, "auth_chain_ids": auth_chain_ids}));
    }
    let (status, body) = remote.send_pdus(&pki, &a, "corrupt", vec![pushed]).await;
    assert_eq!(status, 200);
    assert!(body["pdus"][&pushed_id]["error"].is_string(), "{body}");
    assert_eq!(remote.seen().state_ids_requests, vec![state_ids_event_id]);

    // A sentinel after bob's first join is accepted; bob's state is still that join.
    let auth = vec![room.create.clone(), room.power_levels.clone(), original_join.clone()];
    let (sentinel_id, sentinel) = room.event(
        &remote,
        "m.room.message",
        None,
        json!({"body": "finished"}),
        Some(vec![original_join.clone()]),
        Some(auth),
    );
    let (status, body) = remote.send_pdus(&pki, &a, "sentinel", vec![sentinel]).await;
    assert_eq!((status, &body["pdus"][&sentinel_id]), (200, &json!({})), "{body}");
    let (status, member) =
        a.get(&format!("/_matrix/client/v3/rooms/{}/state/m.room.member/{BOB}", enc(&room_id)), alice.token()).await;
    assert_eq!(status, 200);
    assert!(member.get("displayname").is_none_or(|name| name.is_null()), "C, D and E were not used: {member}");
}

#[tokio::test]
async fn events_authorised_by_a_rejected_event_are_rejected() {
    // Complement's TestInboundFederationRejectsEventsWithRejectedAuthEvents: R (a power levels
    // change bob may not make) is rejected; O (bob's member event citing R) arrives only in the
    // auth chain of X, and is rejected; X, and Y (whose /event_auth fails), cite O and are
    // rejected; the sentinel S after them is accepted. None of R, O, X, Y is served.
    let Setup { pki, remote, a, alice, mut room, .. } = setup().await;
    let room_id = room.room_id.clone();
    let join = room.bob_member.clone().unwrap();
    let (r_id, r) = room.event(&remote, "m.room.power_levels", Some(""), json!({"users": {}}), None, None);
    room.latest = join.clone();
    let (status, body) = remote.send_pdus(&pki, &a, "rejected", vec![r.clone()]).await;
    assert_eq!(status, 200);
    assert!(body["pdus"][&r_id]["error"].is_string(), "{body}");

    let o_auth = vec![room.create.clone(), room.join_rules.clone(), r_id.clone(), join.clone()];
    let (o_id, o) =
        room.event(&remote, "m.room.member", Some(BOB), json!({"membership": "join", "test": 1}), None, Some(o_auth));
    room.latest = join.clone();
    let x_auth = vec![room.create.clone(), room.power_levels.clone(), join.clone(), o_id.clone()];
    let (x_id, x) = room.event(&remote, "m.room.message", None, json!({"body": "X"}), None, Some(x_auth.clone()));
    let (y_id, y) = room.event(&remote, "m.room.message", None, json!({"body": "Y"}), None, Some(x_auth));
    let (s_id, sentinel) = room.event(&remote, "m.room.message", None, json!({"body": "S"}), None, None);
    remote.seen().event_auth.insert(x_id.clone(), vec![r, o]);
    let (status, body) = remote.send_pdus(&pki, &a, "cites", vec![x, y, sentinel]).await;
    assert_eq!(status, 200);
    assert!(body["pdus"][&x_id]["error"].is_string(), "{body}");
    assert!(body["pdus"][&y_id]["error"].is_string(), "{body}");
    assert_eq!(body["pdus"][&s_id], json!({}), "{body}");
    assert!(timeline_ids(&a, &alice, &room_id).await.contains(&s_id));
    for id in [&r_id, &o_id, &x_id, &y_id] {
        let (status, _) =
            a.get(&format!("/_matrix/client/v3/rooms/{}/event/{}", enc(&room_id), enc(id)), alice.token()).await;
        assert_eq!(status, 404, "{id} is not served");
    }
}

#[tokio::test]
async fn a_join_through_this_server_is_passed_on_to_the_other_servers_in_the_room() {
    // hs-a hosts a room with bob of hs-r; carol of hs-b joins through hs-a (send_join), and
    // hs-a passes her join on to hs-r.
    let pki = Pki::new(&["hs-a", "hs-b", REMOTE]);
    let remote = FakeRemote::start(&pki, None).await;
    let (port_a, port_b) = (free_port(), free_port());
    let peers = vec![("hs-a", port_a), ("hs-b", port_b), (REMOTE, remote.port)];
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = start_a(&pki, dir_a.path(), port_a, &peers);
    let b = start_federating(&pki, dir_b.path(), "hs-b", port_b, &peers, "");
    let alice = a.register("alice", "pw").await;
    let carol = b.register("carol", "pw").await;
    let room = room_with_bob(&pki, &remote, &a, &alice).await;
    let joined = crate::federation_join::join_via(&b, &carol, &room.room_id, &["hs-a"]).await;
    assert_eq!(joined.0, 200, "{}", joined.1);
    let member =
        format!("/_matrix/client/v3/rooms/{}/state/m.room.member/@carol:hs-b?format=event", enc(&room.room_id));
    let (status, event) = a.get(&member, alice.token()).await;
    assert_eq!(status, 200, "{event}");
    let join_id = event["event_id"].as_str().unwrap().to_owned();
    // hs-b sends carol's join to hs-r itself too; the one from hs-a is the relay.
    assert!(eventually(10, || delivered_from(&remote, "hs-a").contains(&join_id)).await, "hs-a relayed the join");
    assert!(eventually(10, || delivered_from(&remote, "hs-b").contains(&join_id)).await, "hs-b sent it too");
}
