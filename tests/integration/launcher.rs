//! `complement-tests/launch`: started the way a black-box harness starts it, with a CA made
//! here; the client API answers over plain HTTP and the federation API over TLS signed by that CA;
//! two servers started that way share rooms.

use std::{path::Path, process::Command};

use serde_json::json;
use trellis::config::Config;

use crate::{
    harness::{Session, TestServer, enc},
    room_helpers::{create_room, send_text},
};

pub(crate) use crate::federation::free_port;

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
        .env("TRELLIS_BIN", crate::harness::trellis_bin());
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
    // URL previews may fetch loopback pages (Complement's `TestUrlPreview` serves one there);
    // the default config still refuses them.
    let loopback: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    assert!(config.url_preview.ip_range_allowlist.iter().any(|range| range.contains(&loopback)));
    let default =
        Config::from_toml("[global]\nserver_name = \"hs1\"\ndatabase_path = \"/tmp/x\"\n", "default", Vec::new())
            .unwrap()
            .config;
    assert!(default.url_preview.ip_range_allowlist.is_empty());
    assert!(default.url_preview.ip_range_denylist.iter().any(|range| range.contains(&loopback)));
    assert_eq!(server.stop(), Some(0));
}

/// One server started through `complement-tests/launch`, as Complement starts each of its
/// homeservers: `name` on its own ports, the other servers in `COMPLEMENT_HS_ADDRS`.
fn launch(ca_dir: &Path, data_dir: &Path, name: &str, ports: (u16, u16), others: &str) -> TestServer {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("complement-tests/launch");
    let mut command = Command::new("bash");
    command
        .arg(script)
        .env("SERVER_NAME", name)
        .env("COMPLEMENT_HS_ADDRS", others)
        .env("CS_PORT", ports.0.to_string())
        .env("FED_PORT", ports.1.to_string())
        .env("DATA_DIR", data_dir)
        .env("COMPLEMENT_CA_CRT", ca_dir.join("ca.crt"))
        .env("COMPLEMENT_CA_KEY", ca_dir.join("ca.key"))
        .env("TRELLIS_BIN", crate::harness::trellis_bin());
    TestServer::spawn(command, true).expect("launch starts trellis")
}

