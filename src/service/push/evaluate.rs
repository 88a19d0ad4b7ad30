//! Push rule evaluation when an event is persisted, with ruma's rule matching, for every local
//! recipient of a new event, on the room's member count, the recipient's display name and the
//! room's power levels (so `@room` highlights when the sender may notify the room).
//!
//! The cost does not grow with the room: recipients whose rules are the server defaults and
//! whom the event does not name share one evaluation, the event's generic outcome (see
//! `recipients.rs`), which is stored once per event for the whole room
//! (`room_default_notifications`). Only the others (custom rules, mentioned, named in the body,
//! the sender) are evaluated one by one, and only those whose outcome differs from the room's
//! get a row of their own (`room_notifications`, and `notifications` when it notifies).
//!
//! Why in the batch and not in a background task: the event, its notifications and (for users
//! with pushers) its entry in the durable push queue commit together, so a crash can neither
//! lose a notification nor count one for an event that was never stored, and a sync that sees
//! an event always sees its counts. It runs on the storage threads under the room's lock, before
//! the event's stream position is taken.

use std::{
    collections::HashSet,
    future::Future,
    pin::pin,
    sync::LazyLock,
    task::{Context, Poll, Waker},
};

use ruma::{
    OwnedRoomId, OwnedUserId, RoomId, UInt, UserId,
    push::{
        Action, AnyPushRuleRef, FlattenedJson, PushConditionPowerLevelsCtx, PushConditionRoomCtx, Ruleset,
        SoundTweakValue, Tweak,
    },
    serde::Raw,
};
use serde_json::value::RawValue;

use super::{
    defaults::{LEGACY_MENTION_RULES, default_ruleset, has_mentions},
    recipients::{EventScreen, PushProfiles, Recipient, RoomRecipients},
};
use crate::{
    Error, Result,
    storage::{
        Batch, Db,
        push_tables::{
            NOTIFICATIONS, NotificationRecord, PUSH_QUEUE, PushQueueEntry, ROOM_DEFAULT_NOTIFICATIONS,
            ROOM_NOTIFICATIONS, RoomNotification,
        },
        tables::ACCOUNT_DATA,
        thread_subscription_tables::THREAD_SUBSCRIPTIONS,
    },
};

/// The account data type holding a user's push rules.
pub const PUSH_RULES_TYPE: &str = "m.push_rules";

#[derive(serde::Deserialize)]
struct PushRulesContent {
    global: Ruleset,
}

/// What the push conditions need to know about the room.
pub struct RoomFacts {
    pub room_id: OwnedRoomId,
    pub joined_members: u64,
    pub power_levels: Option<PushConditionPowerLevelsCtx>,
}

/// The user's push rules from storage: what they stored, or the spec's defaults.
pub fn stored_ruleset(db: &Db, user: &UserId) -> Result<Ruleset> {
    let key = (user.to_owned(), String::new(), PUSH_RULES_TYPE.to_owned());
    Ok(ruleset_from(user, ACCOUNT_DATA.get(db, &key)?.as_deref().map(RawValue::get)))
}

/// The ruleset stored `m.push_rules` content holds, or the spec's defaults.
pub(super) fn ruleset_from(user: &UserId, stored: Option<&str>) -> Ruleset {
    stored.and_then(|json| serde_json::from_str::<PushRulesContent>(json).ok()).map_or_else(
        || default_ruleset(user),
        |content| {
            // Stored rules keep up with the server's defaults (their own `enabled` and
            // `actions` kept), so a new default rule reaches every user.
            let mut ruleset = content.global;
            ruleset.update_with_server_default(default_ruleset(user));
            ruleset
        },
    )
}

