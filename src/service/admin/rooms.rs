//! Rooms for the admin API: the list with Synapse's ordering, search and paging, one room's
//! details, and deleting a room: its local members leave (and forget it), its local aliases
//! and directory entry go, and with `block` no user of this server may join or be invited to
//! it again. With a new room (Synapse's `new_room_user_id`), that user makes a public room
//! where nobody else may speak, the joined local members are joined to it, the message is
//! posted there and the local aliases point to it.

use std::collections::BTreeMap;

use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId, events::TimelineEventType};
use serde_json::{Value, json};

use crate::{
    Error, Result,
    service::{
        Services,
        rooms::{
            NewEvent,
            create::{Preset, RoomSpec},
            membership::MembershipChange,
        },
    },
    storage::{
        Batch,
        admin_tables::{BLOCKED_ROOMS, BlockedRoom},
        room_tables::ROOM_IDS,
    },
};

/// A room's details as Synapse's admin API gives them.
pub async fn details(services: &Services, room_id: &RoomId) -> Result<Option<Value>> {
    let Some(version) = services.rooms.version(room_id).await? else { return Ok(None) };
    let state = services.rooms.current_state(room_id).await?;
    let mut by_type: BTreeMap<(String, String), Value> = BTreeMap::new();
    let mut creator = Value::Null;
    for pdu in &state {
        let content: Value = serde_json::from_str(pdu.content.get()).unwrap_or(Value::Null);
        if pdu.kind.to_string() == "m.room.create" {
            creator = json!(pdu.sender);
        }
        by_type.insert((pdu.kind.to_string(), pdu.state_key.clone().unwrap_or_default()), content);
    }
    let field =
        |kind: &str, key: &str| by_type.get(&(kind.to_owned(), String::new())).and_then(|c| c.get(key)).cloned();
    let joined = services.rooms.joined_members(room_id).await?;
    let local = joined.iter().filter(|user| services.accounts.is_local(user)).count();
    let mut local_devices = 0;
    for user in joined.iter().filter(|user| services.accounts.is_local(user)) {
        local_devices += services.sessions.devices(user).await?.len();
    }
    let create = by_type.get(&("m.room.create".to_owned(), String::new()));
    Ok(Some(json!({
        "room_id": room_id,
        "name": field("m.room.name", "name"),
        "topic": field("m.room.topic", "topic"),
        "avatar": field("m.room.avatar", "url"),
        "canonical_alias": field("m.room.canonical_alias", "alias"),
        "joined_members": joined.len(),
        "joined_local_members": local,
        "joined_local_devices": local_devices,
        "version": version,
        "creator": creator,
        "encryption": field("m.room.encryption", "algorithm"),
        "federatable": create.and_then(|c| c.get("m.federate")).and_then(Value::as_bool).unwrap_or(true),
        "public": services.rooms.is_published(room_id).await?,
        "join_rules": field("m.room.join_rules", "join_rule"),
        "guest_access": field("m.room.guest_access", "guest_access"),
        "history_visibility": field("m.room.history_visibility", "history_visibility"),
        "state_events": state.len(),
        "room_type": create.and_then(|c| c.get("type")).cloned(),
        "forgotten": false,
    })))
}

/// Every room this server knows, with its details.
pub async fn all(services: &Services) -> Result<Vec<Value>> {
    let ids: Vec<OwnedRoomId> =
        services.db.run(|db| Ok(ROOM_IDS.all(db)?.into_iter().map(|(_, id)| id).collect())).await?;
    let mut rooms = Vec::new();
    for id in ids {
        if let Some(room) = details(services, &id).await? {
            rooms.push(room);
        }
    }
    Ok(rooms)
}

/// Orders rooms by one of Synapse's `order_by` keys (`name` by default), and reverses them for
/// `dir=b`.
pub fn order(rooms: &mut [Value], order_by: &str, backwards: bool) -> Result<()> {
    let key = match order_by {
        "name" | "alphabetical" => "name",
        "canonical_alias"
        | "joined_members"
        | "joined_local_members"
        | "version"
        | "creator"
        | "encryption"
        | "federatable"
        | "public"
        | "join_rules"
        | "guest_access"
        | "history_visibility"
        | "state_events"
        | "room_id" => order_by,
        "size" => "joined_members",
        other => return Err(Error::invalid_param(format!("Unknown order_by: {other}"))),
    };
    let numeric = matches!(key, "joined_members" | "joined_local_members" | "state_events");
    rooms.sort_by(|a, b| {
        let ordering = if numeric {
            // Biggest first, as Synapse does.
            b[key].as_u64().cmp(&a[key].as_u64())
        } else {
            a[key].to_string().to_lowercase().cmp(&b[key].to_string().to_lowercase())
        };
        ordering.then_with(|| a["room_id"].as_str().cmp(&b["room_id"].as_str()))
    });
    if backwards {
        rooms.reverse();
    }
    Ok(())
}

