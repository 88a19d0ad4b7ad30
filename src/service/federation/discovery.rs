//! Server discovery, as the server-server API's "Resolving server names" describes it: which
//! host and port reach a server name, which name its TLS certificate must carry (and the SNI)
//! and which `Host` header requests carry. The order: `federation_server_addresses` (the
//! operator's override), an IP literal, an explicit port, `/.well-known/matrix/server` (over
//! HTTPS through the address guard, up to three redirects; cached, failures too), SRV records
//! (`_matrix-fed._tcp`, then the deprecated `_matrix._tcp`, through `srv.rs`), then port 8448.
//! Addresses are resolved and checked against the address guard when connecting
//! (`client.rs`), not here.

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, SocketAddr},
    sync::Mutex,
    time::{Duration, Instant},
};

use ruma::{OwnedServerName, ServerName};

use super::{
    client::{Tls, read_limited},
    srv::SrvResolver,
};
use crate::service::address_guard::AddressGuard;

/// The port of a server name without one, when nothing else names a port.
pub const DEFAULT_FEDERATION_PORT: u16 = 8448;
/// Well-known answers are cached this long without a `Cache-Control: max-age`.
const WELL_KNOWN_DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);
/// Bounds on a `max-age`: at least five minutes, at most two days (the spec's advice).
const WELL_KNOWN_MIN_TTL: Duration = Duration::from_secs(300);
const WELL_KNOWN_MAX_TTL: Duration = Duration::from_secs(48 * 3600);
/// A failed or invalid well-known lookup is remembered this long.
const WELL_KNOWN_FAILURE_TTL: Duration = Duration::from_secs(600);
/// A well-known document larger than this is invalid.
const WELL_KNOWN_MAX_BYTES: usize = 64 * 1024;
const WELL_KNOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// Redirects followed for a well-known document (each through the address guard).
const WELL_KNOWN_MAX_REDIRECTS: usize = 3;
/// Entries kept in the well-known cache before expired ones are dropped.
const WELL_KNOWN_CACHE_LIMIT: usize = 10_000;

/// Where and how to reach a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// The host to connect to: a name to resolve or an IP literal (IPv6 in brackets).
    pub connect_host: String,
    pub port: u16,
    /// The name the certificate must be valid for, sent as SNI (IPv6 in brackets).
    pub tls_name: String,
    /// The `Host` header of requests.
    pub host_header: String,
}

/// How well-known documents are fetched.
pub(crate) enum WellKnownSource {
    /// `https://<hostname>/.well-known/matrix/server`, through the address guard.
    Https { tls: Tls, guard: AddressGuard },
    /// Plain HTTP to one local address whatever the host name (the `Host` header carries it),
    /// for tests.
    #[cfg(test)]
    Plain(SocketAddr),
}

struct CachedWellKnown {
    expires: Instant,
    /// The delegated server name, or `None` when the lookup failed.
    delegated: Option<OwnedServerName>,
}

pub struct Resolver {
    overrides: BTreeMap<String, String>,
    source: WellKnownSource,
    srv: SrvResolver,
    well_known: Mutex<HashMap<String, CachedWellKnown>>,
}

impl Resolver {
    pub(crate) fn new(overrides: BTreeMap<String, String>, source: WellKnownSource, srv: SrvResolver) -> Self {
        Self { overrides, source, srv, well_known: Mutex::new(HashMap::new()) }
    }

    /// Where `server` is reached.
    pub async fn resolve(&self, server: &ServerName) -> Destination {
        let host = server.host();
        if let Some(target) = self.overrides.get(server.as_str()) {
            let (connect_host, port) = split_host_port(target);
            return Destination {
                connect_host,
                port: port.unwrap_or(DEFAULT_FEDERATION_PORT),
                tls_name: host.to_owned(),
                host_header: server.as_str().to_owned(),
            };
        }
        if is_ip_literal(host) || server.port().is_some() {
            return direct(host, server.port().unwrap_or(DEFAULT_FEDERATION_PORT), server.as_str());
        }
        if let Some(delegated) = self.well_known(host).await {
            let delegated_host = delegated.host();
            if is_ip_literal(delegated_host) || delegated.port().is_some() {
                return direct(delegated_host, delegated.port().unwrap_or(DEFAULT_FEDERATION_PORT), delegated.as_str());
            }
            return self.srv_or_default(delegated_host).await;
        }
        self.srv_or_default(host).await
    }

    /// `host`'s SRV target (`_matrix-fed._tcp`, then `_matrix._tcp`), else `host` on port
    /// 8448; the certificate and `Host` stay `host` either way.
    async fn srv_or_default(&self, host: &str) -> Destination {
        for service in ["_matrix-fed._tcp", "_matrix._tcp"] {
            if let Some(record) = self.srv.lookup(&format!("{service}.{host}")).await {
                return Destination {
                    connect_host: record.target,
                    port: record.port,
                    tls_name: host.to_owned(),
                    host_header: host.to_owned(),
                };
            }
        }
        direct(host, DEFAULT_FEDERATION_PORT, host)
    }

