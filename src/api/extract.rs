//! The one extractor for ruma request types: authenticates according to the endpoint's auth
//! scheme (`Authorization: Bearer`, or the older `access_token` query parameter), then reads the
//! body within `max_request_size` (for server-signed federation requests, checks the `X-Matrix`
//! signature over it) and parses the request, mapping every failure to the Matrix
//! error the spec names. Also the response wrapper that turns ruma responses into HTTP.

use std::{net::SocketAddr, sync::Arc};

use axum::{
    body::Body,
    extract::{ConnectInfo, FromRequest, FromRequestParts, Path, Request},
    response::{IntoResponse, Response},
};
use http::StatusCode;
use ruma::{
    OwnedServerName, ServerName,
    api::{
        IncomingRequest, IncomingRequestExt, OutgoingResponse, OutgoingResponseExt,
        auth_scheme::{
            AccessToken, AccessTokenOptional, AppserviceToken, AppserviceTokenOptional, AuthScheme, NoAccessToken,
            NoAuthentication,
        },
        error::{DeserializationError, ErrorKind, FromHttpRequestError},
        federation::authentication::ServerSignatures,
        path_builder::PathBuilder,
    },
};

use crate::{
    Error,
    service::{Services, sessions::Authenticated},
};

/// How an endpoint's auth scheme is enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// No credentials; a token sent anyway is ignored.
    None,
    /// A user's access token is required.
    Required,
    /// A user's access token is checked when present.
    Optional,
    /// Server-to-server request signatures (X-Matrix).
    ServerSignatures,
}

/// Maps ruma's auth scheme types to how Trellis enforces them.
pub trait AuthPolicy {
    const MODE: AuthMode;
}
impl AuthPolicy for NoAuthentication {
    const MODE: AuthMode = AuthMode::None;
}
impl AuthPolicy for NoAccessToken {
    const MODE: AuthMode = AuthMode::None;
}
impl AuthPolicy for AccessToken {
    const MODE: AuthMode = AuthMode::Required;
}
impl AuthPolicy for AccessTokenOptional {
    const MODE: AuthMode = AuthMode::Optional;
}
// Any token-taking endpoint accepts an application service's token (see `appservice_auth`);
// these are the endpoints only services call, or that treat them specially.
impl AuthPolicy for AppserviceToken {
    const MODE: AuthMode = AuthMode::Required;
}
impl AuthPolicy for AppserviceTokenOptional {
    const MODE: AuthMode = AuthMode::Optional;
}
impl AuthPolicy for ServerSignatures {
    const MODE: AuthMode = AuthMode::ServerSignatures;
}

/// A parsed, authenticated ruma request.
pub struct Ruma<T> {
    pub body: T,
    /// The user and device behind the access token, when the endpoint takes one.
    pub sender: Option<Authenticated>,
    /// The server that signed the request, on federation endpoints that require signatures.
    pub origin: Option<OwnedServerName>,
    /// The client's address, for device "last seen" records.
    pub client_ip: Option<String>,
    /// The body as sent, for the few endpoints that keep keys ruma's types drop (extra content
    /// of a join).
    pub raw_body: bytes::Bytes,
    /// The query string as sent, for the few parameters ruma's types drop (unstable names).
    pub raw_query: Option<String>,
}

impl<T> Ruma<T> {
    /// The server that signed the request; endpoints that require signatures always have one.
    pub fn origin(&self) -> Result<&ServerName, Error> {
        self.origin
            .as_deref()
            .ok_or_else(|| Error::new(StatusCode::UNAUTHORIZED, ErrorKind::Unauthorized, "Missing server signature"))
    }

    /// The authenticated sender; endpoints that require a token always have one.
    pub fn sender(&self) -> Result<&Authenticated, Error> {
        self.sender
            .as_ref()
            .ok_or_else(|| Error::new(StatusCode::UNAUTHORIZED, ErrorKind::MissingToken, "Missing access token"))
    }
}

