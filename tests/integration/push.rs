//! Push over HTTP: unread counts from push rules evaluated when events are stored (display
//! name mentions, `@room` by power, muted rooms, receipts, threads), push rule editing,
//! `/notifications` paging, pushers, and delivery to a push gateway served on loopback.

use std::{sync::Arc, time::Duration};

use serde_json::{Value, json};
use tokio::sync::{Mutex, mpsc};

use crate::{
    harness::{Session, TestServer, assert_error, enc},
    room_helpers::{create_room, join, send_text},
};

async fn sync(server: &TestServer, who: &Session, query: &str) -> Value {
    let (status, body) = server.get(&format!("/_matrix/client/v3/sync?{query}"), who.token()).await;
    assert_eq!(status, 200, "sync?{query}: {body}");
    body
}

/// (notification_count, highlight_count) of a joined room in a sync response.
fn counts(body: &Value, room: &str) -> (u64, u64) {
    let unread = &body["rooms"]["join"][room]["unread_notifications"];
    (
        unread["notification_count"].as_u64().expect("notification_count"),
        unread["highlight_count"].as_u64().expect("highlight_count"),
    )
}

async fn send_content(server: &TestServer, who: &Session, room: &str, content: Value) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static TXN: AtomicU64 = AtomicU64::new(0);
    let txn = TXN.fetch_add(1, Ordering::Relaxed);
    let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/p{txn}", enc(room));
    let (status, body) = server.put(&path, who.token(), content).await;
    assert_eq!(status, 200, "send: {body}");
    body["event_id"].as_str().expect("event_id").to_owned()
}

async fn receipt(server: &TestServer, who: &Session, room: &str, event: &str, body: Value) {
    let path = format!("/_matrix/client/v3/rooms/{}/receipt/m.read/{}", enc(room), enc(event));
    let (status, response) = server.post(&path, who.token(), body).await;
    assert_eq!(status, 200, "receipt: {response}");
}

fn rule_path(kind: &str, rule_id: &str) -> String {
    format!("/_matrix/client/v3/pushrules/global/{kind}/{}", enc(rule_id))
}

#[tokio::test]
async fn counts_follow_mentions_room_pings_mutes_and_receipts() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let carol = server.register("carol", "pw").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    let quiet = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    for who in [&bob, &carol] {
        join(&server, who, &room).await;
    }
    join(&server, &bob, &quiet).await;
    let path = format!("/_matrix/client/v3/profile/{}/displayname", enc(&bob.user_id));
    assert_eq!(server.put(&path, bob.token(), json!({"displayname": "Bobby"})).await.0, 200);
    assert_eq!(counts(&sync(&server, &bob, "").await, &room), (0, 0));

    // Bob's own rule with the `contains_display_name` condition (the legacy default rule
    // Trellis keeps, as Synapse does, matches it too), so the room's display name must reach
    // the rules.
    let by_name = json!({"conditions": [{"kind": "contains_display_name"}],
                         "actions": ["notify", {"set_tweak": "highlight"}]});
    assert_eq!(server.put(&rule_path("override", "my-name"), bob.token(), by_name).await.0, 200);

    // A plain message notifies; the display name highlights; `@room` highlights only when the
    // sender has the room's `notifications.room` power (alice created the room, carol has 0).
    send_text(&server, &alice, &room, "plain").await;
    send_text(&server, &alice, &room, "hello Bobby").await;
    let room_ping = |body: &str| json!({"msgtype": "m.text", "body": body, "m.mentions": {"room": true}});
    send_content(&server, &alice, &room, room_ping("@room meeting now")).await;
    send_content(&server, &carol, &room, room_ping("@room from carol")).await;
    // Bob's own message never counts.
    let own = send_text(&server, &bob, &room, "bob's own, Bobby").await;
    assert_eq!(counts(&sync(&server, &bob, "").await, &room), (4, 2));

    // A muted room (a room rule without actions) counts nothing; another room still counts.
    let (status, body) = server.put(&rule_path("room", &quiet), bob.token(), json!({"actions": []})).await;
    assert_eq!(status, 200, "{body}");
    send_text(&server, &alice, &quiet, "nobody hears this").await;
    let body = sync(&server, &bob, "").await;
    assert_eq!(counts(&body, &quiet), (0, 0));
    assert_eq!(counts(&body, &room), (4, 2));

    // A read receipt on bob's own (newest) message reads everything before it.
    receipt(&server, &bob, &room, &own, json!({})).await;
    assert_eq!(counts(&sync(&server, &bob, "").await, &room), (0, 0));
    send_text(&server, &alice, &room, "after the receipt").await;
    assert_eq!(counts(&sync(&server, &bob, "").await, &room), (1, 0));

    // Once alice gives carol the power to notify the room, carol's `@room` highlights: the
    // rules see the room's new power levels, not those of an earlier state.
    let levels_path = format!("/_matrix/client/v3/rooms/{}/state/m.room.power_levels", enc(&room));
    let (status, mut levels) = server.get(&levels_path, alice.token()).await;
    assert_eq!(status, 200, "{levels}");
    levels["users"][carol.user_id.as_str()] = json!(50);
    let (status, body) = server.put(&levels_path, alice.token(), levels).await;
    assert_eq!(status, 200, "{body}");
    send_content(&server, &carol, &room, room_ping("@room carol again")).await;
    assert_eq!(counts(&sync(&server, &bob, "").await, &room), (2, 1));
}

