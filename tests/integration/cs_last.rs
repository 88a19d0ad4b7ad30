//! The last client-server items of #14: `contains_url` filters and `end` in `/messages`
//! (Complement's `TestRoomImageRoundtrip`), MSC4306's thread subscription push rules and
//! MSC4308's sliding sync extension (`TestMSC4308ThreadSubscriptionsSlidingSync`), and the admin
//! API for room and user reports.

use serde_json::{Value, json};

use crate::{
    harness::{Session, TestServer, assert_error, enc},
    room_helpers::{create_room, join, register_admin, send_event, send_text},
};

fn filter(value: Value) -> String {
    enc(&value.to_string())
}

async fn messages(server: &TestServer, who: &Session, room: &str, query: &str) -> Value {
    let path = format!("/_matrix/client/v3/rooms/{}/messages?{query}", enc(room));
    let (status, body) = server.get(&path, who.token()).await;
    assert_eq!(status, 200, "messages: {body}");
    body
}

fn event_ids(events: &Value) -> Vec<String> {
    events.as_array().into_iter().flatten().filter_map(|e| e["event_id"].as_str().map(str::to_owned)).collect()
}

/// Complement's `TestRoomImageRoundtrip`: with `{"contains_url": true}`, `/messages` backwards
/// returns just the file event, with `start` and `end` (as Synapse answers, a page that holds
/// events has an `end`; the page after it is empty and has none). `contains_url: false` keeps
/// the other events; `/context` and the `/sync` timeline apply the same filter.
#[tokio::test]
async fn contains_url_filters_messages_context_and_sync() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let room = create_room(&server, &alice, json!({})).await;
    let text = send_text(&server, &alice, &room, "test").await;
    let file_content = json!({"msgtype": "m.file", "body": "test.png", "url": "mxc://localhost/abcdef"});
    let file = send_event(&server, &alice, &room, "m.room.message", file_content).await;
    // A `url` that is not a string does not count, as in Synapse.
    let odd_content = json!({"msgtype": "m.text", "body": "odd", "url": 5});
    let odd = send_event(&server, &alice, &room, "m.room.message", odd_content).await;

    let with_url = filter(json!({"contains_url": true}));
    let page = messages(&server, &alice, &room, &format!("dir=b&filter={with_url}")).await;
    assert!(page["start"].is_string(), "{page}");
    assert!(page["end"].is_string(), "{page}");
    assert_eq!(event_ids(&page["chunk"]), vec![file.clone()], "{page}");
    let end = page["end"].as_str().unwrap();
    let next = messages(&server, &alice, &room, &format!("dir=b&from={end}&filter={with_url}")).await;
    assert_eq!(next["chunk"].as_array().map(Vec::len), Some(0), "{next}");
    assert!(next.get("end").is_none(), "the start of the room: no end: {next}");
    // Forwards too.
    let page = messages(&server, &alice, &room, &format!("dir=f&filter={with_url}")).await;
    assert_eq!(event_ids(&page["chunk"]), vec![file.clone()], "{page}");

    let without_url = filter(json!({"contains_url": false, "types": ["m.room.message"]}));
    let page = messages(&server, &alice, &room, &format!("dir=b&filter={without_url}")).await;
    assert_eq!(event_ids(&page["chunk"]), vec![odd.clone(), text.clone()], "{page}");

    // `/context` around the text: only events with a URL around it.
    let path = format!("/_matrix/client/v3/rooms/{}/context/{}?filter={with_url}", enc(&room), enc(&text));
    let (status, context) = server.get(&path, alice.token()).await;
    assert_eq!(status, 200, "{context}");
    assert_eq!(event_ids(&context["events_after"]), vec![file.clone()], "{context}");
    assert_eq!(event_ids(&context["events_before"]), Vec::<String>::new(), "{context}");

    // The `/sync` timeline.
    let sync_filter = filter(json!({"room": {"timeline": {"contains_url": true}}}));
    let (status, body) = server.get(&format!("/_matrix/client/v3/sync?filter={sync_filter}"), alice.token()).await;
    assert_eq!(status, 200, "{body}");
    let timeline = &body["rooms"]["join"][&room]["timeline"]["events"];
    assert_eq!(event_ids(timeline), vec![file], "{body}");
}

