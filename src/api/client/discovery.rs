//! Server discovery and capabilities: `/versions`, `/.well-known/matrix/client`,
//! `/capabilities`.

use std::sync::Arc;

use axum::{Json, Router, extract::State};
use ruma::api::client::discovery::{
    discover_homeserver::{self, HomeserverInfo},
    get_capabilities::{
        self,
        v3::{Capabilities, RoomVersionsCapability},
    },
    get_supported_versions,
};

use crate::{
    Error, Result,
    api::{RumaRouter, extract::Ruma},
    service::Services,
};

/// Spec versions whose client-server features Trellis serves: every endpoint those versions
/// require, checked against the spec's `ENDPOINTS.md` and changelogs (issue #14). What is left out
/// on purpose, as the spec allows: the deprecated global `/events`, `/events/{eventId}` and
/// `/initialSync`, peeking (`/rooms/{roomId}/initialSync`, room previews are an optional module),
/// `/voip/turnServer` (no TURN server is configured), and SSO and OAuth (not offered, so their
/// endpoints answer 404).
///
/// v1.17 is not advertised: its application service device management (MSC4190) is missing,
/// and so are v1.18's policy server module and v1.19's `/mutual_rooms`. v1.18's admin lock and
/// suspend endpoints are served (`api/admin/moderation.rs`) and shown to admins as the
/// `m.account_moderation` capability, which the spec asks for whatever versions are listed.
const SUPPORTED_VERSIONS: &[&str] = &[
    "r0.5.0", "r0.6.0", "r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10",
    "v1.11", "v1.12", "v1.13", "v1.14", "v1.15", "v1.16",
];

/// Unstable features (MSCs) Trellis implements, under the names Synapse advertises them.
const UNSTABLE_FEATURES: &[&str] = &[
    // Refresh tokens before they were stable in v1.3.
    "org.matrix.msc2918.refresh_token",
    // Simplified sliding sync (MSC4186), which matrix-rust-sdk's room list looks for.
    "org.matrix.simplified_msc3575",
    // Deleting account data (`DELETE .../account_data/{type}`, or a `PUT` of `{}`).
    "org.matrix.msc3391",
    // `org.matrix.msc3874.rel_types` and `not_rel_types` in `/messages` filters.
    "org.matrix.msc3874",
    // Invite filtering by user and server (`org.matrix.msc4155.invite_permission_config`).
    "org.matrix.msc4155",
    // Invite blocking under its stable name (`m.invite_permission_config`, v1.18).
    "org.matrix.msc4380.stable",
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
    response.unstable_features = UNSTABLE_FEATURES.iter().map(|feature| ((*feature).to_owned(), true)).collect();
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
    request: Ruma<get_capabilities::v3::Request>,
) -> Result<Json<serde_json::Value>> {
    let mut capabilities = Capabilities::new();
    capabilities.room_versions = RoomVersionsCapability::new(
        services.config.default_room_version.clone(),
        ROOM_VERSIONS.iter().map(|v| (v.clone(), crate::service::rooms::versions::stability(v))).collect(),
    );
    let mut json = serde_json::to_value(&capabilities)
        .map_err(|e| Error::internal(format!("cannot serialise capabilities: {e}")))?;
    if let Some(map) = json.as_object_mut() {
        let enabled = |enabled: bool| serde_json::json!({ "enabled": enabled });
        map.insert("m.change_password".to_owned(), enabled(true));
        map.insert("m.set_displayname".to_owned(), enabled(true));
        map.insert("m.set_avatar_url".to_owned(), enabled(true));
        // Login tokens for new devices (`/login/get_token`, v1.7).
        map.insert("m.get_login_token".to_owned(), enabled(services.config.login_via_existing_session));
        // Custom profile fields (v1.16, MSC4133).
        map.insert("m.profile_fields".to_owned(), enabled(true));
        // Third-party identifiers (email, phone) are not supported.
        map.insert("m.3pid_changes".to_owned(), enabled(false));
        // Server admins may lock and suspend users (`/admin/lock`, `/admin/suspend`, v1.18);
        // for everyone else the spec wants the capability left out.
        if request.sender.as_ref().is_some_and(|sender| sender.admin) {
            map.insert("m.account_moderation".to_owned(), serde_json::json!({"lock": true, "suspend": true}));
        }
    }
    Ok(Json(serde_json::json!({ "capabilities": json })))
}
