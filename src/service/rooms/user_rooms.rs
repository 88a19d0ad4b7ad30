//! Each local user's room list (`USER_ROOMS`: their membership in every room they have one in),
//! kept in memory per user while the table's write generation for that user stays the same
//! (see `storage/generations.rs`). Syncs read the list several times each (the notifier's
//! registration, the rooms part, device lists, presence): a woken or idle sync then reads no
//! table for it. Bounded in rows: past the bound the copies are dropped and read again.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
};

use ruma::{OwnedRoomId, OwnedUserId, UserId};

use super::Rooms;
use crate::{
    Result,
    storage::room_tables::{USER_ROOMS, UserMembership},
};

/// A user's memberships, room by room (in key order).
pub type RoomList = Arc<Vec<(OwnedRoomId, UserMembership)>>;

/// Rows kept across all users (about 200 bytes each).
const MAX_ROWS: usize = 50_000;

#[derive(Default)]
pub(super) struct UserRoomsCache {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    lists: HashMap<OwnedUserId, (u64, RoomList)>,
    rows: usize,
}

impl UserRoomsCache {
    fn inner(&self) -> MutexGuard<'_, Inner> {
        // Plain maps, each change complete before the lock is released.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn get(&self, user: &UserId, generation: u64) -> Option<RoomList> {
        self.inner().lists.get(user).filter(|(kept, _)| *kept == generation).map(|(_, list)| list.clone())
    }

    fn put(&self, user: &UserId, generation: u64, list: RoomList) {
        let mut inner = self.inner();
        if inner.rows + list.len() > MAX_ROWS {
            inner.lists.clear();
            inner.rows = 0;
        }
        inner.rows += list.len();
        if let Some((_, old)) = inner.lists.insert(user.to_owned(), (generation, list)) {
            inner.rows -= old.len();
        }
    }
}

impl Rooms {
    /// Every room a local user has a membership in, shared (see the module doc).
    pub async fn user_room_list(&self, user_id: &UserId) -> Result<RoomList> {
        let owned = user_id.to_owned();
        // Taken before the read: a write committed after it moves it on.
        let generation = self.core.db.generation(&USER_ROOMS, &(owned.clone(),));
        if let Some(list) = self.core.user_rooms.get(user_id, generation) {
            return Ok(list);
        }
        let list: RoomList = Arc::new(
            self.run(move |_, db| {
                Ok(USER_ROOMS.scan_prefix(db, &(owned,))?.into_iter().map(|((_, room), m)| (room, m)).collect())
            })
            .await?,
        );
        self.core.user_rooms.put(user_id, generation, list.clone());
        Ok(list)
    }
}