fn thread_reply(root: &str, body: &str) -> Value {
    json!({"msgtype": "m.text", "body": body, "m.relates_to": {"rel_type": "m.thread", "event_id": root}})
}

fn subscription(room: &str, root: &str) -> String {
    format!("/_matrix/client/unstable/io.element.msc4306/rooms/{}/thread/{}/subscription", enc(room), enc(root))
}

/// The event IDs of `who`'s notifications, newest first.
async fn notified(server: &TestServer, who: &Session) -> Vec<String> {
    let (status, body) = server.get("/_matrix/client/v3/notifications", who.token()).await;
    assert_eq!(status, 200, "{body}");
    body["notifications"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["event"]["event_id"].as_str().map(str::to_owned))
        .collect()
}

/// MSC4306's push rules (`thread_subscription_push_rules`, as Synapse's `msc4306_enabled`): an
/// event in a thread notifies only the users subscribed to it; a mention still notifies; events
/// outside threads are unchanged. Without the setting, thread events notify everyone as before.
#[tokio::test]
async fn thread_events_notify_subscribers_only() {
    let server = TestServer::start_with("thread_subscription_push_rules = true").await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;
    let root = send_text(&server, &alice, &room, "root").await;
    let unsubscribed = send_event(&server, &alice, &room, "m.room.message", thread_reply(&root, "first")).await;
    let mut mention = thread_reply(&root, "bob, look");
    mention["m.mentions"] = json!({"user_ids": [bob.user_id]});
    let mentioned = send_event(&server, &alice, &room, "m.room.message", mention).await;
    assert_eq!(server.put(&subscription(&room, &root), bob.token(), json!({})).await.0, 200);
    let subscribed = send_event(&server, &alice, &room, "m.room.message", thread_reply(&root, "second")).await;
    assert_eq!(server.call("DELETE", &subscription(&room, &root), bob.token(), None).await.0, 200);
    let after = send_event(&server, &alice, &room, "m.room.message", thread_reply(&root, "third")).await;
    let outside = send_text(&server, &alice, &room, "outside the thread").await;

    let got = notified(&server, &bob).await;
    assert!(got.contains(&root) && got.contains(&outside), "{got:?}");
    assert!(got.contains(&mentioned), "a mention notifies: {got:?}");
    assert!(got.contains(&subscribed), "subscribed: {got:?}");
    assert!(!got.contains(&unsubscribed) && !got.contains(&after), "unsubscribed: {got:?}");

    // Without the setting, nothing changes for threads.
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;
    let root = send_text(&server, &alice, &room, "root").await;
    let reply = send_event(&server, &alice, &room, "m.room.message", thread_reply(&root, "first")).await;
    assert!(notified(&server, &bob).await.contains(&reply));
}

const SLIDING_SYNC: &str = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";
const EXTENSION: &str = "io.element.msc4308.thread_subscriptions";

/// One sliding sync request of connection `conn` with only the thread subscriptions extension:
/// (pos, extension).
async fn sliding_sync(
    server: &TestServer,
    who: &Session,
    conn: &str,
    pos: Option<&str>,
    limit: u64,
) -> (String, Value) {
    let path = match pos {
        Some(pos) => format!("{SLIDING_SYNC}?timeout=0&pos={}", enc(pos)),
        None => format!("{SLIDING_SYNC}?timeout=0"),
    };
    let body = json!({"conn_id": conn, "extensions": {EXTENSION: {"enabled": true, "limit": limit}}});
    let (status, response) = server.post_owned(path, who.token(), body).await;
    assert_eq!(status, 200, "{response}");
    let pos = response["pos"].as_str().expect("pos").to_owned();
    let extension = response["extensions"].get(EXTENSION).cloned().unwrap_or(json!({}));
    (pos, extension)
}

