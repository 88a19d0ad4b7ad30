//! Federation between two Trellis servers (`hs-a`, `hs-b`) on loopback, over TLS with a test CA
//! made here by `openssl`, reached through `federation_server_addresses`; and a fake server
//! (`hs-t`, in this process) whose signing key the tests hold, so they can sign requests
//! themselves, correctly and not.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
};

use axum::{Router, http::HeaderMap, routing::get};
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedServerName,
    api::federation::authentication::{XMatrix, XMatrixSigningInput},
    serde::Base64,
    signatures::{Ed25519KeyPair, PublicKeyMap, PublicKeySet},
};
use serde_json::{Value, json};

use crate::harness::{TestServer, assert_error, enc};

/// A loopback port free now and never handed out before in this test process: a server that
/// stops and starts again on its port (a restart test) must not find it taken by another test
/// that was given the same port meanwhile.
pub(crate) fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if HANDED_OUT.lock().unwrap().insert(port) {
            return port;
        }
    }
}

fn openssl(args: &[&str], dir: &Path) {
    let output = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl runs");
    assert!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

/// A test CA and one certificate for every test server name (and 127.0.0.1).
pub(crate) struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    pub(crate) fn new(names: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path();
        openssl(
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=Trellis Federation Test CA",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
            ],
            path,
        );
        let san: Vec<String> = names.iter().map(|name| format!("DNS:{name}")).chain(["IP:127.0.0.1".into()]).collect();
        std::fs::write(
            path.join("ext.cnf"),
            format!(
                "basicConstraints = critical, CA:FALSE\nkeyUsage = critical, digitalSignature, keyEncipherment\n\
                 extendedKeyUsage = serverAuth\nsubjectAltName = {}\n",
                san.join(",")
            ),
        )
        .unwrap();
        openssl(&["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "server.key"], path);
        openssl(&["req", "-new", "-key", "server.key", "-subj", "/CN=federation", "-out", "server.csr"], path);
        openssl(
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-set_serial",
                "7",
                "-days",
                "2",
                "-sha256",
                "-extfile",
                "ext.cnf",
                "-out",
                "server.crt",
            ],
            path,
        );
        Self { dir }
    }
    pub(crate) fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }
    /// An HTTP client that trusts the test CA.
    pub(crate) fn client(&self) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(&std::fs::read(self.path("ca.crt")).unwrap()).unwrap();
        reqwest::Client::builder().add_root_certificate(ca).build().unwrap()
    }
}

/// A Trellis server with a federation listener on `port`, reaching the others through `peers`.
pub(crate) fn start_federating(
    pki: &Pki,
    dir: &Path,
    name: &str,
    port: u16,
    peers: &[(&str, u16)],
    extra: &str,
) -> TestServer {
    let addresses: String = peers.iter().map(|(peer, port)| format!("\"{peer}\" = \"127.0.0.1:{port}\"\n")).collect();
    // Defaults that `extra` does not set itself.
    let defaults: String = [
        format!("federation_ca_file = \"{}\"", pki.path("ca.crt").display()),
        "federation_allow_private_addresses = true".to_owned(),
        "trusted_servers = []".to_owned(),
    ]
    .into_iter()
    .filter(|line| {
        let key = line.split(" = ").next().unwrap_or_default();
        !extra.lines().any(|set| set.split('=').next().is_some_and(|k| k.trim() == key))
    })
    .map(|line| line + "\n")
    .collect();
    let config = format!(
        "{defaults}{extra}\n\
         [global.federation_listener]\naddress = \"127.0.0.1\"\nport = {port}\ncerts = \"{crt}\"\nkey = \"{key}\"\n\
         [global.federation_server_addresses]\n{addresses}",
        crt = pki.path("server.crt").display(),
        key = pki.path("server.key").display(),
    );
    TestServer::start_in(dir, name, &config).expect("federating server starts")
}

/// Serves `app` over TLS on `listener` (with the test certificate of `acceptor`) until the
/// test ends: the fake servers' listener.
pub(crate) fn serve_tls(listener: tokio::net::TcpListener, acceptor: tokio_rustls::TlsAcceptor, app: Router) {
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { break };
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else { return };
                let service = hyper_util::service::TowerToHyperService::new(app);
                let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
}

