//! Synapse's admin API for registration tokens (`/_synapse/admin/v1/registration_tokens`):
//! list (with `valid`), read, create (`/new`, with a given or random token), change and delete.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    routing::{get, post},
};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::auth::{Admin, AdminJson};
use crate::{
    Error, Result,
    service::{Services, now_ms, registration_tokens::RegistrationToken},
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .route("/_synapse/admin/v1/registration_tokens", get(list))
        .route("/_synapse/admin/v1/registration_tokens/new", post(create))
        .route("/_synapse/admin/v1/registration_tokens/{token}", get(read).put(update).delete(remove))
}

fn token_json(token: &RegistrationToken) -> Value {
    json!({
        "token": token.token,
        "uses_allowed": token.record.uses_allowed,
        "pending": 0,
        "completed": token.record.completed,
        "expiry_time": token.record.expiry_time,
    })
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(default)]
    valid: Option<bool>,
}

async fn list(
    State(services): State<Arc<Services>>,
    _admin: Admin,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>> {
    let now = now_ms();
    let tokens: Vec<Value> = services
        .registration_tokens
        .list()
        .await?
        .iter()
        .filter(|token| query.valid.is_none_or(|valid| token.valid_at(now) == valid))
        .map(token_json)
        .collect();
    Ok(Json(json!({"registration_tokens": tokens})))
}

async fn read(State(services): State<Arc<Services>>, _admin: Admin, Path(token): Path<String>) -> Result<Json<Value>> {
    let token = services
        .registration_tokens
        .get(&token)
        .await?
        .ok_or_else(|| Error::not_found("No such registration token"))?;
    Ok(Json(token_json(&token)))
}

/// A non-negative integer or null field: `None` when absent, `Some(None)` for null.
fn optional_number(body: &Map<String, Value>, key: &str) -> Result<Option<Option<u64>>> {
    match body.get(key) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(value) => value
            .as_u64()
            .map(|n| Some(Some(n)))
            .ok_or_else(|| Error::invalid_param(format!("{key} must be a non-negative integer or null"))),
    }
}

async fn create(
    State(services): State<Arc<Services>>,
    _admin: Admin,
    AdminJson(body): AdminJson<Map<String, Value>>,
) -> Result<Json<Value>> {
    let token = match body.get("token") {
        None | Some(Value::Null) => None,
        Some(Value::String(token)) => Some(token.clone()),
        Some(_) => return Err(Error::invalid_param("token must be a string")),
    };
    let length = optional_number(&body, "length")?.flatten().map(|n| usize::try_from(n).unwrap_or(usize::MAX));
    let uses_allowed = optional_number(&body, "uses_allowed")?.flatten();
    let expiry_time = optional_number(&body, "expiry_time")?.flatten();
    let token = services.registration_tokens.create(token, length, uses_allowed, expiry_time).await?;
    Ok(Json(token_json(&token)))
}

async fn update(
    State(services): State<Arc<Services>>,
    _admin: Admin,
    Path(token): Path<String>,
    AdminJson(body): AdminJson<Map<String, Value>>,
) -> Result<Json<Value>> {
    let uses_allowed = optional_number(&body, "uses_allowed")?;
    let expiry_time = optional_number(&body, "expiry_time")?;
    if expiry_time.flatten().is_some_and(|expiry| expiry < now_ms()) {
        return Err(Error::invalid_param("expiry_time must not be in the past"));
    }
    let token = services.registration_tokens.update(&token, uses_allowed, expiry_time).await?;
    Ok(Json(token_json(&token)))
}

async fn remove(
    State(services): State<Arc<Services>>,
    _admin: Admin,
    Path(token): Path<String>,
) -> Result<Json<Value>> {
    services.registration_tokens.delete(&token).await?;
    Ok(Json(json!({})))
}
