//! Dehydrated devices (MSC3814, `org.matrix.msc3814.v1`): one per user, a device without an
//! access token whose keys and encrypted data the server keeps, so messages sent while the user
//! has no device online can be decrypted later. Replacing it deletes the previous one.

use ruma::{DeviceId, OwnedDeviceId, UserId};
use serde_json::value::RawValue;

use super::Services;
use crate::{
    Error, Result,
    storage::{
        Batch,
        key_tables::{DEHYDRATED_DEVICES, DehydratedDevice, ToDeviceMessage},
    },
};

/// How many to-device events one `events` call returns at most.
const EVENTS_PER_CALL: usize = 100;

/// A dehydrated device being stored.
pub struct NewDehydratedDevice {
    pub device_id: OwnedDeviceId,
    pub display_name: Option<String>,
    pub device_data: Box<RawValue>,
    pub device_keys: Box<RawValue>,
    pub one_time_keys: Vec<(String, Box<RawValue>)>,
    pub fallback_keys: Vec<(String, Box<RawValue>)>,
}

pub async fn current(services: &Services, user: &UserId) -> Result<Option<DehydratedDevice>> {
    let user = user.to_owned();
    services.db.run(move |db| Ok(DEHYDRATED_DEVICES.get(db, &user)?)).await
}

/// Stores a new dehydrated device, replacing (and deleting) the previous one.
pub async fn put(services: &Services, user: &UserId, device: NewDehydratedDevice) -> Result<()> {
    let previous = current(services, user).await?;
    let is_previous = previous.as_ref().is_some_and(|p| p.device_id == device.device_id);
    if !is_previous && services.sessions.device(user, &device.device_id).await?.is_some() {
        return Err(Error::invalid_param("That device ID belongs to one of your devices"));
    }
    if let Some(previous) = previous {
        services.sessions.delete_devices(user, vec![previous.device_id]).await?;
    }
    services.sessions.create_device_without_token(user, &device.device_id, device.display_name).await?;
    services
        .keys
        .upload(user, &device.device_id, Some(device.device_keys), device.one_time_keys, device.fallback_keys)
        .await?;
    let record = DehydratedDevice { device_id: device.device_id, device_data: device.device_data };
    let user = user.to_owned();
    services
        .db
        .run(move |db| {
            let mut batch = Batch::new();
            batch.put(&DEHYDRATED_DEVICES, &user, &record)?;
            Ok(db.write(batch)?)
        })
        .await
}

/// Deletes the dehydrated device; returns its ID.
pub async fn delete(services: &Services, user: &UserId) -> Result<OwnedDeviceId> {
    let record = current(services, user).await?.ok_or_else(|| Error::not_found("No dehydrated device"))?;
    services.sessions.delete_devices(user, vec![record.device_id.clone()]).await?;
    let owner = user.to_owned();
    services
        .db
        .run(move |db| {
            let mut batch = Batch::new();
            batch.delete(&DEHYDRATED_DEVICES, &owner);
            Ok(db.write(batch)?)
        })
        .await?;
    Ok(record.device_id)
}

/// The dehydrated device's to-device events after `next_batch` (acknowledging what came before
/// it), with the token for the next call.
pub async fn events(
    services: &Services,
    user: &UserId,
    device: &DeviceId,
    next_batch: Option<&str>,
) -> Result<(Vec<ToDeviceMessage>, Option<String>)> {
    let record = current(services, user).await?.ok_or_else(|| Error::not_found("No dehydrated device"))?;
    if record.device_id != device {
        return Err(Error::not_found("That is not your dehydrated device"));
    }
    let after = match next_batch {
        Some(token) => token.parse().map_err(|_| Error::invalid_param("Invalid next_batch"))?,
        None => 0,
    };
    if after > 0 {
        services.to_device.acknowledge(user, device, after).await?;
    }
    let pending = services.to_device.pending(user, device, after, EVENTS_PER_CALL).await?;
    let next = pending.last().map(|(position, _)| position.to_string()).or_else(|| next_batch.map(str::to_owned));
    Ok((pending.into_iter().map(|(_, message)| message).collect(), next))
}
