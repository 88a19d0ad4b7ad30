//! Room upgrades (`/rooms/{roomId}/upgrade`), in the order the spec and Synapse use: create the
//! replacement room (its create event naming the predecessor) with the old room's important
//! state copied over, send `m.room.tombstone` in the old room, move the local aliases and the
//! directory listing, and restrict the old room so ordinary users can no longer talk there.
//!
//! Upgrades of one room are serialised, and a request repeating one that finished less than
//! [`REPEAT_WINDOW`] ago (same room, user and version; a client retrying, or a double click)
//! gets the same replacement room, as Synapse answers repeats from a response cache, instead of
//! a second replacement room.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use http::StatusCode;
use ruma::{OwnedRoomId, OwnedUserId, RoomId, RoomVersionId, UserId, api::error::ErrorKind, events::TimelineEventType};
use serde_json::{Map, Value, json};

use super::{NewEvent, Pdu, RoomCore, Rooms, power::level_of};
use crate::{
    Error, Result,
    storage::{Db, ScanDirection},
};

/// State copied to the replacement room, in this order (Synapse's list).
const COPIED_STATE: &[&str] = &[
    "m.room.join_rules",
    "m.room.history_visibility",
    "m.room.guest_access",
    "m.room.name",
    "m.room.topic",
    "m.room.avatar",
    "m.room.encryption",
    "m.room.server_acl",
    "m.room.canonical_alias",
];

/// How long a finished upgrade answers repeats of its request.
const REPEAT_WINDOW: Duration = Duration::from_secs(300);

/// (old room, user, version) of an upgrade request.
type UpgradeKey = (OwnedRoomId, OwnedUserId, RoomVersionId);

/// Per room, a lock held for the whole upgrade, and the upgrades finished recently.
#[derive(Default)]
pub(super) struct RecentUpgrades {
    locks: Mutex<HashMap<OwnedRoomId, Arc<tokio::sync::Mutex<()>>>>,
    done: Mutex<HashMap<UpgradeKey, (OwnedRoomId, Instant)>>,
}

impl RecentUpgrades {
    fn lock_for(&self, room_id: &RoomId) -> Result<Arc<tokio::sync::Mutex<()>>> {
        let mut locks = self.locks.lock().map_err(|_| Error::internal("poisoned upgrade locks"))?;
        // Only rooms being upgraded right now need a lock: drop the idle ones.
        locks.retain(|_, lock| Arc::strong_count(lock) > 1);
        Ok(locks.entry(room_id.to_owned()).or_default().clone())
    }

    fn recent(&self, key: &UpgradeKey) -> Option<OwnedRoomId> {
        let mut done = self.done.lock().ok()?;
        done.retain(|_, (_, at)| at.elapsed() < REPEAT_WINDOW);
        done.get(key).map(|(room, _)| room.clone())
    }

    fn finished(&self, key: UpgradeKey, new_room: OwnedRoomId) {
        if let Ok(mut done) = self.done.lock() {
            done.insert(key, (new_room, Instant::now()));
        }
    }
}

/// The lowest level needed to speak or invite in a room after it was replaced.
const RESTRICTED_LEVEL: i64 = 50;

/// What the new room starts with.
struct Replacement {
    version: RoomVersionId,
    create: Map<String, Value>,
    member: Map<String, Value>,
    /// The power levels while the state is copied: the final ones, with the upgrader raised
    /// when they would not be allowed to send it otherwise.
    initial_power: Map<String, Value>,
    final_power: Map<String, Value>,
    state: Vec<(String, Value)>,
    bans: Vec<(String, Value)>,
}

fn privileges_creators(version: &RoomVersionId) -> bool {
    crate::service::rooms::versions::rules(version)
        .is_some_and(|rules| rules.authorization.explicitly_privilege_room_creators)
}

/// The highest level any state the upgrade sends may need.
fn needed_level(power: &Map<String, Value>) -> i64 {
    let mut needed = power.get("state_default").and_then(level_of).unwrap_or(50);
    needed = needed.max(power.get("ban").and_then(level_of).unwrap_or(50));
    if let Some(Value::Object(events)) = power.get("events") {
        needed = needed.max(events.values().filter_map(level_of).max().unwrap_or(0));
    }
    needed
}

/// Runs `change` on the `users` map of power levels content (created when missing).
fn with_users(power: &mut Map<String, Value>, change: impl FnOnce(&mut Map<String, Value>)) {
    let mut users = match power.remove("users") {
        Some(Value::Object(users)) => users,
        _ => Map::new(),
    };
    change(&mut users);
    power.insert("users".to_owned(), Value::Object(users));
}