#[tokio::test]
async fn thread_counts_are_separate_and_threaded_receipts_clear_only_their_thread() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;
    let root = send_text(&server, &alice, &room, "root").await;
    let reply = |text: &str| {
        json!({"msgtype": "m.text", "body": text,
               "m.relates_to": {"rel_type": "m.thread", "event_id": root, "is_falling_back": true,
                                "m.in_reply_to": {"event_id": root}}})
    };
    send_content(&server, &alice, &room, reply("in thread 1")).await;
    let last_in_thread = send_content(&server, &alice, &room, reply("in thread 2")).await;
    let main = send_text(&server, &alice, &room, "main timeline").await;

    let threaded =
        format!("filter={}", enc(&json!({"room": {"timeline": {"unread_thread_notifications": true}}}).to_string()));
    let thread_counts = |body: &Value| {
        let unread = &body["rooms"]["join"][&room]["unread_thread_notifications"][&root];
        (unread["notification_count"].as_u64(), unread["highlight_count"].as_u64())
    };
    // Without the filter flag everything is one count; with it the thread is apart.
    assert_eq!(counts(&sync(&server, &bob, "").await, &room), (4, 0));
    let body = sync(&server, &bob, &threaded).await;
    assert_eq!(counts(&body, &room), (2, 0), "{body}");
    assert_eq!(thread_counts(&body), (Some(2), Some(0)), "{body}");

    // A receipt in the thread clears the thread only.
    receipt(&server, &bob, &room, &last_in_thread, json!({"thread_id": root})).await;
    let body = sync(&server, &bob, &threaded).await;
    assert_eq!(counts(&body, &room), (2, 0), "{body}");
    assert_eq!(thread_counts(&body), (None, None), "{body}");
    assert_eq!(counts(&sync(&server, &bob, "").await, &room), (2, 0));

    // A receipt on the main timeline clears the main timeline.
    receipt(&server, &bob, &room, &main, json!({"thread_id": "main"})).await;
    assert_eq!(counts(&sync(&server, &bob, &threaded).await, &room), (0, 0));
}