/// Polls `check` until it holds (20 s at most).
async fn eventually<F: AsyncFn() -> bool>(what: &str, check: F) {
    for _ in 0..200 {
        if check().await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("never happened: {what}");
}

/// The bodies of a room's messages as `user` pages back through `/messages`, newest first.
async fn bodies(server: &TestServer, user: &Session, room: &str) -> Vec<String> {
    let path = format!("/_matrix/client/v3/rooms/{}/messages?dir=b&limit=100", enc(room));
    let page = server.get(&path, user.token()).await;
    assert_eq!(page.0, 200, "{}", page.1);
    page.1["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect()
}

/// Two servers started by the launch script with a CA made here share rooms in room versions
/// 1, 6, 10, 11 and 12: an invite across servers, a join by an alias of the other server,
/// messages both ways, history from before the join (backfill), a ban that refuses the next
/// join, an unban, a leave, and for the versions that have them a restricted join through a
/// space.
#[tokio::test]
async fn two_servers_started_by_the_launch_script_share_rooms() {
    let tempdir = tempfile::tempdir().unwrap();
    make_ca(tempdir.path());
    let (ports1, ports2) = ((free_port(), free_port()), (free_port(), free_port()));
    let addrs = format!("hs1=127.0.0.1:{},hs2=127.0.0.1:{}", ports1.1, ports2.1);
    let hs1 = launch(tempdir.path(), &tempdir.path().join("hs1"), "hs1", ports1, &addrs);
    let hs2 = launch(tempdir.path(), &tempdir.path().join("hs2"), "hs2", ports2, &addrs);
    let alice = hs1.register("alice", "pw").await;
    let bob = hs2.register("bob", "pw").await;
    let carol = hs2.register("carol", "pw").await;

    for version in ["1", "6", "10", "11", "12"] {
        let alias = format!("shared-v{version}");
        let body = json!({"preset": "public_chat", "room_version": version, "room_alias_name": alias});
        let room = create_room(&hs1, &alice, body).await;
        send_text(&hs1, &alice, &room, "before bob").await;

        // An invite crosses to hs2 and shows in bob's sync; he joins by hs1's alias.
        let invite = format!("/_matrix/client/v3/rooms/{}/invite", enc(&room));
        let invited = hs1.post(&invite, alice.token(), json!({"user_id": bob.user_id})).await;
        assert_eq!(invited.0, 200, "v{version}: {}", invited.1);
        eventually("the invite in bob's sync", async || {
            let sync = hs2.get("/_matrix/client/v3/sync", bob.token()).await;
            sync.1["rooms"]["invite"][&room].is_object()
        })
        .await;
        let joined = hs2
            .post(&format!("/_matrix/client/v3/join/{}", enc(&format!("#{alias}:hs1"))), bob.token(), json!({}))
            .await;
        assert_eq!(joined.0, 200, "v{version}: {}", joined.1);
        assert_eq!(joined.1["room_id"], room.as_str());

        // Messages both ways, and the history from before bob's join on hs2.
        send_text(&hs2, &bob, &room, "from hs2").await;
        eventually("bob's message on hs1", async || bodies(&hs1, &alice, &room).await.contains(&"from hs2".to_owned()))
            .await;
        send_text(&hs1, &alice, &room, "from hs1").await;
        eventually("alice's message on hs2", async || bodies(&hs2, &bob, &room).await.contains(&"from hs1".to_owned()))
            .await;
        assert_eq!(bodies(&hs2, &bob, &room).await, bodies(&hs1, &alice, &room).await, "v{version}");
        assert!(bodies(&hs2, &bob, &room).await.contains(&"before bob".to_owned()), "v{version}: backfilled");

        // A ban reaches hs2 and refuses bob's next join; after an unban he joins and leaves.
        let ban = format!("/_matrix/client/v3/rooms/{}/ban", enc(&room));
        let banned = hs1.post(&ban, alice.token(), json!({"user_id": bob.user_id, "reason": "test"})).await;
        assert_eq!(banned.0, 200, "v{version}: {}", banned.1);
        eventually("the ban on hs2", async || {
            let filter = enc(r#"{"room":{"include_leave":true}}"#);
            let sync = hs2.get(&format!("/_matrix/client/v3/sync?filter={filter}"), bob.token()).await;
            sync.1["rooms"]["leave"][&room].is_object()
        })
        .await;
        let refused =
            hs2.post(&format!("/_matrix/client/v3/join/{}?via=hs1", enc(&room)), bob.token(), json!({})).await;
        assert_eq!(refused.0, 403, "v{version}: {}", refused.1);
        let unban = format!("/_matrix/client/v3/rooms/{}/unban", enc(&room));
        assert_eq!(hs1.post(&unban, alice.token(), json!({"user_id": bob.user_id})).await.0, 200);
        let rejoined =
            hs2.post(&format!("/_matrix/client/v3/join/{}?via=hs1", enc(&room)), bob.token(), json!({})).await;
        assert_eq!(rejoined.0, 200, "v{version}: {}", rejoined.1);
        let leave = format!("/_matrix/client/v3/rooms/{}/leave", enc(&room));
        assert_eq!(hs2.post(&leave, bob.token(), json!({})).await.0, 200);
        let bob_member = format!("/_matrix/client/v3/rooms/{}/state/m.room.member/{}", enc(&room), enc(&bob.user_id));
        eventually("bob's leave on hs1", async || hs1.get(&bob_member, alice.token()).await.1["membership"] == "leave")
            .await;

        // Restricted rooms (version 8 and later): a member of the space joins, carol cannot.
        if version.parse::<u32>().unwrap() >= 8 {
            let space = create_room(&hs1, &alice, json!({"preset": "public_chat", "room_version": version})).await;
            let allow = json!([{"type": "m.room_membership", "room_id": space}]);
            let restricted = create_room(
                &hs1,
                &alice,
                json!({"room_version": version, "initial_state": [{"type": "m.room.join_rules", "state_key": "",
                    "content": {"join_rule": "restricted", "allow": allow}}]}),
            )
            .await;
            let path = |room: &str| format!("/_matrix/client/v3/join/{}?via=hs1", enc(room));
            let denied = hs2.post(&path(&restricted), bob.token(), json!({})).await;
            assert_eq!(denied.0, 403, "v{version}: {}", denied.1);
            assert_eq!(hs2.post(&path(&space), bob.token(), json!({})).await.0, 200, "v{version}");
            let allowed = hs2.post(&path(&restricted), bob.token(), json!({})).await;
            assert_eq!(allowed.0, 200, "v{version}: {}", allowed.1);
            let still_denied = hs2.post(&path(&restricted), carol.token(), json!({})).await;
            assert_eq!(still_denied.0, 403, "v{version}: {}", still_denied.1);
        }
    }
    assert_eq!(hs2.stop(), Some(0));
    assert_eq!(hs1.stop(), Some(0));
}
