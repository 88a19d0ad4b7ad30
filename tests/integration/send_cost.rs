//! What the cheaper send path keeps: the room's push facts and the members whose profiles
//! single them out are updated per join instead of read again, so a member with their own
//! rules who joins (or leaves and comes back) after the room's facts were cached must still
//! be judged by their own rules.

use serde_json::json;

use crate::{
    harness::{TestServer, enc},
    push_shared::counts,
    room_helpers::{create_room, join, send_text},
};

#[tokio::test]
async fn members_with_own_rules_who_join_later_follow_their_rules() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    let plain = server.register("plain", "pw").await;
    join(&server, &plain, &room).await;
    // The room's push facts and special members are read and cached here.
    send_text(&server, &alice, &room, "before anyone else").await;

    // Rules changed before joining: everything muted, and a keyword that highlights.
    let muted = server.register("muted", "pw").await;
    let master = "/_matrix/client/v3/pushrules/global/override/.m.rule.master/enabled";
    let (status, body) = server.put(master, muted.token(), json!({"enabled": true})).await;
    assert_eq!(status, 200, "{body}");
    let keen = server.register("keen", "pw").await;
    let rule = format!("/_matrix/client/v3/pushrules/global/content/{}", enc("deploy"));
    let deploy = json!({"pattern": "deploy", "actions": ["notify", {"set_tweak": "highlight"}]});
    let (status, body) = server.put(&rule, keen.token(), deploy).await;
    assert_eq!(status, 200, "{body}");
    join(&server, &muted, &room).await;
    join(&server, &keen, &room).await;

    send_text(&server, &alice, &room, "we deploy at noon").await;
    assert_eq!(counts(&server, &plain, &room).await, (2, 0));
    assert_eq!(counts(&server, &muted, &room).await, (0, 0), "muted follows their master rule");
    assert_eq!(counts(&server, &keen, &room).await, (1, 1), "keen's keyword highlights");

    // Leaving and coming back (each a change the cached facts are updated by).
    let leave = format!("/_matrix/client/v3/rooms/{}/leave", enc(&room));
    assert_eq!(server.post(&leave, muted.token(), json!({})).await.0, 200);
    send_text(&server, &alice, &room, "while muted is away").await;
    join(&server, &muted, &room).await;
    send_text(&server, &alice, &room, "deploy again").await;
    assert_eq!(counts(&server, &muted, &room).await, (0, 0), "still muted after rejoining");
    assert_eq!(counts(&server, &keen, &room).await, (3, 2));
    assert_eq!(counts(&server, &plain, &room).await, (4, 0));
}
