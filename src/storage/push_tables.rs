//! Push tables: the notifications push rule evaluation produced (per user, and per user and room
//! for unread counts), the users' pushers, and the durable queue of notifications still to be
//! sent to push gateways.

use ruma::{OwnedRoomId, OwnedUserId, push::Action};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{Table, codec::JsonValue};

/// (user, stream position) -> a notification of the event at that position.
pub const NOTIFICATIONS: Table<(OwnedUserId, u64), NotificationRecord> = Table::new("notifications");
/// (user, room, stream position) -> what unread counts need of a notification.
pub const ROOM_NOTIFICATIONS: Table<(OwnedUserId, OwnedRoomId, u64), RoomNotification> =
    Table::new("room_notifications");
/// (user, app ID, pushkey) -> the pusher as the client set it.
pub const PUSHERS: Table<(OwnedUserId, String, String), PusherRecord> = Table::new("pushers");
/// (app ID, pushkey, user) -> (): who has a pusher with this pushkey (`append: false`).
pub const PUSHER_OWNERS: Table<(String, String, OwnedUserId), ()> = Table::new("pusher_owners");
/// (stream position, user ID) -> when it was queued: notifications of users with pushers,
/// waiting for delivery (oldest first).
pub const PUSH_QUEUE: Table<(u64, String), PushQueueEntry> = Table::new("push_queue");

pub const PUSH_TABLES: &[&str] =
    &[NOTIFICATIONS.name, ROOM_NOTIFICATIONS.name, PUSHERS.name, PUSHER_OWNERS.name, PUSH_QUEUE.name];

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NotificationRecord {
    pub room_id: OwnedRoomId,
    pub event_id: String,
    pub actions: Vec<Action>,
    pub highlight: bool,
    /// When the event was accepted (milliseconds since the epoch).
    pub ts: u64,
    /// The thread root, for an event in a thread (`m.thread` relation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread: Option<String>,
}
impl JsonValue for NotificationRecord {}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoomNotification {
    pub highlight: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread: Option<String>,
}
impl JsonValue for RoomNotification {}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PushQueueEntry {
    /// When the notification was queued (milliseconds since the epoch): delivery gives up on it
    /// after a bounded time.
    pub queued_at: u64,
}
impl JsonValue for PushQueueEntry {}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PusherRecord {
    /// The spec's `Pusher` JSON, as the client set it.
    pub pusher: Box<RawValue>,
    /// When the pushkey was set (seconds since the epoch), sent to the gateway as `pushkey_ts`.
    pub pushkey_ts: u64,
}
impl JsonValue for PusherRecord {}
