//! Reporting content: `/rooms/{roomId}/report/{eventId}`, `/rooms/{roomId}/report` and
//! `/users/{userId}/report`.

use std::sync::Arc;

use axum::Router;
use ruma::api::client::{
    reporting::report_user,
    room::{report_content, report_room},
};

use crate::{
    Result,
    api::{RumaRouter, extract::Ruma},
    service::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(report_event).ruma(report_whole_room).ruma(report_a_user)
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

async fn report_whole_room(
    services: Arc<Services>,
    request: Ruma<report_room::v3::Request>,
) -> Result<report_room::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    services.rooms.report_room(&body.room_id, &sender.user_id, body.reason.clone()).await?;
    Ok(report_room::v3::Response::new())
}

async fn report_a_user(
    services: Arc<Services>,
    request: Ruma<report_user::v3::Request>,
) -> Result<report_user::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    let local = body.user_id.server_name() == services.config.server_name;
    let exists = local && services.accounts.exists(&body.user_id).await?;
    services.rooms.report_user(&body.user_id, exists, &sender.user_id, body.reason.clone()).await?;
    Ok(report_user::v3::Response::new())
}
