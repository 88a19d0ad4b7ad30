//! Which cached device lists of remote users a change of a room's membership makes doubtful.
//!
//! A remote user's cached device list (`remote_device_lists`, see `service/keys/remote.rs`) stays
//! current only while this server shares a room with them: their server sends
//! `m.device_list_update`s only to servers in their rooms. Synapse stops tracking a user who no
//! longer shares a room with any local user; here the cache is dropped when sharing may start
//! again after a pause, inside the write batch of the member event that starts it:
//! - a remote user's new join (they may have shared no room with this server before it);
//! - this server's (re)join of a room: every remote member of the room (this server may have
//!   been in no room with them meanwhile).
//!
//! The next `/keys/query` for such a user fetches their list again (`/user/devices`). While no
//! room is shared, key queries go to the user's server and never use the cache.

use std::collections::HashMap;

use ruma::{OwnedUserId, events::StateEventType, room_version_rules::RoomVersionRules};

use super::{RoomCore, accept::membership_in, pdu::Pdu, state::ShortStateMap};
use crate::{
    Result,
    storage::{Batch, Db, device_list_tables::REMOTE_DEVICE_LISTS},
};

impl RoomCore {
    /// Drops the cached device lists a membership change makes doubtful (see the module doc).
    /// `new_joins` are the users whose join starts with this change; `server_joins` says whether
    /// this server had no joined user in the room before it and has one after.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn drop_doubtful_device_lists(
        &self,
        db: &Db,
        batch: &mut Batch,
        rules: &RoomVersionRules,
        new_event: (u64, &Pdu),
        previous: &ShortStateMap,
        changes: &[(u64, Option<u64>)],
        (new_joins, server_joins): (&[OwnedUserId], bool),
    ) -> Result<()> {
        for user in new_joins.iter().filter(|user| user.server_name() != self.server_name) {
            batch.delete(&REMOTE_DEVICE_LISTS, user);
        }
        if !server_joins {
            return Ok(());
        }
        let changed: HashMap<u64, Option<u64>> = changes.iter().copied().collect();
        let after = previous
            .iter()
            .filter(|(key, _)| !changed.contains_key(key))
            .map(|(key, event)| (*key, *event))
            .chain(changes.iter().filter_map(|(key, event)| event.map(|event| (*key, event))));
        for (key, event) in after {
            let names = self.interner.state_key(db, key)?;
            if names.0 != StateEventType::RoomMember {
                continue;
            }
            let Ok(user) = ruma::UserId::parse(names.1.as_str()) else { continue };
            if user.server_name() == self.server_name {
                continue;
            }
            let joined = if event == new_event.0 {
                membership_in(&new_event.1.content) == "join"
            } else {
                membership_in(&self.event_by_short(db, event, rules)?.content) == "join"
            };
            if joined {
                batch.delete(&REMOTE_DEVICE_LISTS, &user);
            }
        }
        Ok(())
    }
}
