//! `GET /sync`: the handler passes the request to the sync service.

use std::{collections::BTreeMap, sync::Arc};

use axum::{
    Router,
    extract::State,
    http::header,
    response::{IntoResponse, Response},
};
use ruma::{
    OwnedRoomId,
    api::{
        OutgoingResponseExt,
        client::sync::sync_events::{
            self,
            v3::{InvitedRoom, JoinedRoom, KnockedRoom, LeftRoom, Rooms, Timeline},
        },
    },
};
use serde::Serialize;

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
/// `/capabilities`, this route is plain axum around the same extractor, and the rooms part of
/// the response is serialised here with `limited` in every timeline.
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
    let body = serialize(response)?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// The response as JSON, every joined and left room's timeline with its `limited` flag. The
/// rooms are serialised here (each timeline with `limited` written out) and the rest by ruma,
/// so nothing is read back.
fn serialize(mut response: sync_events::v3::Response) -> Result<Vec<u8>> {
    let rooms = std::mem::take(&mut response.rooms);
    let http = response
        .try_into_http_response::<Vec<u8>>()
        .map_err(|e| Error::internal(format!("could not serialize response: {e}")))?;
    let rest = http.into_body();
    if rooms.is_empty() {
        return Ok(rest);
    }
    let mut body = Vec::with_capacity(rest.len() + 64);
    body.extend_from_slice(br#"{"rooms":"#);
    serde_json::to_writer(&mut body, &RoomsOut::new(rooms))
        .map_err(|e| Error::internal(format!("could not serialize rooms: {e}")))?;
    // `rest` is ruma's serialised object: `{}` or `{"key":...}`.
    match rest.strip_prefix(b"{") {
        Some(b"}") | None => body.push(b'}'),
        Some(tail) => {
            body.push(b',');
            body.extend_from_slice(tail);
        }
    }
    Ok(body)
}

/// [`Rooms`] with every joined and left room's timeline serialised with `limited`.
#[derive(Serialize)]
struct RoomsOut {
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    leave: BTreeMap<OwnedRoomId, WithTimeline<LeftRoom>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    join: BTreeMap<OwnedRoomId, WithTimeline<JoinedRoom>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    invite: BTreeMap<OwnedRoomId, InvitedRoom>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    knock: BTreeMap<OwnedRoomId, KnockedRoom>,
}

impl RoomsOut {
    fn new(rooms: Rooms) -> Self {
        let Rooms { leave, join, invite, knock, .. } = rooms;
        Self {
            leave: Self::with_timelines(leave, |room| &mut room.timeline),
            join: Self::with_timelines(join, |room| &mut room.timeline),
            invite,
            knock,
        }
    }

    /// Each room with its timeline taken out, to be written by [`WithTimeline`].
    fn with_timelines<R>(
        rooms: BTreeMap<OwnedRoomId, R>,
        timeline_of: fn(&mut R) -> &mut Timeline,
    ) -> BTreeMap<OwnedRoomId, WithTimeline<R>> {
        rooms
            .into_iter()
            .map(|(id, mut room)| {
                let timeline = std::mem::take(timeline_of(&mut room));
                (id, WithTimeline::new(room, timeline))
            })
            .collect()
    }
}

/// A room whose own `timeline` was taken out (so ruma leaves it out), and the timeline with
/// `limited` always written.
#[derive(Serialize)]
struct WithTimeline<R> {
    #[serde(flatten)]
    room: R,
    timeline: TimelineOut,
}

impl<R> WithTimeline<R> {
    fn new(room: R, mut timeline: Timeline) -> Self {
        // Taken out of the ruma struct, which would leave it out when `false`, and written here.
        let limited = std::mem::take(&mut timeline.limited);
        Self { room, timeline: TimelineOut { limited, timeline } }
    }
}

#[derive(Serialize)]
struct TimelineOut {
    limited: bool,
    #[serde(flatten)]
    timeline: Timeline,
}
