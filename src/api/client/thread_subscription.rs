//! Thread subscriptions (MSC4306): `GET`, `PUT` and `DELETE` on
//! `/_matrix/client/unstable/io.element.msc4306/rooms/{roomId}/thread/{threadRootId}/subscription`,
//! and MSC4308's pagination of subscription changes,
//! `GET /_matrix/client/unstable/io.element.msc4308/thread_subscriptions?dir=b&from&to&limit`.
//! Ruma has no types for them, so these are plain axum routes around the same token check as
//! every other endpoint.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    routing::{get, put},
};
use http::{StatusCode, request::Parts};
use ruma::{OwnedEventId, OwnedRoomId, api::error::ErrorKind};
use serde_json::{Value, json};

use crate::{
    Error, Result,
    api::extract::{access_token, client_ip, read_body},
    service::{Services, sessions::Authenticated, sliding_sync, thread_subscriptions},
};

const PATH: &str = "/_matrix/client/unstable/io.element.msc4306/rooms/{room_id}/thread/{thread_root_id}/subscription";

const CHANGES_PATH: &str = "/_matrix/client/unstable/io.element.msc4308/thread_subscriptions";

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.route(PATH, put(subscribe).get(read).delete(unsubscribe)).route(CHANGES_PATH, get(changes))
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

#[derive(serde::Deserialize)]
struct ChangesQuery {
    dir: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<String>,
}

/// The user's thread subscription changes, newest first, backwards from `from` (inclusive; the
/// newest without it) down to `to` (exclusive): the sliding sync extension's `prev_batch` pages
/// here, as Synapse serves it. Tokens are account data stream positions.
async fn changes(
    State(services): State<Arc<Services>>,
    Query(query): Query<ChangesQuery>,
    parts: Parts,
) -> Result<Json<Value>> {
    let caller = caller(&services, &parts).await?;
    if query.dir.as_deref() != Some("b") {
        return Err(Error::invalid_param("`dir` must be `b`"));
    }
    let number = |value: Option<&str>, name: &str| {
        value
            .map(|v| v.parse::<u64>().map_err(|_| Error::invalid_param(format!("`{name}` is not a valid token"))))
            .transpose()
    };
    let limit = number(query.limit.as_deref(), "limit")?.unwrap_or(100);
    if limit == 0 {
        return Err(Error::invalid_param("limit must be greater than 0"));
    }
    let limit = usize::try_from(limit).unwrap_or(usize::MAX).min(sliding_sync::thread_subscriptions::MAX_LIMIT);
    let upto = match number(query.from.as_deref(), "from")? {
        Some(from) => from,
        None => services.account_data.position().await?,
    };
    let since = number(query.to.as_deref(), "to")?;
    let page = sliding_sync::thread_subscriptions::page(&services, &caller.user_id, since, upto, limit).await?;
    let Some((mut body, more)) = page else { return Ok(Json(json!({}))) };
    if let Some(more) = more {
        body.insert("end".to_owned(), json!(more.to_string()));
    }
    Ok(Json(Value::Object(body)))
}
