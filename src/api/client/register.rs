//! Registration: `register` (user-interactive auth, guests, `inhibit_login`, refresh tokens),
//! `register/available` and the registration-token validity check.

use std::sync::Arc;

use axum::Router;
use http::StatusCode;
use ruma::api::{
    client::account::{
        check_registration_token_validity, get_username_availability,
        register::{self, RegistrationKind},
    },
    error::ErrorKind,
};

use crate::{
    Error, Result,
    api::{RumaRouter, extract::Ruma},
    service::{Services, accounts::AccountKind, random_string, uiaa::PasswordCheck},
};

/// Longest password accepted (as Synapse), so hashing cost stays bounded.
pub const MAX_PASSWORD_BYTES: usize = 512;

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(register).ruma(username_available).ruma(registration_token_validity)
}

pub fn check_password_length(password: &str) -> Result<()> {
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(Error::invalid_param(format!("Passwords are limited to {MAX_PASSWORD_BYTES} bytes")));
    }
    Ok(())
}

async fn register(services: Arc<Services>, request: Ruma<register::v3::Request>) -> Result<register::v3::Response> {
    let body = request.body;
    let config = &services.config;
    services.rate_limits.check_registration(request.client_ip.as_deref(), request.sender.as_ref())?;
    let (user_id, kind) = if body.login_type.is_some() {
        // `m.login.application_service`: a user in the service's namespaces, no auth flow.
        let service = request.sender.as_ref().and_then(|s| s.appservice.clone()).ok_or_else(|| {
            Error::new(StatusCode::UNAUTHORIZED, ErrorKind::MissingToken, "An application service token is required")
        })?;
        let localpart = body.username.as_deref().ok_or_else(|| Error::bad_json("Missing username"))?;
        let user_id = services.appservices.user_id_for_registration(&service, localpart)?;
        (user_id, AccountKind::User)
    } else if request.sender.as_ref().is_some_and(|s| s.appservice.is_some()) {
        return Err(Error::forbidden("Application services register with type m.login.application_service"));
    } else if body.kind == RegistrationKind::Guest {
        if !config.allow_guest_registration {
            return Err(Error::forbidden("Guest registration is disabled"));
        }
        (services.accounts.next_guest_user_id().await?, AccountKind::Guest)
    } else {
        if !config.allow_registration {
            return Err(Error::forbidden("Registration is disabled on this server"));
        }
        if let Some(password) = &body.password {
            check_password_length(password)?;
        }
        // Like Synapse, the username is checked before user-interactive auth starts, so a client
        // learns of a bad or taken name at once.
        let user_id = match &body.username {
            // Capitals are folded, as Synapse does (Complement's `TestRegistration`).
            Some(localpart) => services.accounts.user_id_for_new_localpart(&localpart.to_lowercase())?,
            None => services.accounts.user_id_for_new_localpart(&format!("u{}", random_string(11).to_lowercase()))?,
        };
        if services.accounts.exists(&user_id).await? {
            return Err(Error::new(StatusCode::BAD_REQUEST, ErrorKind::UserInUse, "That user ID is already taken"));
        }
        check_not_exclusive(&services, &user_id)?;
        let flows = services.uiaa.registration_flows().await?;
        services.uiaa.authenticate(body.auth.as_ref(), flows, PasswordCheck::None).await?;
        (user_id, AccountKind::User)
    };
    let password = if kind == AccountKind::Guest { None } else { body.password.as_deref() };
    services.accounts.create(&user_id, password, kind).await?;
    services.rate_limits.record_registration(request.client_ip.as_deref(), request.sender.as_ref());
    tracing::info!(%user_id, guest = kind == AccountKind::Guest, "registered account");

    let mut response = register::v3::Response::new(user_id.clone());
    if body.inhibit_login {
        return Ok(response);
    }
    let tokens = services
        .sessions
        .login(&user_id, body.device_id, body.initial_device_display_name, body.refresh_token, request.client_ip)
        .await?;
    response.access_token = Some(tokens.access_token);
    response.device_id = Some(tokens.device_id);
    response.refresh_token = tokens.refresh_token;
    response.expires_in = tokens.expires_in;
    Ok(response)
}

/// Users in an application service's exclusive namespace are that service's to create.
fn check_not_exclusive(services: &Services, user_id: &ruma::UserId) -> Result<()> {
    if services.appservices.is_exclusive_user(user_id) {
        return Err(Error::new(
            StatusCode::BAD_REQUEST,
            ErrorKind::Exclusive,
            "That user ID is reserved by an application service",
        ));
    }
    Ok(())
}

async fn username_available(
    services: Arc<Services>,
    request: Ruma<get_username_availability::v3::Request>,
) -> Result<get_username_availability::v3::Response> {
    let user_id = services.accounts.user_id_for_new_localpart(&request.body.username)?;
    if services.accounts.exists(&user_id).await? {
        return Err(Error::new(StatusCode::BAD_REQUEST, ErrorKind::UserInUse, "That user ID is already taken"));
    }
    check_not_exclusive(&services, &user_id)?;
    Ok(get_username_availability::v3::Response::new(true))
}

async fn registration_token_validity(
    services: Arc<Services>,
    request: Ruma<check_registration_token_validity::v1::Request>,
) -> Result<check_registration_token_validity::v1::Response> {
    Ok(check_registration_token_validity::v1::Response::new(
        services.registration_tokens.valid(&request.body.token).await?,
    ))
}
