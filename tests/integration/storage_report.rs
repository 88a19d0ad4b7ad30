//! The storage report: `GET /_trellis/admin/v1/storage/tables` and `POST .../storage/compact`
//! (admins only) give each table's size and the bytes per stored event, and a table grows as
//! events are written; `trellis storage --compact` gives the same report on the stopped server's
//! database.

use std::process::Command;

use serde_json::{Value, json};

use crate::{
    harness::{TestServer, assert_error},
    room_helpers::{create_room, register_admin, send_text},
};

const TABLES: &str = "/_trellis/admin/v1/storage/tables";
const COMPACT: &str = "/_trellis/admin/v1/storage/compact";

fn table<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["tables"].as_array().and_then(|t| t.iter().find(|t| t["table"] == name)).unwrap_or(&Value::Null)
}

fn number(value: &Value, key: &str) -> u64 {
    value[key].as_u64().unwrap_or_else(|| panic!("{key} missing in {value}"))
}

#[tokio::test]
async fn storage_report_shows_tables_growing_and_bytes_per_event() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(dir.path(), "localhost", "").expect("server starts");
    let admin = register_admin(&server, "storageadmin").await;
    let alice = server.register("alice", "alice-password").await;
    assert_error(&server.get(TABLES, alice.token()).await, 403, "M_FORBIDDEN");
    assert_error(&server.post(COMPACT, alice.token(), json!({})).await, 403, "M_FORBIDDEN");

    let room = create_room(&server, &alice, json!({"preset": "public_chat"})).await;
    let (status, before) = server.post(COMPACT, admin.token(), json!({})).await;
    assert_eq!(status, 200, "{before}");
    let events_before = number(&before, "stored_events");
    assert!(events_before >= 5, "createRoom stored its state events: {before}");
    let pdus_before = number(table(&before, "pdus"), "disk_bytes");
    assert!(pdus_before > 0, "after a compaction the events are in files: {before}");

    let text = "x".repeat(1000);
    for _ in 0..40 {
        send_text(&server, &alice, &room, &text).await;
    }
    // Without compaction the new events may still be in memory: disk plus memory grew.
    let (status, live) = server.get(TABLES, admin.token()).await;
    assert_eq!(status, 200, "{live}");
    let pdus_live = table(&live, "pdus");
    assert!(
        number(pdus_live, "disk_bytes") + number(pdus_live, "memory_bytes") > pdus_before,
        "the events table grew: {pdus_live}"
    );
    assert_eq!(number(&live, "stored_events"), events_before + 40);

    let (status, after) = server.post(COMPACT, admin.token(), json!({})).await;
    assert_eq!(status, 200, "{after}");
    let pdus_after = table(&after, "pdus");
    assert!(
        number(pdus_after, "disk_bytes") >= pdus_before + 40 * 200,
        "40 events of 1 KB (compressed) are on disk: {pdus_before} then {pdus_after}"
    );
    assert!(number(pdus_after, "estimated_keys") >= events_before + 40, "{pdus_after}");
    let tables = after["tables"].as_array().unwrap();
    let disk: u64 = tables.iter().map(|t| number(t, "disk_bytes")).sum();
    assert_eq!(number(&after, "disk_bytes"), disk, "the total is the sum of the tables");
    let per_event = number(&after, "disk_bytes_per_event");
    assert_eq!(per_event, disk / number(&after, "stored_events"));
    assert!((200..1_000_000).contains(&per_event), "plausible bytes per event: {per_event}");
    let sizes: Vec<u64> = tables.iter().map(|t| number(t, "disk_bytes") + number(t, "memory_bytes")).collect();
    assert!(sizes.windows(2).all(|w| w[0] >= w[1]), "largest tables first: {sizes:?}");

    // The same report from the command line, on the stopped server's database.
    server.stop();
    let output = Command::new(crate::harness::trellis_bin())
        .arg("--config")
        .arg(dir.path().join("trellis.toml"))
        .args(["storage", "--compact"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let offline: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(number(&offline, "stored_events"), number(&after, "stored_events"));
    assert!(number(table(&offline, "pdus"), "disk_bytes") > 0, "{offline}");
}
