//! Room tags: `GET /user/{userId}/rooms/{roomId}/tags`, `PUT` and `DELETE .../tags/{tag}`.

use std::sync::Arc;

use axum::Router;
use ruma::{
    UserId,
    api::client::tag::{create_tag, delete_tag, get_tags},
    events::tag::Tags,
};

use crate::{
    Error, Result,
    api::{RumaRouter, extract::Ruma},
    service::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(get).ruma(put).ruma(delete)
}

/// Tags are only ever your own (`403 M_FORBIDDEN`, as Synapse answers).
fn ensure_self(path_user: &UserId, sender: &UserId) -> Result<()> {
    if path_user != sender {
        return Err(Error::forbidden("You cannot access another user's tags"));
    }
    Ok(())
}

async fn get(services: Arc<Services>, request: Ruma<get_tags::v3::Request>) -> Result<get_tags::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    ensure_self(&body.user_id, &sender.user_id)?;
    let tags = services.tags.get(&services.account_data, &sender.user_id, &body.room_id).await?;
    // Entries that are not valid tag info (written as raw account data) are left out.
    let tags: Tags = serde_json::from_value(serde_json::Value::Object(tags)).unwrap_or_default();
    Ok(get_tags::v3::Response::new(tags))
}

async fn put(services: Arc<Services>, request: Ruma<create_tag::v3::Request>) -> Result<create_tag::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    ensure_self(&body.user_id, &sender.user_id)?;
    let info = serde_json::to_value(&body.tag_info).map_err(|e| Error::bad_json(e.to_string()))?;
    services.tags.set(&services.account_data, &sender.user_id, &body.room_id, &body.tag, info).await?;
    Ok(create_tag::v3::Response::new())
}

async fn delete(services: Arc<Services>, request: Ruma<delete_tag::v3::Request>) -> Result<delete_tag::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    ensure_self(&body.user_id, &sender.user_id)?;
    services.tags.delete(&services.account_data, &sender.user_id, &body.room_id, &body.tag).await?;
    Ok(delete_tag::v3::Response::new())
}
