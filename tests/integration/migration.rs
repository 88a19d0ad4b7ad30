//! Schema migrations on a real database: a schema 1 database (whole auth chains stored, no
//! timestamp index) is upgraded at start-up and serves rooms as before; a schema 2 database (no
//! search index, no user directory, no relations index) gets them.

use std::collections::{BTreeSet, HashMap};

use serde_json::json;
use trellis::{
    config::Config,
    storage::{
        Batch, Db, SCHEMA_VERSION,
        room_tables::{AUTH_EDGES, LEGACY_AUTH_CHAINS, PDUS, ROOM_SERVERS, TIMELINE, TIMELINE_BY_TS},
        search_tables::{SEARCH_POSTINGS, USER_DIRECTORY, USER_DIRECTORY_WORDS},
        tables::META,
    },
};

use crate::{
    harness::{TestServer, config_text, enc},
    room_helpers::{create_room, join, redact, send_event, send_text},
};

fn open(dir: &std::path::Path) -> Db {
    let config = Config::from_toml(&config_text(dir, "localhost", ""), "test", Vec::new()).unwrap().config;
    Db::open(&config).unwrap()
}

/// Everything reachable from `direct` through `edges`.
fn chain(edges: &HashMap<u64, Vec<u64>>, direct: &[u64]) -> Vec<u64> {
    let mut seen = BTreeSet::new();
    let mut stack = direct.to_vec();
    while let Some(event) = stack.pop() {
        if seen.insert(event) {
            stack.extend(edges.get(&event).into_iter().flatten().copied());
        }
    }
    seen.into_iter().collect()
}

#[tokio::test]
async fn a_schema_1_database_is_migrated_at_start_up() {
    let tempdir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(tempdir.path(), "localhost", "").unwrap();
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;
    let mut sent = Vec::new();
    for i in 0..5 {
        sent.push(send_text(&server, if i % 2 == 0 { &alice } else { &bob }, &room, &format!("m{i}")).await);
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let ts_path =
        |ts: u64, dir: &str| format!("/_matrix/client/v1/rooms/{}/timestamp_to_event?ts={ts}&dir={dir}", enc(&room));
    let event_path = |id: &str| format!("/_matrix/client/v3/rooms/{}/event/{}", enc(&room), enc(id));
    let ts2 = server.get(&event_path(&sent[2]), alice.token()).await.1["origin_server_ts"].as_u64().unwrap();
    assert_eq!(server.stop(), Some(0));

    // Back to schema 1: whole chains instead of edges, no timestamp index.
    let (edges, events) = {
        let db = open(tempdir.path());
        let edges: HashMap<u64, Vec<u64>> = AUTH_EDGES.all(&db).unwrap().into_iter().collect();
        assert_eq!(edges.len(), PDUS.all(&db).unwrap().len());
        let mut batch = Batch::new();
        for (event, direct) in &edges {
            batch.put(&LEGACY_AUTH_CHAINS, event, &chain(&edges, direct)).unwrap();
            batch.delete(&AUTH_EDGES, event);
        }
        for (key, _) in TIMELINE_BY_TS.all(&db).unwrap() {
            batch.delete(&TIMELINE_BY_TS, &key);
        }
        batch.put(&META, &"schema_version".to_owned(), &json!(1)).unwrap();
        db.write(batch).unwrap();
        db.flush().unwrap();
        (edges, TIMELINE.all(&db).unwrap().len())
    };

    // The upgraded server finds events by timestamp and accepts new events (their auth chains
    // come from the migrated edges).
    let server = TestServer::start_in(tempdir.path(), "localhost", "").unwrap();
    let found = server.get(&ts_path(ts2, "f"), alice.token()).await;
    assert_eq!(found.0, 200, "{}", found.1);
    assert_eq!(found.1["event_id"], sent[2]);
    assert_eq!(server.get(&ts_path(ts2, "b"), alice.token()).await.1["event_id"], sent[2]);
    let topic = format!("/_matrix/client/v3/rooms/{}/state/m.room.topic", enc(&room));
    assert_eq!(server.put(&topic, alice.token(), json!({"topic": "after"})).await.0, 200);
    send_text(&server, &bob, &room, "after the upgrade").await;
    assert_eq!(server.stop(), Some(0));

    let db = open(tempdir.path());
    assert_eq!(META.get(&db, &"schema_version".to_owned()).unwrap(), Some(json!(SCHEMA_VERSION)));
    assert!(LEGACY_AUTH_CHAINS.all(&db).unwrap().is_empty());
    for (event, direct) in &edges {
        assert_eq!(AUTH_EDGES.get(&db, event).unwrap().as_ref(), Some(direct), "edges of {event}");
    }
    assert_eq!(AUTH_EDGES.all(&db).unwrap().len(), edges.len() + 2);
    assert_eq!(TIMELINE_BY_TS.all(&db).unwrap().len(), events + 2);
}

#[tokio::test]
async fn a_schema_2_database_gets_its_search_index_and_user_directory() {
    let tempdir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(tempdir.path(), "localhost", "").unwrap();
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let name_path = format!("/_matrix/client/v3/profile/{}/displayname", enc(&alice.user_id));
    assert_eq!(server.put(&name_path, alice.token(), json!({"displayname": "Alice Cooper"})).await.0, 200);
    let room = create_room(&server, &alice, json!({"preset": "public_chat", "topic": "old songs"})).await;
    let hello = send_text(&server, &alice, &room, "hello from before").await;
    assert_eq!(server.stop(), Some(0));

    // Back to schema 2: no search rows, no directory.
    {
        let db = open(tempdir.path());
        let mut batch = Batch::new();
        for (key, _) in SEARCH_POSTINGS.all(&db).unwrap() {
            batch.delete(&SEARCH_POSTINGS, &key);
        }
        for (key, _) in USER_DIRECTORY_WORDS.all(&db).unwrap() {
            batch.delete(&USER_DIRECTORY_WORDS, &key);
        }
        for (key, _) in USER_DIRECTORY.all(&db).unwrap() {
            batch.delete(&USER_DIRECTORY, &key);
        }
        batch.put(&META, &"schema_version".to_owned(), &json!(2)).unwrap();
        db.write(batch).unwrap();
        db.flush().unwrap();
    }

    let server = TestServer::start_in(tempdir.path(), "localhost", "").unwrap();
    let search = |term: &str| json!({"search_categories": {"room_events": {"search_term": term}}});
    let (status, found) = server.post("/_matrix/client/v3/search", alice.token(), search("hello")).await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["search_categories"]["room_events"]["results"][0]["result"]["event_id"], hello, "{found}");
    let (_, found) = server.post("/_matrix/client/v3/search", alice.token(), search("songs")).await;
    assert_eq!(found["search_categories"]["room_events"]["count"], 1, "{found}");
    let (status, found) =
        server.post("/_matrix/client/v3/user_directory/search", bob.token(), json!({"search_term": "cooper"})).await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["results"][0]["user_id"], alice.user_id, "{found}");
    let (_, found) =
        server.post("/_matrix/client/v3/user_directory/search", alice.token(), json!({"search_term": "bob"})).await;
    assert_eq!(found["results"], json!([]), "bob is in no room: {found}");
    assert_eq!(server.stop(), Some(0));
}