/// Whether admins blocked the room.
pub async fn is_blocked(services: &Services, room_id: &RoomId) -> Result<Option<String>> {
    let room_id = room_id.to_owned();
    services.db.run(move |db| Ok(BLOCKED_ROOMS.get(db, &room_id)?.map(|b| b.user_id))).await
}

pub async fn set_blocked(services: &Services, room_id: &RoomId, by: Option<&UserId>) -> Result<()> {
    let room_id = room_id.to_owned();
    let by = by.map(|user| BlockedRoom { user_id: user.to_string() });
    services
        .db
        .run(move |db| {
            let mut batch = Batch::new();
            match by {
                Some(by) => batch.put(&BLOCKED_ROOMS, &room_id, &by)?,
                None => batch.delete(&BLOCKED_ROOMS, &room_id),
            }
            Ok(db.write(batch)?)
        })
        .await
}

/// What deleting a room did.
pub struct Deleted {
    pub kicked_users: Vec<String>,
    pub failed_to_kick_users: Vec<String>,
    pub local_aliases: Vec<String>,
    pub new_room_id: Option<OwnedRoomId>,
}

/// The room a deleted room's local members are moved to (Synapse's `new_room_user_id`,
/// `room_name` and `message`).
pub struct NewRoom {
    /// Who makes the room and posts the message: a user of this server.
    pub creator: OwnedUserId,
    pub name: Option<String>,
    pub message: Option<String>,
}

/// Synapse's defaults for the new room.
const DEFAULT_ROOM_NAME: &str = "Content Violation Notification";
const DEFAULT_MESSAGE: &str =
    "Sharing illegal content on this server is not permitted and rooms in violation will be blocked.";

/// Makes the room members are moved to: public, so they can be joined to it, and where only
/// its creator may speak (`users_default` -10, as Synapse).
async fn create_new_room(services: &Services, new_room: &NewRoom) -> Result<OwnedRoomId> {
    let mut spec = RoomSpec::new(services.config.default_room_version.clone(), Preset::PublicChat);
    spec.name = Some(new_room.name.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| DEFAULT_ROOM_NAME.to_owned()));
    let mut power = serde_json::Map::new();
    power.insert("users_default".into(), json!(-10));
    spec.power_level_override = Some(power);
    spec.creator_member = member_profile(services, &new_room.creator).await?;
    services.rooms.create_room(&new_room.creator, spec).await
}

/// The display name and avatar a user's member events carry.
async fn member_profile(services: &Services, user: &UserId) -> Result<serde_json::Map<String, Value>> {
    let profile = services.profile.all(user).await?;
    Ok(profile.into_iter().filter(|(k, _)| k == "displayname" || k == "avatar_url").collect())
}

/// Moves one local member out of the deleted room: leaves (and forgets) it, then, having been
/// joined, joins the new room.
async fn move_member(
    services: &Services,
    room_id: &RoomId,
    user: &UserId,
    joined: bool,
    new_room: Option<(&RoomId, &UserId)>,
) -> Result<()> {
    let change = MembershipChange {
        sender: user,
        target: user,
        membership: "leave",
        reason: Some("This room has been deleted by the server's administrator".to_owned()),
        profile: serde_json::Map::new(),
    };
    services.rooms.change_membership(room_id, change).await?;
    services.rooms.set_forgotten(user, room_id).await?;
    if let Some((new_room, creator)) = new_room
        && joined
        && user != creator
    {
        let join = MembershipChange {
            sender: user,
            target: user,
            membership: "join",
            reason: None,
            profile: member_profile(services, user).await?,
        };
        services.rooms.change_membership(new_room, join).await?;
    }
    Ok(())
}

