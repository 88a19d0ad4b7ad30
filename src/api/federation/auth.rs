//! Authentication of inbound federation requests: the `Authorization: X-Matrix` header, whose
//! signature covers the method, the path and query, origin, destination and the JSON body,
//! checked against the origin's key (fetched when unknown). Every endpoint whose ruma type
//! requires server signatures goes through [`verify`] (from the `Ruma` extractor), and its
//! handler reads the verified origin from `Ruma::origin`.

use http::StatusCode;
use ruma::{
    OwnedServerName,
    api::{error::ErrorKind, federation::authentication::XMatrix},
};

use crate::{Error, service::Services};

fn unauthorized(message: impl Into<String>) -> Error {
    Error::new(StatusCode::UNAUTHORIZED, ErrorKind::Unauthorized, message)
}

/// The origin of a signed request, once its signature is verified; `401 M_UNAUTHORIZED` for a
/// missing or malformed header, a destination that is not this server, an unknown key or a
/// signature that does not verify.
pub(crate) async fn verify(
    services: &Services,
    parts: &http::request::Parts,
    body: &[u8],
) -> Result<OwnedServerName, Error> {
    let authorization = XMatrix::extract_from_http_headers(&parts.headers)
        .map_err(|e| unauthorized(format!("Missing or invalid X-Matrix authorization: {e}")))?;
    let own_name = &services.config.server_name;
    if authorization.destination.as_ref().is_some_and(|destination| destination != own_name) {
        return Err(unauthorized(format!("This request is not for {own_name}")));
    }
    let mut request = http::Request::new(body);
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = parts.uri.clone();
    services.federation.keys.verify_request(&authorization, &request).await.map_err(|e| {
        tracing::info!(origin = %authorization.origin, error = %e, "refused a federation request signature");
        unauthorized(format!("Invalid X-Matrix signature: {e}"))
    })?;
    Ok(authorization.origin)
}
