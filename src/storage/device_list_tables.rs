//! Device lists across servers: what this server last announced to other servers about each
//! local user's devices and cross-signing keys (so a change is sent as the difference, with a
//! per-user stream ID), and the cached device lists of users of other servers (kept up to date
//! by their `m.device_list_update` and `m.signing_key_update` EDUs).

use std::collections::BTreeMap;

use ruma::{OwnedDeviceId, OwnedUserId};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Table, codec::JsonValue};

/// (local user, device) -> the device as last announced: its keys and display name, as JSON.
pub const DEVICES_ANNOUNCED: Table<(OwnedUserId, OwnedDeviceId), String> = Table::new("devices_announced");
/// (local user, "master" | "self_signing") -> the cross-signing key as last announced.
pub const SIGNING_KEYS_ANNOUNCED: Table<(OwnedUserId, String), String> = Table::new("signing_keys_announced");
/// Local user -> the stream ID of the newest `m.device_list_update` for them.
pub const DEVICE_LIST_STREAM: Table<OwnedUserId, u64> = Table::new("device_list_stream");
/// User of another server -> their devices and cross-signing keys, as their server gave them.
pub const REMOTE_DEVICE_LISTS: Table<OwnedUserId, RemoteDeviceList> = Table::new("remote_device_lists");
/// (origin server, message ID) -> (): `m.direct_to_device` EDUs already delivered.
pub const TO_DEVICE_RECEIVED: Table<(String, String), u64> = Table::new("to_device_received");

pub const DEVICE_LIST_TABLES: &[&str] = &[
    DEVICES_ANNOUNCED.name,
    SIGNING_KEYS_ANNOUNCED.name,
    DEVICE_LIST_STREAM.name,
    REMOTE_DEVICE_LISTS.name,
    TO_DEVICE_RECEIVED.name,
];

/// A remote user's cached device list.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RemoteDeviceList {
    /// The stream ID of the newest update applied (`/user/devices` or an EDU).
    pub stream_id: u64,
    /// Device ID -> its device keys (with `unsigned.device_display_name` when known).
    pub devices: BTreeMap<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_key: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_signing_key: Option<Value>,
}
impl JsonValue for RemoteDeviceList {}
