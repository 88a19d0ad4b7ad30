//! Test harness: starts the real `trellis` binary on an ephemeral loopback port with a temporary
//! database, and makes matrix-sdk clients (in-memory stores) that talk to it.
//!
//! The binary is `$TRELLIS_BIN`, or `trellis` in the cargo profile directory this test runs from
//! (`target/debug/deps/e2ee-…` → `target/debug/trellis`), which `cargo test --workspace` builds.

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use matrix_sdk::{
    Client, Room,
    config::{RequestConfig, SyncSettings},
    deserialized_responses::TimelineEvent,
    ruma::{
        OwnedRoomId, OwnedUserId, RoomId,
        api::client::{
            account::register,
            room::create_room,
            uiaa::{self, MatrixUserIdentifier, UserIdentifier},
        },
        events::{InitialStateEvent, room::encryption::RoomEncryptionEventContent},
    },
    sliding_sync::VersionBuilder,
};

/// Every test user's password.
pub const PASSWORD: &str = "sdk-test-password";

/// A running server, killed when dropped.
pub struct TestServer {
    child: Child,
    pub base_url: String,
    _tempdir: tempfile::TempDir,
}

/// The `trellis` binary to run: `$TRELLIS_BIN`, else next to the test executable's directory.
fn trellis_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("TRELLIS_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test executable's path");
    // target/<profile>/deps/e2ee-<hash> -> target/<profile>/trellis
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>/deps");
    profile_dir.join(format!("trellis{}", std::env::consts::EXE_SUFFIX))
}

impl TestServer {
    pub fn start() -> Self {
        Self::start_with("localhost", "")
    }

    /// A server named `server_name`, with `extra` appended to its config (more keys of
    /// `[global]`, then tables).
    pub fn start_with(server_name: &str, extra: &str) -> Self {
        let binary = trellis_binary();
        assert!(
            binary.is_file(),
            "the trellis binary is not at {}: build it first (`cargo build --bin trellis`, or run the \
             tests with `cargo test --workspace`), or name it in TRELLIS_BIN",
            binary.display()
        );
        let tempdir = tempfile::tempdir().expect("tempdir");
        let config = tempdir.path().join("trellis.toml");
        std::fs::write(
            &config,
            format!(
                r#"[global]
server_name = "{server_name}"
database_backend = "rocksdb"
database_path = "{}"
address = "127.0.0.1"
port = 0
allow_registration = true
db_cache_capacity_mb = 16
log = "info"
rc_message = {{ per_second = 10000, burst_count = 10000 }}
rc_registration = {{ per_second = 10000, burst_count = 10000 }}
rc_room_creation = {{ per_second = 10000, burst_count = 10000 }}
rc_media_create = {{ per_second = 10000, burst_count = 10000 }}
rc_login = {{ address = {{ per_second = 10000, burst_count = 10000 }}, account = {{ per_second = 10000, burst_count = 10000 }}, failed_attempts = {{ per_second = 10000, burst_count = 10000 }} }}
rc_joins = {{ local = {{ per_second = 10000, burst_count = 10000 }}, remote = {{ per_second = 10000, burst_count = 10000 }} }}
rc_invites = {{ per_room = {{ per_second = 10000, burst_count = 10000 }}, per_user = {{ per_second = 10000, burst_count = 10000 }}, per_issuer = {{ per_second = 10000, burst_count = 10000 }} }}
{extra}
"#,
                tempdir.path().join("db").display()
            ),
        )
        .expect("write config");
        let mut command = Command::new(&binary);
        command.arg("--config").arg(&config).stdout(Stdio::piped()).stderr(Stdio::piped());
        // Config overrides from the developer's environment must not leak into test servers.
        for (name, _) in std::env::vars() {
            if name.starts_with("TRELLIS_") || name.starts_with("CONDUIT_") {
                command.env_remove(name);
            }
        }
        let mut child = command.spawn().unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if std::env::var_os("TRELLIS_TEST_LOG").is_some() {
                    eprintln!("[server] {line}");
                }
            }
        });
        let base_url = loop {
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(line) => {
                    if let Some(url) = line.split("listening for clients on ").nth(1) {
                        break url.trim().to_owned();
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    panic!("trellis did not start (set TRELLIS_TEST_LOG=1 to see its log)");
                }
            }
        };
        Self { child, base_url, _tempdir: tempdir }
    }

    /// A client without a session.
    pub async fn client(&self) -> Client {
        client_at(&self.base_url).await
    }

    /// A client without a session that finds simplified sliding sync (MSC4186) through
    /// `/versions`, as Element X does.
    pub async fn sliding_client(&self) -> Client {
        Client::builder()
            .homeserver_url(&self.base_url)
            .request_config(RequestConfig::short_retry())
            .sliding_sync_version_builder(VersionBuilder::DiscoverNative)
            .build()
            .await
            .expect("client")
    }

    /// Registers `name` through the API (dummy auth) and returns its logged-in client.
    pub async fn register(&self, name: &str) -> Client {
        self.register_on(self.client().await, name).await
    }

    /// Registers `name` with `client` and returns it logged in.
    pub async fn register_on(&self, client: Client, name: &str) -> Client {
        register_with(client, name).await
    }

    /// Logs `name` in on a new device with a new client.
    pub async fn login(&self, name: &str, device_name: &str) -> Client {
        login_at(&self.base_url, name, device_name).await
    }
}

