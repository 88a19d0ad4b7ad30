//! The read side of the server-server API (`/event`, `/state`, `/state_ids`, `/event_auth`,
//! `/get_missing_events`, `/backfill`, `/query/directory`) and server ACLs: over HTTP, signed by
//! the fake server `hs-t`, for the refusals (a server outside the room, an ACL, unknown events,
//! unknown endpoints and methods); in process, through the room service, for the exact answers
//! a server in the room gets, in room versions 1, 6, 11 and 12.

use std::{collections::BTreeSet, sync::Arc};

use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomVersionId, ServerName, UserId, events::TimelineEventType};
use serde_json::{Value, json};
use trellis::{
    config::Config,
    service::{
        Services,
        rooms::{
            NewEvent,
            create::{Preset, RoomSpec},
        },
    },
    storage::Db,
};

use crate::{
    federation::{FakeServer, Pki, federation_call, free_port, start_federating, start_pair},
    federation_join::{fake_call, fake_membership, join_via, state_ids},
    harness::{Session, TestServer, assert_error, config_text, enc},
    room_helpers::{create_room, put_state, send_text},
};

#[tokio::test]
async fn federation_reads_are_refused_outside_the_room_and_by_the_acl() {
    let pki = Pki::new(&["hs-a", "hs-t"]);
    let fake = FakeServer::start(&pki).await;
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let a = start_federating(&pki, dir.path(), "hs-a", port, &[("hs-a", port), ("hs-t", fake.port)], "");
    let client = pki.client();
    let alice = a.register("alice", "pw").await;
    let room = create_room(&a, &alice, json!({"preset": "public_chat", "room_alias_name": "lobby"})).await;
    let message = send_text(&a, &alice, &room, "hello").await;
    let call = |method: &'static str, uri: String, body: Option<Value>| {
        let (client, fake, a) = (&client, &fake, &a);
        async move {
            let header = fake.sign(method, &uri, "hs-a", body.as_ref());
            federation_call(client, a, method, &uri, Some(&header), body.as_ref()).await
        }
    };
    let (r, e) = (enc(&room), enc(&message));
    let room_scoped = || {
        [
            ("GET", format!("/_matrix/federation/v1/event/{e}"), None),
            ("GET", format!("/_matrix/federation/v1/state/{r}?event_id={e}"), None),
            ("GET", format!("/_matrix/federation/v1/state_ids/{r}?event_id={e}"), None),
            ("GET", format!("/_matrix/federation/v1/event_auth/{r}/{e}"), None),
            ("GET", format!("/_matrix/federation/v1/backfill/{r}?v={e}&limit=10"), None),
            (
                "POST",
                format!("/_matrix/federation/v1/get_missing_events/{r}"),
                Some(json!({"earliest_events": [], "latest_events": [message], "limit": 10})),
            ),
        ]
    };

    // hs-t has no user in the room: every read is forbidden.
    for (method, uri, body) in room_scoped() {
        let answer = call(method, uri.clone(), body).await;
        assert_error(&answer, 403, "M_FORBIDDEN");
        assert!(answer.1["error"].as_str().unwrap().contains("not in this room"), "{uri}: {}", answer.1);
    }
    // Unsigned: 401.
    let unsigned = federation_call(&client, &a, "GET", &format!("/_matrix/federation/v1/event/{e}"), None, None).await;
    assert_error(&unsigned, 401, "M_UNAUTHORIZED");
    // Unknown events and rooms: 404.
    let unknown_event = call("GET", format!("/_matrix/federation/v1/event/{}", enc("$nope")), None).await;
    assert_error(&unknown_event, 404, "M_NOT_FOUND");
    let unknown_room =
        call("GET", format!("/_matrix/federation/v1/state_ids/{}?event_id={e}", enc("!nope:hs-a")), None).await;
    assert_error(&unknown_room, 404, "M_NOT_FOUND");

    // Malformed requests: 400, never a 500.
    let no_event = call("GET", format!("/_matrix/federation/v1/state_ids/{r}"), None).await;
    assert_eq!(no_event.0, 400, "{}", no_event.1);
    let bad_body = call(
        "POST",
        format!("/_matrix/federation/v1/get_missing_events/{r}"),
        Some(json!({"earliest_events": "nope", "latest_events": [1, 2]})),
    )
    .await;
    assert_eq!(bad_body.0, 400, "{}", bad_body.1);
    let bad_limit = call("GET", format!("/_matrix/federation/v1/backfill/{r}?v={e}&limit=-3"), None).await;
    assert_eq!(bad_limit.0, 400, "{}", bad_limit.1);

    // An ACL denying hs-t: forbidden by the ACL, whatever else.
    put_state(&a, &alice, &room, "m.room.server_acl", json!({"allow": ["*"], "deny": ["hs-t"]})).await;
    for (method, uri, body) in room_scoped() {
        let answer = call(method, uri.clone(), body).await;
        assert_error(&answer, 403, "M_FORBIDDEN");
        assert!(answer.1["error"].as_str().unwrap().contains("server ACL"), "{uri}: {}", answer.1);
    }

    // The directory: a local alias gives its room and the servers in it.
    let alias =
        call("GET", format!("/_matrix/federation/v1/query/directory?room_alias={}", enc("#lobby:hs-a")), None).await;
    assert_eq!(alias, (200, json!({"room_id": room, "servers": ["hs-a"]})));
    let missing =
        call("GET", format!("/_matrix/federation/v1/query/directory?room_alias={}", enc("#nope:hs-a")), None).await;
    assert_error(&missing, 404, "M_NOT_FOUND");
    let foreign =
        call("GET", format!("/_matrix/federation/v1/query/directory?room_alias={}", enc("#x:hs-t")), None).await;
    assert_error(&foreign, 404, "M_NOT_FOUND");
}

