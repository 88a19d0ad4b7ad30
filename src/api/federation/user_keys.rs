//! Keys of this server's users for other servers: `POST /_matrix/federation/v1/user/keys/query`,
//! `POST /_matrix/federation/v1/user/keys/claim` and `GET /_matrix/federation/v1/user/devices/{userId}`.
//! Users of other servers named in a request are left out of the answer.

use std::{collections::BTreeMap, sync::Arc};

use axum::Router;
use ruma::{
    OwnedOneTimeKeyId, UInt,
    api::federation::{
        device::get_devices,
        keys::{claim_keys, get_keys},
    },
    serde::Raw,
};
use serde_json::Value;

use crate::{
    Error, Result,
    api::{RumaRouter, extract::Ruma},
    service::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(query).ruma(claim).ruma(devices)
}

fn raw<T>(value: &Value) -> Result<Raw<T>> {
    serde_json::value::to_raw_value(value).map(Raw::from_json).map_err(|e| Error::internal(e.to_string()))
}

async fn query(services: Arc<Services>, request: Ruma<get_keys::v1::Request>) -> Result<get_keys::v1::Response> {
    let origin = request.origin()?;
    tracing::debug!(%origin, users = request.body.device_keys.len(), "key query over federation");
    let mut response = get_keys::v1::Response::new(BTreeMap::new());
    for (user, devices) in &request.body.device_keys {
        if user.server_name() != services.config.server_name {
            continue;
        }
        let mut by_device = BTreeMap::new();
        for (device, value) in services.keys.device_keys(user, devices.clone(), None).await? {
            by_device.insert(device, raw(&value)?);
        }
        response.device_keys.insert(user.clone(), by_device);
        if let Some(master) = services.keys.cross_signing_key(user, "master", None).await? {
            response.master_keys.insert(user.clone(), raw(&master)?);
        }
        if let Some(self_signing) = services.keys.cross_signing_key(user, "self_signing", None).await? {
            response.self_signing_keys.insert(user.clone(), raw(&self_signing)?);
        }
    }
    Ok(response)
}

async fn claim(services: Arc<Services>, request: Ruma<claim_keys::v1::Request>) -> Result<claim_keys::v1::Response> {
    let origin = request.origin()?;
    tracing::debug!(%origin, users = request.body.one_time_keys.len(), "key claim over federation");
    let mut claimed = BTreeMap::new();
    for (user, devices) in &request.body.one_time_keys {
        if user.server_name() != services.config.server_name {
            continue;
        }
        let mut by_device = BTreeMap::new();
        for (device, algorithm) in devices {
            if let Some((key_id, key)) = services.keys.claim(user, device, algorithm.as_str()).await? {
                let Ok(key_id) = OwnedOneTimeKeyId::try_from(key_id) else { continue };
                by_device.insert(device.clone(), BTreeMap::from([(key_id, Raw::from_json(key))]));
            }
        }
        if !by_device.is_empty() {
            claimed.insert(user.clone(), by_device);
        }
    }
    Ok(claim_keys::v1::Response::new(claimed))
}

/// A local user's devices with their keys (devices that uploaded none are left out), the
/// stream ID of the newest device list update about them, and their cross-signing keys.
async fn devices(
    services: Arc<Services>,
    request: Ruma<get_devices::v1::Request>,
) -> Result<get_devices::v1::Response> {
    let origin = request.origin()?;
    let user = &request.body.user_id;
    if user.server_name() != services.config.server_name {
        return Err(Error::invalid_param(format!("{user} is not a user of this server")));
    }
    if !services.accounts.exists(user).await? {
        return Err(Error::not_found("Unknown user"));
    }
    tracing::debug!(%origin, %user, "device list query over federation");
    let (devices, stream_id, master, self_signing) = services.keys.federated_devices(user).await?;
    let mut response = get_devices::v1::Response::new(user.clone(), UInt::new_saturating(stream_id));
    for device in devices {
        let Some(keys) = device.keys else { continue };
        let mut entry = get_devices::v1::UserDevice::new(device.device_id, raw(&keys)?);
        entry.device_display_name = device.display_name;
        response.devices.push(entry);
    }
    response.master_key = master.as_ref().map(raw).transpose()?;
    response.self_signing_key = self_signing.as_ref().map(raw).transpose()?;
    Ok(response)
}