/// A client without a session for the server at `base_url` (Trellis or another server).
pub async fn client_at(base_url: &str) -> Client {
    Client::builder()
        .homeserver_url(base_url)
        .request_config(RequestConfig::short_retry())
        .build()
        .await
        .expect("client")
}

/// Registers `name` with `client` (dummy auth) and returns it logged in.
pub async fn register_with(client: Client, name: &str) -> Client {
    let mut request = register::v3::Request::new();
    request.username = Some(name.to_owned());
    request.password = Some(PASSWORD.to_owned());
    request.initial_device_display_name = Some(format!("{name}'s first device"));
    request.auth = Some(uiaa::AuthData::Dummy(uiaa::Dummy::new()));
    client.matrix_auth().register(request).await.unwrap_or_else(|e| panic!("register {name}: {e}"));
    assert!(client.matrix_auth().logged_in(), "registration logged {name} in");
    client.encryption().wait_for_e2ee_initialization_tasks().await;
    client
}

/// Logs `name` in on a new device of the server at `base_url`, with a new client.
pub async fn login_at(base_url: &str, name: &str, device_name: &str) -> Client {
    let client = client_at(base_url).await;
    client
        .matrix_auth()
        .login_username(name, PASSWORD)
        .initial_device_display_name(device_name)
        .await
        .unwrap_or_else(|e| panic!("login {name}: {e}"));
    client.encryption().wait_for_e2ee_initialization_tasks().await;
    client
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The user's password as UIA auth data.
pub fn password_auth(user: &OwnedUserId, session: Option<String>) -> uiaa::AuthData {
    let identifier = UserIdentifier::Matrix(MatrixUserIdentifier::new(user.localpart().to_owned()));
    let mut password = uiaa::Password::new(identifier, PASSWORD.to_owned());
    password.session = session;
    uiaa::AuthData::Password(password)
}

/// One sync that returns at once (no long poll), continuing from the client's last token.
/// Also sends what the client queued (key uploads, key queries, to-device messages).
pub async fn sync(client: &Client) {
    client
        .sync_once(SyncSettings::default().timeout(Duration::ZERO))
        .await
        .unwrap_or_else(|e| panic!("sync of {:?}: {e}", client.user_id()));
}

/// `creator` makes an encrypted room (`m.room.encryption` in the initial state) and invites
/// `invitees`, who join it; everyone syncs afterwards.
pub async fn encrypted_room(creator: &Client, invitees: &[&Client]) -> OwnedRoomId {
    let users: Vec<OwnedUserId> = invitees.iter().map(|c| c.user_id().expect("logged in").to_owned()).collect();
    let room_id = encrypted_room_with(creator, &users).await;
    for invitee in invitees {
        sync(invitee).await;
        invitee.join_room_by_id(&room_id).await.expect("join");
    }
    for client in std::iter::once(creator).chain(invitees.iter().copied()) {
        sync(client).await;
    }
    room_id
}

/// `creator` makes an encrypted room and invites `users` (who join on their own).
pub async fn encrypted_room_with(creator: &Client, users: &[OwnedUserId]) -> OwnedRoomId {
    let mut request = create_room::v3::Request::new();
    request.invite = users.to_vec();
    request.initial_state = vec![
        InitialStateEvent::with_empty_state_key(RoomEncryptionEventContent::with_recommended_defaults()).to_raw_any(),
    ];
    let room = creator.create_room(request).await.expect("create room");
    assert!(room.latest_encryption_state().await.expect("encryption state").is_encrypted(), "the room is encrypted");
    room.room_id().to_owned()
}

/// The room, as `client` knows it.
pub fn room(client: &Client, room_id: &RoomId) -> Room {
    client.get_room(room_id).unwrap_or_else(|| panic!("{:?} does not know {room_id}", client.user_id()))
}

/// The plaintext body of a decrypted `m.room.message`, or a panic saying why there is none.
pub fn decrypted_body(event: &TimelineEvent) -> String {
    assert!(event.encryption_info().is_some(), "the event was not decrypted: {}", event.raw().json().get());
    let json: serde_json::Value = serde_json::from_str(event.raw().json().get()).expect("event JSON");
    assert_eq!(json["type"], "m.room.message", "decrypted type of {json}");
    json["content"]["body"].as_str().unwrap_or_else(|| panic!("no body in {json}")).to_owned()
}
