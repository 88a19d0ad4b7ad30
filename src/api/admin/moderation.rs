//! Account moderation by admins: Synapse's `v1/users/{userId}/shadow_ban` (POST sets, DELETE
//! lifts) and `v1/suspend/{userId}` (`{"suspend": bool}`; locking is `locked` in `PUT
//! v2/users/{userId}`, in `users.rs`), and the spec's own (v1.18) `GET`/`PUT
//! /_matrix/client/v1/admin/lock/{userId}` and `.../admin/suspend/{userId}`. Only users of this
//! server; what each state means for the user's requests is in `service/admin/moderation.rs`.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Path, State},
    routing::{post, put},
};
use ruma::{
    UserId,
    api::client::admin::{is_user_locked, is_user_suspended, lock_user, suspend_user},
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{Admin, AdminJson, local_user};
use crate::{
    Error, Result,
    api::{RumaRouter, extract::Ruma},
    service::{Services, accounts::Moderation, sessions::Authenticated},
    storage::tables::UserRecord,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .route("/_synapse/admin/v1/users/{user_id}/shadow_ban", post(shadow_ban).delete(lift_shadow_ban))
        .route("/_synapse/admin/v1/suspend/{user_id}", put(suspend))
        .ruma(get_lock)
        .ruma(set_lock)
        .ruma(get_suspension)
        .ruma(set_suspension)
}

/// A user of this server that exists and is not deactivated (`M_NOT_FOUND` otherwise).
async fn active_user(services: &Services, user: &UserId) -> Result<UserRecord> {
    services
        .accounts
        .get(user)
        .await?
        .filter(|record| !record.deactivated)
        .ok_or_else(|| Error::not_found("User not found"))
}

async fn shadow_ban(
    State(services): State<Arc<Services>>,
    Admin(admin): Admin,
    Path(user_id): Path<String>,
) -> Result<Json<Value>> {
    set_shadow_ban(&services, &admin, &user_id, true).await
}

async fn lift_shadow_ban(
    State(services): State<Arc<Services>>,
    Admin(admin): Admin,
    Path(user_id): Path<String>,
) -> Result<Json<Value>> {
    set_shadow_ban(&services, &admin, &user_id, false).await
}

async fn set_shadow_ban(services: &Services, admin: &Authenticated, user_id: &str, on: bool) -> Result<Json<Value>> {
    let user = local_user(services, user_id)?;
    services.accounts.get(&user).await?.ok_or_else(|| Error::not_found("User not found"))?;
    services.accounts.set_moderation(&user, Moderation { shadow_banned: Some(on), ..Moderation::default() }).await?;
    tracing::info!(%user, by = %admin.user_id, shadow_banned = on, "shadow-ban changed");
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
struct Suspend {
    suspend: bool,
}

/// Synapse's answer: `{"user_<id>_suspended": bool}`.
async fn suspend(
    State(services): State<Arc<Services>>,
    Admin(admin): Admin,
    Path(user_id): Path<String>,
    AdminJson(body): AdminJson<Suspend>,
) -> Result<Json<Value>> {
    let user = local_user(&services, &user_id)?;
    services.accounts.get(&user).await?.ok_or_else(|| Error::not_found("User not found"))?;
    let flags = Moderation { suspended: Some(body.suspend), ..Moderation::default() };
    services.accounts.set_moderation(&user, flags).await?;
    tracing::info!(%user, by = %admin.user_id, suspended = body.suspend, "suspension changed");
    Ok(Json(json!({ format!("user_{user}_suspended"): body.suspend })))
}

/// The spec's checks for its admin endpoints, in its order: the caller is an admin (before any
/// lookup, so nobody else learns who exists), the target is local, exists and is active, and
/// (for changes) is not an admin.
async fn spec_target(services: &Services, caller: &Authenticated, user: &UserId, change: bool) -> Result<UserRecord> {
    if !caller.admin {
        return Err(Error::forbidden("Requesting user is not a server administrator"));
    }
    if !services.accounts.is_local(user) {
        return Err(Error::invalid_param("User does not belong to the local server"));
    }
    let record = active_user(services, user).await?;
    if change && record.admin {
        return Err(Error::forbidden("Server administrators cannot be locked or suspended here"));
    }
    Ok(record)
}

async fn get_lock(
    services: Arc<Services>,
    request: Ruma<is_user_locked::v1::Request>,
) -> Result<is_user_locked::v1::Response> {
    let record = spec_target(&services, request.sender()?, &request.body.user_id, false).await?;
    Ok(is_user_locked::v1::Response::new(record.locked))
}

async fn set_lock(services: Arc<Services>, request: Ruma<lock_user::v1::Request>) -> Result<lock_user::v1::Response> {
    let (caller, body) = (request.sender()?, &request.body);
    spec_target(&services, caller, &body.user_id, true).await?;
    services
        .accounts
        .set_moderation(&body.user_id, Moderation { locked: Some(body.locked), ..Moderation::default() })
        .await?;
    tracing::info!(user = %body.user_id, by = %caller.user_id, locked = body.locked, "lock changed");
    Ok(lock_user::v1::Response::new(body.locked))
}

async fn get_suspension(
    services: Arc<Services>,
    request: Ruma<is_user_suspended::v1::Request>,
) -> Result<is_user_suspended::v1::Response> {
    let record = spec_target(&services, request.sender()?, &request.body.user_id, false).await?;
    Ok(is_user_suspended::v1::Response::new(record.suspended))
}

async fn set_suspension(
    services: Arc<Services>,
    request: Ruma<suspend_user::v1::Request>,
) -> Result<suspend_user::v1::Response> {
    let (caller, body) = (request.sender()?, &request.body);
    spec_target(&services, caller, &body.user_id, true).await?;
    let flags = Moderation { suspended: Some(body.suspended), ..Moderation::default() };
    services.accounts.set_moderation(&body.user_id, flags).await?;
    tracing::info!(user = %body.user_id, by = %caller.user_id, suspended = body.suspended, "suspension changed");
    Ok(suspend_user::v1::Response::new(body.suspended))
}
