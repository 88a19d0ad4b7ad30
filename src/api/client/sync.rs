//! `GET /sync`: the handler passes the request to the sync service.

use std::sync::Arc;

use axum::{Json, Router, extract::State};
use ruma::api::{OutgoingResponseExt, client::sync::sync_events};
use serde_json::Value;

use crate::{
    Error, Result,
    api::extract::Ruma,
    service::{
        Services, metrics,
        sync::{self, SyncRequest},
    },
};

/// The unstable name of `use_state_after` (MSC4222), which clients sent before v1.16.
const UNSTABLE_USE_STATE_AFTER: &str = "org.matrix.msc4222.use_state_after=true";

/// Ruma leaves `limited` out of a timeline when it is `false`, which the spec allows, but
/// Synapse always sends it and clients and Complement read it (issue #14). So, as for
/// `/capabilities`, this route is plain axum around the same extractor, and the serialised
/// response gets `limited: false` written back into every timeline that lacks it.
pub fn routes(mut router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    use ruma::api::{Metadata, path_builder::PathBuilder};
    for path in <sync_events::v3::Request as Metadata>::PATH_BUILDER.all_paths() {
        router = router.route(path, axum::routing::get(sync_events));
    }
    router
}

async fn sync_events(
    State(services): State<Arc<Services>>,
    request: Ruma<sync_events::v3::Request>,
) -> Result<Json<Value>> {
    let sender = request.sender()?;
    let _open = metrics::global().sync_started();
    let (user, device) = (sender.user_id.clone(), sender.device_id.clone());
    let unstable_state_after =
        request.raw_query.as_deref().is_some_and(|q| q.split('&').any(|pair| pair == UNSTABLE_USE_STATE_AFTER));
    let body = request.body;
    let sync_request = SyncRequest {
        filter: body.filter,
        since: body.since,
        full_state: body.full_state,
        timeout: body.timeout,
        set_presence: body.set_presence,
        use_state_after: body.use_state_after || unstable_state_after,
    };
    let response = sync::sync(&services, &user, &device, sync_request).await?;
    let http = response
        .try_into_http_response::<Vec<u8>>()
        .map_err(|e| Error::internal(format!("could not serialize response: {e}")))?;
    let mut json: Value = serde_json::from_slice(http.body())
        .map_err(|e| Error::internal(format!("could not re-read the sync response: {e}")))?;
    add_limited_false(&mut json);
    Ok(Json(json))
}

/// Writes `"limited": false` into every joined and left room's timeline that lacks `limited`.
fn add_limited_false(response: &mut Value) {
    for section in ["join", "leave"] {
        let Some(rooms) = response.pointer_mut(&format!("/rooms/{section}")).and_then(Value::as_object_mut) else {
            continue;
        };
        for room in rooms.values_mut() {
            let Some(room) = room.as_object_mut() else { continue };
            let timeline = room.entry("timeline").or_insert_with(|| Value::Object(Default::default()));
            if let Some(timeline) = timeline.as_object_mut() {
                timeline.entry("limited").or_insert(Value::Bool(false));
            }
        }
    }
}
