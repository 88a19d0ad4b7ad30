//! Room aliases as the client API manages them: who may create and delete an alias, who may
//! list a room's aliases, and moving a room's aliases to its replacement after an upgrade.

use http::StatusCode;
use ruma::{
    OwnedRoomAliasId, OwnedRoomId, RoomAliasId, RoomId, UserId, api::error::ErrorKind, events::TimelineEventType,
};
use serde_json::Value;

use super::{NewEvent, Rooms};
use crate::{
    Error, Result,
    storage::{
        Batch,
        room_tables::{ALIASES, AliasRecord, ROOM_ALIASES},
    },
};

/// Who asks for an alias change.
#[derive(Debug, Clone, Copy)]
pub struct Actor<'a> {
    pub user: &'a UserId,
    /// A server admin, who may manage every alias.
    pub admin: bool,
}

impl Rooms {
    fn check_local_alias(&self, alias: &RoomAliasId) -> Result<()> {
        if alias.server_name() != self.core.server_name {
            return Err(Error::invalid_param("Room alias must be on this server"));
        }
        Ok(())
    }

    /// `PUT /directory/room/{alias}`: the alias must be on this server, the room must exist and
    /// (as Synapse's default `require_membership_for_aliases`) the user must be in it unless
    /// they are an admin.
    pub async fn create_alias(&self, alias: &RoomAliasId, room_id: &RoomId, actor: Actor<'_>) -> Result<()> {
        self.check_local_alias(alias)?;
        if self.version(room_id).await?.is_none() {
            return Err(Error::not_found("Unknown room"));
        }
        if !actor.admin && self.membership(actor.user, room_id).await?.is_none_or(|m| m.membership != "join") {
            return Err(Error::forbidden("You must be in the room to create an alias for it"));
        }
        self.set_alias(alias, room_id, actor.user).await
    }

    /// `DELETE /directory/room/{alias}`: allowed for the alias's creator, a server admin, or a
    /// member with the power to send `m.room.canonical_alias`. An alias that the room's
    /// canonical alias event names is removed from it too (as Synapse does), when the user may.
    pub async fn delete_alias(&self, alias: &RoomAliasId, actor: Actor<'_>) -> Result<()> {
        let record = self.resolve_alias(alias).await?.ok_or_else(|| Error::not_found("Unknown room alias"))?;
        let allowed = actor.admin
            || record.creator == actor.user
            || self.joined_with_power(&record.room_id, actor.user, "m.room.canonical_alias").await?;
        if !allowed {
            return Err(Error::forbidden("You may not delete this alias"));
        }
        self.remove_alias(alias).await?;
        self.drop_from_canonical_alias(&record.room_id, alias, actor.user).await;
        Ok(())
    }

    /// Removes an alias from the room's `m.room.canonical_alias` event, if it is named there and
    /// the user may change it. Best effort: the alias is already gone, so failures are logged.
    async fn drop_from_canonical_alias(&self, room_id: &RoomId, alias: &RoomAliasId, user: &UserId) {
        let Ok(Some(event)) = self.state_event(room_id, &"m.room.canonical_alias".into(), "").await else { return };
        let mut content = event.content_value();
        let Some(object) = content.as_object_mut() else { return };
        let mut changed = false;
        if object.get("alias").and_then(Value::as_str) == Some(alias.as_str()) {
            object.remove("alias");
            changed = true;
        }
        if let Some(Value::Array(alt)) = object.get_mut("alt_aliases") {
            let before = alt.len();
            alt.retain(|a| a.as_str() != Some(alias.as_str()));
            changed |= alt.len() != before;
        }
        if !changed {
            return;
        }
        // Only the deleting user's own event, as Synapse does: never one in another's name.
        if !self.joined_with_power(room_id, user, "m.room.canonical_alias").await.unwrap_or(false) {
            return;
        }
        let new = NewEvent::state(TimelineEventType::RoomCanonicalAlias, "", content);
        if let Err(error) = self.send(room_id, user, new).await {
            tracing::warn!(%room_id, %error, "could not remove a deleted alias from the canonical alias");
        }
    }

    /// `GET /rooms/{roomId}/aliases`: for joined members, or anyone in a world-readable room.
    pub async fn visible_aliases(&self, room_id: &RoomId, user: &UserId) -> Result<Vec<OwnedRoomAliasId>> {
        let joined = self.membership(user, room_id).await?.is_some_and(|m| m.membership == "join");
        if !joined && !self.is_world_readable(room_id).await? {
            return Err(Error::forbidden("You are not a member of this room"));
        }
        Ok(self.room_aliases(room_id).await?.into_iter().filter_map(|a| OwnedRoomAliasId::try_from(a).ok()).collect())
    }

    /// Points every local alias of `from` at `to`; returns the aliases moved.
    pub async fn move_aliases(&self, from: &RoomId, to: &RoomId) -> Result<Vec<String>> {
        let (from, to) = (from.to_owned(), to.to_owned());
        self.alias_lock
            .run(&self.core.db, move |db| {
                let mut batch = Batch::new();
                let mut moved = Vec::new();
                for ((_, alias), ()) in ROOM_ALIASES.scan_prefix(db, &(from.clone(),))? {
                    let creator = match ALIASES.get(db, &alias)? {
                        Some(record) => record.creator,
                        None => continue,
                    };
                    batch.put(&ALIASES, &alias, &AliasRecord { room_id: to.clone(), creator })?;
                    batch.delete(&ROOM_ALIASES, &(from.clone(), alias.clone()));
                    batch.put(&ROOM_ALIASES, &(to.clone(), alias.clone()), &())?;
                    moved.push(alias);
                }
                db.write(batch)?;
                Ok(moved)
            })
            .await
    }

    /// The room an alias points to, for `GET /directory/room/{alias}`.
    pub async fn alias_target(&self, alias: &RoomAliasId) -> Result<OwnedRoomId> {
        match self.resolve_alias(alias).await? {
            Some(record) => Ok(record.room_id),
            None if alias.server_name() != self.core.server_name => Err(Error::new(
                StatusCode::NOT_FOUND,
                ErrorKind::NotFound,
                "Resolving aliases of other servers needs federation, which this server does not support yet",
            )),
            None => Err(Error::not_found("Room alias not found")),
        }
    }

    /// `PUT /directory/list/room/{roomId}`: publishing needs the power to send
    /// `m.room.canonical_alias` (or a server admin).
    pub async fn set_visibility(&self, room_id: &RoomId, actor: Actor<'_>, published: bool) -> Result<()> {
        if self.version(room_id).await?.is_none() {
            return Err(Error::not_found("Unknown room"));
        }
        if !actor.admin && !self.joined_with_power(room_id, actor.user, "m.room.canonical_alias").await? {
            return Err(Error::forbidden("You may not change this room's visibility in the directory"));
        }
        self.set_published(room_id, published).await
    }

    /// `GET /directory/list/room/{roomId}`.
    pub async fn visibility(&self, room_id: &RoomId) -> Result<bool> {
        if self.version(room_id).await?.is_none() {
            return Err(Error::not_found("Unknown room"));
        }
        self.is_published(room_id).await
    }
}
