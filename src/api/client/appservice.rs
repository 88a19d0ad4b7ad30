//! Endpoints for application services: `POST /_matrix/client/v1/appservice/{appserviceId}/ping`
//! (the homeserver pings the service and says how long it took) and
//! `PUT /_matrix/client/v3/directory/list/appservice/{networkId}/{roomId}` (a room in the
//! service's network list of the room directory).

use std::sync::Arc;

use axum::Router;
use ruma::api::client::{
    appservice::{request_ping, set_room_visibility},
    room::Visibility,
};

use crate::{
    Error, Result,
    api::{RumaRouter, extract::Ruma},
    service::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(ping).ruma(network_visibility)
}

async fn ping(services: Arc<Services>, request: Ruma<request_ping::v1::Request>) -> Result<request_ping::v1::Response> {
    let sender = request.sender()?;
    let service = sender
        .appservice
        .as_ref()
        .filter(|service| service.id() == request.body.appservice_id)
        .ok_or_else(|| Error::forbidden("The token does not belong to that application service"))?;
    let duration = services.appservices.ping(service, request.body.transaction_id.clone()).await?;
    Ok(request_ping::v1::Response::new(duration))
}

async fn network_visibility(
    services: Arc<Services>,
    request: Ruma<set_room_visibility::v3::Request>,
) -> Result<set_room_visibility::v3::Response> {
    let sender = request.sender()?;
    let service =
        sender.appservice.as_ref().ok_or_else(|| Error::forbidden("Only application services have network lists"))?;
    let body = &request.body;
    let public = match body.visibility {
        Visibility::Public => true,
        Visibility::Private => false,
        _ => return Err(Error::invalid_param("visibility must be \"public\" or \"private\"")),
    };
    services.set_network_room(service, &body.network_id, &body.room_id, public).await?;
    Ok(set_room_visibility::v3::Response::new())
}
