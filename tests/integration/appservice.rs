//! Application services: registration files checked at start-up, `as_token` authentication
//! and masquerading, exclusive namespaces, transactions (retried after the service was down and
//! across a restart: nothing lost, nothing doubled, order kept), lazy user creation through the
//! user query, and ping. The service is a fake in this process: an axum server on loopback
//! that records what it is sent.

use std::{
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{
    Json, Router,
    extract::{Path as UrlPath, State},
    http::{HeaderMap, StatusCode},
    routing::{get, post, put},
};
use serde_json::{Value, json};

use crate::{
    harness::{Session, TestServer, assert_error, enc},
    room_helpers::{create_room, send_text},
};

const AS_TOKEN: &str = "as-secret-token";
const HS_TOKEN: &str = "hs-secret-token";

/// What the fake service was sent.
#[derive(Default)]
struct Recorded {
    /// Every transaction ID tried, taken or not.
    attempts: Vec<String>,
    /// Transactions taken: (ID, events).
    taken: Vec<(String, Vec<Value>)>,
    /// Ephemeral events of the transactions taken.
    ephemeral: Vec<Value>,
    to_device: Vec<Value>,
    user_queries: Vec<String>,
    alias_queries: Vec<String>,
    pings: Vec<Value>,
}

#[derive(Default)]
struct FakeState {
    down: AtomicBool,
    recorded: Mutex<Recorded>,
    /// The homeserver's URL, for registering users the service is asked about.
    homeserver: Mutex<Option<String>>,
}

struct FakeService {
    url: String,
    state: Arc<FakeState>,
}

fn authorised(headers: &HeaderMap) -> bool {
    headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {HS_TOKEN}"))
}

async fn transaction(
    State(state): State<Arc<FakeState>>,
    headers: HeaderMap,
    UrlPath(txn): UrlPath<String>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    if !authorised(&headers) {
        return (StatusCode::FORBIDDEN, Json(json!({"errcode": "M_FORBIDDEN"})));
    }
    let mut recorded = state.recorded.lock().expect("lock");
    recorded.attempts.push(txn.clone());
    if state.down.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({})));
    }
    let events = body["events"].as_array().cloned().unwrap_or_default();
    // A service takes a transaction ID once: a repeat is acknowledged without processing.
    if !recorded.taken.iter().any(|(id, _)| *id == txn) {
        recorded.ephemeral.extend(body["ephemeral"].as_array().cloned().unwrap_or_default());
        recorded.to_device.extend(body["de.sorunome.msc2409.to_device"].as_array().cloned().unwrap_or_default());
        recorded.taken.push((txn, events));
    }
    (StatusCode::OK, Json(json!({})))
}

async fn user_query(
    State(state): State<Arc<FakeState>>,
    headers: HeaderMap,
    UrlPath(user): UrlPath<String>,
) -> (StatusCode, Json<Value>) {
    if !authorised(&headers) {
        return (StatusCode::FORBIDDEN, Json(json!({})));
    }
    state.recorded.lock().expect("lock").user_queries.push(user.clone());
    let homeserver = state.homeserver.lock().expect("lock").clone();
    let localpart = user.trim_start_matches('@').split(':').next().unwrap_or_default().to_owned();
    match homeserver {
        Some(homeserver) if localpart.starts_with("bridge_lazy") => {
            let response = reqwest::Client::new()
                .post(format!("{homeserver}/_matrix/client/v3/register"))
                .bearer_auth(AS_TOKEN)
                .json(&json!({"type": "m.login.application_service", "username": localpart, "inhibit_login": true}))
                .send()
                .await
                .expect("register");
            assert_eq!(response.status(), 200, "lazy registration");
            (StatusCode::OK, Json(json!({})))
        }
        _ => (StatusCode::NOT_FOUND, Json(json!({"errcode": "M_NOT_FOUND"}))),
    }
}

/// Creates the room of an alias `#bridge_lazy...` when asked about it.
async fn alias_query(
    State(state): State<Arc<FakeState>>,
    headers: HeaderMap,
    UrlPath(alias): UrlPath<String>,
) -> (StatusCode, Json<Value>) {
    if !authorised(&headers) {
        return (StatusCode::FORBIDDEN, Json(json!({})));
    }
    state.recorded.lock().expect("lock").alias_queries.push(alias.clone());
    let homeserver = state.homeserver.lock().expect("lock").clone();
    let name = alias.trim_start_matches('#').split(':').next().unwrap_or_default().to_owned();
    match homeserver {
        Some(homeserver) if name.starts_with("bridge_lazy") => {
            let response = reqwest::Client::new()
                .post(format!("{homeserver}/_matrix/client/v3/createRoom"))
                .bearer_auth(AS_TOKEN)
                .json(&json!({"room_alias_name": name, "preset": "public_chat"}))
                .send()
                .await
                .expect("createRoom");
            assert_eq!(response.status(), 200, "lazy room");
            (StatusCode::OK, Json(json!({})))
        }
        _ => (StatusCode::NOT_FOUND, Json(json!({"errcode": "M_NOT_FOUND"}))),
    }
}

