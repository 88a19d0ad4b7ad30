//! Spaces for other servers: `GET /_matrix/federation/v1/hierarchy/{roomId}`, a room's summary
//! and links with the children the asking server may see (`service::rooms::hierarchy`).

use std::sync::Arc;

use axum::Router;
use ruma::api::federation::space::{SpaceHierarchyParentSummary, get_hierarchy};

use crate::{
    Result,
    api::{RumaRouter, extract::Ruma},
    service::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(hierarchy)
}

async fn hierarchy(
    services: Arc<Services>,
    request: Ruma<get_hierarchy::v1::Request>,
) -> Result<get_hierarchy::v1::Response> {
    let origin = request.origin()?;
    let body = &request.body;
    let found = services.rooms.hierarchy_for_server(origin, &body.room_id, body.suggested_only).await?;
    let room = SpaceHierarchyParentSummary::new(found.room.summary, found.room.children_state);
    let mut response = get_hierarchy::v1::Response::new(room);
    response.children = found.children;
    response.inaccessible_children = found.inaccessible_children;
    Ok(response)
}
