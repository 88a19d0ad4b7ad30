//! Devices: list, get, rename, and delete (one or many, behind user-interactive auth).

use std::sync::Arc;

use axum::Router;
use ruma::{
    MilliSecondsSinceUnixEpoch, OwnedDeviceId, UInt,
    api::client::device::{self, Device, delete_device, delete_devices, get_device, get_devices, update_device},
};

use crate::{
    Error, Result,
    api::{RumaRouter, client::account::confirm_password, extract::Ruma},
    service::Services,
    storage::tables::DeviceRecord,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.ruma(list).ruma(get).ruma(update).ruma(delete).ruma(delete_many)
}

fn to_device(device_id: OwnedDeviceId, record: DeviceRecord) -> Device {
    let mut device = device::Device::new(device_id);
    device.display_name = record.display_name;
    device.last_seen_ip = record.last_seen_ip;
    device.last_seen_ts = record.last_seen_ms.and_then(UInt::new).map(MilliSecondsSinceUnixEpoch);
    device
}

async fn list(services: Arc<Services>, request: Ruma<get_devices::v3::Request>) -> Result<get_devices::v3::Response> {
    let sender = request.sender()?;
    let devices = services.sessions.devices(&sender.user_id).await?;
    Ok(get_devices::v3::Response::new(devices.into_iter().map(|(id, record)| to_device(id, record)).collect()))
}

async fn get(services: Arc<Services>, request: Ruma<get_device::v3::Request>) -> Result<get_device::v3::Response> {
    let sender = request.sender()?;
    let device_id = request.body.device_id.clone();
    let record = services
        .sessions
        .device(&sender.user_id, &device_id)
        .await?
        .ok_or_else(|| Error::not_found("Unknown device"))?;
    Ok(get_device::v3::Response::new(to_device(device_id, record)))
}

async fn update(
    services: Arc<Services>,
    request: Ruma<update_device::v3::Request>,
) -> Result<update_device::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    services.sessions.rename_device(&sender.user_id, &body.device_id, body.display_name.clone()).await?;
    Ok(update_device::v3::Response::new())
}

async fn delete(
    services: Arc<Services>,
    request: Ruma<delete_device::v3::Request>,
) -> Result<delete_device::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    confirm_password(&services, &sender.user_id, body.auth.as_ref()).await?;
    // Like Synapse, deleting a device that does not exist succeeds: the outcome is the same.
    let device = body.device_id.to_string();
    services.push.remove_device_pushers(&sender.user_id, move |d| d == Some(device.as_str())).await?;
    let device = body.device_id.to_string();
    services.account_data.remove_device_settings(&sender.user_id, move |d| d == device).await?;
    services.sessions.delete_devices(&sender.user_id, vec![body.device_id.clone()]).await?;
    Ok(delete_device::v3::Response::new())
}

async fn delete_many(
    services: Arc<Services>,
    request: Ruma<delete_devices::v3::Request>,
) -> Result<delete_devices::v3::Response> {
    let sender = request.sender()?;
    let body = &request.body;
    confirm_password(&services, &sender.user_id, body.auth.as_ref()).await?;
    let devices: Vec<String> = body.devices.iter().map(ToString::to_string).collect();
    services
        .push
        .remove_device_pushers(&sender.user_id, move |d| d.is_some_and(|d| devices.iter().any(|x| x == d)))
        .await?;
    let devices: Vec<String> = body.devices.iter().map(ToString::to_string).collect();
    services.account_data.remove_device_settings(&sender.user_id, move |d| devices.iter().any(|x| x == d)).await?;
    services.sessions.delete_devices(&sender.user_id, body.devices.clone()).await?;
    Ok(delete_devices::v3::Response::new())
}
