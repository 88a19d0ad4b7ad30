//! Media across servers: a user of `hs-a` downloads and thumbnails media of `hs-b` through the
//! authenticated federation endpoints (identical bytes, type and name kept), and gets it from
//! `hs-a`'s cache once `hs-b` is stopped; an old server without those endpoints (`hs-x`, in
//! this process) is read through the legacy ones; the federation endpoints answer
//! `multipart/mixed` and refuse unsigned or bad requests with Matrix errors.

use std::io::Cursor;

use axum::{Router, routing::get};
use image::{ImageFormat, Rgba, RgbaImage};
use serde_json::{Value, json};

use crate::{
    federation::{FakeServer, Pair, Pki, free_port, serve_tls, start_federating, start_pair},
    harness::{Session, TestServer, assert_error},
};

fn png(width: u32, height: u32) -> Vec<u8> {
    let image = RgbaImage::from_fn(width, height, |x, y| Rgba([(x % 256) as u8, (y % 256) as u8, 90, 255]));
    let mut out = Vec::new();
    image.write_to(&mut Cursor::new(&mut out), ImageFormat::Png).expect("encode test image");
    out
}

/// Uploads `bytes` (with `filename` unless empty); returns the media ID.
async fn upload(server: &TestServer, session: &Session, bytes: Vec<u8>, content_type: &str, filename: &str) -> String {
    let query = if filename.is_empty() { String::new() } else { format!("?filename={filename}") };
    let response = server
        .http
        .post(server.url(&format!("/_matrix/media/v3/upload{query}")))
        .bearer_auth(&session.access_token)
        .header("content-type", content_type)
        .body(bytes)
        .send()
        .await
        .expect("upload sent");
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = response.json().await.unwrap();
    body["content_uri"].as_str().unwrap().rsplit('/').next().unwrap().to_owned()
}

/// GET with an access token: status, content type, content disposition, bytes.
async fn fetch(server: &TestServer, path: &str, session: &Session) -> (u16, String, String, Vec<u8>) {
    let response = server.http.get(server.url(path)).bearer_auth(&session.access_token).send().await.expect("sent");
    let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let (content_type, disposition) = (header("content-type"), header("content-disposition"));
    (response.status().as_u16(), content_type, disposition, response.bytes().await.unwrap().to_vec())
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or(Value::Null)
}

/// The parts of a `multipart/mixed` body: each part's headers (lower-case text) and bytes.
fn multipart(content_type: &str, body: &[u8]) -> Vec<(String, Vec<u8>)> {
    let boundary = content_type.split("boundary=").nth(1).expect("a boundary").trim_matches('"');
    let delimiter = format!("--{boundary}").into_bytes();
    let mut parts = Vec::new();
    let mut pieces = Vec::new();
    let mut rest = body;
    while let Some(at) = rest.windows(delimiter.len()).position(|w| w == delimiter.as_slice()) {
        pieces.push(&rest[..at]);
        rest = &rest[at + delimiter.len()..];
    }
    pieces.push(rest);
    for piece in pieces.into_iter().skip(1) {
        if piece.starts_with(b"--") {
            break;
        }
        let piece = piece.strip_prefix(b"\r\n").unwrap_or(piece);
        let piece = piece.strip_suffix(b"\r\n").unwrap_or(piece);
        let split = piece.windows(4).position(|w| w == b"\r\n\r\n").expect("part headers end");
        let headers = String::from_utf8_lossy(&piece[..split]).to_ascii_lowercase();
        parts.push((headers, piece[split + 4..].to_vec()));
    }
    parts
}

#[tokio::test]
async fn remote_media_downloads_and_thumbnails_identically_and_is_then_served_from_the_cache() {
    let Pair { a, b, _dirs, .. } = start_pair().await;
    let alice = b.register("alice", "pw").await;
    let bob = a.register("bob", "pw").await;
    let image = png(300, 200);
    let media_id = upload(&b, &alice, image.clone(), "image/png", "cat.png").await;
    let download = format!("/_matrix/client/v1/media/download/hs-b/{media_id}");
    let thumbnail = format!("/_matrix/client/v1/media/thumbnail/hs-b/{media_id}?width=32&height=32&method=scale");
    let local_thumbnail = fetch(&b, &thumbnail, &alice).await;
    assert_eq!(local_thumbnail.0, 200);

    let (status, content_type, disposition, bytes) = fetch(&a, &download, &bob).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
    assert_eq!(bytes, image);
    assert_eq!(content_type, "image/png");
    assert!(disposition.contains("cat.png"), "{disposition}");
    let remote_thumbnail = fetch(&a, &thumbnail, &bob).await;
    assert_eq!(remote_thumbnail.0, 200);
    assert_eq!(remote_thumbnail.3, local_thumbnail.3, "the thumbnail hs-b made");
    assert_eq!(remote_thumbnail.1, local_thumbnail.1);
    // The legacy path serves remote media too.
    let legacy = fetch(&a, &format!("/_matrix/media/v3/download/hs-b/{media_id}"), &bob).await;
    assert_eq!((legacy.0, legacy.3 == image), (200, true));

    // hs-b goes away: what hs-a fetched is still served, from its cache.
    b.stop();
    let (status, content_type, _, bytes) = fetch(&a, &download, &bob).await;
    assert_eq!((status, content_type.as_str()), (200, "image/png"));
    assert_eq!(bytes, image);
    let cached_thumbnail = fetch(&a, &thumbnail, &bob).await;
    assert_eq!((cached_thumbnail.0, cached_thumbnail.3 == local_thumbnail.3), (200, true));
    // What was never fetched cannot be reached now.
    let other = fetch(&a, "/_matrix/client/v1/media/download/hs-b/neverfetched", &bob).await;
    assert_eq!(other.0, 502, "{}", String::from_utf8_lossy(&other.3));
    assert_eq!(json(&other.3)["errcode"], "M_UNKNOWN");
}

