//! Thread subscriptions (MSC4306, `/_matrix/client/unstable/io.element.msc4306/rooms/{roomId}/
//! thread/{threadRootId}/subscription`): a user follows a thread manually, or automatically
//! because of one of its events (a client subscribes when the user replies, say). Unsubscribing
//! records the stream position, and an automatic subscription caused by an event at or before it
//! is refused with 409, so a slow client cannot undo the user's choice. A manual subscription is
//! not turned into an automatic one.

use ruma::{EventId, OwnedEventId, RoomId, UserId};
use serde_json::{Value, json};

use super::Services;
use crate::{
    Error, Result,
    storage::{Batch, Db, WriteLock, thread_subscription_tables::THREAD_SUBSCRIPTIONS},
};

pub struct ThreadSubscriptions {
    db: Db,
    /// Serialises the read-check-write of one subscription.
    lock: WriteLock,
}

impl ThreadSubscriptions {
    pub fn new(db: Db) -> Self {
        Self { db, lock: WriteLock::new() }
    }
}

fn not_in_thread() -> Error {
    Error::custom(
        http::StatusCode::BAD_REQUEST,
        "IO.ELEMENT.MSC4306.M_NOT_IN_THREAD",
        "The cause event is not in this thread",
    )
}

/// Checks that `root` is an event of `room` that `user` can see (404 otherwise).
async fn check_root(services: &Services, user: &UserId, room: &RoomId, root: &EventId) -> Result<()> {
    match services.rooms.event_for(user, root).await? {
        Some(event) if event.pdu.room_id == room => Ok(()),
        _ => Err(Error::not_found("No such thread")),
    }
}

/// The subscription of `user` to the thread: `Some(automatic)` while subscribed.
pub async fn get(services: &Services, user: &UserId, room: &RoomId, root: &EventId) -> Result<Option<bool>> {
    check_root(services, user, room, root).await?;
    let key = (user.to_owned(), room.to_owned(), root.to_string());
    let stored = services.db.run(move |db| Ok(THREAD_SUBSCRIPTIONS.get(db, &key)?)).await?;
    Ok(stored.and_then(|value| value.get("automatic").and_then(Value::as_bool)))
}

/// Subscribes `user` to the thread, manually or (with `cause`, an event of the thread)
/// automatically.
pub async fn subscribe(
    services: &Services,
    user: &UserId,
    room: &RoomId,
    root: &EventId,
    cause: Option<OwnedEventId>,
) -> Result<()> {
    check_root(services, user, room, root).await?;
    let cause_position = match cause {
        None => None,
        Some(cause) => {
            let event = services.rooms.event_for(user, &cause).await?.ok_or_else(not_in_thread)?;
            let content: Value = serde_json::from_str(event.pdu.content.get()).unwrap_or(Value::Null);
            let relation = content.get("m.relates_to");
            let in_thread = event.pdu.room_id == room
                && relation.and_then(|r| r.get("rel_type")).and_then(Value::as_str) == Some("m.thread")
                && relation.and_then(|r| r.get("event_id")).and_then(Value::as_str) == Some(root.as_str());
            if !in_thread {
                return Err(not_in_thread());
            }
            Some(event.meta.position.unwrap_or_default())
        }
    };
    let key = (user.to_owned(), room.to_owned(), root.to_string());
    let subscriptions = &services.thread_subscriptions;
    subscriptions
        .lock
        .run(&subscriptions.db, move |db| {
            let stored = THREAD_SUBSCRIPTIONS.get(db, &key)?;
            if let Some(position) = cause_position {
                let unsubscribed_at = stored.as_ref().and_then(|v| v.get("unsubscribed_at")).and_then(Value::as_u64);
                if unsubscribed_at.is_some_and(|at| position <= at) {
                    return Err(Error::custom(
                        http::StatusCode::CONFLICT,
                        "IO.ELEMENT.MSC4306.M_CONFLICTING_UNSUBSCRIPTION",
                        "The user unsubscribed from this thread after the cause event",
                    ));
                }
                if stored.as_ref().and_then(|v| v.get("automatic")).is_some() {
                    // Already subscribed (a manual subscription stays manual).
                    return Ok(());
                }
            }
            let mut batch = Batch::new();
            batch.put(&THREAD_SUBSCRIPTIONS, &key, &json!({"automatic": cause_position.is_some()}))?;
            Ok(db.write(batch)?)
        })
        .await
}

/// Unsubscribes `user` from the thread (also when not subscribed), remembering when.
pub async fn unsubscribe(services: &Services, user: &UserId, room: &RoomId, root: &EventId) -> Result<()> {
    check_root(services, user, room, root).await?;
    let key = (user.to_owned(), room.to_owned(), root.to_string());
    let now = services.rooms.current_position();
    let subscriptions = &services.thread_subscriptions;
    subscriptions
        .lock
        .run(&subscriptions.db, move |db| {
            let mut batch = Batch::new();
            batch.put(&THREAD_SUBSCRIPTIONS, &key, &json!({"unsubscribed_at": now}))?;
            Ok(db.write(batch)?)
        })
        .await
}
