//! Power levels as the endpoints outside the auth rules need them: whether a user may send a
//! given state event by the room's current power levels (for alias deletion, directory
//! visibility and upgrades), with room version 12's creators, who outrank every level.

use ruma::{RoomId, UserId, events::StateEventType};
use serde_json::{Map, Value};

use super::{Pdu, Rooms};
use crate::{Error, Result};

/// A power level as stored: an integer, or (before room version 10) a string holding one.
pub fn level_of(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The users who created a room: the create event's sender (or its `creator` field before
/// v11) and, from v12, its `additional_creators`.
pub fn creators_of(create: &Pdu) -> Vec<String> {
    let content = create.content_value();
    let mut creators = vec![create.sender.to_string()];
    if let Some(creator) = content.get("creator").and_then(Value::as_str)
        && !creators.iter().any(|c| c == creator)
    {
        creators.push(creator.to_owned());
    }
    if let Some(additional) = content.get("additional_creators").and_then(Value::as_array) {
        for user in additional.iter().filter_map(Value::as_str) {
            if !creators.iter().any(|c| c == user) {
                creators.push(user.to_owned());
            }
        }
    }
    creators
}

/// A room's power levels, read from its current state.
#[derive(Debug, Clone)]
pub struct PowerLevels {
    /// The `m.room.power_levels` content; `None` when the room has none.
    pub content: Option<Map<String, Value>>,
    /// Users with unlimited power (room version 12's creators).
    pub privileged_creators: Vec<String>,
    /// The creator, who has level 100 while the room has no power levels event.
    pub creator: Option<String>,
}

impl PowerLevels {
    /// A user's level; `None` for a privileged creator (above every level).
    pub fn user_level(&self, user: &UserId) -> Option<i64> {
        if self.privileged_creators.iter().any(|c| c == user.as_str()) {
            return None;
        }
        Some(match &self.content {
            Some(content) => content
                .get("users")
                .and_then(|users| users.get(user.as_str()))
                .and_then(level_of)
                .or_else(|| content.get("users_default").and_then(level_of))
                .unwrap_or(0),
            None if self.creator.as_deref() == Some(user.as_str()) => 100,
            None => 0,
        })
    }

    /// The level needed to send a state event of `kind`.
    pub fn state_level(&self, kind: &str) -> i64 {
        match &self.content {
            Some(content) => content
                .get("events")
                .and_then(|events| events.get(kind))
                .and_then(level_of)
                .or_else(|| content.get("state_default").and_then(level_of))
                .unwrap_or(50),
            None => 0,
        }
    }

    pub fn can_send_state(&self, user: &UserId, kind: &str) -> bool {
        self.user_level(user).is_none_or(|level| level >= self.state_level(kind))
    }
}

impl Rooms {
    /// The room's current power levels; `M_NOT_FOUND` for an unknown room.
    pub async fn power_levels(&self, room_id: &RoomId) -> Result<PowerLevels> {
        let create = self
            .state_event(room_id, &StateEventType::RoomCreate, "")
            .await?
            .ok_or_else(|| Error::not_found("Unknown room"))?;
        let rules = self.version(room_id).await?.and_then(|version| version.rules());
        let privileged = rules.is_some_and(|rules| rules.authorization.explicitly_privilege_room_creators);
        let content = self
            .state_event(room_id, &StateEventType::RoomPowerLevels, "")
            .await?
            .and_then(|pdu| pdu.content_value().as_object().cloned());
        let creators = creators_of(&create);
        let creator = create
            .content_value()
            .get("creator")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| Some(create.sender.to_string()));
        Ok(PowerLevels { content, privileged_creators: if privileged { creators } else { Vec::new() }, creator })
    }

    /// Whether `user` is joined to the room and may send a state event of `kind` there.
    pub async fn joined_with_power(&self, room_id: &RoomId, user: &UserId, kind: &str) -> Result<bool> {
        if self.membership(user, room_id).await?.is_none_or(|m| m.membership != "join") {
            return Ok(false);
        }
        Ok(self.power_levels(room_id).await?.can_send_state(user, kind))
    }
}
