//! Invites and leaves from other servers: `PUT /invite` (v1, v2), `GET /make_leave`,
//! `PUT /send_leave` (v1, v2). The checks and the work are in
//! `service::federation::membership`.

use std::sync::Arc;

use axum::{Json, Router, extract::State, routing::put};
use http::StatusCode;
use ruma::{
    RoomVersionId,
    api::{
        error::{ErrorKind, IncompatibleRoomVersionErrorData},
        federation::membership::{create_invite, create_leave_event, prepare_leave_event},
    },
};
use serde_json::{Value, json};

use crate::{
    Error, Result,
    api::{RumaRouter, client::discovery::ROOM_VERSIONS, extract::Ruma},
    service::{Services, federation::membership},
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma(invite_v1)
        .ruma(invite_v2)
        .ruma(make_leave)
        .ruma(send_leave_v2)
        // ruma defines only v2 of `send_leave`; v1 takes the same request.
        .route("/_matrix/federation/v1/send_leave/{room_id}/{event_id}", put(send_leave_v1))
}

fn raw(json: &ruma::CanonicalJsonObject) -> Result<Box<serde_json::value::RawValue>> {
    serde_json::value::to_raw_value(json).map_err(|e| Error::internal(e.to_string()))
}

/// `400 M_INCOMPATIBLE_ROOM_VERSION` for a room version this server cannot take part in.
fn check_version(version: &RoomVersionId) -> Result<()> {
    if ROOM_VERSIONS.contains(version) {
        return Ok(());
    }
    Err(Error::new(
        StatusCode::BAD_REQUEST,
        ErrorKind::IncompatibleRoomVersion(IncompatibleRoomVersionErrorData::new(version.clone())),
        format!("This server does not support room version {version}"),
    ))
}

async fn invite_v2(
    services: Arc<Services>,
    request: Ruma<create_invite::v2::Request>,
) -> Result<create_invite::v2::Response> {
    let origin = request.origin()?;
    let body = &request.body;
    check_version(&body.room_version)?;
    let signed = membership::receive_invite(
        &services,
        origin,
        &body.room_id,
        &body.event_id,
        body.room_version.clone(),
        &body.event,
        &body.invite_room_state,
    )
    .await?;
    Ok(create_invite::v2::Response::new(raw(&signed)?))
}

/// v1 carries the event itself as the body (room versions 1 and 2; it implies version 1).
async fn invite_v1(
    services: Arc<Services>,
    request: Ruma<create_invite::v1::Request>,
) -> Result<create_invite::v1::Response> {
    let origin = request.origin()?;
    let body = &request.body;
    let event: Box<serde_json::value::RawValue> = serde_json::from_slice(&request.raw_body)
        .map_err(|e| Error::bad_json(format!("The body is not an event: {e}")))?;
    let signed = membership::receive_invite(
        &services,
        origin,
        &body.room_id,
        &body.event_id,
        RoomVersionId::V1,
        &event,
        &body.unsigned.invite_room_state,
    )
    .await?;
    // The spec's answer is `[200, {"event": ...}]`; ruma writes `[200, body]` with the body as
    // given, so the object around the event is made here.
    let body =
        serde_json::value::to_raw_value(&json!({ "event": signed })).map_err(|e| Error::internal(e.to_string()))?;
    Ok(create_invite::v1::Response::new(body))
}

async fn make_leave(
    services: Arc<Services>,
    request: Ruma<prepare_leave_event::v1::Request>,
) -> Result<prepare_leave_event::v1::Response> {
    let origin = request.origin()?;
    let body = &request.body;
    let (version, template) = membership::make_leave(&services, origin, &body.room_id, &body.user_id).await?;
    Ok(prepare_leave_event::v1::Response::new(Some(version), raw(&template)?))
}

async fn send_leave_v2(
    services: Arc<Services>,
    request: Ruma<create_leave_event::v2::Request>,
) -> Result<create_leave_event::v2::Response> {
    let origin = request.origin()?;
    let body = &request.body;
    membership::receive_leave(&services, origin, &body.room_id, &body.event_id, &body.pdu).await?;
    Ok(create_leave_event::v2::Response::new())
}

/// v1 answers `[200, {}]`.
async fn send_leave_v1(
    State(services): State<Arc<Services>>,
    request: Ruma<create_leave_event::v2::Request>,
) -> Result<Json<Value>> {
    let origin = request.origin()?;
    let body = &request.body;
    membership::receive_leave(&services, origin, &body.room_id, &body.event_id, &body.pdu).await?;
    Ok(Json(json!([200, {}])))
}
