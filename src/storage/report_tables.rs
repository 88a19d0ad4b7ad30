//! Reports of whole rooms (`/rooms/{roomId}/report`) and of users (`/users/{userId}/report`),
//! kept for the server's admins. Event reports live in `room_tables::EVENT_REPORTS`.

use ruma::{OwnedRoomId, OwnedUserId};

use super::Table;

/// (room, reporter) -> `reason` and `received_ts`; a second report by the same user replaces the
/// first.
pub const ROOM_REPORTS: Table<(OwnedRoomId, OwnedUserId), serde_json::Value> = Table::new("room_reports");

/// (reported user, reporter) -> `reason` and `received_ts`; a second report replaces the first.
pub const USER_REPORTS: Table<(OwnedUserId, OwnedUserId), serde_json::Value> = Table::new("user_reports");

pub const REPORT_TABLES: &[&str] = &[ROOM_REPORTS.name, USER_REPORTS.name];