/// Complement's `TestUnknownEndpoints`, on both listeners: unknown paths are 404 and known
/// paths with a wrong method 405, both `M_UNRECOGNIZED`.
#[tokio::test]
async fn unknown_federation_endpoints_and_methods_are_unrecognized() {
    let pki = Pki::new(&["hs-a"]);
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let a = start_federating(&pki, dir.path(), "hs-a", port, &[("hs-a", port)], "");
    let client = pki.client();
    let cases = [
        ("GET", "/_matrix/unknown", 404),
        ("GET", "/_matrix/federation/unknown", 404),
        ("GET", "/_matrix/federation/v1/unknown", 404),
        ("PUT", "/_matrix/federation/v1/version", 405),
        ("GET", "/_matrix/key/unknown", 404),
        ("GET", "/_matrix/key/v2/unknown", 404),
        ("PUT", "/_matrix/key/v2/query", 405),
        ("PUT", "/_matrix/federation/v1/event/%24x", 405),
        ("DELETE", "/_matrix/federation/v1/backfill/%21r%3Ahs-a", 405),
    ];
    for (method, path, status) in cases {
        let over_federation = federation_call(&client, &a, method, path, None, None).await;
        assert_error(&over_federation, status, "M_UNRECOGNIZED");
        let main = a.call(method, path, None, None).await;
        assert_error(&main, status, "M_UNRECOGNIZED");
    }
}

struct Fixture {
    services: Arc<Services>,
    _dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::from_toml(&config_text(dir.path(), "localhost", ""), "test", Vec::new()).unwrap().config;
    let db = Db::open(&config).unwrap();
    Fixture { services: Services::build(config, db).unwrap(), _dir: dir }
}

fn message(body: &str) -> NewEvent {
    NewEvent::message(TimelineEventType::RoomMessage, json!({"msgtype": "m.text", "body": body}))
}

/// The auth chain of `events` by the definition: their auth events, recursively.
async fn brute_auth_chain(services: &Services, user: &UserId, events: &[OwnedEventId]) -> BTreeSet<OwnedEventId> {
    let mut chain = BTreeSet::new();
    let mut stack: Vec<OwnedEventId> = Vec::new();
    for event in events {
        stack.extend(services.rooms.event_for(user, event).await.unwrap().unwrap().pdu.auth_events.clone());
    }
    while let Some(id) = stack.pop() {
        if chain.insert(id.clone()) {
            stack.extend(services.rooms.event_for(user, &id).await.unwrap().unwrap().pdu.auth_events.clone());
        }
    }
    chain
}

fn ids_of(pdus: &[Box<serde_json::value::RawValue>], version: &RoomVersionId) -> Vec<OwnedEventId> {
    let rules = version.rules().unwrap();
    pdus.iter()
        .map(|raw| {
            let json: ruma::CanonicalJsonObject = serde_json::from_str(raw.get()).unwrap();
            assert!(!json.contains_key("unsigned"), "served with unsigned: {}", raw.get());
            trellis::service::rooms::pdu::event_id_of(&json, &rules).unwrap()
        })
        .collect()
}

