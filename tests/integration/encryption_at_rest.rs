//! Encryption at rest (`encryption_at_rest`): no message body, display name, search word or
//! uploaded file appears in any file under the data directory with the option on (and they do
//! with it off); search and the user directory still work; a wrong or missing key stops start-up
//! and leaves every file unchanged; key rotation re-encrypts everything in the background, after
//! which the new key alone opens the server; trellis-bench runs against an encrypted server.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::{
    harness::{SHARED_SECRET, Session, TestServer, config_text, enc},
    room_helpers::{create_room, register_admin, send_text},
};

const KEY_A: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const KEY_B: &str = "2222222222222222222222222222222222222222222222222222222222222222";

/// A key file outside the data directory; returns its path.
fn key_file(dir: &Path, name: &str, key: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{key}\n")).unwrap();
    let mut permissions = std::fs::metadata(&path).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o600);
    std::fs::set_permissions(&path, permissions).unwrap();
    path
}

fn encrypted(key: &Path) -> String {
    format!("encryption_at_rest = true\nencryption_key_file = \"{}\"\n", key.display())
}

fn unique(prefix: &str) -> String {
    use rand::Rng;
    let tail: String =
        rand::thread_rng().sample_iter(&rand::distributions::Alphanumeric).take(12).map(char::from).collect();
    format!("{prefix}{}", tail.to_lowercase())
}

/// Every file under `dir` with its bytes.
fn files_under(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                pending.push(entry.path());
            } else {
                out.insert(entry.path(), std::fs::read(entry.path()).unwrap_or_default());
            }
        }
    }
    out
}

/// The files under `dir` holding `needle`.
fn holding(files: &BTreeMap<PathBuf, Vec<u8>>, needle: &[u8]) -> Vec<PathBuf> {
    files.iter().filter(|(_, bytes)| bytes.windows(needle.len()).any(|w| w == needle)).map(|(p, _)| p.clone()).collect()
}

async fn upload(server: &TestServer, session: &Session, bytes: Vec<u8>) -> String {
    let response = server
        .http
        .post(server.url("/_matrix/media/v3/upload?filename=plan.bin"))
        .bearer_auth(&session.access_token)
        .header("content-type", "application/octet-stream")
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = response.json().await.unwrap();
    body["content_uri"].as_str().unwrap().trim_start_matches("mxc://").to_owned()
}

