//! Push rule evaluation when an event is persisted: for every local recipient of a new event,
//! ruma's `Ruleset::get_actions` with the room's member count, the recipient's display name and
//! the room's power levels (so `@room` highlights when the sender may notify the room). Events
//! that notify become rows of the notification tables, written into the event's own write batch.
//!
//! Why in the batch and not in a background task: the event, its notifications and (for users
//! with pushers) its entry in the durable push queue commit together, so a crash can neither
//! lose a notification nor count one for an event that was never stored, and a sync that sees
//! an event always sees its counts. The cost is one rule evaluation per local member per event,
//! on the blocking pool under the room's lock, before the event's stream position is taken; the
//! rules are read from the user's account data (one point read each) and parsed once per change
//! ([`RulesetCache`]).

use std::{
    future::Future,
    pin::pin,
    sync::Arc,
    task::{Context, Poll, Waker},
};

use ruma::{
    OwnedRoomId, OwnedUserId, UInt,
    push::{Action, FlattenedJson, PushConditionPowerLevelsCtx, PushConditionRoomCtx, Ruleset},
    serde::Raw,
};
use serde_json::value::RawValue;

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
    Ok(ruleset_from(user, ACCOUNT_DATA.get(db, &key)?.as_deref().map(RawValue::get)))
}