impl RoomCore {
    /// Creates the replacement room and fills in its state; returns its ID.
    fn create_replacement(&self, db: &Db, user: &UserId, spec: Replacement) -> Result<OwnedRoomId> {
        let version = &spec.version;
        let create = NewEvent::state(TimelineEventType::RoomCreate, "", Value::Object(spec.create));
        let room_id = self.accept_create(db, version, user, create)?;
        let member = NewEvent::state(TimelineEventType::RoomMember, user.as_str(), Value::Object(spec.member));
        self.build_and_accept(db, &room_id, version, user, member)?;
        let raised = spec.initial_power != spec.final_power;
        let power = NewEvent::state(TimelineEventType::RoomPowerLevels, "", Value::Object(spec.initial_power));
        self.build_and_accept(db, &room_id, version, user, power)?;
        for (kind, content) in spec.state {
            self.build_and_accept(db, &room_id, version, user, NewEvent::state(kind.as_str().into(), "", content))?;
        }
        for (banned, content) in spec.bans {
            let event = NewEvent::state(TimelineEventType::RoomMember, banned, content);
            if let Err(error) = self.build_and_accept(db, &room_id, version, user, event) {
                tracing::warn!(%room_id, %error, "could not copy a ban to the replacement room");
            }
        }
        if raised {
            let power = NewEvent::state(TimelineEventType::RoomPowerLevels, "", Value::Object(spec.final_power));
            self.build_and_accept(db, &room_id, version, user, power)?;
        }
        Ok(room_id)
    }
}

impl Rooms {
    /// Upgrades a room to `new_version` (checked by the caller against the supported versions);
    /// returns the replacement room. The user needs the power to send `m.room.tombstone`.
    pub async fn upgrade_room(
        &self,
        room_id: &RoomId,
        user: &UserId,
        new_version: &RoomVersionId,
        additional_creators: &[OwnedUserId],
    ) -> Result<OwnedRoomId> {
        if crate::service::rooms::versions::rules(new_version).is_none() {
            return Err(Error::new(
                StatusCode::BAD_REQUEST,
                ErrorKind::UnsupportedRoomVersion,
                format!("Room version {new_version} is not supported"),
            ));
        }
        if self.version(room_id).await?.is_none() {
            return Err(Error::not_found("Unknown room"));
        }
        let lock = self.upgrades.lock_for(room_id)?;
        let _upgrading = lock.lock().await;
        let key = (room_id.to_owned(), user.to_owned(), new_version.clone());
        if let Some(new_room) = self.upgrades.recent(&key) {
            return Ok(new_room);
        }
        let new_room = self.upgrade_locked(room_id, user, new_version, additional_creators).await?;
        self.upgrades.finished(key, new_room.clone());
        Ok(new_room)
    }

    /// The upgrade itself, with the room's upgrade lock held.
    async fn upgrade_locked(
        &self,
        room_id: &RoomId,
        user: &UserId,
        new_version: &RoomVersionId,
        additional_creators: &[OwnedUserId],
    ) -> Result<OwnedRoomId> {
        let old_power = self.power_levels(room_id).await?;
        if self.membership(user, room_id).await?.is_none_or(|m| m.membership != "join")
            || !old_power.can_send_state(user, "m.room.tombstone")
        {
            return Err(Error::forbidden("You do not have the power to upgrade this room"));
        }
        let state = self.current_state(room_id).await?;
        let (last, _) = self.timeline(user, room_id, None, ScanDirection::Reverse, 1).await?;
        let last_event = last.first().map(|e| e.pdu.event_id.clone());
        let spec = replacement_spec(&state, room_id, user, new_version, additional_creators, &old_power, last_event);

        let creator = user.to_owned();
        // The replacement room's first events are written at once, or not at all.
        let new_room =
            self.run(move |core, db| core.staged(db, |view| core.create_replacement(view, &creator, spec))).await?;

        let tombstone = json!({"body": "This room has been replaced", "replacement_room": new_room});
        self.send(room_id, user, NewEvent::state(TimelineEventType::RoomTombstone, "", tombstone)).await?;
        let moved = self.move_aliases(room_id, &new_room).await?;
        self.after_upgrade(room_id, &new_room, user, &moved).await?;
        tracing::info!(old = %room_id, new = %new_room, version = %new_version, "upgraded room");
        Ok(new_room)
    }

