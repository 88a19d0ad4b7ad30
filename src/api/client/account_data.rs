//! Account data (global and per room) and filters.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Path, State},
    routing::delete,
};
use http::StatusCode;
use ruma::{
    UserId,
    api::{
        client::{
            config::{get_global_account_data, get_room_account_data, set_global_account_data, set_room_account_data},
            filter::{create_filter, get_filter},
        },
        error::ErrorKind,
    },
    serde::Raw,
};
use serde_json::value::RawValue;

use crate::{
    Error, Result,
    api::{
        RumaRouter,
        extract::{Ruma, access_token, client_ip},
    },
    service::Services,
};

/// Account data types the server manages itself; clients may not set them directly.
const SERVER_MANAGED_TYPES: &[&str] = &["m.fully_read", "m.push_rules"];

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma(set_global)
        .ruma(get_global)
        .ruma(set_room)
        .ruma(get_room)
        .ruma(create_filter)
        .ruma(get_filter)
        .route(&format!("{MSC3391}/user/{{user_id}}/account_data/{{event_type}}"), delete(delete_global))
        .route(
            &format!("{MSC3391}/user/{{user_id}}/rooms/{{room_id}}/account_data/{{event_type}}"),
            delete(delete_room),
        )
}

/// Deleting account data (MSC3391), which ruma has only behind its `unstable-msc3391` feature;
/// these two routes are written here rather than rebuild ruma for them. A deleted entry is
/// stored as `{}`, as a `PUT` of `{}` also deletes: incremental syncs show it with empty content,
/// `GET` answers 404 and initial syncs leave it out (see `service::account_data`).
const MSC3391: &str = "/_matrix/client/unstable/org.matrix.msc3391";

async fn delete_global(
    State(services): State<Arc<Services>>,
    Path((user_id, event_type)): Path<(String, String)>,
    parts: http::request::Parts,
) -> Result<Json<serde_json::Value>> {
    delete_entry(&services, &parts, &user_id, None, &event_type).await
}

async fn delete_room(
    State(services): State<Arc<Services>>,
    Path((user_id, room_id, event_type)): Path<(String, String, String)>,
    parts: http::request::Parts,
) -> Result<Json<serde_json::Value>> {
    let room_id = ruma::RoomId::parse(&room_id).map_err(|_| Error::invalid_param("Invalid room ID"))?;
    delete_entry(&services, &parts, &user_id, Some(&room_id), &event_type).await
}

async fn delete_entry(
    services: &Services,
    parts: &http::request::Parts,
    user_id: &str,
    room_id: Option<&ruma::RoomId>,
    event_type: &str,
) -> Result<Json<serde_json::Value>> {
    let token = access_token(parts)?
        .ok_or_else(|| Error::new(StatusCode::UNAUTHORIZED, ErrorKind::MissingToken, "Missing access token"))?;
    let sender = services.sessions.authenticate(&token, client_ip(&parts.extensions)).await?;
    crate::api::guest::check(&sender, &parts.method, parts.uri.path())?;
    let user_id = UserId::parse(user_id).map_err(|_| Error::invalid_param("Invalid user ID"))?;
    ensure_self(&user_id, &sender.user_id, "account data")?;
    let empty = checked_content(
        event_type,
        &RawValue::from_string("{}".to_owned()).map_err(|e| Error::internal(e.to_string()))?,
    )?;
    services.account_data.set(&sender.user_id, room_id, event_type, empty).await?;
    Ok(Json(serde_json::json!({})))
}

fn ensure_self(path_user: &UserId, sender: &UserId, what: &str) -> Result<()> {
    if path_user != sender {
        return Err(Error::forbidden(format!("You cannot access another user's {what}")));
    }
    Ok(())
}

/// Checks content a client sends as account data: a JSON object, of a type clients may set.
fn checked_content(event_type: &str, content: &RawValue) -> Result<Box<RawValue>> {
    if SERVER_MANAGED_TYPES.contains(&event_type) {
        return Err(Error::new(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorKind::BadJson,
            format!("{event_type} is managed by the server and cannot be set with this API"),
        ));
    }
    if serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(content.get()).is_err() {
        return Err(Error::bad_json("Account data content must be a JSON object"));
    }
    Ok(content.to_owned())
}

async fn set_global(
    services: Arc<Services>,
    request: Ruma<set_global_account_data::v3::Request>,
) -> Result<set_global_account_data::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    ensure_self(&body.user_id, &sender.user_id, "account data")?;
    let event_type = body.event_type.to_string();
    let content = checked_content(&event_type, body.data.json())?;
    services.account_data.set(&sender.user_id, None, &event_type, content).await?;
    Ok(set_global_account_data::v3::Response::new())
}

async fn get_global(
    services: Arc<Services>,
    request: Ruma<get_global_account_data::v3::Request>,
) -> Result<get_global_account_data::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    ensure_self(&body.user_id, &sender.user_id, "account data")?;
    let content = services
        .account_data
        .get(&sender.user_id, None, &body.event_type.to_string())
        .await?
        .ok_or_else(|| Error::not_found("No account data of that type"))?;
    Ok(get_global_account_data::v3::Response::new(Raw::from_json(content)))
}

async fn set_room(
    services: Arc<Services>,
    request: Ruma<set_room_account_data::v3::Request>,
) -> Result<set_room_account_data::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    ensure_self(&body.user_id, &sender.user_id, "account data")?;
    let event_type = body.event_type.to_string();
    let content = checked_content(&event_type, body.data.json())?;
    services.account_data.set(&sender.user_id, Some(&body.room_id), &event_type, content).await?;
    Ok(set_room_account_data::v3::Response::new())
}

async fn get_room(
    services: Arc<Services>,
    request: Ruma<get_room_account_data::v3::Request>,
) -> Result<get_room_account_data::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    ensure_self(&body.user_id, &sender.user_id, "account data")?;
    let content = services
        .account_data
        .get(&sender.user_id, Some(&body.room_id), &body.event_type.to_string())
        .await?
        .ok_or_else(|| Error::not_found("No account data of that type"))?;
    Ok(get_room_account_data::v3::Response::new(Raw::from_json(content)))
}

async fn create_filter(
    services: Arc<Services>,
    request: Ruma<create_filter::v3::Request>,
) -> Result<create_filter::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    ensure_self(&body.user_id, &sender.user_id, "filters")?;
    let json = serde_json::value::to_raw_value(&body.filter).map_err(|e| Error::internal(e.to_string()))?;
    let id = services.account_data.create_filter(&sender.user_id, json).await?;
    Ok(create_filter::v3::Response::new(id.to_string()))
}

async fn get_filter(
    services: Arc<Services>,
    request: Ruma<get_filter::v3::Request>,
) -> Result<get_filter::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    ensure_self(&body.user_id, &sender.user_id, "filters")?;
    let not_found = || Error::not_found("No such filter");
    let id: u64 = body.filter_id.parse().map_err(|_| not_found())?;
    let json = services.account_data.filter(&sender.user_id, id).await?.ok_or_else(not_found)?;
    let filter =
        serde_json::from_str(json.get()).map_err(|e| Error::internal(format!("stored filter is invalid: {e}")))?;
    Ok(get_filter::v3::Response::new(filter))
}
