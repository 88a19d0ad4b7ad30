//! Online backup and restore (`trellis backup create|verify|restore`, and
//! `POST /_trellis/admin/v1/backup`): a backup taken while eight clients send holds every event
//! acknowledged before it began, restores into an empty directory, and the restored server
//! serves them and passes the smoke benchmark. A second backup beside the first is
//! incremental; a corrupted or missing file fails verification by name; restore refuses
//! another server's backup, a newer schema and a non-empty target.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::{
    harness::{SHARED_SECRET, Session, TestServer, assert_error, config_text, enc},
    room_helpers::{create_room, join, register_admin},
};

/// Runs the `trellis` binary with `args`, an admin token in the environment if given.
pub async fn cli(args: Vec<String>, token: Option<&str>) -> Output {
    let token = token.map(str::to_owned);
    tokio::task::spawn_blocking(move || {
        let mut command = Command::new(crate::harness::trellis_bin());
        for (name, _) in std::env::vars() {
            if name.starts_with("TRELLIS_") || name.starts_with("CONDUIT_") {
                command.env_remove(name);
            }
        }
        if let Some(token) = token {
            command.env("TRELLIS_ADMIN_TOKEN", token);
        }
        command.args(args).output().expect("trellis runs")
    })
    .await
    .expect("cli task")
}

pub fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

pub fn args(items: &[&dyn AsRef<std::ffi::OsStr>]) -> Vec<String> {
    items.iter().map(|item| item.as_ref().to_string_lossy().into_owned()).collect()
}

fn manifest(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).expect("manifest")).expect("manifest json")
}

/// Writes a config for a server named `server_name` with its data in `dir`; returns its path.
fn write_config(dir: &Path, server_name: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("trellis.toml");
    std::fs::write(&path, config_text(dir, server_name, "")).unwrap();
    path
}

/// Every event ID of a room's timeline a member can read, through `/messages`.
async fn room_event_ids(server: &TestServer, session: &Session, room_id: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut from: Option<String> = None;
    loop {
        let mut path = format!("/_matrix/client/v3/rooms/{}/messages?dir=f&limit=500", enc(room_id));
        if let Some(token) = &from {
            path.push_str(&format!("&from={}", enc(token)));
        }
        let (status, page) = server.get(&path, session.token()).await;
        assert_eq!(status, 200, "{page}");
        let chunk = page["chunk"].as_array().cloned().unwrap_or_default();
        ids.extend(chunk.iter().filter_map(|e| e["event_id"].as_str().map(str::to_owned)));
        match page["end"].as_str() {
            Some(end) if !chunk.is_empty() => from = Some(end.to_owned()),
            _ => break,
        }
    }
    ids
}

async fn upload(server: &TestServer, session: &Session, bytes: &'static [u8]) -> String {
    let response = server
        .http
        .post(server.url("/_matrix/media/v3/upload?filename=notes.txt"))
        .bearer_auth(&session.access_token)
        .header("content-type", "text/plain")
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["content_uri"].as_str().unwrap().to_owned()
}