#[tokio::test]
async fn push_rules_can_be_added_ordered_changed_and_deleted() {
    let server = TestServer::start().await;
    let bob = server.register("bob", "pw").await;
    let token = bob.token();

    // Server-default rules are there and readable.
    let (status, master) = server.get(&rule_path("override", ".m.rule.master"), token).await;
    assert_eq!(status, 200, "{master}");
    assert_eq!(master["default"], true);
    let (status, enabled) = server.get(&format!("{}/enabled", rule_path("override", ".m.rule.master")), token).await;
    assert_eq!((status, enabled["enabled"].clone()), (200, json!(false)));

    let condition = json!([{"kind": "event_match", "key": "content.body", "pattern": "cake"}]);
    let body = json!({"actions": ["notify"], "conditions": condition});
    assert_eq!(server.put(&rule_path("override", "first"), token, body.clone()).await.0, 200);
    let (status, rule) = server.get(&rule_path("override", "first"), token).await;
    assert_eq!(status, 200, "{rule}");
    assert_eq!(
        (rule["rule_id"].clone(), rule["enabled"].clone(), rule["default"].clone()),
        (json!("first"), json!(true), json!(false))
    );
    assert_eq!(rule["conditions"], condition);
    // `before` puts a rule ahead of another user rule; `after` behind it.
    assert_eq!(
        server
            .call("PUT", &format!("{}?before=first", rule_path("override", "second")), token, Some(body.clone()))
            .await
            .0,
        200
    );
    assert_eq!(
        server
            .call("PUT", &format!("{}?after=first", rule_path("override", "third")), token, Some(body.clone()))
            .await
            .0,
        200
    );
    let (_, global) = server.get("/_matrix/client/v3/pushrules/global/", token).await;
    let ids: Vec<&str> = global["override"]
        .as_array()
        .expect("override")
        .iter()
        .filter_map(|r| r["rule_id"].as_str())
        .filter(|id| !id.starts_with('.'))
        .collect();
    assert_eq!(ids, ["second", "first", "third"]);

    // enabled and actions.
    let enabled_path = format!("{}/enabled", rule_path("override", "first"));
    assert_eq!(server.put(&enabled_path, token, json!({"enabled": false})).await.0, 200);
    assert_eq!(server.get(&enabled_path, token).await.1["enabled"], false);
    let actions_path = format!("{}/actions", rule_path("override", "first"));
    let actions = json!(["notify", {"set_tweak": "sound", "value": "default"}]);
    assert_eq!(server.put(&actions_path, token, json!({"actions": actions})).await.0, 200);
    assert_eq!(server.get(&actions_path, token).await.1["actions"], actions);
    // Default rules can be disabled and their actions changed too.
    let default_enabled = format!("{}/enabled", rule_path("override", ".m.rule.suppress_notices"));
    assert_eq!(server.put(&default_enabled, token, json!({"enabled": false})).await.0, 200);
    assert_eq!(server.get(&default_enabled, token).await.1["enabled"], false);
    // The rules are account data, so they sync.
    let (_, synced) = server.get("/_matrix/client/v3/sync", token).await;
    let events = synced["account_data"]["events"].as_array().expect("account_data");
    assert!(events.iter().any(|e| e["type"] == "m.push_rules"), "{synced}");

    // Errors.
    assert_error(&server.get(&rule_path("override", "nope"), token).await, 404, "M_NOT_FOUND");
    assert_error(&server.call("DELETE", &rule_path("override", "nope"), token, None).await, 404, "M_NOT_FOUND");
    assert_error(
        &server.put(&format!("{}/enabled", rule_path("room", "nope")), token, json!({"enabled": true})).await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &server.put(&format!("{}/actions", rule_path("room", "nope")), token, json!({"actions": []})).await,
        404,
        "M_NOT_FOUND",
    );
    assert_error(
        &server.call("DELETE", &rule_path("override", ".m.rule.master"), token, None).await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(&server.put(&rule_path("override", ".mine"), token, body.clone()).await, 400, "M_INVALID_PARAM");
    assert_error(
        &server
            .call("PUT", &format!("{}?before=.m.rule.master", rule_path("override", "x")), token, Some(body.clone()))
            .await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &server.call("PUT", &format!("{}?before=missing", rule_path("override", "x")), token, Some(body.clone())).await,
        400,
        "M_UNKNOWN",
    );
    assert_error(
        &server.put(&rule_path("content", "x"), token, json!({"actions": ["notify"]})).await,
        400,
        "M_BAD_JSON",
    );
    assert_error(
        &server.put(&rule_path("override", "x"), token, json!({"actions": "notify"})).await,
        400,
        "M_BAD_JSON",
    );

    // Deleting a user rule removes it.
    assert_eq!(server.call("DELETE", &rule_path("override", "second"), token, None).await.0, 200);
    assert_error(&server.get(&rule_path("override", "second"), token).await, 404, "M_NOT_FOUND");
}

#[tokio::test]
async fn notifications_are_listed_newest_first_in_pages() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;
    let mut sent = Vec::new();
    for text in ["one", "two", "three", "hey bob", "five"] {
        // The fourth mentions bob (`m.mentions`), so it highlights.
        let mentions = if text == "hey bob" { json!({"user_ids": [bob.user_id]}) } else { json!({}) };
        let content = json!({"msgtype": "m.text", "body": text, "m.mentions": mentions});
        sent.push(send_content(&server, &alice, &room, content).await);
    }
    receipt(&server, &bob, &room, &sent[2], json!({})).await;

    let mut seen = Vec::new();
    let mut from: Option<String> = None;
    let mut pages = 0;
    loop {
        let query = from.as_ref().map_or("limit=2".to_owned(), |f| format!("limit=2&from={f}"));
        let (status, page) = server.get(&format!("/_matrix/client/v3/notifications?{query}"), bob.token()).await;
        assert_eq!(status, 200, "{page}");
        pages += 1;
        for n in page["notifications"].as_array().expect("notifications") {
            assert_eq!(n["room_id"], room.as_str());
            assert!(n["ts"].as_u64().is_some() && n["actions"].is_array(), "{n}");
            let id = n["event"]["event_id"].as_str().expect("event_id").to_owned();
            let index = sent.iter().position(|s| *s == id).expect("a sent event");
            assert_eq!(n["read"], index <= 2, "read flag of {id}");
            seen.push(id);
        }
        match page["next_token"].as_str() {
            Some(token) => from = Some(token.to_owned()),
            None => break,
        }
        assert!(pages < 10, "paging does not end");
    }
    let newest_first: Vec<String> = sent.iter().rev().cloned().collect();
    assert_eq!(seen, newest_first);
    assert_eq!(pages, 3);

    // `only=highlight`: the mention of bob.
    let (_, page) = server.get("/_matrix/client/v3/notifications?only=highlight", bob.token()).await;
    let ids: Vec<&str> = page["notifications"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|n| n["event"]["event_id"].as_str())
        .collect();
    assert_eq!(ids, [sent[3].as_str()]);
    assert_error(&server.get("/_matrix/client/v3/notifications?from=xyz", bob.token()).await, 400, "M_INVALID_PARAM");
}

