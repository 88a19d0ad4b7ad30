//! Durability: an acknowledged write is on disk.
//!
//! - At the engine, a durable database syncs the write-ahead log for the batches it writes, and
//!   concurrent writers share syncs (RocksDB's group commit); with `rocksdb_durable_writes =
//!   false` it never syncs.
//! - Through the server, every message whose send was acknowledged is still there after the
//!   server is killed with SIGKILL in the middle of concurrent sends and started again on the
//!   same database, over several cycles.
//!
//! What the second test cannot show: SIGKILL ends the process, not the machine, and the kernel
//! still writes the page cache (which holds RocksDB's log) to disk afterwards, so it passes even
//! with unsynced writes. It proves crash consistency (nothing is acknowledged before it is
//! committed, and a commit survives the process); that the commit is also synced, so it survives
//! a power cut, is what the engine test checks by counting WAL syncs.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use trellis::{
    config::Config,
    storage::{Batch, Db, tables::META},
};

use crate::{
    harness::{Session, TestServer, config_text, enc},
    room_helpers::create_room,
};

/// Writers that commit at the same time, as the server's blocking threads do.
const WRITERS: usize = 8;

/// Opens the database the harness's config (plus `extra`) describes, and has `writers` threads
/// write `batches` small batches each at once. Returns the engine's counters for those writes
/// only, and prints them with the time per batch.
fn concurrent_writes(
    dir: &std::path::Path,
    extra: &str,
    writers: usize,
    batches: usize,
) -> trellis::storage::WriteStats {
    let text = config_text(dir, "localhost", extra);
    let config = Config::from_toml(&text, "test", Vec::new()).unwrap().config;
    let db = Db::open(&config).unwrap();
    let before = db.write_stats().expect("RocksDB counts its writes");
    let started = Instant::now();
    std::thread::scope(|scope| {
        for writer in 0..writers {
            let db = &db;
            scope.spawn(move || {
                for n in 0..batches {
                    let mut batch = Batch::new();
                    batch.put(&META, &format!("durability_test_{writer}_{n}"), &json!(n)).unwrap();
                    db.write(batch).unwrap();
                }
            });
        }
    });
    let elapsed = started.elapsed();
    let after = db.write_stats().unwrap();
    let stats = trellis::storage::WriteStats {
        durable: after.durable,
        batches: after.batches - before.batches,
        groups: after.groups - before.groups,
        syncs: after.syncs - before.syncs,
    };
    eprintln!(
        "{writers:2} writers, durable={:5}: {} batches in {} write groups, {} WAL syncs ({:.2} batches per \
         sync), {:.1} µs per batch",
        stats.durable,
        stats.batches,
        stats.groups,
        stats.syncs,
        stats.batches as f64 / stats.syncs.max(1) as f64,
        elapsed.as_secs_f64() * 1e6 / stats.batches.max(1) as f64
    );
    stats
}

#[test]
fn durable_writes_sync_the_log_and_share_syncs() {
    let tempdir = tempfile::tempdir().unwrap();
    let batches = 100;
    let stats = concurrent_writes(tempdir.path(), "", WRITERS, batches);
    assert!(stats.durable, "durable writes are the default");
    assert_eq!(stats.batches, (WRITERS * batches) as u64);
    // Every batch is in one write group and every group syncs the log (RocksDB also syncs when
    // it moves to a new log file, which these few small batches do not cause).
    assert!(stats.groups >= 1 && stats.groups <= stats.batches, "{stats:?}");
    assert!(stats.syncs >= stats.groups, "each write group syncs the log: {stats:?}");
    // Writers that queue while a sync runs share the next one (a weak check: the figures for
    // docs/performance.md come from `write_cost_by_concurrent_writers`).
    assert!(stats.groups < stats.batches, "no two concurrent batches shared a sync: {stats:?}");

    let tempdir = tempfile::tempdir().unwrap();
    let stats = concurrent_writes(tempdir.path(), "rocksdb_durable_writes = false", WRITERS, batches);
    assert!(!stats.durable);
    assert_eq!(stats.batches, (WRITERS * batches) as u64);
    assert_eq!(stats.syncs, 0, "unsynced writes never sync the log: {stats:?}");
}

/// The cost of a write by number of concurrent writers, durable and not, and how many batches
/// share a sync (for docs/performance.md; run with `--ignored --nocapture`).
#[test]
#[ignore = "a measurement, not a check"]
fn write_cost_by_concurrent_writers() {
    for extra in ["", "rocksdb_durable_writes = false"] {
        for writers in [1, 2, 4, 8, 16] {
            let tempdir = tempfile::tempdir().unwrap();
            concurrent_writes(tempdir.path(), extra, writers, 4000 / writers);
        }
    }
}

/// A client: its session and the room only it writes to.
struct Sender {
    session: Session,
    own_room: String,
}

