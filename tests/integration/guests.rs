//! Guest accounts: they join only rooms whose `m.room.guest_access` is `can_join`, and of the
//! profile they may change only their display name and avatar; the allow list of endpoints
//! looks at the HTTP method as well as the path.

use serde_json::json;

use crate::{
    harness::{Session, TestServer, assert_error, enc},
    room_helpers::{create_room, put_state},
};

async fn register_guest(server: &TestServer) -> Session {
    let (status, body) = server.post("/_matrix/client/v3/register?kind=guest", None, json!({})).await;
    assert_eq!(status, 200, "{body}");
    Session::from_response(&body)
}

#[tokio::test]
async fn guests_join_only_rooms_with_guest_access_can_join() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let guest = register_guest(&server).await;
    // A public room: anyone may join, but its guest access is `forbidden` (the preset's).
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    let join_path = format!("/_matrix/client/v3/rooms/{}/join", enc(&room));
    assert_error(&server.post(&join_path, guest.token(), json!({})).await, 403, "M_FORBIDDEN");
    assert_error(
        &server.post(&format!("/_matrix/client/v3/join/{}", enc(&room)), guest.token(), json!({})).await,
        403,
        "M_FORBIDDEN",
    );
    // Nor through a member event sent as state.
    let member_path = format!("/_matrix/client/v3/rooms/{}/state/m.room.member/{}", enc(&room), enc(&guest.user_id));
    assert_error(&server.put(&member_path, guest.token(), json!({"membership": "join"})).await, 403, "M_FORBIDDEN");
    // No guest access event at all is no better.
    let bare = create_room(
        &server,
        &alice,
        json!({"preset": "public_chat", "initial_state": [{"type": "m.room.guest_access", "state_key": "", "content": {}}]}),
    )
    .await;
    let bare_join = format!("/_matrix/client/v3/rooms/{}/join", enc(&bare));
    assert_error(&server.post(&bare_join, guest.token(), json!({})).await, 403, "M_FORBIDDEN");
    // Registered users are not affected.
    let bob = server.register("bob", "pw").await;
    assert_eq!(server.post(&join_path, bob.token(), json!({})).await.0, 200);

    put_state(&server, &alice, &room, "m.room.guest_access", json!({"guest_access": "can_join"})).await;
    let joined = server.post(&join_path, guest.token(), json!({})).await;
    assert_eq!(joined.0, 200, "{}", joined.1);
    let members = server.get(&format!("/_matrix/client/v3/rooms/{}/joined_members", enc(&room)), bob.token()).await;
    assert!(members.1["joined"].get(&guest.user_id).is_some(), "{}", members.1);
}

#[tokio::test]
async fn guests_change_only_their_display_name_and_avatar() {
    let server = TestServer::start().await;
    let guest = register_guest(&server).await;
    let profile = |field: &str| format!("/_matrix/client/v3/profile/{}/{field}", enc(&guest.user_id));
    assert_eq!(server.put(&profile("displayname"), guest.token(), json!({"displayname": "Visitor"})).await.0, 200);
    assert_eq!(server.get(&profile("displayname"), guest.token()).await.1["displayname"], "Visitor");
    let avatar = json!({"avatar_url": "mxc://localhost/abc"});
    assert_eq!(server.put(&profile("avatar_url"), guest.token(), avatar).await.0, 200);
    assert_eq!(server.call("DELETE", &profile("displayname"), guest.token(), None).await.0, 200);
    // Other profile fields: refused for guests, whatever the method.
    let custom =
        server.put(&profile("org.example.pronouns"), guest.token(), json!({"org.example.pronouns": "x"})).await;
    assert_error(&custom, 403, "M_GUEST_ACCESS_FORBIDDEN");
    let delete = server.call("DELETE", &profile("org.example.pronouns"), guest.token(), None).await;
    assert_error(&delete, 403, "M_GUEST_ACCESS_FORBIDDEN");
    // Reading is fine.
    assert_eq!(server.get(&format!("/_matrix/client/v3/profile/{}", enc(&guest.user_id)), guest.token()).await.0, 200);
    // An allowed path with another method is refused: devices may be listed, not deleted.
    assert_eq!(server.get("/_matrix/client/v3/devices", guest.token()).await.0, 200);
    let device = format!("/_matrix/client/v3/devices/{}", enc(&guest.device_id));
    assert_error(
        &server.call("DELETE", &device, guest.token(), Some(json!({}))).await,
        403,
        "M_GUEST_ACCESS_FORBIDDEN",
    );
    // A registered user may set any field.
    let alice = server.register("alice", "pw").await;
    let path = format!("/_matrix/client/v3/profile/{}/org.example.pronouns", enc(&alice.user_id));
    assert_eq!(server.put(&path, alice.token(), json!({"org.example.pronouns": "she/her"})).await.0, 200);
}