fn http_pusher(url: &str, pushkey: &str) -> Value {
    json!({"kind": "http", "app_id": "org.example.app", "pushkey": pushkey, "app_display_name": "App",
           "device_display_name": "Phone", "lang": "en", "data": {"url": url, "custom": "kept"}})
}

async fn pushers(server: &TestServer, who: &Session) -> Vec<Value> {
    let (status, body) = server.get("/_matrix/client/v3/pushers", who.token()).await;
    assert_eq!(status, 200, "{body}");
    body["pushers"].as_array().expect("pushers").clone()
}

#[tokio::test]
async fn pushers_are_created_updated_appended_and_deleted() {
    let server = TestServer::start().await;
    let bob = server.register("bob", "pw").await;
    let carol = server.register("carol", "pw").await;
    let url = "https://push.example.org/_matrix/push/v1/notify";
    const SET: &str = "/_matrix/client/v3/pushers/set";

    assert_error(
        &server.post(SET, bob.token(), http_pusher("https://push.example.org/notify", "k1")).await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(&server.post(SET, bob.token(), http_pusher("not a url", "k1")).await, 400, "M_INVALID_PARAM");
    let mut no_url = http_pusher(url, "k1");
    no_url["data"] = json!({});
    assert_eq!(server.post(SET, bob.token(), no_url).await.0, 400);
    assert!(pushers(&server, &bob).await.is_empty());

    assert_eq!(server.post(SET, bob.token(), http_pusher(url, "k1")).await.0, 200);
    let mut renamed = http_pusher(url, "k1");
    renamed["device_display_name"] = json!("New phone");
    assert_eq!(server.post(SET, bob.token(), renamed).await.0, 200);
    let list = pushers(&server, &bob).await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["device_display_name"], "New phone");
    assert_eq!(list[0]["data"]["url"], url);

    // Another user with the same app ID and pushkey: with `append` both stay, without it the
    // other user's pusher is replaced.
    let mut appended = http_pusher(url, "k1");
    appended["append"] = json!(true);
    assert_eq!(server.post(SET, carol.token(), appended).await.0, 200);
    assert_eq!(pushers(&server, &bob).await.len(), 1);
    assert_eq!(server.post(SET, carol.token(), http_pusher(url, "k1")).await.0, 200);
    assert!(pushers(&server, &bob).await.is_empty());
    assert_eq!(pushers(&server, &carol).await.len(), 1);

    // `kind: null` deletes.
    let delete = json!({"kind": null, "app_id": "org.example.app", "pushkey": "k1"});
    assert_eq!(server.post(SET, carol.token(), delete).await.0, 200);
    assert!(pushers(&server, &carol).await.is_empty());
}

