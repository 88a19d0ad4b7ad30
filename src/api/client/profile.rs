//! Profiles: `GET /profile/{userId}` and per-field GET, PUT and DELETE (`displayname`,
//! `avatar_url` and the custom fields of spec v1.16) for local users; GETs of other servers'
//! users are asked of their server over federation.

use std::sync::Arc;

use axum::Router;
use http::StatusCode;
use ruma::{
    UserId,
    api::{
        client::profile::{ProfileFieldValue, delete_profile_field, get_profile, get_profile_field, set_profile_field},
        error::ErrorKind,
    },
};

use crate::{
    Error, Result,
    api::{RumaRouter, extract::Ruma},
    service::{Services, admin::moderation, sessions::Authenticated},
};

/// The spec's limit on a whole profile, in bytes of JSON.
const MAX_PROFILE_BYTES: usize = 64 * 1024;
/// The spec's limit on a field name, in bytes.
const MAX_FIELD_NAME_BYTES: usize = 255;

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(profile).ruma(get_field).ruma(set_field).ruma(delete_field)
}

/// Users of this server that do not exist have no profile.
async fn ensure_known_local_user(services: &Services, user_id: &UserId) -> Result<()> {
    services.lookup_appservice_user(user_id).await?;
    if user_id.server_name() != services.config.server_name || !services.accounts.exists(user_id).await? {
        return Err(Error::not_found("Profile not found"));
    }
    Ok(())
}

/// Display name and avatar changes reach the user's member event in every joined room (not a
/// shadow-banned user's: as in Synapse, only the global profile changes).
async fn propagate(services: &Services, sender: &Authenticated, field: &str) -> Result<()> {
    let user = &sender.user_id;
    if (field == "displayname" || field == "avatar_url") && !moderation::shadow_banned(sender) {
        let profile = crate::api::client::room::member_profile(services, user).await?;
        services.rooms.propagate_profile(user, profile).await?;
    }
    Ok(())
}

fn ensure_own_profile(request_user: &UserId, sender: &UserId) -> Result<()> {
    if request_user != sender {
        return Err(Error::forbidden("You cannot change another user's profile"));
    }
    Ok(())
}

async fn profile(
    services: Arc<Services>,
    request: Ruma<get_profile::v3::Request>,
) -> Result<get_profile::v3::Response> {
    let user_id = &request.body.user_id;
    let mut response = get_profile::v3::Response::new();
    if user_id.server_name() != services.config.server_name {
        response.data = services.federation.remote_profile(user_id, None).await?.into_iter().collect();
        return Ok(response);
    }
    ensure_known_local_user(&services, user_id).await?;
    response.data = services.profile.all(user_id).await?.into_iter().collect();
    Ok(response)
}

async fn get_field(
    services: Arc<Services>,
    request: Ruma<get_profile_field::v3::Request>,
) -> Result<get_profile_field::v3::Response> {
    let body = &request.body;
    let name = body.field.as_str();
    let value = if body.user_id.server_name() != services.config.server_name {
        services.federation.remote_profile(&body.user_id, Some(body.field.clone())).await?.remove(name)
    } else {
        ensure_known_local_user(&services, &body.user_id).await?;
        services.profile.field(&body.user_id, name).await?
    };
    let value = value.ok_or_else(|| Error::not_found(format!("The profile has no field {name}")))?;
    let value = ProfileFieldValue::new(name, value)
        .map_err(|e| Error::internal(format!("stored profile field {name} is invalid: {e}")))?;
    Ok(get_profile_field::v3::Response::new(value))
}

async fn set_field(
    services: Arc<Services>,
    request: Ruma<set_profile_field::v3::Request>,
) -> Result<set_profile_field::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    ensure_own_profile(&body.user_id, &sender.user_id)?;
    moderation::check_not_suspended(sender, "Changing the profile")?;
    let name = body.value.field_name();
    let name = name.as_str();
    if name.len() > MAX_FIELD_NAME_BYTES {
        return Err(Error::new(
            StatusCode::BAD_REQUEST,
            ErrorKind::KeyTooLarge,
            "Profile field names are limited to 255 bytes",
        ));
    }
    let value = body.value.value().into_owned();
    let mut profile = services.profile.all(&sender.user_id).await?;
    profile.insert(name.to_owned(), value.clone());
    let size = serde_json::to_vec(&profile).map(|v| v.len()).unwrap_or(usize::MAX);
    if size > MAX_PROFILE_BYTES {
        return Err(Error::new(StatusCode::BAD_REQUEST, ErrorKind::ProfileTooLarge, "The profile would exceed 64 KiB"));
    }
    services.profile.set_field(&sender.user_id, name, Some(value)).await?;
    propagate(&services, sender, name).await?;
    Ok(set_profile_field::v3::Response::new())
}

async fn delete_field(
    services: Arc<Services>,
    request: Ruma<delete_profile_field::v3::Request>,
) -> Result<delete_profile_field::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    ensure_own_profile(&body.user_id, &sender.user_id)?;
    moderation::check_not_suspended(sender, "Changing the profile")?;
    services.profile.set_field(&sender.user_id, body.field.as_str(), None).await?;
    propagate(&services, sender, body.field.as_str()).await?;
    Ok(delete_profile_field::v3::Response::new())
}