async fn protocol(headers: HeaderMap, UrlPath(name): UrlPath<String>) -> (StatusCode, Json<Value>) {
    if !authorised(&headers) || name != "fakechat" {
        return (StatusCode::NOT_FOUND, Json(json!({})));
    }
    let instance = json!({"desc": "Fake network", "fields": {"network": "net1"}, "network_id": "net1"});
    let protocol = json!({
        "user_fields": ["nick"], "location_fields": ["channel"], "icon": "mxc://localhost/icon",
        "field_types": {
            "nick": {"regexp": ".*", "placeholder": "nick"},
            "channel": {"regexp": "#.*", "placeholder": "#channel"},
        },
        "instances": [instance],
    });
    (StatusCode::OK, Json(protocol))
}

async fn ping(State(state): State<Arc<FakeState>>, headers: HeaderMap, Json(body): Json<Value>) -> StatusCode {
    if !authorised(&headers) {
        return StatusCode::FORBIDDEN;
    }
    state.recorded.lock().expect("lock").pings.push(body);
    if state.down.load(Ordering::SeqCst) { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK }
}

impl FakeService {
    async fn start() -> Self {
        let state = Arc::new(FakeState::default());
        let app = Router::new()
            .route("/_matrix/app/v1/transactions/{txn}", put(transaction))
            .route("/_matrix/app/v1/users/{user}", get(user_query))
            .route("/_matrix/app/v1/rooms/{alias}", get(alias_query))
            .route("/_matrix/app/v1/ping", post(ping))
            .route("/_matrix/app/v1/thirdparty/protocol/{name}", get(protocol))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind fake service");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await.expect("fake service") });
        Self { url: format!("http://{addr}"), state }
    }

    fn registration(&self) -> String {
        format!(
            r##"id: testbridge
url: "{url}"
as_token: {AS_TOKEN}
hs_token: {HS_TOKEN}
sender_localpart: bridgebot
rate_limited: false
receive_ephemeral: true
protocols: ["fakechat"]
namespaces:
  users:
    - exclusive: true
      regex: "@bridge_.*:localhost"
  aliases:
    - exclusive: true
      regex: "#bridge_.*:localhost"
  rooms: []
"##,
            url = self.url
        )
    }

    fn recorded<R>(&self, read: impl FnOnce(&Recorded) -> R) -> R {
        read(&self.state.recorded.lock().expect("lock"))
    }

    /// Waits (bounded) until `done` holds of what was recorded.
    async fn wait_for(&self, what: &str, done: impl Fn(&Recorded) -> bool) {
        for _ in 0..600 {
            if self.recorded(&done) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("timed out waiting for {what}");
    }

    /// Every event taken, in delivery order.
    fn events(&self) -> Vec<Value> {
        self.recorded(|r| r.taken.iter().flat_map(|(_, events)| events.clone()).collect())
    }
}

/// Config lines that register the files at `paths`, with short retries.
fn as_config(paths: &[&Path]) -> String {
    let files: Vec<String> = paths.iter().map(|p| format!("\"{}\"", p.display())).collect();
    format!("app_service_config_files = [{}]\nappservice_max_backoff_secs = 2\n", files.join(", "))
}

/// A server with the fake service registered, in `dir`.
fn start_with_service(dir: &Path, service: &FakeService) -> TestServer {
    let file = dir.join("bridge.yaml");
    std::fs::write(&file, service.registration()).expect("write registration");
    let server = TestServer::start_in(dir, "localhost", &as_config(&[&file])).expect("server starts");
    *service.state.homeserver.lock().expect("lock") = Some(server.base_url.clone());
    server
}

/// Registers `localpart` as the service.
async fn register_as_service(server: &TestServer, localpart: &str) -> (u16, Value) {
    server
        .post(
            "/_matrix/client/v3/register",
            Some(AS_TOKEN),
            json!({"type": "m.login.application_service", "username": localpart, "inhibit_login": true}),
        )
        .await
}

#[tokio::test]
async fn bad_registration_files_stop_the_start_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let service = FakeService::start().await;
    let good = service.registration();
    let cases = [
        ("bad-regex.yaml", good.replace("@bridge_.*:localhost", "@bridge_(:localhost"), "invalid regex"),
        ("no-token.yaml", good.replace(&format!("as_token: {AS_TOKEN}"), "as_token: \"\""), "`as_token`"),
        (
            "bad-sender.yaml",
            good.replace("sender_localpart: bridgebot", "sender_localpart: \"a b\""),
            "sender_localpart",
        ),
        ("not-yaml.yaml", "id: [".to_owned(), "invalid registration"),
    ];
    for (name, text, problem) in cases {
        let file = dir.path().join(name);
        std::fs::write(&file, text).expect("write");
        let stderr = match TestServer::start_in(dir.path(), "localhost", &as_config(&[&file])) {
            Ok(_) => panic!("{name}: the server started"),
            Err(stderr) => stderr,
        };
        assert!(stderr.contains(name) && stderr.contains(problem), "{name}: {stderr}");
    }
    // The same id twice.
    let (first, second) = (dir.path().join("one.yaml"), dir.path().join("two.yaml"));
    std::fs::write(&first, &good).expect("write");
    std::fs::write(&second, good.replace(AS_TOKEN, "another-token")).expect("write");
    let stderr = TestServer::start_in(dir.path(), "localhost", &as_config(&[&first, &second])).err().expect("refused");
    assert!(stderr.contains("two.yaml") && stderr.contains("already used"), "{stderr}");
}