pub async fn download(server: &TestServer, session: &Session, content_uri: &str) -> (u16, Vec<u8>) {
    let path = content_uri.trim_start_matches("mxc://");
    let response = server
        .http
        .get(server.url(&format!("/_matrix/client/v1/media/download/{path}")))
        .bearer_auth(&session.access_token)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn backup_during_concurrent_sends_restores_every_acknowledged_event() {
    let work = tempfile::tempdir().unwrap();
    let origin_dir = work.path().join("origin");
    let config = write_config(&origin_dir, "localhost");
    let server = Arc::new(TestServer::start_text(&origin_dir, &std::fs::read_to_string(&config).unwrap()).unwrap());
    let admin = register_admin(&server, "admin").await;
    let owner = server.register("owner", "pw").await;
    let room = create_room(&server, &owner, json!({"preset": "public_chat"})).await;
    let mut senders = Vec::new();
    for i in 0..8 {
        let session = server.register(&format!("sender{i}"), "pw").await;
        join(&server, &session, &room).await;
        senders.push(session);
    }
    let content_uri = upload(&server, &owner, b"a file that must survive the backup").await;

    // Eight clients send as fast as they can; each acknowledgement is stamped when it arrived.
    let acknowledged: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (i, session) in senders.into_iter().enumerate() {
        let (server, room, acknowledged, stop) = (server.clone(), room.clone(), acknowledged.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/c{i}-{n}", enc(&room));
                let body = json!({"msgtype": "m.text", "body": format!("client {i} message {n}")});
                let (status, response) = server.put(&path, session.token(), body).await;
                assert_eq!(status, 200, "{response}");
                let id = response["event_id"].as_str().unwrap().to_owned();
                acknowledged.lock().unwrap().push((Instant::now(), id));
                n += 1;
            }
        }));
    }
    while acknowledged.lock().unwrap().len() < 80 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let backups = work.path().join("backups");
    let first = backups.join("first");
    let began = Instant::now();
    let created = cli(
        args(&[&"--config", &config, &"backup", &"create", &"--to", &first, &"--server", &server.base_url]),
        admin.token(),
    )
    .await;
    assert!(created.status.success(), "{}", text(&created));
    assert!(text(&created).contains("full backup"), "{}", text(&created));
    // Senders kept going during the backup; a few more after it.
    let count_after = acknowledged.lock().unwrap().len();
    while acknowledged.lock().unwrap().len() < count_after + 20 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    let before: Vec<String> =
        acknowledged.lock().unwrap().iter().filter(|(at, _)| *at < began).map(|(_, id)| id.clone()).collect();
    assert!(before.len() >= 80);

    // The manifest describes the server and every file, media included.
    let m = manifest(&first);
    assert_eq!((m["format_version"].clone(), m["server_name"].clone()), (json!(1), json!("localhost")));
    assert!(m["schema_version"].as_u64().unwrap() >= 1 && m["created"].as_str().unwrap().ends_with('Z'));
    let files = m["files"].as_array().unwrap();
    assert!(files.iter().any(|f| f["path"].as_str().unwrap().ends_with(".sst")), "{m}");
    assert!(files.iter().any(|f| f["path"].as_str().unwrap().starts_with("media/")), "{m}");
    assert!(files.iter().all(|f| f["sha256"].as_str().unwrap().len() == 64 && f["size"].is_u64()));

    // The admin API directly: a second backup beside the first reuses its unchanged files.
    let second = backups.join("second");
    let (status, summary) = server.post("/_trellis/admin/v1/backup", admin.token(), json!({"directory": second})).await;
    assert_eq!(status, 200, "{summary}");
    assert_eq!(summary["incremental_base"], "first", "{summary}");
    assert!(summary["linked_files"].as_u64().unwrap() > 0, "{summary}");
    let linked = manifest(&second)["files"].as_array().unwrap().iter().filter(|f| f["linked"] == true).count();
    assert_eq!(linked as u64, summary["linked_files"].as_u64().unwrap());
    // Non-admins may not; the target must be empty and absolute.
    let owner_try =
        server.post("/_trellis/admin/v1/backup", owner.token(), json!({"directory": backups.join("x")})).await;
    assert_error(&owner_try, 403, "M_FORBIDDEN");
    assert_error(
        &server.post("/_trellis/admin/v1/backup", admin.token(), json!({"directory": first})).await,
        400,
        "M_INVALID_PARAM",
    );
    assert_error(
        &server.post("/_trellis/admin/v1/backup", admin.token(), json!({"directory": "relative/dir"})).await,
        400,
        "M_INVALID_PARAM",
    );

    let verified = cli(args(&[&"backup", &"verify", &first]), None).await;
    assert!(verified.status.success() && text(&verified).contains("is intact"), "{}", text(&verified));

    // Restore into an empty directory and start a server there.
    let restored_dir = work.path().join("restored");
    let restored_config = write_config(&restored_dir, "localhost");
    let restore = cli(args(&[&"--config", &restored_config, &"backup", &"restore", &"--from", &first]), None).await;
    assert!(restore.status.success(), "{}", text(&restore));
    // Not again over it, nor for another server name.
    let again = cli(args(&[&"--config", &restored_config, &"backup", &"restore", &"--from", &first]), None).await;
    assert!(!again.status.success() && text(&again).contains("is not empty"), "{}", text(&again));
    let other_config = write_config(&work.path().join("other"), "other.example");
    let other = cli(args(&[&"--config", &other_config, &"backup", &"restore", &"--from", &first]), None).await;
    assert!(!other.status.success(), "{}", text(&other));
    assert!(
        text(&other).contains("server_name \"localhost\"") && text(&other).contains("other.example"),
        "{}",
        text(&other)
    );
    assert!(!work.path().join("other").join("db").exists());

    let restored = TestServer::start_text(&restored_dir, &std::fs::read_to_string(&restored_config).unwrap()).unwrap();
    let (status, login) = restored.login("owner", "pw").await;
    assert_eq!(status, 200, "{login}");
    let owner_again = Session::from_response(&login);
    let present: std::collections::HashSet<String> =
        room_event_ids(&restored, &owner_again, &room).await.into_iter().collect();
    let missing: Vec<&String> = before.iter().filter(|id| !present.contains(*id)).collect();
    assert!(missing.is_empty(), "{} of {} acknowledged events missing: {missing:?}", missing.len(), before.len());
    assert_eq!(
        download(&restored, &owner_again, &content_uri).await,
        (200, b"a file that must survive the backup".to_vec())
    );
    smoke_bench(&restored.base_url).await;
    drop(restored);

    // A newer schema is refused.
    let mut newer = manifest(&second);
    let original = std::fs::read(second.join("manifest.json")).unwrap();
    newer["schema_version"] = json!(10_000);
    std::fs::write(second.join("manifest.json"), serde_json::to_vec(&newer).unwrap()).unwrap();
    let newer_dir = work.path().join("newer");
    let newer_config = write_config(&newer_dir, "localhost");
    let refused = cli(args(&[&"--config", &newer_config, &"backup", &"restore", &"--from", &second]), None).await;
    assert!(!refused.status.success() && text(&refused).contains("newer than this Trellis"), "{}", text(&refused));
    std::fs::write(second.join("manifest.json"), original).unwrap();

    // Corruption is named. Files are replaced, not changed in place: they may be hard links
    // to the live database's files.
    let sst = manifest(&second)["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_owned())
        .find(|p| p.ends_with(".sst"))
        .unwrap();
    let mut bytes = std::fs::read(second.join(&sst)).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(second.join("corrupt.tmp"), &bytes).unwrap();
    std::fs::rename(second.join("corrupt.tmp"), second.join(&sst)).unwrap();
    let media_file = manifest(&second)["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_owned())
        .find(|p| p.starts_with("media/"))
        .unwrap();
    std::fs::remove_file(second.join(&media_file)).unwrap();
    let failed = cli(args(&[&"backup", &"verify", &second]), None).await;
    assert!(!failed.status.success(), "{}", text(&failed));
    assert!(text(&failed).contains(&format!("backup file {sst} is corrupted")), "{}", text(&failed));
    assert!(text(&failed).contains(&format!("backup file {media_file} is missing")), "{}", text(&failed));
    let refused = cli(args(&[&"--config", &newer_config, &"backup", &"restore", &"--from", &second]), None).await;
    assert!(!refused.status.success() && text(&refused).contains(&sst), "{}", text(&refused));
    // The first backup, and so the live database, were not touched.
    assert!(cli(args(&[&"backup", &"verify", &first]), None).await.status.success());

    // With the server stopped, the command opens the database itself.
    let server = Arc::into_inner(server).expect("no other handle");
    assert_eq!(server.stop(), Some(0));
    let offline = backups.join("offline");
    let created = cli(args(&[&"--config", &config, &"backup", &"create", &"--to", &offline]), None).await;
    assert!(created.status.success(), "{}", text(&created));
    let verified = cli(args(&[&"backup", &"verify", &offline]), None).await;
    assert!(verified.status.success(), "{}", text(&verified));
    // Its base was the damaged second backup: the damaged file was stored anew, not linked.
    let m = manifest(&offline);
    assert_eq!(m["incremental_base"], "second");
    let entry = m["files"].as_array().unwrap().iter().find(|f| f["path"] == sst.as_str()).cloned();
    assert!(entry.is_none_or(|e| e["linked"] == false), "{m}");
}

/// `trellis-bench --smoke` in its short mode against `url`.
async fn smoke_bench(url: &str) {
    let url = url.to_owned();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(crate::harness::bench_bin())
            .args(["--url", &url, "--registration-secret", SHARED_SECRET, "--smoke"])
            .args([
                "--users",
                "3",
                "--rooms",
                "2",
                "--messages",
                "10",
                "--round-trips",
                "3",
                "--incremental-syncs",
                "3",
            ])
            .output()
    })
    .await
    .unwrap()
    .expect("trellis-bench runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "smoke run failed:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("30 of 30 (0 duplicates)"), "{stdout}");
}

