//! Synapse's admin API for users, with its paths, fields and paging so synadm and
//! synapse-admin work unchanged: `v2/users` (list, query, create or modify), `v1/reset_password`,
//! `v1/deactivate`, `v1/whois`, `v1/users/{userId}/joined_rooms`, `v1/users/{userId}/admin`
//! and `v2/users/{userId}/devices` (shadow-bans and suspensions are in `moderation.rs`). Ruma has no types for these; the bodies are serde structs
//! and JSON values here.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    response::IntoResponse,
    routing::{get, post},
};
use http::StatusCode;
use ruma::OwnedUserId;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::auth::{Admin, AdminJson, local_user};
use crate::{
    Error, Result,
    api::client::register::check_password_length,
    service::{
        Services,
        accounts::AccountKind,
        admin::users::{self, UserFilter},
    },
    storage::tables::UserRecord,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .route("/_synapse/admin/v2/users", get(list))
        .route("/_synapse/admin/v2/users/{user_id}", get(query).put(create_or_modify))
        .route("/_synapse/admin/v2/users/{user_id}/devices", get(devices))
        .route("/_synapse/admin/v1/reset_password/{user_id}", post(reset_password))
        .route("/_synapse/admin/v1/deactivate/{user_id}", post(deactivate))
        .route("/_synapse/admin/v1/whois/{user_id}", get(whois))
        .route("/_matrix/client/v3/admin/whois/{user_id}", get(whois))
        .route("/_synapse/admin/v1/users/{user_id}/joined_rooms", get(joined_rooms))
        .route("/_synapse/admin/v1/users/{user_id}/admin", get(get_admin).put(set_admin))
}

fn default_true() -> bool {
    true
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    limit: Option<String>,
    #[serde(default = "default_true")]
    guests: bool,
    #[serde(default)]
    deactivated: bool,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    admins: Option<bool>,
    #[serde(default)]
    locked: bool,
    #[serde(default)]
    dir: Option<String>,
}

/// A user of this server named in a path, who must exist (`404 M_NOT_FOUND` otherwise).
async fn existing_user(services: &Services, user_id: &str) -> Result<(OwnedUserId, UserRecord)> {
    let user = local_user(services, user_id)?;
    let record = services.accounts.get(&user).await?.ok_or_else(|| Error::not_found("User not found"))?;
    Ok((user, record))
}

/// A non-negative integer query parameter (`M_INVALID_PARAM` otherwise).
pub(super) fn number(value: Option<&str>, name: &str, default: usize) -> Result<usize> {
    match value {
        None | Some("") => Ok(default),
        Some(value) => {
            value.parse().map_err(|_| Error::invalid_param(format!("{name} must be a non-negative integer")))
        }
    }
}

