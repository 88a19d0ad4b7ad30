//! Outbound federation requests: ruma request types sent to another server over HTTPS, found
//! by discovery (`discovery.rs`), connected through the address guard (private, loopback and
//! link-local addresses refused unless `federation_allow_private_addresses`), with the
//! certificate checked against the built-in web PKI roots and `federation_ca_file` (unless
//! `federation_verify_certificates = false`) for the server's name, and signed with this
//! server's key (`Authorization: X-Matrix ...`) when the endpoint needs it.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use ruma::{
    OwnedServerName, ServerName,
    api::{
        IncomingResponseExt, OutgoingRequest, OutgoingRequestExt,
        auth_scheme::{AuthScheme, NoAuthentication},
        error::FromHttpResponseError,
        federation::authentication::{ServerSignatures, XMatrixSigningInput},
        path_builder::SinglePath,
    },
    signatures::Ed25519KeyPair,
};

use super::discovery::{Destination, Resolver, is_ip_literal};
use crate::service::{address_guard::AddressGuard, server_keys::ServerKeys};

/// Requests that get no answer in this time fail.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Answers larger than this are refused.
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;
/// A resolved and connected destination is reused this long, then resolved again.
const CONNECTION_TTL: Duration = Duration::from_secs(600);
const CONNECTION_CACHE_LIMIT: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum FederationError {
    /// The destination could not be resolved, connected to, or did not answer in time.
    #[error("{0}")]
    Unreachable(String),
    /// The address guard refuses the destination's addresses.
    #[error("{0}")]
    Forbidden(String),
    /// The destination answered with an error status (`errcode` from its Matrix error body).
    #[error("{server} answered {status}: {message}")]
    Remote { server: OwnedServerName, status: u16, errcode: Option<String>, message: String },
    /// The answer could not be understood (or a request could not be built).
    #[error("{0}")]
    Invalid(String),
}

/// TLS settings of outbound federation connections.
#[derive(Clone)]
pub(crate) struct Tls {
    /// The certificates of `federation_ca_file`, trusted besides the built-in roots.
    pub(crate) extra_ca: Vec<reqwest::Certificate>,
    /// `federation_verify_certificates`.
    pub(crate) verify: bool,
}

impl Tls {
    /// A client builder with these TLS settings, no redirects, and `timeout`.
    pub(crate) fn builder(&self, timeout: Duration) -> reqwest::ClientBuilder {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("Trellis/", env!("CARGO_PKG_VERSION")));
        for ca in &self.extra_ca {
            builder = builder.add_root_certificate(ca.clone());
        }
        if !self.verify {
            builder = builder.danger_accept_invalid_certs(true);
        }
        builder
    }
}