/// A server in the room (this one, as the service sees a request from it) gets the state
/// before an event with its auth chain, an event's auth chain, missing events oldest first
/// within `limit` and `min_depth`, and backfill newest first from the given events.
#[tokio::test]
async fn servers_in_the_room_read_state_auth_chains_missing_events_and_backfill() {
    let Fixture { services, _dir } = fixture();
    let alice: OwnedUserId = UserId::parse("@alice:localhost").unwrap();
    let own = ServerName::parse("localhost").unwrap();
    let outsider = ServerName::parse("elsewhere").unwrap();
    for version in [RoomVersionId::V1, RoomVersionId::V6, RoomVersionId::V11, RoomVersionId::V12] {
        let room: OwnedRoomId =
            services.rooms.create_room(&alice, RoomSpec::new(version.clone(), Preset::PublicChat)).await.unwrap();
        let m1 = services.rooms.send(&room, &alice, message("one")).await.unwrap().event_id;
        let m2 = services.rooms.send(&room, &alice, message("two")).await.unwrap().event_id;
        let topic = NewEvent::state(TimelineEventType::RoomTopic, "", json!({"topic": "t"}));
        let t = services.rooms.send(&room, &alice, topic).await.unwrap().event_id;
        let m3 = services.rooms.send(&room, &alice, message("three")).await.unwrap().event_id;
        if version == RoomVersionId::V1 {
            assert!(m3.as_str().ends_with(":localhost"), "v1 event IDs carry the server name: {m3}");
        }

        // /event: the signed JSON, without `unsigned`.
        let event = services.rooms.event_for_server(&own, &m3).await.unwrap();
        assert_eq!(ids_of(&[event], &version), vec![m3.clone()], "{version}");

        // /state_ids and /state at m3: the state before it (the current state) and its chain.
        let state: BTreeSet<OwnedEventId> =
            services.rooms.current_state(&room).await.unwrap().into_iter().map(|pdu| pdu.event_id).collect();
        assert!(state.contains(&t), "{version}");
        let (pdu_ids, chain_ids) = services.rooms.state_ids_for_server(&own, &room, &m3).await.unwrap();
        assert_eq!(pdu_ids.iter().cloned().collect::<BTreeSet<_>>(), state, "{version}");
        let state_list: Vec<OwnedEventId> = state.iter().cloned().collect();
        let expected_chain = brute_auth_chain(&services, &alice, &state_list).await;
        assert_eq!(chain_ids.iter().cloned().collect::<BTreeSet<_>>(), expected_chain, "{version}");
        let (pdus, chain) = services.rooms.room_state_for_server(&own, &room, &m3).await.unwrap();
        assert_eq!(ids_of(&pdus, &version).into_iter().collect::<BTreeSet<_>>(), state, "{version}");
        assert_eq!(ids_of(&chain, &version).into_iter().collect::<BTreeSet<_>>(), expected_chain, "{version}");
        // The state before the topic change does not hold it.
        let (before_topic, _) = services.rooms.state_ids_for_server(&own, &room, &t).await.unwrap();
        assert!(!before_topic.contains(&t), "{version}");
        assert_eq!(before_topic.len() + 1, state.len(), "{version}");

        // /event_auth: the event's auth chain.
        let auth = services.rooms.event_auth_for_server(&own, &room, &m3).await.unwrap();
        let expected = brute_auth_chain(&services, &alice, std::slice::from_ref(&m3)).await;
        assert_eq!(ids_of(&auth, &version).into_iter().collect::<BTreeSet<_>>(), expected, "{version}");

        // /get_missing_events: between m1 (had) and m3 (latest), oldest first.
        let missing = services
            .rooms
            .missing_events_for_server(&own, &room, vec![m1.clone()], vec![m3.clone()], 10, 0)
            .await
            .unwrap();
        assert_eq!(ids_of(&missing, &version), [m2.clone(), t.clone()], "{version}");
        // A limit keeps the newest.
        let one = services
            .rooms
            .missing_events_for_server(&own, &room, vec![m1.clone()], vec![m3.clone()], 1, 0)
            .await
            .unwrap();
        assert_eq!(ids_of(&one, &version), vec![t.clone()], "{version}");
        // min_depth leaves out the shallower ones.
        let depth_of_t = services.rooms.event_for(&alice, &t).await.unwrap().unwrap().pdu.depth;
        let deep = services
            .rooms
            .missing_events_for_server(&own, &room, vec![], vec![m3.clone()], 10, depth_of_t)
            .await
            .unwrap();
        assert_eq!(ids_of(&deep, &version), vec![t.clone()], "{version}");

        // /backfill: from m3 (included), newest first, `limit` events.
        let back = services.rooms.backfill_for_server(&own, &room, vec![m3.clone()], 4).await.unwrap();
        assert_eq!(ids_of(&back, &version), [m3.clone(), t.clone(), m2.clone(), m1.clone()], "{version}");
        // To the create event and no further.
        let all = services.rooms.backfill_for_server(&own, &room, vec![m3.clone()], 1000).await.unwrap();
        let timeline_len = services
            .rooms
            .timeline(&alice, &room, None, trellis::storage::ScanDirection::Reverse, 100)
            .await
            .unwrap()
            .0
            .len();
        assert_eq!(all.len(), timeline_len, "{version}");
        let all_ids = ids_of(&all, &version);
        let create = services
            .rooms
            .state_event(&room, &ruma::events::StateEventType::RoomCreate, "")
            .await
            .unwrap()
            .unwrap()
            .event_id;
        assert_eq!(all_ids.last(), Some(&create), "{version}");

        // A server with no user in the room gets nothing; nor an unknown event.
        let refused = services.rooms.state_ids_for_server(&outsider, &room, &m3).await.unwrap_err();
        assert_eq!(refused.kind(), Some(&ruma::api::error::ErrorKind::Forbidden), "{version}");
        let refused = services.rooms.event_for_server(&outsider, &m3).await.unwrap_err();
        assert_eq!(refused.kind(), Some(&ruma::api::error::ErrorKind::Forbidden), "{version}");
        assert!(services.rooms.server_allowed(&room, &outsider).await.unwrap(), "{version}: no ACL");
    }
}

