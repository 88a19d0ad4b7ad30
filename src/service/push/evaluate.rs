//! Push rule evaluation when an event is persisted: for every local recipient of a new event,
//! ruma's `Ruleset::get_actions` with the room's member count, the recipient's display name and
//! the room's power levels (so `@room` highlights when the sender may notify the room). Events
//! that notify become rows of the notification tables, written into the event's own write batch.
//!
//! Why in the batch and not in a background task: the event, its notifications and (for users
//! with pushers) its entry in the durable push queue commit together, so a crash can neither
//! lose a notification nor count one for an event that was never stored, and a sync that sees
//! an event always sees its counts. The cost is one rule evaluation per local member per event,
//! on the blocking pool under the room's lock; the rules are read from the user's account data
//! (one point read each).

use std::{
    future::Future,
    pin::pin,
    task::{Context, Poll, Waker},
};

use ruma::{
    OwnedRoomId, OwnedUserId, UInt,
    push::{Action, PushConditionPowerLevelsCtx, PushConditionRoomCtx, Ruleset},
    serde::Raw,
};

use crate::{
    Error, Result,
    storage::{
        Batch, Db,
        push_tables::{
            NOTIFICATIONS, NotificationRecord, PUSH_QUEUE, PUSHERS, PushQueueEntry, ROOM_NOTIFICATIONS,
            RoomNotification,
        },
        tables::ACCOUNT_DATA,
    },
};

/// The account data type holding a user's push rules.
pub const PUSH_RULES_TYPE: &str = "m.push_rules";

#[derive(serde::Deserialize)]
struct PushRulesContent {
    global: Ruleset,
}

/// A local user who may be notified of an event, with their display name in the room.
#[derive(Clone)]
pub struct Recipient {
    pub user: OwnedUserId,
    pub display_name: String,
}

/// What the push conditions need to know about the room.
pub struct RoomFacts {
    pub room_id: OwnedRoomId,
    pub joined_members: u64,
    pub power_levels: Option<PushConditionPowerLevelsCtx>,
}

/// The user's push rules from storage: what they stored, or the spec's defaults.
pub fn stored_ruleset(db: &Db, user: &ruma::UserId) -> Result<Ruleset> {
    let key = (user.to_owned(), String::new(), PUSH_RULES_TYPE.to_owned());
    Ok(ACCOUNT_DATA
        .get(db, &key)?
        .and_then(|json| serde_json::from_str::<PushRulesContent>(json.get()).ok())
        .map_or_else(|| Ruleset::server_default(user), |content| content.global))
}

/// Runs a future that never waits. Ruma's rule evaluation is `async` only for MSC4306 thread
/// subscriptions, which are not enabled: without them it completes on its first poll, so it can
/// run here on the blocking pool inside the event's write. A future that does wait would be a
/// bug: it gives `None` (logged; the event is stored without notifications rather than failed).
fn complete_now<F: Future>(future: F) -> Option<F::Output> {
    let mut future = pin!(future);
    match future.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => Some(output),
        Poll::Pending => {
            tracing::error!("push rule evaluation unexpectedly waited; no notification recorded");
            None
        }
    }
}

/// The `m.thread` root of an event's content, if it is in a thread.
pub fn thread_root(content: &serde_json::Value) -> Option<String> {
    let relation = content.get("m.relates_to")?;
    (relation.get("rel_type")?.as_str()? == "m.thread")
        .then(|| relation.get("event_id")?.as_str().map(str::to_owned))?
}

/// Evaluates the event (`event` as clients see it) for every recipient and adds a notification
/// row for each one it notifies, plus a push queue entry for those with pushers. Returns whether
/// anything was queued for delivery.
pub fn record_notifications(
    db: &Db,
    batch: &mut Batch,
    event: &serde_json::Value,
    position: u64,
    room: &RoomFacts,
    recipients: &[Recipient],
) -> Result<bool> {
    if recipients.is_empty() {
        return Ok(false);
    }
    let raw: Raw<serde_json::Value> =
        Raw::new(event).map_err(|e| Error::internal(format!("cannot serialise event: {e}")))?;
    let event_id = event.get("event_id").and_then(|v| v.as_str()).unwrap_or_default().to_owned();
    let thread = event.get("content").and_then(thread_root);
    let ts = crate::service::now_ms();
    let mut queued = false;
    for recipient in recipients {
        let ruleset = stored_ruleset(db, &recipient.user)?;
        let mut ctx = PushConditionRoomCtx::new(
            room.room_id.clone(),
            UInt::try_from(room.joined_members).unwrap_or(UInt::MAX),
            recipient.user.clone(),
            recipient.display_name.clone(),
        );
        ctx.power_levels = room.power_levels.clone();
        let Some(actions) = complete_now(ruleset.get_actions(&raw, &ctx)).map(<[Action]>::to_vec) else { continue };
        if !actions.iter().any(Action::should_notify) {
            continue;
        }
        let highlight = actions.iter().any(Action::is_highlight);
        let user = recipient.user.clone();
        batch.put(
            &NOTIFICATIONS,
            &(user.clone(), position),
            &NotificationRecord {
                room_id: room.room_id.clone(),
                event_id: event_id.clone(),
                actions,
                highlight,
                ts,
                thread: thread.clone(),
            },
        )?;
        batch.put(
            &ROOM_NOTIFICATIONS,
            &(user.clone(), room.room_id.clone(), position),
            &RoomNotification { highlight, thread: thread.clone() },
        )?;
        if !PUSHERS
            .scan_from(
                db,
                &(user.clone(), String::new(), String::new()),
                crate::storage::ScanDirection::Forward,
                1,
                |k| k.0 == user,
            )?
            .is_empty()
        {
            batch.put(&PUSH_QUEUE, &(position, user.to_string()), &PushQueueEntry { queued_at: ts })?;
            queued = true;
        }
    }
    Ok(queued)
}
