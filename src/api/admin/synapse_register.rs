//! `/_synapse/admin/v1/register`: GET a nonce, then POST the new user with an HMAC-SHA1 of
//! nonce, username, password and admin flag under the registration shared secret. Ruma has no
//! type for this Synapse API, so the body is a small serde struct here.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Request, State},
    routing::get,
};
use serde::{Deserialize, Serialize};

use crate::{
    Result,
    api::{
        client::register::check_password_length,
        extract::{client_ip, read_body},
    },
    service::{Services, accounts::AccountKind},
};

const PATH: &str = "/_synapse/admin/v1/register";

pub fn routes(router: axum::Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.route(PATH, get(nonce).post(register))
}

#[derive(Serialize)]
struct NonceResponse {
    nonce: String,
}

#[derive(Deserialize)]
struct RegisterRequest {
    nonce: String,
    username: String,
    password: String,
    #[serde(default)]
    displayname: Option<String>,
    #[serde(default)]
    admin: bool,
    #[serde(default)]
    user_type: Option<String>,
    mac: String,
}

#[derive(Serialize)]
struct RegisterResponse {
    access_token: String,
    user_id: String,
    home_server: String,
    device_id: String,
}

async fn nonce(State(services): State<Arc<Services>>) -> Result<Json<NonceResponse>> {
    Ok(Json(NonceResponse { nonce: services.admin_register.new_nonce()? }))
}

async fn register(State(services): State<Arc<Services>>, request: Request) -> Result<Json<RegisterResponse>> {
    let (parts, body) = request.into_parts();
    let ip = client_ip(&parts.extensions);
    let body = read_body(body, services.config.max_request_size as usize, &parts.headers).await?;
    let request: RegisterRequest = super::auth::parse_json(&body)?;
    check_password_length(&request.password)?;
    services.admin_register.verify(
        &request.nonce,
        &request.username,
        &request.password,
        request.admin,
        request.user_type.as_deref(),
        &request.mac,
    )?;
    let user_id = services.accounts.user_id_for_new_localpart(&request.username.to_lowercase())?;
    let kind = if request.admin { AccountKind::Admin } else { AccountKind::User };
    services.accounts.create(&user_id, Some(&request.password), kind).await?;
    if let Some(displayname) = request.displayname {
        services.profile.set_field(&user_id, "displayname", Some(displayname.into())).await?;
    }
    let tokens = services.sessions.login(&user_id, None, None, false, ip).await?;
    tracing::info!(%user_id, admin = request.admin, "registered account with the shared secret");
    Ok(Json(RegisterResponse {
        access_token: tokens.access_token,
        user_id: user_id.to_string(),
        home_server: services.config.server_name.to_string(),
        device_id: tokens.device_id.to_string(),
    }))
}