    /// Cleans up the old room once the tombstone is in: its canonical alias is cleared, its
    /// directory listing moves to the new room, and its power levels are raised so ordinary
    /// users can no longer send messages or invite. Refusals are logged, not fatal: the
    /// upgrade has happened.
    async fn after_upgrade(&self, old: &RoomId, new: &RoomId, user: &UserId, moved: &[String]) -> Result<()> {
        if !moved.is_empty()
            && let Some(event) = self.state_event(old, &"m.room.canonical_alias".into(), "").await?
            && event.content_value().as_object().is_some_and(|c| !c.is_empty())
        {
            let event = NewEvent::state(TimelineEventType::RoomCanonicalAlias, "", json!({}));
            if let Err(error) = self.send(old, user, event).await {
                tracing::warn!(room_id = %old, %error, "could not clear the old room's canonical alias");
            }
        }
        if self.is_published(old).await? {
            self.set_published(new, true).await?;
            self.set_published(old, false).await?;
        }
        let mut power = self
            .state_event(old, &"m.room.power_levels".into(), "")
            .await?
            .and_then(|pdu| pdu.content_value().as_object().cloned())
            .unwrap_or_default();
        let restricted =
            power.get("users_default").and_then(level_of).unwrap_or(0).saturating_add(1).max(RESTRICTED_LEVEL);
        let mut changed = false;
        for key in ["events_default", "invite"] {
            if power.get(key).and_then(level_of).unwrap_or(0) < restricted {
                power.insert(key.to_owned(), json!(restricted));
                changed = true;
            }
        }
        if changed {
            let event = NewEvent::state(TimelineEventType::RoomPowerLevels, "", Value::Object(power));
            if let Err(error) = self.send(old, user, event).await {
                tracing::warn!(room_id = %old, %error, "could not restrict the old room after its upgrade");
            }
        }
        Ok(())
    }
}

/// What the replacement room starts with, from the old room's current state.
fn replacement_spec(
    state: &[Pdu],
    old_room: &RoomId,
    user: &UserId,
    version: &RoomVersionId,
    additional_creators: &[OwnedUserId],
    old_power: &super::power::PowerLevels,
    last_event: Option<ruma::OwnedEventId>,
) -> Replacement {
    let find = |kind: &str, key: &str| {
        state.iter().find(|p| p.kind.to_string() == kind && p.state_key.as_deref() == Some(key)).map(Pdu::content_value)
    };
    let old_create = find("m.room.create", "").and_then(|c| c.as_object().cloned()).unwrap_or_default();
    let v12 = privileges_creators(version);

    let mut create = Map::new();
    for key in ["type", "m.federate"] {
        if let Some(value) = old_create.get(key) {
            create.insert(key.to_owned(), value.clone());
        }
    }
    create.insert("room_version".into(), json!(version.as_str()));
    let mut predecessor = json!({"room_id": old_room});
    if let Some(event_id) = last_event {
        predecessor["event_id"] = json!(event_id);
    }
    create.insert("predecessor".into(), predecessor);
    if crate::service::rooms::versions::rules(version).is_some_and(|rules| !rules.authorization.use_room_create_sender)
    {
        create.insert("creator".into(), json!(user));
    }
    let mut creators: Vec<String> = vec![user.to_string()];
    if v12 && !additional_creators.is_empty() {
        let extra: Vec<String> =
            additional_creators.iter().map(|u| u.to_string()).filter(|u| u != user.as_str()).collect();
        creators.extend(extra.iter().cloned());
        create.insert("additional_creators".into(), json!(extra));
    }

    let member: Map<String, Value> = find("m.room.member", user.as_str())
        .and_then(|c| c.as_object().cloned())
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| k == "displayname" || k == "avatar_url")
        .chain([("membership".to_owned(), json!("join"))])
        .collect();

    let mut final_power = old_power.content.clone().unwrap_or_default();
    let initial_power = if v12 {
        // From v12 creators must not be listed: they outrank every level anyway.
        with_users(&mut final_power, |users| users.retain(|u, _| !creators.contains(u)));
        final_power.clone()
    } else {
        let needed = needed_level(&final_power).max(100);
        if old_power.user_level(user).is_none() {
            // A creator of a v12 room keeps the top level in an older version.
            with_users(&mut final_power, |users| {
                users.insert(user.to_string(), json!(needed));
            });
        }
        let current = final_power
            .get("users")
            .and_then(|u| u.get(user.as_str()))
            .and_then(level_of)
            .or_else(|| final_power.get("users_default").and_then(level_of))
            .unwrap_or(0);
        let mut initial = final_power.clone();
        if current < needed {
            with_users(&mut initial, |users| {
                users.insert(user.to_string(), json!(needed));
            });
        }
        initial
    };

    let state_copied = COPIED_STATE
        .iter()
        .filter_map(|kind| {
            find(kind, "").filter(|c| c.as_object().is_some_and(|o| !o.is_empty())).map(|c| ((*kind).to_owned(), c))
        })
        .collect();
    let bans = state
        .iter()
        .filter(|p| p.kind.to_string() == "m.room.member" && super::membership_of(p) == "ban")
        .filter_map(|p| {
            let reason = p.content_value().get("reason").cloned();
            let mut content = json!({"membership": "ban"});
            if let Some(reason) = reason {
                content["reason"] = reason;
            }
            Some((p.state_key.clone()?, content))
        })
        .collect();
    Replacement { version: version.clone(), create, member, initial_power, final_power, state: state_copied, bans }
}
