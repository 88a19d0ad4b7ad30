//! Long-polls woken by what concerns them (#19, fan-out): fifty users long-poll `/sync` at once,
//! in pairs sharing a room and alone in rooms of their own; each kind of change (message,
//! typing, receipt, account data, to-device, invite, a room-mate's device list, presence) wakes
//! the syncs it concerns and no other. The server's `trellis_syncs_woken_total` counter proves the
//! "no other": after each change it moved by exactly the number of syncs that change concerns,
//! and the other long-polls are still waiting. Polls dropped mid-wait leave no registration
//! (`trellis_syncs_waiting`). Sliding sync is woken the same way.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::{
    harness::{Session, TestServer, enc},
    room_helpers::{create_room, join, send_text},
};

const PAIRS: usize = 20;
const LONE: usize = 10;

async fn metric(server: &TestServer, name: &str) -> f64 {
    let url = server.metrics_url.as_deref().expect("metrics listener");
    let text = server.http.get(url).send().await.expect("scrape").text().await.expect("body");
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find(|line| line.split(['{', ' ']).next() == Some(name))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0.0)
}

/// Waits until `trellis_syncs_waiting` is `expected` (the polls reached their wait).
async fn until_waiting(server: &TestServer, expected: f64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let waiting = metric(server, "trellis_syncs_waiting").await;
        if waiting == expected {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{waiting} syncs waiting, expected {expected}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn initial_sync(server: &TestServer, who: &Session) -> String {
    let (status, body) = server.get("/_matrix/client/v3/sync?timeout=0", who.token()).await;
    assert_eq!(status, 200, "{body}");
    body["next_batch"].as_str().expect("next_batch").to_owned()
}

/// Starts a long-poll of `who` from `since` (60 s timeout) in its own task.
fn poll(server: &TestServer, who: &Session, since: &str) -> JoinHandle<(Value, Duration)> {
    let request = server
        .http
        .get(server.url(&format!("/_matrix/client/v3/sync?since={}&timeout=60000", enc(since))))
        .bearer_auth(&who.access_token);
    tokio::spawn(async move {
        let started = std::time::Instant::now();
        let response = request.send().await.expect("sync sent");
        assert_eq!(response.status(), 200);
        (response.json().await.expect("sync body"), started.elapsed())
    })
}

/// The answers of `polls`, which must come within 10 s.
async fn answers(polls: Vec<JoinHandle<(Value, Duration)>>) -> Vec<Value> {
    let mut out = Vec::new();
    for poll in polls {
        let (body, _) = tokio::time::timeout(Duration::from_secs(10), poll)
            .await
            .expect("the concerned sync wakes promptly")
            .expect("poll task");
        out.push(body);
    }
    out
}

struct User {
    session: Session,
    since: String,
}

#[tokio::test]
async fn each_change_wakes_only_the_syncs_it_concerns() {
    let server =
        TestServer::start_with("presence_offline_timeout_s = 3600\n[global.metrics]\nenabled = true\nport = 0\n").await;
    // Users 2k and 2k+1 share room k; the lone users each have a room of their own.
    let mut sessions = Vec::new();
    for i in 0..(2 * PAIRS + LONE) {
        sessions.push(server.register(&format!("wake{i}"), "password-wake").await);
    }
    let mut rooms = Vec::new();
    for pair in 0..PAIRS {
        let (a, b) = (&sessions[2 * pair], &sessions[2 * pair + 1]);
        let room = create_room(&server, a, json!({"preset": "private_chat", "invite": [b.user_id]})).await;
        join(&server, b, &room).await;
        rooms.push(room);
    }
    for lone in &sessions[2 * PAIRS..] {
        create_room(&server, lone, json!({})).await;
    }
    // Everyone's initial sync sets them online; the tokens long-polled from are taken after all
    // of those presence changes.
    for session in &sessions {
        initial_sync(&server, session).await;
    }
    let mut users = Vec::new();
    for session in sessions {
        let since = initial_sync(&server, &session).await;
        users.push(User { session, since });
    }

    // Everyone long-polls; a few extra polls are dropped mid-wait.
    let polls: Vec<Option<JoinHandle<(Value, Duration)>>> =
        users.iter().map(|user| Some(poll(&server, &user.session, &user.since))).collect();
    let extra: Vec<_> = users[2 * PAIRS..].iter().map(|user| poll(&server, &user.session, &user.since)).collect();
    let all = users.len() as f64;
    until_waiting(&server, all + extra.len() as f64).await;
    for dropped in extra {
        dropped.abort();
    }
    // The dropped polls' registrations are gone.
    until_waiting(&server, all).await;
    let waiting = all;

    let mut waits =
        Waits { polls, woken_before: metric(&server, "trellis_syncs_woken_total").await, woken: 0.0, waiting };

    // A message wakes both members of its room.
    let a = &users[0].session;
    send_text(&server, a, &rooms[0], "hello").await;
    for body in waits.check(&server, "message", &[0, 1]).await {
        let timeline = &body["rooms"]["join"][&rooms[0]]["timeline"]["events"];
        assert_eq!(timeline[0]["content"]["body"], "hello", "{body}");
    }

    // Typing.
    let a = &users[2].session;
    let typing = format!("/_matrix/client/v3/rooms/{}/typing/{}", enc(&rooms[1]), enc(&a.user_id));
    assert_eq!(server.put(&typing, a.token(), json!({"typing": true, "timeout": 30000})).await.0, 200);
    let bodies = waits.check(&server, "typing", &[2, 3]).await;
    assert_eq!(bodies[1]["rooms"]["join"][&rooms[1]]["ephemeral"]["events"][0]["type"], "m.typing", "{}", bodies[1]);

    // A receipt (on the newest event, sent before the polls started).
    let a = &users[4].session;
    let path = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=1", enc(&rooms[2]));
    let (_, page) = server.get(&path, a.token()).await;
    let event = page["chunk"][0]["event_id"].as_str().expect("an event").to_owned();
    let receipt = format!("/_matrix/client/v3/rooms/{}/receipt/m.read/{}", enc(&rooms[2]), enc(&event));
    assert_eq!(server.post(&receipt, a.token(), json!({})).await.0, 200);
    let bodies = waits.check(&server, "receipt", &[4, 5]).await;
    assert_eq!(bodies[1]["rooms"]["join"][&rooms[2]]["ephemeral"]["events"][0]["type"], "m.receipt", "{}", bodies[1]);

    // Account data wakes its user only.
    let a = &users[6].session;
    let path = format!("/_matrix/client/v3/user/{}/account_data/org.example.wake", enc(&a.user_id));
    assert_eq!(server.put(&path, a.token(), json!({"n": 1})).await.0, 200);
    let bodies = waits.check(&server, "account data", &[6]).await;
    assert_eq!(bodies[0]["account_data"]["events"][0]["type"], "org.example.wake", "{}", bodies[0]);

    // A to-device message wakes its recipient only.
    let (a, b) = (&users[8].session, &users[9].session);
    let message = json!({"messages": {b.user_id.clone(): {b.device_id.clone(): {"n": 1}}}});
    assert_eq!(server.put("/_matrix/client/v3/sendToDevice/org.example.wake/t1", a.token(), message).await.0, 200);
    let bodies = waits.check(&server, "to-device", &[9]).await;
    assert_eq!(bodies[0]["to_device"]["events"][0]["type"], "org.example.wake", "{}", bodies[0]);

    // An invite into a new room wakes the invitee (and the creator, who joined it), not the
    // invitee's room-mate.
    let (a, c) = (&users[10].session, &users[39].session);
    let new_room = create_room(&server, a, json!({"invite": [c.user_id]})).await;
    let bodies = waits.check(&server, "invite", &[10, 39]).await;
    assert!(bodies[1]["rooms"]["invite"][&new_room].is_object(), "{}", bodies[1]);

    // A device-list change (a renamed device) wakes the user and their room-mate.
    let a = &users[12].session;
    let device = format!("/_matrix/client/v3/devices/{}", enc(&a.device_id));
    assert_eq!(server.put(&device, a.token(), json!({"display_name": "renamed"})).await.0, 200);
    let bodies = waits.check(&server, "device list", &[12, 13]).await;
    assert_eq!(bodies[1]["device_lists"]["changed"], json!([a.user_id]), "{}", bodies[1]);

    // Presence wakes the user and their room-mate.
    let a = &users[14].session;
    let presence = format!("/_matrix/client/v3/presence/{}/status", enc(&a.user_id));
    let status = json!({"presence": "unavailable", "status_msg": "away"});
    assert_eq!(server.put(&presence, a.token(), status).await.0, 200);
    let bodies = waits.check(&server, "presence", &[14, 15]).await;
    let events = bodies[1]["presence"]["events"].as_array().cloned().unwrap_or_default();
    let seen = events.iter().any(|e| e["sender"] == a.user_id.as_str() && e["content"]["presence"] == "unavailable");
    assert!(seen, "{}", bodies[1]);

    // A user's membership changing while their sync waits (here a join made by another
    // request, as another device would) wakes it: the new room was not among those it listens to.
    let (a, b) = (&users[16].session, &users[17].session);
    let invited_room = create_room(&server, a, json!({"preset": "private_chat", "invite": [b.user_id]})).await;
    waits.check(&server, "creator joins", &[16, 17]).await;
    waits.restart(&server, &users, 17).await;
    join(&server, b, &invited_room).await;
    let bodies = waits.check(&server, "join from another device", &[17]).await;
    assert!(bodies[0]["rooms"]["join"][&invited_room].is_object(), "{}", bodies[0]);

    // A message in a room only the sender is in wakes nobody else.
    let lone = &users[2 * PAIRS].session;
    let (_, joined) = server.get("/_matrix/client/v3/joined_rooms", lone.token()).await;
    let lone_room = joined["joined_rooms"][0].as_str().expect("room").to_owned();
    send_text(&server, lone, &lone_room, "alone").await;
    waits.check(&server, "lone message", &[2 * PAIRS]).await;

    // The long-polls nothing concerned are still waiting after every change; dropping them
    // (the client going away) leaves no registration.
    for poll in waits.polls.into_iter().flatten() {
        assert!(!poll.is_finished(), "an unconcerned sync returned early");
        poll.abort();
    }
    until_waiting(&server, 0.0).await;
}

/// The long-polls of a test and what the wake-up counter should read.
struct Waits {
    polls: Vec<Option<JoinHandle<(Value, Duration)>>>,
    woken_before: f64,
    /// Syncs the changes so far concern.
    woken: f64,
    /// Syncs registered now.
    waiting: f64,
}

impl Waits {
    /// After a change: the polls of `expect` return promptly; the counter moved by exactly
    /// their number; every other poll still waits.
    async fn check(&mut self, server: &TestServer, change: &str, expect: &[usize]) -> Vec<Value> {
        let woken: Vec<_> = expect.iter().map(|i| self.polls[*i].take().expect("a waiting poll")).collect();
        let bodies = answers(woken).await;
        self.woken += expect.len() as f64;
        self.waiting -= expect.len() as f64;
        let counted = metric(server, "trellis_syncs_woken_total").await - self.woken_before;
        assert_eq!(counted, self.woken, "{change}: only the syncs it concerns were woken");
        for (i, poll) in self.polls.iter_mut().enumerate() {
            if poll.as_ref().is_some_and(JoinHandle::is_finished) {
                let answer = poll.take().expect("a poll").await;
                panic!("{change}: user {i}'s sync returned early: {answer:?}");
            }
        }
        until_waiting(server, self.waiting).await;
        bodies
    }

    /// Starts user `i`'s long-poll again, from a fresh token.
    async fn restart(&mut self, server: &TestServer, users: &[User], i: usize) {
        let since = initial_sync(server, &users[i].session).await;
        self.polls[i] = Some(poll(server, &users[i].session, &since));
        self.waiting += 1.0;
        until_waiting(server, self.waiting).await;
    }
}

/// A sliding sync waits the same way: a message in another room leaves it waiting; one in its
/// room wakes it.
#[tokio::test]
async fn sliding_sync_is_woken_by_its_rooms_only() {
    let server = TestServer::start_with("[global.metrics]\nenabled = true\nport = 0\n").await;
    let alice = server.register("slide-alice", "password-wake").await;
    let bob = server.register("slide-bob", "password-wake").await;
    let own = create_room(&server, &alice, json!({})).await;
    let other = create_room(&server, &bob, json!({})).await;
    let path = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";
    let body = json!({"lists": {"all": {"ranges": [[0, 10]], "timeline_limit": 1}}});
    let (status, first) = server.post(path, alice.token(), body.clone()).await;
    assert_eq!(status, 200, "{first}");
    let pos = first["pos"].as_str().expect("pos").to_owned();
    let request = server
        .http
        .post(server.url(&format!("{path}?pos={pos}&timeout=60000")))
        .bearer_auth(&alice.access_token)
        .json(&body);
    let poll = tokio::spawn(async move { request.send().await.expect("sent").json::<Value>().await.expect("body") });
    until_waiting(&server, 1.0).await;
    let woken = metric(&server, "trellis_syncs_woken_total").await;
    send_text(&server, &bob, &other, "elsewhere").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!poll.is_finished(), "a message in another room woke the sliding sync");
    assert_eq!(metric(&server, "trellis_syncs_woken_total").await, woken);
    send_text(&server, &alice, &own, "here").await;
    let answer = tokio::time::timeout(Duration::from_secs(10), poll).await.expect("woken").expect("task");
    assert_eq!(answer["rooms"][&own]["timeline"][0]["content"]["body"], "here", "{answer}");
    assert_eq!(metric(&server, "trellis_syncs_woken_total").await, woken + 1.0);
}