async fn list(
    State(services): State<Arc<Services>>,
    _admin: Admin,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>> {
    let from = number(query.from.as_deref(), "from", 0)?;
    let limit = number(query.limit.as_deref(), "limit", 100)?;
    let filter = UserFilter {
        name: query.name,
        user_id: query.user_id,
        guests: query.guests,
        deactivated: query.deactivated,
        admins: query.admins,
        locked: query.locked,
    };
    let (mut page, total) = users::list(&services, &filter, from, limit).await?;
    if query.dir.as_deref() == Some("b") {
        page.reverse();
    }
    let mut body = json!({"users": page, "total": total});
    if from + limit < total {
        body["next_token"] = json!((from + limit).to_string());
    }
    Ok(Json(body))
}

async fn query(
    State(services): State<Arc<Services>>,
    _admin: Admin,
    Path(user_id): Path<String>,
) -> Result<Json<Value>> {
    let (user, record) = existing_user(&services, &user_id).await?;
    Ok(Json(users::user_json(&services, &user, &record).await?))
}

#[derive(Deserialize)]
struct CreateOrModify {
    #[serde(default)]
    password: Option<String>,
    #[serde(default = "default_true")]
    logout_devices: bool,
    #[serde(default)]
    displayname: Option<String>,
    #[serde(default)]
    avatar_url: Option<String>,
    #[serde(default)]
    admin: Option<bool>,
    #[serde(default)]
    deactivated: Option<bool>,
    /// Locks or unlocks the account (see `service/admin/moderation.rs`).
    #[serde(default)]
    locked: Option<bool>,
}

async fn create_or_modify(
    State(services): State<Arc<Services>>,
    Admin(admin): Admin,
    Path(user_id): Path<String>,
    AdminJson(body): AdminJson<CreateOrModify>,
) -> Result<impl IntoResponse> {
    let user = local_user(&services, &user_id)?;
    if let Some(password) = &body.password {
        check_password_length(password)?;
    }
    let existing = services.accounts.get(&user).await?;
    let created = existing.is_none();
    match existing {
        None => {
            if body.deactivated == Some(true) {
                return Err(Error::invalid_param("A new user cannot be deactivated"));
            }
            let kind = if body.admin == Some(true) { AccountKind::Admin } else { AccountKind::User };
            services.accounts.create(&user, body.password.as_deref(), kind).await?;
            let localpart = user.localpart().to_owned();
            let name = body.displayname.clone().unwrap_or(localpart);
            services.profile.set_field(&user, "displayname", Some(Value::String(name))).await?;
            tracing::info!(%user, by = %admin.user_id, "user created through the admin API");
        }
        Some(record) => {
            if let Some(password) = &body.password {
                services.accounts.set_password(&user, password).await?;
                if body.logout_devices {
                    services.sessions.delete_all_devices_except(&user, None).await?;
                }
            }
            if let Some(displayname) = &body.displayname {
                services.profile.set_field(&user, "displayname", Some(Value::String(displayname.clone()))).await?;
            }
            if body.deactivated == Some(true) && !record.deactivated {
                users::deactivate(&services, &user, false).await?;
            } else if body.deactivated == Some(false) && record.deactivated {
                if body.password.is_none() {
                    return Err(Error::invalid_param("Reactivating a user needs a password"));
                }
                services.accounts.reactivate(&user).await?;
            }
        }
    }
    if let Some(avatar_url) = &body.avatar_url {
        services.profile.set_field(&user, "avatar_url", Some(Value::String(avatar_url.clone()))).await?;
    }
    if let Some(is_admin) = body.admin {
        if user == admin.user_id && !is_admin {
            return Err(Error::invalid_param("You may not demote yourself"));
        }
        services.accounts.set_admin(&user, is_admin).await?;
    }
    if let Some(locked) = body.locked {
        let flags = crate::service::accounts::Moderation { locked: Some(locked), ..Default::default() };
        services.accounts.set_moderation(&user, flags).await?;
        tracing::info!(%user, by = %admin.user_id, locked, "lock changed");
    }
    if !created && (body.displayname.is_some() || body.avatar_url.is_some()) {
        let profile = crate::api::client::room::member_profile(&services, &user).await?;
        services.rooms.propagate_profile(&user, profile).await?;
    }
    let record = services.accounts.get(&user).await?.ok_or_else(|| Error::not_found("User not found"))?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(users::user_json(&services, &user, &record).await?)))
}

#[derive(Deserialize)]
struct ResetPassword {
    new_password: String,
    #[serde(default = "default_true")]
    logout_devices: bool,
}

