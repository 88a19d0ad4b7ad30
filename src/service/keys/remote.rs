//! Device lists across servers, the key side of it:
//! - what other servers are told about local users: each device with its keys and display name
//!   (`/user/devices`, `/user/keys/query`), and the changes since the last announcement as
//!   `m.device_list_update` EDUs (one per device, chained by a per-user stream ID) and
//!   `m.signing_key_update` EDUs ([`Keys::announcements`]);
//! - the cached device lists of users of other servers: filled by `/user/keys/query` or
//!   `/user/devices` answers, updated in place by an `m.device_list_update` that follows on
//!   from the cached stream ID, and dropped (the caller resyncs) when an update shows a gap.
//!   Every remote update is also recorded in the key-change stream, so local syncs list the
//!   user in `device_lists.changed`.

use std::collections::BTreeMap;

use ruma::{OwnedDeviceId, OwnedUserId, UserId};
use serde_json::{Value, json};

use super::{Keys, merge_signatures, record_key_change};
use crate::{
    Error, Result,
    storage::{
        Batch, Db,
        device_list_tables::{
            DEVICE_LIST_STREAM, DEVICES_ANNOUNCED, REMOTE_DEVICE_LISTS, RemoteDeviceList, SIGNING_KEYS_ANNOUNCED,
        },
        key_tables::{CROSS_SIGNING_KEYS, DEVICE_KEYS},
        tables::DEVICES,
    },
};

/// A local device as other servers see it.
#[derive(Debug, Clone, PartialEq)]
pub struct FederatedDevice {
    pub device_id: OwnedDeviceId,
    pub display_name: Option<String>,
    /// The device keys with later signatures merged in; `None` before the device uploaded any.
    pub keys: Option<Value>,
}

/// What an `m.device_list_update` did to the cache.
#[derive(Debug, PartialEq, Eq)]
pub enum RemoteUpdate {
    /// Applied to the cached list (or nothing was cached: the next query fetches it).
    Applied,
    /// Its `prev_id` names an update this server never saw: the cache was dropped and the
    /// list should be fetched again with `/user/devices`.
    Gap,
}

/// The local user's devices (with or without keys) as other servers see them.
fn federated_devices(db: &Db, user: &UserId) -> Result<Vec<FederatedDevice>> {
    let mut out = Vec::new();
    for ((_, device_id), record) in DEVICES.scan_prefix(db, &(user.to_owned(),))? {
        let keys = match DEVICE_KEYS.get(db, &(user.to_owned(), device_id.clone()))? {
            Some(raw) => {
                let mut keys: Value = serde_json::from_str(raw.get()).map_err(|e| Error::internal(e.to_string()))?;
                merge_signatures(db, &mut keys, user, device_id.as_str(), None)?;
                Some(keys)
            }
            None => None,
        };
        out.push(FederatedDevice { device_id, display_name: record.display_name, keys });
    }
    Ok(out)
}

/// A local cross-signing key with later signatures ("master" or "self_signing").
fn signing_key(db: &Db, user: &UserId, kind: &str) -> Result<Option<Value>> {
    let Some(raw) = CROSS_SIGNING_KEYS.get(db, &(user.to_owned(), kind.to_owned()))? else { return Ok(None) };
    let mut value: Value = serde_json::from_str(raw.get()).map_err(|e| Error::internal(e.to_string()))?;
    let public = value
        .get("keys")
        .and_then(Value::as_object)
        .and_then(|keys| keys.iter().find(|(id, _)| id.starts_with("ed25519:")))
        .and_then(|(_, key)| key.as_str().map(str::to_owned));
    if let Some(public) = public {
        merge_signatures(db, &mut value, user, &public, None)?;
    }
    Ok(Some(value))
}

impl Keys {
    /// A local user's devices for `/user/devices`, with the stream ID of the newest
    /// `m.device_list_update` about them and their master and self-signing keys.
    pub async fn federated_devices(
        &self,
        user: &UserId,
    ) -> Result<(Vec<FederatedDevice>, u64, Option<Value>, Option<Value>)> {
        let user = user.to_owned();
        self.db
            .run(move |db| {
                let stream_id = DEVICE_LIST_STREAM.get(db, &user)?.unwrap_or(0);
                Ok((
                    federated_devices(db, &user)?,
                    stream_id,
                    signing_key(db, &user, "master")?,
                    signing_key(db, &user, "self_signing")?,
                ))
            })
            .await
    }