#[tokio::test]
async fn exclusive_namespaces_are_kept_for_the_service() {
    let dir = tempfile::tempdir().expect("tempdir");
    let service = FakeService::start().await;
    let server = start_with_service(dir.path(), &service);
    // Normal users cannot take the service's users or aliases.
    let taken = server
        .post(
            "/_matrix/client/v3/register",
            None,
            json!({"username": "bridge_alice", "password": "pw", "auth": {"type": "m.login.dummy"}}),
        )
        .await;
    assert_error(&taken, 400, "M_EXCLUSIVE");
    assert_error(
        &server.get("/_matrix/client/v3/register/available?username=bridge_x", None).await,
        400,
        "M_EXCLUSIVE",
    );
    let alice = server.register("alice", "pw").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    let alias = |name: &str| format!("/_matrix/client/v3/directory/room/{}", enc(&format!("#{name}:localhost")));
    let refused = server.put(&alias("bridge_room"), alice.token(), json!({"room_id": room})).await;
    assert_error(&refused, 400, "M_EXCLUSIVE");
    let refused =
        server.post("/_matrix/client/v3/createRoom", alice.token(), json!({"room_alias_name": "bridge_r2"})).await;
    assert_error(&refused, 400, "M_EXCLUSIVE");
    assert_eq!(server.put(&alias("plain"), alice.token(), json!({"room_id": room})).await.0, 200);
    // The service registers its users (not others) without auth flows and creates its aliases.
    let (status, body) = register_as_service(&server, "bridge_bob").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], "@bridge_bob:localhost");
    assert_error(&register_as_service(&server, "carol").await, 400, "M_EXCLUSIVE");
    let missing_token = server
        .post(
            "/_matrix/client/v3/register",
            None,
            json!({"type": "m.login.application_service", "username": "bridge_x"}),
        )
        .await;
    assert_error(&missing_token, 401, "M_MISSING_TOKEN");
    let join = format!("/_matrix/client/v3/join/{}", enc(&room));
    assert_eq!(server.post(&join, Some(AS_TOKEN), json!({})).await.0, 200);
    let (status, body) = server.put(&alias("bridge_room"), Some(AS_TOKEN), json!({"room_id": room})).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn the_service_acts_only_as_users_in_its_namespace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let service = FakeService::start().await;
    let server = start_with_service(dir.path(), &service);
    let alice = server.register("alice", "pw").await;
    assert_eq!(register_as_service(&server, "bridge_bob").await.0, 200);
    let whoami = |user: Option<&str>| {
        let query = user.map(|u| format!("?user_id={}", enc(u))).unwrap_or_default();
        server.get_owned(format!("/_matrix/client/v3/account/whoami{query}"), Some(AS_TOKEN))
    };
    let (status, body) = whoami(None).await;
    assert_eq!((status, body["user_id"].as_str()), (200, Some("@bridgebot:localhost")), "{body}");
    let (status, body) = whoami(Some("@bridge_bob:localhost")).await;
    assert_eq!((status, body["user_id"].as_str()), (200, Some("@bridge_bob:localhost")), "{body}");
    // Outside the namespace, or not registered: refused.
    assert_error(&whoami(Some(&alice.user_id)).await, 403, "M_FORBIDDEN");
    assert_error(&whoami(Some("@bridge_nobody:localhost")).await, 403, "M_FORBIDDEN");
    assert_error(&server.get("/_matrix/client/v3/account/whoami", Some("not-a-token")).await, 401, "M_UNKNOWN_TOKEN");
    // Logging in as a namespaced user gives a device; MSC3202 picks it.
    let login = |user: &str| {
        server.post_owned(
            "/_matrix/client/v3/login".to_owned(),
            Some(AS_TOKEN),
            json!({"type": "m.login.application_service", "identifier": {"type": "m.id.user", "user": user}}),
        )
    };
    let (status, body) = login("bridge_bob").await;
    assert_eq!(status, 200, "{body}");
    let session = Session::from_response(&body);
    let (status, body) = server.get("/_matrix/client/v3/account/whoami", session.token()).await;
    assert_eq!((status, body["user_id"].as_str()), (200, Some("@bridge_bob:localhost")), "{body}");
    assert_error(&login("alice").await, 403, "M_FORBIDDEN");
    let path = format!(
        "/_matrix/client/v3/account/whoami?user_id={}&org.matrix.msc3202.device_id={}",
        enc("@bridge_bob:localhost"),
        session.device_id
    );
    let (status, body) = server.get(&path, Some(AS_TOKEN)).await;
    assert_eq!((status, body["device_id"].as_str()), (200, Some(session.device_id.as_str())), "{body}");
    let path = format!(
        "/_matrix/client/v3/account/whoami?user_id={}&org.matrix.msc3202.device_id=NOPE",
        enc("@bridge_bob:localhost")
    );
    assert_error(&server.get(&path, Some(AS_TOKEN)).await, 403, "M_UNKNOWN_DEVICE");
    // Masquerading sends as that user.
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    let join = format!("/_matrix/client/v3/join/{}?user_id={}", enc(&room), enc("@bridge_bob:localhost"));
    assert_eq!(server.post(&join, Some(AS_TOKEN), json!({})).await.0, 200);
    let members = server.get(&format!("/_matrix/client/v3/rooms/{}/joined_members", enc(&room)), alice.token()).await;
    assert!(members.1["joined"]["@bridge_bob:localhost"].is_object(), "{}", members.1);
}

