//! Keys of users of other servers, for local clients: `/keys/query` and `/keys/claim` for
//! remote users go to their servers (`/user/keys/query`, `/user/keys/claim`; one request per
//! server, all at once, each bounded by the client's timeout; a server that fails or does not
//! answer in time is reported in `failures`). Device lists of remote users who share a room
//! with the asking user are fetched with `/user/devices/{userId}` and cached (their stream ID
//! lets `m.device_list_update` EDUs keep the cache current, see `keys/remote.rs`); [`resync`]
//! fetches one again after an update showed a gap.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use ruma::{
    OneTimeKeyAlgorithm, OwnedDeviceId, OwnedServerName, OwnedUserId, UserId,
    api::federation::{
        device::get_devices,
        keys::{claim_keys, get_keys},
    },
};
use serde_json::{Value, json};

use crate::{Result, service::Services, storage::device_list_tables::RemoteDeviceList};

/// What remote servers answered to a key query, merged.
#[derive(Debug, Default)]
pub struct RemoteKeys {
    pub device_keys: BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, Value>>,
    pub master_keys: BTreeMap<OwnedUserId, Value>,
    pub self_signing_keys: BTreeMap<OwnedUserId, Value>,
    /// Server name -> why it gave nothing.
    pub failures: BTreeMap<String, Value>,
}

fn failure(error: impl std::fmt::Display) -> Value {
    json!({ "status": 503, "message": error.to_string() })
}

fn timed_out() -> Value {
    json!({ "status": 503, "message": "Timed out waiting for the server" })
}

fn to_value<T>(raw: &ruma::serde::Raw<T>) -> Option<Value> {
    serde_json::from_str(raw.json().get()).ok()
}

/// A `/user/devices` answer as a cached device list.
fn device_list(response: get_devices::v1::Response) -> RemoteDeviceList {
    let mut devices = BTreeMap::new();
    for device in response.devices {
        let Some(mut keys) = to_value(&device.keys).filter(Value::is_object) else { continue };
        if let Some(name) = device.device_display_name {
            keys["unsigned"]["device_display_name"] = json!(name);
        }
        devices.insert(device.device_id.to_string(), keys);
    }
    RemoteDeviceList {
        stream_id: response.stream_id.into(),
        devices,
        master_key: response.master_key.as_ref().and_then(to_value),
        self_signing_key: response.self_signing_key.as_ref().and_then(to_value),
    }
}

/// Fetches a remote user's device list with `/user/devices` and caches it. With `changed`,
/// local syncs are told the list changed (after a gap).
async fn fetch_device_list(services: &Services, user: &UserId, changed: bool) -> Result<RemoteDeviceList, Value> {
    let request = get_devices::v1::Request::new(user.to_owned());
    let response = services.federation.client.send(user.server_name(), request).await.map_err(failure)?;
    if response.user_id != user {
        return Err(failure(format!("/user/devices answered for {}", response.user_id)));
    }
    let list = device_list(response);
    services.keys.cache_remote_device_list(user, list.clone(), changed).await.map_err(failure)?;
    Ok(list)
}

/// After an `m.device_list_update` that showed a gap: fetches the user's list again.
pub async fn resync(services: &Services, user: &UserId) {
    if let Err(error) = fetch_device_list(services, user, true).await {
        tracing::debug!(%user, %error, "device list resync failed");
    }
}

fn add_list(out: &mut RemoteKeys, user: &UserId, list: &RemoteDeviceList, only: &[OwnedDeviceId]) {
    let devices = list
        .devices
        .iter()
        .filter(|(device, _)| only.is_empty() || only.iter().any(|wanted| wanted.as_str() == device.as_str()))
        .map(|(device, keys)| (OwnedDeviceId::from(device.as_str()), keys.clone()))
        .collect();
    out.device_keys.insert(user.to_owned(), devices);
    if let Some(master) = &list.master_key {
        out.master_keys.insert(user.to_owned(), master.clone());
    }
    if let Some(self_signing) = &list.self_signing_key {
        out.self_signing_keys.insert(user.to_owned(), self_signing.clone());
    }
}

