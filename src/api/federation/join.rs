//! Joins of other servers' users into rooms this server is in: `GET make_join` (the template)
//! and `PUT send_join` (v2, and the deprecated v1 that servers and Complement still use).

use std::sync::Arc;

use axum::{Json, Router, extract::State};
use ruma::api::federation::membership::{create_join_event, prepare_join_event};

use crate::{
    Error, Result,
    api::{RumaRouter, extract::Ruma},
    service::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma(make_join)
        .ruma(send_join_v2)
        .route("/_matrix/federation/v1/send_join/{room_id}/{event_id}", axum::routing::put(send_join_v1))
}

async fn make_join(
    services: Arc<Services>,
    request: Ruma<prepare_join_event::v1::Request>,
) -> Result<prepare_join_event::v1::Response> {
    let origin = request.origin()?;
    let body = &request.body;
    if body.user_id.server_name() != origin {
        return Err(Error::forbidden("The user to join is not a user of the requesting server"));
    }
    services.rooms.check_server_allowed(&body.room_id, origin).await?;
    // Without `ver` the joining server speaks only version 1.
    let supported = if body.ver.is_empty() { vec![ruma::RoomVersionId::V1] } else { body.ver.clone() };
    let (version, template) = services.rooms.join_template(&body.room_id, &body.user_id, &supported).await?;
    let raw = serde_json::value::to_raw_value(&template).map_err(|e| Error::internal(e.to_string()))?;
    let mut response = prepare_join_event::v1::Response::new(raw);
    response.room_version = Some(version);
    Ok(response)
}

/// Accepts the join and gathers what the joining server needs.
async fn send_join(
    services: &Services,
    origin: &ruma::ServerName,
    room_id: &ruma::RoomId,
    event_id: &ruma::EventId,
    pdu: &serde_json::value::RawValue,
) -> Result<create_join_event::v2::RoomState> {
    services.rooms.check_server_allowed(room_id, origin).await?;
    let event = services.rooms.accept_membership_from(origin, room_id, event_id, pdu, "join").await?;
    services.federation.sender.relay(&services.rooms, room_id, event_id, origin).await?;
    let found = services.rooms.state_for_server(event_id).await?;
    let mut room_state = create_join_event::v2::RoomState::new();
    room_state.state = found.state;
    room_state.auth_chain = found.auth_chain;
    room_state.event = Some(crate::service::rooms::federation_join::federation_json(&event)?);
    Ok(room_state)
}

async fn send_join_v2(
    services: Arc<Services>,
    request: Ruma<create_join_event::v2::Request>,
) -> Result<create_join_event::v2::Response> {
    let origin = request.origin()?;
    let body = &request.body;
    let room_state = send_join(&services, origin, &body.room_id, &body.event_id, &body.pdu).await?;
    Ok(create_join_event::v2::Response::new(room_state))
}

/// `PUT /_matrix/federation/v1/send_join/{roomId}/{eventId}`: the deprecated version, which
/// the spec still defines and ruma 0.17 no longer ships. The request is v2's; the answer is
/// `[200, room_state]`.
async fn send_join_v1(
    State(services): State<Arc<Services>>,
    request: Ruma<create_join_event::v2::Request>,
) -> Result<Json<(u16, create_join_event::v2::RoomState)>> {
    let origin = request.origin()?;
    let body = &request.body;
    let room_state = send_join(&services, origin, &body.room_id, &body.event_id, &body.pdu).await?;
    Ok(Json((200, room_state)))
}