/// A room's timeline as `user` pages backwards through `/messages` on `server`: event IDs,
/// newest first.
async fn messages_backwards(server: &TestServer, user: &Session, room: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut from: Option<String> = None;
    loop {
        let token = from.as_deref().map(|t| format!("&from={t}")).unwrap_or_default();
        let page = server
            .get(&format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=100{token}", enc(room)), user.token())
            .await;
        assert_eq!(page.0, 200, "{}", page.1);
        ids.extend(page.1["chunk"].as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap().to_owned()));
        match page.1["end"].as_str() {
            Some(end) => from = Some(end.to_owned()),
            None => return ids,
        }
    }
}

fn event_ids_of(pdus: &Value, version: &RoomVersionId) -> Vec<String> {
    let rules = version.rules().unwrap();
    pdus.as_array()
        .unwrap()
        .iter()
        .map(|pdu| {
            let json: ruma::CanonicalJsonObject = serde_json::from_value(pdu.clone()).unwrap();
            assert!(!json.contains_key("unsigned"), "served with unsigned: {pdu}");
            trellis::service::rooms::pdu::event_id_of(&json, &rules).unwrap().to_string()
        })
        .collect()
}

/// A server with a user in the room (`hs-t`, joined through `make_join`/`send_join`) reads its
/// history from `hs-a`: exact answers of `/event`, `/state_ids`, `/state`, `/event_auth`,
/// `/get_missing_events` and `/backfill`. Then a user of `hs-b` joins and pages back through
/// `/messages` past the join: `hs-b` backfills from `hs-a` and shows the same timeline.
#[tokio::test]
async fn servers_in_the_room_read_its_history_and_backfill_it() {
    let pair = start_pair().await;
    let (a, b) = (&pair.a, &pair.b);
    let alice = a.register("alice", "pw").await;
    let bob = b.register("bob", "pw").await;
    for version in [RoomVersionId::V1, RoomVersionId::V6, RoomVersionId::V11, RoomVersionId::V12] {
        let v = version.as_str();
        let room = create_room(a, &alice, json!({"preset": "public_chat", "room_version": v})).await;
        let m1 = send_text(a, &alice, &room, "before one").await;
        let m2 = send_text(a, &alice, &room, "before two").await;
        put_state(a, &alice, &room, "m.room.topic", json!({"topic": "history"})).await;
        let state_before_join = state_ids(a, &alice, &room).await;
        let topic =
            a.get(&format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=1", enc(&room)), alice.token()).await;
        let topic = topic.1["chunk"][0]["event_id"].as_str().unwrap().to_owned();

        // Before hs-t joins: forbidden.
        let r = enc(&room);
        let event_uri = format!("/_matrix/federation/v1/event/{}", enc(&m1));
        assert_error(&fake_call(&pair, a, "GET", &event_uri, None).await, 403, "M_FORBIDDEN");

        // hs-t's user joins.
        let (join, event) = fake_membership(&pair, &room, "@t:hs-t", |_| {}).await;
        let send_join = format!("/_matrix/federation/v2/send_join/{r}/{}", enc(&join));
        let joined = fake_call(&pair, a, "PUT", &send_join, Some(&event)).await;
        assert_eq!(joined.0, 200, "v{v}: {}", joined.1);

        // /event: the PDU, in a transaction-shaped answer.
        let answer = fake_call(&pair, a, "GET", &event_uri, None).await;
        assert_eq!(answer.0, 200, "v{v}: {}", answer.1);
        assert_eq!(answer.1["origin"], "hs-a");
        assert_eq!(event_ids_of(&answer.1["pdus"], &version), vec![m1.clone()], "v{v}");
        if version == RoomVersionId::V1 {
            assert!(m1.ends_with(":hs-a"), "v1 event IDs carry the server name: {m1}");
        }

        // /state_ids and /state at the join: the state before it.
        let uri = format!("/_matrix/federation/v1/state_ids/{r}?event_id={}", enc(&join));
        let answer = fake_call(&pair, a, "GET", &uri, None).await;
        assert_eq!(answer.0, 200, "v{v}: {}", answer.1);
        let mut pdu_ids: Vec<String> =
            answer.1["pdu_ids"].as_array().unwrap().iter().map(|id| id.as_str().unwrap().to_owned()).collect();
        pdu_ids.sort();
        assert_eq!(pdu_ids, state_before_join, "v{v}");
        let mut chain_ids: Vec<String> =
            answer.1["auth_chain_ids"].as_array().unwrap().iter().map(|id| id.as_str().unwrap().to_owned()).collect();
        chain_ids.sort();
        // The auth chain of the state, by the definition, read through /event.
        let mut expected: BTreeSet<String> = BTreeSet::new();
        let mut stack: Vec<String> = Vec::new();
        for id in &state_before_join {
            stack.extend(auth_events_of(&pair, id, &version).await);
        }
        while let Some(id) = stack.pop() {
            if expected.insert(id.clone()) {
                stack.extend(auth_events_of(&pair, &id, &version).await);
            }
        }
        assert_eq!(chain_ids, expected.iter().cloned().collect::<Vec<_>>(), "v{v}");
        let uri = format!("/_matrix/federation/v1/state/{r}?event_id={}", enc(&join));
        let answer = fake_call(&pair, a, "GET", &uri, None).await;
        assert_eq!(answer.0, 200, "v{v}: {}", answer.1);
        let mut ids = event_ids_of(&answer.1["pdus"], &version);
        ids.sort();
        assert_eq!(ids, state_before_join, "v{v}");
        let mut ids = event_ids_of(&answer.1["auth_chain"], &version);
        ids.sort();
        assert_eq!(ids, chain_ids, "v{v}");

        // /event_auth: m2's auth chain.
        let uri = format!("/_matrix/federation/v1/event_auth/{r}/{}", enc(&m2));
        let answer = fake_call(&pair, a, "GET", &uri, None).await;
        assert_eq!(answer.0, 200, "v{v}: {}", answer.1);
        let mut ids = event_ids_of(&answer.1["auth_chain"], &version);
        ids.sort();
        let mut expected: BTreeSet<String> = BTreeSet::new();
        let mut stack = auth_events_of(&pair, &m2, &version).await;
        while let Some(id) = stack.pop() {
            if expected.insert(id.clone()) {
                stack.extend(auth_events_of(&pair, &id, &version).await);
            }
        }
        assert_eq!(ids, expected.into_iter().collect::<Vec<_>>(), "v{v}");

        // /get_missing_events between m1 and the join: oldest first.
        let uri = format!("/_matrix/federation/v1/get_missing_events/{r}");
        let body = json!({"earliest_events": [m1], "latest_events": [join], "limit": 10});
        let answer = fake_call(&pair, a, "POST", &uri, Some(&body)).await;
        assert_eq!(answer.0, 200, "v{v}: {}", answer.1);
        assert_eq!(event_ids_of(&answer.1["events"], &version), [m2.clone(), topic.clone()], "v{v}");

        // /backfill from the topic: it and what is before it, newest first.
        let uri = format!("/_matrix/federation/v1/backfill/{r}?v={}&limit=3", enc(&topic));
        let answer = fake_call(&pair, a, "GET", &uri, None).await;
        assert_eq!(answer.0, 200, "v{v}: {}", answer.1);
        assert_eq!(event_ids_of(&answer.1["pdus"], &version), [topic.clone(), m2.clone(), m1.clone()], "v{v}");

        // Bob of hs-b joins; his server has no history before his join and backfills it.
        assert_eq!(join_via(b, &bob, &room, &["hs-a"]).await.0, 200, "v{v}");
        let on_a = messages_backwards(a, &alice, &room).await;
        let on_b = messages_backwards(b, &bob, &room).await;
        assert_eq!(on_b, on_a, "v{v}: hs-b's history after backfill");
        assert!(on_b.contains(&m1), "v{v}");
        // A second pass reads it locally, the same.
        assert_eq!(messages_backwards(b, &bob, &room).await, on_a, "v{v}");

        // An ACL denying hs-t shuts it out, though its user is still joined.
        put_state(a, &alice, &room, "m.room.server_acl", json!({"allow": ["*"], "deny": ["hs-t"]})).await;
        let denied = fake_call(&pair, a, "GET", &event_uri, None).await;
        assert_error(&denied, 403, "M_FORBIDDEN");
        assert!(denied.1["error"].as_str().unwrap().contains("server ACL"), "v{v}: {}", denied.1);
    }
}

/// The auth events of an event, as `hs-a` serves it to `hs-t`.
async fn auth_events_of(pair: &crate::federation::Pair, id: &str, version: &RoomVersionId) -> Vec<String> {
    let answer = fake_call(pair, &pair.a, "GET", &format!("/_matrix/federation/v1/event/{}", enc(id)), None).await;
    assert_eq!(answer.0, 200, "{id}: {}", answer.1);
    let pdu = &answer.1["pdus"][0];
    pdu["auth_events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| match version {
            RoomVersionId::V1 => entry[0].as_str().unwrap().to_owned(),
            _ => entry.as_str().unwrap().to_owned(),
        })
        .collect()
}

