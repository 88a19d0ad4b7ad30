//! `/.well-known/matrix/server` and `/_matrix/federation/v1/version`.

use std::sync::Arc;

use axum::Router;
use ruma::{
    OwnedServerName,
    api::federation::discovery::{
        discover_homeserver, get_server_keys,
        get_server_version::{self, v1::Server},
    },
};

use crate::{
    Error, Result,
    api::{RumaRouter, extract::Ruma},
    service::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(well_known_server).ruma(version).ruma(server_keys)
}

async fn well_known_server(
    services: Arc<Services>,
    _: Ruma<discover_homeserver::Request>,
) -> Result<discover_homeserver::Response> {
    let server = services
        .config
        .well_known
        .server
        .clone()
        .ok_or_else(|| Error::not_found("No server well-known is configured"))?;
    let server = OwnedServerName::try_from(server)
        .map_err(|e| Error::internal(format!("well_known.server is not a server name: {e}")))?;
    Ok(discover_homeserver::Response::new(server))
}

async fn version(
    _: Arc<Services>,
    _: Ruma<get_server_version::v1::Request>,
) -> Result<get_server_version::v1::Response> {
    let mut server = Server::new();
    server.name = Some("Trellis".to_owned());
    server.version = Some(env!("CARGO_PKG_VERSION").to_owned());
    let mut response = get_server_version::v1::Response::new();
    response.server = Some(server);
    Ok(response)
}

/// The server's signing key, self-signed, for other servers to verify its events.
async fn server_keys(
    services: Arc<Services>,
    _: Ruma<get_server_keys::v2::Request>,
) -> Result<get_server_keys::v2::Response> {
    let document = services.rooms.key_document()?;
    let raw = serde_json::value::to_raw_value(&document).map_err(|e| Error::internal(e.to_string()))?;
    Ok(get_server_keys::v2::Response::new(ruma::serde::Raw::from_json(raw)))
}
