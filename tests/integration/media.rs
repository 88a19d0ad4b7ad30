//! The media repository: uploads (direct and asynchronous), authenticated and legacy downloads,
//! the legacy freeze, thumbnails, size limits and URL previews (against a small HTTP server on
//! loopback).

use std::{
    io::Cursor,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use image::{DynamicImage, ImageFormat, Rgba, RgbaImage};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

use crate::harness::{Session, TestServer, assert_error};

/// Uploads `bytes`; returns status and JSON body.
async fn upload(
    server: &TestServer,
    session: &Session,
    bytes: Vec<u8>,
    content_type: &str,
    name: &str,
) -> (u16, Value) {
    let response = server
        .http
        .post(server.url(&format!("/_matrix/media/v3/upload?filename={name}")))
        .bearer_auth(&session.access_token)
        .header("content-type", content_type)
        .body(bytes)
        .send()
        .await
        .expect("upload sent");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The `server/id` part of an `mxc://` URI.
fn mxc_path(body: &Value) -> String {
    body["content_uri"].as_str().expect("content_uri").strip_prefix("mxc://").expect("mxc URI").to_owned()
}

async fn fetch(server: &TestServer, path: &str, token: Option<&str>) -> reqwest::Response {
    let mut request = server.http.get(server.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("request sent")
}

async fn json_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn header(response: &reqwest::Response, name: &str) -> String {
    response.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
}

fn image_bytes(width: u32, height: u32, format: ImageFormat) -> Vec<u8> {
    let image = RgbaImage::from_fn(width, height, |x, y| Rgba([(x % 256) as u8, (y % 256) as u8, 128, 255]));
    let image = if format == ImageFormat::Jpeg {
        DynamicImage::ImageRgb8(DynamicImage::ImageRgba8(image).to_rgb8())
    } else {
        DynamicImage::ImageRgba8(image)
    };
    let mut out = Vec::new();
    image.write_to(&mut Cursor::new(&mut out), format).expect("encode test image");
    out
}

#[tokio::test]
async fn upload_then_download_returns_the_same_bytes_and_type() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let uploaded = upload(&server, &alice, b"hello media".to_vec(), "text/plain", "note.txt").await;
    assert_eq!(uploaded.0, 200, "{}", uploaded.1);
    let path = mxc_path(&uploaded.1);
    assert!(path.starts_with("localhost/"), "{path}");

    let response = fetch(&server, &format!("/_matrix/client/v1/media/download/{path}"), alice.token()).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "content-type"), "text/plain");
    assert_eq!(header(&response, "content-disposition"), "inline; filename=note.txt");
    assert!(header(&response, "content-security-policy").starts_with("sandbox"));
    assert_eq!(header(&response, "x-content-type-options"), "nosniff");
    assert_eq!(header(&response, "cross-origin-resource-policy"), "cross-origin");
    assert_eq!(response.bytes().await.unwrap().as_ref(), b"hello media");

    let renamed = fetch(&server, &format!("/_matrix/client/v1/media/download/{path}/other.txt"), alice.token()).await;
    assert_eq!(header(&renamed, "content-disposition"), "inline; filename=other.txt");

    // Unsafe types are downloaded, never shown inline.
    let html = upload(&server, &alice, b"<script>alert(1)</script>".to_vec(), "text/html", "x.html").await;
    let html_path = mxc_path(&html.1);
    let response = fetch(&server, &format!("/_matrix/client/v1/media/download/{html_path}"), alice.token()).await;
    assert_eq!(header(&response, "content-type"), "text/html");
    assert!(header(&response, "content-disposition").starts_with("attachment"));

    // Any user may read it; a request without a token may not.
    let bob = server.register("bob", "pw").await;
    let response = fetch(&server, &format!("/_matrix/client/v1/media/download/{path}"), bob.token()).await;
    assert_eq!(response.bytes().await.unwrap().as_ref(), b"hello media");
    for endpoint in [
        format!("/_matrix/client/v1/media/download/{path}"),
        format!("/_matrix/client/v1/media/thumbnail/{path}?width=32&height=32"),
        "/_matrix/client/v1/media/config".to_owned(),
        "/_matrix/client/v1/media/preview_url?url=https://example.org".to_owned(),
    ] {
        assert_error(&json_of(fetch(&server, &endpoint, None).await).await, 401, "M_MISSING_TOKEN");
    }

    let config = json_of(fetch(&server, "/_matrix/client/v1/media/config", alice.token()).await).await;
    assert_eq!(config, (200, json!({"m.upload.size": 20 * 1024 * 1024})));
    let versions = server.get("/_matrix/client/versions", None).await;
    assert!(versions.1["versions"].as_array().unwrap().contains(&json!("v1.11")), "{}", versions.1);
}

