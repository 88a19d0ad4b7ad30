//! Test harness: starts the real `trellis` binary on ephemeral loopback ports with a temporary
//! database, and a small JSON-over-HTTP client to talk to it.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use serde_json::{Value, json};

pub const SHARED_SECRET: &str = "test-shared-secret";

/// A running server. Killed when dropped; [`TestServer::stop`] shuts it down gracefully.
pub struct TestServer {
    child: Option<Child>,
    pub base_url: String,
    pub federation_url: Option<String>,
    /// The metrics endpoint, when `[global.metrics]` enables it.
    pub metrics_url: Option<String>,
    _tempdir: Option<tempfile::TempDir>,
    pub http: reqwest::Client,
    /// The server's whole stderr (its log), sent when it exits.
    stderr: Option<std::sync::Mutex<mpsc::Receiver<String>>>,
}

/// Rate limits high enough that no test meets them (tests register, log in and send from one
/// address at machine speed); `TestServer::start_with_default_limits` leaves them out.
pub const TEST_RATE_LIMITS: &str = r#"rc_message = { per_second = 10000, burst_count = 10000 }
rc_registration = { per_second = 10000, burst_count = 10000 }
rc_room_creation = { per_second = 10000, burst_count = 10000 }
rc_media_create = { per_second = 10000, burst_count = 10000 }
rc_login = { address = { per_second = 10000, burst_count = 10000 }, account = { per_second = 10000, burst_count = 10000 }, failed_attempts = { per_second = 10000, burst_count = 10000 } }
rc_joins = { local = { per_second = 10000, burst_count = 10000 }, remote = { per_second = 10000, burst_count = 10000 } }
rc_invites = { per_room = { per_second = 10000, burst_count = 10000 }, per_user = { per_second = 10000, burst_count = 10000 }, per_issuer = { per_second = 10000, burst_count = 10000 } }
"#;

/// The config every test server starts from; `extra` lines are appended to `[global]`.
/// The server binary the tests start: cargo's, or `TRELLIS_TEST_BIN` when set (developers who
/// share one target directory between worktrees point it at a copy of their own build, since
/// cargo's copy at `target/debug/trellis` is whichever worktree built last).
pub fn trellis_bin() -> PathBuf {
    std::env::var_os("TRELLIS_TEST_BIN").map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_trellis")), PathBuf::from)
}

/// The benchmark binary, like [`trellis_bin`] (`TRELLIS_TEST_BENCH_BIN`).
pub fn bench_bin() -> PathBuf {
    std::env::var_os("TRELLIS_TEST_BENCH_BIN")
        .map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_trellis-bench")), PathBuf::from)
}

pub fn config_text(dir: &Path, server_name: &str, extra: &str) -> String {
    // Keys in `extra` before its first table replace the defaults below.
    let overridden: Vec<&str> = extra
        .lines()
        .take_while(|line| !line.trim_start().starts_with('['))
        .filter_map(|line| line.split_once('=').map(|(key, _)| key.trim()))
        .collect();
    let base = format!(
        r#"[global]
server_name = "{server_name}"
database_backend = "rocksdb"
database_path = "{db}"
address = "127.0.0.1"
port = 0
allow_registration = true
allow_guest_registration = true
registration_shared_secret = "{SHARED_SECRET}"
db_cache_capacity_mb = 16
log = "info"
{TEST_RATE_LIMITS}"#,
        db = dir.join("db").display()
    );
    base.lines()
        .filter(|line| !line.split_once('=').is_some_and(|(key, _)| overridden.contains(&key.trim())))
        .chain(extra.lines())
        .map(|line| format!("{line}\n"))
        .collect()
}

impl TestServer {
    /// A server with open registration and default settings.
    pub async fn start() -> Self {
        Self::start_with("").await
    }

    /// A server with extra `[global]` config lines.
    pub async fn start_with(extra: &str) -> Self {
        let tempdir = tempfile::tempdir().expect("tempdir");
        let dir = tempdir.path().to_owned();
        let mut server = Self::start_in(&dir, "localhost", extra).expect("server starts");
        server._tempdir = Some(tempdir);
        server
    }

    /// A server with the default rate limits, which every other test server lifts.
    pub async fn start_with_default_limits(extra: &str) -> Self {
        let tempdir = tempfile::tempdir().expect("tempdir");
        let dir = tempdir.path().to_owned();
        let text: String = config_text(&dir, "localhost", extra)
            .lines()
            .filter(|line| !TEST_RATE_LIMITS.lines().any(|limit| limit == *line))
            .map(|line| format!("{line}\n"))
            .collect();
        let mut server = Self::start_text(&dir, &text).expect("server starts");
        server._tempdir = Some(tempdir);
        server
    }

    /// Starts a server on the database in `dir`; `Err` carries its stderr if it exits instead.
    pub fn start_in(dir: &Path, server_name: &str, extra: &str) -> Result<Self, String> {
        Self::start_text(dir, &config_text(dir, server_name, extra))
    }

