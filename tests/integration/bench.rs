//! The benchmark's smoke run: `trellis-bench --smoke` in a short mode against a real server.
//! It fails if any request fails or any message is not received exactly once through /sync;
//! with `--sliding-sync`, also if the sliding sync list does not count every room.

use std::process::Command;

use crate::harness::{SHARED_SECRET, TestServer};

#[tokio::test]
async fn benchmark_smoke_run_loses_no_message() {
    let server = TestServer::start().await;
    let url = server.base_url.clone();
    let json = tempfile::NamedTempFile::new().unwrap();
    let json_path = json.path().to_owned();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_trellis-bench"))
            .args(["--url", &url, "--registration-secret", SHARED_SECRET, "--smoke", "--sliding-sync"])
            .args([
                "--users",
                "3",
                "--rooms",
                "2",
                "--messages",
                "15",
                "--round-trips",
                "3",
                "--incremental-syncs",
                "3",
            ])
            .arg("--json")
            .arg(&json_path)
            .output()
    })
    .await
    .unwrap()
    .expect("trellis-bench runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "smoke run failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("messages received via sync") && stdout.contains("45 of 45 (0 duplicates)"), "{stdout}");
    let figures: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(json.path()).unwrap()).unwrap();
    for metric in [
        "send throughput",
        "send latency p95",
        "send-to-receive latency p50",
        "initial sync",
        "incremental sync p99",
        "sliding sync first answer",
        "sliding sync send-to-receive latency p50",
    ] {
        assert!(figures[metric]["value"].as_f64().is_some(), "{metric} missing: {figures}");
    }
}
