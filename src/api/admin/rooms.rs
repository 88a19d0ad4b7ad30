//! Synapse's admin API for rooms: `v1/rooms` (list with `order_by`, `dir`, `search_term` and
//! paging), a room's details, members and state, `v1/rooms/{roomId}/block`, and deleting a room
//! (`DELETE v1/rooms/{roomId}` at once, `DELETE v2/rooms/{roomId}` in the background with
//! `v2/rooms/{roomId}/delete_status` and `v2/rooms/delete_status/{deleteId}`).

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    routing::{delete, get},
};
use ruma::OwnedRoomId;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    auth::{Admin, AdminJson},
    users::number,
};
use crate::{
    Error, Result,
    service::{Services, admin::rooms, random_string},
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .route("/_synapse/admin/v1/rooms", get(list))
        .route("/_synapse/admin/v1/rooms/{room_id}", get(details).delete(delete_now))
        .route("/_synapse/admin/v1/rooms/{room_id}/members", get(members))
        .route("/_synapse/admin/v1/rooms/{room_id}/state", get(state))
        .route("/_synapse/admin/v1/rooms/{room_id}/block", get(block_status).put(set_block))
        .route("/_synapse/admin/v2/rooms/{room_id}", delete(delete_in_background))
        .route("/_synapse/admin/v2/rooms/{room_id}/delete_status", get(status_of_room))
        .route("/_synapse/admin/v2/rooms/delete_status/{delete_id}", get(status_by_id))
}

fn room_id(raw: &str) -> Result<OwnedRoomId> {
    OwnedRoomId::try_from(raw).map_err(|e| Error::invalid_param(format!("Invalid room ID: {e}")))
}

/// A room named in a path that this server knows (`404 M_NOT_FOUND` otherwise).
async fn known_room(services: &Services, raw: &str) -> Result<OwnedRoomId> {
    let room = room_id(raw)?;
    services.rooms.version(&room).await?.ok_or_else(|| Error::not_found("Room not found"))?;
    Ok(room)
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    limit: Option<String>,
    #[serde(default)]
    order_by: Option<String>,
    #[serde(default)]
    dir: Option<String>,
    #[serde(default)]
    search_term: Option<String>,
}