/// Complement's `TestInboundCanReturnMissingEvents`: `/get_missing_events` between the create
/// event and a new server's join gives the history in order, whole for `world_readable` and
/// `shared` history, redacted for `invited` and `joined` history the server may not see.
#[tokio::test]
async fn missing_events_follow_history_visibility_for_servers() {
    let pair = start_pair().await;
    let a = &pair.a;
    let alice = a.register("alice", "pw").await;
    for (i, visibility) in ["world_readable", "shared", "invited", "joined"].into_iter().enumerate() {
        let room = create_room(a, &alice, json!({"preset": "public_chat", "room_version": "11"})).await;
        put_state(a, &alice, &room, "m.room.history_visibility", json!({"history_visibility": visibility})).await;
        send_text(a, &alice, &room, "1").await;
        let user = format!("@t{i}:hs-t");
        let (join, event) = fake_membership(&pair, &room, &user, |_| {}).await;
        let send_join = format!("/_matrix/federation/v2/send_join/{}/{}", enc(&room), enc(&join));
        assert_eq!(fake_call(&pair, a, "PUT", &send_join, Some(&event)).await.0, 200, "{visibility}");
        let create = a.get(&format!("/_matrix/client/v3/rooms/{}/state", enc(&room)), alice.token()).await;
        let create = create.1.as_array().unwrap().iter().find(|e| e["type"] == "m.room.create").unwrap()["event_id"]
            .as_str()
            .unwrap()
            .to_owned();

        let uri = format!("/_matrix/federation/v1/get_missing_events/{}", enc(&room));
        let body = json!({"earliest_events": [create], "latest_events": [join], "limit": 10, "min_depth": 1});
        let answer = fake_call(&pair, a, "POST", &uri, Some(&body)).await;
        assert_eq!(answer.0, 200, "{visibility}: {}", answer.1);
        let events = answer.1["events"].as_array().unwrap();
        let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        let mut expected =
            vec!["m.room.member", "m.room.power_levels", "m.room.join_rules", "m.room.history_visibility"];
        if visibility != "shared" {
            expected.push("m.room.history_visibility");
        }
        expected.push("m.room.message");
        assert_eq!(types, expected, "{visibility}: {}", answer.1);
        assert!(events.iter().all(|e| e["room_id"] == room), "{visibility}");
        let message = events.last().unwrap();
        match visibility {
            "invited" | "joined" => assert_eq!(message["content"], json!({}), "{visibility}: redacted"),
            _ => assert_eq!(message["content"]["body"], "1", "{visibility}"),
        }
    }
}