impl<T> FromRequest<Arc<Services>> for Ruma<T>
where
    T: IncomingRequest + Send,
    T::Authentication: AuthPolicy,
{
    type Rejection = Error;

    async fn from_request(request: Request, services: &Arc<Services>) -> Result<Self, Error> {
        let (mut parts, body) = request.into_parts();
        let mut path_args: Vec<String> = match Path::<Vec<String>>::from_request_parts(&mut parts, services).await {
            Ok(Path(args)) => args,
            Err(rejection) => return Err(Error::invalid_param(format!("Invalid path: {rejection}"))),
        };
        // Routes registered without a trailing `{state_key}` mean the empty state key.
        let expected = T::PATH_BUILDER._path_parameters().len();
        while path_args.len() < expected {
            path_args.push(String::new());
        }
        let client_ip = client_ip(&parts.extensions);
        let raw_query = parts.uri.query().map(str::to_owned);
        let requester = parts.extensions.get::<super::observe::RequestUser>().cloned();

        let sender = match <T::Authentication as AuthPolicy>::MODE {
            AuthMode::None => None,
            AuthMode::Required | AuthMode::Optional => {
                let token = access_token(&parts)?;
                match token {
                    Some(token) => match services.appservices.by_token(&token) {
                        Some(service) => Some(super::appservice_auth::identity(services, service, &parts).await?),
                        None => {
                            let allow_locked = allows_locked(&parts.method, parts.uri.path());
                            Some(services.sessions.authenticate_with(&token, client_ip.clone(), allow_locked).await?)
                        }
                    },
                    None if <T::Authentication as AuthPolicy>::MODE == AuthMode::Required => {
                        return Err(Error::new(
                            StatusCode::UNAUTHORIZED,
                            ErrorKind::MissingToken,
                            "Missing access token",
                        ));
                    }
                    None => None,
                }
            }
            // Checked once the body is read: the signature covers it.
            AuthMode::ServerSignatures => None,
        };
        if let Some(sender) = &sender {
            if let Some(requester) = &requester {
                requester.set(sender.user_id.as_str());
            }
            super::guest::check(sender, &parts.method, parts.uri.path())?;
        }
        // Read only once the caller is known, so an anonymous client cannot make the server
        // buffer `max_request_size` bytes (an upload) on endpoints that need a token.
        let bytes = read_body(body, services.config.max_request_size as usize, &parts.headers).await?;
        let origin = match <T::Authentication as AuthPolicy>::MODE {
            AuthMode::ServerSignatures => {
                let origin = super::federation::auth::verify(services, &parts, &bytes).await?;
                // A server that talks to us is up: a transaction waiting for it goes now.
                services.federation.sender.destination_is_up(&origin);
                if let Some(requester) = &requester {
                    requester.set(origin.as_str());
                }
                Some(origin)
            }
            _ => None,
        };

        // serde_json skips the strings of fields nobody reads without checking their UTF-8, so a
        // body with invalid UTF-8 there would be taken; the spec wants it refused as not JSON.
        // (A binary upload is not JSON whatever its bytes, so it is let through.)
        if std::str::from_utf8(&bytes).is_err() && serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_ok() {
            return Err(Error::new(
                StatusCode::BAD_REQUEST,
                ErrorKind::NotJson,
                "Request body is not valid UTF-8 JSON",
            ));
        }
        let path_refs: Vec<&str> = path_args.iter().map(String::as_str).collect();
        // Some clients (matrix-nio's `join`, for one) send no body where every field is
        // optional: read a missing body as `{}`, as Synapse and Conduit do.
        let retry_empty = bytes.is_empty().then(|| (parts.method.clone(), parts.uri.clone(), parts.headers.clone()));
        let http_request = http::Request::from_parts(parts, bytes.as_ref());
        let body = match (T::try_from_http_request(http_request, &path_refs), retry_empty) {
            (Ok(body), _) => body,
            (Err(error), None) => return Err(request_error(error, &bytes)),
            (Err(error), Some((method, uri, headers))) => {
                let mut request = http::Request::new(b"{}".as_slice());
                *request.method_mut() = method;
                *request.uri_mut() = uri;
                *request.headers_mut() = headers;
                T::try_from_http_request(request, &path_refs).map_err(|_| request_error(error, &bytes))?
            }
        };
        Ok(Ruma { body, sender, origin, client_ip, raw_body: bytes, raw_query })
    }
}