/// `hs-t`: a fake server in this process that serves its key document over TLS (and, as
/// `hs-bad`, a document whose self-signature does not verify). The tests sign with its key.
pub(crate) struct FakeServer {
    pub(crate) key_pair: Arc<Ed25519KeyPair>,
    pub(crate) port: u16,
}

impl FakeServer {
    pub(crate) const NAME: &'static str = "hs-t";
    pub(crate) const KEY_ID: &'static str = "ed25519:t1";

    pub(crate) async fn start(pki: &Pki) -> Self {
        let key_pair = Arc::new(new_key_pair("t1"));
        let impostor = Arc::new(new_key_pair("t1"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let acceptor = trellis::server::tls_acceptor(&pki.path("server.crt"), &pki.path("server.key")).unwrap();
        let keys = key_pair.clone();
        let app = Router::new().route(
            "/_matrix/key/v2/server",
            get(move |headers: HeaderMap| {
                let (keys, impostor) = (keys.clone(), impostor.clone());
                async move {
                    let host = headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or_default().to_owned();
                    let document = match host.as_str() {
                        "hs-bad" => {
                            // Lists `keys`' public key but is signed by another key with its ID.
                            let mut document = key_document("hs-bad", &keys, 3_600_000);
                            document.remove("signatures");
                            ruma::signatures::sign_json("hs-bad", &*impostor, &mut document).unwrap();
                            document
                        }
                        // Valid until a minute ago.
                        "hs-old" => key_document("hs-old", &keys, -60_000),
                        _ => key_document(FakeServer::NAME, &keys, 3_600_000),
                    };
                    axum::Json(serde_json::to_value(document).unwrap())
                }
            }),
        );
        serve_tls(listener, acceptor, app);
        Self { key_pair, port }
    }

    /// The `Authorization` header of a request signed by `hs-t`'s key.
    pub(crate) fn sign(&self, method: &str, uri: &str, destination: &str, body: Option<&Value>) -> String {
        sign_with(&self.key_pair, FakeServer::NAME, method, uri, destination, body)
    }

    /// The same, but naming `origin` (another name the fake server serves keys for).
    fn sign_as(&self, origin: &str, method: &str, uri: &str, destination: &str) -> String {
        sign_with(&self.key_pair, origin, method, uri, destination, None)
    }
}

pub(crate) fn new_key_pair(version: &str) -> Ed25519KeyPair {
    Ed25519KeyPair::from_der(&Ed25519KeyPair::generate(), version.to_owned()).unwrap()
}

/// `server`'s key document listing `key_pair`, valid for `valid_for_ms` from now (negative:
/// expired), self-signed.
pub(crate) fn key_document(server: &str, key_pair: &Ed25519KeyPair, valid_for_ms: i64) -> CanonicalJsonObject {
    let now = i64::try_from(u64::from(ruma::MilliSecondsSinceUnixEpoch::now().get())).unwrap();
    let valid_until = now + valid_for_ms;
    let mut document: CanonicalJsonObject = serde_json::from_value(json!({
        "server_name": server,
        "verify_keys": {
            format!("ed25519:{}", key_pair.version()): {"key": Base64::<ruma::serde::base64::Standard, _>::new(key_pair.public_key().to_vec()).encode()}
        },
        "old_verify_keys": {},
        "valid_until_ts": valid_until,
    }))
    .unwrap();
    ruma::signatures::sign_json(server, key_pair, &mut document).unwrap();
    document
}

pub(crate) fn sign_with(
    key_pair: &Ed25519KeyPair,
    origin: &str,
    method: &str,
    uri: &str,
    destination: &str,
    body: Option<&Value>,
) -> String {
    let body = body.map(|body| serde_json::to_vec(body).unwrap()).unwrap_or_default();
    let request = http::Request::builder().method(method).uri(uri).body(body).unwrap();
    let origin: OwnedServerName = origin.try_into().unwrap();
    let input = XMatrixSigningInput::new(origin, destination.try_into().unwrap(), key_pair);
    XMatrix::sign_http_request(&request, input).unwrap().to_string()
}

/// Sends a request to a server's federation listener; returns status and JSON body.
pub(crate) async fn federation_call(
    client: &reqwest::Client,
    server: &TestServer,
    method: &str,
    uri: &str,
    authorization: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    let url = format!("{}{uri}", server.federation_url.as_deref().expect("federation listener"));
    let mut request = client.request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), url);
    if let Some(authorization) = authorization {
        request = request.header("authorization", authorization);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.expect("federation request sent");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Checks that `document` is signed by `server` with the key of its `/_matrix/key/v2/server`.
pub(crate) async fn assert_signed_by(client: &reqwest::Client, server: &TestServer, name: &str, document: &Value) {
    let own = federation_call(client, server, "GET", "/_matrix/key/v2/server", None, None).await;
    assert_eq!(own.0, 200, "{}", own.1);
    assert_signed_with(&own.1, name, document);
}

/// Checks that `document` is signed by `name` with a key of its key document `own`.
pub(crate) fn assert_signed_with(own: &Value, name: &str, document: &Value) {
    let keys: PublicKeySet = own["verify_keys"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(id, key)| (id.clone(), Base64::parse(key["key"].as_str().unwrap()).unwrap()))
        .collect();
    let mut only: CanonicalJsonObject = serde_json::from_value(document.clone()).unwrap();
    if let Some(CanonicalJsonValue::Object(signatures)) = only.get_mut("signatures") {
        signatures.retain(|entity, _| entity == name);
    }
    let map = PublicKeyMap::from([(name.to_owned(), keys)]);
    ruma::signatures::verify_json(&map, &only).unwrap_or_else(|e| panic!("{name}'s signature on {document}: {e}"));
}

pub(crate) struct Pair {
    pub(crate) a: TestServer,
    pub(crate) b: TestServer,
    pub(crate) fake: FakeServer,
    pub(crate) pki: Pki,
    /// Every name the servers know an address for; `hs-x` and `hs-y` are free for more servers.
    pub(crate) peers: Vec<(&'static str, u16)>,
    pub(crate) _dirs: (tempfile::TempDir, tempfile::TempDir),
}

impl Pair {
    fn port_of(&self, name: &str) -> u16 {
        self.peers.iter().find(|(peer, _)| *peer == name).map(|(_, port)| *port).expect("a known name")
    }
}

pub(crate) async fn start_pair() -> Pair {
    let pki = Pki::new(&["hs-a", "hs-b", "hs-c", "hs-t", "hs-bad", "hs-old", "hs-x", "hs-y"]);
    let fake = FakeServer::start(&pki).await;
    let (port_a, port_b) = (free_port(), free_port());
    let peers = [
        ("hs-a", port_a),
        ("hs-b", port_b),
        ("hs-c", port_b),
        ("hs-t", fake.port),
        ("hs-bad", fake.port),
        ("hs-old", fake.port),
        ("hs-x", free_port()),
        ("hs-y", free_port()),
    ];
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = start_federating(&pki, dir_a.path(), "hs-a", port_a, &peers, "");
    let b = start_federating(&pki, dir_b.path(), "hs-b", port_b, &peers, "");
    Pair { a, b, fake, pki, peers: peers.to_vec(), _dirs: (dir_a, dir_b) }
}

#[tokio::test]
async fn servers_query_profiles_with_signed_requests_and_serve_each_others_keys() {
    let pair = start_pair().await;
    let (a, b) = (&pair.a, &pair.b);
    let alice = b.register("alice", "pw").await;
    let set = b
        .put("/_matrix/client/v3/profile/@alice:hs-b/displayname", alice.token(), json!({"displayname": "Alice B"}))
        .await;
    assert_eq!(set.0, 200, "{}", set.1);

    // A asks B (signed by A; B fetches A's key from A to check it).
    let bob = a.register("bob", "pw").await;
    let profile = a.get(&format!("/_matrix/client/v3/profile/{}", enc("@alice:hs-b")), bob.token()).await;
    assert_eq!(profile, (200, json!({"displayname": "Alice B"})));
    let field = a.get(&format!("/_matrix/client/v3/profile/{}/displayname", enc("@alice:hs-b")), bob.token()).await;
    assert_eq!(field, (200, json!({"displayname": "Alice B"})));
    assert_error(
        &a.get(&format!("/_matrix/client/v3/profile/{}", enc("@nobody:hs-b")), bob.token()).await,
        404,
        "M_NOT_FOUND",
    );
    // And B asks A.
    let profile = b.get(&format!("/_matrix/client/v3/profile/{}", enc("@bob:hs-a")), alice.token()).await;
    assert_eq!(profile.0, 200, "{}", profile.1);

    // A as a notary: B's keys, signed by B and countersigned by A.
    let client = pair.pki.client();
    let query = federation_call(&client, a, "GET", "/_matrix/key/v2/query/hs-b", None, None).await;
    assert_eq!(query.0, 200, "{}", query.1);
    let documents = query.1["server_keys"].as_array().unwrap();
    assert_eq!(documents.len(), 1, "{}", query.1);
    assert_eq!(documents[0]["server_name"], "hs-b");
    assert_signed_by(&client, b, "hs-b", &documents[0]).await;
    assert_signed_by(&client, a, "hs-a", &documents[0]).await;
    let own_b = federation_call(&client, b, "GET", "/_matrix/key/v2/server", None, None).await;
    assert_eq!(documents[0]["verify_keys"], own_b.1["verify_keys"]);

    // The batch form, for B, A itself and a server no one can reach.
    let batch = federation_call(
        &client,
        a,
        "POST",
        "/_matrix/key/v2/query",
        None,
        Some(&json!({"server_keys": {"hs-b": {}, "hs-a": {}, "unreachable.invalid": {}}})),
    )
    .await;
    assert_eq!(batch.0, 200, "{}", batch.1);
    let mut names: Vec<&str> =
        batch.1["server_keys"].as_array().unwrap().iter().map(|d| d["server_name"].as_str().unwrap()).collect();
    names.sort_unstable();
    assert_eq!(names, ["hs-a", "hs-b"]);
    for document in batch.1["server_keys"].as_array().unwrap() {
        assert_signed_by(&client, a, "hs-a", document).await;
    }
    // B learnt A's keys when it checked A's request; it vouches for them too.
    let from_b = federation_call(&client, b, "GET", "/_matrix/key/v2/query/hs-a", None, None).await;
    assert_eq!(from_b.1["server_keys"][0]["server_name"], "hs-a", "{}", from_b.1);
    assert_signed_by(&client, a, "hs-a", &from_b.1["server_keys"][0]).await;
    assert_signed_by(&client, b, "hs-b", &from_b.1["server_keys"][0]).await;
}

#[tokio::test]
async fn inbound_signatures_are_checked() {
    let pair = start_pair().await;
    let b = &pair.b;
    let alice = b.register("alice", "pw").await;
    b.put("/_matrix/client/v3/profile/@alice:hs-b/displayname", alice.token(), json!({"displayname": "Alice"})).await;
    let client = pair.pki.client();
    let uri = format!("/_matrix/federation/v1/query/profile?user_id={}", enc("@alice:hs-b"));
    let call = |authorization: Option<String>, uri: String, body: Option<Value>| {
        let client = client.clone();
        async move { federation_call(&client, b, "GET", &uri, authorization.as_deref(), body.as_ref()).await }
    };

    // Correctly signed by hs-t, whose key B fetches from the fake server.
    let signed = pair.fake.sign("GET", &uri, "hs-b", None);
    assert_eq!(call(Some(signed.clone()), uri.clone(), None).await, (200, json!({"displayname": "Alice"})));
    // The same header again works (nothing single-use), and the key is now cached.
    assert_eq!(call(Some(signed), uri.clone(), None).await.0, 200);

    // No header, or not X-Matrix.
    assert_error(&call(None, uri.clone(), None).await, 401, "M_UNAUTHORIZED");
    assert_error(&call(Some("Bearer abc".into()), uri.clone(), None).await, 401, "M_UNAUTHORIZED");
    // Signed for another path (another user): the signature does not cover this one.
    let other = format!("/_matrix/federation/v1/query/profile?user_id={}", enc("@bob:hs-b"));
    assert_error(
        &call(Some(pair.fake.sign("GET", &other, "hs-b", None)), uri.clone(), None).await,
        401,
        "M_UNAUTHORIZED",
    );
    // Signed without the body that is sent: the body is part of what is signed.
    let with_body = call(Some(pair.fake.sign("GET", &uri, "hs-b", None)), uri.clone(), Some(json!({"extra": 1}))).await;
    assert_error(&with_body, 401, "M_UNAUTHORIZED");
    // Signed for another destination.
    let wrong_destination = call(Some(pair.fake.sign("GET", &uri, "hs-c", None)), uri.clone(), None).await;
    assert_error(&wrong_destination, 401, "M_UNAUTHORIZED");
    assert!(wrong_destination.1["error"].as_str().unwrap().contains("not for hs-b"), "{}", wrong_destination.1);
    // Signed by another key under hs-t's key ID.
    let impostor = sign_with(&new_key_pair("t1"), FakeServer::NAME, "GET", &uri, "hs-b", None);
    assert_error(&call(Some(impostor), uri.clone(), None).await, 401, "M_UNAUTHORIZED");
    // A key ID hs-t does not have.
    let unknown_key = sign_with(&new_key_pair("t2"), FakeServer::NAME, "GET", &uri, "hs-b", None);
    assert_error(&call(Some(unknown_key), uri.clone(), None).await, 401, "M_UNAUTHORIZED");
    // A server whose key document's self-signature is wrong is not believed, even for a request
    // signed with the key the document lists.
    let header = pair.fake.sign_as("hs-bad", "GET", &uri, "hs-b");
    assert_error(&call(Some(header), uri.clone(), None).await, 401, "M_UNAUTHORIZED");
    // A key past its `valid_until_ts` does not verify requests.
    let header = pair.fake.sign_as("hs-old", "GET", &uri, "hs-b");
    assert_error(&call(Some(header), uri.clone(), None).await, 401, "M_UNAUTHORIZED");
    let notary = federation_call(&client, &pair.a, "GET", "/_matrix/key/v2/query/hs-bad", None, None).await;
    assert_eq!(notary, (200, json!({"server_keys": []})));
    // Notary answers about hs-t carry its document with B's countersignature.
    let notary = federation_call(&client, b, "GET", "/_matrix/key/v2/query/hs-t", None, None).await;
    let document = &notary.1["server_keys"][0];
    assert_eq!(document["server_name"], FakeServer::NAME, "{}", notary.1);
    assert!(document["signatures"]["hs-t"][FakeServer::KEY_ID].is_string(), "{document}");
    assert_signed_by(&client, b, "hs-b", document).await;
}

#[tokio::test]
async fn outbound_requests_name_their_destination() {
    let pair = start_pair().await;
    let bob = pair.a.register("bob", "pw").await;
    pair.b.register("alice", "pw").await;
    // A believes hs-c is at B's address: A signs for hs-c, and B refuses a request not for it.
    let refused = pair.a.get(&format!("/_matrix/client/v3/profile/{}", enc("@alice:hs-c")), bob.token()).await;
    assert_error(&refused, 502, "M_UNKNOWN");
    assert!(refused.1["error"].as_str().unwrap().contains("401"), "{}", refused.1);
}

#[tokio::test]
async fn outbound_connections_check_certificates_and_addresses() {
    let pair = start_pair().await;
    let alice = pair.b.register("alice", "pw").await;
    pair.b
        .put("/_matrix/client/v3/profile/@alice:hs-b/displayname", alice.token(), json!({"displayname": "Alice"}))
        .await;
    let profile_path = format!("/_matrix/client/v3/profile/{}", enc("@alice:hs-b"));
    let dir = tempfile::tempdir().unwrap();
    for sub in ["x", "y", "x2"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
    }

    // Trusting another CA than the one that signed B's certificate: no connection.
    let other_ca = Pki::new(&["elsewhere"]);
    let untrusting = start_federating(
        &pair.pki,
        &dir.path().join("x"),
        "hs-x",
        pair.port_of("hs-x"),
        &pair.peers,
        &format!("federation_ca_file = \"{}\"", other_ca.path("ca.crt").display()),
    );
    let bob = untrusting.register("bob", "pw").await;
    assert_error(&untrusting.get(&profile_path, bob.token()).await, 502, "M_UNKNOWN");

    // With certificate checks off, the same works (B checks hs-y's signature as usual).
    let unchecking = start_federating(
        &pair.pki,
        &dir.path().join("y"),
        "hs-y",
        pair.port_of("hs-y"),
        &pair.peers,
        &format!(
            "federation_ca_file = \"{}\"\nfederation_verify_certificates = false",
            other_ca.path("ca.crt").display()
        ),
    );
    let carol = unchecking.register("carol", "pw").await;
    assert_eq!(unchecking.get(&profile_path, carol.token()).await, (200, json!({"displayname": "Alice"})));

    // Loopback addresses are refused unless federation_allow_private_addresses.
    drop(untrusting);
    let guarded = start_federating(
        &pair.pki,
        &dir.path().join("x2"),
        "hs-x",
        pair.port_of("hs-x"),
        &pair.peers,
        "federation_allow_private_addresses = false",
    );
    let dave = guarded.register("dave", "pw").await;
    let refused = guarded.get(&profile_path, dave.token()).await;
    assert_error(&refused, 502, "M_UNKNOWN");
    assert!(refused.1["error"].as_str().unwrap().contains("not allowed"), "{}", refused.1);
    let client = pair.pki.client();
    let notary = federation_call(&client, &guarded, "GET", "/_matrix/key/v2/query/hs-b", None, None).await;
    assert_eq!(notary, (200, json!({"server_keys": []})));
}

#[tokio::test]
async fn keys_come_from_a_trusted_notary_when_the_server_cannot_be_reached() {
    let pair = start_pair().await;
    // hs-x cannot reach hs-t itself (a closed port), but trusts hs-b, which can.
    let mut peers = pair.peers.clone();
    for (name, port) in &mut peers {
        if *name == "hs-t" {
            *port = 1;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let x =
        start_federating(&pair.pki, dir.path(), "hs-x", pair.port_of("hs-x"), &peers, "trusted_servers = [\"hs-b\"]");
    let erin = x.register("erin", "pw").await;
    x.put("/_matrix/client/v3/profile/@erin:hs-x/displayname", erin.token(), json!({"displayname": "Erin"})).await;

    let uri = format!("/_matrix/federation/v1/query/profile?user_id={}", enc("@erin:hs-x"));
    let header = pair.fake.sign("GET", &uri, "hs-x", None);
    let client = pair.pki.client();
    let answer = federation_call(&client, &x, "GET", &uri, Some(&header), None).await;
    assert_eq!(answer, (200, json!({"displayname": "Erin"})));
    // hs-x now vouches for hs-t's keys itself: the document signed by hs-t and by hs-b, and
    // now by hs-x.
    let notary = federation_call(&client, &x, "GET", "/_matrix/key/v2/query/hs-t", None, None).await;
    let document = &notary.1["server_keys"][0];
    assert_eq!(document["server_name"], FakeServer::NAME, "{}", notary.1);
    assert_signed_by(&client, &pair.b, "hs-b", document).await;
    assert_signed_by(&client, &x, "hs-x", document).await;

    // Without a notary, the same request is refused.
    drop(x);
    let dir = tempfile::tempdir().unwrap();
    let alone = start_federating(&pair.pki, dir.path(), "hs-x", pair.port_of("hs-x"), &peers, "");
    alone.register("erin", "pw").await;
    let refused = federation_call(&client, &alone, "GET", &uri, Some(&header), None).await;
    assert_error(&refused, 401, "M_UNAUTHORIZED");
}