#[tokio::test]
async fn unknown_media_is_not_found() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    for path in [
        "/_matrix/client/v1/media/download/localhost/doesnotexist",
        "/_matrix/client/v1/media/download/localhost/bad.id",
        "/_matrix/client/v1/media/thumbnail/localhost/doesnotexist?width=32&height=32",
        "/_matrix/media/v3/download/localhost/doesnotexist",
    ] {
        assert_error(&json_of(fetch(&server, path, alice.token()).await).await, 404, "M_NOT_FOUND");
    }
}

#[tokio::test]
async fn uploads_over_the_size_limit_are_refused() {
    let server = TestServer::start_with("max_request_size = 4096").await;
    let alice = server.register("alice", "pw").await;
    let too_large = upload(&server, &alice, vec![7u8; 5000], "application/octet-stream", "big").await;
    assert_error(&too_large, 413, "M_TOO_LARGE");
    assert_eq!(upload(&server, &alice, vec![7u8; 4000], "application/octet-stream", "ok").await.0, 200);
    // The token is checked before the body is read: an anonymous upload is refused as such.
    let anonymous =
        server.http.post(server.url("/_matrix/media/v3/upload")).body(vec![7u8; 5000]).send().await.unwrap();
    assert_error(&json_of(anonymous).await, 401, "M_MISSING_TOKEN");
    let config = json_of(fetch(&server, "/_matrix/media/v3/config", alice.token()).await).await;
    assert_eq!(config, (200, json!({"m.upload.size": 4096})));
}

#[tokio::test]
async fn asynchronous_upload_reserves_then_fills_an_id() {
    let server = TestServer::start_with("[global.media]\nmax_pending_uploads = 2").await;
    let alice = server.register("alice", "pw").await;
    let bob = server.register("bob", "pw").await;
    let created = server.post("/_matrix/media/v1/create", alice.token(), json!({})).await;
    assert_eq!(created.0, 200, "{}", created.1);
    assert!(created.1["unused_expires_at"].as_u64().is_some(), "{}", created.1);
    let path = mxc_path(&created.1);

    // Not uploaded yet: a download waits, then gives up.
    let waiting = format!("/_matrix/client/v1/media/download/{path}?timeout_ms=200");
    assert_error(&json_of(fetch(&server, &waiting, alice.token()).await).await, 504, "M_NOT_YET_UPLOADED");

    let put = |session: &Session, body: &'static [u8]| {
        server
            .http
            .put(server.url(&format!("/_matrix/media/v3/upload/{path}?filename=later.bin")))
            .bearer_auth(session.access_token.clone())
            .header("content-type", "application/octet-stream")
            .body(body)
            .send()
    };
    assert_error(&json_of(put(&bob, b"intruder").await.unwrap()).await, 403, "M_FORBIDDEN");

    // A download started before the upload gets the content once it arrives.
    let download_path = format!("/_matrix/client/v1/media/download/{path}?timeout_ms=10000");
    let (download, uploaded) = tokio::join!(fetch(&server, &download_path, alice.token()), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        put(&alice, b"late content").await.unwrap()
    });
    assert_eq!(json_of(uploaded).await, (200, json!({})));
    assert_eq!(download.status(), 200);
    assert_eq!(header(&download, "content-disposition"), "attachment; filename=later.bin");
    assert_eq!(download.bytes().await.unwrap().as_ref(), b"late content");

    assert_error(&json_of(put(&alice, b"again").await.unwrap()).await, 409, "M_CANNOT_OVERWRITE_MEDIA");
    let unknown = server
        .http
        .put(server.url("/_matrix/media/v3/upload/localhost/neverreserved"))
        .bearer_auth(&alice.access_token)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_error(&json_of(unknown).await, 404, "M_NOT_FOUND");

    // At most two reserved and unused IDs per user.
    assert_eq!(server.post("/_matrix/media/v1/create", alice.token(), json!({})).await.0, 200);
    assert_eq!(server.post("/_matrix/media/v1/create", alice.token(), json!({})).await.0, 200);
    let third = server.post("/_matrix/media/v1/create", alice.token(), json!({})).await;
    assert_error(&third, 429, "M_LIMIT_EXCEEDED");
    assert_eq!(server.post("/_matrix/media/v1/create", bob.token(), json!({})).await.0, 200);
}

