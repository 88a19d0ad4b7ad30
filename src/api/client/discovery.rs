//! Server discovery and capabilities: `/versions`, `/.well-known/matrix/client`,
//! `/capabilities`.

use std::{collections::BTreeMap, sync::Arc};

use axum::{Json, Router, extract::State};
use ruma::api::client::discovery::{
    discover_homeserver::{self, HomeserverInfo},
    get_capabilities::{
        self,
        v3::{Capabilities, RoomVersionStability, RoomVersionsCapability},
    },
    get_supported_versions,
};

use crate::{
    Error, Result,
    api::{RumaRouter, extract::Ruma},
    service::Services,
};

/// Spec versions whose client-server features Trellis serves so far. v1.11 is the first that
/// promises authenticated media (`/_matrix/client/v1/media/*`), which the media repository serves.
const SUPPORTED_VERSIONS: &[&str] = &[
    "r0.5.0", "r0.6.0", "r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10",
    "v1.11",
];

pub use crate::service::rooms::ROOM_VERSIONS;

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    capabilities_routes(router.ruma(versions).ruma(well_known_client))
}

async fn versions(
    _: Arc<Services>,
    _: Ruma<get_supported_versions::Request>,
) -> Result<get_supported_versions::Response> {
    let mut response =
        get_supported_versions::Response::new(SUPPORTED_VERSIONS.iter().map(|v| (*v).to_owned()).collect());
    response.unstable_features = BTreeMap::from([
        // Refresh tokens before they were stable in v1.3.
        ("org.matrix.msc2918.refresh_token".to_owned(), true),
        // Simplified sliding sync (MSC4186), which matrix-rust-sdk's room list looks for.
        ("org.matrix.simplified_msc3575".to_owned(), true),
    ]);
    Ok(response)
}

async fn well_known_client(
    services: Arc<Services>,
    _: Ruma<discover_homeserver::Request>,
) -> Result<discover_homeserver::Response> {
    let base_url = services
        .config
        .well_known
        .client
        .clone()
        .ok_or_else(|| Error::not_found("No client well-known is configured"))?;
    Ok(discover_homeserver::Response::new(HomeserverInfo::new(base_url)))
}

/// Ruma leaves out capabilities that have their default value (`m.change_password` enabled,
/// for one), which the spec allows, but clients and Complement's `TestServerCapabilities` look
/// for the key, as Synapse always sends it. So this route is plain axum around the same
/// extractor, and the capabilities ruma would leave out are written back in.
fn capabilities_routes(mut router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    use ruma::api::{Metadata, path_builder::PathBuilder};
    for path in <get_capabilities::v3::Request as Metadata>::PATH_BUILDER.all_paths() {
        router = router.route(path, axum::routing::get(capabilities));
    }
    router
}

async fn capabilities(
    State(services): State<Arc<Services>>,
    _: Ruma<get_capabilities::v3::Request>,
) -> Result<Json<serde_json::Value>> {
    let mut capabilities = Capabilities::new();
    capabilities.room_versions = RoomVersionsCapability::new(
        services.config.default_room_version.clone(),
        ROOM_VERSIONS.iter().map(|v| (v.clone(), RoomVersionStability::Stable)).collect(),
    );
    let mut json = serde_json::to_value(&capabilities)
        .map_err(|e| Error::internal(format!("cannot serialise capabilities: {e}")))?;
    if let Some(map) = json.as_object_mut() {
        let enabled = |enabled: bool| serde_json::json!({ "enabled": enabled });
        map.insert("m.change_password".to_owned(), enabled(true));
        map.insert("m.set_displayname".to_owned(), enabled(true));
        map.insert("m.set_avatar_url".to_owned(), enabled(true));
        // Third-party identifiers (email, phone) are not supported.
        map.insert("m.3pid_changes".to_owned(), enabled(false));
    }
    Ok(Json(serde_json::json!({ "capabilities": json })))
}
