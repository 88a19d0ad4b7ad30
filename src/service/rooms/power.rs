//! Power levels as the endpoints outside the auth rules need them: whether a user may send a
//! given state event or invite by the room's current power levels (alias deletion, directory
//! visibility, upgrades, restricted joins), computed by ruma's `RoomPowerLevels`.

use ruma::{RoomId, UserId, events::StateEventType};
use serde_json::{Map, Value};

use ruma::events::room::power_levels::{RoomPowerLevels, UserPowerLevel};

use super::Rooms;
use crate::storage::room_tables::ROOMS;
use crate::{Error, Result};

/// A power level as stored: an integer, or (before room version 10) a string holding one.
pub fn level_of(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A room's power levels: the content as stored (for editing) and ruma's reading of it, which
/// decides every level (defaults, string levels before v10, v12's infinitely powerful creators).
#[derive(Debug, Clone)]
pub struct PowerLevels {
    /// The `m.room.power_levels` content; `None` when the room has none.
    pub content: Option<Map<String, Value>>,
    levels: RoomPowerLevels,
}

impl PowerLevels {
    /// A user's level; `None` for a privileged creator (above every level, from v12).
    pub fn user_level(&self, user: &UserId) -> Option<i64> {
        match self.levels.for_user(user) {
            UserPowerLevel::Infinite => None,
            UserPowerLevel::Int(level) => Some(level.into()),
            _ => None,
        }
    }

    pub fn can_send_state(&self, user: &UserId, kind: &str) -> bool {
        self.levels.user_can_send_state(user, StateEventType::from(kind))
    }

    pub fn can_invite(&self, user: &UserId) -> bool {
        self.levels.user_can_invite(user)
    }
}

impl Rooms {
    /// The room's current power levels; `M_NOT_FOUND` for an unknown room.
    pub async fn power_levels(&self, room_id: &RoomId) -> Result<PowerLevels> {
        let room_id = room_id.to_owned();
        self.run(move |core, db| {
            let short_room = core.interner.short_room(db, &room_id)?.ok_or_else(|| Error::not_found("Unknown room"))?;
            let record = ROOMS.get(db, &short_room)?.ok_or_else(|| Error::not_found("Unknown room"))?;
            let rules = crate::service::rooms::versions::rules(&record.version)
                .ok_or_else(|| Error::internal("unsupported room version stored"))?;
            let levels = core.power_levels_at(db, record.current_state_group, &rules)?;
            let content = core
                .state_in_group(db, record.current_state_group, "m.room.power_levels", "")?
                .and_then(|pdu| pdu.content_value().as_object().cloned());
            Ok(PowerLevels { content, levels })
        })
        .await
    }

    /// Whether `user` is joined to the room and may send a state event of `kind` there.
    pub async fn joined_with_power(&self, room_id: &RoomId, user: &UserId, kind: &str) -> Result<bool> {
        if self.membership(user, room_id).await?.is_none_or(|m| m.membership != "join") {
            return Ok(false);
        }
        Ok(self.power_levels(room_id).await?.can_send_state(user, kind))
    }
}
