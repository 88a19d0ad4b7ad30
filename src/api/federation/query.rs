//! Queries other servers make about this one's users: `GET /_matrix/federation/v1/query/profile`.

use std::sync::Arc;

use axum::Router;
use ruma::api::federation::query::get_profile_information;

use crate::{
    Error, Result,
    api::{RumaRouter, extract::Ruma},
    service::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(profile)
}

/// A local user's profile (one field when `field` is given); `404 M_NOT_FOUND` for users that
/// do not exist here, or a field the profile does not have.
async fn profile(
    services: Arc<Services>,
    request: Ruma<get_profile_information::v1::Request>,
) -> Result<get_profile_information::v1::Response> {
    let origin = request.origin()?;
    let body = &request.body;
    if body.user_id.server_name() != services.config.server_name || !services.accounts.exists(&body.user_id).await? {
        return Err(Error::not_found("Profile not found"));
    }
    tracing::debug!(%origin, user = %body.user_id, "profile query over federation");
    let fields = services.profile.all(&body.user_id).await?;
    let response: get_profile_information::v1::Response = match &body.field {
        Some(field) => {
            let name = field.as_str();
            let value = fields
                .get(name)
                .cloned()
                .ok_or_else(|| Error::not_found(format!("The profile has no field {name}")))?;
            [(name.to_owned(), value)].into_iter().collect()
        }
        None => fields.into_iter().collect(),
    };
    Ok(response)
}
