//! Logs: written to a file (not a terminal) they hold no ANSI colour codes; `log_format =
//! "json"` writes one JSON object per line; every request leaves one debug line with method,
//! path template, status, duration and user.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::{Value, json};

use crate::harness::config_text;

/// Runs the binary with stderr going to a file, makes a few requests, stops it with SIGTERM
/// and returns what it logged.
async fn run_and_log(dir: &Path, extra: &str) -> String {
    let config = dir.join("trellis.toml");
    std::fs::write(&config, config_text(dir, "localhost", extra)).expect("write config");
    let log_path = dir.join("trellis.log");
    let log_file = std::fs::File::create(&log_path).expect("log file");
    let mut command = Command::new(crate::harness::trellis_bin());
    command.arg("--config").arg(&config).stdout(Stdio::piped()).stderr(Stdio::from(log_file));
    for (name, _) in std::env::vars() {
        if name.starts_with("TRELLIS_") || name.starts_with("CONDUIT_") || name == "NO_COLOR" {
            command.env_remove(name);
        }
    }
    let mut child = command.spawn().expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = line.split("listening for clients on ").nth(1) {
                let _ = tx.send(url.trim().to_owned());
            }
        }
    });
    let base = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(base) => base,
        Err(_) => {
            let _ = child.kill();
            panic!("no listening line; log: {}", std::fs::read_to_string(&log_path).unwrap_or_default());
        }
    };
    let http = reqwest::Client::new();
    let registered: Value = http
        .post(format!("{base}/_matrix/client/v3/register"))
        .json(&json!({"username": "alice", "password": "pw", "auth": {"type": "m.login.dummy"}}))
        .send()
        .await
        .expect("register")
        .json()
        .await
        .expect("json");
    let token = registered["access_token"].as_str().expect("token");
    let whoami =
        http.get(format!("{base}/_matrix/client/v3/account/whoami")).bearer_auth(token).send().await.expect("whoami");
    assert_eq!(whoami.status(), 200);
    // SAFETY: signals the child this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().expect("wait");
    assert!(status.success(), "exit {status:?}");
    std::fs::read_to_string(&log_path).expect("read log")
}

const DEBUG_REQUESTS: &str = "log = \"info,trellis::api::observe=debug\"\n";

#[tokio::test]
async fn a_log_file_has_no_colour_codes_and_one_line_per_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = run_and_log(dir.path(), DEBUG_REQUESTS).await;
    assert!(!log.contains('\u{1b}'), "escape codes in the log file:\n{log}");
    let whoami: Vec<&str> = log.lines().filter(|line| line.contains("/account/whoami")).collect();
    assert_eq!(whoami.len(), 1, "{log}");
    let line = whoami[0];
    for part in [
        "DEBUG",
        "method=GET",
        "endpoint=/_matrix/client/v3/account/whoami",
        "status=200",
        "duration_ms=",
        "user=@alice:localhost",
    ] {
        assert!(line.contains(part), "{part} missing from {line}");
    }
    // Registration is answered before anyone is known.
    assert!(log.lines().any(|line| line.contains("endpoint=/_matrix/client/v3/register") && line.contains("user=-")));
    // At the default level ("info") there is no line per request.
    let dir = tempfile::tempdir().expect("tempdir");
    let quiet = run_and_log(dir.path(), "").await;
    assert!(!quiet.contains("/account/whoami"), "{quiet}");
}

#[tokio::test]
async fn json_logs_are_one_object_per_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = run_and_log(dir.path(), &format!("{DEBUG_REQUESTS}log_format = \"json\"\n")).await;
    assert!(!log.contains('\u{1b}'));
    let lines: Vec<Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    assert!(lines.iter().all(|line| line["timestamp"].is_string() && line["level"].is_string()));
    let request = lines
        .iter()
        .find(|line| line["endpoint"] == "/_matrix/client/v3/account/whoami")
        .unwrap_or_else(|| panic!("no request line: {log}"));
    assert_eq!(request["level"], "DEBUG");
    assert_eq!(request["message"], "request");
    assert_eq!(request["method"], "GET");
    assert_eq!(request["status"], 200);
    assert_eq!(request["user"], "@alice:localhost");
    assert!(request["duration_ms"].is_number());
}
