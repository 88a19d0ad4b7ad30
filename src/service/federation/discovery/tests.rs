//! Discovery order against a local HTTP server that plays every host's well-known.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{Router, http::HeaderMap, response::IntoResponse, routing::get};
use ruma::server_name;

use super::*;

/// Serves `/.well-known/matrix/server` by `Host`: `wk-port.test` delegates to a name with a
/// port, `wk-noport.test` to one without, `wk-ip.test` to an IP literal, `wk-cached.test`
/// with a `max-age`; any other host gets 404. Returns the address and the request count.
async fn well_known_server() -> (SocketAddr, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let app = Router::new().route(
        "/.well-known/matrix/server",
        get(move |headers: HeaderMap| {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                let host = headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or_default().to_owned();
                let body = match host.as_str() {
                    "wk-port.test" => r#"{"m.server": "delegated.test:4321"}"#,
                    "wk-noport.test" => r#"{"m.server": "delegated.test"}"#,
                    "wk-ip.test" => r#"{"m.server": "192.0.2.7"}"#,
                    "wk-cached.test" => {
                        return ([("cache-control", "public, max-age=3600")], r#"{"m.server": "c.test:1"}"#)
                            .into_response();
                    }
                    "wk-invalid.test" => r#"{"m.server": 12}"#,
                    _ => return (http::StatusCode::NOT_FOUND, "{}").into_response(),
                };
                body.into_response()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (address, hits)
}

fn resolver(address: SocketAddr, overrides: &[(&str, &str)]) -> Resolver {
    resolver_with_dns(address, overrides, Vec::new())
}

fn resolver_with_dns(address: SocketAddr, overrides: &[(&str, &str)], nameservers: Vec<SocketAddr>) -> Resolver {
    let overrides: BTreeMap<String, String> =
        overrides.iter().map(|(name, target)| ((*name).to_owned(), (*target).to_owned())).collect();
    Resolver::new(overrides, WellKnownSource::Plain(address), SrvResolver::with_nameservers(nameservers))
}

/// A DNS server on UDP answering SRV queries from `records` (name -> priority, weight, port,
/// target); other names get an empty answer. Returns its address and the names asked.
async fn dns_server(
    records: &'static [(&'static str, u16, u16, u16, &'static str)],
) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let address = socket.local_addr().expect("address");
    let asked = Arc::new(Mutex::new(Vec::new()));
    let log = asked.clone();
    tokio::spawn(async move {
        let mut buffer = vec![0u8; 1500];
        while let Ok((length, peer)) = socket.recv_from(&mut buffer).await {
            let query = buffer[..length].to_vec();
            let Some(name) = super::super::srv::tests::question_name(&query) else { continue };
            log.lock().expect("log").push(name.clone());
            let answers: Vec<(u16, u16, u16, &str)> = records
                .iter()
                .filter(|record| record.0 == name)
                .map(|&(_, priority, weight, port, target)| (priority, weight, port, target))
                .collect();
            let answer = super::super::srv::tests::answer_packet(&query, &answers);
            let _ = socket.send_to(&answer, peer).await;
        }
    });
    (address, asked)
}

fn destination(connect_host: &str, port: u16, tls_name: &str, host_header: &str) -> Destination {
    Destination {
        connect_host: connect_host.to_owned(),
        port,
        tls_name: tls_name.to_owned(),
        host_header: host_header.to_owned(),
    }
}

#[tokio::test]
async fn the_override_map_comes_first() {
    let (address, hits) = well_known_server().await;
    let resolver = resolver(address, &[("wk-port.test", "127.0.0.1:9001"), ("hs6.test", "[::1]:9002")]);
    // Even a name whose well-known delegates elsewhere goes where the operator says.
    assert_eq!(
        resolver.resolve(server_name!("wk-port.test")).await,
        destination("127.0.0.1", 9001, "wk-port.test", "wk-port.test")
    );
    assert_eq!(resolver.resolve(server_name!("hs6.test")).await, destination("[::1]", 9002, "hs6.test", "hs6.test"));
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn ip_literals_are_used_as_they_are() {
    let (address, hits) = well_known_server().await;
    let resolver = resolver(address, &[]);
    assert_eq!(
        resolver.resolve(server_name!("192.0.2.1")).await,
        destination("192.0.2.1", 8448, "192.0.2.1", "192.0.2.1")
    );
    assert_eq!(
        resolver.resolve(server_name!("192.0.2.1:8000")).await,
        destination("192.0.2.1", 8000, "192.0.2.1", "192.0.2.1:8000")
    );
    assert_eq!(
        resolver.resolve(server_name!("[2001:db8::1]")).await,
        destination("[2001:db8::1]", 8448, "[2001:db8::1]", "[2001:db8::1]")
    );
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn an_explicit_port_skips_the_well_known() {
    let (address, hits) = well_known_server().await;
    let resolver = resolver(address, &[]);
    assert_eq!(
        resolver.resolve(server_name!("wk-port.test:1234")).await,
        destination("wk-port.test", 1234, "wk-port.test", "wk-port.test:1234")
    );
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_well_known_with_a_port_delegates_to_it() {
    let (address, _) = well_known_server().await;
    let resolver = resolver(address, &[]);
    assert_eq!(
        resolver.resolve(server_name!("wk-port.test")).await,
        destination("delegated.test", 4321, "delegated.test", "delegated.test:4321")
    );
    assert_eq!(
        resolver.resolve(server_name!("wk-ip.test")).await,
        destination("192.0.2.7", 8448, "192.0.2.7", "192.0.2.7")
    );
}

#[tokio::test]
async fn a_well_known_without_a_port_delegates_to_port_8448() {
    let (address, _) = well_known_server().await;
    let resolver = resolver(address, &[]);
    assert_eq!(
        resolver.resolve(server_name!("wk-noport.test")).await,
        destination("delegated.test", 8448, "delegated.test", "delegated.test")
    );
}

#[tokio::test]
async fn without_a_well_known_the_name_is_used_on_port_8448() {
    let (address, hits) = well_known_server().await;
    let resolver = resolver(address, &[]);
    for name in [server_name!("missing.test"), server_name!("wk-invalid.test")] {
        assert_eq!(resolver.resolve(name).await, destination(name.as_str(), 8448, name.as_str(), name.as_str()));
    }
    // Failures are cached too: asking again fetches nothing.
    let before = hits.load(Ordering::SeqCst);
    assert_eq!(before, 2);
    resolver.resolve(server_name!("missing.test")).await;
    assert_eq!(hits.load(Ordering::SeqCst), before);
}

#[tokio::test]
async fn well_known_answers_are_cached() {
    let (address, hits) = well_known_server().await;
    let resolver = resolver(address, &[]);
    let first = resolver.resolve(server_name!("wk-cached.test")).await;
    let second = resolver.resolve(server_name!("wk-cached.test")).await;
    assert_eq!(first, second);
    assert_eq!(first, destination("c.test", 1, "c.test", "c.test:1"));
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn srv_records_come_after_the_well_known_and_before_port_8448() {
    static RECORDS: &[(&str, u16, u16, u16, &str)] = &[
        // A delegated name without a port: its SRV record.
        ("_matrix-fed._tcp.delegated.test", 10, 0, 8999, "fed.delegated.test"),
        // No well-known: the name's own records, lowest priority then heaviest first.
        ("_matrix-fed._tcp.srv.test", 20, 100, 1111, "late.srv.test"),
        ("_matrix-fed._tcp.srv.test", 10, 1, 2222, "light.srv.test"),
        ("_matrix-fed._tcp.srv.test", 10, 9, 3333, "heavy.srv.test"),
        // Only the deprecated service.
        ("_matrix._tcp.old.test", 0, 0, 4444, "legacy.old.test"),
        // "No service here".
        ("_matrix-fed._tcp.none.test", 0, 0, 0, ""),
    ];
    let (address, _) = well_known_server().await;
    let (dns, asked) = dns_server(RECORDS).await;
    let resolver = resolver_with_dns(address, &[], vec![dns]);
    assert_eq!(
        resolver.resolve(server_name!("wk-noport.test")).await,
        destination("fed.delegated.test", 8999, "delegated.test", "delegated.test")
    );
    assert_eq!(
        resolver.resolve(server_name!("srv.test")).await,
        destination("heavy.srv.test", 3333, "srv.test", "srv.test")
    );
    assert_eq!(
        resolver.resolve(server_name!("old.test")).await,
        destination("legacy.old.test", 4444, "old.test", "old.test")
    );
    assert_eq!(
        resolver.resolve(server_name!("none.test")).await,
        destination("none.test", 8448, "none.test", "none.test")
    );
    // A well-known with a port, an explicit port or an IP literal asks no SRV record.
    asked.lock().expect("log").clear();
    resolver.resolve(server_name!("wk-port.test")).await;
    resolver.resolve(server_name!("srv.test:80")).await;
    resolver.resolve(server_name!("192.0.2.1")).await;
    assert!(asked.lock().expect("log").is_empty());
}

#[test]
fn cache_lifetimes_follow_cache_control_within_bounds() {
    let headers = |value: &str| {
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::CACHE_CONTROL, http::HeaderValue::from_str(value).expect("header"));
        headers
    };
    assert_eq!(cache_ttl(&http::HeaderMap::new()), WELL_KNOWN_DEFAULT_TTL);
    assert_eq!(cache_ttl(&headers("public, max-age=7200")), Duration::from_secs(7200));
    assert_eq!(cache_ttl(&headers("max-age=1")), WELL_KNOWN_MIN_TTL);
    assert_eq!(cache_ttl(&headers("max-age=99999999")), WELL_KNOWN_MAX_TTL);
    assert_eq!(cache_ttl(&headers("no-store")), WELL_KNOWN_MIN_TTL);
    assert_eq!(cache_ttl(&headers("max-age=oops")), WELL_KNOWN_DEFAULT_TTL);
}

#[test]
fn override_targets_split_into_host_and_port() {
    assert_eq!(split_host_port("127.0.0.1:8448"), ("127.0.0.1".to_owned(), Some(8448)));
    assert_eq!(split_host_port("[::1]:8448"), ("[::1]".to_owned(), Some(8448)));
    assert_eq!(split_host_port("::1"), ("[::1]".to_owned(), None));
    assert_eq!(split_host_port("hs.example:8449"), ("hs.example".to_owned(), Some(8449)));
    assert_eq!(split_host_port("hs.example"), ("hs.example".to_owned(), None));
}