/// The test gateways listen on loopback, which push gateways may not use by default.
const LOOPBACK_GATEWAYS: &str = "push_ip_range_allowlist = [\"127.0.0.0/8\", \"::1/128\"]";

/// A push gateway on loopback: records each notify body and answers with the next scripted
/// (status, body), then 200 `{"rejected": []}`.
struct Gateway {
    url: String,
    received: mpsc::UnboundedReceiver<Value>,
    /// The answers still to give.
    script: Arc<Mutex<Vec<(u16, Value)>>>,
}

async fn gateway(script: Vec<(u16, Value)>) -> Gateway {
    use axum::{Json, Router, extract::State, http::StatusCode, routing::post};
    type Shared = (mpsc::UnboundedSender<Value>, Arc<Mutex<Vec<(u16, Value)>>>);
    async fn notify(State((tx, script)): State<Shared>, Json(body): Json<Value>) -> (StatusCode, Json<Value>) {
        let _ = tx.send(body);
        let mut script = script.lock().await;
        let (status, answer) = if script.is_empty() { (200, json!({"rejected": []})) } else { script.remove(0) };
        (StatusCode::from_u16(status).expect("status"), Json(answer))
    }
    let (tx, received) = mpsc::unbounded_channel();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind gateway");
    let addr = listener.local_addr().expect("addr");
    let script = Arc::new(Mutex::new(script));
    let app = Router::new().route("/_matrix/push/v1/notify", post(notify)).with_state((tx, script.clone()));
    tokio::spawn(async move { axum::serve(listener, app).await.expect("gateway") });
    Gateway { url: format!("http://{addr}/_matrix/push/v1/notify"), received, script }
}

impl Gateway {
    /// The next notify; a generous bound only keeps a broken build from hanging.
    async fn next(&mut self) -> Value {
        tokio::time::timeout(Duration::from_secs(60), self.received.recv()).await.expect("a notify").expect("open")
    }
}

async fn room_with_pusher(server: &TestServer, gateway: &Gateway, format: Option<&str>) -> (Session, Session, String) {
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = create_room(server, &alice, json!({"preset": "public_chat", "name": "Push room"})).await;
    join(server, &bob, &room).await;
    let mut pusher = http_pusher(&gateway.url, "bobs-key");
    if let Some(format) = format {
        pusher["data"]["format"] = json!(format);
    }
    let (status, body) = server.post("/_matrix/client/v3/pushers/set", bob.token(), pusher).await;
    assert_eq!(status, 200, "{body}");
    (alice, bob, room)
}

