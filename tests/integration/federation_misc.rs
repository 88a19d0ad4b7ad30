//! The smaller server-server endpoints: `/timestamp_to_event` over federation (served, and
//! used when this server has no event in that direction), OpenID tokens and
//! `/openid/userinfo`, and third-party invites refused with Matrix errors.

use serde_json::json;

use crate::{
    federation::{federation_call, start_pair},
    federation_join::{fake_call, join_via},
    harness::{assert_error, enc},
    room_helpers::{create_room, send_text},
};

#[tokio::test]
async fn timestamp_to_event_is_served_and_asked_of_the_rooms_other_servers() {
    let pair = start_pair().await;
    let (a, b) = (&pair.a, &pair.b);
    let alice = a.register("alice", "pw").await;
    let bob = b.register("bob", "pw").await;
    let room = create_room(a, &alice, json!({"preset": "public_chat"})).await;
    let early = send_text(a, &alice, &room, "early").await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let before_join = u64::from(ruma::MilliSecondsSinceUnixEpoch::now().get());
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let joined = join_via(b, &bob, &room, &["hs-a"]).await;
    assert_eq!(joined.0, 200, "{}", joined.1);

    // hs-b has no event from before bob's join (it has not backfilled): hs-a is asked.
    let path = format!("/_matrix/client/v1/rooms/{}/timestamp_to_event?ts={before_join}&dir=b", enc(&room));
    let found = b.get(&path, bob.token()).await;
    assert_eq!(found, (200, json!({"event_id": early, "origin_server_ts": found.1["origin_server_ts"]})));
    let before = format!("/_matrix/client/v1/rooms/{}/timestamp_to_event?ts=1&dir=b", enc(&room));
    assert_error(&b.get(&before, bob.token()).await, 404, "M_NOT_FOUND");

    // Served to other servers, as the room's visibility for servers allows (shared history).
    let now = u64::from(ruma::MilliSecondsSinceUnixEpoch::now().get());
    let uri = |room: &str, query: &str| format!("/_matrix/federation/v1/timestamp_to_event/{}?{query}", enc(room));
    let latest = fake_call(&pair, a, "GET", &uri(&room, &format!("ts={now}&dir=b")), None).await;
    assert_eq!(latest.0, 200, "{}", latest.1);
    assert!(latest.1["origin_server_ts"].as_u64().unwrap() <= now);
    let early_again = fake_call(&pair, a, "GET", &uri(&room, &format!("ts={before_join}&dir=b")), None).await;
    assert_eq!(early_again.1["event_id"], early.as_str(), "{}", early_again.1);
    assert_error(&fake_call(&pair, a, "GET", &uri("!nowhere:hs-a", "ts=1&dir=f"), None).await, 404, "M_NOT_FOUND");
    assert_eq!(fake_call(&pair, a, "GET", &uri(&room, "ts=x&dir=f"), None).await.0, 400);
    assert_eq!(fake_call(&pair, a, "GET", &uri(&room, "ts=1&dir=sideways"), None).await.0, 400);
    let unsigned = federation_call(&pair.pki.client(), a, "GET", &uri(&room, "ts=1&dir=f"), None, None).await;
    assert_error(&unsigned, 401, "M_UNAUTHORIZED");
}

#[tokio::test]
async fn openid_tokens_tell_third_parties_who_the_user_is() {
    let pair = start_pair().await;
    let a = &pair.a;
    let alice = a.register("alice", "pw").await;
    let token = a.post("/_matrix/client/v3/user/@alice:hs-a/openid/request_token", alice.token(), json!({})).await;
    assert_eq!(token.0, 200, "{}", token.1);
    assert_eq!(token.1["token_type"], "Bearer");
    assert_eq!(token.1["matrix_server_name"], "hs-a");
    assert_eq!(token.1["expires_in"], 3600);
    let access = token.1["access_token"].as_str().unwrap();
    assert_error(
        &a.post("/_matrix/client/v3/user/@bob:hs-a/openid/request_token", alice.token(), json!({})).await,
        403,
        "M_FORBIDDEN",
    );
    assert_eq!(a.post("/_matrix/client/v3/user/@alice:hs-a/openid/request_token", None, json!({})).await.0, 401);

    // The third party asks, without a server signature.
    let client = pair.pki.client();
    let info = federation_call(
        &client,
        a,
        "GET",
        &format!("/_matrix/federation/v1/openid/userinfo?access_token={access}"),
        None,
        None,
    )
    .await;
    assert_eq!(info, (200, json!({"sub": "@alice:hs-a"})));
    let unknown =
        federation_call(&client, a, "GET", "/_matrix/federation/v1/openid/userinfo?access_token=nope", None, None)
            .await;
    assert_error(&unknown, 401, "M_UNKNOWN_TOKEN");
    let missing = federation_call(&client, a, "GET", "/_matrix/federation/v1/openid/userinfo", None, None).await;
    assert_eq!(missing.0, 400, "{}", missing.1);
}

#[tokio::test]
async fn third_party_invites_are_refused_with_matrix_errors() {
    let pair = start_pair().await;
    let a = &pair.a;
    let alice = a.register("alice", "pw").await;
    let room = create_room(a, &alice, json!({"preset": "public_chat"})).await;
    let exchange = format!("/_matrix/federation/v1/exchange_third_party_invite/{}", enc(&room));
    let body = json!({
        "type": "m.room.member", "room_id": room, "sender": "@charlie:hs-t", "state_key": "@dan:hs-a",
        "content": {"membership": "invite", "third_party_invite": {"display_name": "d...@example.org", "signed": {
            "mxid": "@dan:hs-a", "token": "abc", "signatures": {}}}},
    });
    assert_error(&fake_call(&pair, a, "PUT", &exchange, Some(&body)).await, 403, "M_FORBIDDEN");
    let client = pair.pki.client();
    assert_error(&federation_call(&client, a, "PUT", &exchange, None, Some(&body)).await, 401, "M_UNAUTHORIZED");
    assert_eq!(fake_call(&pair, a, "PUT", &exchange, Some(&json!({"type": 5}))).await.0, 400);
    let onbind = json!({"medium": "email", "address": "d@example.org", "mxid": "@dan:hs-a", "invites": []});
    let bound = federation_call(&client, a, "PUT", "/_matrix/federation/v1/3pid/onbind", None, Some(&onbind)).await;
    assert_error(&bound, 403, "M_FORBIDDEN");
    let bad = federation_call(&client, a, "PUT", "/_matrix/federation/v1/3pid/onbind", None, Some(&json!([]))).await;
    assert_eq!(bad.0, 400, "{}", bad.1);
}
