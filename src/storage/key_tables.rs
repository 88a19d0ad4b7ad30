//! End-to-end encryption key tables: device keys, one-time and fallback keys, cross-signing
//! keys, signatures uploaded separately, and the stream of users whose keys changed.

use ruma::{OwnedDeviceId, OwnedUserId};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{Table, codec::JsonValue};

/// (user, device) -> the device keys as the device signed them.
pub const DEVICE_KEYS: Table<(OwnedUserId, OwnedDeviceId), Box<RawValue>> = Table::new("device_keys");
/// (user, device, "algorithm:key id") -> an unclaimed one-time key.
pub const ONE_TIME_KEYS: Table<(OwnedUserId, OwnedDeviceId, String), Box<RawValue>> = Table::new("one_time_keys");
/// (user, device, algorithm, n) -> "algorithm:key id": the device's one-time keys in the order
/// they were uploaded (`n` counts up per device and algorithm), which claims follow (MSC4225).
/// Keys uploaded before this index existed have no row; they are claimed after the others.
pub const ONE_TIME_KEY_ORDER: Table<(OwnedUserId, OwnedDeviceId, String, u64), String> =
    Table::new("one_time_key_order");
/// (user, device, algorithm) -> the device's fallback key for that algorithm.
pub const FALLBACK_KEYS: Table<(OwnedUserId, OwnedDeviceId, String), FallbackKey> = Table::new("fallback_keys");
/// (user, "master" | "self_signing" | "user_signing") -> the cross-signing key.
pub const CROSS_SIGNING_KEYS: Table<(OwnedUserId, String), Box<RawValue>> = Table::new("cross_signing_keys");
/// (target user, target key ID, signer user, signer key ID) -> signature, from
/// `/keys/signatures/upload`; merged into the keys when they are queried.
pub const KEY_SIGNATURES: Table<(OwnedUserId, String, OwnedUserId, String), String> = Table::new("key_signatures");
/// Stream position -> the user whose device list or keys changed.
pub const KEY_CHANGES: Table<u64, OwnedUserId> = Table::new("key_changes");

/// (user, device, position) -> a to-device message waiting for the device's next sync.
pub const TO_DEVICE: Table<(OwnedUserId, OwnedDeviceId, u64), ToDeviceMessage> = Table::new("to_device");
/// (sender, device, transaction ID) -> (): `sendToDevice` transactions already handled.
pub const TO_DEVICE_TRANSACTIONS: Table<(OwnedUserId, OwnedDeviceId, String), ()> =
    Table::new("to_device_transactions");
/// (destination server, position) -> a to-device message for a user of another server, kept
/// for the federation sender (which does not exist yet) to deliver as `m.direct_to_device`.
pub const TO_DEVICE_OUTBOUND: Table<(String, u64), OutboundToDevice> = Table::new("to_device_outbound");
/// Position -> (user, device): the to-device messages (in [`TO_DEVICE`]) for users an
/// application service receives to-device messages for (MSC4203), in the order they came;
/// removed once every such service has taken them.
pub const TO_DEVICE_APPSERVICE: Table<u64, Recipient> = Table::new("to_device_appservice");

/// The device a to-device message is for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Recipient {
    pub user: OwnedUserId,
    pub device: OwnedDeviceId,
}
impl JsonValue for Recipient {}

/// (user, backup version) -> the backup version's algorithm and etag.
pub const BACKUP_VERSIONS: Table<(OwnedUserId, u64), BackupVersion> = Table::new("backup_versions");
/// (user, backup version, room, session) -> the backed-up session key (KeyBackupData).
pub const BACKUP_KEYS: Table<(OwnedUserId, u64, String, String), Box<RawValue>> = Table::new("backup_keys");

/// User -> their dehydrated device (MSC3814): its ID and the encrypted device data.
pub const DEHYDRATED_DEVICES: Table<OwnedUserId, DehydratedDevice> = Table::new("dehydrated_devices");

pub const KEY_TABLES: &[&str] = &[
    DEHYDRATED_DEVICES.name,
    BACKUP_VERSIONS.name,
    BACKUP_KEYS.name,
    TO_DEVICE.name,
    TO_DEVICE_TRANSACTIONS.name,
    TO_DEVICE_OUTBOUND.name,
    TO_DEVICE_APPSERVICE.name,
    DEVICE_KEYS.name,
    ONE_TIME_KEYS.name,
    ONE_TIME_KEY_ORDER.name,
    FALLBACK_KEYS.name,
    CROSS_SIGNING_KEYS.name,
    KEY_SIGNATURES.name,
    KEY_CHANGES.name,
];

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FallbackKey {
    /// "algorithm:key id".
    pub key_id: String,
    pub key: Box<RawValue>,
    pub used: bool,
}
impl JsonValue for FallbackKey {}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ToDeviceMessage {
    pub sender: OwnedUserId,
    #[serde(rename = "type")]
    pub event_type: String,
    pub content: Box<RawValue>,
}
impl JsonValue for ToDeviceMessage {}

/// A to-device message waiting to go to another server.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutboundToDevice {
    pub sender: OwnedUserId,
    pub target: OwnedUserId,
    /// A device ID, or `*` for all the target's devices.
    pub device: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub content: Box<RawValue>,
    /// The `message_id` of the `m.direct_to_device` EDU: one per `sendToDevice` request.
    pub message_id: String,
}
impl JsonValue for OutboundToDevice {}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackupVersion {
    pub algorithm: Box<RawValue>,
    /// Changes whenever the version's keys change.
    pub etag: u64,
    /// Deleted versions keep their number so it is never reused.
    #[serde(default)]
    pub deleted: bool,
}
impl JsonValue for BackupVersion {}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DehydratedDevice {
    pub device_id: OwnedDeviceId,
    pub device_data: Box<RawValue>,
}
impl JsonValue for DehydratedDevice {}
