//! This server's public room directory for other servers: `GET` and `POST` (with a filter)
//! `/_matrix/federation/v1/publicRooms`, the same listing clients get, application services'
//! network lists included when asked for.

use std::sync::Arc;

use axum::Router;
use ruma::{
    api::federation::directory::{get_public_rooms, get_public_rooms_filtered},
    directory::{Filter, RoomNetwork},
};

use crate::{
    Result,
    api::{
        RumaRouter,
        client::directory::{page_parts, query_of},
        extract::Ruma,
    },
    service::{Services, rooms::public::PublicRoomsPage},
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(public_rooms).ruma(public_rooms_filtered)
}

async fn page(
    services: &Services,
    filter: &Filter,
    limit: Option<ruma::UInt>,
    since: Option<String>,
    network: &RoomNetwork,
) -> Result<PublicRoomsPage> {
    let mut query = query_of(filter, limit, since);
    match network {
        RoomNetwork::ThirdParty(instance) => {
            query.extra_rooms = services.network_rooms(Some(instance)).await?;
            query.only_extra = true;
        }
        RoomNetwork::All => query.extra_rooms = services.network_rooms(None).await?,
        _ => {}
    }
    services.rooms.public_rooms(&query).await
}

async fn public_rooms(
    services: Arc<Services>,
    request: Ruma<get_public_rooms::v1::Request>,
) -> Result<get_public_rooms::v1::Response> {
    let origin = request.origin()?;
    let body = &request.body;
    tracing::debug!(%origin, "public rooms asked over federation");
    let found = page(&services, &Filter::new(), body.limit, body.since.clone(), &body.room_network).await?;
    let (chunk, next_batch, prev_batch, total) = page_parts(found);
    let mut response = get_public_rooms::v1::Response::new();
    (response.chunk, response.next_batch, response.prev_batch, response.total_room_count_estimate) =
        (chunk, next_batch, prev_batch, total);
    Ok(response)
}

async fn public_rooms_filtered(
    services: Arc<Services>,
    request: Ruma<get_public_rooms_filtered::v1::Request>,
) -> Result<get_public_rooms_filtered::v1::Response> {
    let origin = request.origin()?;
    let body = &request.body;
    tracing::debug!(%origin, "filtered public rooms asked over federation");
    let found = page(&services, &body.filter, body.limit, body.since.clone(), &body.room_network).await?;
    let (chunk, next_batch, prev_batch, total) = page_parts(found);
    let mut response = get_public_rooms_filtered::v1::Response::new();
    (response.chunk, response.next_batch, response.prev_batch, response.total_room_count_estimate) =
        (chunk, next_batch, prev_batch, total);
    Ok(response)
}
