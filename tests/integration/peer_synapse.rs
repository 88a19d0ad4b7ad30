//! Federation with a real Synapse (PyPI `matrix-synapse`) on loopback TLS: Synapse asks Trellis
//! for a user's profile (signing the request with its key, which Trellis fetches from Synapse to
//! check it), Trellis asks Synapse (Synapse fetches Trellis's key), and Trellis vouches for
//! Synapse's keys as a notary; users of each join the other's rooms and talk. Runs when `TRELLIS_SYNAPSE_PYTHON` names a Python interpreter with
//! `matrix-synapse` installed (`.ci/run` installs it); skipped otherwise.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::{
    federation::{Pki, assert_signed_with, federation_call, free_port, start_federating},
    federation_join::{join_via, state_ids},
    harness::{Session, TestServer, assert_error, enc},
    room_helpers::{create_room, send_text},
};

/// A Synapse process, killed when dropped.
pub(crate) struct Synapse {
    child: Child,
    pub(crate) client_url: String,
    federation_url: String,
    pub(crate) server_name: String,
}

impl Drop for Synapse {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Synapse {
    pub(crate) async fn start(python: &str, pki: &Pki, dir: &Path) -> Synapse {
        let (client_port, federation_port) = (free_port(), free_port());
        let server_name = format!("127.0.0.1:{federation_port}");
        let d = dir.display();
        let config = format!(
            r#"server_name: "{server_name}"
pid_file: {d}/homeserver.pid
report_stats: false
signing_key_path: {d}/signing.key
media_store_path: {d}/media
log_config: {d}/log.yaml
database:
  name: sqlite3
  args:
    database: {d}/homeserver.db
listeners:
  - port: {client_port}
    bind_addresses: ['127.0.0.1']
    type: http
    tls: false
    resources:
      - names: [client]
        compress: false
  - port: {federation_port}
    bind_addresses: ['127.0.0.1']
    type: http
    tls: true
    resources:
      - names: [federation]
        compress: false
tls_certificate_path: {crt}
tls_private_key_path: {key}
federation_custom_ca_list: [{ca}]
ip_range_whitelist: ['127.0.0.0/8', '::1/128']
federation_ip_range_blacklist: []
enable_registration: true
enable_registration_without_verification: true
registration_shared_secret: "synapse-secret"
macaroon_secret_key: "macaroon-secret"
form_secret: "form-secret"
trusted_key_servers: []
suppress_key_server_warning: true
rc_registration: {{per_second: 1000, burst_count: 1000}}
rc_login: {{address: {{per_second: 1000, burst_count: 1000}}, account: {{per_second: 1000, burst_count: 1000}}}}
rc_message: {{per_second: 1000, burst_count: 1000}}
"#,
            crt = pki.path("server.crt").display(),
            key = pki.path("server.key").display(),
            ca = pki.path("ca.crt").display(),
        );
        std::fs::write(dir.join("homeserver.yaml"), config).unwrap();
        std::fs::write(
            dir.join("log.yaml"),
            format!(
                "version: 1\nformatters: {{precise: {{format: '%(asctime)s %(name)s %(levelname)s %(message)s'}}}}\n\
                 handlers: {{file: {{class: logging.FileHandler, formatter: precise, filename: {d}/synapse.log}}}}\n\
                 root: {{level: INFO, handlers: [file]}}\ndisable_existing_loggers: false\n"
            ),
        )
        .unwrap();
        let config_path = dir.join("homeserver.yaml");
        let keys = Command::new(python)
            .args(["-m", "synapse.app.homeserver", "--generate-keys", "-c"])
            .arg(&config_path)
            .output()
            .expect("synapse runs");
        assert!(keys.status.success(), "synapse --generate-keys: {}", String::from_utf8_lossy(&keys.stderr));
        let child = Command::new(python)
            .args(["-m", "synapse.app.homeserver", "-c"])
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("synapse starts");
        let synapse = Synapse {
            child,
            client_url: format!("http://127.0.0.1:{client_port}"),
            federation_url: format!("https://127.0.0.1:{federation_port}"),
            server_name,
        };
        let deadline = Instant::now() + Duration::from_secs(90);
        let http = reqwest::Client::new();
        loop {
            if let Ok(response) = http.get(format!("{}/health", synapse.client_url)).send().await
                && response.status().is_success()
            {
                break;
            }
            let log = std::fs::read_to_string(dir.join("synapse.log")).unwrap_or_default();
            assert!(Instant::now() < deadline, "Synapse did not start:\n{log}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        synapse
    }

    /// Registers `localpart` through the dummy flow; returns the access token.
    pub(crate) async fn register(&self, localpart: &str) -> String {
        let http = reqwest::Client::new();
        let url = format!("{}/_matrix/client/v3/register", self.client_url);
        let first: Value = http
            .post(&url)
            .json(&json!({"username": localpart, "password": "pw-pw-pw"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = first["session"].as_str().unwrap_or_default();
        let body = json!({"username": localpart, "password": "pw-pw-pw", "auth": {"type": "m.login.dummy", "session": session}});
        let response: Value = http.post(&url).json(&body).send().await.unwrap().json().await.unwrap();
        response["access_token"].as_str().unwrap_or_else(|| panic!("Synapse registration: {response}")).to_owned()
    }

    pub(crate) async fn client_put(&self, path: &str, token: &str, body: Value) -> (u16, Value) {
        self.client_send(reqwest::Method::PUT, path, token, body).await
    }

    pub(crate) async fn client_post(&self, path: &str, token: &str, body: Value) -> (u16, Value) {
        self.client_send(reqwest::Method::POST, path, token, body).await
    }

    async fn client_send(&self, method: reqwest::Method, path: &str, token: &str, body: Value) -> (u16, Value) {
        let url = format!("{}{path}", self.client_url);
        let response = reqwest::Client::new().request(method, url).bearer_auth(token).json(&body).send().await.unwrap();
        (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
    }

    /// The IDs of a room's current state events as a Synapse user sees them, sorted.
    pub(crate) async fn state_ids(&self, room: &str, token: &str) -> Vec<String> {
        let state = self.client_get(&format!("/_matrix/client/v3/rooms/{}/state", enc(room)), token).await;
        assert_eq!(state.0, 200, "{}", state.1);
        let mut ids: Vec<String> =
            state.1.as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap().to_owned()).collect();
        ids.sort();
        ids
    }

    pub(crate) async fn client_get(&self, path: &str, token: &str) -> (u16, Value) {
        let response =
            reqwest::Client::new().get(format!("{}{path}", self.client_url)).bearer_auth(token).send().await.unwrap();
        (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
    }
}

/// A Synapse and a Trellis federating on loopback TLS (both named by IP literal and port, so no
/// override, well-known or SRV is needed), or `None` when `TRELLIS_SYNAPSE_PYTHON` is unset.
pub(crate) struct Peers {
    pub(crate) synapse: Synapse,
    pub(crate) trellis: TestServer,
    pub(crate) trellis_name: String,
    _pki: Pki,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

pub(crate) async fn synapse_and_trellis() -> Option<Peers> {
    let Ok(python) = std::env::var("TRELLIS_SYNAPSE_PYTHON") else {
        eprintln!("skipped: TRELLIS_SYNAPSE_PYTHON is not set (a Python with matrix-synapse)");
        return None;
    };
    let pki = Pki::new(&["localhost"]);
    let (trellis_dir, synapse_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let synapse = Synapse::start(&python, &pki, synapse_dir.path()).await;
    let trellis_port = free_port();
    let trellis_name = format!("127.0.0.1:{trellis_port}");
    let trellis = start_federating(&pki, trellis_dir.path(), &trellis_name, trellis_port, &[], "");
    Some(Peers { synapse, trellis, trellis_name, _pki: pki, _dirs: (trellis_dir, synapse_dir) })
}

#[tokio::test]
async fn synapse_and_trellis_query_each_others_profiles() {
    let Some(Peers { synapse, trellis, trellis_name, _pki: pki, .. }) = synapse_and_trellis().await else { return };

    let alice = trellis.register("alice", "pw").await;
    let alice_id = format!("@alice:{trellis_name}");
    let set = trellis
        .put(
            &format!("/_matrix/client/v3/profile/{}/displayname", enc(&alice_id)),
            alice.token(),
            json!({"displayname": "Alice of Trellis"}),
        )
        .await;
    assert_eq!(set.0, 200, "{}", set.1);
    let sam_token = synapse.register("sam").await;
    let sam_id = format!("@sam:{}", synapse.server_name);
    let (status, body) =
        synapse.client_get(&format!("/_matrix/client/v3/profile/{}/displayname", enc(&sam_id)), &sam_token).await;
    assert_eq!(status, 200, "{body}");

    // Synapse asks Trellis (Trellis fetches Synapse's key to check the request).
    let profile = synapse.client_get(&format!("/_matrix/client/v3/profile/{}", enc(&alice_id)), &sam_token).await;
    assert_eq!(profile.0, 200, "{}", profile.1);
    assert_eq!(profile.1["displayname"], "Alice of Trellis");
    let missing = synapse
        .client_get(&format!("/_matrix/client/v3/profile/{}", enc(&format!("@nobody:{trellis_name}"))), &sam_token)
        .await;
    assert_eq!(missing.0, 404, "{}", missing.1);

    // Trellis asks Synapse (Synapse fetches Trellis's key to check the request).
    let profile = trellis.get(&format!("/_matrix/client/v3/profile/{}", enc(&sam_id)), alice.token()).await;
    assert_eq!(profile.0, 200, "{}", profile.1);
    assert_eq!(profile.1["displayname"], "sam");
    assert_error(
        &trellis
            .get(
                &format!("/_matrix/client/v3/profile/{}", enc(&format!("@nobody:{}", synapse.server_name))),
                alice.token(),
            )
            .await,
        404,
        "M_NOT_FOUND",
    );

    // Trellis vouches for Synapse's keys, which Synapse signed.
    let client = pki.client();
    let synapse_keys: Value = client
        .get(format!("{}/_matrix/key/v2/server", synapse.federation_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let query = federation_call(
        &client,
        &trellis,
        "GET",
        &format!("/_matrix/key/v2/query/{}", synapse.server_name),
        None,
        None,
    )
    .await;
    assert_eq!(query.0, 200, "{}", query.1);
    let document = &query.1["server_keys"][0];
    assert_eq!(document["verify_keys"], synapse_keys["verify_keys"], "{}", query.1);
    assert_signed_with(&synapse_keys, &synapse.server_name, document);
    let trellis_keys = federation_call(&client, &trellis, "GET", "/_matrix/key/v2/server", None, None).await.1;
    assert_signed_with(&trellis_keys, &trellis_name, document);

    // And Synapse, as a notary, has Trellis's keys: it fetched them to check Trellis's request.
    let from_synapse: Value = client
        .get(format!("{}/_matrix/key/v2/query/{}", synapse.federation_url, trellis_name))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(from_synapse["server_keys"][0]["verify_keys"], trellis_keys["verify_keys"], "{from_synapse}");
}

/// A Trellis user joins rooms on Synapse and a Synapse user joins rooms on Trellis (room
/// versions 10 and 12); messages go both ways, and both servers hold the same room state.
#[tokio::test]
async fn synapse_and_trellis_users_join_each_others_rooms_and_talk() {
    let Some(Peers { synapse, trellis, trellis_name, .. }) = synapse_and_trellis().await else { return };
    let alice = trellis.register("alice", "pw").await;
    let sam = synapse.register("sam").await;

    for version in ["10", "12"] {
        // Into Synapse's room.
        let created = synapse
            .client_post(
                "/_matrix/client/v3/createRoom",
                &sam,
                json!({"preset": "public_chat", "room_version": version}),
            )
            .await;
        assert_eq!(created.0, 200, "{}", created.1);
        let room = created.1["room_id"].as_str().unwrap().to_owned();
        let joined = join_via(&trellis, &alice, &room, &[&synapse.server_name]).await;
        assert_eq!(joined, (200, json!({"room_id": room})), "v{version}");
        assert_eq!(state_ids(&trellis, &alice, &room).await, synapse.state_ids(&room, &sam).await, "v{version}");
        talk_both_ways(&trellis, &alice, &synapse, &sam, &room, &format!("v{version} on Synapse")).await;

        // Into Trellis's room.
        let room = create_room(&trellis, &alice, json!({"preset": "public_chat", "room_version": version})).await;
        let joined = synapse
            .client_post(
                &format!("/_matrix/client/v3/join/{}?server_name={}&via={}", enc(&room), trellis_name, trellis_name),
                &sam,
                json!({}),
            )
            .await;
        assert_eq!(joined.0, 200, "v{version}: {}", joined.1);
        let member = format!(
            "/_matrix/client/v3/rooms/{}/state/m.room.member/{}",
            enc(&room),
            enc(&format!("@sam:{}", synapse.server_name))
        );
        assert_eq!(trellis.get(&member, alice.token()).await.1["membership"], "join", "v{version}");
        assert_eq!(state_ids(&trellis, &alice, &room).await, synapse.state_ids(&room, &sam).await, "v{version}");
        talk_both_ways(&trellis, &alice, &synapse, &sam, &room, &format!("v{version} on Trellis")).await;
    }
}

/// The message bodies of a room's newest events, newest first.
fn bodies(page: &Value) -> Vec<String> {
    page["chunk"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["content"]["body"].as_str().map(Into::into))
        .collect()
}

/// A Trellis user and a Synapse user in one room each send a message; each reaches the other
/// server, and afterwards both servers hold the same state.
async fn talk_both_ways(trellis: &TestServer, alice: &Session, synapse: &Synapse, sam: &str, room: &str, label: &str) {
    let messages = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=20", enc(room));
    let from_trellis = format!("hello from Trellis, {label}");
    send_text(trellis, alice, room, &from_trellis).await;
    let from_synapse = format!("hello from Synapse, {label}");
    let sent = synapse
        .client_put(
            &format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{}", enc(room), enc(label)),
            sam,
            json!({"msgtype": "m.text", "body": from_synapse}),
        )
        .await;
    assert_eq!(sent.0, 200, "{label}: {}", sent.1);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let on_synapse = bodies(&synapse.client_get(&messages, sam).await.1);
        let on_trellis = bodies(&trellis.get(&messages, alice.token()).await.1);
        let everywhere = |bodies: &Vec<String>| bodies.contains(&from_trellis) && bodies.contains(&from_synapse);
        if everywhere(&on_synapse) && everywhere(&on_trellis) {
            break;
        }
        assert!(Instant::now() < deadline, "{label}: Synapse has {on_synapse:?}, Trellis has {on_trellis:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(state_ids(trellis, alice, room).await, synapse.state_ids(room, sam).await, "{label}");
}