/// Reads a response body, refusing more than `limit` bytes.
pub(crate) async fn read_limited(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, FederationError> {
    if response.content_length().is_some_and(|length| length > limit as u64) {
        return Err(FederationError::Invalid("The answer is too large".into()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| FederationError::Unreachable(e.to_string()))? {
        if body.len() + chunk.len() > limit {
            return Err(FederationError::Invalid("The answer is too large".into()));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// How an endpoint's auth scheme is satisfied on outbound requests.
pub trait OutboundAuth: AuthScheme {
    fn input<'a>(origin: &ServerName, destination: &ServerName, key_pair: &'a Ed25519KeyPair) -> Self::Input<'a>;
}
impl OutboundAuth for NoAuthentication {
    fn input<'a>(_: &ServerName, _: &ServerName, _: &'a Ed25519KeyPair) -> Self::Input<'a> {}
}
impl OutboundAuth for ServerSignatures {
    fn input<'a>(origin: &ServerName, destination: &ServerName, key_pair: &'a Ed25519KeyPair) -> Self::Input<'a> {
        XMatrixSigningInput::new(origin.to_owned(), destination.to_owned(), key_pair)
    }
}

#[derive(Clone)]
struct Connection {
    base_url: String,
    host_header: String,
    client: reqwest::Client,
    expires: Instant,
}

pub struct FederationClient {
    server_name: OwnedServerName,
    own_keys: Arc<ServerKeys>,
    resolver: Resolver,
    tls: Tls,
    guard: AddressGuard,
    connections: Mutex<HashMap<OwnedServerName, Connection>>,
}

impl FederationClient {
    pub(crate) fn new(
        server_name: OwnedServerName,
        own_keys: Arc<ServerKeys>,
        resolver: Resolver,
        tls: Tls,
        guard: AddressGuard,
    ) -> Self {
        Self { server_name, own_keys, resolver, tls, guard, connections: Mutex::new(HashMap::new()) }
    }

    /// Where `server` is reached (discovery only, no connection).
    pub async fn resolve(&self, server: &ServerName) -> Destination {
        self.resolver.resolve(server).await
    }

    /// Sends `request` to `destination`, signed when its endpoint requires server signatures.
    pub async fn send<T>(&self, destination: &ServerName, request: T) -> Result<T::IncomingResponse, FederationError>
    where
        T: OutgoingRequest<PathBuilder = SinglePath>,
        T::Authentication: OutboundAuth,
    {
        self.send_limited(destination, request, MAX_RESPONSE_BYTES).await
    }

    /// [`Self::send`], refusing answers larger than `limit` bytes (media may be larger than
    /// the usual limit of JSON answers).
    pub async fn send_limited<T>(
        &self,
        destination: &ServerName,
        request: T,
        limit: usize,
    ) -> Result<T::IncomingResponse, FederationError>
    where
        T: OutgoingRequest<PathBuilder = SinglePath>,
        T::Authentication: OutboundAuth,
    {
        let connection = self.connection(destination).await?;
        let key_pair = self.own_keys.key_pair();
        let input = <T::Authentication as OutboundAuth>::input(&self.server_name, destination, key_pair);
        let http_request: http::Request<Vec<u8>> = request
            .try_into_http_request(&connection.base_url, input, ())
            .map_err(|e| FederationError::Invalid(format!("cannot build the request: {e}")))?;
        let mut request = reqwest::Request::try_from(http_request)
            .map_err(|e| FederationError::Invalid(format!("cannot build the request: {e}")))?;
        if let Ok(host) = http::HeaderValue::from_str(&connection.host_header) {
            request.headers_mut().insert(http::header::HOST, host);
        }
        let response = connection.client.execute(request).await.map_err(|e| {
            self.forget(destination);
            FederationError::Unreachable(format!("{destination}: {e}"))
        })?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = read_limited(response, limit).await?;
        let errcode = (!status.is_success())
            .then(|| serde_json::from_slice::<serde_json::Value>(&body).ok())
            .flatten()
            .and_then(|body| body.get("errcode")?.as_str().map(ToOwned::to_owned));
        let mut http_response = http::Response::new(body.as_slice());
        *http_response.status_mut() = status;
        *http_response.headers_mut() = headers;
        T::IncomingResponse::try_from_http_response(http_response).map_err(|e| match e {
            FromHttpResponseError::Server(error) => FederationError::Remote {
                server: destination.to_owned(),
                status: status.as_u16(),
                errcode,
                message: format!("{error}"),
            },
            other => FederationError::Invalid(format!("{destination} sent an invalid answer: {other}")),
        })
    }

    /// An unsigned `GET` of `path_and_query` on `destination`'s server (endpoints ruma has no
    /// outbound type for here, such as the legacy media downloads of old servers). Answers with
    /// an error status are [`FederationError::Remote`].
    pub async fn get_unsigned(
        &self,
        destination: &ServerName,
        path_and_query: &str,
        limit: usize,
    ) -> Result<http::Response<Vec<u8>>, FederationError> {
        let connection = self.connection(destination).await?;
        let url = format!("{}{path_and_query}", connection.base_url);
        let mut request = connection.client.get(url);
        if let Ok(host) = http::HeaderValue::from_str(&connection.host_header) {
            request = request.header(http::header::HOST, host);
        }
        let response = request.send().await.map_err(|e| {
            self.forget(destination);
            FederationError::Unreachable(format!("{destination}: {e}"))
        })?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = read_limited(response, limit).await?;
        if !status.is_success() {
            let error = serde_json::from_slice::<serde_json::Value>(&body).ok();
            let field = |name: &str| error.as_ref()?.get(name)?.as_str().map(ToOwned::to_owned);
            return Err(FederationError::Remote {
                server: destination.to_owned(),
                status: status.as_u16(),
                errcode: field("errcode"),
                message: field("error").unwrap_or_else(|| status.to_string()),
            });
        }
        let mut http_response = http::Response::new(body);
        *http_response.status_mut() = status;
        *http_response.headers_mut() = headers;
        Ok(http_response)
    }

    /// A client connected to `destination`'s checked address, resolved again after a while.
    async fn connection(&self, destination: &ServerName) -> Result<Connection, FederationError> {
        let now = Instant::now();
        if let Ok(cache) = self.connections.lock()
            && let Some(connection) = cache.get(destination)
            && connection.expires > now
        {
            return Ok(connection.clone());
        }
        let target = self.resolver.resolve(destination).await;
        let address = self.guard.resolve(&target.connect_host, target.port).await.map_err(|e| match e {
            crate::service::address_guard::GuardError::Forbidden(message) => FederationError::Forbidden(message),
            other => FederationError::Unreachable(other.to_string()),
        })?;
        let mut builder = self.tls.builder(REQUEST_TIMEOUT);
        if !is_ip_literal(&target.tls_name) {
            builder = builder.resolve(&target.tls_name, address);
        }
        let client = builder.build().map_err(|e| FederationError::Invalid(format!("HTTP client: {e}")))?;
        // An IP literal as the TLS name is connected to directly (the guard checked it).
        let url_host = if is_ip_literal(&target.tls_name) {
            match address.ip() {
                std::net::IpAddr::V4(ip) => ip.to_string(),
                std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            }
        } else {
            target.tls_name.clone()
        };
        let connection = Connection {
            base_url: format!("https://{url_host}:{}", target.port),
            host_header: target.host_header,
            client,
            expires: now + CONNECTION_TTL,
        };
        if let Ok(mut cache) = self.connections.lock() {
            if cache.len() >= CONNECTION_CACHE_LIMIT {
                cache.retain(|_, connection| connection.expires > now);
                if cache.len() >= CONNECTION_CACHE_LIMIT {
                    cache.clear();
                }
            }
            cache.insert(destination.to_owned(), connection.clone());
        }
        Ok(connection)
    }

    /// Drops the cached connection of `destination` (after a failure), so the next request
    /// resolves it again.
    fn forget(&self, destination: &ServerName) {
        if let Ok(mut cache) = self.connections.lock() {
            cache.remove(destination);
        }
    }
}