/// Runs a future that never waits. Ruma's rule evaluation is `async` only for MSC4306 thread
/// subscriptions, which are not enabled: without them it completes on its first poll, so it can
/// run here on the storage threads inside the event's write. A future that does wait would be a
/// bug: it gives `None` (logged; the event is stored without notifications rather than failed).
pub(super) fn complete_now<F: Future>(future: F) -> Option<F::Output> {
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
///
/// `thread` is `Some(subscribed)` when MSC4306's rules are on and the event is in a thread:
/// then the two `postcontent` rules (after the override and content rules, before the room,
/// sender and underride ones, as Synapse places them) decide, see [`thread_rule_actions`].
pub(super) async fn first_match(
    ruleset: &Ruleset,
    (event, has_mentions): (&FlattenedJson, bool),
    ctx: &PushConditionRoomCtx,
    thread: Option<bool>,
) -> Vec<Action> {
    if event.get_str("sender").is_some_and(|sender| sender == ctx.user_id) {
        return Vec::new();
    }
    for rule in ruleset {
        if let Some(subscribed) = thread
            && !matches!(rule, AnyPushRuleRef::Override(_) | AnyPushRuleRef::Content(_))
        {
            return thread_rule_actions(subscribed);
        }
        if has_mentions && LEGACY_MENTION_RULES.contains(&rule.rule_id()) {
            continue;
        }
        if rule.applies(event, ctx).await {
            return rule.actions().to_vec();
        }
    }
    thread.map(thread_rule_actions).unwrap_or_default()
}

/// MSC4306's default `postcontent` rules for an event in a thread:
/// `.io.element.msc4306.rule.unsubscribed_thread` (condition
/// `io.element.msc4306.thread_subscription` with `subscribed: false`, no actions: the event does
/// not notify) and `.io.element.msc4306.rule.subscribed_thread` (`subscribed: true`: notify with
/// the default sound). One of the two always applies to an event in a thread.
///
/// Ruma 0.17 has this condition, the `postcontent` kind and these rules only behind its
/// `unstable-msc4306` feature, which changes the types of every ruleset (and rebuilds ruma), so
/// the condition is evaluated here, the smallest piece: the rules are the server's defaults
/// only, not listed by `GET /pushrules` and not changeable by clients, and a condition of this
/// kind in a client's own rule never applies (ruma keeps it as a custom condition).
fn thread_rule_actions(subscribed: bool) -> Vec<Action> {
    match subscribed {
        false => Vec::new(),
        true => vec![Action::Notify, Action::SetTweak(Tweak::Sound(SoundTweakValue::Default))],
    }
}

/// Whether `user` is subscribed to the thread `root` of `room` (MSC4306), manually or
/// automatically.
fn subscribed_to_thread(db: &Db, user: &UserId, room: &RoomId, root: &str) -> Result<bool> {
    let key = (user.to_owned(), room.to_owned(), root.to_owned());
    Ok(THREAD_SUBSCRIPTIONS.get(db, &key)?.is_some_and(|value| value.get("automatic").is_some()))
}

/// The `m.thread` root of an event's content, if it is in a thread.
pub fn thread_root(content: &serde_json::Value) -> Option<String> {
    let relation = content.get("m.relates_to")?;
    (relation.get("rel_type")?.as_str()? == "m.thread")
        .then(|| relation.get("event_id")?.as_str().map(str::to_owned))?
}

/// The localpart of the user the generic outcome is evaluated for. No event that contains it
/// (in any case) gets a generic outcome: then every recipient is evaluated on their own.
pub(super) const GENERIC_LOCALPART: &str = "trellis.generic.recipient";

/// A user no event can name (see [`GENERIC_LOCALPART`]) and their server-default rules.
static GENERIC: LazyLock<Option<(OwnedUserId, Ruleset)>> = LazyLock::new(|| {
    let user = OwnedUserId::try_from(format!("@{GENERIC_LOCALPART}:trellis.invalid")).ok()?;
    let ruleset = default_ruleset(&user);
    Some((user, ruleset))
});

/// A recipient whose outcome is not the room's: what their rules gave.
pub struct OwnOutcome {
    user: OwnedUserId,
    /// Empty when the event does not notify them.
    actions: Vec<Action>,
    highlight: bool,
}

impl OwnOutcome {
    fn notifies(&self) -> bool {
        self.actions.iter().any(Action::should_notify)
    }
}

/// What an event's push evaluation decided: written by [`write_notifications`] once the event
/// has its stream position (evaluation comes first, so the position is held only for the write).
pub struct EventNotifications {
    room_id: OwnedRoomId,
    event_id: String,
    thread: Option<String>,
    /// The generic outcome when it notifies: every local joined member without an own outcome
    /// is notified with these actions (and whether they highlight).
    room_default: Option<(Vec<Action>, bool)>,
    /// Recipients (and the sender) whose outcome differs from the room's.
    own: Vec<OwnOutcome>,
    /// Recipients with a pusher whom the event notifies.
    queued: Vec<OwnedUserId>,
}

impl EventNotifications {
    /// Each recipient's outcome as stored: their own, else the room's (for tests and checks).
    #[cfg(test)]
    pub(super) fn outcome_of(&self, user: &UserId) -> Option<&[Action]> {
        match self.own.iter().find(|own| own.user == user) {
            Some(own) => Some(&own.actions).filter(|_| own.notifies()).map(Vec::as_slice),
            None => self.room_default.as_ref().map(|(actions, _)| actions.as_slice()),
        }
    }
}

/// The serialized form of actions, to compare two outcomes (ruma's `Action` has no `PartialEq`).
fn same_actions(a: &[Action], b: &[Action]) -> bool {
    match (serde_json::to_value(a), serde_json::to_value(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Who an event may notify: the room's local joined members (in the state after the event),
/// those of them whose profiles single them out ([`RoomRecipients::special`]), and a local user
/// the event invites.
pub struct Audience<'a> {
    pub members: &'a RoomRecipients,
    pub special: &'a [OwnedUserId],
    pub invitee: Option<&'a Recipient>,
}

/// Evaluates the event (`event` as clients see it) for every recipient: once for all the
/// members who share its generic outcome, then one by one for the members it may single out.
pub fn evaluate_notifications(
    db: &Db,
    profiles: &PushProfiles,
    event: &serde_json::Value,
    room: &RoomFacts,
    sender: &UserId,
    audience: Audience<'_>,
) -> Result<EventNotifications> {
    let event_id = event.get("event_id").and_then(|v| v.as_str()).unwrap_or_default().to_owned();
    let thread = event.get("content").and_then(thread_root);
    let mut out = EventNotifications {
        room_id: room.room_id.clone(),
        event_id,
        thread,
        room_default: None,
        own: Vec::new(),
        queued: Vec::new(),
    };
    let sender_joined = audience.members.contains(sender);
    if audience.members.len() == usize::from(sender_joined) && audience.invitee.is_none() {
        return Ok(out);
    }
    let raw: Raw<serde_json::Value> =
        Raw::new(event).map_err(|e| Error::internal(format!("cannot serialise event: {e}")))?;
    // Flattened once for every recipient: ruma's `Ruleset::get_actions` flattens the event again
    // on each call.
    let flattened = FlattenedJson::from_raw(&raw);
    let mentions = has_mentions(event);
    let ctx_for = |user: &UserId, display_name: &str| {
        let mut ctx = PushConditionRoomCtx::new(
            room.room_id.clone(),
            UInt::try_from(room.joined_members).unwrap_or(UInt::MAX),
            user.to_owned(),
            display_name.to_owned(),
        );
        ctx.power_levels = room.power_levels.clone();
        ctx
    };
    // With MSC4306's rules an event in a thread notifies only its subscribers: everyone is
    // evaluated on their own (there is no generic outcome).
    let thread_rules = out.thread.as_deref().filter(|_| profiles.thread_subscription_rules);
    let generic = GENERIC
        .as_ref()
        .filter(|_| thread_rules.is_none() && !raw.json().get().to_lowercase().contains(GENERIC_LOCALPART))
        .and_then(|(user, ruleset)| {
            complete_now(first_match(ruleset, (&flattened, mentions), &ctx_for(user, GENERIC_LOCALPART), None))
        });
    out.room_default = generic
        .as_ref()
        .filter(|actions| actions.iter().any(Action::should_notify))
        .map(|actions| (actions.clone(), actions.iter().any(Action::is_highlight)));
    let screen = EventScreen::of(event);
    // Everyone else shares the generic outcome: default rules, no pusher, not named.
    let candidates: Vec<&Recipient> = match &generic {
        None => audience.members.iter().chain(audience.invitee).collect(),
        Some(_) => {
            let mut seen = HashSet::new();
            let special = audience.special.iter().filter_map(|user| audience.members.get(user));
            special
                .chain(audience.members.named(&screen))
                .chain(audience.invitee)
                .filter(|recipient| seen.insert(&recipient.user))
                .collect()
        }
    };
    for recipient in candidates.into_iter().filter(|recipient| recipient.user != sender) {
        let profile = profiles.get(db, &recipient.user)?;
        let shares_generic = profile.default_rules && !recipient.may_differ(&screen);
        let (notifies, own) = match &generic {
            Some(actions) if shares_generic => (actions.iter().any(Action::should_notify), None),
            _ => {
                let ctx = ctx_for(&recipient.user, &recipient.display_name);
                let thread = match thread_rules {
                    Some(root) => Some(subscribed_to_thread(db, &recipient.user, &room.room_id, root)?),
                    None => None,
                };
                let matched = first_match(&profile.ruleset, (&flattened, mentions), &ctx, thread);
                let Some(actions) = complete_now(matched) else { continue };
                let highlight = actions.iter().any(Action::is_highlight);
                let own = OwnOutcome { user: recipient.user.clone(), actions, highlight };
                (own.notifies(), Some(own))
            }
        };
        if notifies && profile.has_pusher {
            out.queued.push(recipient.user.clone());
        }
        if let Some(own) = own {
            let same_as_room = match &out.room_default {
                Some((actions, _)) => notifies && same_actions(actions, &own.actions),
                None => !notifies,
            };
            if !same_as_room {
                out.own.push(own);
            }
        }
    }
    if out.room_default.is_some() && sender_joined {
        out.own.push(OwnOutcome { user: sender.to_owned(), actions: Vec::new(), highlight: false });
    }
    Ok(out)
}

/// Adds the notification rows of an evaluated event at `position` to `batch`, plus a push
/// queue entry for recipients with pushers. Returns whether anything was queued for delivery.
pub fn write_notifications(batch: &mut Batch, position: u64, decided: EventNotifications) -> Result<bool> {
    let ts = crate::service::now_ms();
    let record = |actions: Vec<Action>, highlight: bool| NotificationRecord {
        room_id: decided.room_id.clone(),
        event_id: decided.event_id.clone(),
        actions,
        highlight,
        ts,
        thread: decided.thread.clone(),
    };
    if let Some((actions, highlight)) = &decided.room_default {
        batch.put(
            &ROOM_DEFAULT_NOTIFICATIONS,
            &(decided.room_id.clone(), position),
            &record(actions.clone(), *highlight),
        )?;
    }
    for own in &decided.own {
        let notify = own.notifies();
        batch.put(
            &ROOM_NOTIFICATIONS,
            &(own.user.clone(), decided.room_id.clone(), position),
            &RoomNotification { highlight: own.highlight, thread: decided.thread.clone(), notify },
        )?;
        if notify {
            batch.put(&NOTIFICATIONS, &(own.user.clone(), position), &record(own.actions.clone(), own.highlight))?;
        }
    }
    for user in &decided.queued {
        batch.put(
            &PUSH_QUEUE,
            &(position, user.to_string()),
            &PushQueueEntry { queued_at: ts, room: Some(decided.room_id.clone()) },
        )?;
    }
    Ok(!decided.queued.is_empty())
}