#[tokio::test]
async fn a_gateway_receives_the_notification_with_counts_and_device() {
    let server = TestServer::start_with(LOOPBACK_GATEWAYS).await;
    let mut gateway = gateway(Vec::new()).await;
    let (alice, bob, room) = room_with_pusher(&server, &gateway, None).await;
    let path = format!("/_matrix/client/v3/profile/{}/displayname", enc(&alice.user_id));
    assert_eq!(server.put(&path, alice.token(), json!({"displayname": "Alice A."})).await.0, 200);
    let mention = json!({"msgtype": "m.text", "body": "hello Bob", "m.mentions": {"user_ids": [bob.user_id]}});
    let event = send_content(&server, &alice, &room, mention).await;
    let body = gateway.next().await;
    let n = &body["notification"];
    assert_eq!(n["event_id"], event.as_str(), "{body}");
    assert_eq!(n["room_id"], room.as_str());
    assert_eq!(n["type"], "m.room.message");
    assert_eq!(n["sender"], alice.user_id.as_str());
    assert_eq!(n["content"]["body"], "hello Bob");
    assert_eq!(n["sender_display_name"], "Alice A.", "{body}");
    assert_eq!(n["room_name"], "Push room", "{body}");
    // `high` is the default, which ruma leaves out.
    assert!(n.get("prio").is_none_or(|prio| prio == "high"), "{body}");
    assert_eq!(n["counts"]["unread"], 1, "{body}");
    let device = &n["devices"][0];
    assert_eq!(device["app_id"], "org.example.app");
    assert_eq!(device["pushkey"], "bobs-key");
    assert!(device["pushkey_ts"].as_u64().is_some(), "{body}");
    assert_eq!(device["data"], json!({"custom": "kept"}), "the url is not sent: {body}");
    // `.m.rule.is_user_mention`: sound and highlight tweaks.
    assert_eq!(device["tweaks"]["highlight"], true, "{body}");
    assert_eq!(device["tweaks"]["sound"], "default", "{body}");
}

#[tokio::test]
async fn event_id_only_pushers_get_no_content_and_5xx_is_retried() {
    let server = TestServer::start_with(LOOPBACK_GATEWAYS).await;
    let mut gateway = gateway(vec![(500, json!({"error": "busy"}))]).await;
    let (alice, _bob, room) = room_with_pusher(&server, &gateway, Some("event_id_only")).await;
    let event = send_text(&server, &alice, &room, "first").await;
    let failed = gateway.next().await;
    let retried = gateway.next().await;
    for body in [&failed, &retried] {
        let n = &body["notification"];
        assert_eq!(n["event_id"], event.as_str(), "{body}");
        assert!(n.get("content").is_none() && n.get("sender").is_none(), "event_id_only: {body}");
        assert_eq!(n["devices"][0]["data"]["format"], "event_id_only");
    }
}

#[tokio::test]
async fn a_rejected_pushkey_is_removed() {
    let server = TestServer::start_with(LOOPBACK_GATEWAYS).await;
    let mut gateway = gateway(vec![(200, json!({"rejected": ["bobs-key"]}))]).await;
    let (alice, bob, room) = room_with_pusher(&server, &gateway, None).await;
    assert_eq!(pushers(&server, &bob).await.len(), 1);
    send_text(&server, &alice, &room, "first").await;
    gateway.next().await;
    // The removal follows the gateway's answer; poll until it shows.
    for _ in 0..100 {
        if pushers(&server, &bob).await.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the rejected pusher is still listed");
}

#[tokio::test]
async fn an_undelivered_notification_is_sent_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The gateway fails until the server has been restarted.
    let mut gateway = gateway(vec![(500, json!({"error": "down"})); 10_000]).await;
    let server = TestServer::start_in(dir.path(), "localhost", LOOPBACK_GATEWAYS).expect("server starts");
    let (alice, _bob, room) = room_with_pusher(&server, &gateway, None).await;
    let event = send_text(&server, &alice, &room, "while the gateway is down").await;
    assert_eq!(gateway.next().await["notification"]["event_id"], event.as_str());
    assert_eq!(server.stop(), Some(0));

    gateway.script.lock().await.clear();
    while gateway.received.try_recv().is_ok() {}
    let server = TestServer::start_in(dir.path(), "localhost", LOOPBACK_GATEWAYS).expect("server restarts");
    let body = gateway.next().await;
    assert_eq!(body["notification"]["event_id"], event.as_str(), "{body}");
    drop(server);
}

/// A gateway that is down, with more notifications waiting for it than one pass of the sender
/// reads, does not hold up another user's notifications queued behind them.
#[tokio::test]
async fn a_gateway_that_is_down_does_not_hold_up_others() {
    let server = TestServer::start_with(LOOPBACK_GATEWAYS).await;
    let down = gateway(vec![(500, json!({"error": "down"})); 100_000]).await;
    let (alice, _bob, room) = room_with_pusher(&server, &down, None).await;
    for i in 0..120 {
        send_text(&server, &alice, &room, &format!("for bob {i}")).await;
    }
    let mut up = gateway(Vec::new()).await;
    let carol = server.register("carol", "pw").await;
    let other_room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &carol, &other_room).await;
    let (status, body) =
        server.post("/_matrix/client/v3/pushers/set", carol.token(), http_pusher(&up.url, "carols-key")).await;
    assert_eq!(status, 200, "{body}");
    let event = send_text(&server, &alice, &other_room, "for carol").await;
    let body = up.next().await;
    assert_eq!(body["notification"]["event_id"], event.as_str(), "{body}");
    assert_eq!(body["notification"]["devices"][0]["pushkey"], "carols-key", "{body}");
}