#[tokio::test]
async fn users_are_created_lazily_through_the_user_query() {
    let dir = tempfile::tempdir().expect("tempdir");
    let service = FakeService::start().await;
    let server = start_with_service(dir.path(), &service);
    let alice = server.register("alice", "pw").await;
    let profile = |user: &str| format!("/_matrix/client/v3/profile/{}", enc(user));
    let (status, body) = server.get(&profile("@bridge_lazy1:localhost"), alice.token()).await;
    assert_eq!(status, 200, "the service created the user: {body}");
    assert_error(&server.get(&profile("@bridge_unknown:localhost"), alice.token()).await, 404, "M_NOT_FOUND");
    // Users outside the namespace are not asked about.
    assert_error(&server.get(&profile("@someone:localhost"), alice.token()).await, 404, "M_NOT_FOUND");
    let queries = service.recorded(|r| r.user_queries.clone());
    assert_eq!(queries, vec!["@bridge_lazy1:localhost", "@bridge_unknown:localhost"]);
    // An invite to a puppet that does not exist yet creates it too.
    let room = create_room(&server, &alice, json!({})).await;
    let invite = format!("/_matrix/client/v3/rooms/{}/invite", enc(&room));
    let (status, body) = server.post(&invite, alice.token(), json!({"user_id": "@bridge_lazy2:localhost"})).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn ping_reaches_the_service() {
    let dir = tempfile::tempdir().expect("tempdir");
    let service = FakeService::start().await;
    let server = start_with_service(dir.path(), &service);
    let path = "/_matrix/client/v1/appservice/testbridge/ping";
    let (status, body) = server.post(path, Some(AS_TOKEN), json!({"transaction_id": "ping-1"})).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["duration_ms"].as_u64().is_some(), "{body}");
    assert_eq!(service.recorded(|r| r.pings.clone()), vec![json!({"transaction_id": "ping-1"})]);
    let alice = server.register("alice", "pw").await;
    assert_error(&server.post(path, alice.token(), json!({})).await, 403, "M_FORBIDDEN");
    let other = "/_matrix/client/v1/appservice/other/ping";
    assert_error(&server.post(other, Some(AS_TOKEN), json!({})).await, 403, "M_FORBIDDEN");
    service.state.down.store(true, Ordering::SeqCst);
    assert_error(&server.post(path, Some(AS_TOKEN), json!({})).await, 502, "M_BAD_STATUS");
}