/// The ruleset stored `m.push_rules` content holds, or the spec's defaults.
fn ruleset_from(user: &ruma::UserId, stored: Option<&str>) -> Ruleset {
    stored
        .and_then(|json| serde_json::from_str::<PushRulesContent>(json).ok())
        .map_or_else(|| Ruleset::server_default(user), |content| content.global)
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

/// The actions of the first rule of `ruleset` that applies to the (flattened) event, as ruma's
/// `Ruleset::get_actions` decides them (the same order and the same skip of the recipient's own
/// events), on an event flattened once for all recipients.
async fn first_match(ruleset: &Ruleset, event: &FlattenedJson, ctx: &PushConditionRoomCtx) -> Vec<Action> {
    if event.get_str("sender").is_some_and(|sender| sender == ctx.user_id) {
        return Vec::new();
    }
    for rule in ruleset {
        if rule.applies(event, ctx).await {
            return rule.actions().to_vec();
        }
    }
    Vec::new()
}

/// The `m.thread` root of an event's content, if it is in a thread.
pub fn thread_root(content: &serde_json::Value) -> Option<String> {
    let relation = content.get("m.relates_to")?;
    (relation.get("rel_type")?.as_str()? == "m.thread")
        .then(|| relation.get("event_id")?.as_str().map(str::to_owned))?
}

/// A notification decided for one recipient, waiting for the event's stream position.
pub struct PendingNotification {
    user: OwnedUserId,
    actions: Vec<Action>,
    highlight: bool,
    /// Whether the user has a pusher, so the notification is queued for delivery.
    has_pusher: bool,
}

/// What an event's push evaluation decided: written by [`write_notifications`] once the event
/// has its stream position (evaluation comes first, so the position is held only for the write).
pub struct EventNotifications {
    room_id: OwnedRoomId,
    event_id: String,
    thread: Option<String>,
    notifications: Vec<PendingNotification>,
}

/// Evaluates the event (`event` as clients see it) for every recipient.
pub fn evaluate_notifications(
    db: &Db,
    rulesets: &RulesetCache,
    event: &serde_json::Value,
    room: &RoomFacts,
    recipients: &[Recipient],
) -> Result<EventNotifications> {
    let event_id = event.get("event_id").and_then(|v| v.as_str()).unwrap_or_default().to_owned();
    let thread = event.get("content").and_then(thread_root);
    let mut out = EventNotifications { room_id: room.room_id.clone(), event_id, thread, notifications: Vec::new() };
    if recipients.is_empty() {
        return Ok(out);
    }
    let raw: Raw<serde_json::Value> =
        Raw::new(event).map_err(|e| Error::internal(format!("cannot serialise event: {e}")))?;
    // Flattened once for every recipient: ruma's `Ruleset::get_actions` flattens the event again
    // on each call, which in a big room was most of a send's allocations.
    let flattened = FlattenedJson::from_raw(&raw);
    for recipient in recipients {
        let ruleset = rulesets.get(db, &recipient.user)?;
        let mut ctx = PushConditionRoomCtx::new(
            room.room_id.clone(),
            UInt::try_from(room.joined_members).unwrap_or(UInt::MAX),
            recipient.user.clone(),
            recipient.display_name.clone(),
        );
        ctx.power_levels = room.power_levels.clone();
        let Some(actions) = complete_now(first_match(&ruleset, &flattened, &ctx)) else { continue };
        if !actions.iter().any(Action::should_notify) {
            continue;
        }
        let highlight = actions.iter().any(Action::is_highlight);
        let user = recipient.user.clone();
        let has_pusher = !PUSHERS
            .scan_from(
                db,
                &(user.clone(), String::new(), String::new()),
                crate::storage::ScanDirection::Forward,
                1,
                |k| k.0 == user,
            )?
            .is_empty();
        out.notifications.push(PendingNotification { user, actions, highlight, has_pusher });
    }
    Ok(out)
}

/// Adds the notification rows of an evaluated event at `position` to `batch`, plus a push
/// queue entry for recipients with pushers. Returns whether anything was queued for delivery.
pub fn write_notifications(batch: &mut Batch, position: u64, decided: EventNotifications) -> Result<bool> {
    let ts = crate::service::now_ms();
    let mut queued = false;
    for notification in decided.notifications {
        let user = notification.user;
        batch.put(
            &NOTIFICATIONS,
            &(user.clone(), position),
            &NotificationRecord {
                room_id: decided.room_id.clone(),
                event_id: decided.event_id.clone(),
                actions: notification.actions,
                highlight: notification.highlight,
                ts,
                thread: decided.thread.clone(),
            },
        )?;
        batch.put(
            &ROOM_NOTIFICATIONS,
            &(user.clone(), decided.room_id.clone(), position),
            &RoomNotification { highlight: notification.highlight, thread: decided.thread.clone() },
        )?;
        if notification.has_pusher {
            batch.put(&PUSH_QUEUE, &(position, user.to_string()), &PushQueueEntry { queued_at: ts })?;
            queued = true;
        }
    }
    Ok(queued)
}

/// Parsed push rules per user. Each use still reads the user's stored rules (one point read)
/// and reuses the parsed ruleset while those bytes are unchanged, so no invalidation is needed
/// however the rules change; parsing, or building the defaults, is what costs in a big room.
#[derive(Default)]
pub struct RulesetCache(std::sync::Mutex<std::collections::HashMap<OwnedUserId, CachedRuleset>>);

/// A user's stored push rules (as stored, `None` for the defaults) and their parsed form.
type CachedRuleset = (Option<Box<str>>, Arc<Ruleset>);

/// Users whose rulesets are kept; past it the cache starts over.
const CACHED_RULESETS: usize = 20_000;

impl RulesetCache {
    pub fn get(&self, db: &Db, user: &ruma::UserId) -> Result<Arc<Ruleset>> {
        let key = (user.to_owned(), String::new(), PUSH_RULES_TYPE.to_owned());
        let stored: Option<Box<str>> = ACCOUNT_DATA.get(db, &key)?.map(|raw| raw.get().into());
        if let Ok(cache) = self.0.lock()
            && let Some((bytes, ruleset)) = cache.get(user)
            && *bytes == stored
        {
            return Ok(ruleset.clone());
        }
        let ruleset = Arc::new(ruleset_from(user, stored.as_deref()));
        if let Ok(mut cache) = self.0.lock() {
            if cache.len() >= CACHED_RULESETS {
                cache.clear();
            }
            cache.insert(user.to_owned(), (stored, ruleset.clone()));
        }
        Ok(ruleset)
    }
}
