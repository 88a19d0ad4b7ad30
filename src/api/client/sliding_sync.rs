//! `POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync` (simplified sliding sync,
//! MSC4186): the handler passes the request, and its body as sent, to the sliding sync service.

use std::sync::Arc;

use axum::Router;
use ruma::api::client::sync::sync_events::v5;

use crate::{
    Result,
    api::{RumaRouter, extract::Ruma},
    service::{Services, sliding_sync},
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(sliding_sync)
}

async fn sliding_sync(services: Arc<Services>, request: Ruma<v5::Request>) -> Result<v5::Response> {
    let sender = request.sender()?;
    let (user, device) = (sender.user_id.clone(), sender.device_id.clone());
    sliding_sync::sync(&services, &user, &device, request.body, &request.raw_body).await
}
