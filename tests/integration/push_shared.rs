//! Notifications in a room shared by many: members with the server-default rules share one
//! stored outcome per event, the others (custom rules, mentioned) get their own. Over HTTP,
//! each member's counts and `/notifications` must still follow their own rules, their rule
//! changes (made after the server has read and cached their rules), their membership and their
//! receipts.

use serde_json::{Value, json};

use crate::{
    harness::{Session, TestServer, enc},
    room_helpers::{create_room, join, send_text},
};

/// A member's (notification, highlight) counts in `room`, from an initial `/sync`.
pub(crate) async fn counts(server: &TestServer, who: &Session, room: &str) -> (u64, u64) {
    let (status, body) = server.get("/_matrix/client/v3/sync", who.token()).await;
    assert_eq!(status, 200, "{body}");
    let unread = &body["rooms"]["join"][room]["unread_notifications"];
    (unread["notification_count"].as_u64().unwrap_or(0), unread["highlight_count"].as_u64().unwrap_or(0))
}

/// The event IDs of `who`'s `/notifications` (one page of 50), newest first, with highlights.
async fn listed(server: &TestServer, who: &Session) -> Vec<(String, bool)> {
    let (status, page) = server.get("/_matrix/client/v3/notifications?limit=50", who.token()).await;
    assert_eq!(status, 200, "{page}");
    page["notifications"]
        .as_array()
        .expect("notifications")
        .iter()
        .map(|n| {
            let highlight = n["actions"].as_array().is_some_and(|actions| {
                actions.iter().any(|a| a["set_tweak"] == "highlight" && a["value"] != json!(false))
            });
            (n["event"]["event_id"].as_str().expect("event_id").to_owned(), highlight)
        })
        .collect()
}

async fn send(server: &TestServer, who: &Session, room: &str, content: Value, txn: &str) -> String {
    let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}", enc(room));
    let (status, body) = server.put(&path, who.token(), content).await;
    assert_eq!(status, 200, "{body}");
    body["event_id"].as_str().expect("event_id").to_owned()
}

fn rule_path(kind: &str, rule_id: &str) -> String {
    format!("/_matrix/client/v3/pushrules/global/{kind}/{}", enc(rule_id))
}

#[tokio::test]
async fn members_who_share_the_rooms_outcome_still_follow_their_own_rules_and_membership() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    let mut members = Vec::new();
    for name in ["muter", "keyword", "mentioned", "leaver", "plain"] {
        let member = server.register(name, "pw").await;
        join(&server, &member, &room).await;
        members.push(member);
    }
    let [muter, keyword, mentioned, leaver, plain] = &members[..] else { unreachable!() };
    // Everyone's rules were read (and cached) while the joins were evaluated; now two members
    // change theirs, and one leaves.
    let (status, body) = server.put(&rule_path("room", &room), muter.token(), json!({"actions": []})).await;
    assert_eq!(status, 200, "{body}");
    let deploy = json!({"pattern": "deploy", "actions": ["notify", {"set_tweak": "highlight"}]});
    let (status, body) = server.put(&rule_path("content", "deploy"), keyword.token(), deploy).await;
    assert_eq!(status, 200, "{body}");
    let leave = format!("/_matrix/client/v3/rooms/{}/leave", enc(&room));
    assert_eq!(server.post(&leave, leaver.token(), json!({})).await.0, 200);

    let first = send_text(&server, &alice, &room, "good morning").await;
    let deploy_msg = send_text(&server, &alice, &room, "we deploy at noon").await;
    let mention = json!({"msgtype": "m.text", "body": "a question", "m.mentions": {"user_ids": [mentioned.user_id]}});
    let mention_msg = send(&server, &alice, &room, mention, "mention-1").await;

    // The leaver comes back and a newcomer arrives: neither counts what came before.
    join(&server, leaver, &room).await;
    let newcomer = server.register("newcomer", "pw").await;
    join(&server, &newcomer, &room).await;
    let last = send_text(&server, &alice, &room, "see you").await;

    assert_eq!(counts(&server, muter, &room).await, (0, 0), "a muted room counts nothing");
    assert_eq!(counts(&server, keyword, &room).await, (4, 1), "the keyword highlights");
    assert_eq!(counts(&server, mentioned, &room).await, (4, 1), "the mention highlights");
    assert_eq!(counts(&server, plain, &room).await, (4, 0));
    assert_eq!(counts(&server, leaver, &room).await, (1, 0), "only what came after the rejoin");
    assert_eq!(counts(&server, &newcomer, &room).await, (1, 0), "only what came after the join");
    assert_eq!(counts(&server, &alice, &room).await, (0, 0), "the sender's own messages");

    let all = |ids: &[&String]| ids.iter().map(|id| ((*id).clone(), false)).collect::<Vec<_>>();
    assert_eq!(listed(&server, plain).await, all(&[&last, &mention_msg, &deploy_msg, &first]));
    assert!(listed(&server, muter).await.is_empty());
    assert_eq!(
        listed(&server, keyword).await,
        vec![(last.clone(), false), (mention_msg.clone(), false), (deploy_msg.clone(), true), (first.clone(), false)]
    );
    assert_eq!(listed(&server, mentioned).await[1], (mention_msg.clone(), true));
    assert_eq!(listed(&server, leaver).await, all(&[&last]));
    assert!(listed(&server, &alice).await.is_empty());

    // A receipt reads up to its event, whether the events were shared or the member's own.
    let path = format!("/_matrix/client/v3/rooms/{}/receipt/m.read/{}", enc(&room), enc(&mention_msg));
    assert_eq!(server.post(&path, plain.token(), json!({})).await.0, 200);
    assert_eq!(server.post(&path, keyword.token(), json!({})).await.0, 200);
    assert_eq!(counts(&server, plain, &room).await, (1, 0));
    assert_eq!(counts(&server, keyword, &room).await, (1, 0));

    // The muter unmutes (their rules are the defaults again) and shares the room's outcome.
    assert_eq!(server.call("DELETE", &rule_path("room", &room), muter.token(), None).await.0, 200);
    let after = send_text(&server, &alice, &room, "welcome back").await;
    assert_eq!(counts(&server, muter, &room).await, (1, 0));
    assert_eq!(listed(&server, muter).await, all(&[&after]));
}

/// Text that names the generic recipient the server evaluates shared outcomes for must not
/// notify or highlight anyone it would not otherwise.
#[tokio::test]
async fn naming_the_generic_recipient_changes_nothing() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;
    let content = json!({"msgtype": "m.text", "body": "TRELLIS.GENERIC.RECIPIENT",
        "m.mentions": {"user_ids": ["@trellis.generic.recipient:trellis.invalid"]}});
    send(&server, &alice, &room, content, "generic-1").await;
    assert_eq!(counts(&server, &bob, &room).await, (1, 0));
}