async fn download(server: &TestServer, session: &Session, mxc: &str) -> Vec<u8> {
    let response = server
        .http
        .get(server.url(&format!("/_matrix/client/v1/media/download/{mxc}")))
        .bearer_auth(&session.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    response.bytes().await.unwrap().to_vec()
}

async fn search(server: &TestServer, session: &Session, term: &str) -> usize {
    let (status, body) = server
        .post(
            "/_matrix/client/v3/search",
            session.token(),
            json!({"search_categories": {"room_events": {"search_term": term}}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["search_categories"]["room_events"]["results"].as_array().map_or(0, Vec::len)
}

async fn directory(server: &TestServer, session: &Session, term: &str) -> Vec<String> {
    let (status, body) =
        server.post("/_matrix/client/v3/user_directory/search", session.token(), json!({"search_term": term})).await;
    assert_eq!(status, 200, "{body}");
    body["results"].as_array().unwrap().iter().map(|r| r["user_id"].as_str().unwrap().to_owned()).collect()
}

/// The unique strings one run writes.
struct Secrets {
    body: String,
    word: String,
    name: String,
    room_word: String,
    file: Vec<u8>,
    mxc: String,
}

/// Asserts that no secret is in `files`.
fn assert_no_secrets(files: &BTreeMap<PathBuf, Vec<u8>>, secrets: &Secrets) {
    let lowercase_name = secrets.name.to_lowercase();
    let needles: [(&str, &[u8]); 6] = [
        ("room name word", secrets.room_word.as_bytes()),
        ("message body", secrets.body.as_bytes()),
        ("search word", secrets.word.as_bytes()),
        ("display name", secrets.name.as_bytes()),
        ("display name word", lowercase_name.as_bytes()),
        ("file", &secrets.file[..64]),
    ];
    for (what, needle) in needles {
        let found = holding(files, needle);
        assert!(found.is_empty(), "encrypted: the {what} is in {found:?}");
    }
}

/// Writes a message, a display name and a file holding the secrets, checks that search and the
/// user directory (by a prefix of the name) find them, and stops the server (which flushes).
async fn write_secrets(server: TestServer) -> Secrets {
    let word = unique("quokkaword");
    let mut secrets = Secrets {
        body: unique("thesecretplanis"),
        name: format!("Zebulon{}", unique("")),
        room_word: unique("roomnameword"),
        file: unique("filemark").repeat(20_000).into_bytes(),
        word,
        mxc: String::new(),
    };
    let alice = server.register("alice", "pw-alice").await;
    let bob = server.register("bob", "pw-bob").await;
    // The room's first events (name, topic) are built on a staged view of the database.
    let room = create_room(
        &server,
        &alice,
        json!({"preset": "public_chat", "name": format!("Club {}", secrets.room_word), "topic": secrets.room_word}),
    )
    .await;
    let (status, _) =
        server.post(&format!("/_matrix/client/v3/rooms/{}/join", enc(&room)), bob.token(), json!({})).await;
    assert_eq!(status, 200);
    send_text(&server, &alice, &room, &format!("{} {}", secrets.body, secrets.word)).await;
    let (status, _) = server
        .put(
            "/_matrix/client/v3/profile/@alice:localhost/displayname",
            alice.token(),
            json!({"displayname": secrets.name}),
        )
        .await;
    assert_eq!(status, 200);
    secrets.mxc = upload(&server, &alice, secrets.file.clone()).await;
    assert_eq!(download(&server, &bob, &secrets.mxc).await, secrets.file);
    assert_eq!(search(&server, &bob, &secrets.word).await, 1);
    assert_eq!(search(&server, &bob, &secrets.room_word).await, 2);
    // A prefix of the display name finds her.
    let prefix = &secrets.name[..secrets.name.len() - 4];
    assert_eq!(directory(&server, &bob, prefix).await, ["@alice:localhost"]);
    assert_eq!(directory(&server, &bob, "alice").await, ["@alice:localhost"]);
    assert_eq!(server.stop(), Some(0));
    secrets
}

#[tokio::test]
async fn no_secret_is_in_the_data_directory_with_encryption_and_all_are_without() {
    for encrypt in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let keys = tempfile::tempdir().unwrap();
        let extra = if encrypt { encrypted(&key_file(keys.path(), "key", KEY_A)) } else { String::new() };
        let server = TestServer::start_in(dir.path(), "localhost", &extra).unwrap();
        let secrets = write_secrets(server).await;
        let files = files_under(&dir.path().join("db"));
        if encrypt {
            assert_no_secrets(&files, &secrets);
            continue;
        }
        let lowercase_name = secrets.name.to_lowercase();
        let needles: [(&str, &[u8]); 6] = [
            ("room name word", secrets.room_word.as_bytes()),
            ("message body", secrets.body.as_bytes()),
            ("search word", secrets.word.as_bytes()),
            ("display name", secrets.name.as_bytes()),
            ("display name word (the index)", lowercase_name.as_bytes()),
            ("file", &secrets.file[..64]),
        ];
        for (what, needle) in needles {
            assert!(!holding(&files, needle).is_empty(), "plaintext: the {what} should be on disk");
        }
    }
}

/// Starts a server on `dir` expecting it to fail; returns its stderr.
fn refused(dir: &Path, extra: &str) -> String {
    match TestServer::start_in(dir, "localhost", extra) {
        Ok(server) => {
            server.stop();
            panic!("the server started with {extra:?}");
        }
        Err(stderr) => stderr,
    }
}

#[tokio::test]
async fn a_wrong_or_missing_key_stops_start_up_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let key_a = key_file(keys.path(), "a", KEY_A);
    let key_b = key_file(keys.path(), "b", KEY_B);
    let server = TestServer::start_in(dir.path(), "localhost", &encrypted(&key_a)).unwrap();
    server.register("alice", "pw-alice").await;
    assert_eq!(server.stop(), Some(0));
    let data = dir.path().join("db");
    let before = files_under(&data);

    let stderr = refused(dir.path(), &encrypted(&key_b));
    assert!(stderr.contains("wrong encryption key") && stderr.contains("nothing was changed on disk"), "{stderr}");
    assert!(files_under(&data) == before, "a wrong key changed files");

    let stderr = refused(dir.path(), "encryption_at_rest = true\n");
    assert!(stderr.contains("no encryption key was given"), "{stderr}");
    assert!(files_under(&data) == before, "a missing key changed files");

    let stderr = refused(dir.path(), "");
    assert!(stderr.contains("is encrypted at rest"), "{stderr}");
    assert!(files_under(&data) == before, "encryption off changed files");

    // The right key, from the environment this time, opens it.
    let config = dir.path().join("trellis.toml");
    std::fs::write(&config, config_text(dir.path(), "localhost", "encryption_at_rest = true\n")).unwrap();
    let mut command = Command::new(crate::harness::trellis_bin());
    command.arg("--config").arg(&config);
    for (name, _) in std::env::vars() {
        if name.starts_with("TRELLIS_") || name.starts_with("CONDUIT_") {
            command.env_remove(name);
        }
    }
    command.env("TRELLIS_ENCRYPTION_KEY", KEY_A);
    let server = TestServer::spawn(command, false).expect("starts with the key from the environment");
    assert_eq!(server.login("alice", "pw-alice").await.0, 200);
    server.stop();
}

#[tokio::test]
async fn turning_encryption_on_encrypts_an_existing_database_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(dir.path(), "localhost", "").unwrap();
    let secrets = write_secrets(server).await;
    let data = dir.path().join("db");
    assert!(!holding(&files_under(&data), secrets.body.as_bytes()).is_empty());
    let server = TestServer::start_in(dir.path(), "localhost", &encrypted(&key_file(keys.path(), "a", KEY_A))).unwrap();
    let bob = Session::from_response(&server.login("bob", "pw-bob").await.1);
    assert_eq!(search(&server, &bob, &secrets.word).await, 1);
    assert_eq!(search(&server, &bob, &secrets.room_word).await, 2);
    assert_eq!(directory(&server, &bob, &secrets.name[..secrets.name.len() - 4]).await, ["@alice:localhost"]);
    assert_eq!(download(&server, &bob, &secrets.mxc).await, secrets.file);
    assert_eq!(server.stop(), Some(0));
    assert_no_secrets(&files_under(&data), &secrets);
}

async fn encryption_status(server: &TestServer, admin: &Session) -> Value {
    let (status, body) = server.get("/_trellis/admin/v1/encryption", admin.token()).await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn key_rotation_re_encrypts_everything_and_then_the_new_key_alone_opens_it() {
    let dir = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let key_a = key_file(keys.path(), "a", KEY_A);
    let key_b = key_file(keys.path(), "b", KEY_B);
    let server = TestServer::start_in(dir.path(), "localhost", &encrypted(&key_a)).unwrap();
    let admin = register_admin(&server, "root").await;
    let alice = server.register("alice", "pw-alice").await;
    let room = create_room(&server, &alice, json!({"name": "Rotation"})).await;
    for i in 0..40 {
        send_text(&server, &alice, &room, &format!("message {i} about wombats")).await;
    }
    let file = b"rotated file bytes ".repeat(10_000);
    let mxc = upload(&server, &alice, file.clone()).await;
    let status_a = encryption_status(&server, &admin).await;
    assert_eq!(status_a["enabled"], true);
    assert!(status_a["rotation"].is_null());
    assert_eq!(server.stop(), Some(0));

    // New key B, old key A: the rotation runs in the background until nothing is under A.
    let rotating = format!("{}encryption_old_key_file = \"{}\"\n", encrypted(&key_b), key_a.display());
    let server = TestServer::start_in(dir.path(), "localhost", &rotating).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status_b = loop {
        let status = encryption_status(&server, &admin).await;
        if status["rotation"].is_null() {
            break status;
        }
        assert!(Instant::now() < deadline, "the rotation did not finish: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_ne!(status_a["active_key_id"], status_b["active_key_id"]);
    assert_eq!(server.stop(), Some(0));

    // Only B now; A alone no longer opens the database.
    let stderr = refused(dir.path(), &encrypted(&key_a));
    assert!(stderr.contains("wrong encryption key"), "{stderr}");
    let server = TestServer::start_in(dir.path(), "localhost", &encrypted(&key_b)).unwrap();
    let alice = Session::from_response(&server.login("alice", "pw-alice").await.1);
    let (status, body) = server
        .get_owned(format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=100", enc(&room)), alice.token())
        .await;
    assert_eq!(status, 200);
    let bodies: Vec<&str> =
        body["chunk"].as_array().unwrap().iter().filter_map(|e| e["content"]["body"].as_str()).collect();
    assert_eq!(bodies.len(), 40, "{bodies:?}");
    assert_eq!(download(&server, &alice, &mxc).await, file);
    assert!(search(&server, &alice, "wombats").await > 0);
    assert_eq!(encryption_status(&server, &admin).await["active_key_id"], status_b["active_key_id"]);
    server.stop();
}

#[tokio::test]
async fn the_benchmark_runs_against_an_encrypted_server() {
    let dir = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(dir.path(), "localhost", &encrypted(&key_file(keys.path(), "a", KEY_A))).unwrap();
    let url = server.base_url.clone();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(crate::harness::bench_bin())
            .args(["--url", &url, "--registration-secret", SHARED_SECRET, "--smoke"])
            .args([
                "--users",
                "2",
                "--rooms",
                "1",
                "--messages",
                "10",
                "--round-trips",
                "2",
                "--incremental-syncs",
                "2",
            ])
            .output()
    })
    .await
    .unwrap()
    .expect("trellis-bench runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("20 of 20 (0 duplicates)"), "{stdout}");
    server.stop();
}
