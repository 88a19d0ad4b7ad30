//! Push: the user's push rules (stored as `m.push_rules` account data, so they sync) and their
//! editing, the notifications push rule evaluation stored when events were persisted
//! (`evaluate.rs`), unread counts read from them (`counts.rs`), `/notifications`
//! (`notifications.rs`), pushers (`pushers.rs`) and delivery to push gateways (`gateway.rs`).

pub mod counts;
pub mod defaults;
pub mod evaluate;
pub mod gateway;
pub mod notifications;
pub mod pushers;
pub mod recipients;

use std::sync::Arc;

use http::StatusCode;
use ruma::{
    UserId,
    api::error::ErrorKind,
    push::{Action, AnyPushRule, InsertPushRuleError, NewPushRule, RemovePushRuleError, RuleKind, Ruleset},
};

use super::{account_data::AccountData, address_guard::AddressGuard};
use crate::{
    Error, Result,
    storage::{Db, WriteLock},
};

pub use evaluate::PUSH_RULES_TYPE;

pub struct Push {
    db: Db,
    /// Woken when an accepted event queued a notification for a push gateway.
    wake: Arc<tokio::sync::Notify>,
    /// Serialises pusher changes (`append: false` removes other users' copies). Rule changes
    /// are serialised by the account data lock they are stored under.
    pushers_lock: WriteLock,
    /// Which addresses push gateways may be reached at (checked at `/pushers/set` and on
    /// every delivery).
    guard: AddressGuard,
    /// Cached push profiles, forgotten here when a user's pushers change.
    profiles: Arc<recipients::PushProfiles>,
    /// Unread counts made up to a committed position, extended by later ones.
    count_cache: Arc<counts::CountCache>,
}

fn rule_not_found() -> Error {
    Error::not_found("The push rule was not found")
}

impl Push {
    pub fn new(
        db: Db,
        wake: Arc<tokio::sync::Notify>,
        guard: AddressGuard,
        profiles: Arc<recipients::PushProfiles>,
    ) -> Self {
        Self { db, wake, pushers_lock: WriteLock::new(), guard, profiles, count_cache: Default::default() }
    }

    /// The user's push rules: what they stored, or the spec's defaults.
    pub async fn ruleset(&self, user: &UserId) -> Result<Ruleset> {
        let user = user.to_owned();
        self.db.run(move |db| evaluate::stored_ruleset(db, &user)).await
    }

    /// One rule of the user's set.
    pub async fn rule(&self, user: &UserId, kind: RuleKind, rule_id: &str) -> Result<AnyPushRule> {
        let ruleset = self.ruleset(user).await?;
        ruleset.get(kind, rule_id).map(|rule| rule.to_owned()).ok_or_else(rule_not_found)
    }

    /// Copies the user's room rule of `old` to `new` when `new` has none yet: a room's
    /// notification setting carries over to its upgrade, as in Synapse (Complement's
    /// `TestPushRuleRoomUpgrade`).
    pub async fn copy_room_rule(
        &self,
        account_data: &AccountData,
        user: &UserId,
        old: &ruma::RoomId,
        new: &ruma::RoomId,
    ) -> Result<()> {
        let ruleset = self.ruleset(user).await?;
        if ruleset.room.get(old.as_str()).is_none() || ruleset.room.get(new.as_str()).is_some() {
            return Ok(());
        }
        let (old, new) = (old.to_owned(), new.to_owned());
        self.update(account_data, user, move |ruleset| {
            if let Some(rule) = ruleset.room.get(old.as_str()).cloned()
                && ruleset.room.get(new.as_str()).is_none()
            {
                let mut copy = rule;
                copy.rule_id = new;
                ruleset.room.insert(copy);
            }
            Ok(())
        })
        .await
    }

    /// Reads, changes and stores the user's rule set, all inside the account data lock.
    async fn update<R: Send + 'static>(
        &self,
        account_data: &AccountData,
        user: &UserId,
        change: impl FnOnce(&mut Ruleset) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        let owner = user.to_owned();
        account_data
            .update(user, None, PUSH_RULES_TYPE, move |db, _| {
                let mut ruleset = evaluate::stored_ruleset(db, &owner)?;
                let out = change(&mut ruleset)?;
                let content = serde_json::value::to_raw_value(&serde_json::json!({ "global": ruleset }))
                    .map_err(|e| Error::internal(format!("cannot serialise push rules: {e}")))?;
                Ok((Some(content), out))
            })
            .await
    }

    /// Adds or replaces a user-defined rule, placed by `before`/`after`.
    pub async fn insert_rule(
        &self,
        account_data: &AccountData,
        user: &UserId,
        rule: NewPushRule,
        before: Option<&str>,
        after: Option<&str>,
    ) -> Result<()> {
        let (before, after) = (before.map(str::to_owned), after.map(str::to_owned));
        self.update(account_data, user, move |ruleset| {
            ruleset.insert(rule, after.as_deref(), before.as_deref()).map_err(|error| match error {
                InsertPushRuleError::UnknownRuleId => Error::new(
                    StatusCode::BAD_REQUEST,
                    ErrorKind::Unknown,
                    format!("before/after rule not found: {}", before.or(after).unwrap_or_default()),
                ),
                other => Error::invalid_param(other.to_string()),
            })
        })
        .await
    }

    /// Removes a user-defined rule; server-default rules cannot be removed.
    pub async fn remove_rule(
        &self,
        account_data: &AccountData,
        user: &UserId,
        kind: RuleKind,
        rule_id: &str,
    ) -> Result<()> {
        let rule_id = rule_id.to_owned();
        self.update(account_data, user, move |ruleset| {
            ruleset.remove(kind, &rule_id).map_err(|error| match error {
                RemovePushRuleError::ServerDefault => Error::invalid_param("Server-default rules cannot be deleted"),
                _ => rule_not_found(),
            })
        })
        .await
    }

    pub async fn set_enabled(
        &self,
        account_data: &AccountData,
        user: &UserId,
        kind: RuleKind,
        rule_id: &str,
        enabled: bool,
    ) -> Result<()> {
        let rule_id = rule_id.to_owned();
        self.update(account_data, user, move |ruleset| {
            ruleset.set_enabled(kind, &rule_id, enabled).map_err(|_| rule_not_found())
        })
        .await
    }

    pub async fn set_actions(
        &self,
        account_data: &AccountData,
        user: &UserId,
        kind: RuleKind,
        rule_id: &str,
        actions: Vec<Action>,
    ) -> Result<()> {
        let rule_id = rule_id.to_owned();
        self.update(account_data, user, move |ruleset| {
            ruleset.set_actions(kind, &rule_id, actions).map_err(|_| rule_not_found())
        })
        .await
    }
}

/// After `user` joined `room` (or created it by an upgrade): when the room replaces another
/// (`predecessor` in its create event), the user's room rule of the old room is copied to it.
pub async fn carry_over_room_rule(services: &super::Services, user: &UserId, room: &ruma::RoomId) -> Result<()> {
    let create = services.rooms.state_event(room, &ruma::events::StateEventType::RoomCreate, "").await?;
    let predecessor = create
        .map(|pdu| pdu.content_value())
        .and_then(|content| content.pointer("/predecessor/room_id")?.as_str().map(str::to_owned))
        .and_then(|id| ruma::OwnedRoomId::try_from(id).ok());
    match predecessor {
        Some(old) => services.push.copy_room_rule(&services.account_data, user, &old, room).await,
        None => Ok(()),
    }
}