#[tokio::test]
async fn transactions_survive_an_outage_and_a_restart_in_order_and_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let service = FakeService::start().await;
    let server = start_with_service(dir.path(), &service);
    let alice = server.register("alice", "pw").await;
    assert_eq!(register_as_service(&server, "bridge_bob").await.0, 200);
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    let join = format!("/_matrix/client/v3/join/{}?user_id={}", enc(&room), enc("@bridge_bob:localhost"));
    assert_eq!(server.post(&join, Some(AS_TOKEN), json!({})).await.0, 200);
    // The puppet's join reaches the service; from then on the room's events do too.
    service
        .wait_for("the puppet's join", |r| {
            r.taken
                .iter()
                .flat_map(|(_, e)| e)
                .any(|e| e["type"] == "m.room.member" && e["state_key"] == "@bridge_bob:localhost")
        })
        .await;
    let mut sent = vec![send_text(&server, &alice, &room, "before").await];
    service
        .wait_for("the first message", |r| {
            r.taken.iter().flat_map(|(_, e)| e).any(|e| e["event_id"] == sent[0].as_str())
        })
        .await;

    // Down: messages queue, the same transaction is retried.
    service.state.down.store(true, Ordering::SeqCst);
    let attempts_before = service.recorded(|r| r.attempts.len());
    for text in ["one", "two", "three"] {
        sent.push(send_text(&server, &alice, &room, text).await);
    }
    service.wait_for("two failed attempts", |r| r.attempts.len() >= attempts_before + 2).await;
    let retried = service.recorded(|r| r.attempts[attempts_before..].to_vec());
    assert!(retried.windows(2).any(|w| w[0] == w[1]), "a failed transaction is retried with its ID: {retried:?}");

    // A restart while the service is down loses nothing.
    assert_eq!(server.stop(), Some(0));
    let server = start_with_service(dir.path(), &service);
    sent.push(send_text(&server, &alice, &room, "after restart").await);
    service.state.down.store(false, Ordering::SeqCst);
    let last = sent.last().cloned().expect("sent");
    service
        .wait_for("every message", |r| r.taken.iter().flat_map(|(_, e)| e).any(|e| e["event_id"] == last.as_str()))
        .await;

    let messages: Vec<String> = service
        .events()
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .map(|e| e["event_id"].as_str().expect("event_id").to_owned())
        .collect();
    assert_eq!(messages, sent, "every message once, in order");
    let ids = service.recorded(|r| r.taken.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>());
    let mut unique = ids.clone();
    unique.dedup();
    assert_eq!(ids, unique, "transaction IDs are not reused for other events");
    let event = service.events().into_iter().find(|e| e["event_id"] == sent[1].as_str()).expect("event");
    assert_eq!(event["content"]["body"], "one");
    assert_eq!(event["room_id"], room.as_str());
    assert_eq!(event["sender"], alice.user_id.as_str());
}

/// A service that stays down while more than `appservice_max_backlog_events` events pass
/// loses the oldest of them: when it is back it gets the transaction it missed and then only
/// the newest events, in order.
#[tokio::test]
async fn a_service_far_behind_loses_its_oldest_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    let service = FakeService::start().await;
    let file = dir.path().join("bridge.yaml");
    std::fs::write(&file, service.registration()).expect("write registration");
    let config = format!("{}appservice_max_backlog_events = 10\n", as_config(&[&file]));
    let server = TestServer::start_in(dir.path(), "localhost", &config).expect("server starts");
    let alice = server.register("alice", "pw").await;
    assert_eq!(register_as_service(&server, "bridge_bob").await.0, 200);
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    let join = format!("/_matrix/client/v3/join/{}?user_id={}", enc(&room), enc("@bridge_bob:localhost"));
    assert_eq!(server.post(&join, Some(AS_TOKEN), json!({})).await.0, 200);
    service
        .wait_for("the puppet's join", |r| {
            r.taken.iter().flat_map(|(_, e)| e).any(|e| e["state_key"] == "@bridge_bob:localhost")
        })
        .await;
    service.state.down.store(true, Ordering::SeqCst);
    let mut sent = Vec::new();
    for i in 0..30 {
        sent.push(send_text(&server, &alice, &room, &format!("m{i}")).await);
    }
    service.state.down.store(false, Ordering::SeqCst);
    let last = sent.last().cloned().expect("sent");
    service
        .wait_for("the newest message", |r| r.taken.iter().flat_map(|(_, e)| e).any(|e| e["event_id"] == last.as_str()))
        .await;
    let got: Vec<String> = service
        .events()
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .map(|e| e["event_id"].as_str().expect("event_id").to_owned())
        .collect();
    assert!(got.len() < sent.len(), "some of the oldest were dropped: {} of {}", got.len(), sent.len());
    assert!(got.ends_with(&sent[sent.len() - 10..]), "the newest ten, in order");
    let mut in_order = got.clone();
    in_order.sort_by_key(|id| sent.iter().position(|s| s == id));
    assert_eq!(got, in_order);
}

