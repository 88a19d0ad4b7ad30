//! The benchmark's smoke run: `trellis-bench --smoke` in a short mode against a real server.
//! It fails if any request fails or any message is not received exactly once through /sync;
//! with `--sliding-sync`, also if the sliding sync list does not count every room.

use std::process::Command;

use crate::harness::{SHARED_SECRET, TestServer};

#[tokio::test]
async fn benchmark_smoke_run_loses_no_message() {
    let server = TestServer::start().await;
    let (stdout, figures) = run_bench(
        &server.base_url,
        &[
            "--smoke",
            "--sliding-sync",
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
        ],
    )
    .await;
    assert!(stdout.contains("messages received via sync") && stdout.contains("45 of 45 (0 duplicates)"), "{stdout}");
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

/// Runs `trellis-bench` against `url` with `args` (and `--json`); fails the test unless it
/// exits successfully. Its standard output and the figures it wrote.
pub(crate) async fn run_bench(url: &str, args: &[&str]) -> (String, serde_json::Value) {
    let json = tempfile::NamedTempFile::new().unwrap();
    let json_path = json.path().to_owned();
    let url = url.to_owned();
    let args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(crate::harness::bench_bin())
            .args(["--url", &url, "--registration-secret", SHARED_SECRET])
            .args(&args)
            .arg("--json")
            .arg(&json_path)
            .output()
    })
    .await
    .unwrap()
    .expect("trellis-bench runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "trellis-bench failed:\n{stdout}\n{stderr}");
    let figures = serde_json::from_str(&std::fs::read_to_string(json.path()).unwrap()).unwrap();
    (stdout, figures)
}
