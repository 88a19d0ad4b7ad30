//! Synapse's media admin API: a user's media (`v1/users/{userId}/media`, list with `order_by`,
//! `dir` and paging, and delete), a room's media (`v1/room/{roomId}/media`), one piece of
//! media's details and deletion (`v1/media/{serverName}/{mediaId}`), deleting old media
//! (`v1/media/delete`), quarantine by ID, room or user, protection from quarantine, and purging
//! the cache of other servers' media (`v1/purge_media_cache`).

use std::{collections::HashMap, sync::Arc};

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    routing::{get, post},
};
use http::StatusCode;
use ruma::{OwnedRoomId, ServerName, api::error::ErrorKind};
use serde_json::{Value, json};

use super::{
    auth::{Admin, local_user},
    users::number,
};
use crate::{
    Error, Result,
    service::{Services, admin::media, media::admin::Unused},
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .route("/_synapse/admin/v1/users/{user_id}/media", get(user_media).delete(delete_user_media))
        .route("/_synapse/admin/v1/room/{room_id}/media", get(room_media))
        .route("/_synapse/admin/v1/room/{room_id}/media/quarantine", post(quarantine_room))
        .route("/_synapse/admin/v1/quarantine_media/{room_id}", post(quarantine_room))
        .route("/_synapse/admin/v1/user/{user_id}/media/quarantine", post(quarantine_user))
        .route("/_synapse/admin/v1/media/quarantine/{server_name}/{media_id}", post(quarantine))
        .route("/_synapse/admin/v1/media/unquarantine/{server_name}/{media_id}", post(unquarantine))
        .route("/_synapse/admin/v1/media/protect/{media_id}", post(protect))
        .route("/_synapse/admin/v1/media/unprotect/{media_id}", post(unprotect))
        .route("/_synapse/admin/v1/media/delete", post(delete_unused))
        .route("/_synapse/admin/v1/media/{server_name}/delete", post(delete_unused_legacy))
        .route("/_synapse/admin/v1/media/{server_name}/{media_id}", get(info).delete(delete_one))
        .route("/_synapse/admin/v1/purge_media_cache", post(purge_cache))
}

type Params = HashMap<String, String>;

fn server_name(raw: &str) -> Result<&ServerName> {
    <&ServerName>::try_from(raw).map_err(|e| Error::invalid_param(format!("Invalid server name: {e}")))
}

fn room_id(raw: &str) -> Result<OwnedRoomId> {
    OwnedRoomId::try_from(raw).map_err(|e| Error::invalid_param(format!("Invalid room ID: {e}")))
}

/// Synapse's answer for other servers' media where only local media is meant.
fn only_local() -> Error {
    Error::new(StatusCode::BAD_REQUEST, ErrorKind::Unknown, "Can only delete local media")
}

/// A local user named in a path who has an account (`404 M_NOT_FOUND` otherwise).
async fn existing_user(services: &Services, raw: &str) -> Result<ruma::OwnedUserId> {
    let user = local_user(services, raw)?;
    if !services.accounts.exists(&user).await? {
        return Err(Error::not_found("Unknown user"));
    }
    Ok(user)
}

/// The page of a user's media `from`, `limit`, `order_by` and `dir` ask for, and the total.
async fn user_page(services: &Services, raw: &str, params: &Params) -> Result<(Vec<Value>, Vec<String>, usize, usize)> {
    let user = existing_user(services, raw).await?;
    let from = number(params.get("from").map(String::as_str), "from", 0)?;
    let limit = number(params.get("limit").map(String::as_str), "limit", 100)?;
    // Neither given: newest first, as Synapse does.
    let (order_by, backwards) = if !params.contains_key("order_by") && !params.contains_key("dir") {
        ("created_ts", true)
    } else {
        let backwards = match params.get("dir").map(String::as_str) {
            None | Some("f") => false,
            Some("b") => true,
            Some(_) => return Err(Error::invalid_param("dir must be f or b")),
        };
        (params.get("order_by").map_or("created_ts", String::as_str), backwards)
    };
    let mut all = services.media.media_of_user(&user).await?;
    media::order(&mut all, order_by, backwards)?;
    let total = all.len();
    let page: Vec<_> = all.into_iter().skip(from).take(limit).collect();
    let ids = page.iter().map(|m| m.media_id.clone()).collect();
    Ok((page.iter().map(media::to_json).collect(), ids, from, total))
}

