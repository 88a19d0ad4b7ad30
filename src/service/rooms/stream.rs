//! Stream positions of the timeline, handed out to accepted events. Rooms are written
//! concurrently, so position 7 may commit before position 6: readers (sync, `/messages`) must
//! only look up to the newest position below which every position is committed. This allocator
//! tracks positions in flight and reports that bound, and pokes the [`Notifier`] when it moves.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex, MutexGuard},
};

use crate::{
    Result,
    service::notifier::Notifier,
    storage::{Db, IdAllocator, room_tables::EVENT_STREAM},
};

pub struct StreamAllocator {
    ids: IdAllocator,
    in_flight: Mutex<BTreeSet<u64>>,
    notifier: Arc<Notifier>,
}

/// A reserved position; dropping it (after the batch is written, or on failure) releases it.
pub struct Reserved<'a> {
    pub position: u64,
    allocator: &'a StreamAllocator,
}

impl StreamAllocator {
    pub fn new(db: &Db, notifier: Arc<Notifier>) -> Result<Self> {
        let allocator = Self {
            ids: IdAllocator::after_last_key(db, &EVENT_STREAM)?,
            in_flight: Mutex::new(BTreeSet::new()),
            notifier,
        };
        allocator.notifier.events_committed(allocator.committed());
        Ok(allocator)
    }

    fn in_flight(&self) -> MutexGuard<'_, BTreeSet<u64>> {
        // The set holds plain numbers: a panic elsewhere cannot leave it inconsistent.
        self.in_flight.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reserves the next position. Allocation happens under the lock so the bound never
    /// passes a position that is handed out but not yet recorded as in flight.
    pub fn reserve(&self) -> Reserved<'_> {
        let mut in_flight = self.in_flight();
        let position = self.ids.next();
        in_flight.insert(position);
        Reserved { position, allocator: self }
    }

    /// The newest position below which (inclusive) every position is committed or abandoned.
    pub fn committed(&self) -> u64 {
        let in_flight = self.in_flight();
        match in_flight.first() {
            Some(first) => first.saturating_sub(1),
            None => self.ids.peek().saturating_sub(1),
        }
    }
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        self.allocator.in_flight().remove(&self.position);
        let committed = self.allocator.committed();
        self.allocator.notifier.events_committed(committed);
    }
}
