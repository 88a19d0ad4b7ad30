//! Room tags (`/user/{userId}/rooms/{roomId}/tags`), stored as Synapse stores them: the room
//! account data `m.tag`, `{"tags": {tag: {"order": ...}}}`, so they reach clients through the
//! room's `account_data` in sync. Changes are read-modify-write inside the account data lock
//! (`AccountData::update`), so two concurrent tag changes do not lose each other, even when a
//! request is dropped half-way.

use ruma::{RoomId, UserId};
use serde_json::{Map, Value, json};

use super::account_data::AccountData;
use crate::{Error, Result};

const TAG_TYPE: &str = "m.tag";

#[derive(Default)]
pub struct Tags;

/// The `tags` object of stored `m.tag` content (empty when there is none or it is malformed).
fn tags_of(content: Option<&serde_json::value::RawValue>) -> Map<String, Value> {
    content
        .and_then(|raw| serde_json::from_str::<Value>(raw.get()).ok())
        .and_then(|mut value| value.get_mut("tags").map(Value::take))
        .and_then(|tags| match tags {
            Value::Object(map) => Some(map),
            _ => None,
        })
        .unwrap_or_default()
}

impl Tags {
    /// `user`'s tags on `room`: tag name -> tag info.
    pub async fn get(&self, account_data: &AccountData, user: &UserId, room: &RoomId) -> Result<Map<String, Value>> {
        Ok(tags_of(account_data.get(user, Some(room), TAG_TYPE).await?.as_deref()))
    }

    /// Adds or replaces `tag` with `info` (`{"order": ...}`).
    pub async fn set(
        &self,
        account_data: &AccountData,
        user: &UserId,
        room: &RoomId,
        tag: &str,
        info: Value,
    ) -> Result<()> {
        let tag = tag.to_owned();
        self.change(account_data, user, room, move |tags| {
            tags.insert(tag, info);
        })
        .await
    }

    /// Removes `tag` (no error when it is not there, as in Synapse).
    pub async fn delete(&self, account_data: &AccountData, user: &UserId, room: &RoomId, tag: &str) -> Result<()> {
        let tag = tag.to_owned();
        self.change(account_data, user, room, move |tags| {
            tags.remove(&tag);
        })
        .await
    }

    async fn change(
        &self,
        account_data: &AccountData,
        user: &UserId,
        room: &RoomId,
        change: impl FnOnce(&mut Map<String, Value>) + Send + 'static,
    ) -> Result<()> {
        account_data
            .update(user, Some(room), TAG_TYPE, move |_, stored| {
                let mut tags = tags_of(stored.as_deref());
                change(&mut tags);
                let content = serde_json::value::to_raw_value(&json!({ "tags": tags }))
                    .map_err(|e| Error::internal(format!("cannot serialise tags: {e}")))?;
                Ok((Some(content), ()))
            })
            .await
    }
}
