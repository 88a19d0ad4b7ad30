//! Account management: `account/password` and `account/deactivate`, both behind
//! user-interactive auth with the account's password.

use std::sync::Arc;

use axum::Router;
use ruma::api::client::{
    account::{ThirdPartyIdRemovalStatus, change_password, deactivate},
    uiaa::{AuthData, AuthFlow, AuthType},
};

use crate::{
    Result,
    api::{RumaRouter, client::register::check_password_length, extract::Ruma},
    service::{Services, uiaa::PasswordCheck},
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(change_password).ruma(deactivate)
}

pub fn password_flows() -> Vec<AuthFlow> {
    vec![AuthFlow::new(vec![AuthType::Password])]
}

/// User-interactive auth with the user's own password, for sensitive account changes.
pub async fn confirm_password(services: &Services, user: &ruma::UserId, auth: Option<&AuthData>) -> Result<()> {
    services.uiaa.authenticate(auth, password_flows(), PasswordCheck::User(user, &services.accounts)).await
}

async fn change_password(
    services: Arc<Services>,
    request: Ruma<change_password::v3::Request>,
) -> Result<change_password::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    check_password_length(&body.new_password)?;
    confirm_password(&services, &sender.user_id, body.auth.as_ref()).await?;
    services.accounts.set_password(&sender.user_id, &body.new_password).await?;
    if body.logout_devices {
        let keep = sender.device_id.to_string();
        services.account_data.remove_device_settings(&sender.user_id, move |d| d != keep).await?;
        services.sessions.delete_all_devices_except(&sender.user_id, Some(&sender.device_id)).await?;
    }
    // Whether or not the other devices are logged out, their pushers stop: whoever changes a
    // password may be locking someone out (Synapse does the same).
    let keep = sender.device_id.to_string();
    services.push.remove_device_pushers(&sender.user_id, move |device| device != Some(keep.as_str())).await?;
    Ok(change_password::v3::Response::new())
}

async fn deactivate(
    services: Arc<Services>,
    request: Ruma<deactivate::v3::Request>,
) -> Result<deactivate::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    confirm_password(&services, &sender.user_id, body.auth.as_ref()).await?;
    crate::service::admin::users::deactivate(&services, &sender.user_id, body.erase).await?;
    Ok(deactivate::v3::Response::new(ThirdPartyIdRemovalStatus::NoSupport))
}
