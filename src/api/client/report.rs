//! Reporting content: `/rooms/{roomId}/report/{eventId}`.

use std::sync::Arc;

use axum::Router;
use ruma::api::client::room::report_content;

use crate::{
    Result,
    api::{RumaRouter, extract::Ruma},
    service::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(report_event)
}

async fn report_event(
    services: Arc<Services>,
    request: Ruma<report_content::v3::Request>,
) -> Result<report_content::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    services.rooms.report_event(&body.room_id, &body.event_id, &sender.user_id, body.reason.clone()).await?;
    Ok(report_content::v3::Response::new())
}