#[tokio::test]
async fn complement_launch_passes_the_registration_folder() {
    let tempdir = tempfile::tempdir().expect("tempdir");
    crate::launcher::make_ca(tempdir.path());
    let service = FakeService::start().await;
    let as_dir = tempdir.path().join("appservice");
    std::fs::create_dir_all(&as_dir).expect("mkdir");
    std::fs::write(as_dir.join("bridge.yaml"), service.registration()).expect("write");
    std::fs::write(as_dir.join("README"), "not a registration").expect("write");
    let (cs_port, fed_port) = (crate::launcher::free_port(), crate::launcher::free_port());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("complement-tests/launch");
    let mut command = std::process::Command::new("bash");
    command
        .arg(script)
        .env("SERVER_NAME", "hs1")
        .env("CS_PORT", cs_port.to_string())
        .env("FED_PORT", fed_port.to_string())
        .env("DATA_DIR", tempdir.path().join("data"))
        .env("COMPLEMENT_CA_CRT", tempdir.path().join("ca.crt"))
        .env("COMPLEMENT_CA_KEY", tempdir.path().join("ca.key"))
        .env("COMPLEMENT_APPSERVICE_DIR", &as_dir)
        .env("TRELLIS_BIN", crate::harness::trellis_bin());
    let server = TestServer::spawn(command, true).expect("launch starts trellis");
    let (status, body) = server.get("/_matrix/client/v3/account/whoami", Some(AS_TOKEN)).await;
    assert_eq!((status, body["user_id"].as_str()), (200, Some("@bridgebot:hs1")), "{body}");
    assert_eq!(server.stop(), Some(0));
}

/// A real application service: a bridge on mautrix-python (PyPI `mautrix`, installed by
/// `.ci/run` next to matrix-nio; `TRELLIS_PYTHON` names the interpreter) pings itself, creates
/// its puppet through the user query, joins the room it was invited to and relays a message.
#[tokio::test]
async fn a_mautrix_python_bridge_relays_a_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = crate::launcher::free_port();
    let registration = format!(
        r##"id: mbridge
url: "http://127.0.0.1:{port}"
as_token: mautrix-as-token
hs_token: mautrix-hs-token
sender_localpart: mbridgebot
rate_limited: false
receive_ephemeral: true
namespaces:
  users:
    - exclusive: true
      regex: "@mbridge_.*:localhost"
"##
    );
    let file = dir.path().join("mbridge.yaml");
    std::fs::write(&file, registration).expect("write registration");
    let server = TestServer::start_in(dir.path(), "localhost", &as_config(&[&file])).expect("server starts");
    let python = std::env::var("TRELLIS_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/mautrix_bridge.py");
    let base_url = server.base_url.clone();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python).arg(script).arg(base_url).arg(port.to_string()).output()
    })
    .await
    .expect("join")
    .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success() && stdout.contains("OK"), "mautrix bridge failed:\n{stdout}\n{stderr}");
}

#[tokio::test]
async fn typing_and_receipts_reach_a_service_that_asks_for_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let service = FakeService::start().await;
    let server = start_with_service(dir.path(), &service);
    let alice = server.register("alice", "pw").await;
    assert_eq!(register_as_service(&server, "bridge_bob").await.0, 200);
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    let join = format!("/_matrix/client/v3/join/{}?user_id={}", enc(&room), enc("@bridge_bob:localhost"));
    assert_eq!(server.post(&join, Some(AS_TOKEN), json!({})).await.0, 200);
    let typing = format!("/_matrix/client/v3/rooms/{}/typing/{}", enc(&room), enc(&alice.user_id));
    let (status, body) = server.put(&typing, alice.token(), json!({"typing": true, "timeout": 30000})).await;
    assert_eq!(status, 200, "{body}");
    service
        .wait_for("alice typing", |r| {
            r.ephemeral.iter().any(|e| {
                e["type"] == "m.typing"
                    && e["room_id"] == room.as_str()
                    && e["content"]["user_ids"] == json!([alice.user_id])
            })
        })
        .await;
    let event = send_text(&server, &alice, &room, "read me").await;
    let receipt = format!("/_matrix/client/v3/rooms/{}/receipt/m.read/{}", enc(&room), enc(&event));
    assert_eq!(server.post(&receipt, alice.token(), json!({})).await.0, 200);
    service
        .wait_for("alice's receipt", |r| {
            r.ephemeral.iter().any(|e| {
                e["type"] == "m.receipt"
                    && e["content"][event.as_str()]["m.read"][alice.user_id.as_str()]["ts"].is_u64()
            })
        })
        .await;
}

