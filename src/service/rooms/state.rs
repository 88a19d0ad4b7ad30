//! Room state as layered diffs: a state group is a diff against a parent group, and every
//! `MAX_CHAIN` diffs a full snapshot starts a new chain, so loading any group reads a bounded
//! number of rows. Loaded groups are cached in memory as persistent maps that share structure
//! with their parents, so a state event costs its own change, not a copy of the room's state.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use crate::service::recent::RecentMap;
use crate::{
    Error, Result,
    storage::{
        Batch, Db, IdAllocator,
        room_tables::{STATE_GROUPS, StateGroup},
    },
};

/// Short state key -> short event id. Cloning is O(1); an insert copies one path of the tree.
pub type ShortStateMap = imbl::OrdMap<u64, u64>;

/// Diffs in a chain before a full snapshot is written instead.
const MAX_CHAIN: u32 = 24;
/// Loaded groups kept in memory per generation of the cache (see [`RecentMap`]): a group in use
/// (the current state of a room being written to or synced) stays as long as fewer groups than
/// this are loaded between two of its uses. A group shares most of its tree with its parent, so
/// an entry costs little more than its own changes.
const CACHE_GROUPS: usize = 1024;
/// Recently made groups whose chain lengths are kept.
const CHAIN_LENGTHS: usize = 512;

pub struct StateGroups {
    allocator: IdAllocator,
    cache: RecentMap<u64, Arc<ShortStateMap>>,
    /// Chain lengths of groups made recently, so a group can have a parent whose batch has not
    /// been committed yet (the event's state and the room's resolved state share one batch).
    chain_lengths: Mutex<HashMap<u64, u32>>,
}

impl StateGroups {
    pub fn new(db: &Db) -> Result<Self> {
        Ok(Self {
            allocator: IdAllocator::after_last_key(db, &STATE_GROUPS)?,
            cache: RecentMap::new(CACHE_GROUPS),
            chain_lengths: Mutex::new(HashMap::new()),
        })
    }

    fn cached(&self, group: u64) -> Option<Arc<ShortStateMap>> {
        self.cache.get(&group)
    }

    fn remember(&self, group: u64, map: Arc<ShortStateMap>) {
        self.cache.insert(group, map);
    }

    /// The full state of a group.
    pub fn load(&self, db: &Db, group: u64) -> Result<Arc<ShortStateMap>> {
        if let Some(map) = self.cached(group) {
            return Ok(map);
        }
        let mut chain = Vec::new();
        let mut next = Some(group);
        let mut base: Option<Arc<ShortStateMap>> = None;
        while let Some(id) = next {
            if id != group
                && let Some(map) = self.cached(id)
            {
                base = Some(map);
                break;
            }
            let diff =
                STATE_GROUPS.get(db, &id)?.ok_or_else(|| Error::internal(format!("state group {id} missing")))?;
            next = diff.parent;
            chain.push(diff);
        }
        let mut map: ShortStateMap = base.map(|m| (*m).clone()).unwrap_or_default();
        for diff in chain.iter().rev() {
            for key in &diff.removed {
                map.remove(key);
            }
            map.extend(diff.added.iter().copied());
        }
        let map = Arc::new(map);
        self.remember(group, map.clone());
        Ok(map)
    }

    /// Stores the state `parent` has with `changes` applied (each key set to an event, or removed
    /// with `None`) as a new group; returns it and its map. Costs the size of the change, but
    /// for the full snapshot that starts a new chain every `MAX_CHAIN` groups.
    pub fn store_change(
        &self,
        db: &Db,
        batch: &mut Batch,
        parent: u64,
        changes: &[(u64, Option<u64>)],
    ) -> Result<(u64, Arc<ShortStateMap>)> {
        let parent_map = self.load(db, parent)?;
        let mut map = (*parent_map).clone();
        for (key, event) in changes {
            match event {
                Some(event) => map.insert(*key, *event),
                None => map.remove(key),
            };
        }
        let map = Arc::new(map);
        let parent_chain = self.chain_length(db, parent)?;
        let record = if parent_chain < MAX_CHAIN {
            let added = changes.iter().filter_map(|(k, v)| v.map(|v| (*k, v))).collect();
            let removed = changes.iter().filter(|(_, v)| v.is_none()).map(|(k, _)| *k).collect();
            StateGroup { parent: Some(parent), chain_length: parent_chain + 1, added, removed }
        } else {
            full_snapshot(&map)
        };
        let group = self.put_record(batch, record, map.clone())?;
        Ok((group, map))
    }

    fn chain_length(&self, db: &Db, group: u64) -> Result<u32> {
        match self.chain_lengths.lock().ok().and_then(|m| m.get(&group).copied()) {
            Some(length) => Ok(length),
            None => Ok(STATE_GROUPS
                .get(db, &group)?
                .ok_or_else(|| Error::internal("parent state group missing"))?
                .chain_length),
        }
    }

    fn put_record(&self, batch: &mut Batch, record: StateGroup, map: Arc<ShortStateMap>) -> Result<u64> {
        let group = self.allocator.next();
        batch.put(&STATE_GROUPS, &group, &record)?;
        if let Ok(mut lengths) = self.chain_lengths.lock() {
            if lengths.len() >= CHAIN_LENGTHS {
                lengths.clear();
            }
            lengths.insert(group, record.chain_length);
        }
        self.remember(group, map);
        Ok(group)
    }

    /// Stores `state` as a new group (a diff against `parent` when the chain allows) in `batch`.
    /// Computing the diff walks both maps: for resolved states, where the change is not known.
    pub fn store(&self, db: &Db, batch: &mut Batch, parent: Option<u64>, state: Arc<ShortStateMap>) -> Result<u64> {
        let record = match parent {
            Some(parent_id) => {
                let parent_chain = self.chain_length(db, parent_id)?;
                if parent_chain < MAX_CHAIN {
                    let parent_map = self.load(db, parent_id)?;
                    let added =
                        state.iter().filter(|(k, v)| parent_map.get(k) != Some(v)).map(|(k, v)| (*k, *v)).collect();
                    let removed = parent_map.keys().filter(|k| !state.contains_key(k)).copied().collect();
                    StateGroup { parent: Some(parent_id), chain_length: parent_chain + 1, added, removed }
                } else {
                    full_snapshot(&state)
                }
            }
            None => full_snapshot(&state),
        };
        self.put_record(batch, record, state)
    }
}

fn full_snapshot(state: &ShortStateMap) -> StateGroup {
    StateGroup {
        parent: None,
        chain_length: 0,
        added: state.iter().map(|(k, v)| (*k, *v)).collect(),
        removed: Vec::new(),
    }
}
