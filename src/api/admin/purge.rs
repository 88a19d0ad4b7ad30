//! Synapse's `purge_history` admin API: `POST /_synapse/admin/v1/purge_history/{roomId}` (and
//! `/{roomId}/{eventId}`) with `purge_up_to_event_id` or `purge_up_to_ts` and
//! `delete_local_events`, answering with a `purge_id`, and
//! `GET /_synapse/admin/v1/purge_history_status/{purgeId}`.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Path, State},
    routing::{get, post},
};
use ruma::{OwnedEventId, OwnedRoomId};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{Admin, AdminJson};
use crate::{
    Error, Result,
    service::{
        Services,
        admin::purge::{self, PurgeUpTo},
    },
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .route("/_synapse/admin/v1/purge_history/{room_id}", post(purge_room_history))
        .route("/_synapse/admin/v1/purge_history/{room_id}/{event_id}", post(purge_history_to_event))
        .route("/_synapse/admin/v1/purge_history_status/{purge_id}", get(status))
}

#[derive(Deserialize)]
struct PurgeBody {
    #[serde(default)]
    delete_local_events: bool,
    #[serde(default)]
    purge_up_to_event_id: Option<String>,
    #[serde(default)]
    purge_up_to_ts: Option<u64>,
}

async fn purge_room_history(
    State(services): State<Arc<Services>>,
    admin: Admin,
    Path(room): Path<String>,
    body: AdminJson<PurgeBody>,
) -> Result<Json<Value>> {
    start(services, admin, room, None, body).await
}

async fn purge_history_to_event(
    State(services): State<Arc<Services>>,
    admin: Admin,
    Path((room, event)): Path<(String, String)>,
    body: AdminJson<PurgeBody>,
) -> Result<Json<Value>> {
    start(services, admin, room, Some(event), body).await
}

async fn start(
    services: Arc<Services>,
    _admin: Admin,
    room: String,
    event_in_path: Option<String>,
    AdminJson(body): AdminJson<PurgeBody>,
) -> Result<Json<Value>> {
    let room = OwnedRoomId::try_from(room).map_err(|e| Error::invalid_param(format!("Invalid room ID: {e}")))?;
    let event = event_in_path.or(body.purge_up_to_event_id);
    let up_to = match (event, body.purge_up_to_ts) {
        (Some(event), _) => PurgeUpTo::Event(
            OwnedEventId::try_from(event).map_err(|e| Error::invalid_param(format!("Invalid event ID: {e}")))?,
        ),
        (None, Some(ts)) => PurgeUpTo::Ts(ts),
        (None, None) => {
            return Err(Error::invalid_param("Give purge_up_to_event_id or purge_up_to_ts"));
        }
    };
    let purge_id = purge::start_purge_history(&services, &room, up_to, body.delete_local_events).await?;
    Ok(Json(json!({"purge_id": purge_id})))
}

async fn status(
    State(services): State<Arc<Services>>,
    _admin: Admin,
    Path(purge_id): Path<String>,
) -> Result<Json<Value>> {
    let record = purge::status(&services, &purge_id).await?;
    let mut out = json!({"status": record.status});
    if let Some(error) = record.error {
        out["error"] = json!(error);
    }
    Ok(Json(out))
}
