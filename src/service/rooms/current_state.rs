//! The tables that follow a room's current state, kept in step with each change of it in the
//! accepting event's own batch (see `accept.rs`): `CURRENT_STATE`, local users' memberships
//! (`USER_ROOMS`) and the count of joined users per server (`ROOM_SERVERS`), with the device
//! lists a new join makes doubtful (`device_tracking.rs`).

use std::collections::HashMap;

use ruma::{
    events::{StateEventType, TimelineEventType},
    room_version_rules::RoomVersionRules,
};

use super::{RoomCore, accept::membership_in, pdu::Pdu, state::ShortStateMap};
use crate::{
    Result,
    storage::{
        Batch, Db,
        room_tables::{CURRENT_STATE, ROOM_SERVERS, USER_ROOMS, UserMembership},
    },
};

impl RoomCore {
    /// Writes a change of the room's current state (each key set to an event, or removed), and
    /// local users' memberships.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn write_current_state(
        &self,
        db: &Db,
        batch: &mut Batch,
        (short_room, rules): (u64, &RoomVersionRules),
        new_event: (u64, &Pdu),
        previous: &ShortStateMap,
        changes: &[(u64, Option<u64>)],
        position: u64,
    ) -> Result<()> {
        let room_id = &new_event.1.room_id;
        self.count_room_servers(db, batch, (short_room, rules), new_event, previous, changes)?;
        for (key, event) in changes {
            let Some(event) = event else {
                batch.delete(&CURRENT_STATE, &(short_room, *key));
                // State resolution can drop a member event: the user then has no membership.
                let names = self.interner.state_key(db, *key)?;
                if names.0 == StateEventType::RoomMember
                    && let Ok(user_id) = ruma::UserId::parse(names.1.as_str())
                    && user_id.server_name() == self.server_name
                    && previous.contains_key(key)
                {
                    batch.delete(&USER_ROOMS, &(user_id, room_id.clone()));
                }
                continue;
            };
            batch.put(&CURRENT_STATE, &(short_room, *key), event)?;
            // The new event's own state key may be new in this batch: read it from the event.
            let (kind, state_key) = if *event == new_event.0 {
                (new_event.1.kind.to_string(), new_event.1.state_key.clone().unwrap_or_default())
            } else {
                let names = self.interner.state_key(db, *key)?;
                (names.0.to_string(), names.1.clone())
            };
            if kind != "m.room.member" {
                continue;
            }
            let Ok(user_id) = ruma::UserId::parse(state_key.as_str()) else { continue };
            if user_id.server_name() != self.server_name {
                continue;
            }
            let (event_id, membership) = if *event == new_event.0 {
                (new_event.1.event_id.clone(), membership_in(&new_event.1.content))
            } else {
                let pdu = self.event_by_short(db, *event, rules)?;
                (pdu.event_id.clone(), membership_in(&pdu.content))
            };
            // The position is where the membership began: a new member event that keeps it (a
            // display name change) must not look like a fresh join to sync, nor drop the unread
            // notifications counted since the join.
            let key = (user_id, room_id.clone());
            let position = match USER_ROOMS.get(db, &key)? {
                Some(old) if old.membership == membership => old.position,
                _ => position,
            };
            batch.put(
                &USER_ROOMS,
                &key,
                &UserMembership { membership, event_id: event_id.to_string(), position, forgotten: false },
            )?;
        }
        Ok(())
    }

    /// Keeps [`ROOM_SERVERS`] in step with a change of the room's current state: each member
    /// event that starts or ends a join counts its user's server up or down.
    fn count_room_servers(
        &self,
        db: &Db,
        batch: &mut Batch,
        (short_room, rules): (u64, &RoomVersionRules),
        new_event: (u64, &Pdu),
        previous: &ShortStateMap,
        changes: &[(u64, Option<u64>)],
    ) -> Result<()> {
        let mut deltas: HashMap<String, i64> = HashMap::new();
        let mut new_joins = Vec::new();
        for (key, event) in changes {
            let state_key = if Some(new_event.0) == *event && new_event.1.kind == TimelineEventType::RoomMember {
                new_event.1.state_key.clone().unwrap_or_default()
            } else {
                let names = self.interner.state_key(db, *key)?;
                if names.0 != StateEventType::RoomMember {
                    continue;
                }
                names.1.clone()
            };
            let Ok(user) = ruma::UserId::parse(state_key.as_str()) else { continue };
            let joined = |short: Option<u64>| -> Result<bool> {
                Ok(match short {
                    None => false,
                    Some(short) if short == new_event.0 => membership_in(&new_event.1.content) == "join",
                    Some(short) => membership_in(&self.event_by_short(db, short, rules)?.content) == "join",
                })
            };
            let (before, after) = (joined(previous.get(key).copied())?, joined(*event)?);
            if before != after {
                *deltas.entry(user.server_name().to_string()).or_default() += if after { 1 } else { -1 };
            }
            if after && !before {
                new_joins.push(user);
            }
        }
        let own = self.server_name.to_string();
        let server_joins = deltas.get(&own).is_some_and(|delta| *delta > 0)
            && ROOM_SERVERS.get(db, &(short_room, own))?.unwrap_or(0) == 0;
        if !new_joins.is_empty() {
            let joins = (new_joins.as_slice(), server_joins);
            self.drop_doubtful_device_lists(db, batch, rules, new_event, previous, changes, joins)?;
        }
        for (server, delta) in deltas {
            let key = (short_room, server);
            let count = ROOM_SERVERS.get(db, &key)?.unwrap_or(0).saturating_add_signed(delta);
            if count == 0 {
                batch.delete(&ROOM_SERVERS, &key);
            } else {
                batch.put(&ROOM_SERVERS, &key, &count)?;
            }
        }
        Ok(())
    }
}