/// Complement's `TestMessagesOverFederation` (joining a new room): more history than one
/// `/backfill` answer holds, paged with a limit above and below it, comes back whole and in
/// order.
#[tokio::test]
async fn long_history_is_backfilled_page_by_page() {
    let pair = start_pair().await;
    let (a, b) = (&pair.a, &pair.b);
    let alice = a.register("alice", "pw").await;
    let bob = b.register("bob", "pw").await;
    for (messages, limit) in [(20, 10), (250, 200)] {
        let room = create_room(a, &alice, json!({"preset": "public_chat"})).await;
        let mut sent = Vec::new();
        for i in 0..messages {
            sent.push(send_text(a, &alice, &room, &format!("filler {i}")).await);
        }
        assert_eq!(join_via(b, &bob, &room, &["hs-a"]).await.0, 200);
        let mut seen: Vec<String> = Vec::new();
        let mut from: Option<String> = None;
        loop {
            let token = from.as_deref().map(|t| format!("&from={t}")).unwrap_or_default();
            let uri = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit={limit}{token}", enc(&room));
            let page = b.get(&uri, bob.token()).await;
            assert_eq!(page.0, 200, "{}", page.1);
            let chunk = page.1["chunk"].as_array().unwrap();
            assert!(chunk.len() <= limit, "{messages}/{limit}");
            seen.extend(chunk.iter().map(|e| e["event_id"].as_str().unwrap().to_owned()));
            match page.1["end"].as_str() {
                Some(end) => from = Some(end.to_owned()),
                None => break,
            }
        }
        seen.reverse();
        let messages_seen: Vec<String> = seen.into_iter().filter(|id| sent.contains(id)).collect();
        assert_eq!(messages_seen, sent, "{messages} messages, pages of {limit}");
    }
}

