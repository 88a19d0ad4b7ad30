//! The benchmark's fixed-duration send mode, briefly (`--send-seconds 1 --repeat 2`), with the
//! disk report at the end: it runs against a real server without a failed request and writes
//! its figures (never judged by their values: this is not a timed test).

use crate::{bench::run_bench, harness::TestServer};

#[tokio::test]
async fn send_load_mode_repeats_runs_and_reports_disk_per_event() {
    let server = TestServer::start().await;
    let (_, figures) = run_bench(
        &server.base_url,
        &[
            "--smoke",
            "--send-seconds",
            "1",
            "--connections",
            "4",
            "--users",
            "2",
            "--rooms",
            "2",
            "--repeat",
            "2",
            "--prefix",
            "load",
            "--storage-report",
        ],
    )
    .await;
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
