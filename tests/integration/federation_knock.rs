//! Knocking across servers: a user of `hs-b` knocks on a room of `hs-a` (room versions 7 with
//! `knock`, 10 with `knock_restricted`), is refused and knocks again, is let in by an invite
//! and joins, and can no longer knock once in or banned (Complement's `TestKnocking`,
//! `TestKnockingInMSC3787Room`); `send_knock` takes only knocks and both endpoints refuse
//! unsigned and bad requests (`TestCannotSendNonKnockViaSendKnock`,
//! `TestCannotSendKnockViaSendKnockInMSC3787Room`).

use std::time::Duration;

use ruma::{CanonicalJsonObject, CanonicalJsonValue};
use serde_json::{Value, json};

use crate::{
    federation::{federation_call, start_pair},
    federation_join::{fake_call, fake_membership, join_via},
    harness::{Session, TestServer, assert_error, enc},
    room_helpers::{create_room, put_state},
    sync::sync,
};

/// Polls `/sync` until `found` holds (ten seconds at most); returns the last answer.
async fn sync_until(server: &TestServer, who: &Session, found: impl Fn(&Value) -> bool) -> Value {
    let mut body = Value::Null;
    for _ in 0..100 {
        body = sync(server, who, "timeout=0").await;
        if found(&body) {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("sync never showed what was expected: {body}");
}

async fn knock(server: &TestServer, who: &Session, room: &str, reason: Option<&str>) -> (u16, Value) {
    let body = reason.map_or_else(|| json!({}), |reason| json!({"reason": reason}));
    server.post(&format!("/_matrix/client/v3/knock/{}?server_name=hs-a", enc(room)), who.token(), body).await
}

async fn membership_on_a(a: &TestServer, alice: &Session, room: &str, user: &str) -> Value {
    let path = format!("/_matrix/client/v3/rooms/{}/state/m.room.member/{}", enc(room), enc(user));
    a.get(&path, alice.token()).await.1
}

#[tokio::test]
async fn users_knock_on_rooms_of_another_server_and_are_refused_or_let_in() {
    let pair = start_pair().await;
    let (a, b) = (&pair.a, &pair.b);
    let alice = a.register("alice", "pw").await;
    let charlie = b.register("charlie", "pw").await;
    for (version, rule) in [("7", "knock"), ("10", "knock_restricted")] {
        let room = create_room(a, &alice, json!({"preset": "private_chat", "room_version": version})).await;
        // Not a knocking room yet.
        assert_error(&knock(b, &charlie, &room, Some("Can I knock anyways?")).await, 403, "M_FORBIDDEN");
        put_state(a, &alice, &room, "m.room.join_rules", json!({"join_rule": rule})).await;
        let refused = join_via(b, &charlie, &room, &["hs-a"]).await;
        assert_eq!(refused.0, 403, "v{version}: {}", refused.1);

        let knocked = knock(b, &charlie, &room, Some("Let me in... LET ME IN!!!")).await;
        assert_eq!(knocked, (200, json!({"room_id": room})), "v{version}");
        let member = membership_on_a(a, &alice, &room, "@charlie:hs-b").await;
        assert_eq!(member["membership"], "knock", "{member}");
        assert_eq!(member["reason"], "Let me in... LET ME IN!!!");
        // The knocker's /sync lists the room under `knock`, with the room's stripped state.
        let body = sync_until(b, &charlie, |body| body["rooms"]["knock"][&room].is_object()).await;
        let events = body["rooms"]["knock"][&room]["knock_state"]["events"].as_array().unwrap().clone();
        assert!(events.iter().any(|e| e["type"] == "m.room.join_rules" && e["content"]["join_rule"] == rule), "{body}");
        assert!(
            events.iter().any(|e| e["state_key"] == "@charlie:hs-b" && e["content"]["membership"] == "knock"),
            "{body}"
        );
        // Knocking again is allowed.
        assert_eq!(knock(b, &charlie, &room, Some("I really like knock knock jokes")).await.0, 200);

        // Refused (a kick), then knocking again, without a reason.
        let kick = format!("/_matrix/client/v3/rooms/{}/kick", enc(&room));
        assert_eq!(a.post(&kick, alice.token(), json!({"user_id": "@charlie:hs-b"})).await.0, 200);
        assert_eq!(membership_on_a(a, &alice, &room, "@charlie:hs-b").await["membership"], "leave");
        assert_eq!(knock(b, &charlie, &room, None).await.0, 200);
        assert_eq!(membership_on_a(a, &alice, &room, "@charlie:hs-b").await["membership"], "knock");

        // Let in: the invite reaches the knocker, who may no longer knock, and joins.
        let invite = format!("/_matrix/client/v3/rooms/{}/invite", enc(&room));
        assert_eq!(a.post(&invite, alice.token(), json!({"user_id": "@charlie:hs-b"})).await.0, 200);
        sync_until(b, &charlie, |body| body["rooms"]["invite"][&room].is_object()).await;
        assert_error(&knock(b, &charlie, &room, Some("again?")).await, 403, "M_FORBIDDEN");
        let joined = join_via(b, &charlie, &room, &["hs-a"]).await;
        assert_eq!(joined.0, 200, "{}", joined.1);
        assert_eq!(knock(b, &charlie, &room, Some("in already")).await.0, 403);

        // Banned users cannot knock.
        let ban = format!("/_matrix/client/v3/rooms/{}/ban", enc(&room));
        assert_eq!(a.post(&ban, alice.token(), json!({"user_id": "@charlie:hs-b"})).await.0, 200);
        assert_eq!(membership_on_a(a, &alice, &room, "@charlie:hs-b").await["membership"], "ban");
        assert_error(&knock(b, &charlie, &room, Some("I didn't mean it!")).await, 403, "M_FORBIDDEN");
    }
}

fn set_membership(event: &mut CanonicalJsonObject, membership: &str) {
    if let Some(CanonicalJsonValue::Object(content)) = event.get_mut("content") {
        content.insert("membership".into(), CanonicalJsonValue::String(membership.into()));
    }
}

#[tokio::test]
async fn send_knock_takes_only_knocks_and_both_endpoints_refuse_bad_requests() {
    let pair = start_pair().await;
    let a = &pair.a;
    let alice = a.register("alice", "pw").await;
    for version in ["7", "10"] {
        let room = create_room(a, &alice, json!({"preset": "public_chat", "room_version": version})).await;
        let send_knock = |event_id: &str| format!("/_matrix/federation/v1/send_knock/{}/{}", enc(&room), enc(event_id));
        for membership in ["join", "leave", "invite", "ban"] {
            let (id, event) = fake_membership(&pair, &room, "@charlie:hs-t", |e| set_membership(e, membership)).await;
            let answer = fake_call(&pair, a, "PUT", &send_knock(&id), Some(&event)).await;
            assert_eq!(answer.0, 400, "v{version} {membership}: {}", answer.1);
        }
        let (id, event) = fake_membership(&pair, &room, "@charlie:hs-t", |e| {
            e.insert("type".into(), CanonicalJsonValue::String("m.room.message".into()));
            e.remove("state_key");
        })
        .await;
        assert_eq!(fake_call(&pair, a, "PUT", &send_knock(&id), Some(&event)).await.0, 400, "v{version}");
        // A knock on a public room is not allowed by the auth rules.
        let (id, event) = fake_membership(&pair, &room, "@charlie:hs-t", |e| set_membership(e, "knock")).await;
        assert_error(&fake_call(&pair, a, "PUT", &send_knock(&id), Some(&event)).await, 403, "M_FORBIDDEN");
        // Not JSON, unsigned.
        let client = pair.pki.client();
        let unsigned = federation_call(&client, a, "PUT", &send_knock(&id), None, Some(&event)).await;
        assert_error(&unsigned, 401, "M_UNAUTHORIZED");
        assert_eq!(fake_call(&pair, a, "PUT", &send_knock(&id), Some(&json!([1, 2]))).await.0, 400);
    }

    // make_knock: a template for a knocking room, refusals otherwise.
    let room = create_room(a, &alice, json!({"preset": "private_chat", "room_version": "7"})).await;
    let make_knock = |room: &str, user: &str, ver: &str| {
        format!("/_matrix/federation/v1/make_knock/{}/{}?{ver}", enc(room), enc(user))
    };
    assert_error(&fake_call(&pair, a, "GET", &make_knock(&room, "@dan:hs-t", "ver=7"), None).await, 403, "M_FORBIDDEN");
    put_state(a, &alice, &room, "m.room.join_rules", json!({"join_rule": "knock"})).await;
    let template = fake_call(&pair, a, "GET", &make_knock(&room, "@dan:hs-t", "ver=7&ver=10"), None).await;
    assert_eq!(template.0, 200, "{}", template.1);
    assert_eq!(template.1["room_version"], "7");
    assert_eq!(template.1["event"]["content"]["membership"], "knock");
    assert_eq!(template.1["event"]["state_key"], "@dan:hs-t");
    let old = fake_call(&pair, a, "GET", &make_knock(&room, "@dan:hs-t", "ver=6"), None).await;
    assert_error(&old, 400, "M_INCOMPATIBLE_ROOM_VERSION");
    let other = fake_call(&pair, a, "GET", &make_knock(&room, "@dan:hs-b", "ver=7"), None).await;
    assert_error(&other, 403, "M_FORBIDDEN");
    let unknown = fake_call(&pair, a, "GET", &make_knock("!nowhere:hs-a", "@dan:hs-t", "ver=7"), None).await;
    assert_error(&unknown, 404, "M_NOT_FOUND");
    let v6 = create_room(a, &alice, json!({"preset": "public_chat", "room_version": "6"})).await;
    assert_error(&fake_call(&pair, a, "GET", &make_knock(&v6, "@dan:hs-t", "ver=6"), None).await, 403, "M_FORBIDDEN");
    let unsigned =
        federation_call(&pair.pki.client(), a, "GET", &make_knock(&room, "@dan:hs-t", "ver=7"), None, None).await;
    assert_error(&unsigned, 401, "M_UNAUTHORIZED");
    let bad = fake_call(&pair, a, "GET", &make_knock("notaroom", "@dan:hs-t", "ver=7"), None).await;
    assert_eq!(bad.0, 400, "{}", bad.1);
}