    /// The EDUs that tell other servers how a local user's devices and cross-signing keys
    /// changed since the last announcement, and the writes that record this announcement (to
    /// be committed with the EDUs' queueing). Each changed, new or deleted device gets an
    /// `m.device_list_update` whose `prev_id` is the previous one's `stream_id`.
    pub async fn announcements(&self, user: &UserId) -> Result<(Vec<Value>, Batch)> {
        let user = user.to_owned();
        self.db
            .run(move |db| {
                let mut batch = Batch::new();
                let mut edus = Vec::new();
                let mut stream_id = DEVICE_LIST_STREAM.get(db, &user)?.unwrap_or(0);
                let announced: BTreeMap<OwnedDeviceId, String> = DEVICES_ANNOUNCED
                    .scan_prefix(db, &(user.clone(),))?
                    .into_iter()
                    .map(|((_, device), text)| (device, text))
                    .collect();
                let mut current = BTreeMap::new();
                for device in federated_devices(db, &user)? {
                    let text = json!({ "name": device.display_name, "keys": device.keys }).to_string();
                    current.insert(device.device_id.clone(), (device, text));
                }
                let mut update = |device_id: &OwnedDeviceId, device: Option<&FederatedDevice>| {
                    let prev_id: Vec<u64> = if stream_id == 0 { Vec::new() } else { vec![stream_id] };
                    stream_id += 1;
                    let mut content = json!({
                        "user_id": user,
                        "device_id": device_id,
                        "stream_id": stream_id,
                        "prev_id": prev_id,
                        "deleted": device.is_none(),
                    });
                    if let Some(device) = device {
                        if let Some(name) = &device.display_name {
                            content["device_display_name"] = json!(name);
                        }
                        if let Some(keys) = &device.keys {
                            content["keys"] = keys.clone();
                        }
                    }
                    edus.push(json!({ "edu_type": "m.device_list_update", "content": content }));
                };
                for (device_id, (device, text)) in &current {
                    if announced.get(device_id) != Some(text) {
                        update(device_id, Some(device));
                        batch.put(&DEVICES_ANNOUNCED, &(user.clone(), device_id.clone()), text)?;
                    }
                }
                for device_id in announced.keys().filter(|id| !current.contains_key(*id)) {
                    update(device_id, None);
                    batch.delete(&DEVICES_ANNOUNCED, &(user.clone(), device_id.clone()));
                }
                batch.put(&DEVICE_LIST_STREAM, &user, &stream_id)?;

                let mut signing = json!({ "user_id": user });
                let mut signing_changed = false;
                for (kind, field) in [("master", "master_key"), ("self_signing", "self_signing_key")] {
                    let key = signing_key(db, &user, kind)?;
                    let text = key.as_ref().map(Value::to_string);
                    let row = (user.clone(), kind.to_owned());
                    if SIGNING_KEYS_ANNOUNCED.get(db, &row)? != text {
                        match &text {
                            Some(text) => batch.put(&SIGNING_KEYS_ANNOUNCED, &row, text)?,
                            None => batch.delete(&SIGNING_KEYS_ANNOUNCED, &row),
                        }
                        if let Some(key) = key {
                            signing[field] = key;
                            signing_changed = true;
                        }
                    }
                }
                if signing_changed {
                    edus.push(json!({ "edu_type": "m.signing_key_update", "content": signing }));
                }
                Ok((edus, batch))
            })
            .await
    }

    /// The cached device list of a user of another server.
    pub async fn remote_device_list(&self, user: &UserId) -> Result<Option<RemoteDeviceList>> {
        let user = user.to_owned();
        self.db.run(move |db| Ok(REMOTE_DEVICE_LISTS.get(db, &user)?)).await
    }

