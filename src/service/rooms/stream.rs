//! Stream positions of the timeline, handed out to accepted events. Rooms are written
//! concurrently, so position 7 may commit before position 6: readers (sync, `/messages`) must
//! only look up to the newest position below which every position is committed. This allocator
//! tracks positions in flight and reports that bound, and pokes the [`Notifier`] when it moves.
//! Each committed event names what it wakes (its room; a member event's target user too): the
//! wake-up waits until the bound passes the event's position, or a woken sync would read up to
//! the old bound, find nothing, and sleep through the event.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex, MutexGuard},
};

use crate::{
    Result,
    service::notifier::{Notifier, WakeKey},
    storage::{Db, IdAllocator, room_tables::EVENT_STREAM},
};

pub struct StreamAllocator {
    ids: IdAllocator,
    in_flight: Mutex<InFlight>,
    notifier: Arc<Notifier>,
}

#[derive(Default)]
struct InFlight {
    positions: BTreeSet<u64>,
    /// What committed positions above the bound wake once the bound passes them.
    wakes: BTreeMap<u64, Vec<WakeKey>>,
}

/// A reserved position; dropping it (after the batch is written and, for a deferred write,
/// synced; or on failure) releases it.
pub struct Reserved {
    pub position: u64,
    allocator: Arc<StreamAllocator>,
    wakes: Vec<WakeKey>,
}

impl Reserved {
    /// Names what the event at this position wakes once it is readable: call it after the
    /// batch is written.
    pub fn wakes(&mut self, keys: impl IntoIterator<Item = WakeKey>) {
        self.wakes.extend(keys);
    }
}

/// What a committed event wakes: its room's members, and a member event's target.
pub fn wake_keys(room: &ruma::RoomId, kind: &str, state_key: Option<&str>) -> Vec<WakeKey> {
    let mut keys = vec![WakeKey::Room(room.to_owned())];
    if kind == "m.room.member"
        && let Some(user) = state_key.and_then(|key| ruma::OwnedUserId::try_from(key).ok())
    {
        keys.push(WakeKey::User(user));
    }
    keys
}

impl StreamAllocator {
    pub fn new(db: &Db, notifier: Arc<Notifier>) -> Result<Self> {
        let allocator = Self {
            ids: IdAllocator::after_last_key(db, &EVENT_STREAM)?,
            in_flight: Mutex::new(InFlight::default()),
            notifier,
        };
        allocator.notifier.events_committed(allocator.committed());
        Ok(allocator)
    }

    fn in_flight(&self) -> MutexGuard<'_, InFlight> {
        // The set holds plain numbers: a panic elsewhere cannot leave it inconsistent.
        self.in_flight.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reserves the next position. Allocation happens under the lock so the bound never
    /// passes a position that is handed out but not yet recorded as in flight.
    pub fn reserve(self: &Arc<Self>) -> Reserved {
        let mut in_flight = self.in_flight();
        let position = self.ids.next();
        in_flight.positions.insert(position);
        drop(in_flight);
        Reserved { position, allocator: self.clone(), wakes: Vec::new() }
    }

    /// The newest position below which (inclusive) every position is committed or abandoned.
    pub fn committed(&self) -> u64 {
        self.bound(&self.in_flight())
    }

    fn bound(&self, in_flight: &InFlight) -> u64 {
        match in_flight.positions.first() {
            Some(first) => first.saturating_sub(1),
            None => self.ids.peek().saturating_sub(1),
        }
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        let (committed, wakes) = {
            let mut in_flight = self.allocator.in_flight();
            in_flight.positions.remove(&self.position);
            if !self.wakes.is_empty() {
                in_flight.wakes.insert(self.position, std::mem::take(&mut self.wakes));
            }
            let committed = self.allocator.bound(&in_flight);
            let above = in_flight.wakes.split_off(&(committed + 1));
            (committed, std::mem::replace(&mut in_flight.wakes, above))
        };
        if !wakes.is_empty() {
            self.allocator.notifier.wake_quietly(wakes.values().flatten());
        }
        self.allocator.notifier.events_committed(committed);
    }
}
