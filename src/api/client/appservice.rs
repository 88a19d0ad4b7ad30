//! Endpoints for application services: `POST /_matrix/client/v1/appservice/{appserviceId}/ping`
//! (the homeserver pings the service and says how long it took).

use std::sync::Arc;

use axum::Router;
use ruma::api::client::appservice::request_ping;

use crate::{
    Error, Result,
    api::{RumaRouter, extract::Ruma},
    service::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(ping)
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
