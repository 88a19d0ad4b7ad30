//! Profiles across servers: a user of `hs-b` seen from `hs-a` (asked once, then cached; asked
//! again once a member event of that user arrives), and `query/profile` as another server calls
//! it (Complement's `TestInboundFederationProfile`, `TestOutboundFederationProfile`).

use std::time::Duration;

use serde_json::json;

use crate::{
    federation::{Pair, start_pair},
    federation_join::{fake_call, join_via},
    harness::{assert_error, enc},
    room_helpers::create_room,
};

#[tokio::test]
async fn remote_profiles_are_cached_and_refreshed_by_member_events() {
    let Pair { a, b, _dirs, .. } = start_pair().await;
    let alice = b.register("alice", "pw").await;
    let bob = a.register("bob", "pw").await;
    let set_name = |name: &'static str| {
        let (b, token) = (&b, alice.access_token.clone());
        async move {
            let set = b
                .put("/_matrix/client/v3/profile/@alice:hs-b/displayname", Some(&token), json!({"displayname": name}))
                .await;
            assert_eq!(set.0, 200, "{}", set.1);
        }
    };
    set_name("Alice B").await;
    let displayname = format!("/_matrix/client/v3/profile/{}/displayname", enc("@alice:hs-b"));
    // Without an access token too, as Complement asks.
    assert_eq!(a.get(&displayname, None).await, (200, json!({"displayname": "Alice B"})));

    // A change hs-a hears nothing about: the cached profile is still served.
    set_name("Alice 2").await;
    assert_eq!(a.get(&displayname, bob.token()).await, (200, json!({"displayname": "Alice B"})));

    // Once they share a room, the member event of the change makes hs-a ask again.
    let room = create_room(&b, &alice, json!({"preset": "public_chat"})).await;
    let joined = join_via(&a, &bob, &room, &["hs-b"]).await;
    assert_eq!(joined.0, 200, "{}", joined.1);
    set_name("Alice 3").await;
    let mut seen = Default::default();
    for _ in 0..100 {
        seen = a.get(&displayname, bob.token()).await;
        if seen.1["displayname"] == "Alice 3" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen, (200, json!({"displayname": "Alice 3"})));

    // With hs-b gone the cached profile still answers; users never seen do not.
    b.stop();
    let profile = a.get(&format!("/_matrix/client/v3/profile/{}", enc("@alice:hs-b")), bob.token()).await;
    assert_eq!(profile, (200, json!({"displayname": "Alice 3"})));
    let unknown = a.get(&format!("/_matrix/client/v3/profile/{}", enc("@carol:hs-b")), bob.token()).await;
    assert_error(&unknown, 502, "M_UNKNOWN");
}

#[tokio::test]
async fn query_profile_answers_one_field_and_refuses_bad_user_ids() {
    let pair = start_pair().await;
    let a = &pair.a;
    let alice = a.register("alice", "pw").await;
    a.put("/_matrix/client/v3/profile/@alice:hs-a/displayname", alice.token(), json!({"displayname": "Alice Cooper"}))
        .await;
    a.put("/_matrix/client/v3/profile/@alice:hs-a/avatar_url", alice.token(), json!({"avatar_url": "mxc://hs-a/x"}))
        .await;
    let query = |query: &str| format!("/_matrix/federation/v1/query/profile?{query}");
    let one = fake_call(&pair, a, "GET", &query("user_id=@alice:hs-a&field=displayname"), None).await;
    assert_eq!(one, (200, json!({"displayname": "Alice Cooper"})));
    let all = fake_call(&pair, a, "GET", &query("user_id=@alice:hs-a"), None).await;
    assert_eq!(all, (200, json!({"displayname": "Alice Cooper", "avatar_url": "mxc://hs-a/x"})));
    // Non-numeric ports in server names are refused.
    let bad = fake_call(&pair, a, "GET", &query("user_id=@user1:localhost:http&field=displayname"), None).await;
    assert_eq!(bad.0, 400, "{}", bad.1);
    assert!(bad.1["errcode"].is_string(), "{}", bad.1);
    for (uri, status, errcode) in [
        (query("user_id=@nobody:hs-a"), 404, "M_NOT_FOUND"),
        (query("user_id=@alice:hs-b"), 404, "M_NOT_FOUND"),
        (query("user_id=@alice:hs-a&field=m.tz"), 404, "M_NOT_FOUND"),
        (query("field=displayname"), 400, "M_INVALID_PARAM"),
    ] {
        assert_error(&fake_call(&pair, a, "GET", &uri, None).await, status, errcode);
    }
}