/// Presence of users joined with the service's users, and to-device messages for the
/// service's users' devices (MSC4203, with `to_user_id` and `to_device_id`), reach the service;
/// others' to-device messages do not.
#[tokio::test]
async fn presence_and_to_device_messages_reach_a_service_that_asks_for_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let service = FakeService::start().await;
    let server = start_with_service(dir.path(), &service);
    let alice = server.register("alice", "pw").await;
    let login =
        json!({"type": "m.login.application_service", "identifier": {"type": "m.id.user", "user": "bridge_carl"}});
    assert_eq!(register_as_service(&server, "bridge_carl").await.0, 200);
    let (status, carl) = server.call("POST", "/_matrix/client/v3/login", Some(AS_TOKEN), Some(login)).await;
    assert_eq!(status, 200, "{carl}");
    let carl_device = carl["device_id"].as_str().expect("device").to_owned();
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    let join = format!("/_matrix/client/v3/join/{}?user_id={}", enc(&room), enc("@bridge_carl:localhost"));
    assert_eq!(server.post(&join, Some(AS_TOKEN), json!({})).await.0, 200);

    let presence = format!("/_matrix/client/v3/presence/{}/status", enc(&alice.user_id));
    let set = server.put(&presence, alice.token(), json!({"presence": "online", "status_msg": "bridging"})).await;
    assert_eq!(set.0, 200, "{}", set.1);
    service
        .wait_for("alice's presence", |r| {
            r.ephemeral.iter().any(|e| {
                e["type"] == "m.presence"
                    && e["sender"] == alice.user_id.as_str()
                    && e["content"]["status_msg"] == "bridging"
            })
        })
        .await;

    let to_own = json!({"messages": {alice.user_id.clone(): {alice.device_id.clone(): {"secret": "for alice"}}}});
    let to_carl = json!({"messages": {"@bridge_carl:localhost": {carl_device.clone(): {"hello": "carl"}}}});
    for (txn, body) in [("own", to_own), ("carl", to_carl)] {
        let path = format!("/_matrix/client/v3/sendToDevice/m.test.message/{txn}");
        assert_eq!(server.put(&path, alice.token(), body).await.0, 200);
    }
    service.wait_for("the to-device message for carl", |r| !r.to_device.is_empty()).await;
    // The message for alice's own device went before and never comes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let to_device = service.recorded(|r| r.to_device.clone());
    assert_eq!(
        to_device,
        vec![json!({
            "type": "m.test.message",
            "sender": alice.user_id,
            "content": {"hello": "carl"},
            "to_user_id": "@bridge_carl:localhost",
            "to_device_id": carl_device,
        })]
    );
}

#[tokio::test]
async fn third_party_protocols_come_from_the_services() {
    let dir = tempfile::tempdir().expect("tempdir");
    let service = FakeService::start().await;
    let server = start_with_service(dir.path(), &service);
    let alice = server.register("alice", "pw").await;
    let (status, body) = server.get("/_matrix/client/v3/thirdparty/protocols", alice.token()).await;
    assert_eq!(status, 200, "{body}");
    let protocol = &body["fakechat"];
    assert_eq!(protocol["user_fields"], json!(["nick"]), "{body}");
    assert_eq!(protocol["instances"][0]["network_id"], "net1", "{body}");
    assert_eq!(protocol["instances"][0]["instance_id"], "testbridge|net1", "{body}");
    let (status, body) = server.get("/_matrix/client/v3/thirdparty/protocol/fakechat", alice.token()).await;
    assert_eq!((status, &body["location_fields"]), (200, &json!(["channel"])), "{body}");
    assert_error(&server.get("/_matrix/client/v3/thirdparty/protocol/other", alice.token()).await, 404, "M_NOT_FOUND");
}

