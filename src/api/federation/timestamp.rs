//! `GET /_matrix/federation/v1/timestamp_to_event/{roomId}`: the event nearest to a time that
//! the asking server may see (by the room's history visibility for servers).

use std::sync::Arc;

use axum::Router;
use ruma::{
    MilliSecondsSinceUnixEpoch, UInt,
    api::{Direction, federation::event::get_event_by_timestamp},
};

use crate::{
    Error, Result,
    api::{RumaRouter, extract::Ruma},
    service::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(timestamp_to_event)
}

async fn timestamp_to_event(
    services: Arc<Services>,
    request: Ruma<get_event_by_timestamp::v1::Request>,
) -> Result<get_event_by_timestamp::v1::Response> {
    let origin = request.origin()?;
    let body = &request.body;
    let forward = matches!(body.dir, Direction::Forward);
    let (event_id, ts) = services
        .rooms
        .event_at_timestamp_for_server(origin, &body.room_id, u64::from(body.ts.0), forward)
        .await?
        .ok_or_else(|| Error::not_found("No event found in that direction from the given timestamp"))?;
    Ok(get_event_by_timestamp::v1::Response::new(event_id, MilliSecondsSinceUnixEpoch(UInt::new_saturating(ts))))
}
