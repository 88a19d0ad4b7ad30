//! `/_matrix/client/v3/thirdparty/*`: protocols, locations and users of other networks,
//! answered by the application services that bridge them (`service::appservice::thirdparty`).

use std::sync::Arc;

use axum::Router;
use ruma::api::client::thirdparty::{
    get_location_for_protocol, get_location_for_room_alias, get_protocol, get_protocols, get_user_for_protocol,
    get_user_for_user_id,
};

use crate::{
    Error, Result,
    api::{RumaRouter, extract::Ruma},
    service::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(protocols).ruma(protocol).ruma(locations).ruma(users).ruma(location_for_alias).ruma(user_for_user_id)
}

async fn protocols(
    services: Arc<Services>,
    _: Ruma<get_protocols::v3::Request>,
) -> Result<get_protocols::v3::Response> {
    Ok(get_protocols::v3::Response::new(services.appservices.protocols().await))
}

async fn protocol(
    services: Arc<Services>,
    request: Ruma<get_protocol::v3::Request>,
) -> Result<get_protocol::v3::Response> {
    let protocol = services.appservices.protocol(&request.body.protocol).await;
    Ok(get_protocol::v3::Response::new(protocol.ok_or_else(|| Error::not_found("Unknown protocol"))?))
}

async fn locations(
    services: Arc<Services>,
    request: Ruma<get_location_for_protocol::v3::Request>,
) -> Result<get_location_for_protocol::v3::Response> {
    let body = request.body;
    Ok(get_location_for_protocol::v3::Response::new(services.appservices.locations(&body.protocol, body.fields).await))
}

async fn users(
    services: Arc<Services>,
    request: Ruma<get_user_for_protocol::v3::Request>,
) -> Result<get_user_for_protocol::v3::Response> {
    let body = request.body;
    Ok(get_user_for_protocol::v3::Response::new(services.appservices.users(&body.protocol, body.fields).await))
}

async fn location_for_alias(
    services: Arc<Services>,
    request: Ruma<get_location_for_room_alias::v3::Request>,
) -> Result<get_location_for_room_alias::v3::Response> {
    Ok(get_location_for_room_alias::v3::Response::new(
        services.appservices.locations_for_alias(&request.body.alias).await,
    ))
}

async fn user_for_user_id(
    services: Arc<Services>,
    request: Ruma<get_user_for_user_id::v3::Request>,
) -> Result<get_user_for_user_id::v3::Response> {
    Ok(get_user_for_user_id::v3::Response::new(services.appservices.users_for_user_id(&request.body.userid).await))
}
