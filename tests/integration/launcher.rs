//! `complement-tests/launch`: started the way a black-box harness starts it, with a CA made
//! here; the client API answers over plain HTTP and the federation API over TLS signed by that CA.

use std::{path::Path, process::Command};

use trellis::config::Config;

use crate::harness::TestServer;

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub(crate) fn make_ca(dir: &Path) {
    let status = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=Trellis Test CA"])
        .arg("-keyout")
        .arg(dir.join("ca.key"))
        .arg("-out")
        .arg(dir.join("ca.crt"))
        .output()
        .unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
}

#[tokio::test]
async fn launch_script_serves_clients_and_federation_over_tls() {
    let tempdir = tempfile::tempdir().unwrap();
    make_ca(tempdir.path());
    let data_dir = tempdir.path().join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    let (cs_port, fed_port) = (free_port(), free_port());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("complement-tests/launch");
    let mut command = Command::new("bash");
    command
        .arg(script)
        .env("SERVER_NAME", "hs1")
        .env("COMPLEMENT_HS_ADDRS", format!("hs1=127.0.0.1:{fed_port},hs2=127.0.0.1:1"))
        .env("CS_PORT", cs_port.to_string())
        .env("FED_PORT", fed_port.to_string())
        .env("DATA_DIR", &data_dir)
        .env("COMPLEMENT_CA_CRT", tempdir.path().join("ca.crt"))
        .env("COMPLEMENT_CA_KEY", tempdir.path().join("ca.key"))
        .env("TRELLIS_BIN", env!("CARGO_BIN_EXE_trellis"));
    let server = TestServer::spawn(command, true).expect("launch starts trellis");
    assert_eq!(server.base_url, format!("http://127.0.0.1:{cs_port}"));
    assert_eq!(server.federation_url, Some(format!("https://127.0.0.1:{fed_port}")));

    let versions = server.get("/_matrix/client/versions", None).await;
    assert_eq!(versions.0, 200, "{}", versions.1);

    // The shared secret `complement` registers users, as Complement does.
    let nonce = server.get("/_synapse/admin/v1/register", None).await;
    assert_eq!(nonce.0, 200, "{}", nonce.1);

    let ca = reqwest::Certificate::from_pem(&std::fs::read(tempdir.path().join("ca.crt")).unwrap()).unwrap();
    let trusting = reqwest::Client::builder().add_root_certificate(ca).build().unwrap();
    let fed_url = format!("https://127.0.0.1:{fed_port}/_matrix/federation/v1/version");
    let response = trusting.get(&fed_url).send().await.expect("TLS with the test CA");
    assert_eq!(response.status().as_u16(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["server"]["name"], "Trellis");
    // The certificate also carries the server name: connect by name, resolved to loopback.
    let by_name = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(tempdir.path().join("ca.crt")).unwrap()).unwrap(),
        )
        .resolve("hs1", format!("127.0.0.1:{fed_port}").parse().unwrap())
        .build()
        .unwrap();
    let named =
        by_name.get(format!("https://hs1:{fed_port}/_matrix/federation/v1/version")).send().await.expect("TLS by name");
    assert_eq!(named.status().as_u16(), 200);
    // The federation port serves the federation API only, not the client or admin APIs.
    let client_api =
        trusting.get(format!("https://127.0.0.1:{fed_port}/_matrix/client/versions")).send().await.unwrap();
    assert_eq!(client_api.status().as_u16(), 404);
    // A client that does not trust the CA is refused: the TLS is real.
    let untrusting = reqwest::Client::builder().build().unwrap();
    assert!(untrusting.get(&fed_url).send().await.is_err());

    let config = Config::load(Some(&data_dir.join("trellis.toml")), Vec::new()).unwrap().config;
    assert_eq!(config.server_name.as_str(), "hs1");
    assert_eq!(config.federation_server_addresses.get("hs2").map(String::as_str), Some("127.0.0.1:1"));
    assert!(config.federation_allow_private_addresses);
    assert_eq!(server.stop(), Some(0));
}
