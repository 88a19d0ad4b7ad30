//! The MSCs Element's clients use, each reproducing what its Complement test checks:
//! `TestMSC3967`, `TestRemovingAccountData` (MSC3391),
//! `TestDeletingDeviceRemovesDeviceLocalNotificationSettings` (MSC3890),
//! `TestPollsLocalPushRules` (MSC3930), `TestFilterMessagesByRelType` (MSC3874) and
//! `TestInviteFiltering` (MSC4155, on one server) and `TestThreadSubscriptions` (MSC4306, the
//! endpoints).

use serde_json::{Value, json};

use crate::{
    harness::{Session, TestServer, assert_error, enc},
    keys::{SigningKey, cross_signing_key},
    room_helpers::{create_room, send_event, send_text},
};

async fn sync(server: &TestServer, who: &Session, since: Option<&str>) -> Value {
    let path = match since {
        Some(since) => format!("/_matrix/client/v3/sync?since={since}"),
        None => "/_matrix/client/v3/sync".to_owned(),
    };
    let (status, body) = server.get(&path, who.token()).await;
    assert_eq!(status, 200, "sync: {body}");
    body
}

fn next_batch(body: &Value) -> String {
    body["next_batch"].as_str().expect("next_batch").to_owned()
}

/// The content of account data of type `kind` in a list of account data events.
fn find<'a>(events: &'a Value, kind: &str) -> Option<&'a Value> {
    events.as_array()?.iter().find(|event| event["type"] == kind).map(|event| &event["content"])
}

/// Complement's `TestMSC3967`: the first cross-signing upload needs no password, a repeat of it
/// neither; replacing the master key or adding a key does, and with the password it works, also
/// when repeated with the same `auth`.
#[tokio::test]
async fn first_cross_signing_upload_needs_no_password() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "helloworld").await;
    const UPLOAD: &str = "/_matrix/client/v3/keys/device_signing/upload";
    let master = SigningKey::new();
    let upload = json!({"master_key": cross_signing_key(&alice.user_id, "master", &master)});
    assert_eq!(server.post(UPLOAD, alice.token(), upload.clone()).await.0, 200);
    assert_eq!(server.post(UPLOAD, alice.token(), upload).await.0, 200, "a repeat needs no password");

    let replace = json!({"master_key": cross_signing_key(&alice.user_id, "master", &SigningKey::new())});
    let refused = server.post(UPLOAD, alice.token(), replace).await;
    assert_eq!(refused.0, 401, "{}", refused.1);
    assert!(refused.1["flows"].is_array(), "{}", refused.1);

    let self_signing =
        master.sign(&alice.user_id, cross_signing_key(&alice.user_id, "self_signing", &SigningKey::new()));
    let mut add = json!({"self_signing_key": self_signing});
    let refused = server.post(UPLOAD, alice.token(), add.clone()).await;
    assert_eq!(refused.0, 401, "{}", refused.1);
    assert!(refused.1["flows"].is_array(), "{}", refused.1);
    add["auth"] = json!({
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": alice.user_id},
        "password": "helloworld", "session": refused.1["session"],
    });
    let done = server.post(UPLOAD, alice.token(), add.clone()).await;
    assert_eq!(done.0, 200, "{}", done.1);
    let again = server.post(UPLOAD, alice.token(), add).await;
    assert_eq!(again.0, 200, "idempotent with the auth dict: {}", again.1);
}