#[tokio::test]
async fn remote_media_keeps_its_type_and_may_have_no_name() {
    // Complement's TestContentMediaV1 and TestMediaWithoutFileNameCSMediaV1.
    let pair = start_pair().await;
    let (a, b) = (&pair.a, &pair.b);
    let alice = b.register("alice", "pw").await;
    let bob = a.register("bob", "pw").await;
    let odd = upload(b, &alice, png(8, 8), "img/png", "test.png").await;
    let (status, content_type, _, bytes) =
        fetch(a, &format!("/_matrix/client/v1/media/download/hs-b/{odd}"), &bob).await;
    assert_eq!((status, content_type.as_str(), bytes), (200, "img/png", png(8, 8)));

    let plain = upload(b, &alice, b"Hello World!".to_vec(), "text/plain", "").await;
    let (status, content_type, disposition, bytes) =
        fetch(a, &format!("/_matrix/client/v1/media/download/hs-b/{plain}"), &bob).await;
    assert_eq!((status, bytes.as_slice()), (200, b"Hello World!".as_slice()));
    assert_eq!(content_type.split(';').next(), Some("text/plain"));
    assert!(!disposition.contains("filename"), "{disposition}");

    // Unknown remote media is not found, as hs-b says; bad IDs are not even asked for.
    let missing = fetch(a, "/_matrix/client/v1/media/download/hs-b/doesnotexist", &bob).await;
    assert_eq!((missing.0, json(&missing.3)["errcode"].clone()), (404, json!("M_NOT_FOUND")));
    let bad = fetch(a, "/_matrix/client/v1/media/download/hs-b/bad.id", &bob).await;
    assert_eq!(bad.0, 404);
}

#[tokio::test]
async fn federation_media_endpoints_answer_multipart_and_refuse_bad_requests() {
    // Complement's TestFederationThumbnail, and the refusals.
    let pair = start_pair().await;
    let b = &pair.b;
    let alice = b.register("alice", "pw").await;
    let media_id = upload(b, &alice, png(300, 200), "image/png", "big.png").await;
    let client_thumbnail = fetch(
        b,
        &format!("/_matrix/client/v1/media/thumbnail/hs-b/{media_id}?width=32&height=32&method=scale"),
        &alice,
    )
    .await;
    let client = pair.pki.client();
    let base = b.federation_url.clone().unwrap();
    let call = |uri: String, signed: bool| {
        let (client, base) = (client.clone(), base.clone());
        let authorization = signed.then(|| pair.fake.sign("GET", &uri, "hs-b", None));
        async move {
            let mut request = client.get(format!("{base}{uri}"));
            if let Some(authorization) = authorization {
                request = request.header("authorization", authorization);
            }
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let content_type =
                response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
            (status, content_type, response.bytes().await.unwrap().to_vec())
        }
    };

    let thumbnail = format!("/_matrix/federation/v1/media/thumbnail/{media_id}?method=scale&width=32&height=32");
    let (status, content_type, body) = call(thumbnail.clone(), true).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(content_type.starts_with("multipart/mixed"), "{content_type}");
    let parts = multipart(&content_type, &body);
    assert_eq!(parts.len(), 2, "{parts:?}");
    assert!(parts[0].0.contains("application/json"), "{}", parts[0].0);
    assert_eq!(json(&parts[0].1), json!({}));
    assert!(parts[1].0.contains("content-type: image/png"), "{}", parts[1].0);
    assert_eq!(parts[1].1, client_thumbnail.3);

    let (status, content_type, body) = call(format!("/_matrix/federation/v1/media/download/{media_id}"), true).await;
    assert_eq!(status, 200);
    let parts = multipart(&content_type, &body);
    assert_eq!(parts[1].1, png(300, 200));
    assert!(parts[1].0.contains("big.png"), "{}", parts[1].0);

    // Unsigned, unknown, malformed: Matrix errors.
    let unsigned = call(format!("/_matrix/federation/v1/media/download/{media_id}"), false).await;
    assert_eq!((unsigned.0, json(&unsigned.2)["errcode"].clone()), (401, json!("M_UNAUTHORIZED")));
    for (uri, status, errcode) in [
        ("/_matrix/federation/v1/media/download/doesnotexist".to_owned(), 404, "M_NOT_FOUND"),
        ("/_matrix/federation/v1/media/download/bad.id".to_owned(), 404, "M_NOT_FOUND"),
        (format!("/_matrix/federation/v1/media/thumbnail/{media_id}?width=32"), 400, "M_INVALID_PARAM"),
        (format!("/_matrix/federation/v1/media/thumbnail/{media_id}?width=0&height=0"), 400, "M_INVALID_PARAM"),
        (format!("/_matrix/federation/v1/media/thumbnail/{media_id}?width=x&height=2"), 400, "M_INVALID_PARAM"),
        (format!("/_matrix/federation/v1/media/download/{media_id}?timeout_ms=-5"), 400, "M_INVALID_PARAM"),
    ] {
        let (got, _, body) = call(uri.clone(), true).await;
        assert_error(&(got, json(&body)), status, errcode);
    }
}