/// Complement's `TestMSC4308ThreadSubscriptionsSlidingSync`: a manual subscription shows in the
/// initial and the incremental answer (`automatic: false` and a numeric `bump_stamp`); then an
/// unsubscription, and `prev_batch` when `limit` leaves changes out, paged through
/// `/io.element.msc4308/thread_subscriptions`.
#[tokio::test]
async fn thread_subscriptions_reach_sliding_sync() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let room = create_room(&server, &alice, json!({})).await;
    let root = send_text(&server, &alice, &room, "what do you think? reply in a thread!").await;

    // Initial: nothing, then (new connection) the subscription.
    let (pos, ext) = sliding_sync(&server, &alice, "a", None, 2).await;
    assert!(ext.get("subscribed").is_none(), "{ext}");
    assert_eq!(server.put(&subscription(&room, &root), alice.token(), json!({})).await.0, 200);
    let (_, initial) = sliding_sync(&server, &alice, "b", None, 2).await;
    assert_eq!(initial["subscribed"][&room][&root]["automatic"], false, "{initial}");
    assert!(initial["subscribed"][&room][&root]["bump_stamp"].is_u64(), "{initial}");
    // Incremental: the change since the first answer, then nothing more.
    let (pos, ext) = sliding_sync(&server, &alice, "a", Some(&pos), 2).await;
    assert_eq!(ext["subscribed"][&room][&root]["automatic"], false, "{ext}");
    let stamp = ext["subscribed"][&room][&root]["bump_stamp"].as_u64().expect("bump_stamp");
    let (pos, ext) = sliding_sync(&server, &alice, "a", Some(&pos), 2).await;
    assert_eq!(ext, json!({}), "nothing changed");

    // An unsubscription, newer.
    assert_eq!(server.call("DELETE", &subscription(&room, &root), alice.token(), None).await.0, 200);
    let (_, ext) = sliding_sync(&server, &alice, "a", Some(&pos), 2).await;
    assert!(ext.get("subscribed").is_none(), "{ext}");
    assert!(ext["unsubscribed"][&room][&root]["bump_stamp"].as_u64().is_some_and(|s| s > stamp), "{ext}");

    // Three more threads, limit 2: the newest two and a `prev_batch` to page back from.
    let mut roots = Vec::new();
    for i in 0..3 {
        let root = send_text(&server, &alice, &room, &format!("root {i}")).await;
        assert_eq!(server.put(&subscription(&room, &root), alice.token(), json!({})).await.0, 200);
        roots.push(root);
    }
    let (_, ext) = sliding_sync(&server, &alice, "c", None, 2).await;
    let sent: Vec<&String> = ext["subscribed"][&room].as_object().expect("subscribed").keys().collect();
    assert_eq!(sent.len(), 2, "{ext}");
    assert!(sent.contains(&&roots[1]) && sent.contains(&&roots[2]), "{ext}");
    let prev = ext["prev_batch"].as_str().expect("prev_batch");
    let path = format!("/_matrix/client/unstable/io.element.msc4308/thread_subscriptions?dir=b&limit=10&from={prev}");
    let (status, older) = server.get(&path, alice.token()).await;
    assert_eq!(status, 200, "{older}");
    assert_eq!(older["subscribed"][&room][&roots[0]]["automatic"], false, "{older}");
    assert!(older["unsubscribed"][&room][&root].is_object(), "{older}");
    assert!(older.get("end").is_none(), "{older}");
    let bad = server.get("/_matrix/client/unstable/io.element.msc4308/thread_subscriptions?dir=f", alice.token()).await;
    assert_error(&bad, 400, "M_INVALID_PARAM");
}

