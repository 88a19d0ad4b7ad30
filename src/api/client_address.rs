//! The client's address behind reverse proxies: when the TCP peer is one of the configured
//! `trusted_proxies`, the client is the right-most address of `X-Forwarded-For` that is not
//! itself a trusted proxy; otherwise the peer is the client and the header is ignored (anyone
//! can send it). The address found is put in the request's extensions as [`ClientAddress`],
//! which `extract::client_ip` reads for rate limits and devices' `last_seen_ip`.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use axum::{
    extract::{ConnectInfo, Request, State},
    middleware::Next,
    response::Response,
};
use http::HeaderMap;
use ipnet::IpNet;

use crate::service::Services;

/// The client address of a request that came through a trusted proxy.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddress(pub IpAddr);

/// Middleware: records the client address when the peer is a trusted proxy.
pub async fn client_address(State(services): State<Arc<Services>>, mut request: Request, next: Next) -> Response {
    let trusted = &services.config.trusted_proxies;
    if !trusted.is_empty()
        && let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>().copied()
    {
        let client = resolve(peer.ip(), request.headers(), trusted);
        request.extensions_mut().insert(ClientAddress(client));
    }
    next.run(request).await
}

/// The client address of a request from `peer` with these headers.
pub fn resolve(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer = peer.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    // Several headers count as one list, in order (RFC 9110, 5.3).
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|hop| !hop.is_empty())
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        // A hop that is not an address (`unknown`, garbage) ends the walk: what is left of it
        // cannot be trusted, so the last trusted hop stands for the client.
        let Some(ip) = parse_hop(hop) else { break };
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    client
}

/// An address as proxies write it: bare, or with a port (`1.2.3.4:5678`, `[::1]:80`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|addr| addr.ip()))
        .ok()
        .or_else(|| hop.strip_prefix('[').and_then(|rest| rest.strip_suffix(']')).and_then(|ip| ip.parse().ok()))
        .map(|ip: IpAddr| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append("x-forwarded-for", value.parse().expect("header value"));
        }
        headers
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|net| net.parse().expect("net")).collect()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    #[test]
    fn only_a_trusted_peer_is_believed() {
        let trusted = nets(&["127.0.0.1/32", "10.0.0.0/8"]);
        let forwarded = headers(&["203.0.113.7"]);
        assert_eq!(resolve(ip("127.0.0.1"), &forwarded, &trusted), ip("203.0.113.7"));
        assert_eq!(resolve(ip("::ffff:127.0.0.1"), &forwarded, &trusted), ip("203.0.113.7"));
        assert_eq!(resolve(ip("192.0.2.1"), &forwarded, &trusted), ip("192.0.2.1"));
        assert_eq!(resolve(ip("127.0.0.1"), &HeaderMap::new(), &trusted), ip("127.0.0.1"));
    }

    #[test]
    fn the_right_most_untrusted_hop_is_the_client() {
        let trusted = nets(&["127.0.0.1/32", "10.0.0.0/8"]);
        // The left-most entries are what the client itself claimed: never believed over a hop
        // a trusted proxy added.
        let chain = headers(&["198.51.100.1, 203.0.113.7", "10.1.2.3"]);
        assert_eq!(resolve(ip("127.0.0.1"), &chain, &trusted), ip("203.0.113.7"));
        let all_trusted = headers(&["10.0.0.5, 10.0.0.6"]);
        assert_eq!(resolve(ip("127.0.0.1"), &all_trusted, &trusted), ip("10.0.0.5"));
        let garbage = headers(&["203.0.113.7, unknown, 10.0.0.6"]);
        assert_eq!(resolve(ip("127.0.0.1"), &garbage, &trusted), ip("10.0.0.6"));
        let ports = headers(&["[2001:db8::1]:443, 203.0.113.9:5678"]);
        assert_eq!(resolve(ip("127.0.0.1"), &ports, &trusted), ip("203.0.113.9"));
    }
}
