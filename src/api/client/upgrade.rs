//! Room upgrades: `/rooms/{roomId}/upgrade`.

use std::sync::Arc;

use axum::Router;
use ruma::api::client::room::upgrade_room;

use crate::{
    Result,
    api::{RumaRouter, client::room::supported_version, extract::Ruma},
    service::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(upgrade)
}

async fn upgrade(
    services: Arc<Services>,
    request: Ruma<upgrade_room::v3::Request>,
) -> Result<upgrade_room::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    let version = supported_version(&services, Some(&body.new_version))?;
    crate::service::admin::moderation::check_not_suspended(sender, "Upgrading rooms")?;
    // Answered with a made-up room, and nothing changes (Synapse's shadow-ban).
    if crate::service::admin::moderation::shadow_banned(sender) {
        let fake = crate::service::admin::moderation::fake_room_id(&services.config.server_name);
        return Ok(upgrade_room::v3::Response::new(fake));
    }
    let replacement =
        services.rooms.upgrade_room(&body.room_id, &sender.user_id, &version, &body.additional_creators).await?;
    crate::service::push::carry_over_room_rule(&services, &sender.user_id, &replacement).await?;
    Ok(upgrade_room::v3::Response::new(replacement))
}
