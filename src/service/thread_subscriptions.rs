//! Thread subscriptions (MSC4306, `/_matrix/client/unstable/io.element.msc4306/rooms/{roomId}/
//! thread/{threadRootId}/subscription`): a user follows a thread manually, or automatically
//! because of one of its events (a client subscribes when the user replies, say). Unsubscribing
//! records the stream position, and an automatic subscription caused by an event at or before it
//! is refused with 409, so a slow client cannot undo the user's choice. A manual subscription is
//! not turned into an automatic one.
//!
//! Every change is stamped with a new account data stream position (`bump_stamp`), written
//! under the account data lock (which also serialises each read-check-write here), so sliding
//! sync's MSC4308 extension can send the changes since a connection's last answer.

use ruma::{EventId, OwnedEventId, OwnedRoomId, RoomId, UserId};
use serde_json::{Value, json};

use super::Services;
use crate::{
    Error, Result,
    storage::{Batch, thread_subscription_tables::THREAD_SUBSCRIPTIONS},
};

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
    services
        .account_data
        .write_at_position(user, move |db, stamp| {
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
                    return Ok((None, ()));
                }
            }
            let mut batch = Batch::new();
            let value = json!({"automatic": cause_position.is_some(), "bump_stamp": stamp});
            batch.put(&THREAD_SUBSCRIPTIONS, &key, &value)?;
            Ok((Some(batch), ()))
        })
        .await
}

/// A change of one of a user's thread subscriptions (MSC4308's sliding sync extension).
pub struct SubscriptionChange {
    pub room: OwnedRoomId,
    pub root: String,
    /// `Some(automatic)` when subscribed, `None` when unsubscribed.
    pub automatic: Option<bool>,
    /// The account data stream position of the change.
    pub bump_stamp: u64,
}

/// The newest `limit` changes of `user`'s thread subscriptions at account data positions in
/// `(since, upto]` (all of them without `since`), newest first, and whether there were more.
/// Reads every subscription of the user: a user follows a modest number of threads.
pub async fn changes(
    services: &Services,
    user: &UserId,
    since: Option<u64>,
    upto: u64,
    limit: usize,
) -> Result<(Vec<SubscriptionChange>, bool)> {
    let user = user.to_owned();
    services
        .db
        .run(move |db| {
            let mut changes: Vec<SubscriptionChange> = THREAD_SUBSCRIPTIONS
                .scan_prefix(db, &(user,))?
                .into_iter()
                .filter_map(|((_, room, root), value)| {
                    // Subscriptions stored before stamps were kept count as the oldest.
                    let bump_stamp = value.get("bump_stamp").and_then(Value::as_u64).unwrap_or(0);
                    if value.get("automatic").is_none() && value.get("bump_stamp").is_none() {
                        return None;
                    }
                    let automatic = value.get("automatic").and_then(Value::as_bool);
                    Some(SubscriptionChange { room, root, automatic, bump_stamp })
                })
                .filter(|change| since.is_none_or(|since| change.bump_stamp > since) && change.bump_stamp <= upto)
                .collect();
            changes.sort_by_key(|change| std::cmp::Reverse(change.bump_stamp));
            let more = changes.len() > limit;
            changes.truncate(limit);
            Ok((changes, more))
        })
        .await
}

/// Unsubscribes `user` from the thread (also when not subscribed), remembering when.
pub async fn unsubscribe(services: &Services, user: &UserId, room: &RoomId, root: &EventId) -> Result<()> {
    check_root(services, user, room, root).await?;
    let key = (user.to_owned(), room.to_owned(), root.to_string());
    let now = services.rooms.current_position();
    services
        .account_data
        .write_at_position(user, move |_, stamp| {
            let mut batch = Batch::new();
            batch.put(&THREAD_SUBSCRIPTIONS, &key, &json!({"unsubscribed_at": now, "bump_stamp": stamp}))?;
            Ok((Some(batch), ()))
        })
        .await
}