/// Push gateways get the URL preview guard: a pusher whose URL is (or resolves only to) a
/// loopback or private address is refused at `/pushers/set`, unless the config allows it.
#[tokio::test]
async fn pushers_to_private_addresses_are_refused_by_default() {
    let server = TestServer::start().await;
    let bob = server.register("bob", "pw").await;
    const SET: &str = "/_matrix/client/v3/pushers/set";
    for url in [
        "http://127.0.0.1:9/_matrix/push/v1/notify",
        "http://localhost:9/_matrix/push/v1/notify",
        "http://[::1]:9/_matrix/push/v1/notify",
        "https://10.1.2.3/_matrix/push/v1/notify",
        "http://169.254.169.254/_matrix/push/v1/notify",
    ] {
        assert_error(&server.post(SET, bob.token(), http_pusher(url, "k1")).await, 400, "M_INVALID_PARAM");
    }
    assert!(pushers(&server, &bob).await.is_empty());

    let allowed = TestServer::start_with(LOOPBACK_GATEWAYS).await;
    let carol = allowed.register("carol", "pw").await;
    let url = "http://127.0.0.1:9/_matrix/push/v1/notify";
    assert_eq!(allowed.post(SET, carol.token(), http_pusher(url, "k1")).await.0, 200);
}

/// The address is checked again at delivery: a loopback pusher set while loopback was allowed
/// gets nothing once the config no longer allows it.
#[tokio::test]
async fn delivery_checks_the_gateway_address_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut gateway = gateway(Vec::new()).await;
    let server = TestServer::start_in(dir.path(), "localhost", LOOPBACK_GATEWAYS).expect("server starts");
    let (alice, _bob, room) = room_with_pusher(&server, &gateway, None).await;
    let event = send_text(&server, &alice, &room, "allowed").await;
    assert_eq!(gateway.next().await["notification"]["event_id"], event.as_str());
    assert_eq!(server.stop(), Some(0));

    let server = TestServer::start_in(dir.path(), "localhost", "").expect("server restarts");
    send_text(&server, &alice, &room, "no longer allowed").await;
    let nothing = tokio::time::timeout(Duration::from_secs(3), gateway.received.recv()).await;
    assert!(nothing.is_err(), "a gateway on loopback was sent {nothing:?}");
}

/// A new member event that keeps the membership (a display name change) is not a fresh join:
/// the unread counts since the join stay, and an incremental sync does not send the room's
/// whole state again.
#[tokio::test]
async fn a_profile_change_keeps_unread_counts_and_is_no_new_join() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat", "name": "Counts"})).await;
    join(&server, &bob, &room).await;
    send_text(&server, &alice, &room, "one").await;
    send_text(&server, &alice, &room, "two").await;
    let before = sync(&server, &bob, "").await;
    assert_eq!(counts(&before, &room), (2, 0));

    let path = format!("/_matrix/client/v3/profile/{}/displayname", enc(&bob.user_id));
    assert_eq!(server.put(&path, bob.token(), json!({"displayname": "Bobby"})).await.0, 200);
    let since = before["next_batch"].as_str().unwrap();
    let after = sync(&server, &bob, &format!("since={since}")).await;
    assert_eq!(counts(&after, &room), (2, 0), "{after}");
    let state = &after["rooms"]["join"][&room]["state"]["events"];
    assert!(
        state.as_array().is_none_or(|events| events.iter().all(|e| e["type"] != "m.room.name")),
        "the room's state is not sent again: {after}"
    );
    assert_eq!(counts(&sync(&server, &bob, "").await, &room), (2, 0));
}