async fn list(
    State(services): State<Arc<Services>>,
    _admin: Admin,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>> {
    let from = number(query.from.as_deref(), "from", 0)?;
    let limit = number(query.limit.as_deref(), "limit", 100)?;
    let backwards = match query.dir.as_deref() {
        None | Some("f") => false,
        Some("b") => true,
        Some(_) => return Err(Error::invalid_param("dir must be f or b")),
    };
    let mut all = rooms::all(&services).await?;
    if let Some(term) = query.search_term.as_deref().filter(|t| !t.is_empty()) {
        let term = term.to_lowercase();
        all.retain(|room| {
            ["name", "canonical_alias", "room_id"]
                .iter()
                .any(|key| room[key].as_str().is_some_and(|value| value.to_lowercase().contains(&term)))
        });
    }
    rooms::order(&mut all, query.order_by.as_deref().unwrap_or("name"), backwards)?;
    let total = all.len();
    let page: Vec<Value> = all.into_iter().skip(from).take(limit).collect();
    let mut body = json!({"rooms": page, "offset": from, "total_rooms": total});
    if from + limit < total {
        body["next_batch"] = json!(from + limit);
    }
    if from > 0 {
        body["prev_batch"] = json!(from.saturating_sub(limit));
    }
    Ok(Json(body))
}

async fn details(State(services): State<Arc<Services>>, _admin: Admin, Path(raw): Path<String>) -> Result<Json<Value>> {
    let room = room_id(&raw)?;
    rooms::details(&services, &room).await?.map(Json).ok_or_else(|| Error::not_found("Room not found"))
}

async fn members(State(services): State<Arc<Services>>, _admin: Admin, Path(raw): Path<String>) -> Result<Json<Value>> {
    let room = known_room(&services, &raw).await?;
    let members = services.rooms.joined_members(&room).await?;
    Ok(Json(json!({"total": members.len(), "members": members})))
}

async fn state(State(services): State<Arc<Services>>, _admin: Admin, Path(raw): Path<String>) -> Result<Json<Value>> {
    let room = known_room(&services, &raw).await?;
    let state: Vec<Value> =
        services.rooms.current_state(&room).await?.iter().map(|pdu| pdu.to_client_event()).collect();
    Ok(Json(json!({"state": state})))
}

async fn block_status(
    State(services): State<Arc<Services>>,
    _admin: Admin,
    Path(raw): Path<String>,
) -> Result<Json<Value>> {
    let room = room_id(&raw)?;
    Ok(Json(match rooms::is_blocked(&services, &room).await? {
        Some(user_id) => json!({"block": true, "user_id": user_id}),
        None => json!({"block": false}),
    }))
}

#[derive(Deserialize)]
struct Block {
    block: bool,
}

async fn set_block(
    State(services): State<Arc<Services>>,
    Admin(admin): Admin,
    Path(raw): Path<String>,
    AdminJson(body): AdminJson<Block>,
) -> Result<Json<Value>> {
    let room = room_id(&raw)?;
    rooms::set_blocked(&services, &room, body.block.then_some(admin.user_id.as_ref())).await?;
    Ok(Json(json!({"block": body.block})))
}

/// The body of both deletes. `purge` (Synapse's default: true) removes the room's events from
/// disk (see docs/admin-guide.md); `new_room_user_id` (a user of this server), `room_name` and
/// `message` make a room the local members are moved to.
#[derive(Deserialize)]
struct DeleteRoom {
    #[serde(default)]
    block: bool,
    #[serde(default = "purge_by_default")]
    purge: bool,
    #[serde(default)]
    new_room_user_id: Option<String>,
    #[serde(default)]
    room_name: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

fn purge_by_default() -> bool {
    true
}

/// The room to move members to, if asked for (`400` for a user of another server).
fn new_room(services: &Services, body: &DeleteRoom) -> Result<Option<rooms::NewRoom>> {
    let Some(raw) = body.new_room_user_id.as_deref() else { return Ok(None) };
    let creator =
        ruma::OwnedUserId::try_from(raw).map_err(|e| Error::invalid_param(format!("Invalid new_room_user_id: {e}")))?;
    if !services.accounts.is_local(&creator) {
        return Err(Error::invalid_param(format!("User must be our own: {creator}")));
    }
    Ok(Some(rooms::NewRoom { creator, name: body.room_name.clone(), message: body.message.clone() }))
}

async fn delete_now(
    State(services): State<Arc<Services>>,
    Admin(admin): Admin,
    Path(raw): Path<String>,
    AdminJson(body): AdminJson<DeleteRoom>,
) -> Result<Json<Value>> {
    let room = room_id(&raw)?;
    let new_room = new_room(&services, &body)?;
    let deleted = rooms::delete(&services, &room, &admin.user_id, (body.block, body.purge), new_room).await?;
    Ok(Json(deleted.to_json()))
}

/// Starts the deletion in a task of its own, so a client that goes away does not stop it.
async fn delete_in_background(
    State(services): State<Arc<Services>>,
    Admin(admin): Admin,
    Path(raw): Path<String>,
    AdminJson(body): AdminJson<DeleteRoom>,
) -> Result<Json<Value>> {
    let room = room_id(&raw)?;
    let new_room = new_room(&services, &body)?;
    if !body.block && services.rooms.version(&room).await?.is_none() {
        return Err(Error::not_found("Room not found"));
    }
    let delete_id = random_string(16);
    services.room_deletions.record(&delete_id, &room, json!({"status": "active"}));
    let (id, block, purge) = (delete_id.clone(), body.block, body.purge);
    tokio::spawn(async move {
        let status = match rooms::delete(&services, &room, &admin.user_id, (block, purge), new_room).await {
            Ok(deleted) => json!({"status": "complete", "shutdown_room": deleted.to_json()}),
            Err(error) => json!({"status": "failed", "error": error.to_string()}),
        };
        services.room_deletions.record(&id, &room, status);
    });
    Ok(Json(json!({"delete_id": delete_id})))
}

async fn status_of_room(
    State(services): State<Arc<Services>>,
    _admin: Admin,
    Path(raw): Path<String>,
) -> Result<Json<Value>> {
    let room = room_id(&raw)?;
    let results: Vec<Value> = services
        .room_deletions
        .of_room(&room)
        .into_iter()
        .map(|(id, mut status)| {
            status["delete_id"] = json!(id);
            status
        })
        .collect();
    if results.is_empty() {
        return Err(Error::not_found("No deletion of this room is known"));
    }
    Ok(Json(json!({"results": results})))
}

async fn status_by_id(
    State(services): State<Arc<Services>>,
    _admin: Admin,
    Path(delete_id): Path<String>,
) -> Result<Json<Value>> {
    let (room, mut status) =
        services.room_deletions.by_id(&delete_id).ok_or_else(|| Error::not_found("No such deletion"))?;
    status["room_id"] = json!(room);
    Ok(Json(status))
}