#[tokio::test]
async fn only_services_set_the_timestamp_of_what_they_send() {
    let dir = tempfile::tempdir().expect("tempdir");
    let service = FakeService::start().await;
    let server = start_with_service(dir.path(), &service);
    let alice = server.register("alice", "pw").await;
    assert_eq!(register_as_service(&server, "bridge_bob").await.0, 200);
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    let bob = enc("@bridge_bob:localhost");
    let join = format!("/_matrix/client/v3/join/{}?user_id={bob}", enc(&room));
    assert_eq!(server.post(&join, Some(AS_TOKEN), json!({})).await.0, 200);
    let message = json!({"msgtype": "m.text", "body": "from the past"});
    let send = |txn: &str, user: &str| {
        format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}?ts=1234567{user}", enc(&room))
    };
    let (status, body) = server.put(&send("t1", &format!("&user_id={bob}")), Some(AS_TOKEN), message.clone()).await;
    assert_eq!(status, 200, "{body}");
    let event = |id: &str| format!("/_matrix/client/v3/rooms/{}/event/{}", enc(&room), enc(id));
    let (_, stored) = server.get(&event(body["event_id"].as_str().expect("event_id")), alice.token()).await;
    assert_eq!(
        (stored["origin_server_ts"].as_u64(), stored["sender"].as_str()),
        (Some(1234567), Some("@bridge_bob:localhost")),
        "{stored}"
    );
    let (status, body) = server.put(&send("t2", ""), alice.token(), message).await;
    assert_eq!(status, 200, "{body}");
    let (_, stored) = server.get(&event(body["event_id"].as_str().expect("event_id")), alice.token()).await;
    assert!(stored["origin_server_ts"].as_u64().is_some_and(|ts| ts > 1234567), "{stored}");
}

#[tokio::test]
async fn network_lists_of_the_room_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let service = FakeService::start().await;
    let server = start_with_service(dir.path(), &service);
    let alice = server.register("alice", "pw").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat", "name": "Bridged"})).await;
    let list = format!("/_matrix/client/v3/directory/list/appservice/net1/{}", enc(&room));
    assert_error(&server.put(&list, alice.token(), json!({"visibility": "public"})).await, 403, "M_FORBIDDEN");
    let (status, body) = server.put(&list, Some(AS_TOKEN), json!({"visibility": "public"})).await;
    assert_eq!(status, 200, "{body}");
    let listed = |filter: Value| async {
        let (status, body) = server.post("/_matrix/client/v3/publicRooms", alice.token(), filter).await;
        assert_eq!(status, 200, "{body}");
        body["chunk"].as_array().expect("chunk").iter().any(|r| r["room_id"] == room.as_str())
    };
    assert!(listed(json!({"third_party_instance_id": "testbridge|net1"})).await);
    assert!(!listed(json!({"third_party_instance_id": "testbridge|net2"})).await);
    assert!(listed(json!({"include_all_networks": true})).await);
    assert!(!listed(json!({})).await, "the main list has only published rooms");
    assert_eq!(server.put(&list, Some(AS_TOKEN), json!({"visibility": "private"})).await.0, 200);
    assert!(!listed(json!({"third_party_instance_id": "testbridge|net1"})).await);
}

#[tokio::test]
async fn rooms_are_created_lazily_through_the_alias_query() {
    let dir = tempfile::tempdir().expect("tempdir");
    let service = FakeService::start().await;
    let server = start_with_service(dir.path(), &service);
    let alice = server.register("alice", "pw").await;
    let alias = |name: &str| format!("/_matrix/client/v3/directory/room/{}", enc(&format!("#{name}:localhost")));
    let (status, body) = server.get(&alias("bridge_lazyroom"), alice.token()).await;
    assert_eq!(status, 200, "the service created the room: {body}");
    let room = body["room_id"].as_str().expect("room_id").to_owned();
    assert_error(&server.get(&alias("bridge_nothing"), alice.token()).await, 404, "M_NOT_FOUND");
    assert_error(&server.get(&alias("elsewhere"), alice.token()).await, 404, "M_NOT_FOUND");
    let queries = service.recorded(|r| r.alias_queries.clone());
    assert_eq!(queries, vec!["#bridge_lazyroom:localhost", "#bridge_nothing:localhost"]);
    // Joining by an alias the service has yet to create works too.
    let join = format!("/_matrix/client/v3/join/{}", enc("#bridge_lazyjoin:localhost"));
    let (status, body) = server.post(&join, alice.token(), json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_ne!(body["room_id"].as_str(), Some(room.as_str()));
}
