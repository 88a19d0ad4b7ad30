//! A real Synapse (PyPI `matrix-synapse`) federating with a Trellis server on loopback TLS,
//! both named by IP literal and port (so neither needs an address override), with one test CA
//! made by `openssl` (the approach of `tests/integration/peer_synapse.rs`, which this crate
//! cannot import). Runs when `TRELLIS_SYNAPSE_PYTHON` names a Python with `matrix-synapse`
//! installed; [`trellis_and_synapse`] gives `None` otherwise and the test skips itself.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use matrix_sdk::Client;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{
    federation::{free_port, make_pki},
    harness::{TestServer, login_at, register_with},
};

/// A Synapse process, killed when dropped.
pub struct Synapse {
    child: Child,
    pub base_url: String,
}

impl Drop for Synapse {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `GET /health` on 127.0.0.1:`port` answers 200 (plain HTTP/1.0, no client library).
async fn healthy(port: u16) -> bool {
    let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else { return false };
    if stream.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").await.is_err() {
        return false;
    }
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    answer.starts_with(b"HTTP/1.0 200") || answer.starts_with(b"HTTP/1.1 200")
}

impl Synapse {
    /// Starts Synapse in `dir` with the test CA and certificate in `pki`.
    async fn start(python: &str, pki: &Path, dir: &Path) -> Synapse {
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
macaroon_secret_key: "macaroon-secret"
form_secret: "form-secret"
trusted_key_servers: []
suppress_key_server_warning: true
rc_registration: {{per_second: 1000, burst_count: 1000}}
rc_login: {{address: {{per_second: 1000, burst_count: 1000}}, account: {{per_second: 1000, burst_count: 1000}}}}
rc_message: {{per_second: 1000, burst_count: 1000}}
rc_joins: {{local: {{per_second: 1000, burst_count: 1000}}, remote: {{per_second: 1000, burst_count: 1000}}}}
rc_key_requests: {{per_second: 1000, burst_count: 1000}}
"#,
            crt = pki.join("server.crt").display(),
            key = pki.join("server.key").display(),
            ca = pki.join("ca.crt").display(),
        );
        std::fs::write(dir.join("homeserver.yaml"), config).expect("write homeserver.yaml");
        std::fs::write(
            dir.join("log.yaml"),
            format!(
                "version: 1\nformatters: {{precise: {{format: '%(asctime)s %(name)s %(levelname)s %(message)s'}}}}\n\
                 handlers: {{file: {{class: logging.FileHandler, formatter: precise, filename: {d}/synapse.log}}}}\n\
                 root: {{level: INFO, handlers: [file]}}\ndisable_existing_loggers: false\n"
            ),
        )
        .expect("write log.yaml");
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
        let synapse = Synapse { child, base_url: format!("http://127.0.0.1:{client_port}") };
        let deadline = Instant::now() + Duration::from_secs(90);
        while !healthy(client_port).await {
            let log = std::fs::read_to_string(dir.join("synapse.log")).unwrap_or_default();
            assert!(Instant::now() < deadline, "Synapse did not start:\n{log}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        synapse
    }

    /// Registers `name` on Synapse (dummy auth) and returns its logged-in client.
    pub async fn register(&self, name: &str) -> Client {
        register_with(crate::harness::client_at(&self.base_url).await, name).await
    }

    /// Logs `name` in on a new Synapse device with a new client.
    pub async fn login(&self, name: &str, device_name: &str) -> Client {
        login_at(&self.base_url, name, device_name).await
    }
}

/// A Trellis server and a Synapse federating with each other.
pub struct Peers {
    pub synapse: Synapse,
    pub trellis: TestServer,
    pub trellis_name: String,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

/// Starts Trellis and Synapse, or gives `None` (the test skips) when `TRELLIS_SYNAPSE_PYTHON`
/// is unset.
pub async fn trellis_and_synapse() -> Option<Peers> {
    let Ok(python) = std::env::var("TRELLIS_SYNAPSE_PYTHON") else {
        eprintln!("skipped: TRELLIS_SYNAPSE_PYTHON is not set (a Python with matrix-synapse)");
        return None;
    };
    let (pki, synapse_dir) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
    make_pki(pki.path());
    let synapse = Synapse::start(&python, pki.path(), synapse_dir.path()).await;
    let port = free_port();
    let trellis_name = format!("127.0.0.1:{port}");
    let trellis = TestServer::start_with(
        &trellis_name,
        &format!(
            "federation_ca_file = \"{ca}\"\nfederation_allow_private_addresses = true\ntrusted_servers = []\n\
             [global.federation_listener]\naddress = \"127.0.0.1\"\nport = {port}\ncerts = \"{crt}\"\nkey = \"{key}\"\n",
            ca = pki.path().join("ca.crt").display(),
            crt = pki.path().join("server.crt").display(),
            key = pki.path().join("server.key").display(),
        ),
    );
    Some(Peers { synapse, trellis, trellis_name, _dirs: (pki, synapse_dir) })
}