/// Complement's `TestMessagesOverFederation` (re-joining): a server that left a room and comes
/// back pulls the history since it left before placing the join, so paging back through
/// `/messages` shows it whole and in order, with no hole between the leave and the rejoin;
/// more than one `/get_missing_events` answer's worth (100) is pulled in rounds.
#[tokio::test]
async fn a_rejoining_server_fills_the_history_since_it_left() {
    let pair = start_pair().await;
    let (a, b) = (&pair.a, &pair.b);
    let alice = a.register("alice", "pw").await;
    let bob = b.register("bob", "pw").await;
    for (version, messages) in [("12", 20), ("10", 130)] {
        let room = create_room(a, &alice, json!({"preset": "public_chat", "room_version": version})).await;
        send_text(a, &alice, &room, "before bob").await;
        assert_eq!(join_via(b, &bob, &room, &["hs-a"]).await.0, 200);
        let left = b.post(&format!("/_matrix/client/v3/rooms/{}/leave", enc(&room)), bob.token(), json!({})).await;
        assert_eq!(left.0, 200, "{}", left.1);
        // As Complement does, alice sees the leave before she writes.
        let member = format!("/_matrix/client/v3/rooms/{}/state/m.room.member/{}", enc(&room), enc(&bob.user_id));
        for _ in 0..100 {
            if a.get(&member, alice.token()).await.1["membership"] == "leave" {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(a.get(&member, alice.token()).await.1["membership"], "leave");
        let mut sent = Vec::new();
        for i in 0..messages {
            sent.push(send_text(a, &alice, &room, &format!("while bob was away {i}")).await);
            if i == messages / 2 {
                put_state(a, &alice, &room, "m.room.topic", json!({"topic": "changed while away"})).await;
            }
        }
        assert_eq!(join_via(b, &bob, &room, &["hs-a"]).await.0, 200);
        let mut seen: Vec<String> = Vec::new();
        let mut from: Option<String> = None;
        loop {
            let token = from.as_deref().map(|t| format!("&from={t}")).unwrap_or_default();
            let uri = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=10{token}", enc(&room));
            let page = b.get(&uri, bob.token()).await;
            assert_eq!(page.0, 200, "{}", page.1);
            seen.extend(page.1["chunk"].as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap().to_owned()));
            match page.1["end"].as_str() {
                Some(end) => from = Some(end.to_owned()),
                None => break,
            }
        }
        assert_eq!(seen, messages_backwards(a, &alice, &room).await, "v{version}: hs-b's timeline after the rejoin");
        seen.reverse();
        let messages_seen: Vec<String> = seen.into_iter().filter(|id| sent.contains(id)).collect();
        assert_eq!(messages_seen, sent, "v{version}: {messages} messages sent while bob was away");
        // The state resolved on hs-b has the topic set while it was away.
        let topic = b.get(&format!("/_matrix/client/v3/rooms/{}/state/m.room.topic", enc(&room)), bob.token()).await;
        assert_eq!(topic.1["topic"], "changed while away", "v{version}");
    }
}

/// When the other servers cannot be reached, `/messages` still serves the local history, ends
/// the room there, and does not wait for them again on the next page.
#[tokio::test]
async fn an_unreachable_server_leaves_the_local_history() {
    let crate::federation::Pair { a, b, fake: _fake, pki: _pki, peers: _, _dirs } = start_pair().await;
    let alice = a.register("alice", "pw").await;
    let bob = b.register("bob", "pw").await;
    let room = create_room(&a, &alice, json!({"preset": "public_chat"})).await;
    send_text(&a, &alice, &room, "before").await;
    assert_eq!(join_via(&b, &bob, &room, &["hs-a"]).await.0, 200);
    a.stop();
    let started = std::time::Instant::now();
    let first = messages_backwards(&b, &bob, &room).await;
    assert!(!first.is_empty(), "the join at least");
    let again = std::time::Instant::now();
    assert_eq!(messages_backwards(&b, &bob, &room).await, first);
    assert!(again.elapsed() < std::time::Duration::from_secs(2), "no second wait: {:?}", again.elapsed());
    assert!(started.elapsed() < std::time::Duration::from_secs(30), "{:?}", started.elapsed());
}

/// Event IDs of a room as `/messages` pages them backwards on Synapse.
async fn synapse_messages_backwards(synapse: &crate::peer_synapse::Synapse, token: &str, room: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut from: Option<String> = None;
    loop {
        let query = from.as_deref().map(|t| format!("&from={}", enc(t))).unwrap_or_default();
        let path = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=100{query}", enc(room));
        let page = synapse.client_get(&path, token).await;
        assert_eq!(page.0, 200, "{}", page.1);
        let chunk = page.1["chunk"].as_array().unwrap();
        ids.extend(chunk.iter().map(|e| e["event_id"].as_str().unwrap().to_owned()));
        match page.1["end"].as_str() {
            Some(end) if !chunk.is_empty() => from = Some(end.to_owned()),
            _ => return ids,
        }
    }
}

/// With a real Synapse (when `TRELLIS_SYNAPSE_PYTHON` is set): a Trellis user reads Synapse
/// history from before the join (Trellis backfills from Synapse), and a Synapse user reads
/// Trellis history from before theirs (Synapse backfills from Trellis).
#[tokio::test]
async fn history_before_a_join_is_backfilled_between_trellis_and_synapse() {
    let Some(crate::peer_synapse::Peers { synapse, trellis, trellis_name, .. }) =
        crate::peer_synapse::synapse_and_trellis().await
    else {
        return;
    };
    let alice = trellis.register("alice", "pw").await;
    let sam = synapse.register("sam").await;

    for version in ["10", "12"] {
        // Synapse's room, with history, joined from Trellis.
        let body = json!({"preset": "public_chat", "room_version": version});
        let created = synapse.client_post("/_matrix/client/v3/createRoom", &sam, body).await;
        assert_eq!(created.0, 200, "{}", created.1);
        let room = created.1["room_id"].as_str().unwrap().to_owned();
        for i in 0..15 {
            let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/s{version}-{i}", enc(&room));
            let sent =
                synapse.client_put(&path, &sam, json!({"msgtype": "m.text", "body": format!("synapse {i}")})).await;
            assert_eq!(sent.0, 200, "{}", sent.1);
        }
        let joined = join_via(&trellis, &alice, &room, &[&synapse.server_name]).await;
        assert_eq!(joined.0, 200, "v{version}: {}", joined.1);
        let on_trellis = messages_backwards(&trellis, &alice, &room).await;
        let on_synapse = synapse_messages_backwards(&synapse, &sam, &room).await;
        assert_eq!(on_trellis, on_synapse, "v{version}: Trellis backfilled Synapse's history");

        // Alice leaves; while she is away Synapse's room goes on; her rejoin pulls that history.
        let left =
            trellis.post(&format!("/_matrix/client/v3/rooms/{}/leave", enc(&room)), alice.token(), json!({})).await;
        assert_eq!(left.0, 200, "{}", left.1);
        let member = format!("/_matrix/client/v3/rooms/{}/state/m.room.member/{}", enc(&room), enc(&alice.user_id));
        for _ in 0..200 {
            if synapse.client_get(&member, &sam).await.1["membership"] == "leave" {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(synapse.client_get(&member, &sam).await.1["membership"], "leave", "v{version}");
        for i in 0..30 {
            let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/away{version}-{i}", enc(&room));
            let body = json!({"msgtype": "m.text", "body": format!("while alice was away {i}")});
            assert_eq!(synapse.client_put(&path, &sam, body).await.0, 200);
        }
        let joined = join_via(&trellis, &alice, &room, &[&synapse.server_name]).await;
        assert_eq!(joined.0, 200, "v{version}: {}", joined.1);
        let on_trellis = messages_backwards(&trellis, &alice, &room).await;
        let on_synapse = synapse_messages_backwards(&synapse, &sam, &room).await;
        assert_eq!(on_trellis, on_synapse, "v{version}: Trellis pulled the history since it left");

        // Trellis's room, with history, joined from Synapse.
        let room = crate::room_helpers::create_room(
            &trellis,
            &alice,
            json!({"preset": "public_chat", "room_version": version}),
        )
        .await;
        for i in 0..15 {
            crate::room_helpers::send_text(&trellis, &alice, &room, &format!("trellis {i}")).await;
        }
        let path = format!("/_matrix/client/v3/join/{}?via={trellis_name}", enc(&room));
        let joined = synapse.client_post(&path, &sam, json!({})).await;
        assert_eq!(joined.0, 200, "v{version}: {}", joined.1);
        let on_synapse = synapse_messages_backwards(&synapse, &sam, &room).await;
        let on_trellis = messages_backwards(&trellis, &alice, &room).await;
        assert_eq!(on_synapse, on_trellis, "v{version}: Synapse backfilled Trellis's history");
    }
}
