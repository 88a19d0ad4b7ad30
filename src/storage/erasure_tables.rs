//! Tables of erasure and purging: the users whose data was erased (GDPR article 17), whose past
//! events are served redacted to anyone who was not joined when they were sent, and the state
//! of history purges an admin started.

use ruma::OwnedUserId;
use serde::{Deserialize, Serialize};

use super::{Table, codec::JsonValue};

/// User -> when they were erased, and whether their events were pruned on disk too.
pub const ERASED_USERS: Table<OwnedUserId, ErasedUser> = Table::new("erased_users");

/// Purge ID -> the purge's state (Synapse's `purge_history_status`, `delete_status`).
pub const PURGES: Table<String, PurgeRecord> = Table::new("purges");

pub const ERASURE_TABLES: &[&str] = &[ERASED_USERS.name, PURGES.name];

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErasedUser {
    /// When the account was erased (ms since the epoch).
    pub erased_ms: u64,
    /// When an admin pruned the content of every event the user sent (ms since the epoch).
    #[serde(default)]
    pub pruned_ms: Option<u64>,
}
impl JsonValue for ErasedUser {}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PurgeRecord {
    /// `active`, `complete` or `failed`.
    pub status: String,
    /// What went wrong, when `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The room purged.
    pub room_id: String,
    /// Events whose content was removed.
    #[serde(default)]
    pub pruned: u64,
}
impl JsonValue for PurgeRecord {}
