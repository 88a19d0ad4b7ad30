//! The read side of the event exchange: `GET /event/{eventId}`, `/state/{roomId}`,
//! `/state_ids/{roomId}`, `/event_auth/{roomId}/{eventId}`, `POST /get_missing_events/{roomId}`,
//! `GET /backfill/{roomId}`, and `GET /query/directory` (local aliases). Access rules (room
//! ACL, the server being in the room, history visibility) live in
//! `service::rooms::federation_read`.

use std::sync::Arc;

use axum::Router;
use ruma::{
    MilliSecondsSinceUnixEpoch,
    api::federation::{
        authorization::get_event_authorization,
        backfill::get_backfill,
        event::{get_event, get_missing_events, get_room_state, get_room_state_ids},
        query::get_room_information,
    },
};

use crate::{
    Error, Result,
    api::{RumaRouter, extract::Ruma},
    service::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(event).ruma(state).ruma(state_ids).ruma(event_auth).ruma(missing_events).ruma(backfill).ruma(directory)
}

async fn event(services: Arc<Services>, request: Ruma<get_event::v1::Request>) -> Result<get_event::v1::Response> {
    let origin = request.origin()?;
    let pdu = services.rooms.event_for_server(origin, &request.body.event_id).await?;
    Ok(get_event::v1::Response::new(services.config.server_name.clone(), MilliSecondsSinceUnixEpoch::now(), pdu))
}

async fn state(
    services: Arc<Services>,
    request: Ruma<get_room_state::v1::Request>,
) -> Result<get_room_state::v1::Response> {
    let origin = request.origin()?;
    let body = &request.body;
    let (pdus, auth_chain) = services.rooms.room_state_for_server(origin, &body.room_id, &body.event_id).await?;
    Ok(get_room_state::v1::Response::new(auth_chain, pdus))
}

async fn state_ids(
    services: Arc<Services>,
    request: Ruma<get_room_state_ids::v1::Request>,
) -> Result<get_room_state_ids::v1::Response> {
    let origin = request.origin()?;
    let body = &request.body;
    let (pdu_ids, auth_chain_ids) = services.rooms.state_ids_for_server(origin, &body.room_id, &body.event_id).await?;
    Ok(get_room_state_ids::v1::Response::new(auth_chain_ids, pdu_ids))
}

async fn event_auth(
    services: Arc<Services>,
    request: Ruma<get_event_authorization::v1::Request>,
) -> Result<get_event_authorization::v1::Response> {
    let origin = request.origin()?;
    let body = &request.body;
    let chain = services.rooms.event_auth_for_server(origin, &body.room_id, &body.event_id).await?;
    Ok(get_event_authorization::v1::Response::new(chain))
}

async fn missing_events(
    services: Arc<Services>,
    request: Ruma<get_missing_events::v1::Request>,
) -> Result<get_missing_events::v1::Response> {
    let origin = request.origin()?;
    let body = request.body.clone();
    let limit = usize::try_from(u64::from(body.limit)).unwrap_or(usize::MAX);
    let events = services
        .rooms
        .missing_events_for_server(
            origin,
            &body.room_id,
            body.earliest_events,
            body.latest_events,
            limit,
            u64::from(body.min_depth),
        )
        .await?;
    Ok(get_missing_events::v1::Response::new(events))
}

async fn backfill(
    services: Arc<Services>,
    request: Ruma<get_backfill::v1::Request>,
) -> Result<get_backfill::v1::Response> {
    let origin = request.origin()?;
    let body = request.body.clone();
    let limit = usize::try_from(u64::from(body.limit)).unwrap_or(usize::MAX);
    let pdus = services.rooms.backfill_for_server(origin, &body.room_id, body.v, limit).await?;
    Ok(get_backfill::v1::Response::new(services.config.server_name.clone(), MilliSecondsSinceUnixEpoch::now(), pdus))
}

/// A local alias: its room and the servers in that room (this one first).
async fn directory(
    services: Arc<Services>,
    request: Ruma<get_room_information::v1::Request>,
) -> Result<get_room_information::v1::Response> {
    let origin = request.origin()?;
    let alias = &request.body.room_alias;
    let own = &services.config.server_name;
    if alias.server_name() != own {
        return Err(Error::not_found("Room alias not found"));
    }
    let room_id = services.rooms.alias_target(alias).await?;
    tracing::debug!(%origin, %alias, "directory query over federation");
    let mut servers = vec![own.clone()];
    servers.extend(services.rooms.servers_in_room(&room_id).await?);
    Ok(get_room_information::v1::Response::new(room_id, servers))
}