    /// Caches a remote user's device list as their server gave it. With `changed`, the user is
    /// also recorded in the key-change stream (a resync after a gap).
    pub async fn cache_remote_device_list(&self, user: &UserId, list: RemoteDeviceList, changed: bool) -> Result<()> {
        let user = user.to_owned();
        let (changes, notifier) = (self.changes.clone(), self.notifier.clone());
        self.lock
            .run(&self.db, move |db| {
                let mut batch = Batch::new();
                // An update applied meanwhile may be newer than this answer.
                if let Some(cached) = REMOTE_DEVICE_LISTS.get(db, &user)?
                    && cached.stream_id > list.stream_id
                {
                    return Ok(());
                }
                batch.put(&REMOTE_DEVICE_LISTS, &user, &list)?;
                let reserved = if changed { Some(record_key_change(&changes, &mut batch, &user)?) } else { None };
                db.write(batch)?;
                if reserved.is_some() {
                    drop(reserved);
                    notifier.poke();
                }
                Ok(())
            })
            .await
    }

    /// Applies an `m.device_list_update` for a user of another server (the EDU's content; its
    /// origin was checked) and records the change for local syncs.
    pub async fn apply_device_list_update(&self, content: Value) -> Result<RemoteUpdate> {
        let user: OwnedUserId = serde_json::from_value(content["user_id"].clone())
            .map_err(|e| Error::bad_json(format!("m.device_list_update without a valid user_id: {e}")))?;
        let device_id = content["device_id"]
            .as_str()
            .ok_or_else(|| Error::bad_json("m.device_list_update without a device_id"))?
            .to_owned();
        let stream_id = content["stream_id"].as_u64().unwrap_or(0);
        let prev_ids: Vec<u64> =
            content["prev_id"].as_array().map(|ids| ids.iter().filter_map(Value::as_u64).collect()).unwrap_or_default();
        let deleted = content["deleted"].as_bool().unwrap_or(false);
        let mut keys = content.get("keys").filter(|keys| keys.is_object()).cloned();
        if let (Some(keys), Some(name)) = (keys.as_mut(), content.get("device_display_name").and_then(Value::as_str)) {
            keys["unsigned"]["device_display_name"] = json!(name);
        }
        let (changes, notifier) = (self.changes.clone(), self.notifier.clone());
        self.lock
            .run(&self.db, move |db| {
                let mut batch = Batch::new();
                let reserved = record_key_change(&changes, &mut batch, &user)?;
                let mut outcome = RemoteUpdate::Applied;
                if let Some(mut cached) = REMOTE_DEVICE_LISTS.get(db, &user)? {
                    if stream_id <= cached.stream_id {
                        // Already applied (or older than the cached list).
                    } else if prev_ids.iter().all(|id| *id <= cached.stream_id) {
                        cached.stream_id = stream_id;
                        match (deleted, keys) {
                            (true, _) => {
                                cached.devices.remove(&device_id);
                            }
                            (false, Some(keys)) => {
                                cached.devices.insert(device_id, keys);
                            }
                            // A device without keys is not listed in key queries.
                            (false, None) => {}
                        }
                        batch.put(&REMOTE_DEVICE_LISTS, &user, &cached)?;
                    } else {
                        batch.delete(&REMOTE_DEVICE_LISTS, &user);
                        outcome = RemoteUpdate::Gap;
                    }
                }
                db.write(batch)?;
                drop(reserved);
                notifier.poke();
                Ok(outcome)
            })
            .await
    }

    /// Applies an `m.signing_key_update` for a user of another server and records the change.
    pub async fn apply_signing_key_update(
        &self,
        user: &UserId,
        master_key: Option<Value>,
        self_signing_key: Option<Value>,
    ) -> Result<()> {
        let user = user.to_owned();
        let (changes, notifier) = (self.changes.clone(), self.notifier.clone());
        self.lock
            .run(&self.db, move |db| {
                let mut batch = Batch::new();
                let reserved = record_key_change(&changes, &mut batch, &user)?;
                if let Some(mut cached) = REMOTE_DEVICE_LISTS.get(db, &user)? {
                    if master_key.is_some() {
                        cached.master_key = master_key;
                    }
                    if self_signing_key.is_some() {
                        cached.self_signing_key = self_signing_key;
                    }
                    batch.put(&REMOTE_DEVICE_LISTS, &user, &cached)?;
                }
                db.write(batch)?;
                drop(reserved);
                notifier.poke();
                Ok(())
            })
            .await
    }
}
