//! Thread subscriptions (MSC4306): `GET`, `PUT` and `DELETE` on
//! `/_matrix/client/unstable/io.element.msc4306/rooms/{roomId}/thread/{threadRootId}/subscription`.
//! Ruma has no types for them, so these are plain axum routes around the same token check as
//! every other endpoint.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Path, State},
    routing::put,
};
use http::{StatusCode, request::Parts};
use ruma::{OwnedEventId, OwnedRoomId, api::error::ErrorKind};
use serde_json::{Value, json};

use crate::{
    Error, Result,
    api::extract::{access_token, client_ip, read_body},
    service::{Services, sessions::Authenticated, thread_subscriptions},
};

const PATH: &str = "/_matrix/client/unstable/io.element.msc4306/rooms/{room_id}/thread/{thread_root_id}/subscription";

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.route(PATH, put(subscribe).get(read).delete(unsubscribe))
}

async fn caller(services: &Services, parts: &Parts) -> Result<Authenticated> {
    let token = access_token(parts)?
        .ok_or_else(|| Error::new(StatusCode::UNAUTHORIZED, ErrorKind::MissingToken, "Missing access token"))?;
    let caller = services.sessions.authenticate(&token, client_ip(&parts.extensions)).await?;
    crate::api::guest::check(&caller, &parts.method, parts.uri.path())?;
    Ok(caller)
}

fn ids(room: &str, root: &str) -> Result<(OwnedRoomId, OwnedEventId)> {
    let room = OwnedRoomId::try_from(room).map_err(|_| Error::invalid_param("Invalid room ID"))?;
    let root = OwnedEventId::try_from(root).map_err(|_| Error::invalid_param("Invalid event ID"))?;
    Ok((room, root))
}

async fn read(
    State(services): State<Arc<Services>>,
    Path((room, root)): Path<(String, String)>,
    parts: Parts,
) -> Result<Json<Value>> {
    let caller = caller(&services, &parts).await?;
    let (room, root) = ids(&room, &root)?;
    match thread_subscriptions::get(&services, &caller.user_id, &room, &root).await? {
        Some(automatic) => Ok(Json(json!({ "automatic": automatic }))),
        None => Err(Error::not_found("Not subscribed to this thread")),
    }
}

async fn subscribe(
    State(services): State<Arc<Services>>,
    Path((room, root)): Path<(String, String)>,
    request: axum::extract::Request,
) -> Result<Json<Value>> {
    let (parts, body) = request.into_parts();
    let caller = caller(&services, &parts).await?;
    let (room, root) = ids(&room, &root)?;
    let bytes = read_body(body, services.config.max_request_size as usize, &parts.headers).await?;
    let body: Value = if bytes.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::new(StatusCode::BAD_REQUEST, ErrorKind::NotJson, format!("Invalid JSON: {e}")))?
    };
    let cause = match body.get("automatic") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) => {
            Some(OwnedEventId::try_from(id.as_str()).map_err(|_| Error::invalid_param("Invalid automatic event ID"))?)
        }
        Some(_) => return Err(Error::bad_json("`automatic` must be an event ID")),
    };
    thread_subscriptions::subscribe(&services, &caller.user_id, &room, &root, cause).await?;
    Ok(Json(json!({})))
}

async fn unsubscribe(
    State(services): State<Arc<Services>>,
    Path((room, root)): Path<(String, String)>,
    parts: Parts,
) -> Result<Json<Value>> {
    let caller = caller(&services, &parts).await?;
    let (room, root) = ids(&room, &root)?;
    thread_subscriptions::unsubscribe(&services, &caller.user_id, &room, &root).await?;
    Ok(Json(json!({})))
}
