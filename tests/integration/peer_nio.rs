//! A real third-party client: matrix-nio (PyPI) registers, logs in, uses the profile and
//! devices, and logs out against Trellis; two nio clients sync and read each other's
//! messages; nio searches messages and the user directory; and nio reads threads, relations
//! and edits. `.ci/run` installs matrix-nio; `TRELLIS_PYTHON` names the interpreter that has it
//! (default `python3`).

use std::process::Command;

use crate::harness::TestServer;

/// Runs a matrix-nio script against a fresh server and asserts it printed `OK`.
async fn run_nio_script(script: &'static str) {
    let server = TestServer::start().await;
    let python = std::env::var("TRELLIS_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let base_url = server.base_url.clone();
    let output = tokio::task::spawn_blocking(move || Command::new(python).arg(script).arg(base_url).output())
        .await
        .unwrap()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success() && stdout.contains("OK"), "nio failed:\n{stdout}\n{stderr}");
}

#[tokio::test]
async fn matrix_nio_registers_logs_in_and_out() {
    run_nio_script(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/nio_accounts.py")).await;
}

/// Two nio clients: an invite, a join, and a message read through a long-polling sync.
#[tokio::test]
async fn matrix_nio_syncs_and_reads_a_message() {
    run_nio_script(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/nio_sync.py")).await;
}

/// nio sends messages, reads them with `room_messages`, searches them (raw `/search`, parsed
/// with nio's event parser), pages with `next_batch` and uses the user directory.
#[tokio::test]
async fn matrix_nio_searches_messages() {
    run_nio_script(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/nio_search.py")).await;
}

/// nio pages through a thread's relations, lists the room's threads, and reads a bundled edit.
#[tokio::test]
async fn matrix_nio_reads_threads_and_edits() {
    run_nio_script(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/nio_relations.py")).await;
}