/// Complement's `TestRemovingAccountData` (MSC3391): global and room account data deleted by
/// `DELETE` on the unstable path or by a `PUT` of `{}` shows as `{}` in the next incremental
/// sync, is 404 on `GET`, and is absent from an initial sync.
#[tokio::test]
async fn account_data_can_be_deleted() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let room = create_room(&server, &alice, json!({})).await;
    const KIND: &str = "org.example.test";
    let user = enc(&alice.user_id);
    let global = format!("/_matrix/client/v3/user/{user}/account_data/{KIND}");
    let in_room = format!("/_matrix/client/v3/user/{user}/rooms/{}/account_data/{KIND}", enc(&room));
    let unstable = "/_matrix/client/unstable/org.matrix.msc3391";
    let delete_global = format!("{unstable}/user/{user}/account_data/{KIND}");
    let delete_room = format!("{unstable}/user/{user}/rooms/{}/account_data/{KIND}", enc(&room));
    let room_events = |body: &Value| body["rooms"]["join"][&room]["account_data"]["events"].clone();

    for (set_path, delete_path, is_room) in [(&global, &delete_global, false), (&in_room, &delete_room, true)] {
        for via_delete in [true, false] {
            let events =
                |body: &Value| if is_room { room_events(body) } else { body["account_data"]["events"].clone() };
            let since = next_batch(&sync(&server, &alice, None).await);
            assert_eq!(server.put(set_path, alice.token(), json!({"test_data": 1})).await.0, 200);
            let created = sync(&server, &alice, Some(&since)).await;
            assert_eq!(find(&events(&created), KIND), Some(&json!({"test_data": 1})), "{created}");
            assert_eq!(server.get(set_path, alice.token()).await, (200, json!({"test_data": 1})));

            let since = next_batch(&created);
            let deleted = if via_delete {
                server.call("DELETE", delete_path, alice.token(), None).await
            } else {
                server.put(set_path, alice.token(), json!({})).await
            };
            assert_eq!(deleted.0, 200, "{}", deleted.1);
            let after = sync(&server, &alice, Some(&since)).await;
            assert_eq!(find(&events(&after), KIND), Some(&json!({})), "deleted shows as empty: {after}");
            assert_error(&server.get(set_path, alice.token()).await, 404, "M_NOT_FOUND");
            let initial = sync(&server, &alice, None).await;
            assert_eq!(find(&events(&initial), KIND), None, "absent from an initial sync: {initial}");
        }
    }
    // Only one's own account data may be deleted.
    let bob = server.register("bob", "pw").await;
    assert_error(&server.call("DELETE", &delete_global, bob.token(), None).await, 403, "M_FORBIDDEN");
    assert_error(&server.call("DELETE", &delete_global, None, None).await, 401, "M_MISSING_TOKEN");
}

/// Complement's `TestDeletingDeviceRemovesDeviceLocalNotificationSettings` (MSC3890): logging out
/// a device deletes its `org.matrix.msc3890.local_notification_settings.<device>` account data;
/// other devices' settings stay.
#[tokio::test]
async fn deleting_a_device_removes_its_local_notification_settings() {
    let server = TestServer::start().await;
    let first = server.register("alice", "hunter2").await;
    let second = Session::from_response(&server.login("alice", "hunter2").await.1);
    let path = |device: &str| {
        format!(
            "/_matrix/client/v3/user/{}/account_data/org.matrix.msc3890.local_notification_settings.{device}",
            enc(&first.user_id)
        )
    };
    for device in [&first.device_id, &second.device_id] {
        assert_eq!(server.put(&path(device), first.token(), json!({"is_silenced": true})).await.0, 200);
    }
    assert_eq!(server.get(&path(&second.device_id), first.token()).await, (200, json!({"is_silenced": true})));
    assert_eq!(server.post("/_matrix/client/v3/logout", second.token(), json!({})).await.0, 200);
    assert_error(&server.get(&path(&second.device_id), first.token()).await, 404, "M_NOT_FOUND");
    assert_eq!(server.get(&path(&first.device_id), first.token()).await.0, 200, "the other device's settings stay");
}

/// Complement's `TestPollsLocalPushRules` (MSC3930): the five poll rules are server defaults,
/// and the one-to-one rules come before the general ones.
#[tokio::test]
async fn poll_push_rules_are_server_defaults() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let rule = |kind: &str, id: &str| format!("/_matrix/client/v3/pushrules/global/{kind}/{id}");
    let (status, response) =
        server.get(&rule("override", ".org.matrix.msc3930.rule.poll_response"), alice.token()).await;
    assert_eq!(status, 200, "{response}");
    assert_eq!(response["actions"], json!([]));
    assert_eq!((&response["default"], &response["enabled"]), (&json!(true), &json!(true)));
    assert_eq!(
        response["conditions"],
        json!([{"kind": "event_match", "key": "type", "pattern": "org.matrix.msc3381.poll.response"}])
    );
    for (id, pattern) in [("poll_start_one_to_one", "poll.start"), ("poll_end_one_to_one", "poll.end")] {
        let (status, response) =
            server.get(&rule("underride", &format!(".org.matrix.msc3930.rule.{id}")), alice.token()).await;
        assert_eq!(status, 200, "{response}");
        assert_eq!(response["actions"], json!(["notify", {"set_tweak": "sound", "value": "default"}]), "{response}");
        let conditions = response["conditions"].as_array().unwrap();
        assert_eq!(conditions.len(), 2);
        assert!(conditions.contains(&json!({"kind": "room_member_count", "is": "2"})), "{response}");
        let pattern = format!("org.matrix.msc3381.{pattern}");
        assert!(conditions.contains(&json!({"kind": "event_match", "key": "type", "pattern": pattern})), "{response}");
    }
    for (id, pattern) in [("poll_start", "poll.start"), ("poll_end", "poll.end")] {
        let (status, response) =
            server.get(&rule("underride", &format!(".org.matrix.msc3930.rule.{id}")), alice.token()).await;
        assert_eq!(status, 200, "{response}");
        assert_eq!(response["actions"], json!(["notify"]));
        let pattern = format!("org.matrix.msc3381.{pattern}");
        assert_eq!(response["conditions"], json!([{"kind": "event_match", "key": "type", "pattern": pattern}]));
    }
    let (_, all) = server.get("/_matrix/client/v3/pushrules/", alice.token()).await;
    let ids: Vec<&str> =
        all["global"]["underride"].as_array().unwrap().iter().filter_map(|r| r["rule_id"].as_str()).collect();
    let at = |id: &str| ids.iter().position(|x| *x == format!(".org.matrix.msc3930.rule.{id}")).expect(id);
    assert!(at("poll_start_one_to_one") < at("poll_start"), "{ids:?}");
    assert!(at("poll_end_one_to_one") < at("poll_end"), "{ids:?}");
}