/// The keys of users of other servers for `requester`: from the cache, or from their servers.
pub async fn query(
    services: &Arc<Services>,
    requester: &UserId,
    wanted: BTreeMap<OwnedUserId, Vec<OwnedDeviceId>>,
    timeout: Duration,
) -> Result<RemoteKeys> {
    let mut out = RemoteKeys::default();
    // Users sharing a room with the requester: their server keeps this one informed, so their
    // list is cached (`/user/devices`). Others are asked with `/user/keys/query`, per server.
    let mut tracked = Vec::new();
    let mut by_server: BTreeMap<OwnedServerName, BTreeMap<OwnedUserId, Vec<OwnedDeviceId>>> = BTreeMap::new();
    for (user, devices) in wanted {
        if services.rooms.share_a_room(requester, &user).await? {
            match services.keys.remote_device_list(&user).await? {
                Some(list) => add_list(&mut out, &user, &list, &devices),
                None => tracked.push((user, devices)),
            }
        } else {
            by_server.entry(user.server_name().to_owned()).or_default().insert(user, devices);
        }
    }

    enum Answer {
        Devices(OwnedUserId, Vec<OwnedDeviceId>, Result<RemoteDeviceList, Value>),
        Keys(OwnedServerName, Result<get_keys::v1::Response, Value>),
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (user, devices) in tracked {
        let services = services.clone();
        tasks.spawn(async move {
            let result = match tokio::time::timeout(timeout, fetch_device_list(&services, &user, false)).await {
                Ok(result) => result,
                Err(_) => Err(timed_out()),
            };
            Answer::Devices(user, devices, result)
        });
    }
    for (server, users) in by_server {
        let client = services.federation.client.clone();
        tasks.spawn(async move {
            let request = get_keys::v1::Request::new(users);
            let result = match tokio::time::timeout(timeout, client.send(&server, request)).await {
                Ok(result) => result.map_err(failure),
                Err(_) => Err(timed_out()),
            };
            Answer::Keys(server, result)
        });
    }
    while let Some(joined) = tasks.join_next().await {
        let Ok(answer) = joined else { continue };
        match answer {
            Answer::Devices(user, devices, Ok(list)) => add_list(&mut out, &user, &list, &devices),
            Answer::Devices(user, _, Err(error)) => {
                out.failures.insert(user.server_name().to_string(), error);
            }
            Answer::Keys(server, Ok(response)) => {
                // Only what the server may speak for.
                let own = |user: &OwnedUserId| user.server_name() == server;
                for (user, devices) in response.device_keys.into_iter().filter(|(user, _)| own(user)) {
                    let devices = devices.iter().filter_map(|(id, raw)| Some((id.clone(), to_value(raw)?))).collect();
                    out.device_keys.insert(user, devices);
                }
                for (user, key) in response.master_keys.iter().filter(|(user, _)| own(user)) {
                    if let Some(key) = to_value(key) {
                        out.master_keys.insert(user.clone(), key);
                    }
                }
                for (user, key) in response.self_signing_keys.iter().filter(|(user, _)| own(user)) {
                    if let Some(key) = to_value(key) {
                        out.self_signing_keys.insert(user.clone(), key);
                    }
                }
            }
            Answer::Keys(server, Err(error)) => {
                out.failures.insert(server.to_string(), error);
            }
        }
    }
    Ok(out)
}

/// Claimed one-time keys: user -> device -> key ID -> key.
pub type Claimed = BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, BTreeMap<String, Value>>>;

/// Claims one-time keys of users of other servers from their servers, all at once.
pub async fn claim(
    services: &Services,
    wanted: BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, OneTimeKeyAlgorithm>>,
    timeout: Duration,
) -> (Claimed, BTreeMap<String, Value>) {
    let mut by_server: BTreeMap<OwnedServerName, BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, OneTimeKeyAlgorithm>>> =
        BTreeMap::new();
    for (user, devices) in wanted {
        by_server.entry(user.server_name().to_owned()).or_default().insert(user, devices);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (server, claims) in by_server {
        let client = services.federation.client.clone();
        tasks.spawn(async move {
            let request = claim_keys::v1::Request::new(claims);
            let result = match tokio::time::timeout(timeout, client.send(&server, request)).await {
                Ok(result) => result.map_err(failure),
                Err(_) => Err(timed_out()),
            };
            (server, result)
        });
    }
    let mut claimed = Claimed::new();
    let mut failures = BTreeMap::new();
    while let Some(joined) = tasks.join_next().await {
        let Ok((server, result)) = joined else { continue };
        match result {
            Ok(response) => {
                for (user, devices) in
                    response.one_time_keys.into_iter().filter(|(user, _)| user.server_name() == server)
                {
                    let devices: BTreeMap<_, _> = devices
                        .into_iter()
                        .map(|(device, keys)| {
                            let keys = keys.iter().filter_map(|(id, raw)| Some((id.to_string(), to_value(raw)?)));
                            (device, keys.collect::<BTreeMap<_, _>>())
                        })
                        .filter(|(_, keys)| !keys.is_empty())
                        .collect();
                    if !devices.is_empty() {
                        claimed.insert(user, devices);
                    }
                }
            }
            Err(error) => {
                failures.insert(server.to_string(), error);
            }
        }
    }
    (claimed, failures)
}
