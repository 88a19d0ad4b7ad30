//! Third-party identifiers (email addresses, phone numbers). Trellis does not support them yet
//! (`m.3pid_changes` is `false` in the capabilities): the list is empty, adding or binding one
//! and asking for a validation token are refused with `M_THREEPID_DENIED`, and removing one
//! removes nothing. Element asks for the list on its settings page, so it must answer.

use std::sync::Arc;

use axum::{Json, Router};
use http::StatusCode;
use ruma::api::{
    client::account::{
        ThirdPartyIdRemovalStatus, add_3pid, bind_3pid, delete_3pid, get_3pids,
        request_3pid_management_token_via_email, request_3pid_management_token_via_msisdn,
        request_password_change_token_via_email, request_password_change_token_via_msisdn,
        request_registration_token_via_email, request_registration_token_via_msisdn, unbind_3pid,
    },
    error::ErrorKind,
};

use crate::{
    Error, Result,
    api::{RumaRouter, extract::Ruma},
    service::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    use ruma::api::{Metadata, path_builder::PathBuilder};
    let mut router = router;
    for path in <get_3pids::v3::Request as Metadata>::PATH_BUILDER.all_paths() {
        router = router.route(path, axum::routing::get(list));
    }
    router
        .ruma(|_, _: Ruma<add_3pid::v3::Request>| denied())
        .ruma(|_, _: Ruma<bind_3pid::v3::Request>| denied())
        .ruma(|_, _: Ruma<request_3pid_management_token_via_email::v3::Request>| denied())
        .ruma(|_, _: Ruma<request_3pid_management_token_via_msisdn::v3::Request>| denied())
        .ruma(|_, _: Ruma<request_registration_token_via_email::v3::Request>| denied())
        .ruma(|_, _: Ruma<request_registration_token_via_msisdn::v3::Request>| denied())
        .ruma(|_, _: Ruma<request_password_change_token_via_email::v3::Request>| denied())
        .ruma(|_, _: Ruma<request_password_change_token_via_msisdn::v3::Request>| denied())
        .ruma(delete)
        .ruma(unbind)
}

async fn denied<T>() -> Result<T> {
    Err(Error::new(
        StatusCode::BAD_REQUEST,
        ErrorKind::ThreepidDenied,
        "Third-party identifiers (email, phone) are not supported by this server",
    ))
}

/// Always empty. A plain route: ruma's response type leaves out an empty list, and clients
/// expect the `threepids` key.
async fn list(request: Ruma<get_3pids::v3::Request>) -> Result<Json<serde_json::Value>> {
    request.sender()?;
    Ok(Json(serde_json::json!({"threepids": []})))
}

/// Nothing is bound here, so there is nothing to remove.
async fn delete(_: Arc<Services>, request: Ruma<delete_3pid::v3::Request>) -> Result<delete_3pid::v3::Response> {
    request.sender()?;
    Ok(delete_3pid::v3::Response::new(ThirdPartyIdRemovalStatus::NoSupport))
}

async fn unbind(_: Arc<Services>, request: Ruma<unbind_3pid::v3::Request>) -> Result<unbind_3pid::v3::Response> {
    request.sender()?;
    Ok(unbind_3pid::v3::Response::new(ThirdPartyIdRemovalStatus::NoSupport))
}
