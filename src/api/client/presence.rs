//! `GET` and `PUT /presence/{userId}/status`.

use std::sync::Arc;

use axum::Router;
use ruma::api::client::presence::{get_presence, set_presence};

use crate::{
    Error, Result,
    api::{RumaRouter, extract::Ruma},
    service::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(get_status).ruma(set_status)
}

/// Only for yourself (`403 M_FORBIDDEN` otherwise, as Synapse answers).
async fn set_status(
    services: Arc<Services>,
    request: Ruma<set_presence::v3::Request>,
) -> Result<set_presence::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    if body.user_id != sender.user_id {
        return Err(Error::forbidden("You can only set your own presence"));
    }
    services.presence.set(&sender.user_id, &body.presence, body.status_msg.clone()).await?;
    Ok(set_presence::v3::Response::new())
}

/// Yours, or that of a user you share a joined room with. Like Synapse, anyone else's is
/// `403 M_FORBIDDEN`; a local user who does not exist is `404 M_NOT_FOUND`.
async fn get_status(
    services: Arc<Services>,
    request: Ruma<get_presence::v3::Request>,
) -> Result<get_presence::v3::Response> {
    let sender = request.sender()?;
    let target = &request.body.user_id;
    if *target != sender.user_id {
        if target.server_name().as_str() == services.config.server_name.as_str()
            && !services.accounts.exists(target).await?
        {
            return Err(Error::not_found("There is no presence for this user"));
        }
        if !services.rooms.share_a_room(&sender.user_id, target).await? {
            return Err(Error::forbidden("You are not allowed to see this user's presence"));
        }
    }
    let view = services.presence.get(target).await?;
    let online = view.state == ruma::presence::PresenceState::Online;
    let mut response = get_presence::v3::Response::new(view.state);
    response.status_msg = view.status_msg;
    response.last_active_ago = view.last_active_ago;
    response.currently_active = online.then_some(view.currently_active);
    Ok(response)
}
