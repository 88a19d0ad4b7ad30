//! `GET /sync`: the handler passes the request to the sync service.

use std::sync::Arc;

use axum::Router;
use ruma::api::client::sync::sync_events;

use crate::{
    Result,
    api::{RumaRouter, extract::Ruma},
    service::{
        Services, metrics,
        sync::{self, SyncRequest},
    },
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(sync_events)
}

async fn sync_events(
    services: Arc<Services>,
    request: Ruma<sync_events::v3::Request>,
) -> Result<sync_events::v3::Response> {
    let sender = request.sender()?;
    let _open = metrics::global().sync_started();
    let (user, device) = (sender.user_id.clone(), sender.device_id.clone());
    let body = request.body;
    let sync_request = SyncRequest {
        filter: body.filter,
        since: body.since,
        full_state: body.full_state,
        timeout: body.timeout,
        set_presence: body.set_presence,
    };
    sync::sync(&services, &user, &device, sync_request).await
}
