//! Sessions: `login` (flows; password, token and application service login), `login/get_token`, `refresh`, `logout`, `logout/all`, `whoami`.

use std::sync::Arc;

use axum::Router;
use http::StatusCode;
use ruma::api::{
    client::{
        account::whoami,
        session::{
            get_login_token,
            get_login_types::{
                self,
                v3::{ApplicationServiceLoginType, LoginType, PasswordLoginType, TokenLoginType},
            },
            login::{
                self,
                v3::{DiscoveryInfo, HomeserverInfo, LoginInfo},
            },
            logout, logout_all, refresh_token,
        },
        uiaa::UserIdentifier,
    },
    error::ErrorKind,
};

use crate::{
    Error, Result,
    api::{RumaRouter, extract::Ruma},
    service::{Services, rate_limit},
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(login_types).ruma(login).ruma(get_token).ruma(refresh).ruma(logout).ruma(logout_all).ruma(whoami)
}

async fn login_types(
    services: Arc<Services>,
    _: Ruma<get_login_types::v3::Request>,
) -> Result<get_login_types::v3::Response> {
    let mut token = TokenLoginType::new();
    token.get_login_token = services.config.login_via_existing_session;
    Ok(get_login_types::v3::Response::new(vec![
        LoginType::Password(PasswordLoginType::new()),
        LoginType::Token(token),
        LoginType::ApplicationService(ApplicationServiceLoginType::new()),
    ]))
}

/// `/login/get_token` (v1.7): a single-use token for logging a new device in, after the user's
/// password (user-interactive auth, as Synapse requires by default). Guests may not have one.
async fn get_token(
    services: Arc<Services>,
    request: Ruma<get_login_token::v1::Request>,
) -> Result<get_login_token::v1::Response> {
    let sender = request.sender()?;
    if !services.config.login_via_existing_session {
        return Err(Error::forbidden("Login via an existing session is disabled on this server"));
    }
    if sender.guest {
        return Err(Error::new(StatusCode::FORBIDDEN, ErrorKind::GuestAccessForbidden, "Guests cannot do this"));
    }
    super::account::confirm_password(&services, &sender.user_id, request.body.auth.as_ref()).await?;
    let token = services.login_tokens.issue(&sender.user_id);
    Ok(get_login_token::v1::Response::new(crate::service::login_tokens::LIFETIME, token))
}

async fn login(services: Arc<Services>, request: Ruma<login::v3::Request>) -> Result<login::v3::Response> {
    let body = request.body;
    // `identifier` is the current form; `user` is the legacy field many tools still send.
    #[allow(deprecated)]
    let (identifier, legacy_user) = match &body.login_info {
        LoginInfo::Password(password) => (&password.identifier, &password.user),
        LoginInfo::ApplicationService(service) => (&service.identifier, &service.user),
        LoginInfo::Token(token) => {
            // `m.login.token`: a token another device of the user asked for (`/login/get_token`).
            // Tokens are 40 random characters, so guessing is hopeless; the limit is then the
            // same as for a password login of that user.
            let user_id = services
                .login_tokens
                .consume(&token.token)
                .ok_or_else(|| Error::forbidden("Invalid or expired login token"))?;
            services.rate_limits.login_attempt(request.client_ip.as_deref(), user_id.as_str())?;
            return finish_login(&services, user_id, body, request.client_ip).await;
        }
        _ => return Err(Error::new(StatusCode::BAD_REQUEST, ErrorKind::Unknown, "Unsupported login type")),
    };
    let user = match (identifier, legacy_user) {
        (Some(UserIdentifier::Matrix(id)), _) => id.user.clone(),
        (Some(_), _) => return Err(Error::forbidden("Only user ID identifiers are supported")),
        (None, Some(user)) => user.clone(),
        (None, None) => return Err(Error::bad_json("Missing identifier")),
    };
    let user_id = services.accounts.parse_login_user(&user)?;
    if !request.sender.as_ref().is_some_and(rate_limit::is_exempt) {
        services.rate_limits.login_attempt(request.client_ip.as_deref(), user_id.as_str())?;
    }
    match &body.login_info {
        LoginInfo::Password(password) => {
            let checked = services.accounts.check_password(&user_id, &password.password).await;
            if checked.is_err() {
                services.rate_limits.login_failed(user_id.as_str());
            }
            checked?
        }
        _ => {
            // `m.login.application_service`: the service's token, for a user it may act as.
            let service = request.sender.as_ref().and_then(|s| s.appservice.clone()).ok_or_else(|| {
                Error::new(
                    StatusCode::UNAUTHORIZED,
                    ErrorKind::MissingToken,
                    "An application service token is required",
                )
            })?;
            if !services.appservices.may_act_as(&service, &user_id) || !services.accounts.exists(&user_id).await? {
                return Err(Error::forbidden("The application service may not log in as that user"));
            }
        }
    }
    finish_login(&services, user_id, body, request.client_ip).await
}

