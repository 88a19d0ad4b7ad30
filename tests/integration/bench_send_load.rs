//! The benchmark's fixed-duration send mode, briefly (`--send-seconds 1 --repeat 2`), with the
//! disk report at the end: it runs against a real server without a failed request and writes
//! its figures (never judged by their values: this is not a timed test).

use std::process::Command;

use crate::harness::{SHARED_SECRET, TestServer};

#[tokio::test]
async fn send_load_mode_repeats_runs_and_reports_disk_per_event() {
    let server = TestServer::start().await;
    let url = server.base_url.clone();
    let json = tempfile::NamedTempFile::new().unwrap();
    let json_path = json.path().to_owned();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_trellis-bench"))
            .args(["--url", &url, "--registration-secret", SHARED_SECRET, "--smoke"])
            .args(["--send-seconds", "1", "--connections", "4", "--users", "2", "--rooms", "2", "--repeat", "2"])
            .args(["--prefix", "load", "--storage-report", "--json"])
            .arg(&json_path)
            .output()
    })
    .await
    .unwrap()
    .expect("trellis-bench runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "send load run failed:\n{stdout}\n{stderr}");
    let figures: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(json.path()).unwrap()).unwrap();
    for metric in [
        "send load rate",
        "send load p99",
        "send load run 2 rate",
        "send load run 2 rate / first",
        "send load slowest / first",
        "disk bytes per stored event",
        "disk bytes per event in pdus",
    ] {
        assert!(figures[metric]["value"].as_f64().is_some(), "{metric} missing: {figures}");
    }
    assert_eq!(figures["send load errors"]["value"], 0.0);
    let sent = figures["messages sent"]["value"].as_f64().unwrap();
    let stored = figures["stored events"]["value"].as_f64().unwrap();
    assert!(sent > 0.0 && stored > sent, "every message sent is stored, with the rooms' state: {figures}");
}
