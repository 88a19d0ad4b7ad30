//! Tables of the admin API: registration tokens admins manage (Synapse's
//! `/_synapse/admin/v1/registration_tokens`), rooms admins blocked, and each user's server notices
//! room.

use ruma::{OwnedRoomId, OwnedUserId};
use serde::{Deserialize, Serialize};

use super::{Table, codec::JsonValue};

/// Token -> its limits and use.
pub const REGISTRATION_TOKENS: Table<String, RegistrationTokenRecord> = Table::new("registration_tokens");

/// Room -> who blocked it: nobody of this server may join it or be invited to it.
pub const BLOCKED_ROOMS: Table<OwnedRoomId, BlockedRoom> = Table::new("blocked_rooms");

/// User -> the room their server notices go to.
pub const SERVER_NOTICE_ROOMS: Table<OwnedUserId, OwnedRoomId> = Table::new("server_notice_rooms");

pub const ADMIN_TABLES: &[&str] = &[REGISTRATION_TOKENS.name, BLOCKED_ROOMS.name, SERVER_NOTICE_ROOMS.name];

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RegistrationTokenRecord {
    /// How many registrations the token allows; `None` for no limit.
    pub uses_allowed: Option<u64>,
    /// Registrations that used it.
    pub completed: u64,
    /// When it stops being valid (ms since the epoch); `None` for never.
    pub expiry_time: Option<u64>,
}
impl JsonValue for RegistrationTokenRecord {}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlockedRoom {
    pub user_id: String,
}
impl JsonValue for BlockedRoom {}
