//! Spaces: `GET /rooms/{roomId}/hierarchy` and a room's summary
//! (`GET /room_summary/{roomIdOrAlias}`, MSC3266 and its unstable path).

use std::sync::Arc;

use axum::Router;
use ruma::{
    OwnedRoomId, RoomId,
    api::client::{room::get_summary, space::get_hierarchy},
    events::room::member::MembershipState,
};

use crate::{
    Error, Result,
    api::{RumaRouter, extract::Ruma},
    service::{
        Services,
        rooms::hierarchy::{HierarchyQuery, HierarchyRoom},
    },
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(hierarchy).ruma(summary)
}

async fn hierarchy(
    services: Arc<Services>,
    request: Ruma<get_hierarchy::v1::Request>,
) -> Result<get_hierarchy::v1::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    let query = HierarchyQuery {
        max_depth: body.max_depth.map(|depth| usize::try_from(u64::from(depth)).unwrap_or(usize::MAX)),
        suggested_only: body.suggested_only,
        limit: body.limit.map(|limit| usize::try_from(u64::from(limit)).unwrap_or(usize::MAX)),
        from: body.from.clone(),
    };
    let page =
        crate::service::federation::hierarchy::hierarchy(&services, &sender.user_id, &body.room_id, &query).await?;
    let mut response = get_hierarchy::v1::Response::new();
    response.next_batch = page.next_batch;
    response.rooms = page
        .rooms
        .into_iter()
        .map(|HierarchyRoom { summary, children_state }| {
            ruma::api::client::space::SpaceHierarchyRoomsChunk::new(summary, children_state)
        })
        .collect();
    Ok(response)
}

async fn summary(
    services: Arc<Services>,
    request: Ruma<get_summary::v1::Request>,
) -> Result<get_summary::v1::Response> {
    let user = request.sender.as_ref().map(|sender| sender.user_id.clone());
    let room_id: OwnedRoomId = match <&RoomId>::try_from(&*request.body.room_id_or_alias) {
        Ok(room_id) => room_id.to_owned(),
        Err(alias) => {
            services.rooms.resolve_alias(alias).await?.ok_or_else(|| Error::not_found("Unknown room alias"))?.room_id
        }
    };
    let (summary, membership) = services.rooms.room_summary(user.as_deref(), &room_id).await?;
    let mut response = get_summary::v1::Response::new(summary);
    response.membership = membership.map(|m| MembershipState::from(m.as_str()));
    Ok(response)
}