/// The client's IP address: the one `client_address::resolve` found (`X-Forwarded-For` from a
/// trusted proxy), else the TCP peer's, when the listener recorded it.
pub(crate) fn client_ip(extensions: &http::Extensions) -> Option<String> {
    if let Some(super::client_address::ClientAddress(ip)) = extensions.get() {
        return Some(ip.to_string());
    }
    extensions.get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(addr)| addr.ip().to_canonical().to_string())
}

/// The endpoints a locked account may still call (spec v1.12, "Account locking"):
/// `POST /logout` and `POST /logout/all`.
fn allows_locked(method: &http::Method, path: &str) -> bool {
    method == http::Method::POST && (path.ends_with("/logout") || path.ends_with("/logout/all"))
}

/// Reads the body, refusing more than `limit` bytes with `M_TOO_LARGE` (413).
pub(crate) async fn read_body(body: Body, limit: usize, headers: &http::HeaderMap) -> Result<bytes::Bytes, Error> {
    let too_large = || Error::new(StatusCode::PAYLOAD_TOO_LARGE, ErrorKind::TooLarge, "Request body is too large");
    let declared =
        headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, limit).await.map_err(|_| too_large())
}

/// The access token from `Authorization: Bearer` or the `access_token` query parameter, parsed
/// by ruma's own extraction.
pub(crate) fn access_token(parts: &http::request::Parts) -> Result<Option<String>, Error> {
    let mut probe = http::Request::new(());
    *probe.uri_mut() = parts.uri.clone();
    *probe.headers_mut() = parts.headers.clone();
    AccessTokenOptional::extract_authentication(&probe)
        .map_err(|_| Error::new(StatusCode::UNAUTHORIZED, ErrorKind::MissingToken, "Malformed Authorization header"))
}

/// Maps a parse failure to the spec's error: not JSON at all is `M_NOT_JSON`, JSON of the wrong
/// shape `M_BAD_JSON`, a bad query or path parameter `M_INVALID_PARAM`.
fn request_error(error: FromHttpRequestError, body: &[u8]) -> Error {
    match error {
        FromHttpRequestError::Deserialization(DeserializationError::Json(e)) => {
            if !body.is_empty() && serde_json::from_slice::<serde::de::IgnoredAny>(body).is_err() {
                Error::new(StatusCode::BAD_REQUEST, ErrorKind::NotJson, "Request body is not valid JSON")
            } else {
                Error::bad_json(format!("Invalid request body: {e}"))
            }
        }
        FromHttpRequestError::Deserialization(DeserializationError::Query(e)) => {
            Error::invalid_param(format!("Invalid query parameter: {e}"))
        }
        FromHttpRequestError::Deserialization(DeserializationError::Ident(e)) => {
            Error::invalid_param(format!("Invalid identifier: {e}"))
        }
        FromHttpRequestError::Deserialization(e) => Error::bad_json(format!("Invalid request: {e}")),
        FromHttpRequestError::MethodMismatch { .. } => {
            Error::unrecognized(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed")
        }
        _ => Error::bad_json("Invalid request"),
    }
}

/// A ruma response as an HTTP response.
pub struct RumaResponse<T>(pub T);

impl<T: OutgoingResponse> IntoResponse for RumaResponse<T> {
    fn into_response(self) -> Response {
        match self.0.try_into_http_response::<Vec<u8>>() {
            Ok(response) => response.map(Body::from),
            Err(e) => Error::internal(format!("could not serialize response: {e}")).into_response(),
        }
    }
}
