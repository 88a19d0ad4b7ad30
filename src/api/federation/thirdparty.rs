//! Third-party invites from other servers, which Trellis does not support: `PUT
//! exchange_third_party_invite/{roomId}` and `PUT 3pid/onbind` are refused with
//! `403 M_FORBIDDEN` (after the request is checked: a bad one is `400`, an unsigned exchange
//! `401`), so the other server or identity server gets a Matrix error rather than a 404.

use std::sync::Arc;

use axum::Router;
use ruma::api::federation::thirdparty::{bind_callback, exchange_invite};

use crate::{
    Error, Result,
    api::{RumaRouter, extract::Ruma},
    service::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(exchange).ruma(on_bind)
}

async fn exchange(
    _services: Arc<Services>,
    request: Ruma<exchange_invite::v1::Request>,
) -> Result<exchange_invite::v1::Response> {
    let origin = request.origin()?;
    tracing::debug!(%origin, room = %request.body.room_id, "third-party invite exchange refused");
    Err(Error::forbidden("This server does not support third-party invites"))
}

async fn on_bind(
    _services: Arc<Services>,
    request: Ruma<bind_callback::v1::Request>,
) -> Result<bind_callback::v1::Response> {
    tracing::debug!(user = %request.body.mxid, "third-party invite bind callback refused");
    Err(Error::forbidden("This server does not support third-party invites"))
}
