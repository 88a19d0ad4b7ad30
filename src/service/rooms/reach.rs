//! Which users a user can reach through rooms, for the user directory: users joined to a room
//! the searcher is joined to, and users joined to a public room (join rule `public`).

use std::collections::{BTreeSet, HashMap};

use ruma::{OwnedRoomId, OwnedUserId, UserId};
use serde::Deserialize;

use super::{RoomCore, Rooms};
use crate::{Result, storage::Db, storage::room_tables::USER_ROOMS};

#[derive(Deserialize)]
struct JoinRules {
    join_rule: String,
}

impl RoomCore {
    /// The local rooms a user is joined to.
    fn joined_rooms(&self, db: &Db, user: &UserId) -> Result<Vec<OwnedRoomId>> {
        Ok(USER_ROOMS
            .scan_prefix(db, &(user.to_owned(),))?
            .into_iter()
            .filter(|(_, m)| m.membership == "join")
            .map(|((_, room), _)| room)
            .collect())
    }

    /// Whether a room's current join rule is `public`.
    fn is_public_room(&self, db: &Db, room: &OwnedRoomId) -> Result<bool> {
        let Some(short_room) = self.interner.short_room(db, room)? else { return Ok(false) };
        Ok(self
            .current_state_event(db, short_room, "m.room.join_rules", "")?
            .and_then(|pdu| serde_json::from_str::<JoinRules>(pdu.content.get()).ok())
            .is_some_and(|rules| rules.join_rule == "public"))
    }
}

impl Rooms {
    /// The users of `candidates` (local users) that `searcher` may find in the user directory:
    /// those sharing a joined room with the searcher, and those joined to a public room. The
    /// cost is the candidates' room lists, not the rooms' member lists.
    pub async fn users_findable_by(&self, searcher: &UserId, candidates: Vec<OwnedUserId>) -> Result<Vec<OwnedUserId>> {
        let searcher = searcher.to_owned();
        self.run(move |core, db| {
            let own: BTreeSet<OwnedRoomId> = core.joined_rooms(db, &searcher)?.into_iter().collect();
            let mut public: HashMap<OwnedRoomId, bool> = HashMap::new();
            let mut out = Vec::new();
            for user in candidates {
                for room in core.joined_rooms(db, &user)? {
                    let reachable = (user != searcher && own.contains(&room))
                        || match public.get(&room) {
                            Some(known) => *known,
                            None => {
                                let is_public = core.is_public_room(db, &room)?;
                                public.insert(room.clone(), is_public);
                                is_public
                            }
                        };
                    if reachable {
                        out.push(user);
                        break;
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    /// The rooms whose waiting syncs a change of `user`'s device list or presence concerns:
    /// those `user` is joined to. For a local user, their room list; for a remote user (whose
    /// rooms are not indexed), those of `waiting` (rooms with waiting syncs) whose current state
    /// has them joined.
    pub async fn rooms_to_wake_for(&self, user: &UserId, waiting: Vec<OwnedRoomId>) -> Result<Vec<OwnedRoomId>> {
        let user = user.to_owned();
        self.run(move |core, db| {
            if user.server_name() == core.server_name {
                return core.joined_rooms(db, &user);
            }
            let mut joined = Vec::new();
            for room in waiting {
                let Some(short_room) = core.interner.short_room(db, &room)? else { continue };
                if let Some(member) = core.current_state_event(db, short_room, "m.room.member", user.as_str())?
                    && super::accept::membership_in(&member.content) == "join"
                {
                    joined.push(room);
                }
            }
            Ok(joined)
        })
        .await
    }
}
