//! What every admin endpoint shares: the caller must be a server admin (`M_FORBIDDEN`
//! otherwise, `M_MISSING_TOKEN`/`M_UNKNOWN_TOKEN` without a valid token), JSON bodies read with
//! the spec's errors, and user IDs from paths that must be this server's users.

use std::sync::Arc;

use axum::{
    extract::{FromRequest, FromRequestParts, Request},
    http::request::Parts,
};
use http::StatusCode;
use ruma::{OwnedUserId, api::error::ErrorKind};
use serde::de::DeserializeOwned;

use crate::{
    Error,
    api::extract::{access_token, client_ip, read_body},
    service::{Services, sessions::Authenticated},
};

/// The admin making the request.
pub struct Admin(pub Authenticated);

impl FromRequestParts<Arc<Services>> for Admin {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, services: &Arc<Services>) -> Result<Self, Error> {
        let token = access_token(parts)?
            .ok_or_else(|| Error::new(StatusCode::UNAUTHORIZED, ErrorKind::MissingToken, "Missing access token"))?;
        let caller = services.sessions.authenticate(&token, client_ip(&parts.extensions)).await?;
        if !caller.admin {
            return Err(Error::forbidden("You are not a server admin"));
        }
        Ok(Self(caller))
    }
}

/// A JSON body: `M_NOT_JSON` when it is not JSON, `M_BAD_JSON` when it has the wrong shape; an
/// empty body reads as `{}`.
pub struct AdminJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Arc<Services>> for AdminJson<T> {
    type Rejection = Error;

    async fn from_request(request: Request, services: &Arc<Services>) -> Result<Self, Error> {
        let (parts, body) = request.into_parts();
        let bytes = read_body(body, services.config.max_request_size as usize, &parts.headers).await?;
        parse_json(if bytes.is_empty() { b"{}" } else { &bytes }).map(Self)
    }
}

pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(bytes).map_err(|e| {
        if serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_err() {
            Error::new(StatusCode::BAD_REQUEST, ErrorKind::NotJson, "Request body is not valid JSON")
        } else {
            Error::bad_json(format!("Invalid request body: {e}"))
        }
    })
}

/// A user ID from a path, which must be of this server (`400 M_INVALID_PARAM` otherwise, as
/// Synapse answers "Can only look up local users").
pub fn local_user(services: &Services, user_id: &str) -> Result<OwnedUserId, Error> {
    let user = OwnedUserId::try_from(user_id).map_err(|e| Error::invalid_param(format!("Invalid user ID: {e}")))?;
    if !services.accounts.is_local(&user) {
        return Err(Error::invalid_param("Only users of this server can be managed here"));
    }
    Ok(user)
}