/// Every row of the relation tables, as JSON, for comparing two databases.
fn relation_rows(db: &Db) -> Vec<serde_json::Value> {
    use trellis::storage::relation_tables::{
        ANNOTATIONS, RELATIONS, RELATIONS_BY_TYPE, ROOM_THREADS, THREAD_SUMMARIES,
    };
    let mut rows = Vec::new();
    rows.extend(ANNOTATIONS.all(db).unwrap().iter().map(|(k, v)| json!(["a", k, v])));
    rows.extend(RELATIONS.all(db).unwrap().iter().map(|(k, v)| json!(["r", k, serde_json::to_value(v).unwrap()])));
    rows.extend(RELATIONS_BY_TYPE.all(db).unwrap().iter().map(|(k, v)| json!(["t", k, v])));
    rows.extend(
        THREAD_SUMMARIES.all(db).unwrap().iter().map(|(k, v)| json!(["s", k, serde_json::to_value(v).unwrap()])),
    );
    rows.extend(ROOM_THREADS.all(db).unwrap().iter().map(|(k, ())| json!(["o", k])));
    rows
}

#[tokio::test]
async fn a_schema_2_database_gets_its_relations_indexed() {
    let tempdir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(tempdir.path(), "localhost", "").unwrap();
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;
    let root = send_text(&server, &alice, &room, "root").await;
    let thread = |body: &str| json!({"msgtype": "m.text", "body": body, "m.relates_to": {"rel_type": "m.thread", "event_id": root}});
    let send = |who: &'static str, content: serde_json::Value| {
        let session = if who == "alice" { alice.clone() } else { bob.clone() };
        let (server, room) = (&server, room.clone());
        async move { send_event(server, &session, &room, "m.room.message", content).await }
    };
    send("bob", thread("bob 1")).await;
    let removed = send("bob", thread("bob 2")).await;
    let own = send("alice", thread("alice")).await;
    let edit = send(
        "alice",
        json!({"msgtype": "m.text", "body": "* x", "m.new_content": {"msgtype": "m.text", "body": "x"},
                         "m.relates_to": {"rel_type": "m.replace", "event_id": root}}),
    )
    .await;
    send(
        "bob",
        json!({"msgtype": "m.text", "body": "ref", "m.relates_to": {"rel_type": "m.reference", "event_id": root}}),
    )
    .await;
    let reaction = |key: &str| json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": root, "key": key}});
    send_event(&server, &bob, &room, "m.reaction", reaction("👍")).await;
    let withdrawn = send_event(&server, &bob, &room, "m.reaction", reaction("🎉")).await;
    redact(&server, &bob, &room, &withdrawn).await;
    // The creator removes one of bob's replies and her own latest one; bob's attempt on
    // alice's edit does not apply.
    redact(&server, &alice, &room, &removed).await;
    redact(&server, &alice, &room, &own).await;
    redact(&server, &bob, &room, &edit).await;
    let event_path = format!("/_matrix/client/v3/rooms/{}/event/{}", enc(&room), enc(&root));
    let before = server.get(&event_path, bob.token()).await.1;
    assert_eq!(before["unsigned"]["m.relations"]["m.thread"]["count"], 1, "{before}");
    assert_eq!(before["unsigned"]["m.relations"]["m.replace"]["event_id"], edit, "{before}");
    assert_eq!(server.stop(), Some(0));

    // Back to schema 2: no relations index.
    let expected = {
        let db = open(tempdir.path());
        let rows = relation_rows(&db);
        assert!(!rows.is_empty());
        use trellis::storage::relation_tables::{
            ANNOTATIONS, RELATIONS, RELATIONS_BY_TYPE, ROOM_THREADS, THREAD_SUMMARIES,
        };
        let mut batch = Batch::new();
        ANNOTATIONS.all(&db).unwrap().iter().for_each(|(k, _)| batch.delete(&ANNOTATIONS, k));
        RELATIONS.all(&db).unwrap().iter().for_each(|(k, _)| batch.delete(&RELATIONS, k));
        RELATIONS_BY_TYPE.all(&db).unwrap().iter().for_each(|(k, _)| batch.delete(&RELATIONS_BY_TYPE, k));
        THREAD_SUMMARIES.all(&db).unwrap().iter().for_each(|(k, _)| batch.delete(&THREAD_SUMMARIES, k));
        ROOM_THREADS.all(&db).unwrap().iter().for_each(|(k, _)| batch.delete(&ROOM_THREADS, k));
        batch.put(&META, &"schema_version".to_owned(), &json!(2)).unwrap();
        db.write(batch).unwrap();
        db.flush().unwrap();
        rows
    };

    let server = TestServer::start_in(tempdir.path(), "localhost", "").unwrap();
    let after = server.get(&event_path, bob.token()).await.1;
    assert_eq!(after, before);
    assert_eq!(server.stop(), Some(0));
    let db = open(tempdir.path());
    assert_eq!(META.get(&db, &"schema_version".to_owned()).unwrap(), Some(json!(SCHEMA_VERSION)));
    assert_eq!(relation_rows(&db), expected);
}