/// Sends messages from every sender at once, alternating between its own room and the shared
/// one, until `stop` is set or a send fails (the server is gone). Returns (room, event, body) of
/// every acknowledged send.
fn send_until_stopped(
    base_url: String,
    senders: &[Sender],
    shared_room: &str,
    cycle: usize,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Vec<(String, String, String)>>> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let mut tasks = Vec::new();
    for (index, sender) in senders.iter().enumerate() {
        let (http, base_url, stop) = (http.clone(), base_url.clone(), stop.clone());
        let token = sender.session.access_token.clone();
        let rooms = [sender.own_room.clone(), shared_room.to_owned()];
        tasks.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            // Bounded in count as well as time.
            for n in 0..400 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let room = &rooms[n % 2];
                let body = format!("cycle {cycle} sender {index} message {n}");
                let url = format!("{base_url}/_matrix/client/v3/rooms/{}/send/m.room.message/c{cycle}-{n}", enc(room));
                let response =
                    http.put(url).bearer_auth(&token).json(&json!({"msgtype": "m.text", "body": body})).send().await;
                // A connection error or a cut-off response is not an acknowledgement: stop.
                let Ok(response) = response else { break };
                if response.status() != 200 {
                    break;
                }
                let Ok(reply) = response.json::<Value>().await else { break };
                let Some(event_id) = reply["event_id"].as_str() else { break };
                acknowledged.push((room.clone(), event_id.to_owned(), body));
            }
            acknowledged
        }));
    }
    tasks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_events_survive_sigkill_during_concurrent_sends() {
    let tempdir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(tempdir.path(), "localhost", "").unwrap();
    let mut senders = Vec::new();
    for index in 0..WRITERS {
        let session = server.register(&format!("writer{index}"), "pw").await;
        let own_room = create_room(&server, &session, json!({"preset": "private_chat"})).await;
        senders.push(Sender { session, own_room });
    }
    let shared_room = create_room(&server, &senders[0].session, json!({"preset": "public_chat"})).await;
    for sender in &senders[1..] {
        let (status, body) = server
            .post(&format!("/_matrix/client/v3/join/{}", enc(&shared_room)), sender.session.token(), json!({}))
            .await;
        assert_eq!(status, 200, "join: {body}");
    }

    let mut server = Some(server);
    let mut acknowledged: Vec<(usize, String, String, String)> = Vec::new();
    for cycle in 0..3 {
        let running = server.take().expect("a running server");
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = send_until_stopped(running.base_url.clone(), &senders, &shared_room, cycle, stop.clone());
        tokio::time::sleep(Duration::from_millis(1500)).await;
        // SIGKILL (the harness's `Child::kill`) while sends are in flight.
        drop(running);
        stop.store(true, Ordering::Relaxed);
        let mut this_cycle = 0;
        for (index, task) in tasks.into_iter().enumerate() {
            let sent = task.await.unwrap();
            this_cycle += sent.len();
            acknowledged.extend(sent.into_iter().map(|(room, event, body)| (index, room, event, body)));
        }
        assert!(this_cycle > 0, "cycle {cycle}: no send was acknowledged before the kill");

        let restarted = TestServer::start_in(tempdir.path(), "localhost", "").unwrap();
        let started = Instant::now();
        let mut missing = Vec::new();
        for (index, room, event_id, body) in &acknowledged {
            let path = format!("/_matrix/client/v3/rooms/{}/event/{}", enc(room), enc(event_id));
            let (status, event) = restarted.get(&path, senders[*index].session.token()).await;
            if status != 200 || event["content"]["body"] != *body.as_str() {
                missing.push(format!("{event_id} ({body}): {status} {event}"));
            }
        }
        eprintln!(
            "cycle {cycle}: {this_cycle} sends acknowledged before SIGKILL; all {} acknowledged so far checked in {:?}",
            acknowledged.len(),
            started.elapsed()
        );
        assert!(missing.is_empty(), "cycle {cycle}: acknowledged events lost after SIGKILL: {missing:#?}");
        server = Some(restarted);
    }

    // The shared room's timeline (not only the events by ID) survived too, in the order the
    // sends were acknowledged: each sender waited for one acknowledgement before the next send.
    let server = server.expect("a running server");
    let reader = &senders[0].session;
    let mut timeline = Vec::new();
    let mut from: Option<String> = None;
    for _ in 0..1000 {
        let mut path = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=100", enc(&shared_room));
        if let Some(from) = &from {
            path.push_str(&format!("&from={}", enc(from)));
        }
        let (status, page) = server.get(&path, reader.token()).await;
        assert_eq!(status, 200, "messages: {page}");
        let chunk = page["chunk"].as_array().cloned().unwrap_or_default();
        timeline.extend(chunk.iter().filter_map(|event| event["event_id"].as_str().map(str::to_owned)));
        match page["end"].as_str() {
            Some(end) if !chunk.is_empty() => from = Some(end.to_owned()),
            _ => break,
        }
    }
    timeline.reverse();
    let position: std::collections::HashMap<&str, usize> =
        timeline.iter().enumerate().map(|(i, id)| (id.as_str(), i)).collect();
    for index in 0..WRITERS {
        let positions: Vec<Option<usize>> = acknowledged
            .iter()
            .filter(|(sender, room, _, _)| *sender == index && *room == shared_room)
            .map(|(_, _, event_id, _)| position.get(event_id.as_str()).copied())
            .collect();
        assert!(positions.iter().all(Option::is_some), "sender {index}: acknowledged events missing from /messages");
        assert!(positions.windows(2).all(|pair| pair[0] < pair[1]), "sender {index}: timeline out of send order");
    }

    // And the rooms still take writes after the kills.
    let last = crate::room_helpers::send_text(&server, reader, &shared_room, "after the kills").await;
    let path = format!("/_matrix/client/v3/rooms/{}/event/{}", enc(&shared_room), enc(&last));
    assert_eq!(server.get(&path, reader.token()).await.0, 200);
}
