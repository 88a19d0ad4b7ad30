//! A second implementation: matrix-nio with its e2e extra (Python; `TRELLIS_PYTHON` names the
//! interpreter that has `matrix-nio[e2e]`, default `python3`) exchanges encrypted messages with
//! a matrix-sdk client in both directions. The script is tests/peers/nio_e2ee.py; the two sides
//! take turns over the script's stdin and stdout. Once on one server, and once across two
//! federating Trellis servers (nio on one, matrix-sdk on the other).

use std::{process::Stdio, time::Duration};

use matrix_sdk::ruma::{OwnedEventId, OwnedUserId, events::room::message::RoomMessageEventContent};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines},
    process::{ChildStdout, Command},
};

use crate::{
    federation::{decrypt_eventually, start_pair},
    harness::{TestServer, encrypted_room_with, room, sync},
};

const NIO_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../peers/nio_e2ee.py");

/// The script's next line, which must start with `prefix`; its rest.
async fn expect_line(lines: &mut Lines<BufReader<ChildStdout>>, prefix: &str) -> String {
    // A bound so a stuck script fails the test instead of hanging it.
    let line = tokio::time::timeout(Duration::from_secs(120), lines.next_line())
        .await
        .unwrap_or_else(|_| panic!("nio said nothing while we waited for {prefix}"))
        .expect("read nio's output")
        .unwrap_or_else(|| panic!("nio exited before {prefix} (its stderr is above)"));
    line.strip_prefix(&format!("{prefix} "))
        .unwrap_or_else(|| if line == prefix { "" } else { panic!("expected {prefix} from nio, got {line:?}") })
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_nio_and_matrix_sdk_exchange_encrypted_messages() {
    let server = TestServer::start();
    exchange(&server, &server).await;
}

/// matrix-nio on `hs-b` and matrix-sdk on `hs-a`: the invite, join, keys and events cross
/// federation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_nio_and_matrix_sdk_on_two_servers_exchange_encrypted_messages() {
    let pair = start_pair();
    exchange(&pair.a, &pair.b).await;
}

/// A matrix-sdk client on `rust_server` and the nio script on `nio_server` exchange messages.
async fn exchange(rust_server: &TestServer, nio_server: &TestServer) {
    let rusty = rust_server.register("rusty").await;
    sync(&rusty).await;

    let store = tempfile::tempdir().expect("tempdir");
    let python = std::env::var("TRELLIS_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let mut script = Command::new(&python)
        .arg(NIO_SCRIPT)
        .arg(&nio_server.base_url)
        .arg(store.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("run {python}: {e}"));
    let mut to_nio = script.stdin.take().expect("stdin");
    let mut from_nio = BufReader::new(script.stdout.take().expect("stdout")).lines();

    let nio_user: OwnedUserId = expect_line(&mut from_nio, "READY").await.parse().expect("nio's user ID");
    let room_id = encrypted_room_with(&rusty, &[nio_user]).await;
    to_nio.write_all(format!("ROOM {room_id}\n").as_bytes()).await.expect("write to nio");

    // nio -> matrix-sdk.
    let event_id: OwnedEventId = expect_line(&mut from_nio, "SENT").await.parse().expect("event ID");
    assert_eq!(decrypt_eventually(&rusty, &room_id, &event_id).await, "hello from nio, encrypted");

    // matrix-sdk -> nio: Rusty's client learned of nio's device when nio joined.
    let sent = room(&rusty, &room_id)
        .send(RoomMessageEventContent::text_plain("hello from matrix-sdk, encrypted"))
        .await
        .expect("send");
    to_nio.write_all(format!("SENT {}\n", sent.response.event_id).as_bytes()).await.expect("write to nio");
    expect_line(&mut from_nio, "OK").await;
    let status = script.wait().await.expect("nio exits");
    assert!(status.success(), "nio exited with {status}");
}