    /// Starts a server with the config `text`, written into `dir`.
    pub fn start_text(dir: &Path, text: &str) -> Result<Self, String> {
        let config_path = dir.join("trellis.toml");
        std::fs::write(&config_path, text).expect("write config");
        let mut command = Command::new(crate::harness::trellis_bin());
        command.arg("--config").arg(&config_path);
        // Config overrides from the developer's environment must not leak into test servers.
        for (name, _) in std::env::vars() {
            if name.starts_with("TRELLIS_") || name.starts_with("CONDUIT_") {
                command.env_remove(name);
            }
        }
        Self::spawn(command, text.contains("[global.federation_listener]"))
    }

    /// Spawns a prepared command that runs Trellis and waits for its "listening" lines.
    pub fn spawn(mut command: Command, expect_federation: bool) -> Result<Self, String> {
        let mut child =
            command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().map_err(|e| format!("spawn: {e}"))?;
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let (err_tx, err_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut all = String::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if std::env::var_os("TRELLIS_TEST_LOG").is_some() {
                    eprintln!("[server] {line}");
                }
                all.push_str(&line);
                all.push('\n');
            }
            let _ = err_tx.send(all);
        });
        let mut base_url = None;
        let mut federation_url = None;
        let mut metrics_url = None;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while base_url.is_none() || (expect_federation && federation_url.is_none()) {
            let remaining = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(remaining) {
                Ok(line) => {
                    if let Some(url) = line.split("listening for clients on ").nth(1) {
                        base_url = Some(url.trim().to_owned());
                    }
                    if let Some(url) = line.split("serving metrics on ").nth(1) {
                        metrics_url = Some(url.trim().to_owned());
                    }
                    if let Some(url) = line.split("listening for federation on ").nth(1) {
                        federation_url = Some(url.trim().to_owned());
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let stderr = err_rx.recv_timeout(Duration::from_secs(5)).unwrap_or_default();
                    return Err(stderr);
                }
            }
        }
        Ok(Self {
            child: Some(child),
            base_url: base_url.unwrap_or_default(),
            federation_url,
            metrics_url,
            _tempdir: None,
            http: reqwest::Client::new(),
            stderr: Some(std::sync::Mutex::new(err_rx)),
        })
    }

    /// Sends SIGTERM and waits for a clean exit; returns the exit status code.
    pub fn stop(mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        // A signal from libc, not the `kill` program: a bare Debian (a container, a minimal
        // install) has no procps, and then the wait below would never end.
        // SAFETY: signals the child this server started.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let status = child.wait().ok()?;
        status.code()
    }

    /// Like [`stop`](Self::stop), and returns the server's log (its stderr) too.
    pub fn stop_with_log(mut self) -> (Option<i32>, String) {
        let stderr = self.stderr.take();
        let code = self.stop();
        let log =
            stderr.and_then(|rx| rx.into_inner().ok()?.recv_timeout(Duration::from_secs(10)).ok()).unwrap_or_default();
        (code, log)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    /// Sends a request with an optional JSON body and token; returns status and JSON body.
    pub async fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self.http.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        let json =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        (status, json)
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        self.call("GET", path, token, None).await
    }
    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        self.call("POST", path, token, Some(body)).await
    }
    /// `get` with an owned path, for closures that build the path.
    pub async fn get_owned(&self, path: String, token: Option<&str>) -> (u16, Value) {
        self.call("GET", &path, token, None).await
    }
    /// `post` with an owned path, for closures that build the path.
    pub async fn post_owned(&self, path: String, token: Option<&str>, body: Value) -> (u16, Value) {
        self.call("POST", &path, token, Some(body)).await
    }
    pub async fn put(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        self.call("PUT", path, token, Some(body)).await
    }

    /// Registers `localpart` with `password` through the dummy flow; returns the session.
    pub async fn register(&self, localpart: &str, password: &str) -> Session {
        let (status, body) = self
            .post(
                "/_matrix/client/v3/register",
                None,
                json!({"username": localpart, "password": password, "auth": {"type": "m.login.dummy"}}),
            )
            .await;
        assert_eq!(status, 200, "register {localpart}: {body}");
        Session::from_response(&body)
    }

    /// Logs in with a password; returns status and body.
    pub async fn login(&self, user: &str, password: &str) -> (u16, Value) {
        self.post(
            "/_matrix/client/v3/login",
            None,
            json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": password}),
        )
        .await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What registration or login returned.
#[derive(Debug, Clone)]
pub struct Session {
    pub user_id: String,
    pub access_token: String,
    pub device_id: String,
}

impl Session {
    pub fn from_response(body: &Value) -> Self {
        Self {
            user_id: body["user_id"].as_str().expect("user_id").to_owned(),
            access_token: body["access_token"].as_str().expect("access_token").to_owned(),
            device_id: body["device_id"].as_str().expect("device_id").to_owned(),
        }
    }
    pub fn token(&self) -> Option<&str> {
        Some(&self.access_token)
    }
}

/// Asserts a Matrix error: status and errcode.
#[track_caller]
pub fn assert_error(result: &(u16, Value), status: u16, errcode: &str) {
    assert_eq!(result.0, status, "status of {}", result.1);
    assert_eq!(result.1["errcode"], errcode, "errcode of {}", result.1);
    assert!(result.1["error"].is_string(), "error message in {}", result.1);
}

/// Percent-encodes a path segment (user IDs contain `@` and `:`).
pub fn enc(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
