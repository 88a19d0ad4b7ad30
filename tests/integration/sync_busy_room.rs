//! Many long-polls in one busy room at once (#19: woken syncs read their rooms in place, on one
//! thread, see `storage/in_place.rs`): senders write concurrently while every member follows
//! the room through `/sync` long-polls; some followers drop their poll mid-wait (a client going
//! away) and poll again from the same token, and one follower falls far behind (its token more
//! events behind than a sync reads in place) and catches up. Each follower sees every message
//! exactly once, in the order of the room's timeline.

use std::{collections::HashSet, sync::Arc, time::Duration};

use serde_json::{Value, json};

use crate::{
    harness::{Session, TestServer, enc},
    room_helpers::{create_room, join, send_text},
};

const FOLLOWERS: usize = 10;
const SENDERS: usize = 4;
const MESSAGES_EACH: usize = 20;
/// A timeline window large enough for the laggard's catch-up.
const FILTER: &str = r#"{"room":{"timeline":{"limit":200}}}"#;

/// One long-poll from `since`; `None` when it was dropped mid-wait on purpose.
async fn poll_once(server: &TestServer, who: &Session, since: &str, drop_after: Option<Duration>) -> Option<Value> {
    let request = server
        .http
        .get(server.url(&format!("/_matrix/client/v3/sync?since={}&timeout=30000&filter={}", enc(since), enc(FILTER))))
        .bearer_auth(&who.access_token)
        .send();
    let response = match drop_after {
        Some(after) => match tokio::time::timeout(after, request).await {
            Ok(response) => response,
            // The request future is dropped: the client went away.
            Err(_) => return None,
        },
        None => request.await,
    };
    let response = response.expect("sync sent");
    assert_eq!(response.status(), 200);
    Some(response.json().await.expect("sync body"))
}

/// Follows `room` from `since` until `expected` message bodies were seen; every other poll of
/// a dropping follower is abandoned after a few milliseconds and sent again from the same token.
async fn follow(
    server: Arc<TestServer>,
    who: Session,
    room: String,
    mut since: String,
    expected: usize,
    drops: bool,
) -> Vec<String> {
    let mut bodies = Vec::new();
    let mut polls = 0u32;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while bodies.len() < expected {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {expected} messages seen by {}",
            bodies.len(),
            who.user_id
        );
        polls += 1;
        let drop_after = (drops && polls.is_multiple_of(2)).then(|| Duration::from_millis(3));
        let Some(body) = poll_once(&server, &who, &since, drop_after).await else { continue };
        since = body["next_batch"].as_str().expect("next_batch").to_owned();
        let timeline = &body["rooms"]["join"][&room]["timeline"];
        // A limited timeline would hide messages from a follower: none may be.
        assert_ne!(timeline["limited"], true, "{body}");
        for event in timeline["events"].as_array().into_iter().flatten() {
            if event["type"] == "m.room.message" {
                bodies.push(event["content"]["body"].as_str().expect("body").to_owned());
            }
        }
    }
    bodies
}

#[tokio::test]
async fn followers_of_a_busy_room_see_every_message_once_in_order() {
    let server = Arc::new(TestServer::start().await);
    let owner = server.register("busyowner", "password-busy").await;
    let room = create_room(&server, &owner, json!({"preset": "public_chat"})).await;
    let mut senders = Vec::new();
    for i in 0..SENDERS {
        let sender = server.register(&format!("busysender{i}"), "password-busy").await;
        join(&server, &sender, &room).await;
        senders.push(sender);
    }
    let mut followers = Vec::new();
    for i in 0..=FOLLOWERS {
        let follower = server.register(&format!("busyfollower{i}"), "password-busy").await;
        join(&server, &follower, &room).await;
        let path = format!("/_matrix/client/v3/sync?timeout=0&filter={}", enc(FILTER));
        let (status, body) = server.get(&path, follower.token()).await;
        assert_eq!(status, 200, "{body}");
        followers.push((follower, body["next_batch"].as_str().expect("next_batch").to_owned()));
    }
    let total = SENDERS * MESSAGES_EACH;
    // The last follower does not poll while the messages are sent: its token ends up `total`
    // events behind, more than a sync reads in place.
    let (laggard, laggard_since) = followers.pop().expect("a laggard");
    let mut follows = Vec::new();
    for (i, (follower, since)) in followers.into_iter().enumerate() {
        let task = follow(server.clone(), follower, room.clone(), since, total, i.is_multiple_of(3));
        follows.push(tokio::spawn(task));
    }
    let mut sends = Vec::new();
    for (i, sender) in senders.into_iter().enumerate() {
        let (server, room) = (server.clone(), room.clone());
        sends.push(tokio::spawn(async move {
            for n in 0..MESSAGES_EACH {
                send_text(&server, &sender, &room, &format!("m{i}-{n}")).await;
            }
        }));
    }
    for send in sends {
        send.await.expect("sender");
    }

    // The room's own order, from `/messages`.
    let path = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=500", enc(&room));
    let (status, page) = server.get(&path, owner.token()).await;
    assert_eq!(status, 200, "{page}");
    let mut order: Vec<String> = page["chunk"]
        .as_array()
        .expect("chunk")
        .iter()
        .filter(|event| event["type"] == "m.room.message")
        .map(|event| event["content"]["body"].as_str().expect("body").to_owned())
        .collect();
    order.reverse();
    assert_eq!(order.len(), total);
    assert_eq!(order.iter().collect::<HashSet<_>>().len(), total, "message bodies are unique");

    for follow in follows {
        let seen =
            tokio::time::timeout(Duration::from_secs(90), follow).await.expect("follower done").expect("follower");
        assert_eq!(seen, order, "every message once, in timeline order");
    }
    let seen = follow(server.clone(), laggard, room.clone(), laggard_since, total, false).await;
    assert_eq!(seen, order, "the laggard catches up with every message once");
}
