//! `PUT /rooms/{roomId}/typing/{userId}`.

use std::sync::Arc;

use axum::Router;
use ruma::api::client::typing::create_typing_event::{self, v3::Typing};

use crate::{
    Error, Result,
    api::{RumaRouter, extract::Ruma},
    service::{Services, federation},
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(typing)
}

async fn typing(
    services: Arc<Services>,
    request: Ruma<create_typing_event::v3::Request>,
) -> Result<create_typing_event::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    if body.user_id != sender.user_id {
        return Err(Error::forbidden("You can only set your own typing state"));
    }
    // Answered, and nobody sees it (Synapse's shadow-ban).
    if crate::service::admin::moderation::shadow_banned(sender) {
        return Ok(create_typing_event::v3::Response::new());
    }
    if services.rooms.membership(&sender.user_id, &body.room_id).await?.is_none_or(|m| m.membership != "join") {
        return Err(Error::forbidden("You are not joined to this room"));
    }
    let timeout = match body.state {
        Typing::Yes(info) => Some(info.timeout),
        Typing::No => None,
    };
    let typing = timeout.is_some();
    services.typing.set(&body.room_id, &sender.user_id, timeout);
    federation::outbound_edus::typing(&services, &body.room_id, &sender.user_id, typing).await?;
    Ok(create_typing_event::v3::Response::new())
}