/// Complement's `TestFilterMessagesByRelType` (MSC3874): `/messages` keeps only events with (or
/// without) the relation types the filter names.
#[tokio::test]
async fn messages_filter_by_relation_type() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    let before = next_batch(&sync(&server, &alice, None).await);
    let root = send_text(&server, &alice, &room, "Message without a relation").await;
    let relation = |rel_type: &str| json!({"msgtype": "m.text", "body": rel_type, "m.relates_to": {"event_id": root, "rel_type": rel_type}});
    let thread = send_event(&server, &alice, &room, "m.room.message", relation("m.thread")).await;
    let reference = send_event(&server, &alice, &room, "m.room.message", relation("m.reference")).await;

    let page = |filter: Value| {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/messages?dir=f&from={before}&filter={}",
            enc(&room),
            enc(&filter.to_string())
        );
        let server = &server;
        let token = alice.token();
        async move {
            let (status, body) = server.get(&path, token).await;
            assert_eq!(status, 200, "{body}");
            let ids: Vec<String> = body["chunk"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|event| event["type"] == "m.room.message")
                .map(|event| event["event_id"].as_str().unwrap().to_owned())
                .collect();
            ids
        }
    };
    let cases = [
        (json!({"org.matrix.msc3874.rel_types": ["m.thread"]}), vec![&thread]),
        (json!({"org.matrix.msc3874.rel_types": ["m.reference"]}), vec![&reference]),
        (json!({"org.matrix.msc3874.rel_types": ["m.thread", "m.reference"]}), vec![&thread, &reference]),
        (json!({"org.matrix.msc3874.not_rel_types": ["m.thread"]}), vec![&root, &reference]),
        (json!({"org.matrix.msc3874.not_rel_types": ["m.reference"]}), vec![&root, &thread]),
        (json!({"org.matrix.msc3874.not_rel_types": ["m.thread", "m.reference"]}), vec![&root]),
        (json!({}), vec![&root, &thread, &reference]),
    ];
    for (filter, expected) in cases {
        let found = page(filter.clone()).await;
        assert_eq!(found.iter().collect::<Vec<_>>(), expected, "filter {filter}");
    }
}