#[tokio::test]
async fn legacy_endpoints_serve_only_media_from_before_the_freeze() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(dir.path(), "localhost", "[global.media]\nfreeze_legacy_media = false").unwrap();
    let alice = server.register("alice", "pw").await;
    let old = mxc_path(&upload(&server, &alice, image_bytes(64, 64, ImageFormat::Png), "image/png", "old.png").await.1);
    let legacy = fetch(&server, &format!("/_matrix/media/v3/download/{old}"), None).await;
    assert_eq!(legacy.status(), 200);
    assert_eq!(header(&legacy, "cross-origin-resource-policy"), "cross-origin");
    assert_eq!(server.stop(), Some(0));

    // Restarted with the default: frozen.
    let server = TestServer::start_in(dir.path(), "localhost", "").unwrap();
    let (_, login) = server.login("alice", "pw").await;
    let alice = Session::from_response(&login);
    let new = mxc_path(&upload(&server, &alice, image_bytes(64, 64, ImageFormat::Png), "image/png", "new.png").await.1);
    for path in [&old, &new] {
        let authenticated = fetch(&server, &format!("/_matrix/client/v1/media/download/{path}"), alice.token()).await;
        assert_eq!(authenticated.status(), 200, "{path}");
    }
    assert_eq!(fetch(&server, &format!("/_matrix/media/v3/download/{old}"), None).await.status(), 200);
    assert_eq!(fetch(&server, &format!("/_matrix/media/v3/download/{old}/x.png"), None).await.status(), 200);
    let thumb = format!("/_matrix/media/v3/thumbnail/{old}?width=32&height=32&method=crop");
    assert_eq!(fetch(&server, &thumb, None).await.status(), 200);
    for path in [
        format!("/_matrix/media/v3/download/{new}"),
        format!("/_matrix/media/v3/download/{new}/x.png"),
        format!("/_matrix/media/v3/thumbnail/{new}?width=32&height=32"),
    ] {
        assert_error(&json_of(fetch(&server, &path, None).await).await, 404, "M_NOT_FOUND");
    }
}

#[tokio::test]
async fn thumbnails_have_the_requested_bounds_for_each_method_and_format() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    for (format, content_type, thumbnail_type) in [
        (ImageFormat::Png, "image/png", "image/png"),
        (ImageFormat::Jpeg, "image/jpeg", "image/jpeg"),
        (ImageFormat::Gif, "image/gif", "image/png"),
        (ImageFormat::WebP, "image/webp", "image/png"),
    ] {
        let uploaded = upload(&server, &alice, image_bytes(800, 400, format), content_type, "picture").await;
        let path = mxc_path(&uploaded.1);
        for (query, expected) in [
            ("width=96&height=96&method=crop", (96, 96)),
            ("width=32&height=32&method=crop", (32, 32)),
            ("width=320&height=240&method=scale", (320, 160)),
            ("width=600&height=300&method=scale", (640, 320)),
            ("width=100&height=50", (320, 160)),
        ] {
            let url = format!("/_matrix/client/v1/media/thumbnail/{path}?{query}");
            let response = fetch(&server, &url, alice.token()).await;
            assert_eq!(response.status(), 200, "{format:?} {query}");
            assert_eq!(header(&response, "content-type"), thumbnail_type, "{format:?} {query}");
            let image = image::load_from_memory(&response.bytes().await.unwrap()).expect("thumbnail decodes");
            assert_eq!((image.width(), image.height()), expected, "{format:?} {query}");
        }
        // Larger than the original: the original itself.
        let url = format!("/_matrix/client/v1/media/thumbnail/{path}?width=1000&height=1000&method=scale");
        let response = fetch(&server, &url, alice.token()).await;
        assert_eq!(header(&response, "content-type"), content_type);
        let image = image::load_from_memory(&response.bytes().await.unwrap()).unwrap();
        assert_eq!((image.width(), image.height()), (800, 400));
    }
    let text = mxc_path(&upload(&server, &alice, b"not an image".to_vec(), "image/png", "fake.png").await.1);
    let url = format!("/_matrix/client/v1/media/thumbnail/{text}?width=32&height=32");
    assert_error(&json_of(fetch(&server, &url, alice.token()).await).await, 400, "M_UNKNOWN");
}