    /// The server name `/.well-known/matrix/server` of `host` delegates to, cached.
    async fn well_known(&self, host: &str) -> Option<OwnedServerName> {
        let now = Instant::now();
        if let Ok(cache) = self.well_known.lock()
            && let Some(entry) = cache.get(host)
            && entry.expires > now
        {
            return entry.delegated.clone();
        }
        let (delegated, ttl) = match self.fetch_well_known(host).await {
            Ok((delegated, ttl)) => (Some(delegated), ttl),
            Err(e) => {
                tracing::debug!(host, error = %e, "no usable /.well-known/matrix/server");
                (None, WELL_KNOWN_FAILURE_TTL)
            }
        };
        if let Ok(mut cache) = self.well_known.lock() {
            if cache.len() >= WELL_KNOWN_CACHE_LIMIT {
                cache.retain(|_, entry| entry.expires > now);
                if cache.len() >= WELL_KNOWN_CACHE_LIMIT {
                    cache.clear();
                }
            }
            cache.insert(host.to_owned(), CachedWellKnown { expires: now + ttl, delegated: delegated.clone() });
        }
        delegated
    }

    async fn fetch_well_known(&self, host: &str) -> Result<(OwnedServerName, Duration), String> {
        const PATH: &str = "/.well-known/matrix/server";
        let response = match &self.source {
            WellKnownSource::Https { tls, guard } => {
                let mut url = reqwest::Url::parse(&format!("https://{host}{PATH}")).map_err(|e| e.to_string())?;
                let mut hops = 0;
                loop {
                    // Each hop is checked by the guard and pinned to the checked address.
                    let builder = guard.pin(tls.builder(WELL_KNOWN_TIMEOUT), &url).await.map_err(|e| e.to_string())?;
                    let client = builder.build().map_err(|e| e.to_string())?;
                    let response = client.get(url.clone()).send().await.map_err(|e| e.to_string())?;
                    if !response.status().is_redirection() {
                        break response;
                    }
                    hops += 1;
                    let location = response
                        .headers()
                        .get(http::header::LOCATION)
                        .and_then(|value| value.to_str().ok())
                        .ok_or_else(|| "a redirect without a location".to_owned())?;
                    url = url.join(location).map_err(|e| format!("bad redirect: {e}"))?;
                    if hops > WELL_KNOWN_MAX_REDIRECTS || url.scheme() != "https" {
                        return Err("too many redirects, or one away from HTTPS".to_owned());
                    }
                }
            }
            #[cfg(test)]
            WellKnownSource::Plain(address) => reqwest::Client::new()
                .get(format!("http://{address}{PATH}"))
                .header(http::header::HOST, host)
                .timeout(WELL_KNOWN_TIMEOUT)
                .send()
                .await
                .map_err(|e| e.to_string())?,
        };
        if response.status() != reqwest::StatusCode::OK {
            return Err(format!("status {}", response.status()));
        }
        let ttl = cache_ttl(response.headers());
        let body = read_limited(response, WELL_KNOWN_MAX_BYTES).await.map_err(|e| e.to_string())?;
        let document: serde_json::Value = serde_json::from_slice(&body).map_err(|e| format!("not JSON: {e}"))?;
        let server = document
            .get("m.server")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| "no m.server string".to_owned())?;
        let server = OwnedServerName::try_from(server).map_err(|e| format!("m.server is invalid: {e}"))?;
        Ok((server, ttl))
    }
}

fn direct(host: &str, port: u16, host_header: &str) -> Destination {
    Destination { connect_host: host.to_owned(), port, tls_name: host.to_owned(), host_header: host_header.to_owned() }
}

/// Whether `host` is an IPv4 literal or a bracketed IPv6 literal.
pub fn is_ip_literal(host: &str) -> bool {
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    bare.parse::<IpAddr>().is_ok()
}

/// Splits `host[:port]` (IPv6 in brackets); a bare IPv6 address gets brackets.
fn split_host_port(target: &str) -> (String, Option<u16>) {
    if let Ok(address) = target.parse::<SocketAddr>() {
        return (bracketed(address.ip()), Some(address.port()));
    }
    if let Ok(ip) = target.parse::<IpAddr>() {
        return (bracketed(ip), None);
    }
    match target.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => match port.parse() {
            Ok(port) => (host.to_owned(), Some(port)),
            Err(_) => (target.to_owned(), None),
        },
        _ => (target.to_owned(), None),
    }
}

fn bracketed(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => format!("[{ip}]"),
    }
}

/// How long a well-known answer is cached: its `Cache-Control: max-age` within bounds, else a
/// day; `no-store` and `no-cache` mean the shortest time.
fn cache_ttl(headers: &http::HeaderMap) -> Duration {
    let Some(value) = headers.get(http::header::CACHE_CONTROL).and_then(|v| v.to_str().ok()) else {
        return WELL_KNOWN_DEFAULT_TTL;
    };
    let mut ttl = None;
    for directive in value.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-store" || lower == "no-cache" {
            return WELL_KNOWN_MIN_TTL;
        }
        if let Some(seconds) = lower.strip_prefix("max-age=").and_then(|s| s.trim_matches('"').parse::<u64>().ok()) {
            ttl = Some(Duration::from_secs(seconds));
        }
    }
    ttl.map_or(WELL_KNOWN_DEFAULT_TTL, |ttl| ttl.clamp(WELL_KNOWN_MIN_TTL, WELL_KNOWN_MAX_TTL))
}

#[cfg(test)]
mod tests;
