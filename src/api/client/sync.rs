//! `GET /sync`: the handler passes the request to the sync service.

use std::{borrow::Cow, collections::BTreeMap, sync::Arc};

use axum::{
    Router,
    extract::State,
    http::header,
    response::{IntoResponse, Response},
};
use ruma::api::{OutgoingResponseExt, client::sync::sync_events};
use serde_json::value::RawValue;

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
) -> Result<Response> {
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
    let body = add_limited_false(http.body())
        .map_err(|e| Error::internal(format!("could not re-read the sync response: {e}")))?
        .unwrap_or_else(|| http.body().clone());
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// A JSON object read without parsing its values (they stay slices of the text), keys in
/// order as `serde_json::Value` keeps them.
type Object<'a> = BTreeMap<Cow<'a, str>, &'a RawValue>;

/// The serialised response with `"limited": false` written into every joined and left room's
/// timeline that lacks `limited`, or `None` when nothing lacks it. Only the objects on the way
/// to the timelines are read; events are copied as they are, never parsed into a tree.
fn add_limited_false(body: &[u8]) -> serde_json::Result<Option<Vec<u8>>> {
    let mut top: Object<'_> = serde_json::from_slice(body)?;
    let Some(rooms) = top.get("rooms").copied() else { return Ok(None) };
    let mut sections: Object<'_> = serde_json::from_str(rooms.get())?;
    let mut changed_sections = Vec::new();
    for section in ["join", "leave"] {
        let Some(raw) = sections.get(section).copied() else { continue };
        if let Some(fixed) = fix_rooms(raw)? {
            changed_sections.push((section, fixed));
        }
    }
    if changed_sections.is_empty() {
        return Ok(None);
    }
    for (section, fixed) in &changed_sections {
        sections.insert(Cow::Borrowed(*section), fixed);
    }
    let rooms = serde_json::value::to_raw_value(&sections)?;
    top.insert(Cow::Borrowed("rooms"), &rooms);
    serde_json::to_vec(&top).map(Some)
}

/// One section's rooms (room ID to room), with `limited` added where missing.
fn fix_rooms(raw: &RawValue) -> serde_json::Result<Option<Box<RawValue>>> {
    let mut rooms: Object<'_> = serde_json::from_str(raw.get())?;
    let limited_false = RawValue::from_string("false".to_owned())?;
    let mut fixed = Vec::new();
    for (room_id, room) in &rooms {
        let mut fields: Object<'_> = serde_json::from_str(room.get())?;
        let timeline = match fields.get("timeline") {
            Some(timeline) => {
                let mut timeline: Object<'_> = serde_json::from_str(timeline.get())?;
                if timeline.contains_key("limited") {
                    continue;
                }
                timeline.insert(Cow::Borrowed("limited"), &limited_false);
                serde_json::value::to_raw_value(&timeline)?
            }
            None => RawValue::from_string(r#"{"limited":false}"#.to_owned())?,
        };
        fields.insert(Cow::Borrowed("timeline"), &timeline);
        fixed.push((room_id.clone(), serde_json::value::to_raw_value(&fields)?));
    }
    if fixed.is_empty() {
        return Ok(None);
    }
    for (room_id, room) in &fixed {
        rooms.insert(room_id.clone(), room);
    }
    serde_json::value::to_raw_value(&rooms).map(Some)
}
