//! Application service tables: where each service's sender is in the event stream and the
//! transaction it is delivering. The queue of a service is the event stream after its cursor,
//! so it survives restarts without copying events; the one transaction in flight is stored
//! whole, so a retry after a restart sends the same ID with the same events. Also the rooms
//! services list in their networks' room directories.

use ruma::OwnedRoomId;
use serde::{Deserialize, Serialize};

use super::{Table, codec::JsonValue};

/// Service ID -> its sender's progress.
pub const APPSERVICE_SENDERS: Table<String, SenderRecord> = Table::new("appservice_senders");

/// (service ID, network ID, room) -> (): rooms a service published in its network's list of the
/// room directory (`PUT /directory/list/appservice/{networkId}/{roomId}`).
pub const APPSERVICE_ROOM_NETWORKS: Table<(String, String, OwnedRoomId), ()> = Table::new("appservice_room_networks");

pub const APPSERVICE_TABLES: &[&str] = &[APPSERVICE_SENDERS.name, APPSERVICE_ROOM_NETWORKS.name];

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SenderRecord {
    /// The last stream position looked at: events up to here are in a transaction or skipped.
    pub cursor: u64,
    /// The number of the next transaction.
    pub next_txn: u64,
    /// The transaction being delivered, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<PendingTxn>,
    /// The last position of the to-device list for services (`to_device_appservice`) looked at.
    #[serde(default)]
    pub to_device_cursor: u64,
}
impl JsonValue for SenderRecord {}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingTxn {
    pub txn_id: String,
    /// The events as clients see them, in stream order.
    pub events: Vec<serde_json::Value>,
    /// Ephemeral events (typing, receipts) for services with `receive_ephemeral`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ephemeral: Vec<serde_json::Value>,
    /// To-device messages for the service's users (MSC4203), with `to_user_id` and
    /// `to_device_id`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to_device: Vec<serde_json::Value>,
}