/// Reports of rooms and users are readable and deletable by admins: user reports at Synapse's
/// `/_synapse/admin/v1/user_reports` (the shape of its `user_reports.py`), room reports at
/// `/_trellis/admin/v1/room_reports`; others get `M_FORBIDDEN`.
#[tokio::test]
async fn admins_read_and_delete_room_and_user_reports() {
    let server = TestServer::start().await;
    let admin = register_admin(&server, "admin").await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat", "name": "The Room"})).await;

    let report_user = |user: &str| format!("/_matrix/client/v3/users/{}/report", enc(user));
    assert_eq!(server.post(&report_user(&alice.user_id), bob.token(), json!({"reason": "rude"})).await.0, 200);
    assert_eq!(server.post(&report_user(&bob.user_id), alice.token(), json!({"reason": "spam"})).await.0, 200);
    let report_room = format!("/_matrix/client/v3/rooms/{}/report", enc(&room));
    assert_eq!(server.post(&report_room, bob.token(), json!({"reason": "bad room"})).await.0, 200);

    // User reports: newest first, filters, paging.
    let (status, list) = server.get("/_synapse/admin/v1/user_reports", admin.token()).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["total"], 2, "{list}");
    let reports = list["user_reports"].as_array().expect("user_reports");
    assert_eq!(reports[0]["target_user_id"], bob.user_id, "newest first: {list}");
    assert_eq!(reports[0]["user_id"], alice.user_id);
    assert_eq!(reports[0]["reason"], "spam");
    assert!(reports[0]["received_ts"].is_u64() && reports[0]["id"].is_u64(), "{list}");
    let path = format!("/_synapse/admin/v1/user_reports?target_user_id={}", enc(&alice.user_id));
    let (_, filtered) = server.get(&path, admin.token()).await;
    assert_eq!(filtered["total"], 1, "{filtered}");
    assert_eq!(filtered["user_reports"][0]["user_id"], bob.user_id);
    let (_, first) = server.get("/_synapse/admin/v1/user_reports?limit=1&dir=f", admin.token()).await;
    assert_eq!(first["user_reports"][0]["target_user_id"], alice.user_id, "{first}");
    assert_eq!(first["next_token"], 1, "{first}");
    // One report, and deleting it.
    let id = reports[0]["id"].as_u64().unwrap();
    let one = format!("/_synapse/admin/v1/user_reports/{id}");
    let (status, read) = server.get(&one, admin.token()).await;
    assert_eq!((status, &read["reason"]), (200, &json!("spam")), "{read}");
    assert_eq!(server.call("DELETE", &one, admin.token(), None).await, (200, json!({})));
    assert_error(&server.get(&one, admin.token()).await, 404, "M_NOT_FOUND");
    assert_error(&server.get("/_synapse/admin/v1/user_reports/x", admin.token()).await, 400, "M_INVALID_PARAM");
    assert_error(&server.get("/_synapse/admin/v1/user_reports", bob.token()).await, 403, "M_FORBIDDEN");

    // Room reports.
    let (status, list) = server.get("/_trellis/admin/v1/room_reports", admin.token()).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["total"], 1, "{list}");
    let report = &list["room_reports"][0];
    assert_eq!(report["room_id"], room.as_str());
    assert_eq!(report["user_id"], bob.user_id);
    assert_eq!(report["reason"], "bad room");
    assert_eq!(report["name"], "The Room", "{list}");
    let path = format!("/_trellis/admin/v1/room_reports?room_id={}", enc("!other:localhost"));
    assert_eq!(server.get(&path, admin.token()).await.1["total"], 0);
    let one = format!("/_trellis/admin/v1/room_reports/{}", report["id"].as_u64().unwrap());
    assert_eq!(server.get(&one, admin.token()).await.1["reason"], "bad room");
    assert_error(&server.get(&one, alice.token()).await, 403, "M_FORBIDDEN");
    assert_eq!(server.call("DELETE", &one, admin.token(), None).await, (200, json!({})));
    assert_eq!(server.get("/_trellis/admin/v1/room_reports", admin.token()).await.1["total"], 0);
}