/// A tiny HTTP/1.1 server on loopback for URL previews: `/redirect` sends to `/page`, which
/// links `/image.png`; `/to-private` redirects to 127.0.0.2. Counts the requests it gets.
async fn preview_site() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let png = image_bytes(48, 24, ImageFormat::Png);
    // Another loopback address, outside a 127.0.0.1/32 allow list; nothing listens there.
    let private_target = format!("http://127.0.0.2:{}/page", base.rsplit(':').next().unwrap_or_default());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            let png = png.clone();
            let to_private = format!("302 Found\r\nLocation: {private_target}");
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buffer = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buffer[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&request);
                let path = text.split_whitespace().nth(1).unwrap_or("/").to_owned();
                let (status, content_type, body): (&str, &str, Vec<u8>) = match path.as_str() {
                    "/redirect" => ("302 Found\r\nLocation: /page", "text/plain", b"moved".to_vec()),
                    "/to-private" => (to_private.as_str(), "text/plain", b"moved".to_vec()),
                    "/page" => (
                        "200 OK",
                        "text/html; charset=utf-8",
                        br#"<!doctype html><html><head><title>Ignored title</title>
                        <meta property="og:title" content="Trellis &amp; friends">
                        <meta name="description" content="A page about media">
                        <meta property="og:image" content="/image.png">
                        </head><body>Hello</body></html>"#
                            .to_vec(),
                    ),
                    "/image.png" => ("200 OK", "image/png", png),
                    _ => ("404 Not Found", "text/plain", b"no".to_vec()),
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(&body).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    (base, hits)
}

fn encoded(url: &str) -> String {
    crate::harness::enc(url)
}

