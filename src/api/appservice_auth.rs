//! Requests authenticated with an application service's `as_token`: the service acts as its
//! sender user, or as the user named by the `user_id` query parameter when that user is in its
//! user namespaces and exists; `org.matrix.msc3202.device_id` (MSC3202) picks one of that
//! user's devices. On `/register` the named user need not exist yet.

use http::StatusCode;
use ruma::{OwnedDeviceId, RoomAliasId, UserId, api::error::ErrorKind};

use crate::{
    Error, Result,
    service::{Services, appservice::AppService, sessions::Authenticated},
};

/// The device an application service acts through when it names none (it has no token of its
/// own; Synapse acts with no device at all).
pub const APPSERVICE_DEVICE: &str = "APPSERVICE";

/// The identity a request with `service`'s token acts as.
pub async fn identity(services: &Services, service: AppService, parts: &http::request::Parts) -> Result<Authenticated> {
    let mut user_param = None;
    let mut device_param = None;
    for (key, value) in url::form_urlencoded::parse(parts.uri.query().unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "user_id" => user_param = Some(value.into_owned()),
            "org.matrix.msc3202.device_id" | "device_id" => device_param = Some(value.into_owned()),
            _ => {}
        }
    }
    let user_id = match user_param {
        Some(user) => UserId::parse(user).map_err(|_| Error::invalid_param("Invalid user_id"))?,
        None => service.sender.clone(),
    };
    if !services.appservices.may_act_as(&service, &user_id) {
        return Err(Error::forbidden("The application service may not act as that user"));
    }
    // Registration acts for the service itself: bridges (mautrix) name the user they register
    // in `user_id`, which does not exist yet.
    if parts.uri.path().ends_with("/register") {
        return Ok(Authenticated {
            user_id,
            device_id: APPSERVICE_DEVICE.into(),
            guest: false,
            admin: false,
            appservice: Some(service),
            shadow_banned: false,
            suspended: false,
        });
    }
    let record = services
        .accounts
        .get(&user_id)
        .await?
        .ok_or_else(|| Error::forbidden("The application service has not registered this user"))?;
    if record.deactivated {
        return Err(Error::forbidden("The user has been deactivated"));
    }
    let device_id: OwnedDeviceId = match device_param {
        Some(device) => {
            let device: OwnedDeviceId = device.into();
            if services.sessions.device(&user_id, &device).await?.is_none() {
                return Err(Error::new(StatusCode::FORBIDDEN, ErrorKind::UnknownDevice, "The user has no such device"));
            }
            device
        }
        None => APPSERVICE_DEVICE.into(),
    };
    // As in Synapse, a lock and a shadow-ban do not stop an application service acting for the
    // user; a suspension does.
    Ok(Authenticated {
        user_id,
        device_id,
        guest: false,
        admin: record.admin,
        appservice: Some(service),
        shadow_banned: false,
        suspended: record.suspended,
    })
}

/// An alias in a service's exclusive namespace may only be created by a service whose alias
/// namespaces hold it: `M_EXCLUSIVE` (400) for anyone else.
pub fn check_alias_allowed(services: &Services, sender: &Authenticated, alias: &RoomAliasId) -> Result<()> {
    let own = sender.appservice.as_ref().is_some_and(|s| s.aliases.iter().any(|ns| ns.regex.is_match(alias.as_str())));
    if services.appservices.is_exclusive_alias(alias) && !own {
        return Err(Error::new(
            StatusCode::BAD_REQUEST,
            ErrorKind::Exclusive,
            "That room alias is reserved by an application service",
        ));
    }
    Ok(())
}