async fn reset_password(
    State(services): State<Arc<Services>>,
    _admin: Admin,
    Path(user_id): Path<String>,
    AdminJson(body): AdminJson<ResetPassword>,
) -> Result<Json<Value>> {
    let user = local_user(&services, &user_id)?;
    check_password_length(&body.new_password)?;
    services.accounts.get(&user).await?.ok_or_else(|| Error::not_found("User not found"))?;
    services.accounts.set_password(&user, &body.new_password).await?;
    if body.logout_devices {
        services.sessions.delete_all_devices_except(&user, None).await?;
    }
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
struct Deactivate {
    #[serde(default)]
    erase: bool,
    /// Trellis: with `erase`, also prune the content of every event the user sent, on disk and
    /// for everyone (see `docs/admin-guide.md`).
    #[serde(default)]
    prune_events: bool,
}

async fn deactivate(
    State(services): State<Arc<Services>>,
    _admin: Admin,
    Path(user_id): Path<String>,
    AdminJson(body): AdminJson<Deactivate>,
) -> Result<Json<Value>> {
    let (user, _) = existing_user(&services, &user_id).await?;
    if body.prune_events && !body.erase {
        return Err(Error::invalid_param("prune_events needs erase"));
    }
    users::deactivate(&services, &user, body.erase).await?;
    if body.prune_events {
        let pruned = crate::service::admin::erasure::prune_events(&services, &user).await?;
        return Ok(Json(json!({"id_server_unbind_result": "success", "pruned_events": pruned})));
    }
    Ok(Json(json!({"id_server_unbind_result": "success"})))
}

/// Synapse's shape: one entry under the empty key, with a session per device.
async fn whois(
    State(services): State<Arc<Services>>,
    _admin: Admin,
    Path(user_id): Path<String>,
) -> Result<Json<Value>> {
    let (user, _) = existing_user(&services, &user_id).await?;
    let sessions: Vec<Value> = services
        .sessions
        .devices(&user)
        .await?
        .into_iter()
        .map(|(_, device)| {
            json!({"connections": [{
                "ip": device.last_seen_ip,
                "last_seen": device.last_seen_ms.unwrap_or(device.created_ms),
                "user_agent": null,
            }]})
        })
        .collect();
    Ok(Json(json!({"user_id": user, "devices": {"": {"sessions": sessions}}})))
}

async fn devices(
    State(services): State<Arc<Services>>,
    _admin: Admin,
    Path(user_id): Path<String>,
) -> Result<Json<Value>> {
    let (user, _) = existing_user(&services, &user_id).await?;
    let devices: Vec<Value> = services
        .sessions
        .devices(&user)
        .await?
        .into_iter()
        .map(|(device_id, device)| {
            json!({
                "device_id": device_id,
                "display_name": device.display_name,
                "last_seen_ip": device.last_seen_ip,
                "last_seen_ts": device.last_seen_ms,
                "user_id": user,
            })
        })
        .collect();
    Ok(Json(json!({"total": devices.len(), "devices": devices})))
}

async fn joined_rooms(
    State(services): State<Arc<Services>>,
    _admin: Admin,
    Path(user_id): Path<String>,
) -> Result<Json<Value>> {
    let user = local_user(&services, &user_id)?;
    let rooms: Vec<String> = services
        .rooms
        .user_rooms(&user)
        .await?
        .into_iter()
        .filter(|(_, membership)| membership.membership == "join")
        .map(|(room, _)| room.to_string())
        .collect();
    Ok(Json(json!({"total": rooms.len(), "joined_rooms": rooms})))
}

async fn get_admin(
    State(services): State<Arc<Services>>,
    _admin: Admin,
    Path(user_id): Path<String>,
) -> Result<Json<Value>> {
    let (_, record) = existing_user(&services, &user_id).await?;
    Ok(Json(json!({"admin": record.admin})))
}

async fn set_admin(
    State(services): State<Arc<Services>>,
    Admin(admin): Admin,
    Path(user_id): Path<String>,
    AdminJson(body): AdminJson<Map<String, Value>>,
) -> Result<Json<Value>> {
    let user = local_user(&services, &user_id)?;
    let is_admin =
        body.get("admin").and_then(Value::as_bool).ok_or_else(|| Error::bad_json("Missing boolean 'admin'"))?;
    if user == admin.user_id && !is_admin {
        return Err(Error::invalid_param("You may not demote yourself"));
    }
    services.accounts.get(&user).await?.ok_or_else(|| Error::not_found("User not found"))?;
    services.accounts.set_admin(&user, is_admin).await?;
    Ok(Json(json!({})))
}
