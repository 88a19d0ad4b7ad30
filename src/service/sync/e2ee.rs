//! The device parts of a sync: to-device messages for the syncing device (acknowledged, so
//! deleted, when a later sync presents a token past them), the users whose device keys changed
//! (those sharing a room with the user), and the device's one-time and fallback key counts.

use std::collections::BTreeMap;

use ruma::{DeviceId, OneTimeKeyAlgorithm, UInt, UserId, api::client::sync::sync_events::DeviceLists};

use super::{SyncToken, raw_json};
use crate::{Result, service::Services};

/// To-device messages delivered per sync; the rest come with the next one.
const TO_DEVICE_LIMIT: usize = 100;

/// To-device events for the response, and the to-device position its token carries.
pub(super) async fn to_device<T>(
    services: &Services,
    user: &UserId,
    device: &DeviceId,
    since: Option<SyncToken>,
    now: u64,
) -> Result<(Vec<ruma::serde::Raw<T>>, u64)> {
    let after = since.map_or(0, |s| s.to_device);
    if after > 0 {
        services.to_device.acknowledge(user, device, after).await?;
    }
    let pending = services.to_device.pending(user, device, after, TO_DEVICE_LIMIT).await?;
    let full = pending.len() >= TO_DEVICE_LIMIT;
    let mut events = Vec::with_capacity(pending.len());
    let mut last = after;
    for (position, message) in pending.into_iter().filter(|(position, _)| *position <= now) {
        events.push(raw_json(&serde_json::json!({
            "type": message.event_type,
            "sender": message.sender,
            "content": message.content,
        }))?);
        last = position;
    }
    // Everything up to `now` was delivered unless the page was full.
    Ok((events, if full { last } else { now.max(after) }))
}

/// Users whose keys changed in `(since, now]` and who share a room with `user` (or are `user`).
pub(super) async fn device_lists(services: &Services, user: &UserId, since: u64, now: u64) -> Result<DeviceLists> {
    let mut lists = DeviceLists::new();
    if since >= now {
        return Ok(lists);
    }
    for changed in services.keys.changed_users(since, now).await? {
        if changed == user || services.rooms.share_a_room(user, &changed).await? {
            lists.changed.push(changed);
        }
    }
    Ok(lists)
}

/// The device's one-time key counts and unused fallback key algorithms.
pub(super) async fn key_counts(
    services: &Services,
    user: &UserId,
    device: &DeviceId,
) -> Result<(BTreeMap<OneTimeKeyAlgorithm, UInt>, Vec<OneTimeKeyAlgorithm>)> {
    let counts = services
        .keys
        .one_time_key_counts(user, device)
        .await?
        .into_iter()
        .map(|(algorithm, count)| {
            (OneTimeKeyAlgorithm::from(algorithm.as_str()), UInt::try_from(count).unwrap_or(UInt::MAX))
        })
        .collect();
    let fallback = services
        .keys
        .unused_fallback_key_types(user, device)
        .await?
        .iter()
        .map(|algorithm| OneTimeKeyAlgorithm::from(algorithm.as_str()))
        .collect();
    Ok((counts, fallback))
}