#[tokio::test]
async fn scheduled_backups_keep_the_newest() {
    let work = tempfile::tempdir().unwrap();
    let backups = work.path().join("scheduled");
    std::fs::create_dir_all(&backups).unwrap();
    // Not a scheduled backup: retention never touches it.
    std::fs::create_dir_all(backups.join("manual")).unwrap();
    let extra = format!("[global.backup]\ndirectory = \"{}\"\ninterval_secs = 1\nkeep = 2\n", backups.display());
    let server = TestServer::start_in(work.path(), "localhost", &extra).unwrap();
    server.register("someone", "pw").await;
    // Wait until a third backup has replaced the first: two remain, the older of which was
    // itself incremental against one that is gone.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut names: Vec<String> = std::fs::read_dir(&backups)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join("manifest.json").is_file())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        // (Three for a moment: a new backup is complete before retention removes the oldest.)
        assert!(names.len() <= 3, "{names:?}");
        if names.len() == 2 {
            let oldest = manifest(&backups.join(&names[0]));
            if let Some(base) = oldest["incremental_base"].as_str() {
                assert!(!names.contains(&base.to_owned()) && base.starts_with("trellis-backup-"), "{names:?} {base}");
                let newest = manifest(&backups.join(&names[1]));
                assert_eq!(newest["incremental_base"], names[0].as_str());
                let verified = cli(args(&[&"backup", &"verify", &backups.join(&names[1])]), None).await;
                assert!(verified.status.success(), "{}", text(&verified));
                break;
            }
        }
        assert!(Instant::now() < deadline, "no third scheduled backup: {names:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(backups.join("manual").is_dir());
}