async fn user_media(
    State(services): State<Arc<Services>>,
    _admin: Admin,
    Path(raw): Path<String>,
    Query(params): Query<Params>,
) -> Result<Json<Value>> {
    let limit = number(params.get("limit").map(String::as_str), "limit", 100)?;
    let (page, _, from, total) = user_page(&services, &raw, &params).await?;
    let mut body = json!({"total": total});
    if from.saturating_add(limit) < total {
        body["next_token"] = json!(from + page.len());
    }
    body["media"] = Value::Array(page);
    Ok(Json(body))
}

async fn delete_user_media(
    State(services): State<Arc<Services>>,
    Admin(admin): Admin,
    Path(raw): Path<String>,
    Query(params): Query<Params>,
) -> Result<Json<Value>> {
    let (_, ids, _, _) = user_page(&services, &raw, &params).await?;
    let deleted = services.media.delete_local(ids).await?;
    tracing::info!(admin = %admin.user_id, user = raw, deleted = deleted.len(), "a user's media deleted by an admin");
    Ok(Json(json!({"total": deleted.len(), "deleted_media": deleted})))
}

async fn room_media(
    State(services): State<Arc<Services>>,
    _admin: Admin,
    Path(raw): Path<String>,
) -> Result<Json<Value>> {
    let room = room_id(&raw)?;
    let (local, remote) = media::media_in_room(&services, &room).await?;
    Ok(Json(json!({"local": local, "remote": remote})))
}

async fn quarantine_room(
    State(services): State<Arc<Services>>,
    Admin(admin): Admin,
    Path(raw): Path<String>,
) -> Result<Json<Value>> {
    let room = room_id(&raw)?;
    let count = media::quarantine_room(&services, &room, &admin.user_id).await?;
    tracing::info!(admin = %admin.user_id, %room, count, "a room's media quarantined");
    Ok(Json(json!({"num_quarantined": count})))
}

async fn quarantine_user(
    State(services): State<Arc<Services>>,
    Admin(admin): Admin,
    Path(raw): Path<String>,
) -> Result<Json<Value>> {
    let user = local_user(&services, &raw)?;
    let count = media::quarantine_user(&services, &user, &admin.user_id).await?;
    tracing::info!(admin = %admin.user_id, %user, count, "a user's media quarantined");
    Ok(Json(json!({"num_quarantined": count})))
}

async fn quarantine(
    State(services): State<Arc<Services>>,
    Admin(admin): Admin,
    Path((server, media_id)): Path<(String, String)>,
) -> Result<Json<Value>> {
    let server = server_name(&server)?;
    services.media.set_quarantined(vec![(server.to_string(), media_id)], Some(&admin.user_id)).await?;
    Ok(Json(json!({})))
}

async fn unquarantine(
    State(services): State<Arc<Services>>,
    _admin: Admin,
    Path((server, media_id)): Path<(String, String)>,
) -> Result<Json<Value>> {
    let server = server_name(&server)?;
    services.media.set_quarantined(vec![(server.to_string(), media_id)], None).await?;
    Ok(Json(json!({})))
}

async fn protect(
    State(services): State<Arc<Services>>,
    _admin: Admin,
    Path(media_id): Path<String>,
) -> Result<Json<Value>> {
    services.media.set_protected(&media_id, true).await?;
    Ok(Json(json!({})))
}

async fn unprotect(
    State(services): State<Arc<Services>>,
    _admin: Admin,
    Path(media_id): Path<String>,
) -> Result<Json<Value>> {
    services.media.set_protected(&media_id, false).await?;
    Ok(Json(json!({})))
}

/// `before_ts` of the deletes and the purge: required, in milliseconds.
fn before_ts(params: &Params) -> Result<u64> {
    let raw =
        params.get("before_ts").ok_or_else(|| Error::missing_param("Missing integer query parameter 'before_ts'"))?;
    let value: u64 =
        raw.parse().map_err(|_| Error::invalid_param("Query parameter before_ts must be a positive integer."))?;
    // Dec 1970 in milliseconds, Aug 2920 in seconds (Synapse's check).
    if value < 30_000_000_000 {
        return Err(Error::invalid_param(
            "Query parameter before_ts you provided is from the year 1970. Double check that you are providing a \
             timestamp in milliseconds.",
        ));
    }
    Ok(value)
}

