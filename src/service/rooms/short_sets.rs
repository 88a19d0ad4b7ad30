//! In-memory sets of short event IDs that let serving an event skip an index probe: the events
//! some redaction names (`REDACTIONS`' first key part) and the events with related events
//! (`RELATIONS`' first key part). Each is read once at start-up and added to when a row is
//! put, before its batch is written, so a reader that can see the row finds the event in the
//! set. Entries are never removed: one that outlives its rows only costs the probe it would
//! have cost anyway. Memory: about 16-32 bytes per redacted event and per event with relations.

use std::{collections::HashSet, sync::RwLock};

use crate::{
    Result,
    storage::{Db, KeyCodec, Table, ValueCodec},
};

#[derive(Default)]
pub(super) struct ShortSet(RwLock<HashSet<u64>>);

impl ShortSet {
    /// The first key parts of every row of `table`.
    pub(super) fn load<V: ValueCodec>(db: &Db, table: &Table<(u64, u64), V>) -> Result<Self>
    where
        (u64, u64): KeyCodec,
    {
        let set = table.keys(db)?.into_iter().map(|(first, _)| first).collect();
        Ok(Self(RwLock::new(set)))
    }

    pub(super) fn add(&self, short: u64) {
        if let Ok(mut set) = self.0.write() {
            set.insert(short);
        }
    }

    /// Whether a row may start with `short` (`true` when unsure).
    pub(super) fn may_contain(&self, short: u64) -> bool {
        self.0.read().map_or(true, |set| set.contains(&short))
    }
}