/// A schema 4 database learns how many users of each server are joined to each room: the
/// counts match what the writer keeps, including a user who left.
#[tokio::test]
async fn a_schema_4_database_counts_the_servers_in_its_rooms() {
    let tempdir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(tempdir.path(), "localhost", "").unwrap();
    let (alice, bob, carol) = (
        server.register("alice", "pw").await,
        server.register("bob", "pw").await,
        server.register("carol", "pw").await,
    );
    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    join(&server, &bob, &room).await;
    join(&server, &carol, &room).await;
    let leave = format!("/_matrix/client/v3/rooms/{}/leave", enc(&room));
    assert_eq!(server.post(&leave, carol.token(), json!({})).await.0, 200);
    let other = create_room(&server, &bob, json!({})).await;
    assert_eq!(
        server.post(&format!("/_matrix/client/v3/rooms/{}/leave", enc(&other)), bob.token(), json!({})).await.0,
        200
    );
    assert_eq!(server.stop(), Some(0));

    let written = {
        let db = open(tempdir.path());
        let written = ROOM_SERVERS.all(&db).unwrap();
        // The room has 2 joined users of this server; the one everyone left has no row.
        assert_eq!(written.iter().map(|(_, count)| *count).collect::<Vec<_>>(), vec![2], "{written:?}");
        let mut batch = Batch::new();
        for (key, _) in &written {
            batch.delete(&ROOM_SERVERS, key);
        }
        batch.put(&META, &"schema_version".to_owned(), &json!(4)).unwrap();
        db.write(batch).unwrap();
        db.flush().unwrap();
        written
    };
    let server = TestServer::start_in(tempdir.path(), "localhost", "").unwrap();
    assert_eq!(server.stop(), Some(0));
    let db = open(tempdir.path());
    assert_eq!(ROOM_SERVERS.all(&db).unwrap(), written);
    assert_eq!(META.get(&db, &"schema_version".to_owned()).unwrap(), Some(json!(SCHEMA_VERSION)));
}
