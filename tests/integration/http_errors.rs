//! Errors every endpoint shares: unknown endpoints, wrong methods, bad JSON, oversized bodies,
//! and CORS headers.

use serde_json::json;

use crate::harness::{TestServer, assert_error};

#[tokio::test]
async fn unknown_endpoints_and_methods_are_unrecognized() {
    let server = TestServer::start().await;
    assert_error(&server.get("/_matrix/client/v3/no_such_thing", None).await, 404, "M_UNRECOGNIZED");
    assert_error(&server.get("/nothing/here", None).await, 404, "M_UNRECOGNIZED");
    assert_error(&server.call("DELETE", "/_matrix/client/v3/login", None, None).await, 405, "M_UNRECOGNIZED");
}

#[tokio::test]
async fn malformed_bodies_get_json_errors() {
    let server = TestServer::start().await;
    let not_json = server
        .http
        .post(server.url("/_matrix/client/v3/login"))
        .header("content-type", "application/json")
        .body("{this is not json")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status().as_u16(), 400);
    let body: serde_json::Value = not_json.json().await.unwrap();
    assert_eq!(body["errcode"], "M_NOT_JSON");

    let wrong_shape = server.post("/_matrix/client/v3/login", None, json!({"type": 42})).await;
    assert_error(&wrong_shape, 400, "M_BAD_JSON");
    let wrong_field =
        server.post("/_matrix/client/v3/register", None, json!({"username": ["not", "a", "string"]})).await;
    assert_error(&wrong_field, 400, "M_BAD_JSON");
}

#[tokio::test]
async fn oversized_bodies_are_refused_and_nothing_is_stored() {
    let server = TestServer::start_with("max_request_size = 4096").await;
    let alice = server.register("alice", "pw").await;
    let path = format!("/_matrix/client/v3/user/{}/account_data/org.example.big", crate::harness::enc(&alice.user_id));
    let big = json!({"data": "x".repeat(8192)});
    assert_error(&server.put(&path, alice.token(), big).await, 413, "M_TOO_LARGE");
    assert_error(&server.get(&path, alice.token()).await, 404, "M_NOT_FOUND");
    // Also when the client streams a chunked body without announcing a length.
    let status = chunked_put(&server.base_url, &path, &alice.access_token, 8192).await;
    assert_eq!(status, 413);
    assert_error(&server.get(&path, alice.token()).await, 404, "M_NOT_FOUND");
}

/// Sends a PUT with a chunked body of `len` bytes over a raw connection; returns the status.
async fn chunked_put(base_url: &str, path: &str, token: &str, len: usize) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base_url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let body = format!("{{\"data\": \"{}\"}}", "x".repeat(len));
    for chunk in body.as_bytes().chunks(1000) {
        // The server may answer and close before the whole body is sent.
        if stream.write_all(format!("{:x}\r\n", chunk.len()).as_bytes()).await.is_err()
            || stream.write_all(chunk).await.is_err()
            || stream.write_all(b"\r\n").await.is_err()
        {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response);
    text.split_whitespace().nth(1).and_then(|code| code.parse().ok()).unwrap_or(0)
}

#[tokio::test]
async fn cors_headers_are_sent() {
    let server = TestServer::start().await;
    let preflight = server
        .http
        .request(reqwest::Method::OPTIONS, server.url("/_matrix/client/v3/login"))
        .header("origin", "https://app.example.org")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization, content-type")
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    let headers = preflight.headers();
    assert_eq!(headers["access-control-allow-origin"], "*");
    let methods = headers["access-control-allow-methods"].to_str().unwrap();
    for method in ["GET", "POST", "PUT", "DELETE", "OPTIONS"] {
        assert!(methods.contains(method), "{methods}");
    }
    let allowed = headers["access-control-allow-headers"].to_str().unwrap().to_lowercase();
    assert!(allowed.contains("authorization") && allowed.contains("content-type"), "{allowed}");

    let simple = server
        .http
        .get(server.url("/_matrix/client/versions"))
        .header("origin", "https://app.example.org")
        .send()
        .await
        .unwrap();
    assert_eq!(simple.headers()["access-control-allow-origin"], "*");
}
