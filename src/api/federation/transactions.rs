//! Transactions from other servers: `PUT /_matrix/federation/v1/send/{txnId}` (the logic is in
//! `service::federation::inbound`).

use std::sync::Arc;

use axum::Router;
use ruma::api::federation::transactions::send_transaction_message;

use crate::{
    Result,
    api::{RumaRouter, extract::Ruma},
    service::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(send)
}

/// A transaction of PDUs and EDUs: one result per PDU, the same answer for a repeated one.
async fn send(
    services: Arc<Services>,
    request: Ruma<send_transaction_message::v1::Request>,
) -> Result<send_transaction_message::v1::Response> {
    let origin = request.origin()?.to_owned();
    services.federation.inbound.receive(&services, &origin, request.body).await
}