/// Deletes a room for this server (see the module comment). `admin` is who asked.
/// With `purge`, the room's events are then removed from its timeline and their content from
/// disk (`purge.rs`).
pub async fn delete(
    services: &Services,
    room_id: &RoomId,
    admin: &UserId,
    (block, purge): (bool, bool),
    new_room: Option<NewRoom>,
) -> Result<Deleted> {
    if block {
        set_blocked(services, room_id, Some(admin)).await?;
    }
    let known = services.rooms.version(room_id).await?.is_some();
    if !known {
        if block {
            return Ok(Deleted {
                kicked_users: Vec::new(),
                failed_to_kick_users: Vec::new(),
                local_aliases: Vec::new(),
                new_room_id: None,
            });
        }
        return Err(Error::not_found("Unknown room"));
    }
    let new_room_id = match &new_room {
        Some(new_room) => Some(create_new_room(services, new_room).await?),
        None => None,
    };
    let moved_to = new_room.as_ref().zip(new_room_id.as_ref()).map(|(n, id)| (id.as_ref(), n.creator.as_ref()));
    let mut kicked_users = Vec::new();
    let mut failed_to_kick_users = Vec::new();
    let members = services.rooms.current_state(room_id).await?;
    for pdu in members.iter().filter(|pdu| pdu.kind.to_string() == "m.room.member") {
        let Some(user) = pdu.state_key.as_deref().and_then(|key| ruma::OwnedUserId::try_from(key).ok()) else {
            continue;
        };
        if !services.accounts.is_local(&user) {
            continue;
        }
        let content: Value = serde_json::from_str(pdu.content.get()).unwrap_or(Value::Null);
        let membership = content["membership"].as_str();
        if !matches!(membership, Some("join" | "invite" | "knock")) {
            continue;
        }
        match move_member(services, room_id, &user, membership == Some("join"), moved_to).await {
            Ok(()) => kicked_users.push(user.to_string()),
            Err(error) => {
                tracing::warn!(%room_id, %user, %error, "could not move a user out of a deleted room");
                failed_to_kick_users.push(user.to_string());
            }
        }
    }
    let mut local_aliases = Vec::new();
    if let (Some(new_room), Some(new_room_id)) = (&new_room, &new_room_id) {
        let message = new_room.message.clone().filter(|m| !m.is_empty()).unwrap_or_else(|| DEFAULT_MESSAGE.to_owned());
        let event = NewEvent::message(TimelineEventType::RoomMessage, json!({"msgtype": "m.text", "body": message}));
        services.rooms.send(new_room_id, &new_room.creator, event).await?;
        local_aliases = services.rooms.move_aliases(room_id, new_room_id).await?;
    } else {
        for alias in services.rooms.room_aliases(room_id).await? {
            if let Ok(alias_id) = ruma::OwnedRoomAliasId::try_from(alias.as_str()) {
                services.rooms.remove_alias(&alias_id).await?;
                local_aliases.push(alias);
            }
        }
    }
    services.rooms.set_published(room_id, false).await?;
    if purge {
        super::purge::purge_room(services, room_id).await?;
    }
    tracing::info!(%room_id, %admin, block, purge, kicked = kicked_users.len(), "room deleted by an admin");
    Ok(Deleted { kicked_users, failed_to_kick_users, local_aliases, new_room_id })
}

/// Room deletions started through `DELETE /_synapse/admin/v2/rooms/{roomId}`, which run in the
/// background: their status by deletion ID, kept in memory (the last 1,000).
#[derive(Default)]
pub struct Deletions(std::sync::Mutex<Vec<(String, OwnedRoomId, Value)>>);

const KEPT_DELETIONS: usize = 1_000;

impl Deletions {
    /// Records a deletion's status (`status` and, when done, `shutdown_room`).
    pub fn record(&self, delete_id: &str, room_id: &RoomId, status: Value) {
        let Ok(mut deletions) = self.0.lock() else { return };
        match deletions.iter_mut().find(|(id, _, _)| id == delete_id) {
            Some(entry) => entry.2 = status,
            None => {
                if deletions.len() >= KEPT_DELETIONS {
                    deletions.remove(0);
                }
                deletions.push((delete_id.to_owned(), room_id.to_owned(), status));
            }
        }
    }

    pub fn by_id(&self, delete_id: &str) -> Option<(OwnedRoomId, Value)> {
        let deletions = self.0.lock().ok()?;
        deletions.iter().find(|(id, _, _)| id == delete_id).map(|(_, room, status)| (room.clone(), status.clone()))
    }

    pub fn of_room(&self, room_id: &RoomId) -> Vec<(String, Value)> {
        let Ok(deletions) = self.0.lock() else { return Vec::new() };
        deletions
            .iter()
            .filter(|(_, room, _)| room == room_id)
            .map(|(id, _, status)| (id.clone(), status.clone()))
            .collect()
    }
}

impl Deleted {
    pub fn to_json(&self) -> Value {
        json!({
            "kicked_users": self.kicked_users,
            "failed_to_kick_users": self.failed_to_kick_users,
            "local_aliases": self.local_aliases,
            "new_room_id": self.new_room_id,
        })
    }
}