/// Complement's `TestInviteFiltering` (MSC4155), on one server, plus the stable
/// `m.invite_permission_config` (v1.18): blocked invites are 403 `M_INVITE_BLOCKED` and not in
/// sync, ignored ones succeed but stay out of sync, user rules beat server rules, `allowed`
/// beats the rest, globs match, and null fields are ignored.
#[tokio::test]
async fn invite_permission_config_filters_invites() {
    let server = TestServer::start().await;
    let bob = server.register("bob", "pw").await;
    let evil = server.register("user-evil", "pw").await;
    let mut count = 0;
    let mut alice_with = async |config: Value, kind: &str| {
        count += 1;
        let alice = server.register(&format!("alice{count}"), "pw").await;
        let path = format!("/_matrix/client/v3/user/{}/account_data/{kind}", enc(&alice.user_id));
        assert_eq!(server.put(&path, alice.token(), config).await.0, 200);
        alice
    };
    const UNSTABLE: &str = "org.matrix.msc4155.invite_permission_config";
    let invite = async |inviter: &Session, invitee: &Session| {
        let room = create_room(&server, inviter, json!({"preset": "private_chat"})).await;
        let path = format!("/_matrix/client/v3/rooms/{}/invite", enc(&room));
        let result = server.post(&path, inviter.token(), json!({"user_id": invitee.user_id})).await;
        (room, result)
    };
    let invited_rooms = async |who: &Session| {
        let body = sync(&server, who, None).await;
        body["rooms"]["invite"].as_object().map(|rooms| rooms.keys().cloned().collect::<Vec<_>>()).unwrap_or_default()
    };

    // No rules: the invite works and can be joined.
    let alice = alice_with(json!({}), UNSTABLE).await;
    let (room, result) = invite(&bob, &alice).await;
    assert_eq!(result.0, 200, "{}", result.1);
    assert_eq!(invited_rooms(&alice).await, std::slice::from_ref(&room));

    // A blocked user: 403 M_INVITE_BLOCKED, and nothing in sync.
    let alice = alice_with(json!({"blocked_users": [bob.user_id]}), UNSTABLE).await;
    assert_error(&invite(&bob, &alice).await.1, 403, "M_INVITE_BLOCKED");
    assert!(invited_rooms(&alice).await.is_empty());

    // An ignored user: the invite is made, but alice does not see it.
    let alice = alice_with(json!({"ignored_users": [bob.user_id]}), UNSTABLE).await;
    assert_eq!(invite(&bob, &alice).await.1.0, 200);
    assert!(invited_rooms(&alice).await.is_empty());

    // A whole server, ignored or blocked, by name or glob.
    let alice = alice_with(json!({"ignored_servers": ["localhost"]}), UNSTABLE).await;
    assert_eq!(invite(&bob, &alice).await.1.0, 200);
    assert!(invited_rooms(&alice).await.is_empty());
    let alice = alice_with(json!({"blocked_servers": ["local*"]}), UNSTABLE).await;
    assert_error(&invite(&bob, &alice).await.1, 403, "M_INVITE_BLOCKED");
    assert_error(&invite(&evil, &alice).await.1, 403, "M_INVITE_BLOCKED");

    // A user glob.
    let alice = alice_with(json!({"blocked_users": ["@user-?*"]}), UNSTABLE).await;
    assert_error(&invite(&evil, &alice).await.1, 403, "M_INVITE_BLOCKED");
    assert_eq!(invite(&bob, &alice).await.1.0, 200);

    // An allowed user on a blocked server, and a blocked user on an allowed server.
    let alice = alice_with(json!({"allowed_users": [bob.user_id], "blocked_servers": ["localhost"]}), UNSTABLE).await;
    assert_error(&invite(&evil, &alice).await.1, 403, "M_INVITE_BLOCKED");
    let (room, result) = invite(&bob, &alice).await;
    assert_eq!(result.0, 200, "{}", result.1);
    assert_eq!(invited_rooms(&alice).await, std::slice::from_ref(&room));
    let join = server.post(&format!("/_matrix/client/v3/rooms/{}/join", enc(&room)), alice.token(), json!({})).await;
    assert_eq!(join.0, 200, "{}", join.1);
    let alice = alice_with(json!({"blocked_users": [evil.user_id], "allowed_servers": ["localhost"]}), UNSTABLE).await;
    assert_error(&invite(&evil, &alice).await.1, 403, "M_INVITE_BLOCKED");
    assert_eq!(invite(&bob, &alice).await.1.0, 200);

    // Null fields are ignored; a user in several lists is allowed when `allowed` names them.
    let nulls = json!({"allowed_users": null, "ignored_users": null, "blocked_users": null,
                       "allowed_servers": null, "ignored_servers": null, "blocked_servers": null});
    let alice = alice_with(nulls, UNSTABLE).await;
    assert_eq!(invite(&bob, &alice).await.1.0, 200);
    assert_eq!(invited_rooms(&alice).await.len(), 1);
    let several = json!({"ignored_users": [bob.user_id], "blocked_users": [evil.user_id],
                         "allowed_users": [bob.user_id, evil.user_id]});
    let alice = alice_with(several, UNSTABLE).await;
    assert_eq!(invite(&bob, &alice).await.1.0, 200);
    assert_eq!(invite(&evil, &alice).await.1.0, 200);
    assert_eq!(invited_rooms(&alice).await.len(), 2);

    // The stable form blocks every invite, also one sent as a member state event; createRoom
    // still makes the room without the invite.
    let alice = alice_with(json!({"default_action": "block"}), "m.invite_permission_config").await;
    assert_error(&invite(&bob, &alice).await.1, 403, "M_INVITE_BLOCKED");
    let room = create_room(&server, &bob, json!({"invite": [alice.user_id]})).await;
    let member = format!("/_matrix/client/v3/rooms/{}/state/m.room.member/{}", enc(&room), enc(&alice.user_id));
    assert_error(&server.put(&member, bob.token(), json!({"membership": "invite"})).await, 403, "M_INVITE_BLOCKED");
    let members = server.get(&format!("/_matrix/client/v3/rooms/{}/members", enc(&room)), bob.token()).await;
    assert_eq!(members.1["chunk"].as_array().unwrap().len(), 1, "only bob: {}", members.1);
    assert!(invited_rooms(&alice).await.is_empty());
}