async fn delete_unused(
    State(services): State<Arc<Services>>,
    Admin(admin): Admin,
    Query(params): Query<Params>,
) -> Result<Json<Value>> {
    let before_ms = before_ts(&params)?;
    let size_gt = number(params.get("size_gt").map(String::as_str), "size_gt", 0)? as u64;
    let keep_profiles = match params.get("keep_profiles").map(String::as_str) {
        None | Some("true") => true,
        Some("false") => false,
        Some(_) => return Err(Error::invalid_param("keep_profiles must be true or false")),
    };
    let keep = if keep_profiles { media::avatars(&services).await? } else { Default::default() };
    let deleted = services.media.delete_unused(Unused { before_ms, size_gt, keep }).await?;
    tracing::info!(admin = %admin.user_id, before_ms, size_gt, keep_profiles, deleted = deleted.len(), "old media deleted");
    Ok(Json(json!({"total": deleted.len(), "deleted_media": deleted})))
}

async fn delete_unused_legacy(
    state: State<Arc<Services>>,
    admin: Admin,
    Path(server): Path<String>,
    params: Query<Params>,
) -> Result<Json<Value>> {
    if server != state.config.server_name.as_str() {
        return Err(only_local());
    }
    delete_unused(state, admin, params).await
}

async fn info(
    State(services): State<Arc<Services>>,
    _admin: Admin,
    Path((server, media_id)): Path<(String, String)>,
) -> Result<Json<Value>> {
    let server = server_name(&server)?;
    let unknown = || Error::not_found("Unknown media");
    let info = if server == services.config.server_name {
        let media = services.media.local_media(&media_id).await?.ok_or_else(unknown)?;
        json!({
            "media_origin": null,
            "user_id": media.record.uploader,
            "media_id": media.media_id,
            "media_type": media.record.content_type.as_deref().unwrap_or("application/octet-stream"),
            "media_length": media.record.size,
            "upload_name": media.record.filename,
            "created_ts": media.record.created_ms,
            "filesystem_id": null,
            "url_cache": null,
            "last_access_ts": media.last_access_ms,
            "quarantined_by": media.quarantined_by,
            "authenticated": !media.record.legacy_access,
            "safe_from_quarantine": media.protected,
            "sha256": media.record.sha256,
        })
    } else {
        let media = services.media.cached_remote_media(server, &media_id).await?.ok_or_else(unknown)?;
        json!({
            "media_origin": server,
            "user_id": null,
            "media_id": media_id,
            "media_type": media.record.content_type.as_deref().unwrap_or("application/octet-stream"),
            "media_length": media.record.size,
            "upload_name": media.record.filename,
            "created_ts": null,
            "filesystem_id": null,
            "url_cache": null,
            "last_access_ts": media.record.last_used_ms,
            "quarantined_by": media.quarantined_by,
            "authenticated": true,
            "safe_from_quarantine": null,
            "sha256": media.record.sha256,
        })
    };
    Ok(Json(json!({"media_info": info})))
}

async fn delete_one(
    State(services): State<Arc<Services>>,
    Admin(admin): Admin,
    Path((server, media_id)): Path<(String, String)>,
) -> Result<Json<Value>> {
    if server != services.config.server_name.as_str() {
        return Err(only_local());
    }
    let deleted = services.media.delete_local(vec![media_id.clone()]).await?;
    if deleted.is_empty() {
        return Err(Error::not_found("Unknown media"));
    }
    tracing::info!(admin = %admin.user_id, media_id, "media deleted by an admin");
    Ok(Json(json!({"total": deleted.len(), "deleted_media": deleted})))
}

async fn purge_cache(
    State(services): State<Arc<Services>>,
    _admin: Admin,
    Query(params): Query<Params>,
) -> Result<Json<Value>> {
    let before_ms = before_ts(&params)?;
    let deleted = services.media.purge_remote_cache(before_ms).await?;
    Ok(Json(json!({"deleted": deleted})))
}
