//! Thread subscriptions (MSC4306): whether a user follows a thread, manually or automatically,
//! or unsubscribed from it (and when, so an older automatic subscription cannot come back).

use ruma::{OwnedRoomId, OwnedUserId};

use super::Table;

/// (user, room, thread root event ID) -> `{"automatic": bool}` while subscribed, or
/// `{"unsubscribed_at": stream position}` after an unsubscription.
pub const THREAD_SUBSCRIPTIONS: Table<(OwnedUserId, OwnedRoomId, String), serde_json::Value> =
    Table::new("thread_subscriptions");

pub const THREAD_SUBSCRIPTION_TABLES: &[&str] = &[THREAD_SUBSCRIPTIONS.name];