#[tokio::test]
async fn url_preview_reads_opengraph_from_a_loopback_page_when_allowed() {
    let (site, _) = preview_site().await;
    let server = TestServer::start_with("[global.url_preview]\nip_range_allowlist = [\"127.0.0.0/8\"]").await;
    let alice = server.register("alice", "pw").await;
    let url = format!("/_matrix/client/v1/media/preview_url?url={}", encoded(&format!("{site}/redirect")));
    let (status, preview) = json_of(fetch(&server, &url, alice.token()).await).await;
    assert_eq!(status, 200, "{preview}");
    assert_eq!(preview["og:title"], "Trellis & friends");
    assert_eq!(preview["og:description"], "A page about media");
    assert_eq!(preview["og:image:type"], "image/png");
    assert_eq!((preview["og:image:width"].as_u64(), preview["og:image:height"].as_u64()), (Some(48), Some(24)));
    let image = preview["og:image"].as_str().expect("og:image").strip_prefix("mxc://").unwrap().to_owned();
    let response = fetch(&server, &format!("/_matrix/client/v1/media/download/{image}"), alice.token()).await;
    let bytes = response.bytes().await.unwrap();
    assert_eq!(preview["matrix:image:size"].as_u64(), Some(bytes.len() as u64));
    assert_eq!(image::load_from_memory(&bytes).unwrap().width(), 48);

    // The legacy endpoint answers the same (from the cache).
    let legacy = format!("/_matrix/media/v3/preview_url?url={}", encoded(&format!("{site}/redirect")));
    assert_eq!(json_of(fetch(&server, &legacy, alice.token()).await).await, (200, preview));
    let bad = "/_matrix/client/v1/media/preview_url?url=file%3A%2F%2F%2Fetc%2Fpasswd";
    assert_error(&json_of(fetch(&server, bad, alice.token()).await).await, 400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn url_preview_refuses_private_addresses_by_default() {
    let (site, hits) = preview_site().await;
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let port = site.rsplit(':').next().unwrap();
    for target in [format!("{site}/page"), format!("http://localhost:{port}/page"), format!("http://[::1]:{port}/")] {
        let url = format!("/_matrix/client/v1/media/preview_url?url={}", encoded(&target));
        assert_error(&json_of(fetch(&server, &url, alice.token()).await).await, 403, "M_FORBIDDEN");
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0, "no request may reach a refused address");
}

#[tokio::test]
async fn url_preview_checks_every_redirect() {
    let (site, hits) = preview_site().await;
    let server = TestServer::start_with("[global.url_preview]\nip_range_allowlist = [\"127.0.0.1/32\"]").await;
    let alice = server.register("alice", "pw").await;
    let url = format!("/_matrix/client/v1/media/preview_url?url={}", encoded(&format!("{site}/to-private")));
    assert_error(&json_of(fetch(&server, &url, alice.token()).await).await, 403, "M_FORBIDDEN");
    assert_eq!(hits.load(Ordering::SeqCst), 1, "only the first hop is fetched");
}

#[tokio::test]
async fn reserved_media_ids_expire_unused() {
    let server = TestServer::start_with("[global.media]\nunused_upload_expiry_secs = 1\nmax_pending_uploads = 1").await;
    let alice = server.register("alice", "pw").await;
    let created = server.post("/_matrix/media/v1/create", alice.token(), json!({})).await;
    let path = mxc_path(&created.1);
    assert_error(&server.post("/_matrix/media/v1/create", alice.token(), json!({})).await, 429, "M_LIMIT_EXCEEDED");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let late = server
        .http
        .put(server.url(&format!("/_matrix/media/v3/upload/{path}")))
        .bearer_auth(&alice.access_token)
        .body("too late")
        .send()
        .await
        .unwrap();
    assert_error(&json_of(late).await, 404, "M_NOT_FOUND");
    let download = format!("/_matrix/client/v1/media/download/{path}?timeout_ms=100");
    assert_error(&json_of(fetch(&server, &download, alice.token()).await).await, 404, "M_NOT_FOUND");
    // The expired reservation no longer counts against the limit.
    assert_eq!(server.post("/_matrix/media/v1/create", alice.token(), json!({})).await.0, 200);
}

#[tokio::test]
async fn animated_thumbnails_stay_animated_and_guests_may_read_media() {
    let server = TestServer::start().await;
    let alice = server.register("alice", "pw").await;
    let mut gif = Vec::new();
    {
        let mut encoder = image::codecs::gif::GifEncoder::new(&mut gif);
        for shade in [0u8, 120, 240] {
            let frame = RgbaImage::from_pixel(200, 100, Rgba([shade, 0, 255 - shade, 255]));
            encoder.encode_frame(image::Frame::new(frame)).unwrap();
        }
    }
    let path = mxc_path(&upload(&server, &alice, gif, "image/gif", "anim.gif").await.1);
    let animated = format!("/_matrix/client/v1/media/thumbnail/{path}?width=96&height=96&method=crop&animated=true");
    let response = fetch(&server, &animated, alice.token()).await;
    assert_eq!(header(&response, "content-type"), "image/gif");
    let bytes = response.bytes().await.unwrap();
    let decoder = image::codecs::gif::GifDecoder::new(Cursor::new(bytes.as_ref())).unwrap();
    assert_eq!(image::AnimationDecoder::into_frames(decoder).count(), 3);
    let still = format!("/_matrix/client/v1/media/thumbnail/{path}?width=96&height=96&method=crop");
    assert_eq!(header(&fetch(&server, &still, alice.token()).await, "content-type"), "image/png");

    let guest = server.post("/_matrix/client/v3/register?kind=guest", None, json!({})).await;
    assert_eq!(guest.0, 200, "{}", guest.1);
    let guest = Session::from_response(&guest.1);
    assert_eq!(fetch(&server, &format!("/_matrix/client/v1/media/download/{path}"), guest.token()).await.status(), 200);
    assert_eq!(fetch(&server, &still, guest.token()).await.status(), 200);
    let guest_upload = upload(&server, &guest, b"x".to_vec(), "text/plain", "x").await;
    assert_error(&guest_upload, 403, "M_GUEST_ACCESS_FORBIDDEN");
}
