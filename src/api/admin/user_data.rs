//! Synapse's admin API for what a user keeps besides their profile:
//! `v1/users/{userId}/accountdata` and `v1/users/{userId}/pushers` (what an admin checks after
//! an erasure, among other things).

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Path, State},
    routing::get,
};
use serde_json::{Map, Value, json};

use super::auth::{Admin, local_user};
use crate::{Error, Result, service::Services};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .route("/_synapse/admin/v1/users/{user_id}/accountdata", get(account_data))
        .route("/_synapse/admin/v1/users/{user_id}/pushers", get(pushers))
}

async fn known_user(services: &Services, user_id: &str) -> Result<ruma::OwnedUserId> {
    let user = local_user(services, user_id)?;
    if !services.accounts.exists(&user).await? {
        return Err(Error::not_found("User not found"));
    }
    Ok(user)
}

/// `{"account_data": {"global": {type: content}, "rooms": {room: {type: content}}}}`.
async fn account_data(
    State(services): State<Arc<Services>>,
    _admin: Admin,
    Path(user_id): Path<String>,
) -> Result<Json<Value>> {
    let user = known_user(&services, &user_id).await?;
    let (mut global, mut rooms) = (Map::new(), Map::new());
    for (room, kind, content) in services.account_data.all(&user).await? {
        let content: Value = serde_json::from_str(content.get()).unwrap_or(Value::Null);
        if room.is_empty() {
            global.insert(kind, content);
        } else if let Value::Object(entries) = rooms.entry(room).or_insert_with(|| json!({})) {
            entries.insert(kind, content);
        }
    }
    Ok(Json(json!({"account_data": {"global": global, "rooms": rooms}})))
}

/// `{"pushers": [...], "total": n}`.
async fn pushers(
    State(services): State<Arc<Services>>,
    _admin: Admin,
    Path(user_id): Path<String>,
) -> Result<Json<Value>> {
    let user = known_user(&services, &user_id).await?;
    let pushers: Vec<Value> = services
        .push
        .pushers(&user)
        .await?
        .into_iter()
        .map(|stored| {
            let mut pusher = serde_json::to_value(&stored.pusher).unwrap_or(Value::Null);
            if let Some(object) = pusher.as_object_mut() {
                object.insert("pushkey_ts".to_owned(), json!(stored.pushkey_ts));
            }
            pusher
        })
        .collect();
    Ok(Json(json!({"total": pushers.len(), "pushers": pushers})))
}
