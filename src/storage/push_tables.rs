//! Push tables: the notifications push rule evaluation produced (once per event for the room's
//! members who share its generic outcome; per user and room for the others, and per user for
//! those of them notified), the users' pushers, and the durable queue of notifications still to
//! be sent to push gateways.

use ruma::{OwnedRoomId, OwnedUserId, push::Action};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{Table, codec::JsonValue};

/// (user, stream position) -> a notification of the event at that position, for a user with an
/// outcome of their own (see `ROOM_NOTIFICATIONS`).
pub const NOTIFICATIONS: Table<(OwnedUserId, u64), NotificationRecord> = Table::new("notifications");
/// (user, room, stream position) -> a user's own outcome for the event at that position, where it
/// differs from the room's (including "not notified"); what unread counts need of it.
pub const ROOM_NOTIFICATIONS: Table<(OwnedUserId, OwnedRoomId, u64), RoomNotification> =
    Table::new("room_notifications");
/// (room, stream position) -> the notification of every local member joined at that position
/// who has no `ROOM_NOTIFICATIONS` row for it.
pub const ROOM_DEFAULT_NOTIFICATIONS: Table<(OwnedRoomId, u64), NotificationRecord> =
    Table::new("room_default_notifications");
/// (user, app ID, pushkey) -> the pusher as the client set it.
pub const PUSHERS: Table<(OwnedUserId, String, String), PusherRecord> = Table::new("pushers");
/// (app ID, pushkey, user) -> (): who has a pusher with this pushkey (`append: false`).
pub const PUSHER_OWNERS: Table<(String, String, OwnedUserId), ()> = Table::new("pusher_owners");
/// (stream position, user ID) -> when it was queued: notifications of users with pushers,
/// waiting for delivery (oldest first).
pub const PUSH_QUEUE: Table<(u64, String), PushQueueEntry> = Table::new("push_queue");

pub const PUSH_TABLES: &[&str] = &[
    NOTIFICATIONS.name,
    ROOM_NOTIFICATIONS.name,
    ROOM_DEFAULT_NOTIFICATIONS.name,
    PUSHERS.name,
    PUSHER_OWNERS.name,
    PUSH_QUEUE.name,
];

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
    /// Whether the event notifies the user (rows written before room-wide outcomes existed
    /// were all notifications).
    #[serde(default = "notified")]
    pub notify: bool,
}

fn notified() -> bool {
    true
}
impl JsonValue for RoomNotification {}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PushQueueEntry {
    /// When the notification was queued (milliseconds since the epoch): delivery gives up on it
    /// after a bounded time.
    pub queued_at: u64,
    /// The event's room, where the notification is the room's outcome
    /// (`ROOM_DEFAULT_NOTIFICATIONS`) rather than the user's own (`NOTIFICATIONS`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<OwnedRoomId>,
}
impl JsonValue for PushQueueEntry {}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PusherRecord {
    /// The spec's `Pusher` JSON, as the client set it.
    pub pusher: Box<RawValue>,
    /// When the pushkey was set (seconds since the epoch), sent to the gateway as `pushkey_ts`.
    pub pushkey_ts: u64,
    /// The device whose session set it: its pushers go with it (logout, device deletion), and a
    /// password change removes those of the other devices, as Synapse does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
}
impl JsonValue for PusherRecord {}
