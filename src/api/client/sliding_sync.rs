//! `POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync` (simplified sliding sync,
//! MSC4186): the handler passes the request, and its body as sent, to the sliding sync service.

use std::sync::Arc;

use axum::{
    Router,
    body::Body,
    extract::State,
    response::{IntoResponse, Response},
    routing::post,
};
use ruma::api::{Metadata, OutgoingResponseExt, client::sync::sync_events::v5, path_builder::PathBuilder};

use crate::{
    Error, Result,
    api::extract::Ruma,
    service::{Services, sliding_sync},
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    // Routed by hand rather than with `RumaRouter::ruma`: the answer is serialized here so
    // that the knock states ruma 0.17 has no field for can be added to it.
    let mut router = router;
    for path in v5::Request::PATH_BUILDER.all_paths() {
        router = router.route(path, post(sliding_sync));
    }
    router
}

async fn sliding_sync(State(services): State<Arc<Services>>, request: Ruma<v5::Request>) -> Result<Response> {
    let sender = request.sender()?;
    let (user, device) = (sender.user_id.clone(), sender.device_id.clone());
    let reply = sliding_sync::sync(&services, &user, &device, request.body, &request.raw_body).await?;
    let http = reply
        .response
        .try_into_http_response::<Vec<u8>>()
        .map_err(|e| Error::internal(format!("could not serialize response: {e}")))?;
    if reply.knock_states.is_empty() && reply.thread_subscriptions.is_none() {
        return Ok(http.map(Body::from).into_response());
    }
    // Ruma 0.17's `v5::response::Room` lacks MSC4186's `knock_state`: add it to each knocked
    // room's entry of the serialized answer.
    let (parts, body) = http.into_parts();
    let mut json: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| Error::internal(format!("could not re-read response: {e}")))?;
    // MSC4308's extension, which ruma 0.17 lacks too.
    if let Some(part) = reply.thread_subscriptions {
        if !json["extensions"].is_object() {
            json["extensions"] = serde_json::json!({});
        }
        json["extensions"][sliding_sync::thread_subscriptions::EXTENSION] = part;
    }
    for (room_id, events) in reply.knock_states {
        if let Some(room) = json["rooms"].get_mut(room_id.as_str()).and_then(|room| room.as_object_mut()) {
            room.insert("knock_state".to_owned(), serde_json::json!(events));
        }
    }
    let body = serde_json::to_vec(&json).map_err(|e| Error::internal(format!("could not serialize response: {e}")))?;
    Ok(Response::from_parts(parts, Body::from(body)))
}