/// Logs `user_id` in on a new (or the named) device once the login info was checked.
async fn finish_login(
    services: &Services,
    user_id: ruma::OwnedUserId,
    body: login::v3::Request,
    client_ip: Option<String>,
) -> Result<login::v3::Response> {
    // A locked account gets no new access token until it is unlocked (spec v1.12; Synapse
    // checks after the password, so the error tells nothing to someone without it).
    if services.accounts.get(&user_id).await?.is_some_and(|record| record.locked) {
        return Err(Error::user_locked());
    }
    let tokens = services
        .sessions
        .login(&user_id, body.device_id, body.initial_device_display_name, body.refresh_token, client_ip)
        .await?;
    let mut response = login::v3::Response::new(user_id, tokens.access_token, tokens.device_id);
    response.refresh_token = tokens.refresh_token;
    response.expires_in = tokens.expires_in;
    // Deprecated in the spec, but older clients and bots still read it; Synapse sends it too.
    #[allow(deprecated)]
    {
        response.home_server = Some(services.config.server_name.clone());
    }
    if let Some(base_url) = &services.config.well_known.client {
        response.well_known = Some(DiscoveryInfo::new(HomeserverInfo::new(base_url.clone())));
    }
    Ok(response)
}

async fn refresh(
    services: Arc<Services>,
    request: Ruma<refresh_token::v3::Request>,
) -> Result<refresh_token::v3::Response> {
    let (_, tokens) = services.sessions.refresh(&request.body.refresh_token).await?;
    let mut response = refresh_token::v3::Response::new(tokens.access_token);
    response.refresh_token = tokens.refresh_token;
    response.expires_in_ms = tokens.expires_in;
    Ok(response)
}

async fn logout(services: Arc<Services>, request: Ruma<logout::v3::Request>) -> Result<logout::v3::Response> {
    let sender = request.sender()?;
    // Pushers first: a request dropped between the two leaves a session without pushers
    // (clients set them again), never pushes to a device that is gone.
    let device = sender.device_id.to_string();
    services.push.remove_device_pushers(&sender.user_id, move |d| d == Some(device.as_str())).await?;
    let device = sender.device_id.to_string();
    services.account_data.remove_device_settings(&sender.user_id, move |d| d == device).await?;
    services.sessions.delete_devices(&sender.user_id, vec![sender.device_id.clone()]).await?;
    Ok(logout::v3::Response::new())
}

async fn logout_all(
    services: Arc<Services>,
    request: Ruma<logout_all::v3::Request>,
) -> Result<logout_all::v3::Response> {
    let sender = request.sender()?;
    services.push.remove_device_pushers(&sender.user_id, |_| true).await?;
    services.account_data.remove_device_settings(&sender.user_id, |_| true).await?;
    services.sessions.delete_all_devices_except(&sender.user_id, None).await?;
    Ok(logout_all::v3::Response::new())
}

async fn whoami(_: Arc<Services>, request: Ruma<whoami::v3::Request>) -> Result<whoami::v3::Response> {
    let sender = request.sender()?;
    let mut response = whoami::v3::Response::new(sender.user_id.clone(), sender.guest);
    response.device_id = Some(sender.device_id.clone());
    Ok(response)
}
