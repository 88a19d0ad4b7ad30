//! Knocks of other servers' users on rooms this server is in: `GET make_knock` and
//! `PUT send_knock` (v1). The checks and the work are in `service::federation::knock`.

use std::sync::Arc;

use axum::Router;
use ruma::api::federation::membership::{create_knock_event, prepare_knock_event};

use crate::{
    Error, Result,
    api::{RumaRouter, extract::Ruma},
    service::{Services, federation::knock},
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(make_knock).ruma(send_knock)
}

async fn make_knock(
    services: Arc<Services>,
    request: Ruma<prepare_knock_event::v1::Request>,
) -> Result<prepare_knock_event::v1::Response> {
    let origin = request.origin()?;
    let body = &request.body;
    let (version, template) = knock::make_knock(&services, origin, &body.room_id, &body.user_id, &body.ver).await?;
    let raw = serde_json::value::to_raw_value(&template).map_err(|e| Error::internal(e.to_string()))?;
    Ok(prepare_knock_event::v1::Response::new(version, raw))
}

async fn send_knock(
    services: Arc<Services>,
    request: Ruma<create_knock_event::v1::Request>,
) -> Result<create_knock_event::v1::Response> {
    let origin = request.origin()?;
    let body = &request.body;
    let state = knock::receive_knock(&services, origin, &body.room_id, &body.event_id, &body.pdu).await?;
    Ok(create_knock_event::v1::Response::new(state))
}