/// Complement's `TestThreadSubscriptions` (MSC4306): subscribing manually and automatically,
/// unsubscribing, the cause event checks, unknown threads, and an automatic subscription caused
/// by an event from before an unsubscription refused with 409.
#[tokio::test]
async fn threads_can_be_subscribed_to() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let room = create_room(&server, &alice, json!({})).await;
    let path = |root: &str| {
        format!("/_matrix/client/unstable/io.element.msc4306/rooms/{}/thread/{}/subscription", enc(&room), enc(root))
    };
    let reply = async |root: &str, body: &str| {
        let content =
            json!({"msgtype": "m.text", "body": body, "m.relates_to": {"rel_type": "m.thread", "event_id": root}});
        send_event(&server, &alice, &room, "m.room.message", content).await
    };
    let get = async |root: &str| server.get(&path(root), alice.token()).await;
    let put = async |root: &str, body: Value| server.put(&path(root), alice.token(), body).await;
    let delete = async |root: &str| server.call("DELETE", &path(root), alice.token(), None).await;

    // Manual subscription, then unsubscription.
    let root = send_text(&server, &alice, &room, "what do you think? reply in a thread!").await;
    assert_eq!(put(&root, json!({})).await, (200, json!({})));
    assert_eq!(get(&root).await, (200, json!({"automatic": false})));
    assert_eq!(delete(&root).await.0, 200);
    assert_error(&get(&root).await, 404, "M_NOT_FOUND");
    // The root is not a cause; a reply is; a reply of another thread is not.
    let root = send_text(&server, &alice, &room, "root").await;
    assert_error(&put(&root, json!({"automatic": root})).await, 400, "IO.ELEMENT.MSC4306.M_NOT_IN_THREAD");
    let other_root = send_text(&server, &alice, &room, "another root").await;
    let other_reply = reply(&other_root, "not in the same thread").await;
    assert_error(&put(&root, json!({"automatic": other_reply})).await, 400, "IO.ELEMENT.MSC4306.M_NOT_IN_THREAD");
    let first = reply(&root, "reply").await;
    assert_eq!(put(&root, json!({"automatic": first})).await.0, 200);
    assert_eq!(get(&root).await, (200, json!({"automatic": true})));
    // A manual subscription overwrites the automatic one (and is not turned back).
    assert_eq!(put(&root, json!({})).await.0, 200);
    assert_eq!(put(&root, json!({"automatic": first})).await.0, 200);
    assert_eq!(get(&root).await, (200, json!({"automatic": false})));
    // Unsubscribing with no subscription succeeds; unknown threads are 404.
    let lonely = send_text(&server, &alice, &room, "no subscription").await;
    assert_eq!(delete(&lonely).await.0, 200);
    assert_eq!(put("$notathread:example.org", json!({})).await.0, 404);
    assert_eq!(get("$notathread:example.org").await.0, 404);

    // Root, reply 1, auto-subscribe, reply 2, unsubscribe, reply 3: replies 1 and 2 can no
    // longer subscribe automatically, reply 3 can.
    let root = send_text(&server, &alice, &room, "Thread Root").await;
    let reply1 = reply(&root, "Thread Reply 1").await;
    assert_eq!(put(&root, json!({"automatic": reply1})).await.0, 200);
    let reply2 = reply(&root, "Thread Reply 2").await;
    assert_eq!(delete(&root).await.0, 200);
    let reply3 = reply(&root, "Thread Reply 3").await;
    for old in [&reply1, &reply2] {
        let conflict = put(&root, json!({"automatic": old})).await;
        assert_error(&conflict, 409, "IO.ELEMENT.MSC4306.M_CONFLICTING_UNSUBSCRIPTION");
        assert_eq!(get(&root).await.0, 404);
    }
    assert_eq!(put(&root, json!({"automatic": reply3})).await.0, 200);
    assert_eq!(get(&root).await, (200, json!({"automatic": true})));

    // Another user of the room cannot see alice's subscriptions; a stranger to the room gets 404.
    let bob = server.register("bob", "pw").await;
    assert_eq!(server.get(&path(&root), bob.token()).await.0, 404);
}
