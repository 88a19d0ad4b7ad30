//! MSC3757 (owned state) in its unstable room versions `org.matrix.msc3757.10` and `.11`:
//! every case of Complement's `TestMSC3757OwnedState` and `TestWithoutOwnedState` over HTTP,
//! the versions in `/capabilities`, owned state through state resolution (a fork merged by a
//! later event keeps it), and owned state shared with a real Synapse.

use std::sync::Arc;

use ruma::{OwnedRoomId, OwnedUserId, RoomVersionId, UserId, events::StateEventType, events::TimelineEventType};
use serde_json::{Map, Value, json};
use trellis::{
    config::Config,
    service::{
        Services,
        rooms::{
            NewEvent,
            create::{Preset, RoomSpec},
            membership::MembershipChange,
        },
    },
    storage::Db,
};

use crate::{
    federation_join::{join_via, state_ids},
    harness::{Session, TestServer, assert_error, config_text, enc},
    peer_synapse::{Peers, Synapse, synapse_and_trellis},
};

const TEST_TYPE: &str = "com.example.test";
/// Separator and sigil characters, as Complement uses to stress the parsing.
const SUFFIX: &str = "_state_key_suffix:!@#$123";

async fn owned_room(server: &TestServer, creator: &Session, version: &str, members: &[&Session]) -> String {
    let (status, body) = server
        .post(
            "/_matrix/client/v3/createRoom",
            creator.token(),
            json!({
                "room_version": version,
                "preset": "public_chat",
                "power_level_content_override": {"events": {TEST_TYPE: 0}},
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let room = body["room_id"].as_str().unwrap().to_owned();
    for member in members {
        let (status, body) =
            server.post(&format!("/_matrix/client/v3/join/{}", enc(&room)), member.token(), json!({})).await;
        assert_eq!(status, 200, "{body}");
    }
    room
}

async fn send_state(server: &TestServer, room: &str, who: &Session, key: &str) -> (u16, Value) {
    let path = format!("/_matrix/client/v3/rooms/{}/state/{TEST_TYPE}/{}", enc(room), enc(key));
    server.put(&path, who.token(), json!({})).await
}

#[track_caller]
fn assert_ok(result: &(u16, Value), case: &str) {
    assert_eq!(result.0, 200, "{case}: {}", result.1);
    assert!(result.1["event_id"].is_string(), "{case}: {}", result.1);
}

#[tokio::test]
async fn owned_state_follows_msc3757_in_both_unstable_versions() {
    let server = TestServer::start().await;
    let creator = server.register("creator", "pw").await;
    let user1 = server.register("user1", "pw").await;
    let user2 = server.register("user2", "pw").await;
    let (u1, u2, c) = (&user1.user_id, &user2.user_id, &creator.user_id);
    for version in ["org.matrix.msc3757.10", "org.matrix.msc3757.11"] {
        let room = owned_room(&server, &creator, version, &[&user1, &user2]).await;
        let created =
            server.get(&format!("/_matrix/client/v3/rooms/{}/state/m.room.create", enc(&room)), creator.token()).await;
        assert_eq!(created.1["room_version"], version, "{}", created.1);

        let r = &room;
        assert_ok(&send_state(&server, r, &user1, &format!("{u1}{SUFFIX}")).await, "own suffixed key");
        assert_ok(&send_state(&server, r, &user1, u1).await, "own key");
        assert_ok(&send_state(&server, r, &creator, u1).await, "creator, another user's key");
        assert_ok(&send_state(&server, r, &creator, &format!("{u1}{SUFFIX}")).await, "creator, suffixed key");
        let forbidden = [
            (&user1, u2.clone(), "another user's key"),
            (&user1, format!("{u2}{SUFFIX}"), "another user's suffixed key"),
            (&user1, format!("{u1}{}", &SUFFIX[1..]), "unseparated suffix"),
            (&user1, format!("@prefix_{u1}{SUFFIX}"), "misplaced user ID"),
        ];
        for (who, key, case) in forbidden {
            let result = send_state(&server, r, who, &key).await;
            assert_eq!((result.0, &result.1["errcode"]), (403, &json!("M_FORBIDDEN")), "{case}: {}", result.1);
        }
        assert_ok(&send_state(&server, r, &creator, "@notinroom:hs2").await, "non-member user ID");
        assert_error(&send_state(&server, r, &creator, "@oops").await, 400, "M_BAD_JSON");
        assert_error(&send_state(&server, r, &creator, &format!("{c}@{}", &SUFFIX[1..])).await, 400, "M_BAD_JSON");
        // A user with less power cannot write the creator's state.
        assert_error(&send_state(&server, r, &user1, c).await, 403, "M_FORBIDDEN");
        // Keys not starting with `@` are anyone's, as in every version.
        assert_ok(&send_state(&server, r, &user2, "plain").await, "plain key");

        // The owned state is the room's state, and stays so after later state events.
        let topic = format!("/_matrix/client/v3/rooms/{}/state/m.room.topic", enc(r));
        assert_eq!(server.put(&topic, creator.token(), json!({"topic": "later"})).await.0, 200);
        // Equal power (0) to a non-member's is not enough.
        assert_error(&send_state(&server, r, &user2, "@notinroom:hs2_other").await, 403, "M_FORBIDDEN");
        let (status, state) = server.get(&format!("/_matrix/client/v3/rooms/{}/state", enc(r)), user2.token()).await;
        assert_eq!(status, 200, "{state}");
        let mut keys: Vec<(String, String)> = state
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == TEST_TYPE)
            .map(|e| (e["state_key"].as_str().unwrap().to_owned(), e["sender"].as_str().unwrap().to_owned()))
            .collect();
        keys.sort();
        let mut expected = vec![
            (u1.clone(), c.clone()),
            (format!("{u1}{SUFFIX}"), c.clone()),
            ("@notinroom:hs2".to_owned(), c.clone()),
            ("plain".to_owned(), u2.clone()),
        ];
        expected.sort();
        assert_eq!(keys, expected, "{version}");
        let one = format!("/_matrix/client/v3/rooms/{}/state/{TEST_TYPE}/{}", enc(r), enc(&format!("{u1}{SUFFIX}")));
        assert_eq!(server.get(&one, user1.token()).await, (200, json!({})));
    }
}

/// Complement's `TestWithoutOwnedState`: version 10 keeps the strict rule, and a malformed
/// user ID there is a plain 403.
#[tokio::test]
async fn stable_versions_keep_the_strict_at_rule() {
    let server = TestServer::start().await;
    let creator = server.register("creator", "pw").await;
    let user = server.register("user", "pw").await;
    let (u, c) = (&user.user_id, &creator.user_id);
    for version in ["10", "11", "12"] {
        let room = owned_room(&server, &creator, version, &[&user]).await;
        assert_ok(&send_state(&server, &room, &user, u).await, "own key");
        for key in
            [format!("{c}{SUFFIX}"), u.clone(), format!("{u}{SUFFIX}"), "@notinroom:hs2".to_owned(), "@oops".to_owned()]
        {
            assert_error(&send_state(&server, &room, &creator, &key).await, 403, "M_FORBIDDEN");
        }
    }
}

#[tokio::test]
async fn capabilities_list_the_msc3757_versions_as_unstable() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let (status, body) = server.get("/_matrix/client/v3/capabilities", alice.token()).await;
    assert_eq!(status, 200, "{body}");
    let available = &body["capabilities"]["m.room_versions"]["available"];
    assert_eq!(available["org.matrix.msc3757.10"], "unstable", "{body}");
    assert_eq!(available["org.matrix.msc3757.11"], "unstable", "{body}");
    for stable in ["1", "9", "10", "11", "12"] {
        assert_eq!(available[stable], "stable", "{body}");
    }
    assert_eq!(available.as_object().unwrap().len(), 14, "{body}");
    // Other unstable identifiers are still refused.
    let bad = server
        .post("/_matrix/client/v3/createRoom", alice.token(), json!({"room_version": "org.matrix.msc3757.9"}))
        .await;
    assert_error(&bad, 400, "M_UNSUPPORTED_ROOM_VERSION");
}

fn user(name: &str) -> OwnedUserId {
    UserId::parse(format!("@{name}:localhost")).unwrap()
}

/// A fork whose branches carry owned state: Alice (the creator) writes Bob's owned keys on
/// one branch while Bob writes his own on the other. State resolution runs when the branches
/// are merged, with ruma's rules and ours: every owned event that passes stays in the state,
/// under its own key, and an owned key written before the fork (unconflicted) stays too.
#[tokio::test]
async fn owned_state_survives_state_resolution() {
    for version in ["org.matrix.msc3757.10", "org.matrix.msc3757.11"] {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::from_toml(&config_text(dir.path(), "localhost", ""), "test", Vec::new()).unwrap().config;
        let db = Db::open(&config).unwrap();
        let services: Arc<Services> = Services::build(config, db).unwrap();
        let (alice, bob) = (user("alice"), user("bob"));
        let spec = RoomSpec::new(RoomVersionId::try_from(version).unwrap(), Preset::PublicChat);
        let room: OwnedRoomId = services.rooms.create_room(&alice, spec).await.unwrap();
        let change =
            MembershipChange { sender: &bob, target: &bob, membership: "join", reason: None, profile: Map::new() };
        services.rooms.change_membership(&room, change).await.unwrap();
        let kind = TimelineEventType::from(TEST_TYPE);
        let owned = |key: String, content: Value| NewEvent::state(kind.clone(), &key, content);
        let send = |who: &OwnedUserId, event: NewEvent, prevs: Option<Vec<ruma::OwnedEventId>>| {
            let (services, room, who) = (services.clone(), room.clone(), who.clone());
            async move { services.rooms.send_with_prev_events(&room, &who, event, prevs).await.unwrap() }
        };

        let levels = services.rooms.state_event(&room, &StateEventType::RoomPowerLevels, "").await.unwrap().unwrap();
        let mut levels = levels.content_value();
        levels["events"][TEST_TYPE] = json!(0);
        send(&alice, NewEvent::state(TimelineEventType::RoomPowerLevels, "", levels), None).await;
        let before = send(&alice, owned(format!("{bob}_before"), json!({"n": 0})), None).await;
        let fork_point =
            send(&alice, NewEvent::state(TimelineEventType::RoomTopic, "", json!({"topic": "fork"})), None)
                .await
                .event_id;
        let a1 = send(&alice, owned(format!("{bob}_alice"), json!({"n": 1})), Some(vec![fork_point.clone()])).await;
        let a2 = send(&alice, owned(bob.to_string(), json!({"n": 2})), Some(vec![a1.event_id.clone()])).await;
        let b1 = send(&bob, owned(format!("{bob}_bob"), json!({"n": 3})), Some(vec![fork_point])).await;
        assert!(!a1.soft_failed && !a2.soft_failed && !b1.soft_failed, "{version}");
        // A later event merges both branches (two forward extremities).
        let merged =
            send(&alice, NewEvent::state(TimelineEventType::RoomTopic, "", json!({"topic": "merged"})), None).await;
        let stored = services.rooms.event_for(&alice, &merged.event_id).await.unwrap().unwrap();
        assert_eq!(stored.pdu.prev_events.len(), 2, "{version}: the merge names both branches");

        let state_kind = StateEventType::from(TEST_TYPE);
        let at = |key: String| {
            let (services, room, state_kind) = (services.clone(), room.clone(), state_kind.clone());
            async move { services.rooms.state_event(&room, &state_kind, &key).await.unwrap().map(|pdu| pdu.event_id) }
        };
        assert_eq!(at(format!("{bob}_before")).await, Some(before.event_id), "{version}");
        assert_eq!(at(format!("{bob}_alice")).await, Some(a1.event_id), "{version}");
        assert_eq!(at(bob.to_string()).await, Some(a2.event_id), "{version}");
        assert_eq!(at(format!("{bob}_bob")).await, Some(b1.event_id), "{version}");
        // Nothing is filed under an escaped key.
        assert_eq!(at(format!("\u{1}{bob}")).await, None, "{version}");
    }
}

/// Polls until both servers hold the same state for `room`, containing `event`.
async fn converge(trellis: &TestServer, alice: &Session, synapse: &Synapse, sam: &str, room: &str, event: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (on_trellis, on_synapse) = (state_ids(trellis, alice, room).await, synapse.state_ids(room, sam).await);
        if on_trellis == on_synapse && on_trellis.iter().any(|id| id == event) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{event}: Trellis has {on_trellis:?}, Synapse {on_synapse:?}");
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

/// With a real Synapse (skipped without `TRELLIS_SYNAPSE_PYTHON`): owned state written on
/// either server in the other's MSC3757 room is accepted by both, and both hold the same state.
#[tokio::test]
async fn synapse_and_trellis_agree_on_owned_state() {
    let Some(Peers { synapse, trellis, trellis_name, .. }) = synapse_and_trellis().await else { return };
    let alice = trellis.register("alice", "pw").await;
    let sam_token = synapse.register("sam").await;
    let sam = format!("@sam:{}", synapse.server_name);
    let create = |version: &str| json!({"room_version": version, "preset": "public_chat", "power_level_content_override": {"events": {TEST_TYPE: 0}}});
    let path = |room: &str, key: &str| format!("/_matrix/client/v3/rooms/{}/state/{TEST_TYPE}/{}", enc(room), enc(key));

    // Synapse's room: Sam (its creator) writes Alice's owned key, Alice her own suffixed one.
    let created =
        synapse.client_post("/_matrix/client/v3/createRoom", &sam_token, create("org.matrix.msc3757.10")).await;
    assert_eq!(created.0, 200, "{}", created.1);
    let room = created.1["room_id"].as_str().unwrap().to_owned();
    assert_eq!(join_via(&trellis, &alice, &room, &[&synapse.server_name]).await.0, 200);
    let by_sam = synapse.client_put(&path(&room, &format!("{}{SUFFIX}", alice.user_id)), &sam_token, json!({})).await;
    assert_eq!(by_sam.0, 200, "{}", by_sam.1);
    converge(&trellis, &alice, &synapse, &sam_token, &room, by_sam.1["event_id"].as_str().unwrap()).await;
    let by_alice = send_state(&trellis, &room, &alice, &format!("{}_mine", alice.user_id)).await;
    assert_ok(&by_alice, "Alice's own key in Synapse's room");
    converge(&trellis, &alice, &synapse, &sam_token, &room, by_alice.1["event_id"].as_str().unwrap()).await;
    assert_error(&send_state(&trellis, &room, &alice, &sam).await, 403, "M_FORBIDDEN");

    // Trellis's room: Alice (its creator) writes Sam's owned key.
    let created = trellis.post("/_matrix/client/v3/createRoom", alice.token(), create("org.matrix.msc3757.11")).await;
    assert_eq!(created.0, 200, "{}", created.1);
    let room = created.1["room_id"].as_str().unwrap().to_owned();
    let join = format!("/_matrix/client/v3/join/{}?server_name={trellis_name}&via={trellis_name}", enc(&room));
    let joined = synapse.client_post(&join, &sam_token, json!({})).await;
    assert_eq!(joined.0, 200, "{}", joined.1);
    let by_alice = send_state(&trellis, &room, &alice, &format!("{sam}{SUFFIX}")).await;
    assert_ok(&by_alice, "Sam's key in Trellis's room");
    converge(&trellis, &alice, &synapse, &sam_token, &room, by_alice.1["event_id"].as_str().unwrap()).await;
    let by_sam = synapse.client_put(&path(&room, &format!("{sam}_mine")), &sam_token, json!({})).await;
    assert_eq!(by_sam.0, 200, "{}", by_sam.1);
    converge(&trellis, &alice, &synapse, &sam_token, &room, by_sam.1["event_id"].as_str().unwrap()).await;
}