#[tokio::test]
async fn media_of_servers_without_federation_media_is_read_through_the_legacy_endpoints() {
    let pair = start_pair().await;
    let a = &pair.a;
    let bob = a.register("bob", "pw").await;
    // hs-x: an old server, knowing only /_matrix/media/v3/download.
    let port = pair.peers.iter().find(|(name, _)| *name == "hs-x").unwrap().1;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let acceptor = trellis::server::tls_acceptor(&pair.pki.path("server.crt"), &pair.pki.path("server.key")).unwrap();
    let app = Router::new().route(
        "/_matrix/media/v3/download/hs-x/{media_id}",
        get(|| async {
            (
                [("content-type", "text/plain"), ("content-disposition", "inline; filename=\"old.txt\"")],
                "from an old server",
            )
        }),
    );
    serve_tls(listener, acceptor, app);

    let (status, content_type, disposition, bytes) =
        fetch(a, "/_matrix/client/v1/media/download/hs-x/OldMedia", &bob).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
    assert_eq!((content_type.as_str(), bytes.as_slice()), ("text/plain", b"from an old server".as_slice()));
    assert!(disposition.contains("old.txt"), "{disposition}");
}

#[tokio::test]
async fn the_remote_media_cache_keeps_to_its_size_and_drops_the_least_recently_used() {
    let pki = Pki::new(&["hs-a", "hs-b", "hs-t"]);
    let fake = FakeServer::start(&pki).await;
    let (port_a, port_b) = (free_port(), free_port());
    let peers = [("hs-a", port_a), ("hs-b", port_b), ("hs-t", fake.port)];
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a =
        start_federating(&pki, dir_a.path(), "hs-a", port_a, &peers, "[global.media]\nremote_cache_max_size = 3000");
    let b = start_federating(&pki, dir_b.path(), "hs-b", port_b, &peers, "");
    let alice = b.register("alice", "pw").await;
    let bob = a.register("bob", "pw").await;
    let mut ids = Vec::new();
    for n in 0..3u8 {
        ids.push(upload(&b, &alice, vec![n; 1500], "application/octet-stream", "").await);
    }
    let download = |id: &String| format!("/_matrix/client/v1/media/download/hs-b/{id}");
    for (n, id) in ids.iter().enumerate() {
        let got = fetch(&a, &download(id), &bob).await;
        assert_eq!((got.0, got.3), (200, vec![n as u8; 1500]));
    }
    // Two files fit; the first, least recently used, was dropped for the third.
    b.stop();
    for (n, id) in ids.iter().enumerate().skip(1) {
        let got = fetch(&a, &download(id), &bob).await;
        assert_eq!((got.0, got.3), (200, vec![n as u8; 1500]), "file {n}");
    }
    assert_eq!(fetch(&a, &download(&ids[0]), &bob).await.0, 502);
    let remote_dir = dir_a.path().join("db").join("media").join("remote");
    let files = walk(&remote_dir);
    assert_eq!(files, 2, "files in {}", remote_dir.display());
}

/// Files under `dir` (its `tmp/` aside).
fn walk(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|entry| {
            let path = entry.path();
            if path.is_dir() {
                if path.file_name().is_some_and(|name| name == "tmp") { 0 } else { walk(&path) }
            } else {
                1
            }
        })
        .sum()
}
